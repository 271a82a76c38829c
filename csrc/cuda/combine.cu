// Streaming weighted combination on the GPU: out = ref_coeff * r + sum_k coeffs[k] * x_k.
//
// A pure stream: each thread owns a pack of consecutive coordinates, keeps its accumulators in
// registers and walks the rows in order (kLoadBatch rows' loads in flight at a time), so every
// input element is read once, by 16-byte loads when all buffers allow it. The finiteness of
// each row is checked on the same loads and recorded once per block (RowFlags).
#include <algorithm>
#include <vector>

#include "check.cuh"
#include "fedsec/ops.h"

namespace fedsec::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kPackBytes = 16;

template <typename T>
using Acc = typename Element<T>::Acc;

// One row of the combination, as the kernel reads it.
template <typename T>
struct Term {
  const T* row;
  Acc<T> coeff;
};

// W consecutive elements of T, moved as one access (a 16-byte vector one when W * sizeof(T) is
// kPackBytes); the address must be aligned to the whole.
template <typename T, int W>
struct alignas(W * sizeof(T)) Elements {
  T v[W];
};

template <int W, typename T>
__device__ __forceinline__ Elements<T, W> load_elements(const T* p, int64_t c) {
  return *reinterpret_cast<const Elements<T, W>*>(p + c);
}

// Rows whose loads a thread issues before it uses any of them: memory-level parallelism that
// does not depend on how the compiler schedules the row loop.
constexpr int kLoadBatch = 4;

// out[c, c + W) of the combination; rows with a non-finite value there are set in `flags` when
// `flagging`.
template <int W, typename T>
__device__ __forceinline__ void combine_at(int64_t c, const Term<T>* __restrict__ terms,
                                           int64_t n, const T* __restrict__ ref,
                                           Acc<T> ref_coeff, T* __restrict__ out,
                                           const detail::RowFlags& flags, bool flagging) {
  Acc<T> acc[W];
  if (ref) {
    const Elements<T, W> r = load_elements<W>(ref, c);
#pragma unroll
    for (int v = 0; v < W; ++v) acc[v] = ref_coeff * Element<T>::load(r.v, v);
  } else {
#pragma unroll
    for (int v = 0; v < W; ++v) acc[v] = Acc<T>(0);
  }
  for (int64_t k0 = 0; k0 < n; k0 += kLoadBatch) {
    Elements<T, W> x[kLoadBatch];
    Acc<T> w[kLoadBatch];
#pragma unroll
    for (int b = 0; b < kLoadBatch; ++b) {
      if (k0 + b < n) {
        const Term<T> term = terms[k0 + b];
        w[b] = term.coeff;
        x[b] = load_elements<W>(term.row, c);
      }
    }
#pragma unroll
    for (int b = 0; b < kLoadBatch; ++b) {
      if (k0 + b >= n) break;
      bool bad = false;
#pragma unroll
      for (int v = 0; v < W; ++v) {
        const Acc<T> a = Element<T>::load(x[b].v, v);
        acc[v] += w[b] * a;
        bad |= detail::is_nonfinite(a);
      }
      if (bad && flagging) flags.set(k0 + b);
    }
  }
  Elements<T, W> result;
#pragma unroll
  for (int v = 0; v < W; ++v) Element<T>::store(result.v, v, acc[v]);
  *reinterpret_cast<Elements<T, W>*>(out + c) = result;
}

// Shapes: terms[n] (device row pointer to d elements of T, coefficient); ref: d elements or null;
//   out: d elements of T; nonfinite: n bytes or null.
// Launch: 1-D grid-stride, kThreads threads; each step a thread combines a pack of V consecutive
//   coordinates (the lanes of a warp on consecutive packs: coalesced), and the d % V coordinates
//   after the last whole pack one by one; dynamic shared memory row_flag_bytes(n) when
//   nonfinite is non-null, else 0.
// Assumes: V == 1, or V * sizeof(T) == kPackBytes and ref, out and every row are
//   kPackBytes-aligned. n may be 0 (out = ref_coeff * r, or 0).
template <int V, typename T>
__global__ void __launch_bounds__(kThreads)
    combine_kernel(const Term<T>* __restrict__ terms, int64_t n, const T* __restrict__ ref,
                   Acc<T> ref_coeff, int64_t d, T* __restrict__ out,
                   uint8_t* __restrict__ nonfinite) {
  extern __shared__ uint32_t flag_bits[];
  const detail::RowFlags flags(flag_bits, n);
  const bool flagging = nonfinite != nullptr;
  if (flagging) flags.clear();
  __syncthreads();

  const int64_t first = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  const int64_t packs = d / V;
  for (int64_t p = first; p < packs; p += step)
    combine_at<V>(p * V, terms, n, ref, ref_coeff, out, flags, flagging);
  for (int64_t c = packs * V + first; c < d; c += step)
    combine_at<1>(c, terms, n, ref, ref_coeff, out, flags, flagging);

  __syncthreads();
  if (flagging) flags.flush(nonfinite);
}

template <int V, typename T>
void launch_combine(const Term<T>* terms, int64_t n, const T* ref, Acc<T> ref_coeff, int64_t d,
                    T* out, uint8_t* nonfinite, cudaStream_t stream) {
  const size_t smem = nonfinite ? detail::row_flag_bytes(n) : 0;
  const int64_t blocks_needed = ((d + V - 1) / V + kThreads - 1) / kThreads;
  const int64_t blocks = std::min(
      blocks_needed, detail::resident_blocks(combine_kernel<V, T>, kThreads, smem));
  combine_kernel<V, T><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(
      terms, n, ref, ref_coeff, d, out, nonfinite);
  FEDSEC_CUDA_CHECK_LAUNCH();
}

bool pack_aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kPackBytes == 0; }

template <typename T>
void combine_typed(const T* const* rows, const double* coeffs, int64_t n, const T* ref,
                   double ref_coeff, int64_t d, T* out, uint8_t* nonfinite, cudaStream_t stream) {
  if (nonfinite) detail::check_row_flags_fit(n, 0);
  bool aligned = pack_aligned(out) && (!ref || pack_aligned(ref));
  std::vector<Term<T>> terms(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    terms[k] = Term<T>{rows[k], static_cast<Acc<T>>(coeffs[k])};
    aligned = aligned && pack_aligned(rows[k]);
  }
  const detail::StreamBuffer<Term<T>> table(terms.data(), terms.size(), stream);
  const auto w = static_cast<Acc<T>>(ref_coeff);
  if (aligned)
    launch_combine<kPackBytes / sizeof(T)>(table.get(), n, ref, w, d, out, nonfinite, stream);
  else
    launch_combine<1>(table.get(), n, ref, w, d, out, nonfinite, stream);
}

}  // namespace

void combine(const void* const* rows, const double* coeffs, int64_t n, const void* ref,
             double ref_coeff, int64_t d, DType dt, void* out, uint8_t* nonfinite, void* stream) {
  if (d <= 0 || n < 0) return;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    combine_typed(reinterpret_cast<const T* const*>(rows), coeffs, n, static_cast<const T*>(ref),
                  ref_coeff, d, static_cast<T*>(out), nonfinite,
                  static_cast<cudaStream_t>(stream));
  });
}

}  // namespace fedsec::cuda
