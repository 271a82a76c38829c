// Coordinate-wise selection on the GPU (median, trimmed mean, Bulyan's closest-to-median mean):
// per coordinate, sort the n values and reduce them with the shared maths of select_math.h.
//
// Two layouts, by how many values a coordinate has:
// - Columns (n values of a thread fit shared memory for a warp's worth of threads): a thread per
//   coordinate (the lanes of a warp on consecutive coordinates, so every row read is coalesced)
//   keeps its n values as a column of shared memory, [i * blockDim + thread], and runs the same
//   pruned sorting network as the CPU backend (fedsec::select_network), whose comparators every
//   thread reads in the same order (uniform loads); a warp's compare-exchanges then touch
//   consecutive words, without bank conflicts. Network and arithmetic are the CPU backend's.
// - Block (more values): a block per coordinate sorts them with a bitonic sort, in shared memory
//   when they fit and in a global scratch slice otherwise; correct for any n.
#include <algorithm>
#include <vector>

#include "check.cuh"
#include "fedsec/ops.h"

namespace fedsec::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kLoadBatch = 8;  // rows whose loads a thread issues before storing any
// Global scratch of the block layout, when the values do not fit shared memory, at most.
constexpr size_t kScratchBytes = size_t{256} << 20;

template <typename T>
using Acc = typename Element<T>::Acc;

// Shapes: rows[n] device pointers to d elements of T; net[ncmp] comparators (a < b, row
//   indices), pruned to the sorted positions `op` reads; out: d elements of T; nonfinite: n bytes
//   or null.
// Launch: 1-D grid-stride, blockDim a multiple of 32 (at most kThreads), one coordinate per
//   thread per step; dynamic shared memory n * blockDim Acc values, then row_flag_bytes(n) when
//   nonfinite is non-null.
// Assumes: n >= 1; k valid for op (checked by the bindings).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    select_columns_kernel(const T* const* __restrict__ rows, int64_t n, int64_t d,
                          const int2* __restrict__ net, int ncmp, SelectOp op, int64_t k,
                          T* __restrict__ out, uint8_t* __restrict__ nonfinite) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t stride = blockDim.x;
  Acc<T>* column = reinterpret_cast<Acc<T>*>(smem) + threadIdx.x;
  const detail::RowFlags flags(reinterpret_cast<uint32_t*>(smem + n * stride * sizeof(Acc<T>)),
                               n);
  const bool flagging = nonfinite != nullptr;
  if (flagging) flags.clear();
  __syncthreads();

  // Each thread works on its own column only: no block synchronisation inside the loop.
  for (int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; c < d;
       c += int64_t{gridDim.x} * blockDim.x) {
    // The column, kLoadBatch rows at a time: their loads are all issued before the first store
    // (generic loads cannot move past shared-memory stores), so they are in flight together.
    for (int64_t i0 = 0; i0 < n; i0 += kLoadBatch) {
      Acc<T> v[kLoadBatch] = {};
#pragma unroll
      for (int b = 0; b < kLoadBatch; ++b)
        if (i0 + b < n) v[b] = Element<T>::load(rows[i0 + b], c);
#pragma unroll
      for (int b = 0; b < kLoadBatch; ++b) {
        if (i0 + b >= n) break;
        column[(i0 + b) * stride] = v[b];
        if (flagging && detail::is_nonfinite(v[b])) flags.set(i0 + b);
      }
    }
    for (int e = 0; e < ncmp; ++e) {
      const int2 cmp = net[e];
      compare_exchange(column[cmp.x * stride], column[cmp.y * stride]);
    }
    Acc<T> result = sorted_reduce<Acc<T>>(column, n, stride, op, k);
    // A sum that overflowed (or a non-finite input, flagged above): redo it rescaled.
    if (detail::is_nonfinite(result))
      result = sorted_reduce_rescaled<Acc<T>>(column, n, stride, op, k);
    Element<T>::store(out, c, result);
  }

  __syncthreads();
  if (flagging) flags.flush(nonfinite);
}

// Sorts buf[0, p2) ascending with all threads of the block (bitonic sort; p2 a power of two).
// Ends with the block synchronised.
template <typename A>
__device__ void block_bitonic_sort(A* buf, int64_t p2) {
  for (int64_t size = 2; size <= p2; size <<= 1) {
    for (int64_t half = size >> 1; half > 0; half >>= 1) {
      // Comparator t joins lo (t with a 0 bit inserted at `half`) and lo + half; the run of
      // `size` it lies in ascends or descends by the `size` bit of lo.
      for (int64_t t = threadIdx.x; t < p2 / 2; t += blockDim.x) {
        const int64_t lo = ((t & ~(half - 1)) << 1) | (t & (half - 1));
        if (lo & size)
          compare_exchange(buf[lo + half], buf[lo]);
        else
          compare_exchange(buf[lo], buf[lo + half]);
      }
      __syncthreads();
    }
  }
}

// Shapes: as select_columns_kernel; p2 = the power of two >= n; scratch: null, or
//   gridDim.x * p2 Acc values of global memory (a slice per block).
// Launch: 1-D grid-stride over coordinates, one coordinate per block per step, kThreads threads;
//   dynamic shared memory p2 Acc values unless scratch is given, then row_flag_bytes(n) when
//   nonfinite is non-null.
// Assumes: n >= 1; k valid for op. Each thread reads a different row (uncoalesced); blocks that
//   run together read neighbouring coordinates, so the 32-byte sectors are shared in L2.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    select_block_kernel(const T* const* __restrict__ rows, int64_t n, int64_t p2, int64_t d,
                        SelectOp op, int64_t k, T* __restrict__ out,
                        uint8_t* __restrict__ nonfinite, Acc<T>* __restrict__ scratch) {
  extern __shared__ __align__(16) unsigned char smem[];
  Acc<T>* buf = scratch ? scratch + blockIdx.x * p2 : reinterpret_cast<Acc<T>*>(smem);
  const detail::RowFlags flags(
      reinterpret_cast<uint32_t*>(smem + (scratch ? 0 : p2 * sizeof(Acc<T>))), n);
  const bool flagging = nonfinite != nullptr;
  if (flagging) flags.clear();
  __syncthreads();

  for (int64_t c = blockIdx.x; c < d; c += gridDim.x) {
    // Padding with +Inf keeps the n values first in sorted order.
    for (int64_t i = threadIdx.x; i < p2; i += blockDim.x) {
      Acc<T> v = Acc<T>(INFINITY);
      if (i < n) {
        v = Element<T>::load(rows[i], c);
        if (flagging && detail::is_nonfinite(v)) flags.set(i);
      }
      buf[i] = v;
    }
    __syncthreads();
    block_bitonic_sort(buf, p2);
    if (threadIdx.x == 0) {
      Acc<T> result = sorted_reduce<Acc<T>>(buf, n, 1, op, k);
      if (detail::is_nonfinite(result)) result = sorted_reduce_rescaled<Acc<T>>(buf, n, 1, op, k);
      Element<T>::store(out, c, result);
    }
    __syncthreads();  // buf is reused by the next coordinate
  }

  __syncthreads();
  if (flagging) flags.flush(nonfinite);
}

template <typename T>
void select_typed(const T* const* rows, int64_t n, int64_t d, SelectOp op, int64_t k, T* out,
                  uint8_t* nonfinite, cudaStream_t stream) {
  constexpr size_t kValue = sizeof(Acc<T>);
  const size_t flag_bytes = nonfinite ? detail::row_flag_bytes(n) : 0;
  if (nonfinite) detail::check_row_flags_fit(n, 0);
  const detail::StreamBuffer<const T*> table(rows, static_cast<size_t>(n), stream);

  // Threads whose columns fit shared memory beside the flags, in whole warps.
  const int64_t column_threads =
      static_cast<int64_t>((detail::kMaxSharedBytes - flag_bytes) / (n * kValue)) / 32 * 32;
  if (column_threads >= 32) {
    const int threads = static_cast<int>(std::min<int64_t>(column_threads, kThreads));
    std::vector<int2> net;
    for (const auto& [a, b] : select_network(n, op, k)) net.push_back(make_int2(a, b));
    const detail::StreamBuffer<int2> dev_net(net.data(), net.size(), stream);
    const size_t smem = static_cast<size_t>(n * threads) * kValue + flag_bytes;
    const int64_t blocks =
        std::min((d + threads - 1) / threads,
                 detail::resident_blocks(select_columns_kernel<T>, threads, smem));
    select_columns_kernel<T><<<static_cast<unsigned>(blocks), threads, smem, stream>>>(
        table.get(), n, d, dev_net.get(), static_cast<int>(net.size()), op, k, out, nonfinite);
    FEDSEC_CUDA_CHECK_LAUNCH();
    return;
  }

  int64_t p2 = 1;
  while (p2 < n) p2 <<= 1;
  const size_t value_bytes = static_cast<size_t>(p2) * kValue;
  const bool in_shared = value_bytes + flag_bytes <= detail::kMaxSharedBytes;
  const size_t smem = flag_bytes + (in_shared ? value_bytes : 0);
  int64_t blocks = std::min(d, detail::resident_blocks(select_block_kernel<T>, kThreads, smem));
  if (!in_shared)
    blocks = std::min(blocks, std::max<int64_t>(1, kScratchBytes / value_bytes));
  const detail::StreamBuffer<Acc<T>> scratch(in_shared ? 0 : static_cast<size_t>(blocks * p2),
                                             stream);
  select_block_kernel<T><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(
      table.get(), n, p2, d, op, k, out, nonfinite, scratch.get());
  FEDSEC_CUDA_CHECK_LAUNCH();
}

}  // namespace

void coordinate_select(const void* const* rows, int64_t n, int64_t d, DType dt, SelectOp op,
                       int64_t k, void* out, uint8_t* nonfinite, void* stream) {
  if (n <= 0 || d <= 0) return;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    select_typed(reinterpret_cast<const T* const*>(rows), n, d, op, k, static_cast<T*>(out),
                 nonfinite, static_cast<cudaStream_t>(stream));
  });
}

}  // namespace fedsec::cuda
