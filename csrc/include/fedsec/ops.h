// The three streaming primitives every robust aggregator is built from (see DESIGN.md), as each
// backend implements them. `rows` holds n pointers to client buffers of d elements of one dtype;
// they are never stacked. A non-null `ref` is the reference point r the Gram matrix is centered
// on. `nonfinite` (n bytes, may be null) gets a 1 for every row holding a NaN or Inf in this call;
// entries are only ever set, never cleared, so one array can collect a whole state_dict.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fedsec/dtype.h"
#include "fedsec/select_math.h"

namespace fedsec {

namespace cpu {

// G[i*n + j] += sum_c y_i[c] * y_j[c] with y = scale * (x - r) (G is n x n float64, row-major).
// `scale` is a power of two (1 for none) that keeps float64 products of huge or tiny updates in
// range; it must be 1 for float32 products. `fast`: float32 differences and products for 16-
// and 32-bit inputs, each entry then within gram_fast_error() * ||y_i|| * ||y_j|| of the exact
// value (plus d * 2^-149 where products underflow); otherwise float64 throughout.
void gram(const void* const* rows, int64_t n, const void* ref, int64_t d, DType dt, bool fast,
          double scale, double* G);
double gram_fast_error();

// out[c] = ref_coeff * r[c] + sum_k coeffs[k] * x_k[c], accumulated in float32 (float64 for
// float64 input) and stored in dt. `ref` may be null (then ref_coeff is ignored).
void combine(const void* const* rows, const double* coeffs, int64_t n, const void* ref,
             double ref_coeff, int64_t d, DType dt, void* out, uint8_t* nonfinite);

// Per coordinate: sort the n values with a sorting network and reduce them by `op` (see
// select_math.h for k); out has d elements of dt.
void coordinate_select(const void* const* rows, int64_t n, int64_t d, DType dt, SelectOp op,
                       int64_t k, void* out, uint8_t* nonfinite);

// coordinate_select of mixtures of the rows: per coordinate c the n_out values
// y_p = sum_i mixing[p * n + i] * x_i[c] (mixing: n_out x n float64, row-major, finite) are
// formed in the accumulation type, sorted and reduced by `op` (k as for n_out values). The mixed
// rows are never stored. Where a mixed value or the reduction overflows although the inputs
// are finite, the coordinate is redone from the inputs scaled by a power of two.
void mixed_select(const void* const* rows, int64_t n, const double* mixing, int64_t n_out,
                  int64_t d, DType dt, SelectOp op, int64_t k, void* out, uint8_t* nonfinite);

// Which vector instruction set the kernels dispatched to ("avx512", "avx2" or "baseline").
std::string isa();                         // the CPU kernel table in use
std::vector<std::string> available_isas();  // the tables this processor runs, best first
void set_isa(const std::string& name);      // use that table (std::invalid_argument if not run)
int num_threads();
void set_num_threads(int threads);

}  // namespace cpu

namespace cuda {

// Same contracts as the CPU primitives, on one CUDA device. `rows` is a host array of device
// pointers; coeffs is a host array; every other pointer is device memory (G: n*n doubles,
// nonfinite: n bytes). Work is enqueued on `stream` (a cudaStream_t) and not synchronised.
void gram(const void* const* rows, int64_t n, const void* ref, int64_t d, DType dt, double scale,
          double* G, void* stream);
void combine(const void* const* rows, const double* coeffs, int64_t n, const void* ref,
             double ref_coeff, int64_t d, DType dt, void* out, uint8_t* nonfinite, void* stream);
void coordinate_select(const void* const* rows, int64_t n, int64_t d, DType dt, SelectOp op,
                       int64_t k, void* out, uint8_t* nonfinite, void* stream);
void mixed_select(const void* const* rows, int64_t n, const double* mixing, int64_t n_out,
                  int64_t d, DType dt, SelectOp op, int64_t k, void* out, uint8_t* nonfinite,
                  void* stream);

// True when the module was compiled with the CUDA kernels.
bool built();
// Number of usable CUDA devices; 0 when none or no driver. Never throws; cached after first call.
int device_count();
// Why no device is usable ("" when one is), e.g. "cudaErrorNoDevice: no CUDA-capable device".
std::string device_status();

}  // namespace cuda

// Comparators (a, b), a < b, of a sorting network for n values, pruned to those that the sorted
// positions [first, last) depend on. Batcher's odd-even merge sort, generated for the next power
// of two and cut to n (comparators touching a padded +inf slot are no-ops).
std::vector<std::pair<int32_t, int32_t>> sorting_network(int64_t n, int64_t first, int64_t last);

// The network `op` runs before its reduction: pruned to what the reduction reads. The median
// needs its middle position(s) sorted; the trimmed mean needs either the k smallest and k
// largest in their places (the middle positions then hold the kept values, in some order, which
// a sum does not mind) or the middle sorted, whichever network is smaller (the ends, for small
// k); the closest-to-median mean needs all.
std::vector<std::pair<int32_t, int32_t>> select_network(int64_t n, SelectOp op, int64_t k);

}  // namespace fedsec
