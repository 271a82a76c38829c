// Coordinate-wise selection (median, trimmed mean, Bulyan's closest-to-median mean), of the rows
// themselves or of n_out mixtures of them (a pre-aggregator's rows M x, fedsec/aggregation/pre.py).
//
// Vectorised across coordinates: each SIMD lane is one coordinate, so a block of coordinates of
// all n rows is a set of vector loads, a sorting network over the n rows is a sequence of
// min/max instructions with no branches, and the reduction of the sorted block is the shared
// maths of select_math.h. A block is kColumns vectors wide so every comparator carries
// kColumns independent min/max pairs (the network's index loads are amortised and the
// out-of-order core has parallel work); the block, n x kColumns vectors, stays in L1. Rows of
// the next blocks are prefetched because n streams exceed what the hardware prefetcher tracks.
//
// The mixed variant loads the block of the n input rows, forms the n_out mixed rows from it in
// L1 (one multiply-add per nonzero of the mixing matrix and vector), and sorts and reduces those:
// the mixed rows exist only as this block, never as n_out x d.
#include <algorithm>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace fedsec::cpu::FEDSEC_ISA {

namespace {

constexpr int kColumns = 4;
constexpr int64_t kPrefetchBytes = 2048;

// Lanes of each of the block's columns that hold coordinates (the last block may be short).
struct BlockLanes {
  int count[kColumns];
  BlockLanes(int64_t c, int64_t end, int lanes) {
    for (int u = 0; u < kColumns; ++u)
      count[u] = static_cast<int>(std::clamp<int64_t>(end - c - u * lanes, 0, lanes));
  }
};

// v[i * kColumns + u] <- row i at coordinates c + u * L...; flags the rows holding NaN or Inf.
template <typename T, typename V>
void load_block(const T* const* rows, int64_t n, int64_t c, const BlockLanes& lanes, V* v,
                uint8_t* nonfinite) {
  constexpr int L = static_cast<int>(sizeof(V) / sizeof(typename Element<T>::Acc));
  V bad = {};
  for (int64_t i = 0; i < n; ++i) {
    for (int u = 0; u < kColumns; ++u) {
      V& x = v[i * kColumns + u];
      x = load_lanes(rows[i], c + u * L, lanes.count[u]);
      bad += x - x;
      __builtin_prefetch(reinterpret_cast<const char*>(rows[i] + c + u * L) + kPrefetchBytes, 0, 0);
    }
  }
  if (nonfinite && any_nonfinite(bad)) {
    for (int64_t i = 0; i < n; ++i)
      for (int u = 0; u < kColumns; ++u)
        if (any_nonfinite(v[i * kColumns + u])) nonfinite[i] = 1;
  }
}

template <typename V>
void sort_block(V* v, Comparators net) {
  for (int64_t e = 0; e < net.size; ++e) {
    V* lo = &v[net.data[e].first * kColumns];
    V* hi = &v[net.data[e].second * kColumns];
    for (int u = 0; u < kColumns; ++u) {
      const V a = lo[u], b = hi[u];
      lo[u] = vmin(a, b);
      hi[u] = vmax(a, b);
    }
  }
}

template <typename T>
void select_typed(const T* const* rows, int64_t n, int64_t begin, int64_t end, SelectOp op,
                  int64_t k, Comparators net, T* out, uint8_t* nonfinite) {
  using A = typename Element<T>::Acc;
  using V = typename Simd<A>::Vec;
  constexpr int L = Simd<A>::kLanes;
  constexpr int64_t kBlock = int64_t{kColumns} * L;
  std::vector<V> v(static_cast<size_t>(n * kColumns));  // v[i * kColumns + u]: row i, column u

  for (int64_t c = begin; c < end; c += kBlock) {
    const BlockLanes lanes(c, end, L);
    load_block(rows, n, c, lanes, v.data(), nonfinite);
    sort_block(v.data(), net);
    for (int u = 0; u < kColumns && lanes.count[u] > 0; ++u) {
      V result = sorted_reduce<A>(&v[u], n, kColumns, op, k);
      // A sum that overflowed (or a non-finite input, flagged above): redo the lanes rescaled.
      if (any_nonfinite(result)) {
        const V rescaled = sorted_reduce_rescaled<A>(&v[u], n, kColumns, op, k);
        result = result - result == V{} ? result : rescaled;
      }
      store_lanes(out, c + u * L, lanes.count[u], result);
    }
  }
}

// m[p * kColumns + u] <- sum over row p's nonzeros e of weight[e] * x[column[e] * kColumns + u].
template <typename V, typename A>
void mix_block(const Mixing& mix, const A* weight, const V* x, V* m) {
  for (int64_t p = 0; p < mix.n_out; ++p) {
    V acc[kColumns] = {};
    for (int64_t e = mix.start[p]; e < mix.start[p + 1]; ++e) {
      const A w = weight[e];
      const V* xi = &x[int64_t{mix.column[e]} * kColumns];
      for (int u = 0; u < kColumns; ++u) acc[u] += w * xi[u];
    }
    for (int u = 0; u < kColumns; ++u) m[p * kColumns + u] = acc[u];
  }
}

template <typename T>
void mixed_select_typed(const T* const* rows, int64_t n, const Mixing& mix, int64_t begin,
                        int64_t end, SelectOp op, int64_t k, Comparators net, T* out,
                        uint8_t* nonfinite) {
  using A = typename Element<T>::Acc;
  using V = typename Simd<A>::Vec;
  constexpr int L = Simd<A>::kLanes;
  constexpr int64_t kBlock = int64_t{kColumns} * L;
  const int64_t n_out = mix.n_out;
  const int64_t nonzeros = mix.start[n_out];
  // The weights in the accumulation type, as they are and scaled by mix.down (exact: a power
  // of two) for the overflow path.
  std::vector<A> weight(static_cast<size_t>(nonzeros)), weight_down(weight.size());
  for (int64_t e = 0; e < nonzeros; ++e) {
    weight[e] = A(mix.weight[e]);
    weight_down[e] = A(mix.weight[e] * mix.down);
  }
  std::vector<V> x(static_cast<size_t>(n * kColumns));      // the input rows' block
  std::vector<V> m(static_cast<size_t>(n_out * kColumns));  // the mixed rows' block
  V result[kColumns];

  for (int64_t c = begin; c < end; c += kBlock) {
    const BlockLanes lanes(c, end, L);
    load_block(rows, n, c, lanes, x.data(), nonfinite);
    mix_block(mix, weight.data(), x.data(), m.data());
    sort_block(m.data(), net);
    bool overflowed = false;
    for (int u = 0; u < kColumns; ++u) {
      result[u] = sorted_reduce<A>(&m[u], n_out, kColumns, op, k);
      overflowed = overflowed || (lanes.count[u] > 0 && any_nonfinite(result[u]));
    }
    // A mixed value or a sum that overflowed (or a non-finite input, flagged): the block again
    // from the inputs scaled by mix.down, where nothing can overflow, and scaled back; only the
    // lanes that were not finite take it.
    if (overflowed) {
      mix_block(mix, weight_down.data(), x.data(), m.data());
      sort_block(m.data(), net);
      for (int u = 0; u < kColumns; ++u) {
        const V rescaled = sorted_reduce<A>(&m[u], n_out, kColumns, op, k) * A(mix.up);
        result[u] = result[u] - result[u] == V{} ? result[u] : rescaled;
      }
    }
    for (int u = 0; u < kColumns && lanes.count[u] > 0; ++u)
      store_lanes(out, c + u * L, lanes.count[u], result[u]);
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

void mixed_select(const void* const* rows, int64_t n, const Mixing& mix, int64_t begin,
                  int64_t end, DType dt, SelectOp op, int64_t k, Comparators net, void* out,
                  uint8_t* nonfinite) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    mixed_select_typed(reinterpret_cast<const T* const*>(rows), n, mix, begin, end, op, k, net,
                       static_cast<T*>(out), nonfinite);
  });
}

}  // namespace fedsec::cpu::FEDSEC_ISA
