// Sorting networks for the coordinate-wise rules (host code, shared by both backends).
#include <algorithm>
#include <stdexcept>
#include <vector>

#include "fedsec/ops.h"

namespace fedsec {

std::vector<std::pair<int32_t, int32_t>> sorting_network(int64_t n, int64_t first, int64_t last) {
  if (n < 1 || first < 0 || last > n || first >= last)
    throw std::invalid_argument("sorting_network: need 0 <= first < last <= n");
  int64_t p2 = 1;
  while (p2 < n) p2 <<= 1;
  // Batcher's odd-even merge sort on p2 inputs (Knuth, TAOCP 5.3.4), in layer order.
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
  // Keep only comparators some needed output depends on, walking the network backwards.
  std::vector<char> live(static_cast<size_t>(n), 0);
  std::fill(live.begin() + first, live.begin() + last, 1);
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

std::pair<int64_t, int64_t> needed_positions(int64_t n, SelectOp op, int64_t k) {
  switch (op) {
    case SelectOp::median: return {(n - 1) / 2, n / 2 + 1};
    case SelectOp::trimmed_mean: return {k, n - k};
    case SelectOp::closest_median: return {0, n};
  }
  throw std::invalid_argument("needed_positions: unknown SelectOp");
}

}  // namespace fedsec
