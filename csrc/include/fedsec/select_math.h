// Per-coordinate maths of the coordinate-wise rules, shared by the CPU and CUDA backends.
// Each function sees the n values of one coordinate after a sorting network has put them in
// ascending order (`s[i * stride]` is the i-th smallest), so the CPU's SIMD lanes and a CUDA
// thread run the same arithmetic. `A` is the value type (a scalar, or on the CPU a SIMD vector
// whose lanes are coordinates) and `S` its scalar type.
#pragma once

#include <cstdint>

#include "fedsec/dtype.h"

namespace fedsec {

// Which reduction follows the sort. The parameter k means:
//   median:          unused; even n gives the mean of the two middle values (numpy's convention).
//   trimmed_mean:    k = floor(beta * n) values dropped at each end; requires 2k < n.
//   closest_median:  k = number of values kept, those closest to the median (Bulyan's second
//                    stage, El Mhamdi et al. 2018); requires 1 <= k <= n.
enum class SelectOp : int { median = 0, trimmed_mean = 1, closest_median = 2 };

template <typename A>
FEDSEC_HD void compare_exchange(A& lo, A& hi) {
  const A a = lo, b = hi;
  lo = a < b ? a : b;
  hi = a < b ? b : a;
}

template <typename S, typename A>
FEDSEC_HD A sorted_median(const A* s, int64_t n, int64_t stride) {
  const int64_t h = n / 2;
  if (n & 1) return s[h * stride];
  return (s[(h - 1) * stride] + s[h * stride]) * S(0.5);
}

template <typename S, typename A>
FEDSEC_HD A sorted_trimmed_mean(const A* s, int64_t n, int64_t stride, int64_t k) {
  A sum = s[k * stride];
  for (int64_t i = k + 1; i < n - k; ++i) sum += s[i * stride];
  return sum / S(n - 2 * k);
}

// Mean of the `keep` values closest to the median. They form a window [lo, lo + keep) of the
// sorted values: the two-pointer rule drops, K = n - keep times, whichever end lies farther from
// the median (the upper one on a tie). That is a merge of two decreasing sequences, the low-side
// distances med - s[i] and the high-side distances s[n-1-j] - med, so (merge-path identity) the
// low end is dropped exactly for the i < K with P(i): med - s[i] > s[n-K+i] - med, and P holds
// for a prefix i < lo. Hence value i is kept iff (i >= K or not P(i)) and (i < keep or
// P(i - keep)): branch-free, no per-lane indexing, so SIMD lanes (coordinates) run it as is.
// P is evaluated as s[i] + s[n-K+i] < 2 med: for the two middle values of an even count and for
// values symmetric about the median both sides round alike, so exact ties stay ties (and keep
// the lower value) instead of being decided by rounding. When 2 med overflows, the decisions
// are wrong although the sum may be finite: the result is then NaN, so that the callers'
// overflow check (sorted_reduce_rescaled) sees it.
template <typename S, typename A>
FEDSEC_HD A sorted_closest_median_mean(const A* s, int64_t n, int64_t stride, int64_t keep) {
  const A twice_med = sorted_median<S>(s, n, stride) * S(2);
  const int64_t K = n - keep;
  const A zero = A{};
  A sum = zero;
  for (int64_t i = 0; i < n; ++i) {
    A v = s[i * stride];
    if (i < K) v = (v + s[(n - K + i) * stride] >= twice_med) ? v : zero;
    if (i >= keep) {
      const int64_t j = i - keep;
      v = (s[j * stride] + s[(n - K + j) * stride] < twice_med) ? v : zero;
    }
    sum += v;
  }
  // x - (+0) is x, -0 included; NaN where 2 med is not finite.
  return sum / S(keep) - (twice_med - twice_med);
}

// The reduction `op` of one sorted coordinate (or, on the CPU, of a vector of them).
template <typename S, typename A>
FEDSEC_HD A sorted_reduce(const A* s, int64_t n, int64_t stride, SelectOp op, int64_t k) {
  switch (op) {
    case SelectOp::median: return sorted_median<S>(s, n, stride);
    case SelectOp::trimmed_mean: return sorted_trimmed_mean<S>(s, n, stride, k);
    case SelectOp::closest_median: return sorted_closest_median_mean<S>(s, n, stride, k);
  }
  return A{};
}

// The reduction of finite values near the top of their type's range (float32 and bfloat16 past
// ~1e38, float64 past ~1e308), where a sum overflows and sorted_reduce gives Inf or NaN: the
// values are scaled by 2^-p with 2^p >= max(n, 2), so no sum of the reduction (of at most n
// values, or twice the median) can exceed the largest value, reduced, and the result scaled back.
// Scaling by a power of two is exact, so this is the result an unbounded exponent would give
// (values that become subnormal lose bits, which cannot matter beside values that large). The
// callers take it only where sorted_reduce was not finite. Scales s in place.
template <typename S, typename A>
FEDSEC_HD A sorted_reduce_rescaled(A* s, int64_t n, int64_t stride, SelectOp op, int64_t k) {
  S down = S(0.5), up = S(2);
  for (int64_t m = 2; m < n; m *= 2) {
    down *= S(0.5);
    up *= S(2);
  }
  for (int64_t i = 0; i < n; ++i) s[i * stride] = s[i * stride] * down;
  return sorted_reduce<S>(s, n, stride, op, k) * up;
}

}  // namespace fedsec
