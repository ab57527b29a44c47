#include "perf/clock.hpp"

#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace softndk::perf {

namespace {

bool detect_invariant_tsc() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0x80000000u, &eax, &ebx, &ecx, &edx) == 0 || eax < 0x80000007u) return false;
  if (__get_cpuid(0x80000007u, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (edx & (1u << 8)) != 0;  // CPUID.80000007H:EDX[8], invariant TSC
#else
  return false;
#endif
}

double calibrate() {
  if (!clock_uses_tsc()) {
    using Period = std::chrono::steady_clock::period;
    return 1e9 * static_cast<double>(Period::num) / static_cast<double>(Period::den);
  }
  // Spin ~20 ms and compare the two clocks; both reads are taken back to back.
  auto t0 = std::chrono::steady_clock::now();
  Ticks c0 = now();
  auto t1 = t0;
  while (t1 - t0 < std::chrono::milliseconds(20)) t1 = std::chrono::steady_clock::now();
  Ticks c1 = now();
  double ns = std::chrono::duration<double, std::nano>(t1 - t0).count();
  return ns / static_cast<double>(c1 - c0);
}

double measure_overhead() {
  constexpr int kReads = 100000;
  Ticks sink = 0;
  Ticks t0 = now();
  for (int i = 0; i < kReads; ++i) sink ^= now();
  Ticks t1 = now();
  __asm__ __volatile__("" : : "r"(sink));  // keep the reads
  return to_ns(t1 - t0) / kReads;
}

}  // namespace

namespace detail {
extern const bool use_tsc = detect_invariant_tsc();
}

double ns_per_tick() {
  static const double value = calibrate();
  return value;
}

double timer_overhead_ns() {
  static const double value = measure_overhead();
  return value;
}

}  // namespace softndk::perf
