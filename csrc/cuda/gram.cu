// Streaming Gram accumulation on the GPU: G += Y Y^T with y_i = scale * (x_i - r), in float64.
//
// G is cut into tiles of kTile x kTile entries. A block owns one tile pair (bi <= bj) of the
// upper triangle and one slice of the coordinates, which it walks in chunks of bk coordinates:
// the chunk of every row of both tiles is centered and converted to float64 once, into shared
// memory, and then every thread adds the products of a kMicro x kMicro micro-tile of rows into
// registers. At the end each product is added to G with a double atomicAdd, together with its
// mirror below the diagonal, so G comes out whole and symmetric without a second pass.
//
// Small n (the common case: tens of clients) must not waste the double-precision units on
// padding: a tile holds only ceil(rows / kMicro) row groups, only the micro-tiles of its upper
// triangle get threads, and the threads left over split the chunk's coordinates as "lanes"
// whose partial sums a warp shuffle adds up at the end.
#include <algorithm>

#include "check.cuh"
#include "fedsec/ops.h"

namespace fedsec::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kTile = 64;                 // rows per tile side
constexpr int kMicro = 4;                 // rows per micro-tile side
constexpr int kGroups = kTile / kMicro;   // micro-tile rows (groups) per full tile side
static_assert(kGroups * kGroups <= kThreads, "an off-diagonal tile needs a thread per micro-tile");
constexpr size_t kStageBytes = 34 * 1024;  // shared memory for the staged chunk, at most
constexpr int kStageBatch = 4;             // staged elements a thread loads before storing any

// Row groups of tile `b`: group g holds the tile's rows g, g + m, g + 2m, g + 3m with
// m = ceil(rows / kMicro). Strided groups keep neighbouring threads (consecutive g) on
// neighbouring shared-memory rows, which the odd row pitch puts in different banks.
__device__ __forceinline__ int groups_in_tile(int64_t n, int64_t b) {
  const int64_t rows = min(int64_t{kTile}, n - b * kTile);
  return static_cast<int>((rows + kMicro - 1) / kMicro);
}

// Shapes: rows[n] device pointers to d elements of T; ref: d elements or null (no centering);
//   scale: a power of two every centered value is multiplied by; G: n x n doubles, row-major,
//   accumulated into (both triangles).
// Launch: grid (tile pairs T(T+1)/2 with T = ceil(n / kTile), coordinate slices), kThreads
//   threads; dynamic shared memory staged_rows * (bk + 1) doubles with bk = 1 << bk_shift,
//   staged_rows = kMicro * (groups of tile bi + groups of tile bj, or just bi's on the diagonal),
//   at most 2 * kTile.
// Assumes: bk >= 32 (a power of two); blockIdx.x enumerates the pairs (bi, bj), bi <= bj,
//   row-major, so the pairs of one slice are scheduled together and share its reads in L2.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gram_kernel(const T* const* __restrict__ rows, const T* __restrict__ ref, int64_t n,
                int64_t d, int bk_shift, double scale, double* __restrict__ G) {
  extern __shared__ double stage[];  // [staged row][bk + 1]: odd pitch against bank conflicts
  const int bk = 1 << bk_shift;
  const int pitch = bk + 1;

  // This block's tile pair.
  const int64_t tiles = (n + kTile - 1) / kTile;
  int64_t bi = 0, rest = blockIdx.x;
  while (rest >= tiles - bi) {  // row bi of the triangle holds tiles - bi pairs
    rest -= tiles - bi;
    ++bi;
  }
  const int64_t bj = bi + rest;
  const bool diag = bi == bj;
  const int mi = groups_in_tile(n, bi), mj = groups_in_tile(n, bj);
  const int staged = kMicro * (diag ? mi : mi + mj);
  const double* Yi = stage;
  const double* Yj = diag ? stage : stage + kMicro * mi * pitch;

  // This thread's micro-tile (gi, gj) and lane: `lanes` consecutive threads (a power of two, at
  // most a warp) share a micro-tile and take every lanes-th coordinate of the chunk.
  const int pairs = diag ? mi * (mi + 1) / 2 : mi * mj;
  int lanes = 32;
  while (lanes > 1 && pairs * lanes > kThreads) lanes >>= 1;
  const int pair = threadIdx.x / lanes, lane = threadIdx.x % lanes;
  const bool active = pair < pairs;
  int gi = 0, gj = 0;
  if (active) {
    if (diag) {
      int r = pair;
      while (r >= mi - gi) {
        r -= mi - gi;
        ++gi;
      }
      gj = gi + r;
    } else {
      gi = pair / mj;
      gj = pair % mj;
    }
  }

  double acc[kMicro][kMicro] = {};
  const int items = staged << bk_shift;  // the chunk's elements: item e = (row, kk)
  const int64_t slice_step = int64_t{gridDim.y} << bk_shift;
  for (int64_t c0 = int64_t{blockIdx.y} << bk_shift; c0 < d; c0 += slice_step) {
    __syncthreads();  // the previous chunk has been consumed
    // Stage the chunk, centered, as float64. A warp covers 32 consecutive coordinates of one row
    // (coalesced); each thread loads kStageBatch items before storing any, to keep that many
    // loads in flight (the generic loads cannot move past the shared-memory stores).
    for (int e0 = threadIdx.x; e0 < items; e0 += kThreads * kStageBatch) {
      double y[kStageBatch];
#pragma unroll
      for (int b = 0; b < kStageBatch; ++b) {
        const int e = e0 + b * kThreads;
        const int r = e >> bk_shift;
        const int64_t c = c0 + (e & (bk - 1));
        // Staged rows [0, kMicro * mi) are tile bi's, the rest tile bj's; rows past n (padding
        // of the last tile) and coordinates past d stage zeros.
        const int64_t row = r < kMicro * mi ? bi * kTile + r : bj * kTile + (r - kMicro * mi);
        y[b] = 0.0;
        if (e < items && row < n && c < d) {  // scaled before the difference, which could overflow
          y[b] = static_cast<double>(Element<T>::load(rows[row], c)) * scale;
          if (ref) y[b] -= static_cast<double>(Element<T>::load(ref, c)) * scale;
        }
      }
#pragma unroll
      for (int b = 0; b < kStageBatch; ++b) {
        const int e = e0 + b * kThreads;
        if (e < items) stage[(e >> bk_shift) * pitch + (e & (bk - 1))] = y[b];
      }
    }
    __syncthreads();
    if (active) {
#pragma unroll 4
      for (int kk = lane; kk < bk; kk += lanes) {
        double a[kMicro], b[kMicro];
#pragma unroll
        for (int s = 0; s < kMicro; ++s) {
          a[s] = Yi[(gi + mi * s) * pitch + kk];
          b[s] = Yj[(gj + mj * s) * pitch + kk];
        }
#pragma unroll
        for (int r = 0; r < kMicro; ++r)
#pragma unroll
          for (int s = 0; s < kMicro; ++s) acc[r][s] = fma(a[r], b[s], acc[r][s]);
      }
    }
  }

  // Sum the lanes of each micro-tile (all threads take part in the shuffles), then add to G.
#pragma unroll
  for (int r = 0; r < kMicro; ++r)
#pragma unroll
    for (int s = 0; s < kMicro; ++s)
      for (int offset = lanes / 2; offset > 0; offset >>= 1)
        acc[r][s] += __shfl_xor_sync(0xffffffffu, acc[r][s], offset);
  if (!active || lane != 0) return;
  // A micro-tile on the diagonal holds both (i, j) and (j, i); every other one adds its mirror.
  const bool mirror = !(diag && gi == gj);
#pragma unroll
  for (int r = 0; r < kMicro; ++r) {
    const int64_t i = bi * kTile + gi + mi * r;
#pragma unroll
    for (int s = 0; s < kMicro; ++s) {
      const int64_t j = bj * kTile + gj + mj * s;
      if (i < n && j < n) {
        atomicAdd(&G[i * n + j], acc[r][s]);
        if (mirror) atomicAdd(&G[j * n + i], acc[r][s]);
      }
    }
  }
}

template <typename T>
void gram_typed(const T* const* rows, int64_t n, const T* ref, int64_t d, double scale, double* G,
                cudaStream_t stream) {
  const int64_t tiles = (n + kTile - 1) / kTile;
  const int64_t staged_rows = tiles == 1 ? (n + kMicro - 1) / kMicro * kMicro : 2 * kTile;
  // Chunk length bk = 1 << bk_shift: the largest power of two whose staged rows fit
  // kStageBytes, at least 32, and no longer than d needs.
  int bk_shift = 5;
  while (staged_rows * ((int64_t{2} << bk_shift) + 1) * int64_t{sizeof(double)} <=
             int64_t{kStageBytes} &&
         (int64_t{1} << bk_shift) < d)
    ++bk_shift;
  const int64_t bk = int64_t{1} << bk_shift;
  const size_t smem = static_cast<size_t>(staged_rows * (bk + 1)) * sizeof(double);

  const int64_t tile_pairs = tiles * (tiles + 1) / 2;
  const int64_t chunks = (d + bk - 1) / bk;
  // Enough coordinate slices to fill the device once; each slice's atomics are then a small
  // fraction of its work.
  const int64_t slices = std::clamp<int64_t>(
      detail::resident_blocks(gram_kernel<T>, kThreads, smem) / tile_pairs, 1,
      std::min<int64_t>(chunks, 65535));

  const detail::StreamBuffer<const T*> table(rows, static_cast<size_t>(n), stream);
  gram_kernel<T><<<dim3(static_cast<unsigned>(tile_pairs), static_cast<unsigned>(slices)),
                   kThreads, smem, stream>>>(table.get(), ref, n, d, bk_shift, scale, G);
  FEDSEC_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gram(const void* const* rows, int64_t n, const void* ref, int64_t d, DType dt, double scale,
          double* G, void* stream) {
  if (n <= 0 || d <= 0) return;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    gram_typed(reinterpret_cast<const T* const*>(rows), n, static_cast<const T*>(ref), d, scale, G,
               static_cast<cudaStream_t>(stream));
  });
}

}  // namespace fedsec::cuda
