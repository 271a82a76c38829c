// Streaming Gram accumulation: G += Y Y^T with y_i = scale * (x_i - r), scale a power of two.
//
// The coordinates are walked in chunks. A chunk of every row is converted once into a scratch
// block Y [n_pad x C] that stays in L2, then a register-tiled kernel forms the TI x TJ tile
// products (upper triangle only) and adds each tile's sums into the float64 G. While one chunk
// is multiplied, the next chunk of the inputs is prefetched, so the read of the data overlaps
// the arithmetic.
//
// Two precisions. Exact: Y and the products in float64. Fast (the default for 16- and 32-bit
// inputs): Y and the products in float32, twice the SIMD width; each lane sums at most
// kFastRun products before the tile's sums go to float64, which bounds the error of every
// entry by gram_fast_error() * ||y_i|| ||y_j|| (see fedsec/aggregation/context.py for how that bound is
// checked and the exact path used when it is not good enough).

#include <algorithm>
#include <utility>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace fedsec::cpu::FEDSEC_ISA {

namespace {

// Register tile: TI x TJ vector accumulators plus TI + TJ operands must fit the register file
// (32 vector registers with AVX-512, 16 below).
constexpr int kTileI = kVecBytes == 64 ? 4 : 2;
constexpr int kTileJ = 4;
constexpr int kRowPad = 4;  // rows are padded with zeros to a multiple of both tile sides
constexpr int64_t kFastRun = 64;  // vectors of float32 products one lane sums before float64

// Lane j of one level of a transposed pairwise sum: lanes are in blocks of B, each block the
// partial sums of one vector; the level halves the blocks, the low half of each new block from
// `a`, the high half from `b` (indices into the concatenation a ++ b).
constexpr int fold_index(int j, int lanes, int block, bool high) {
  const int k = j / block, p = j % block, half = block / 2;
  return (p < half ? k * block + p : lanes + k * block + p - half) + (high ? half : 0);
}

template <typename V, int L, int B, std::size_t... J>
inline V fold(const V& a, const V& b, std::index_sequence<J...>) {
  return __builtin_shufflevector(a, b, fold_index(J, L, B, false)...) +
         __builtin_shufflevector(a, b, fold_index(J, L, B, true)...);
}

template <typename V, int L, int B>
inline void fold_levels(V* v, int count) {
  if constexpr (B > 1) {
    for (int i = 0; i < count / 2; ++i)
      v[i] = fold<V, L, B>(v[2 * i], v[2 * i + 1], std::make_index_sequence<L>{});
    fold_levels<V, L, B / 2>(v, count / 2);
  }
}

constexpr int bit_reversed(int j, int bits) {
  int r = 0;
  for (int b = 0; b < bits; ++b) r |= ((j >> b) & 1) << (bits - 1 - b);
  return r;
}

// out[s] = the lane sum of v[s] for the `lanes` vectors v (overwritten), summed pairwise (lane
// l + lane l + w for w = lanes/2 .. 1), so the float32 sum adds log2(lanes) roundings to the
// bound, not lanes. The lanes of all the vectors are reduced together by shuffles into one
// vector of sums (its lanes in bit-reversed order), instead of lane by lane through memory.
template <typename P>
inline void hsum_lanes(typename Simd<P>::Vec* v, P* out) {
  constexpr int L = Simd<P>::kLanes;
  fold_levels<typename Simd<P>::Vec, L, L>(v, L);
  int bits = 0;
  while ((1 << bits) < L) ++bits;
  for (int j = 0; j < L; ++j) out[bit_reversed(j, bits)] = v[0][j];
}

// Y[ti][*] . Y[tj][*] for one tile over `vecs` vectors of the chunk; adds the upper triangle.
template <typename P>
inline void tile_products(const typename Simd<P>::Vec* Y, int64_t stride_vecs, int64_t i0,
                          int64_t j0, int64_t vecs, int64_t n, double* G) {
  using V = typename Simd<P>::Vec;
  V acc[kTileI][kTileJ] = {};
  const V* yi = Y + i0 * stride_vecs;
  const V* yj = Y + j0 * stride_vecs;
  for (int64_t v = 0; v < vecs; ++v) {
    V a[kTileI], b[kTileJ];
    for (int t = 0; t < kTileI; ++t) a[t] = yi[t * stride_vecs + v];
    for (int t = 0; t < kTileJ; ++t) b[t] = yj[t * stride_vecs + v];
    for (int ti = 0; ti < kTileI; ++ti)
      for (int tj = 0; tj < kTileJ; ++tj) acc[ti][tj] += a[ti] * b[tj];
  }
  constexpr int kAcc = kTileI * kTileJ, kLanes = Simd<P>::kLanes;
  static_assert(kAcc % kLanes == 0, "the tile's accumulators are summed lanes at a time");
  P sums[kAcc];
  V* flat = &acc[0][0];
  for (int g = 0; g < kAcc; g += kLanes) hsum_lanes<P>(flat + g, sums + g);
  for (int ti = 0; ti < kTileI; ++ti) {
    const int64_t i = i0 + ti;
    for (int tj = 0; tj < kTileJ; ++tj) {
      const int64_t j = j0 + tj;
      if (i < n && j < n && j >= i) G[i * n + j] += double(sums[ti * kTileJ + tj]);
    }
  }
}

// Prefetches the next chunk's cache lines a few at a time, spread over the tile products of the
// current chunk: issued all at once they would overflow the outstanding-miss queues and be
// dropped.
template <typename T>
class ChunkPrefetcher {
 public:
  ChunkPrefetcher(const T* const* rows, int64_t n, int64_t begin, int64_t count, int64_t steps)
      : rows_(rows), n_(n), begin_(begin), count_(count),
        per_step_((n * ((count + kLine - 1) / kLine) + steps - 1) / std::max<int64_t>(steps, 1)) {}

  void step() {
    for (int64_t k = 0; k < per_step_ && row_ < n_; ++k) {
      __builtin_prefetch(rows_[row_] + begin_ + offset_, 0, 1);
      offset_ += kLine;
      if (offset_ >= count_) {
        offset_ = 0;
        ++row_;
      }
    }
  }

 private:
  static constexpr int64_t kLine = 64 / sizeof(T);
  const T* const* rows_;
  int64_t n_, begin_, count_, per_step_;
  int64_t row_ = 0, offset_ = 0;
};

template <typename T, typename P>
void gram_typed(const T* const* rows, int64_t n, const T* ref, int64_t begin, int64_t end,
                P scale, double* G) {
  using V = typename Simd<P>::Vec;
  constexpr int kLanes = Simd<P>::kLanes;
  const int64_t n_pad = (n + kRowPad - 1) / kRowPad * kRowPad;
  // Chunk length: the block of all rows stays within ~512 KiB of L2, and float32 runs are
  // capped by the error bound.
  const int64_t max_chunk = std::is_same_v<P, float> ? kFastRun * kLanes : 2048;
  const int64_t chunk = std::clamp<int64_t>(
      (int64_t{512} << 10) / int64_t{sizeof(P)} / n_pad / kLanes * kLanes, kLanes, max_chunk);
  const int64_t stride_vecs = chunk / kLanes;
  std::vector<V> Y(static_cast<size_t>(n_pad * stride_vecs));  // pad rows stay zero
  P* Yd = reinterpret_cast<P*>(Y.data());

  for (int64_t c0 = begin; c0 < end; c0 += chunk) {
    const int64_t count = std::min(chunk, end - c0);
    for (int64_t i = 0; i < n; ++i) {
      P* y = Yd + i * chunk;
      const T* x = rows[i] + c0;
      // Scaled before the difference, which could overflow otherwise.
      if (ref) {
        const T* r = ref + c0;
        for (int64_t c = 0; c < count; ++c)
          y[c] = P(Element<T>::load(x, c)) * scale - P(Element<T>::load(r, c)) * scale;
      } else {
        for (int64_t c = 0; c < count; ++c) y[c] = P(Element<T>::load(x, c)) * scale;
      }
      std::fill(y + count, y + chunk, P(0));
    }
    const int64_t vecs = (count + kLanes - 1) / kLanes;
    const int64_t tiles = (n_pad / kTileI) * (n_pad / kTileJ + 1) / 2 + 1;
    ChunkPrefetcher<T> prefetch(rows, n, c0 + chunk, std::max<int64_t>(0, std::min(chunk, end - c0 - chunk)), tiles);
    for (int64_t i0 = 0; i0 < n_pad; i0 += kTileI)
      for (int64_t j0 = i0 / kTileJ * kTileJ; j0 < n_pad; j0 += kTileJ) {
        tile_products<P>(Y.data(), stride_vecs, i0, j0, vecs, n, G);
        prefetch.step();
      }
    prefetch.step();
  }
}

}  // namespace

void gram(const void* const* rows, int64_t n, const void* ref, int64_t begin, int64_t end,
          DType dt, bool fast, double scale, double* G) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const auto* r = reinterpret_cast<const T* const*>(rows);
    if (fast && !std::is_same_v<T, double>)
      gram_typed<T, float>(r, n, static_cast<const T*>(ref), begin, end, float(scale), G);
    else
      gram_typed<T, double>(r, n, static_cast<const T*>(ref), begin, end, scale, G);
  });
}

double gram_fast_error() {
  // Per entry: rounding of y (2u), kFastRun-term lane sums (kFastRun u), the pairwise
  // horizontal sum (log2(lanes) u), and the product itself (u), u = 2^-24. Products that
  // underflow add an absolute error instead (see fedsec/aggregation/backends/native.py).
  int log2_lanes = 0;
  while ((1 << log2_lanes) < Simd<float>::kLanes) ++log2_lanes;
  return double(kFastRun + log2_lanes + 3) * 0x1p-24;
}

}  // namespace fedsec::cpu::FEDSEC_ISA
