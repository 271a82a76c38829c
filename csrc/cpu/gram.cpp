// Streaming Gram accumulation: G += Y Y^T with y_i = x_i - r, in float64.
//
// The coordinates are walked in chunks. A chunk of every row is converted once into a float64
// scratch block Y [n_pad x C] that stays in L2, then a register-tiled kernel forms the
// TI x TJ tile products (the upper triangle only). While one chunk is multiplied, the next chunk
// of the inputs is prefetched, so the read of the data overlaps the arithmetic.
#include <algorithm>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace fedsec::cpu::FEDSEC_ISA {

namespace {

using VD = Simd<double>::Vec;
constexpr int kLanes = Simd<double>::kLanes;
// Register tile: TI x TJ vector accumulators plus TI + TJ operands must fit the register file
// (32 vector registers with AVX-512, 16 below).
constexpr int kTileI = kVecBytes == 64 ? 4 : 2;
constexpr int kTileJ = 4;
constexpr int kRowPad = 4;  // rows are padded with zeros to a multiple of both tile sides

inline double hsum(const VD& v) {
  double s = 0;
  for (int l = 0; l < kLanes; ++l) s += v[l];
  return s;
}

// Y[ti][*] . Y[tj][*] for one tile over `vecs` vectors of the chunk; adds the upper triangle.
inline void tile_products(const VD* Y, int64_t stride_vecs, int64_t i0, int64_t j0, int64_t vecs,
                          int64_t n, double* G) {
  VD acc[kTileI][kTileJ] = {};
  const VD* yi = Y + i0 * stride_vecs;
  const VD* yj = Y + j0 * stride_vecs;
  for (int64_t v = 0; v < vecs; ++v) {
    VD a[kTileI], b[kTileJ];
    for (int t = 0; t < kTileI; ++t) a[t] = yi[t * stride_vecs + v];
    for (int t = 0; t < kTileJ; ++t) b[t] = yj[t * stride_vecs + v];
    for (int ti = 0; ti < kTileI; ++ti)
      for (int tj = 0; tj < kTileJ; ++tj) acc[ti][tj] += a[ti] * b[tj];
  }
  for (int ti = 0; ti < kTileI; ++ti) {
    const int64_t i = i0 + ti;
    for (int tj = 0; tj < kTileJ; ++tj) {
      const int64_t j = j0 + tj;
      if (i < n && j < n && j >= i) G[i * n + j] += hsum(acc[ti][tj]);
    }
  }
}

template <typename T>
void prefetch_chunk(const T* const* rows, int64_t n, int64_t begin, int64_t count) {
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < count; c += kLine) __builtin_prefetch(rows[i] + begin + c, 0, 1);
}

template <typename T>
void gram_typed(const T* const* rows, int64_t n, const T* ref, int64_t begin, int64_t end,
                double* G) {
  const int64_t n_pad = (n + kRowPad - 1) / kRowPad * kRowPad;
  // Chunk length: the float64 block of all rows stays within ~512 KiB of L2.
  const int64_t chunk =
      std::clamp<int64_t>((int64_t{1} << 16) / n_pad / kLanes * kLanes, 4 * kLanes, 2048);
  const int64_t stride_vecs = chunk / kLanes;
  std::vector<VD> Y(static_cast<size_t>(n_pad * stride_vecs));  // pad rows stay zero
  double* Yd = reinterpret_cast<double*>(Y.data());

  for (int64_t c0 = begin; c0 < end; c0 += chunk) {
    const int64_t count = std::min(chunk, end - c0);
    for (int64_t i = 0; i < n; ++i) {
      double* y = Yd + i * chunk;
      const T* x = rows[i] + c0;
      if (ref) {
        const T* r = ref + c0;
        for (int64_t c = 0; c < count; ++c)
          y[c] = double(Element<T>::load(x, c)) - double(Element<T>::load(r, c));
      } else {
        for (int64_t c = 0; c < count; ++c) y[c] = double(Element<T>::load(x, c));
      }
      std::fill(y + count, y + chunk, 0.0);
    }
    if (c0 + chunk < end) prefetch_chunk(rows, n, c0 + chunk, std::min(chunk, end - c0 - chunk));
    const int64_t vecs = (count + kLanes - 1) / kLanes;
    for (int64_t i0 = 0; i0 < n_pad; i0 += kTileI)
      for (int64_t j0 = i0 / kTileJ * kTileJ; j0 < n_pad; j0 += kTileJ)
        tile_products(Y.data(), stride_vecs, i0, j0, vecs, n, G);
  }
}

}  // namespace

void gram(const void* const* rows, int64_t n, const void* ref, int64_t begin, int64_t end,
          DType dt, double* G) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    gram_typed(reinterpret_cast<const T* const*>(rows), n, static_cast<const T*>(ref), begin, end,
               G);
  });
}

}  // namespace fedsec::cpu::FEDSEC_ISA
