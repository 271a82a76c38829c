// Single-threaded kernels over a coordinate range [begin, end), one set per instruction set.
// dispatch.cpp splits the coordinates over threads, picks the ISA and merges per-thread results.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "fedsec/ops.h"

namespace fedsec::cpu {

struct Comparators {
  const std::pair<int32_t, int32_t>* data;
  int64_t size;
};

// An n_out x n mixing matrix in compressed rows: mixed value p of a coordinate is the sum over
// e in [start[p], start[p + 1]) of weight[e] * x_{column[e]}. `down` is a power of two with
// down * max(n_out, 2) * (largest row sum of |weight|) <= 1 and up = 1 / down: inputs scaled by
// down mix and reduce without overflow (see mixed_select in coordinate.cpp).
struct Mixing {
  const int64_t* start;
  const int32_t* column;
  const double* weight;
  int64_t n_out;
  double down, up;
};

struct Kernels {
  // G (n x n, upper triangle including the diagonal) += products of the centered rows times
  // `scale` over [begin, end), with float32 products when `fast` (see gram.cpp), float64
  // otherwise.
  void (*gram)(const void* const* rows, int64_t n, const void* ref, int64_t begin, int64_t end,
               DType dt, bool fast, double scale, double* G);
  // Relative error bound of a fast Gram entry: |dG_ij| <= bound * ||y_i|| * ||y_j||.
  double (*gram_fast_error)();
  void (*combine)(const void* const* rows, const double* coeffs, int64_t n, const void* ref,
                  double ref_coeff, int64_t begin, int64_t end, DType dt, void* out,
                  uint8_t* nonfinite);
  void (*coordinate_select)(const void* const* rows, int64_t n, int64_t begin, int64_t end,
                            DType dt, SelectOp op, int64_t k, Comparators net, void* out,
                            uint8_t* nonfinite);
  // coordinate_select of the n_out values mixed from the n rows by `mix`; net sorts n_out values.
  void (*mixed_select)(const void* const* rows, int64_t n, const Mixing& mix, int64_t begin,
                       int64_t end, DType dt, SelectOp op, int64_t k, Comparators net, void* out,
                       uint8_t* nonfinite);
  const char* isa;
};

#define FEDSEC_DECLARE_KERNELS(ns)                                                             \
  namespace ns {                                                                               \
  void gram(const void* const*, int64_t, const void*, int64_t, int64_t, DType, bool, double,   \
            double*);                                                                          \
  double gram_fast_error();                                                                    \
  void combine(const void* const*, const double*, int64_t, const void*, double, int64_t,       \
               int64_t, DType, void*, uint8_t*);                                               \
  void coordinate_select(const void* const*, int64_t, int64_t, int64_t, DType, SelectOp,       \
                         int64_t, Comparators, void*, uint8_t*);                               \
  void mixed_select(const void* const*, int64_t, const Mixing&, int64_t, int64_t, DType,      \
                    SelectOp, int64_t, Comparators, void*, uint8_t*);                          \
  extern const Kernels kernels;                                                                \
  }

FEDSEC_DECLARE_KERNELS(baseline)
FEDSEC_DECLARE_KERNELS(avx2)
FEDSEC_DECLARE_KERNELS(avx512)

}  // namespace fedsec::cpu
