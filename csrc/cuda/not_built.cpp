// The CUDA entry points of a build without the kernels (FEDSEC_CUDA=OFF or no nvcc found).
#include <stdexcept>

#include "fedsec/ops.h"

namespace fedsec::cuda {

namespace {
[[noreturn]] void unavailable() {
  throw std::runtime_error(
      "fedsec was built without CUDA kernels; rebuild with nvcc on the PATH (FEDSEC_CUDA=ON)");
}
}  // namespace

void gram(const void* const*, int64_t, const void*, int64_t, DType, double, double*, void*) {
  unavailable();
}
void combine(const void* const*, const double*, int64_t, const void*, double, int64_t, DType,
             void*, uint8_t*, void*) {
  unavailable();
}
void coordinate_select(const void* const*, int64_t, int64_t, DType, SelectOp, int64_t, void*,
                       uint8_t*, void*) {
  unavailable();
}
void mixed_select(const void* const*, int64_t, const double*, int64_t, int64_t, DType, SelectOp,
                  int64_t, void*, uint8_t*, void*) {
  unavailable();
}
bool built() { return false; }
int device_count() { return 0; }
std::string device_status() { return "fedsec was built without CUDA kernels"; }

}  // namespace fedsec::cuda
