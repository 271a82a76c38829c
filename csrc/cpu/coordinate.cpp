// Coordinate-wise selection (median, trimmed mean, Bulyan's closest-to-median mean).
//
// Vectorised across coordinates: each SIMD lane is one coordinate, so a block of coordinates of
// all n rows is a set of vector loads, a sorting network over the n rows is a sequence of
// min/max instructions with no branches, and the reduction of the sorted block is the shared
// maths of select_math.h. A block is kColumns vectors wide so every comparator carries
// kColumns independent min/max pairs (the network's index loads are amortised and the
// out-of-order core has parallel work); the block, n x kColumns vectors, stays in L1. Rows of
// the next blocks are prefetched because n streams exceed what the hardware prefetcher tracks.
#include <algorithm>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace fedsec::cpu::FEDSEC_ISA {

namespace {

constexpr int kColumns = 4;
constexpr int64_t kPrefetchBytes = 2048;

template <typename T>
void select_typed(const T* const* rows, int64_t n, int64_t begin, int64_t end, SelectOp op,
                  int64_t k, Comparators net, T* out, uint8_t* nonfinite) {
  using A = typename Element<T>::Acc;
  using V = typename Simd<A>::Vec;
  constexpr int L = Simd<A>::kLanes;
  constexpr int64_t kBlock = int64_t{kColumns} * L;
  std::vector<V> v(static_cast<size_t>(n * kColumns));  // v[i * kColumns + u]: row i, column u
  const auto* cmp = net.data;
  const int64_t ncmp = net.size;

  for (int64_t c = begin; c < end; c += kBlock) {
    int count[kColumns];
    for (int u = 0; u < kColumns; ++u)
      count[u] = static_cast<int>(std::clamp<int64_t>(end - c - u * L, 0, L));
    V bad = {};
    for (int64_t i = 0; i < n; ++i) {
      for (int u = 0; u < kColumns; ++u) {
        V& x = v[i * kColumns + u];
        x = load_lanes(rows[i], c + u * L, count[u]);
        bad += x - x;
        __builtin_prefetch(reinterpret_cast<const char*>(rows[i] + c + u * L) + kPrefetchBytes, 0, 0);
      }
    }
    if (nonfinite && any_nonfinite(bad)) {
      for (int64_t i = 0; i < n; ++i)
        for (int u = 0; u < kColumns; ++u)
          if (any_nonfinite(v[i * kColumns + u])) nonfinite[i] = 1;
    }
    for (int64_t e = 0; e < ncmp; ++e) {
      V* lo = &v[cmp[e].first * kColumns];
      V* hi = &v[cmp[e].second * kColumns];
      for (int u = 0; u < kColumns; ++u) {
        const V a = lo[u], b = hi[u];
        lo[u] = vmin(a, b);
        hi[u] = vmax(a, b);
      }
    }
    for (int u = 0; u < kColumns && count[u] > 0; ++u) {
      V result = sorted_reduce<A>(&v[u], n, kColumns, op, k);
      // A sum that overflowed (or a non-finite input, flagged above): redo the lanes rescaled.
      if (any_nonfinite(result)) {
        const V rescaled = sorted_reduce_rescaled<A>(&v[u], n, kColumns, op, k);
        result = result - result == V{} ? result : rescaled;
      }
      store_lanes(out, c + u * L, count[u], result);
    }
  }
}

}  // namespace

void coordinate_select(const void* const* rows, int64_t n, int64_t begin, int64_t end, DType dt,
                       SelectOp op, int64_t k, Comparators net, void* out, uint8_t* nonfinite) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    select_typed(reinterpret_cast<const T* const*>(rows), n, begin, end, op, k, net,
                 static_cast<T*>(out), nonfinite);
  });
}

}  // namespace fedsec::cpu::FEDSEC_ISA
