#include "core/completion.hpp"

namespace softndk {

thread_local int CallbackScope::depth_ = 0;

ProviderThread::ProviderThread() : thread_([this] { loop(); }) {}

ProviderThread::~ProviderThread() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void ProviderThread::post(const Task& task) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(task);
  }
  wake_.notify_one();
}

void ProviderThread::loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything queued has run
    Task task = queue_.front();
    queue_.pop_front();
    lock.unlock();
    task.run(task);
    lock.lock();
  }
}

namespace {
// SplitMix64: a counter-based generator, so the choice for call N depends only on the
// seed and N, and a failing run can be replayed with the same seed.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}
}  // namespace

Delivery DeliveryPolicy::next() {
  switch (mode_) {
    case SOFTNDK_COMPLETION_INLINE:
      return Delivery::kInline;
    case SOFTNDK_COMPLETION_CALLER_THREAD:
      return Delivery::kCallerThread;
    case SOFTNDK_COMPLETION_PROVIDER_THREAD:
      return Delivery::kProviderThread;
    case SOFTNDK_COMPLETION_MIXED:
    case SOFTNDK_COMPLETION_DEFAULT:  // resolved at open; never stored
      break;
  }
  uint64_t n = sequence_.fetch_add(1, std::memory_order_relaxed);
  switch (mix(seed_ ^ mix(n)) % 3) {
    case 0:
      return Delivery::kInline;
    case 1:
      return Delivery::kCallerThread;
    default:
      return Delivery::kProviderThread;
  }
}

}  // namespace softndk
