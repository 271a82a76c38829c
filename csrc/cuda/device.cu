// "Built with CUDA" and "a CUDA device is usable" as separate answers. The device probe runs once,
// lazily (not at import), is cached, and never throws: a missing driver or device reads as 0
// devices with the runtime's reason. The runtime is linked statically, so without a driver
// cudaGetDeviceCount fails cleanly instead of the module failing to load.
#include <cuda_runtime.h>

#include <string>

#include "fedsec/ops.h"

namespace fedsec::cuda {

namespace {

// The oldest architecture the kernels are compiled for (CMake: 75 and newer).
constexpr int kMinComputeCapability = 75;

struct Probe {
  int count = 0;
  std::string status;  // "" when count > 0
};

std::string describe(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

Probe run_probe() {
  Probe p;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    static_cast<void>(cudaGetLastError());  // leave no error behind for the caller's next call
    p.status = describe(err);
    return p;
  }
  if (count == 0) {
    p.status = describe(cudaErrorNoDevice);
    return p;
  }
  // Kernels exist for compute capability 7.5 and newer (PTX JIT covers later ones). When no
  // device reaches that, none is usable; on a mixed machine the indices stay those of CUDA and
  // a launch on an older device reports cudaErrorNoKernelImageForDevice.
  std::string too_old;
  for (int dev = 0; dev < count; ++dev) {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
      static_cast<void>(cudaGetLastError());
      continue;
    }
    if (major * 10 + minor >= kMinComputeCapability) {
      p.count = count;
      return p;
    }
    too_old += (too_old.empty() ? "" : ", ") + std::string("device ") + std::to_string(dev) +
               " is " + std::to_string(major) + "." + std::to_string(minor);
  }
  p.status = "no CUDA device of compute capability >= 7.5 (" +
             (too_old.empty() ? std::string("attributes unreadable") : too_old) + ")";
  return p;
}

const Probe& probe() {
  static const Probe cached = [] {
    try {
      return run_probe();
    } catch (...) {  // only std::bad_alloc is possible; keep the never-throws promise
      return Probe{0, "probe failed"};  // short enough for the small-string buffer
    }
  }();
  return cached;
}

}  // namespace

bool built() { return true; }

int device_count() { return probe().count; }

std::string device_status() { return probe().status; }

}  // namespace fedsec::cuda
