// Element types the core accepts, and the per-element conversions shared by the CPU and CUDA
// backends. Half and bfloat16 are carried as raw 16-bit patterns so one definition of the
// arithmetic serves both compilers; results are rounded to nearest even when stored back.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define FEDSEC_HD __host__ __device__ __forceinline__
#else
#define FEDSEC_HD inline
#endif

namespace fedsec {

enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

inline int64_t dtype_size(DType dt) { return dt == DType::f64 ? 8 : (dt == DType::f32 ? 4 : 2); }

inline const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
  }
  return "unknown";
}

struct half_bits { uint16_t bits; };
struct bf16_bits { uint16_t bits; };

FEDSEC_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

FEDSEC_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

// IEEE binary16 -> binary32, exact for every input (subnormals, Inf, NaN included). On the GPU
// the conversion instruction does the same in one step.
FEDSEC_HD float half_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return bits_to_float(sign | 0x7f800000u | (man << 13));  // Inf / NaN
  if (exp != 0) return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
  // Zero or subnormal: man * 2^-24, exact in binary32.
  const float mag = static_cast<float>(man) * 5.9604644775390625e-8f;
  return sign ? -mag : mag;
#endif
}

// binary32 -> binary16, round to nearest even; overflow gives Inf, NaN stays NaN.
FEDSEC_HD uint16_t float_to_half(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) return sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: Inf
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero): scale so the half ulp 2^-24 becomes 1 and round to integer.
    const float mag = bits_to_float(abs) * 16777216.0f;
    const float r = mag + 12582912.0f - 12582912.0f;  // round to nearest even via 1.5 * 2^23
    return sign | static_cast<uint16_t>(r);
  }
  const uint32_t lsb = (abs >> 13) & 1u;
  const uint32_t rounded = abs + 0xfffu + lsb;
  return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);
}

FEDSEC_HD float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

// binary32 -> bfloat16, round to nearest even; NaN stays NaN.
FEDSEC_HD uint16_t float_to_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  const uint32_t lsb = (u >> 16) & 1u;
  return static_cast<uint16_t>((u + 0x7fffu + lsb) >> 16);
}

// Element access by storage type. `Acc` is the accumulation type: float for the 16- and 32-bit
// inputs, double for float64 inputs.
template <typename T> struct Element;
template <> struct Element<float> {
  using Acc = float;
  static FEDSEC_HD float load(const float* p, int64_t i) { return p[i]; }
  static FEDSEC_HD void store(float* p, int64_t i, float v) { p[i] = v; }
};
template <> struct Element<double> {
  using Acc = double;
  static FEDSEC_HD double load(const double* p, int64_t i) { return p[i]; }
  static FEDSEC_HD void store(double* p, int64_t i, double v) { p[i] = v; }
};
template <> struct Element<half_bits> {
  using Acc = float;
  static FEDSEC_HD float load(const half_bits* p, int64_t i) { return half_to_float(p[i].bits); }
  static FEDSEC_HD void store(half_bits* p, int64_t i, float v) { p[i].bits = float_to_half(v); }
};
template <> struct Element<bf16_bits> {
  using Acc = float;
  static FEDSEC_HD float load(const bf16_bits* p, int64_t i) { return bf16_to_float(p[i].bits); }
  static FEDSEC_HD void store(bf16_bits* p, int64_t i, float v) { p[i].bits = float_to_bf16(v); }
};

// Calls fn(T{}) with T the storage type of dt; the one place a DType becomes a C++ type.
template <typename Fn>
inline void dispatch_dtype(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::f32: fn(float{}); return;
    case DType::f64: fn(double{}); return;
    case DType::f16: fn(half_bits{}); return;
    case DType::bf16: fn(bf16_bits{}); return;
  }
}

}  // namespace fedsec
