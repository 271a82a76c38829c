// fedsec._core: the native primitives, on raw buffer addresses.
//
// The Python layer (fedsec/aggregation/backends/native.py) owns the arrays and passes their addresses; here
// every size, code and pointer is checked before the backend runs, so bad arguments raise
// ValueError instead of crashing. device = -1 selects the CPU (run without the GIL), device >= 0
// the CUDA kernels on the stream given (a cudaStream_t as an integer, 0 = default stream).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "fedsec/ops.h"

namespace py = pybind11;
using fedsec::DType;
using fedsec::SelectOp;

namespace {

std::string str(int64_t v) { return std::to_string(v); }

// pybind11 builds an enum from any integer (DType(7)); the kernels' switches must only meet
// declared values.
DType checked(DType dt) {
  switch (dt) {
    case DType::f32: case DType::f64: case DType::f16: case DType::bf16: return dt;
  }
  throw py::value_error("dtype must be a DType (float32, float64, float16 or bfloat16); got " +
                        std::to_string(static_cast<int>(dt)));
}

SelectOp checked(SelectOp op) {
  switch (op) {
    case SelectOp::median: case SelectOp::trimmed_mean: case SelectOp::closest_median: return op;
  }
  throw py::value_error("op must be a SelectOp (MEDIAN, TRIMMED_MEAN or CLOSEST_MEDIAN); got " +
                        std::to_string(static_cast<int>(op)));
}

std::vector<const void*> to_rows(const std::vector<uintptr_t>& rows) {
  if (rows.empty()) throw py::value_error("need at least one row; got 0");
  std::vector<const void*> ptrs;
  ptrs.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] == 0) throw py::value_error("row " + std::to_string(i) + " has a null address");
    ptrs.push_back(reinterpret_cast<const void*>(rows[i]));
  }
  return ptrs;
}

void check_common(int64_t d, uintptr_t out, const char* out_name, int device) {
  if (d < 0) throw py::value_error("d must be >= 0; got " + str(d));
  if (out == 0) throw py::value_error(std::string(out_name) + " has a null address");
  if (device < -1) throw py::value_error("device must be -1 (CPU) or a CUDA index; got " +
                                         std::to_string(device));
  if (device >= 0 && !fedsec::cuda::built())
    throw std::runtime_error("fedsec was built without CUDA kernels; rebuild with nvcc on the "
                             "PATH (FEDSEC_CUDA=ON)");
}

template <typename T>
T* ptr(uintptr_t p) { return reinterpret_cast<T*>(p); }

// The checks of k that every selection shares, for `n` values per coordinate.
void check_select_k(SelectOp op, int64_t k, int64_t n) {
  if (op == SelectOp::trimmed_mean && (k < 0 || 2 * k >= n))
    throw py::value_error("trimmed_mean needs 0 <= k and 2k < n; got k=" + str(k) +
                          ", n=" + str(n));
  if (op == SelectOp::closest_median && (k < 1 || k > n))
    throw py::value_error("closest_median needs 1 <= k <= n; got k=" + str(k) + ", n=" + str(n));
}

void gram(const std::vector<uintptr_t>& rows, uintptr_t ref, int64_t d, DType dtype, bool fast,
          double scale, uintptr_t G, int device, uintptr_t stream) {
  const auto r = to_rows(rows);
  const DType dt = checked(dtype);
  check_common(d, G, "G", device);
  int exponent = 0;
  if (!(scale > 0) || std::frexp(scale, &exponent) != 0.5)
    throw py::value_error("scale must be a positive power of two; got " + std::to_string(scale));
  if (fast && scale != 1.0 && dt != DType::f64)
    throw py::value_error("scale must be 1 with fast float32 products; got " +
                          std::to_string(scale));
  const int64_t n = static_cast<int64_t>(r.size());
  if (device < 0) {
    py::gil_scoped_release nogil;
    fedsec::cpu::gram(r.data(), n, ptr<const void>(ref), d, dt, fast, scale, ptr<double>(G));
  } else {
    fedsec::cuda::gram(r.data(), n, ptr<const void>(ref), d, dt, scale, ptr<double>(G),
                       ptr<void>(stream));
  }
}

void combine(const std::vector<uintptr_t>& rows, const std::vector<double>& coeffs, uintptr_t ref,
             double ref_coeff, int64_t d, DType dtype, uintptr_t out, uintptr_t nonfinite,
             int device, uintptr_t stream) {
  const auto r = to_rows(rows);
  const DType dt = checked(dtype);
  check_common(d, out, "out", device);
  if (coeffs.size() != r.size())
    throw py::value_error("need one coefficient per row: " + str(r.size()) + " rows, " +
                          str(coeffs.size()) + " coefficients");
  const int64_t n = static_cast<int64_t>(r.size());
  if (device < 0) {
    py::gil_scoped_release nogil;
    fedsec::cpu::combine(r.data(), coeffs.data(), n, ptr<const void>(ref), ref_coeff, d, dt,
                         ptr<void>(out), ptr<uint8_t>(nonfinite));
  } else {
    fedsec::cuda::combine(r.data(), coeffs.data(), n, ptr<const void>(ref), ref_coeff, d, dt,
                          ptr<void>(out), ptr<uint8_t>(nonfinite), ptr<void>(stream));
  }
}

void coordinate_select(const std::vector<uintptr_t>& rows, int64_t d, DType dtype, SelectOp op,
                       int64_t k, uintptr_t out, uintptr_t nonfinite, int device,
                       uintptr_t stream) {
  const auto r = to_rows(rows);
  const DType dt = checked(dtype);
  check_common(d, out, "out", device);
  const int64_t n = static_cast<int64_t>(r.size());
  const SelectOp sop = checked(op);
  check_select_k(sop, k, n);
  if (device < 0) {
    py::gil_scoped_release nogil;
    fedsec::cpu::coordinate_select(r.data(), n, d, dt, sop, k, ptr<void>(out),
                                   ptr<uint8_t>(nonfinite));
  } else {
    fedsec::cuda::coordinate_select(r.data(), n, d, dt, sop, k, ptr<void>(out),
                                    ptr<uint8_t>(nonfinite), ptr<void>(stream));
  }
}

void mixed_select(const std::vector<uintptr_t>& rows, const std::vector<double>& mixing,
                  int64_t n_out, int64_t d, DType dtype, SelectOp op, int64_t k, uintptr_t out,
                  uintptr_t nonfinite, int device, uintptr_t stream) {
  const auto r = to_rows(rows);
  const DType dt = checked(dtype);
  check_common(d, out, "out", device);
  const int64_t n = static_cast<int64_t>(r.size());
  if (n > INT32_MAX) throw py::value_error("mixed_select takes at most 2^31 - 1 rows; got " + str(n));
  if (n_out < 1) throw py::value_error("n_out must be >= 1; got " + str(n_out));
  if (static_cast<int64_t>(mixing.size()) != n_out * n)
    throw py::value_error("mixing must hold n_out x n = " + str(n_out) + " x " + str(n) +
                          " values (row-major); got " + str(static_cast<int64_t>(mixing.size())));
  for (size_t e = 0; e < mixing.size(); ++e)
    if (!std::isfinite(mixing[e]))
      throw py::value_error("mixing[" + str(static_cast<int64_t>(e) / n) + ", " +
                            str(static_cast<int64_t>(e) % n) + "] is not finite (" +
                            std::to_string(mixing[e]) + ")");
  const SelectOp sop = checked(op);
  check_select_k(sop, k, n_out);
  if (device < 0) {
    py::gil_scoped_release nogil;
    fedsec::cpu::mixed_select(r.data(), n, mixing.data(), n_out, d, dt, sop, k, ptr<void>(out),
                              ptr<uint8_t>(nonfinite));
  } else {
    fedsec::cuda::mixed_select(r.data(), n, mixing.data(), n_out, d, dt, sop, k, ptr<void>(out),
                               ptr<uint8_t>(nonfinite), ptr<void>(stream));
  }
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fedsec native core: streaming Gram, weighted combination and coordinate selection";
  // The one definition of the codes the Python layer passes (fedsec/aggregation/backends).
  py::enum_<DType>(m, "DType", "Element types of the client buffers.")
      .value("float32", DType::f32)
      .value("float64", DType::f64)
      .value("float16", DType::f16)
      .value("bfloat16", DType::bf16);
  py::enum_<SelectOp>(m, "SelectOp", "Per-coordinate reductions of coordinate_select.")
      .value("MEDIAN", SelectOp::median)
      .value("TRIMMED_MEAN", SelectOp::trimmed_mean, "k values dropped at each end")
      .value("CLOSEST_MEDIAN", SelectOp::closest_median, "mean of the k values closest to the median");
  m.def("gram", &gram, py::arg("rows"), py::arg("ref"), py::arg("d"), py::arg("dtype"),
        py::arg("fast"), py::arg("scale"), py::arg("G"), py::arg("device") = -1,
        py::arg("stream") = 0,
        "G += Y Y^T, Y = scale * (X - r), into float64 G over the n row buffers (r skipped when "
        "ref is 0; scale a power of two, 1 with fast). fast: float32 products on the CPU (see "
        "gram_fast_error); CUDA always uses float64.");
  m.def("gram_fast_error", &fedsec::cpu::gram_fast_error,
        "Bound b of a fast CPU Gram entry: |error of G_ij| <= b * ||x_i - r|| * ||x_j - r||.");
  m.def("combine", &combine, py::arg("rows"), py::arg("coeffs"), py::arg("ref"),
        py::arg("ref_coeff"), py::arg("d"), py::arg("dtype"), py::arg("out"),
        py::arg("nonfinite") = 0, py::arg("device") = -1, py::arg("stream") = 0,
        "out = ref_coeff * r + sum_k coeffs[k] * x_k; flags rows with NaN/Inf in nonfinite.");
  m.def("coordinate_select", &coordinate_select, py::arg("rows"), py::arg("d"), py::arg("dtype"),
        py::arg("op"), py::arg("k"), py::arg("out"), py::arg("nonfinite") = 0,
        py::arg("device") = -1, py::arg("stream") = 0,
        "Per coordinate, sort the n values and reduce them (median, trimmed mean, closest-median).");
  m.def("mixed_select", &mixed_select, py::arg("rows"), py::arg("mixing"), py::arg("n_out"),
        py::arg("d"), py::arg("dtype"), py::arg("op"), py::arg("k"), py::arg("out"),
        py::arg("nonfinite") = 0, py::arg("device") = -1, py::arg("stream") = 0,
        "coordinate_select of the n_out mixtures M x of the n rows (mixing: M, n_out x n "
        "row-major), formed per coordinate block and never stored; flags input rows with NaN/Inf.");
  m.def("sorting_network", &fedsec::sorting_network, py::arg("n"), py::arg("first"),
        py::arg("last"), "Comparators of the pruned sorting network (for tests).");
  m.def(
      "select_network",
      [](int64_t n, SelectOp op, int64_t k) {
        if (n < 1) throw py::value_error("select_network needs n >= 1; got " + str(n));
        return fedsec::select_network(n, checked(op), k);
      },
      py::arg("n"), py::arg("op"), py::arg("k"),
      "Comparators coordinate_select runs for op (for tests).");
  m.def("cpu_isa", &fedsec::cpu::isa);
  m.def("cpu_isas", &fedsec::cpu::available_isas);
  m.def("set_cpu_isa", &fedsec::cpu::set_isa, py::arg("name"));
  m.def("num_threads", &fedsec::cpu::num_threads);
  m.def("set_num_threads", &fedsec::cpu::set_num_threads, py::arg("threads"));
  m.def("cuda_built", &fedsec::cuda::built);
  m.def("cuda_device_count", &fedsec::cuda::device_count);
  m.def("cuda_device_status", &fedsec::cuda::device_status);
}
