// How a create, request or close reaches the consumer: inline, or STATUS_PENDING plus
// exactly one callback, run on the caller's thread or on the adapter's provider thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "ndk/softndk.h"

namespace softndk {

// Where one completion is delivered. The adapter's SOFTNDK_COMPLETION_MODE picks one of
// these per call (always the same one, or a seeded random one in the mixed mode).
enum class Delivery : uint8_t {
  kInline,          // return the final status; never call the callback
  kCallerThread,    // call the callback before returning STATUS_PENDING
  kProviderThread,  // queue the callback to the provider thread, return STATUS_PENDING
};

// One unit of work for the provider thread. A plain record (no allocation per task
// beyond the queue's own storage) so that later hot paths can use it too.
using AnyCallback = void (*)();  // any consumer callback, cast back by the task

struct Task {
  void (*run)(const Task&) = nullptr;
  void (*inner)(const Task&) = nullptr;  // what a wrapper task runs inside its scope
  void* object = nullptr;  // the object the task is about
  void* other = nullptr;   // a second object (e.g. the one a create produced)
  AnyCallback callback = nullptr;
  void* context = nullptr;
  int32_t status = 0;
  uint32_t value = 0;
};

// Marks the current thread as running a consumer callback (the consumer must not close
// an adapter from there: R055).
class CallbackScope {
 public:
  CallbackScope() { ++depth_; }
  ~CallbackScope() { --depth_; }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;
  static bool active() { return depth_ > 0; }

 private:
  static thread_local int depth_;
};

// The provider thread of one adapter: runs queued callbacks in order, one at a time,
// holding no lock while a callback runs. Idle, it sleeps on a condition variable.
class ProviderThread {
 public:
  ProviderThread();
  ~ProviderThread();  // drains the queue, then joins
  ProviderThread(const ProviderThread&) = delete;
  ProviderThread& operator=(const ProviderThread&) = delete;

  void post(const Task& task);
  // Runs `task` after `delay` unless cancelled first; returns its timer id (never 0).
  uint64_t post_after(std::chrono::microseconds delay, const Task& task);
  // True when the timer was removed before it ran (its task will never run).
  bool cancel(uint64_t timer);
  bool on_this_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  void loop();

  struct Timer {
    std::chrono::steady_clock::time_point due;
    uint64_t id;
    Task task;
  };

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Task> queue_;
  std::vector<Timer> timers_;  // few and short-lived: a plain vector
  uint64_t next_timer_ = 1;
  bool stopping_ = false;
  std::thread thread_;
};

// Chooses the delivery of each completion according to the adapter's mode.
class DeliveryPolicy {
 public:
  DeliveryPolicy(SOFTNDK_COMPLETION_MODE mode, uint64_t seed) : mode_(mode), seed_(seed) {}
  Delivery next();
  SOFTNDK_COMPLETION_MODE mode() const { return mode_; }
  uint64_t seed() const { return seed_; }

 private:
  SOFTNDK_COMPLETION_MODE mode_;
  uint64_t seed_;
  std::atomic<uint64_t> sequence_{0};
};

}  // namespace softndk
