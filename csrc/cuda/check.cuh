// What every CUDA launcher of fedsec shares: the error-checking macros, stream-ordered device
// buffers, grid sizing, and the per-block record of non-finite rows used by the kernels that
// flag them.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fedsec::cuda::detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file,
                                          int line) {
  throw std::runtime_error(std::string("CUDA error at ") + file + ":" + std::to_string(line) +
                           ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err) + " (" +
                           expr + ")");
}

}  // namespace fedsec::cuda::detail

// Throws std::runtime_error naming the file, line, error name and message when `expr` (a CUDA
// runtime call) does not return cudaSuccess.
#define FEDSEC_CUDA_CHECK(expr)                                                             \
  do {                                                                                      \
    const cudaError_t fedsec_cuda_err_ = (expr);                                            \
    if (fedsec_cuda_err_ != cudaSuccess)                                                    \
      ::fedsec::cuda::detail::throw_cuda_error(fedsec_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// Checks the kernel launch just made (configuration errors; faults during the run surface at a
// later synchronising call).
#define FEDSEC_CUDA_CHECK_LAUNCH() FEDSEC_CUDA_CHECK(cudaGetLastError())

namespace fedsec::cuda::detail {

// Largest dynamic shared memory a block gets without opting in, on every supported architecture.
constexpr size_t kMaxSharedBytes = 48 * 1024;

// `count` elements of device memory allocated and freed in stream order: the destructor enqueues
// the free behind whatever was launched on `stream` meanwhile, so nothing synchronises.
template <typename T>
class StreamBuffer {
 public:
  StreamBuffer(size_t count, cudaStream_t stream) : stream_(stream) {
    if (count > 0) FEDSEC_CUDA_CHECK(cudaMallocAsync(&ptr_, count * sizeof(T), stream));
  }
  // A device copy of the host array `host`. A pageable source is staged before cudaMemcpyAsync
  // returns, so `host` may be released as soon as the constructor has run.
  StreamBuffer(const T* host, size_t count, cudaStream_t stream) : StreamBuffer(count, stream) {
    if (count > 0)
      FEDSEC_CUDA_CHECK(
          cudaMemcpyAsync(ptr_, host, count * sizeof(T), cudaMemcpyHostToDevice, stream));
  }
  ~StreamBuffer() {
    if (ptr_) static_cast<void>(cudaFreeAsync(ptr_, stream_));
  }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;

  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  cudaStream_t stream_;
};

// How many blocks of `kernel` the current device runs at once: the grid of a grid-stride kernel
// that fills every SM exactly once.
template <typename Kernel>
int64_t resident_blocks(Kernel kernel, int threads, size_t shared_bytes) {
  int device = 0, sms = 0, per_sm = 0;
  FEDSEC_CUDA_CHECK(cudaGetDevice(&device));
  FEDSEC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  FEDSEC_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared_bytes));
  return int64_t{sms} * std::max(per_sm, 1);
}

// Bytes of shared memory RowFlags needs for n rows (one bit each).
inline size_t row_flag_bytes(int64_t n) {
  return static_cast<size_t>((n + 31) / 32) * sizeof(uint32_t);
}

// Throws when the flags of n rows do not fit the shared memory left beside `other_bytes`.
inline void check_row_flags_fit(int64_t n, size_t other_bytes) {
  if (row_flag_bytes(n) + other_bytes > kMaxSharedBytes)
    throw std::invalid_argument("fedsec CUDA: too many rows to flag non-finite ones (n=" +
                                std::to_string(n) + ", at most " +
                                std::to_string((kMaxSharedBytes - other_bytes) * 8) + ")");
}

// True for NaN and +-Inf (v - v is NaN exactly then).
template <typename A>
__device__ __forceinline__ bool is_nonfinite(A v) {
  return v - v != A(0);
}

// Which rows a block saw a NaN or Inf in: one bit per row in shared memory (row_flag_bytes(n)),
// set only when a non-finite value turns up, then written to the caller's byte array once per
// flagged row and block, however many of its values were non-finite.
// Use: clear(); __syncthreads(); ... set(row) ...; __syncthreads(); flush(out).
class RowFlags {
 public:
  __device__ RowFlags(uint32_t* bits, int64_t n) : bits_(bits), n_(n) {}
  __device__ void clear() const {
    for (int64_t w = threadIdx.x; w < (n_ + 31) / 32; w += blockDim.x) bits_[w] = 0;
  }
  __device__ void set(int64_t row) const { atomicOr(&bits_[row >> 5], 1u << (row & 31)); }
  __device__ void flush(uint8_t* out) const {
    for (int64_t row = threadIdx.x; row < n_; row += blockDim.x)
      if ((bits_[row >> 5] >> (row & 31)) & 1u) out[row] = 1;
  }

 private:
  uint32_t* bits_;
  int64_t n_;
};

}  // namespace fedsec::cuda::detail
