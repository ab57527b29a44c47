// Timestamps for the engine. On x86 with an invariant TSC a read costs about 10 ns (a
// steady_clock read about 30 ns on a vDSO clock), which matters when one operation takes
// ~100 ns; elsewhere the engine falls back to steady_clock.
#pragma once

#include <chrono>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace softndk::perf {

using Ticks = uint64_t;

namespace detail {
extern const bool use_tsc;  // decided once, at static initialisation
}

// True when now() reads the TSC (invariant TSC present), false for steady_clock.
inline bool clock_uses_tsc() { return detail::use_tsc; }

inline Ticks now() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  if (detail::use_tsc) return __rdtsc();
#endif
  return static_cast<Ticks>(std::chrono::steady_clock::now().time_since_epoch().count());
}

// Nanoseconds per tick (calibrated against steady_clock once, ~20 ms, on first use).
double ns_per_tick();
// Cost of one now() read in ns (measured once): every latency sample includes one read.
double timer_overhead_ns();

inline double to_ns(Ticks ticks) { return static_cast<double>(ticks) * ns_per_tick(); }

}  // namespace softndk::perf
