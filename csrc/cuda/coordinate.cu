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
//
// The mixed selection (the n_out values y_p = sum_i M_pi x_i[c] of a pre-aggregator's mixing
// matrix M, fedsec/aggregation/pre.py) has the same two layouts: the mixed values are formed
// where the sorted values live (a thread's shared column, or the block's buffer), from the
// nonzeros of M, so the n_out mixed rows never exist in global memory.
#include <algorithm>
#include <cmath>
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

// The nonzeros of a mixing matrix M (n_out x n) on the device, in the accumulation type, by
// input (column-compressed, for the columns layout: entries [start[i], start[i + 1]) hold the
// mixed rows `index` that input i feeds) or by output (row-compressed, for the block layout:
// the entries of mixed row p hold the inputs `index` it reads). `weight_down` is the weights
// times `down` (a power of two with down * max(n_out, 2) * max_p sum_i |M_pi| <= 1, so inputs
// mixed by it and reduced cannot overflow); `up` = 1 / down.
template <typename A>
struct DeviceMixing {
  const int64_t* start;
  const int32_t* index;
  const A* weight;
  const A* weight_down;
  int64_t n_out;
  A up;
};

// Shapes: rows[n] device pointers to d elements of T; mix column-compressed (by input); net[ncmp]
//   comparators over n_out values, pruned to what `op` reads; out: d elements of T; nonfinite:
//   n bytes or null.
// Launch: 1-D grid-stride, blockDim a multiple of 32 (at most kThreads), one coordinate per
//   thread per step; dynamic shared memory n_out * blockDim Acc values (a column of mixed values
//   per thread, [p * blockDim + thread]), then row_flag_bytes(n) when nonfinite is non-null.
// Each input value is loaded once (kLoadBatch rows in flight) and added, weighted, to the mixed
//   values it feeds; every thread walks the same nonzeros in the same order (uniform loads).
//   Where the reduction is not finite, the coordinate is redone from the inputs scaled by
//   `down` (weight_down) and the result scaled back by `up`.
// Assumes: n, n_out >= 1; k valid for op and n_out (checked by the bindings).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    mixed_columns_kernel(const T* const* __restrict__ rows, int64_t n, DeviceMixing<Acc<T>> mix,
                         int64_t d, const int2* __restrict__ net, int ncmp, SelectOp op,
                         int64_t k, T* __restrict__ out, uint8_t* __restrict__ nonfinite) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t stride = blockDim.x;
  const int64_t n_out = mix.n_out;
  Acc<T>* column = reinterpret_cast<Acc<T>*>(smem) + threadIdx.x;
  const detail::RowFlags flags(
      reinterpret_cast<uint32_t*>(smem + n_out * stride * sizeof(Acc<T>)), n);
  const bool flagging = nonfinite != nullptr;
  if (flagging) flags.clear();
  __syncthreads();

  for (int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; c < d;
       c += int64_t{gridDim.x} * blockDim.x) {
    Acc<T> result = Acc<T>(0);
    for (int pass = 0; pass < 2; ++pass) {
      const Acc<T>* weight = pass == 0 ? mix.weight : mix.weight_down;
      for (int64_t p = 0; p < n_out; ++p) column[p * stride] = Acc<T>(0);
      for (int64_t i0 = 0; i0 < n; i0 += kLoadBatch) {
        Acc<T> v[kLoadBatch] = {};
#pragma unroll
        for (int b = 0; b < kLoadBatch; ++b)
          if (i0 + b < n) v[b] = Element<T>::load(rows[i0 + b], c);
#pragma unroll
        for (int b = 0; b < kLoadBatch; ++b) {
          if (i0 + b >= n) break;
          if (pass == 0 && flagging && detail::is_nonfinite(v[b])) flags.set(i0 + b);
          for (int64_t e = mix.start[i0 + b]; e < mix.start[i0 + b + 1]; ++e)
            column[int64_t{mix.index[e]} * stride] += weight[e] * v[b];
        }
      }
      for (int e = 0; e < ncmp; ++e) {
        const int2 cmp = net[e];
        compare_exchange(column[cmp.x * stride], column[cmp.y * stride]);
      }
      const Acc<T> reduced = sorted_reduce<Acc<T>>(column, n_out, stride, op, k);
      result = pass == 0 ? reduced : reduced * mix.up;
      // A mixed value or a sum that overflowed (or a non-finite input, flagged): once more,
      // rescaled.
      if (!detail::is_nonfinite(reduced) || pass == 1) break;
    }
    Element<T>::store(out, c, result);
  }

  __syncthreads();
  if (flagging) flags.flush(nonfinite);
}

// Shapes: as mixed_columns_kernel, but mix row-compressed (by mixed row); p2 = the power of two
//   >= n_out; scratch: null, or gridDim.x * (n + p2) Acc values of global memory (a slice per
//   block).
// Launch: 1-D grid-stride over coordinates, one coordinate per block per step, kThreads threads;
//   dynamic shared memory n + p2 Acc values (the inputs, then the mixed values padded with +Inf)
//   unless scratch is given, then row_flag_bytes(n) when nonfinite is non-null.
// The block loads the n inputs of its coordinate, each thread forms the mixed values
//   p = thread, thread + blockDim, ... from them, and the block sorts them bitonically; where
//   the reduction is not finite the mixed values are formed again with weight_down, sorted and
//   reduced, and the result scaled back by `up`.
// Assumes: n, n_out >= 1; k valid for op and n_out.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    mixed_block_kernel(const T* const* __restrict__ rows, int64_t n, DeviceMixing<Acc<T>> mix,
                       int64_t p2, int64_t d, SelectOp op, int64_t k, T* __restrict__ out,
                       uint8_t* __restrict__ nonfinite, Acc<T>* __restrict__ scratch) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t values = n + p2;
  Acc<T>* inputs = scratch ? scratch + blockIdx.x * values : reinterpret_cast<Acc<T>*>(smem);
  Acc<T>* buf = inputs + n;
  const detail::RowFlags flags(
      reinterpret_cast<uint32_t*>(smem + (scratch ? 0 : values * sizeof(Acc<T>))), n);
  __shared__ int redo;  // whether the coordinate is redone rescaled, thread 0's verdict
  const bool flagging = nonfinite != nullptr;
  if (flagging) flags.clear();
  __syncthreads();

  for (int64_t c = blockIdx.x; c < d; c += gridDim.x) {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const Acc<T> v = Element<T>::load(rows[i], c);
      if (flagging && detail::is_nonfinite(v)) flags.set(i);
      inputs[i] = v;
    }
    __syncthreads();
    for (int pass = 0; pass < 2; ++pass) {
      const Acc<T>* weight = pass == 0 ? mix.weight : mix.weight_down;
      // Padding with +Inf keeps the n_out mixed values first in sorted order.
      for (int64_t p = threadIdx.x; p < p2; p += blockDim.x) {
        Acc<T> y = Acc<T>(INFINITY);
        if (p < mix.n_out) {
          y = Acc<T>(0);
          for (int64_t e = mix.start[p]; e < mix.start[p + 1]; ++e)
            y += weight[e] * inputs[mix.index[e]];
        }
        buf[p] = y;
      }
      __syncthreads();
      block_bitonic_sort(buf, p2);
      if (threadIdx.x == 0) {
        const Acc<T> reduced = sorted_reduce<Acc<T>>(buf, mix.n_out, 1, op, k);
        redo = pass == 0 && detail::is_nonfinite(reduced);
        if (!redo) Element<T>::store(out, c, pass == 0 ? reduced : reduced * mix.up);
      }
      __syncthreads();
      if (!redo) break;
      __syncthreads();  // every thread has read redo before thread 0 may write it again
    }
  }

  __syncthreads();
  if (flagging) flags.flush(nonfinite);
}

// M's nonzeros in the accumulation type, compressed by rows (by_input false) or by columns.
template <typename A>
struct HostMixing {
  std::vector<int64_t> start;
  std::vector<int32_t> index;
  std::vector<A> weight, weight_down;
  A up = A(1);

  HostMixing(const double* M, int64_t n_out, int64_t n, bool by_input) {
    const int64_t outer = by_input ? n : n_out, inner = by_input ? n_out : n;
    double widest = 1.0;  // the largest row sum of |M|, at least 1
    for (int64_t p = 0; p < n_out; ++p) {
      double row_sum = 0.0;
      for (int64_t i = 0; i < n; ++i) row_sum += std::fabs(M[p * n + i]);
      widest = std::max(widest, row_sum);
    }
    int exponent = 0;
    std::frexp(static_cast<double>(std::max<int64_t>(n_out, 2)) * widest, &exponent);
    const double down = std::ldexp(1.0, -exponent);
    up = A(std::ldexp(1.0, exponent));
    start.push_back(0);
    for (int64_t a = 0; a < outer; ++a) {
      for (int64_t b = 0; b < inner; ++b) {
        const double w = by_input ? M[b * n + a] : M[a * n + b];
        if (w == 0.0) continue;
        index.push_back(static_cast<int32_t>(b));
        weight.push_back(A(w));
        weight_down.push_back(A(w * down));
      }
      start.push_back(static_cast<int64_t>(index.size()));
    }
  }
};

// The host arrays of a HostMixing copied to the device, in stream order.
template <typename A>
struct DeviceMixingBuffers {
  detail::StreamBuffer<int64_t> start;
  detail::StreamBuffer<int32_t> index;
  detail::StreamBuffer<A> weight, weight_down;

  DeviceMixingBuffers(const HostMixing<A>& h, cudaStream_t stream)
      : start(h.start.data(), h.start.size(), stream),
        index(h.index.data(), h.index.size(), stream),
        weight(h.weight.data(), h.weight.size(), stream),
        weight_down(h.weight_down.data(), h.weight_down.size(), stream) {}

  DeviceMixing<A> view(int64_t n_out, A up) const {
    return DeviceMixing<A>{start.get(), index.get(), weight.get(), weight_down.get(), n_out, up};
  }
};

template <typename T>
void mixed_select_typed(const T* const* rows, int64_t n, const double* mixing, int64_t n_out,
                        int64_t d, SelectOp op, int64_t k, T* out, uint8_t* nonfinite,
                        cudaStream_t stream) {
  using A = Acc<T>;
  constexpr size_t kValue = sizeof(A);
  const size_t flag_bytes = nonfinite ? detail::row_flag_bytes(n) : 0;
  if (nonfinite) detail::check_row_flags_fit(n, sizeof(int));
  const detail::StreamBuffer<const T*> table(rows, static_cast<size_t>(n), stream);

  // Threads whose mixed columns fit shared memory beside the flags, in whole warps.
  const int64_t column_threads =
      static_cast<int64_t>((detail::kMaxSharedBytes - flag_bytes) / (n_out * kValue)) / 32 * 32;
  if (column_threads >= 32) {
    const HostMixing<A> host(mixing, n_out, n, /*by_input=*/true);
    const DeviceMixingBuffers<A> dev(host, stream);
    const int threads = static_cast<int>(std::min<int64_t>(column_threads, kThreads));
    std::vector<int2> net;
    for (const auto& [a, b] : select_network(n_out, op, k)) net.push_back(make_int2(a, b));
    const detail::StreamBuffer<int2> dev_net(net.data(), net.size(), stream);
    const size_t smem = static_cast<size_t>(n_out * threads) * kValue + flag_bytes;
    const int64_t blocks =
        std::min((d + threads - 1) / threads,
                 detail::resident_blocks(mixed_columns_kernel<T>, threads, smem));
    mixed_columns_kernel<T><<<static_cast<unsigned>(blocks), threads, smem, stream>>>(
        table.get(), n, dev.view(n_out, host.up), d, dev_net.get(),
        static_cast<int>(net.size()), op, k, out, nonfinite);
    FEDSEC_CUDA_CHECK_LAUNCH();
    return;
  }

  const HostMixing<A> host(mixing, n_out, n, /*by_input=*/false);
  const DeviceMixingBuffers<A> dev(host, stream);
  int64_t p2 = 1;
  while (p2 < n_out) p2 <<= 1;
  const size_t value_bytes = static_cast<size_t>(n + p2) * kValue;
  // The kernel's static shared `redo` counts against the same limit.
  const bool in_shared = value_bytes + flag_bytes + sizeof(int) <= detail::kMaxSharedBytes;
  const size_t smem = flag_bytes + (in_shared ? value_bytes : 0);
  int64_t blocks = std::min(d, detail::resident_blocks(mixed_block_kernel<T>, kThreads, smem));
  if (!in_shared)
    blocks = std::min(blocks, std::max<int64_t>(1, kScratchBytes / value_bytes));
  const detail::StreamBuffer<A> scratch(in_shared ? 0 : static_cast<size_t>(blocks * (n + p2)),
                                        stream);
  mixed_block_kernel<T><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(
      table.get(), n, dev.view(n_out, host.up), p2, d, op, k, out, nonfinite, scratch.get());
  FEDSEC_CUDA_CHECK_LAUNCH();
}

}  // namespace

void mixed_select(const void* const* rows, int64_t n, const double* mixing, int64_t n_out,
                  int64_t d, DType dt, SelectOp op, int64_t k, void* out, uint8_t* nonfinite,
                  void* stream) {
  if (n <= 0 || n_out <= 0 || d <= 0) return;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    mixed_select_typed(reinterpret_cast<const T* const*>(rows), n, mixing, n_out, d, op, k,
                       static_cast<T*>(out), nonfinite, static_cast<cudaStream_t>(stream));
  });
}

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
