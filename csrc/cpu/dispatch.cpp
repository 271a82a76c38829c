// CPU entry points: pick the kernels of the best instruction set this processor runs (or the one
// set_isa chose), split the coordinates over threads, and merge what the threads produced.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cpu/kernels.h"

namespace fedsec::cpu {

namespace {

// The kernel tables this build has, best first, each with whether this processor runs it.
struct IsaChoice {
  const Kernels* kernels;
  bool supported;
};

std::vector<IsaChoice> compiled_isas() {
  std::vector<IsaChoice> out;
#if defined(FEDSEC_X86)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512bw");
  out.push_back({&avx512::kernels, avx512});
  out.push_back({&avx2::kernels, avx2});
#endif
  out.push_back({&baseline::kernels, true});
  return out;
}

const Kernels* best_supported() {
  for (const auto& choice : compiled_isas())
    if (choice.supported) return choice.kernels;
  return &baseline::kernels;
}

// The table in use: the best this processor runs, unless set_isa chose another.
std::atomic<const Kernels*> g_kernels{best_supported()};

const Kernels& best_kernels() { return *g_kernels.load(); }

// Every core until fedsec's thread policy (fedsec/threads.py, which reads FEDSEC_NUM_THREADS,
// the CPU affinity and cgroup quotas) or set_num_threads sets the count.
std::atomic<int> g_threads{static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};

int thread_count() { return g_threads.load(); }

// Below this many elements (n * d) a second thread costs more than it saves.
constexpr int64_t kMinWorkPerThread = int64_t{1} << 18;

int plan_threads(int64_t n, int64_t d) {
  const int64_t by_work = std::max<int64_t>(1, n * d / kMinWorkPerThread);
  return static_cast<int>(std::min<int64_t>(thread_count(), by_work));
}

// Runs fn(thread, begin, end) over [0, d) split into contiguous, cache-line-aligned ranges.
template <typename Fn>
void parallel_ranges(int threads, int64_t d, Fn&& fn) {
  const int64_t step = ((d + threads - 1) / threads + 63) / 64 * 64;
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) {
    const int64_t b = std::min(d, t * step), e = std::min(d, (t + 1) * step);
    pool.emplace_back([&fn, t, b, e] { fn(t, b, e); });
  }
  fn(0, 0, std::min(d, step));
  for (auto& th : pool) th.join();
}

// Runs a flagging kernel over the threads, each into its own bytes, then ORs them into nonfinite.
template <typename Fn>
void parallel_flagged(int64_t n, int64_t d, uint8_t* nonfinite, Fn&& kernel) {
  const int threads = plan_threads(n, d);
  std::vector<std::vector<uint8_t>> flags(static_cast<size_t>(threads),
                                          std::vector<uint8_t>(static_cast<size_t>(n), 0));
  parallel_ranges(threads, d, [&](int t, int64_t b, int64_t e) {
    if (b < e) kernel(b, e, flags[t].data());
  });
  if (nonfinite)
    for (const auto& f : flags)
      for (int64_t i = 0; i < n; ++i) nonfinite[i] |= f[i];
}

// The nonzeros of a dense n_out x n mixing matrix by rows, and the scale of its overflow path.
struct CompressedMixing {
  std::vector<int64_t> start;
  std::vector<int32_t> column;
  std::vector<double> weight;
  Mixing view;  // points into the vectors above: not copyable

  CompressedMixing(const CompressedMixing&) = delete;
  CompressedMixing& operator=(const CompressedMixing&) = delete;
  CompressedMixing(const double* mixing, int64_t n_out, int64_t n) {
    start.push_back(0);
    double widest = 1.0;  // the largest row sum of |weight|, at least 1
    for (int64_t p = 0; p < n_out; ++p) {
      double row_sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const double w = mixing[p * n + i];
        if (w == 0.0) continue;
        column.push_back(static_cast<int32_t>(i));
        weight.push_back(w);
        row_sum += std::fabs(w);
      }
      start.push_back(static_cast<int64_t>(column.size()));
      widest = std::max(widest, row_sum);
    }
    // down = 2^-e with 2^e >= max(n_out, 2) * widest.
    int exponent = 0;
    std::frexp(static_cast<double>(std::max<int64_t>(n_out, 2)) * widest, &exponent);
    view = Mixing{start.data(), column.data(), weight.data(), n_out, std::ldexp(1.0, -exponent),
                  std::ldexp(1.0, exponent)};
  }
};

}  // namespace

std::string isa() { return best_kernels().isa; }

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (const auto& choice : compiled_isas())
    if (choice.supported) out.push_back(choice.kernels->isa);
  return out;
}

void set_isa(const std::string& name) {
  for (const auto& choice : compiled_isas()) {
    if (name != choice.kernels->isa) continue;
    if (!choice.supported)
      throw std::invalid_argument("instruction set '" + name + "' is compiled in, but this "
                                  "processor does not run it");
    g_kernels.store(choice.kernels);
    return;
  }
  throw std::invalid_argument("instruction set '" + name + "' is not one of this build's "
                              "kernel tables");
}
int num_threads() { return thread_count(); }
void set_num_threads(int threads) {
  if (threads < 1)
    throw std::invalid_argument("threads must be >= 1; got " + std::to_string(threads));
  g_threads.store(threads);
}

double gram_fast_error() { return best_kernels().gram_fast_error(); }

void gram(const void* const* rows, int64_t n, const void* ref, int64_t d, DType dt, bool fast,
          double scale, double* G) {
  const auto& kern = best_kernels();
  const int threads = plan_threads(n, d);
  std::vector<std::vector<double>> partial(static_cast<size_t>(threads),
                                           std::vector<double>(static_cast<size_t>(n * n), 0.0));
  parallel_ranges(threads, d, [&](int t, int64_t b, int64_t e) {
    if (b < e) kern.gram(rows, n, ref, b, e, dt, fast, scale, partial[t].data());
  });
  // The kernels fill the upper triangle; fold every thread's part into both halves of G.
  for (const auto& part : partial) {
    const double* P = part.data();
    for (int64_t i = 0; i < n; ++i) {
      G[i * n + i] += P[i * n + i];
      for (int64_t j = i + 1; j < n; ++j) {
        G[i * n + j] += P[i * n + j];
        G[j * n + i] += P[i * n + j];
      }
    }
  }
}

void combine(const void* const* rows, const double* coeffs, int64_t n, const void* ref,
             double ref_coeff, int64_t d, DType dt, void* out, uint8_t* nonfinite) {
  const auto& kern = best_kernels();
  parallel_flagged(n, d, nonfinite, [&](int64_t b, int64_t e, uint8_t* flags) {
    kern.combine(rows, coeffs, n, ref, ref_coeff, b, e, dt, out, flags);
  });
}

void coordinate_select(const void* const* rows, int64_t n, int64_t d, DType dt, SelectOp op,
                       int64_t k, void* out, uint8_t* nonfinite) {
  const auto& kern = best_kernels();
  const auto net = select_network(n, op, k);
  const Comparators cmp{net.data(), static_cast<int64_t>(net.size())};
  parallel_flagged(n, d, nonfinite, [&](int64_t b, int64_t e, uint8_t* flags) {
    kern.coordinate_select(rows, n, b, e, dt, op, k, cmp, out, flags);
  });
}

void mixed_select(const void* const* rows, int64_t n, const double* mixing, int64_t n_out,
                  int64_t d, DType dt, SelectOp op, int64_t k, void* out, uint8_t* nonfinite) {
  const auto& kern = best_kernels();
  const auto net = select_network(n_out, op, k);
  const Comparators cmp{net.data(), static_cast<int64_t>(net.size())};
  const CompressedMixing compressed(mixing, n_out, n);
  parallel_flagged(n, d, nonfinite, [&](int64_t b, int64_t e, uint8_t* flags) {
    kern.mixed_select(rows, n, compressed.view, b, e, dt, op, k, cmp, out, flags);
  });
}

}  // namespace fedsec::cpu
