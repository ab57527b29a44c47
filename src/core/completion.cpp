#include "core/completion.hpp"

#include <algorithm>

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
  // Notified under the lock: the task may be the one whose completion lets this thread's
  // owner be destroyed (an adapter's last close), so nothing of it is touched after the
  // lock is released (a fabric thread posting races the close otherwise).
  std::lock_guard lock(mutex_);
  queue_.push_back(task);
  wake_.notify_one();
}

uint64_t ProviderThread::post_after(std::chrono::microseconds delay, const Task& task) {
  uint64_t id;
  {
    std::lock_guard lock(mutex_);
    id = next_timer_++;
    timers_.push_back(Timer{std::chrono::steady_clock::now() + delay, id, task});
    wake_.notify_one();  // under the lock, as in post()
  }
  return id;
}

bool ProviderThread::cancel(uint64_t timer) {
  std::lock_guard lock(mutex_);
  for (auto it = timers_.begin(); it != timers_.end(); ++it) {
    if (it->id == timer) {
      timers_.erase(it);
      return true;
    }
  }
  return false;
}

void ProviderThread::loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    // Due timers join the queue; the nearest one bounds the sleep.
    auto now = std::chrono::steady_clock::now();
    auto next = std::chrono::steady_clock::time_point::max();
    for (auto it = timers_.begin(); it != timers_.end();) {
      if (it->due <= now) {
        queue_.push_back(it->task);
        it = timers_.erase(it);
      } else {
        next = std::min(next, it->due);
        ++it;
      }
    }
    if (queue_.empty()) {
      if (stopping_) return;  // everything queued has run; pending timers are dropped
      if (next == std::chrono::steady_clock::time_point::max())
        wake_.wait(lock);
      else
        wake_.wait_until(lock, next);
      continue;
    }
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
