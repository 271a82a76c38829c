// Streaming weighted combination: out = ref_coeff * r + sum_k coeffs[k] * x_k.
//
// An accumulator chunk of the output lives in L1; each row is streamed through it once, two rows
// at a time to halve the accumulator traffic. The finiteness of each row is checked on the same
// loads (v - v is NaN exactly for NaN and Inf), so the mean costs one read of the data.
#include <algorithm>

#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace fedsec::cpu::FEDSEC_ISA {

namespace {

template <typename T>
void combine_typed(const T* const* rows, const double* coeffs, int64_t n, const T* ref,
                   double ref_coeff, int64_t begin, int64_t end, T* out, uint8_t* nonfinite) {
  using A = typename Element<T>::Acc;
  using V = typename Simd<A>::Vec;
  constexpr int L = Simd<A>::kLanes;
  constexpr int64_t kChunkVecs = 4096 / kVecBytes * 2;  // 8 KiB of accumulators
  constexpr int64_t kChunk = kChunkVecs * L;
  V acc[kChunkVecs];

  for (int64_t c0 = begin; c0 < end; c0 += kChunk) {
    const int64_t count = std::min(kChunk, end - c0);
    const int64_t vecs = (count + L - 1) / L;
    auto lanes_of = [&](int64_t v) { return static_cast<int>(std::min<int64_t>(L, count - v * L)); };

    for (int64_t v = 0; v < vecs; ++v)
      acc[v] = ref ? load_lanes(ref, c0 + v * L, lanes_of(v)) * A(ref_coeff) : V{};
    for (int64_t k = 0; k < n; k += 2) {
      const bool pair = k + 1 < n;
      const A w0 = A(coeffs[k]), w1 = pair ? A(coeffs[k + 1]) : A(0);
      const T* x0 = rows[k];
      const T* x1 = pair ? rows[k + 1] : rows[k];
      V bad0 = {}, bad1 = {};
      for (int64_t v = 0; v < vecs; ++v) {
        const int64_t c = c0 + v * L;
        const V a = load_lanes(x0, c, lanes_of(v));
        const V b = load_lanes(x1, c, lanes_of(v));
        acc[v] += a * w0 + b * w1;
        bad0 += a - a;
        bad1 += b - b;
      }
      if (nonfinite) {
        if (any_nonfinite(bad0)) nonfinite[k] = 1;
        if (pair && any_nonfinite(bad1)) nonfinite[k + 1] = 1;
      }
    }
    for (int64_t v = 0; v < vecs; ++v) store_lanes(out, c0 + v * L, lanes_of(v), acc[v]);
  }
}

}  // namespace

void combine(const void* const* rows, const double* coeffs, int64_t n, const void* ref,
             double ref_coeff, int64_t begin, int64_t end, DType dt, void* out,
             uint8_t* nonfinite) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    combine_typed(reinterpret_cast<const T* const*>(rows), coeffs, n, static_cast<const T*>(ref),
                  ref_coeff, begin, end, static_cast<T*>(out), nonfinite);
  });
}

}  // namespace fedsec::cpu::FEDSEC_ISA
