// SIGINT and SIGTERM as a stop request, for the tools that drive the engine: pass
// `flag()` as Params::stop and check `requested()` between steps. Construct it first in
// main, before any thread exists (the adapters' provider threads among them): the two
// signals are blocked in the calling thread, every thread started afterwards inherits
// that, and one thread of this object takes them with sigwait. A second signal ends the
// process at once with status 128 + signal. The destructor ends that thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <mutex>
#include <thread>

namespace softndk::perf {

class SignalStop {
 public:
  SignalStop();
  ~SignalStop();
  SignalStop(const SignalStop&) = delete;
  SignalStop& operator=(const SignalStop&) = delete;

  const std::atomic<bool>& flag() const { return stop_; }
  bool requested() const { return stop_.load(std::memory_order_relaxed); }
  // The signal that asked for the stop (SIGINT, SIGTERM), 0 if none did.
  int signal() const { return signal_.load(); }
  // Sleeps for `d`; returns false at once if a stop is (or becomes) requested.
  bool sleep_for(std::chrono::nanoseconds d);
  // Asks for a stop as a signal would (tests, or a tool's own reasons).
  void request(int signal = 0);

 private:
  void wait_for_signals();

  std::atomic<bool> stop_{false};
  std::atomic<int> signal_{0};
  std::atomic<bool> quitting_{false};
  sigset_t set_{};
  sigset_t previous_{};
  std::mutex mutex_;
  std::condition_variable cv_;
  std::thread thread_;
};

}  // namespace softndk::perf
