// The replacement operator new behind alloc_counter.hpp (in its own file: where the
// compiler sees both the replacement and a new-expression it warns of a mismatch).
#include "alloc_counter.hpp"

#include <cstdlib>
#include <new>

namespace e2e::alloc_counter {
std::atomic<bool> counting{false};
std::atomic<uint64_t> allocations{0};
}  // namespace e2e::alloc_counter

void* operator new(size_t size) {
  if (e2e::alloc_counter::counting.load(std::memory_order_relaxed))
    e2e::alloc_counter::allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
