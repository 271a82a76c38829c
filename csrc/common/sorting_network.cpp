// Sorting networks for the coordinate-wise rules (host code, shared by both backends).
#include <algorithm>
#include <stdexcept>
#include <vector>

#include "fedsec/ops.h"

namespace fedsec {

namespace {

// Batcher's odd-even merge sort on the next power of two (Knuth, TAOCP 5.3.4), in layer order,
// cut to n, keeping only comparators some position with live[position] depends on (walking the
// network backwards).
std::vector<std::pair<int32_t, int32_t>> pruned_network(int64_t n, std::vector<char> live) {
  int64_t p2 = 1;
  while (p2 < n) p2 <<= 1;
  std::vector<std::pair<int32_t, int32_t>> all;
  for (int64_t p = 1; p < p2; p <<= 1) {
    for (int64_t k = p; k >= 1; k >>= 1) {
      for (int64_t j = k % p; j + k < p2; j += 2 * k) {
        for (int64_t i = 0; i < std::min(k, p2 - j - k); ++i) {
          const int64_t a = i + j, b = i + j + k;
          if (a / (2 * p) == b / (2 * p) && b < n)
            all.emplace_back(static_cast<int32_t>(a), static_cast<int32_t>(b));
        }
      }
    }
  }
  std::vector<std::pair<int32_t, int32_t>> kept;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (live[it->first] || live[it->second]) {
      live[it->first] = live[it->second] = 1;
      kept.push_back(*it);
    }
  }
  std::reverse(kept.begin(), kept.end());
  return kept;
}

}  // namespace

std::vector<std::pair<int32_t, int32_t>> sorting_network(int64_t n, int64_t first, int64_t last) {
  if (n < 1 || first < 0 || last > n || first >= last)
    throw std::invalid_argument("sorting_network: need 0 <= first < last <= n");
  std::vector<char> live(static_cast<size_t>(n), 0);
  std::fill(live.begin() + first, live.begin() + last, 1);
  return pruned_network(n, std::move(live));
}

std::vector<std::pair<int32_t, int32_t>> select_network(int64_t n, SelectOp op, int64_t k) {
  std::vector<char> live(static_cast<size_t>(n), 0);
  switch (op) {
    case SelectOp::median:
      live[(n - 1) / 2] = live[n / 2] = 1;
      break;
    case SelectOp::trimmed_mean: {
      if (k < 0 || 2 * k >= n)
        throw std::invalid_argument("select_network: trimmed_mean needs 0 <= 2k < n");
      // Either the k smallest and k largest in place, or the kept middle sorted: the smaller.
      for (int64_t i = 0; i < k; ++i) live[i] = live[n - 1 - i] = 1;
      auto ends = pruned_network(n, std::move(live));
      if (k == 0) return ends;
      auto middle = sorting_network(n, k, n - k);
      return ends.size() <= middle.size() ? ends : middle;
    }
    case SelectOp::closest_median:
      std::fill(live.begin(), live.end(), 1);
      break;
  }
  return pruned_network(n, std::move(live));
}

}  // namespace fedsec
