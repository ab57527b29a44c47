// Counts heap allocations (operator new, from every thread) while counting is on. Linked
// into one test binary only: alloc_counter.cpp replaces the global operator new.
#pragma once

#include <atomic>
#include <cstdint>

namespace e2e::alloc_counter {
extern std::atomic<bool> counting;
extern std::atomic<uint64_t> allocations;
}  // namespace e2e::alloc_counter
