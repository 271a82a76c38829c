// Coordinate-wise selection (median, trimmed mean, Bulyan's closest-to-median mean).
//
// Vectorised across coordinates: each SIMD lane is one coordinate, so a block of L coordinates of
// all n rows is n vector loads, a sorting network over those n vectors is a sequence of min/max
// instructions with no branches, and the reduction of the sorted block is the shared maths of
// select_math.h. Rows of the next blocks are prefetched because n streams exceed what the
// hardware prefetcher tracks.
#include <algorithm>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace fedsec::cpu::FEDSEC_ISA {

namespace {

constexpr int64_t kPrefetchBlocks = 8;

template <typename T>
void select_typed(const T* const* rows, int64_t n, int64_t begin, int64_t end, SelectOp op,
                  int64_t k, Comparators net, T* out, uint8_t* nonfinite) {
  using A = typename Element<T>::Acc;
  using V = typename Simd<A>::Vec;
  constexpr int L = Simd<A>::kLanes;
  std::vector<V> v(static_cast<size_t>(n));
  const auto* cmp = net.data;
  const int64_t ncmp = net.size;

  for (int64_t c = begin; c < end; c += L) {
    const int count = static_cast<int>(std::min<int64_t>(L, end - c));
    V bad = {};
    for (int64_t i = 0; i < n; ++i) {
      v[i] = load_lanes(rows[i], c, count);
      bad += v[i] - v[i];
      __builtin_prefetch(rows[i] + c + kPrefetchBlocks * L, 0, 0);
    }
    if (nonfinite && any_nonfinite(bad)) {
      for (int64_t i = 0; i < n; ++i)
        if (any_nonfinite(v[i])) nonfinite[i] = 1;
    }
    for (int64_t e = 0; e < ncmp; ++e) {
      V& lo = v[cmp[e].first];
      V& hi = v[cmp[e].second];
      const V a = lo, b = hi;
      lo = vmin(a, b);
      hi = vmax(a, b);
    }
    V result;
    switch (op) {
      case SelectOp::median: result = sorted_median<A>(v.data(), n, 1); break;
      case SelectOp::trimmed_mean: result = sorted_trimmed_mean<A>(v.data(), n, 1, k); break;
      case SelectOp::closest_median: {
        // The kept window differs per coordinate: reduce lane by lane (v is [n][L] scalars).
        const A* s = reinterpret_cast<const A*>(v.data());
        for (int l = 0; l < count; ++l) result[l] = sorted_closest_median_mean(s + l, n, L, k);
        break;
      }
    }
    store_lanes(out, c, count, result);
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
