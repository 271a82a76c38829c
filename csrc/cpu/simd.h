// Portable SIMD for the CPU kernels: GCC/Clang vector extensions sized by the instruction set the
// translation unit is compiled for (each kernel file is built once per ISA, see CMakeLists.txt).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "fedsec/dtype.h"

#ifndef FEDSEC_ISA
#error "FEDSEC_ISA must name the instruction set this kernel file is compiled for"
#endif

namespace fedsec::cpu {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX2__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

template <typename S>
struct Simd {
  typedef S Vec __attribute__((vector_size(kVecBytes)));
  static constexpr int kLanes = kVecBytes / static_cast<int>(sizeof(S));
};

// Loads `count` (<= lanes) consecutive elements starting at p[i], converted to the accumulation
// type; missing lanes are zero.
template <typename T, typename V = typename Simd<typename Element<T>::Acc>::Vec>
inline V load_lanes(const T* p, int64_t i, int count) {
  using A = typename Element<T>::Acc;
  constexpr int L = Simd<A>::kLanes;
  V v = {};
  if constexpr (std::is_same_v<T, A>) {
    if (count == L) {
      std::memcpy(&v, p + i, sizeof(V));
      return v;
    }
  }
  for (int l = 0; l < count; ++l) v[l] = Element<T>::load(p, i + l);
  return v;
}

template <typename T, typename V>
inline void store_lanes(T* p, int64_t i, int count, const V& v) {
  using A = typename Element<T>::Acc;
  if constexpr (std::is_same_v<T, A>) {
    if (count == Simd<A>::kLanes) {
      std::memcpy(p + i, &v, sizeof(V));
      return;
    }
  }
  for (int l = 0; l < count; ++l) Element<T>::store(p, i + l, v[l]);
}

// True when any lane of v is NaN or +-Inf (v - v is NaN exactly then).
template <typename V>
inline bool any_nonfinite(const V& v) {
  const V z = v - v;
  const auto bad = z != z;
  for (int l = 0; l < static_cast<int>(sizeof(V) / sizeof(v[0])); ++l)
    if (bad[l]) return true;
  return false;
}

// Lane-wise min and max. Written as selects, GCC emits compare + blend; the min/max
// instructions have the same semantics for the non-NaN values the kernels sort, in one op.
template <typename V>
inline V vmin(const V& a, const V& b) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64 && sizeof(a[0]) == 4) return (V)_mm512_min_ps((__m512)a, (__m512)b);
  if constexpr (sizeof(V) == 64 && sizeof(a[0]) == 8) return (V)_mm512_min_pd((__m512d)a, (__m512d)b);
#endif
#if defined(__AVX__)
  if constexpr (sizeof(V) == 32 && sizeof(a[0]) == 4) return (V)_mm256_min_ps((__m256)a, (__m256)b);
  if constexpr (sizeof(V) == 32 && sizeof(a[0]) == 8) return (V)_mm256_min_pd((__m256d)a, (__m256d)b);
#endif
  return a < b ? a : b;
}
template <typename V>
inline V vmax(const V& a, const V& b) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64 && sizeof(a[0]) == 4) return (V)_mm512_max_ps((__m512)a, (__m512)b);
  if constexpr (sizeof(V) == 64 && sizeof(a[0]) == 8) return (V)_mm512_max_pd((__m512d)a, (__m512d)b);
#endif
#if defined(__AVX__)
  if constexpr (sizeof(V) == 32 && sizeof(a[0]) == 4) return (V)_mm256_max_ps((__m256)a, (__m256)b);
  if constexpr (sizeof(V) == 32 && sizeof(a[0]) == 8) return (V)_mm256_max_pd((__m256d)a, (__m256d)b);
#endif
  return a < b ? b : a;
}

}  // namespace fedsec::cpu
