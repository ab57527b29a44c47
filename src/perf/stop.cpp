#include "perf/stop.hpp"

#include <pthread.h>
#include <unistd.h>

namespace softndk::perf {

SignalStop::SignalStop() {
  sigemptyset(&set_);
  sigaddset(&set_, SIGINT);
  sigaddset(&set_, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set_, &previous_);
  thread_ = std::thread([this] { wait_for_signals(); });
}

SignalStop::~SignalStop() {
  quitting_.store(true);
  // A signal aimed at the waiting thread alone wakes its sigwait.
  pthread_kill(thread_.native_handle(), SIGTERM);
  thread_.join();
  pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

void SignalStop::wait_for_signals() {
  for (;;) {
    int received = 0;
    if (sigwait(&set_, &received) != 0) continue;
    if (quitting_.load()) return;
    if (stop_.load()) _exit(128 + received);  // the second one: no more waiting
    request(received);
  }
}

void SignalStop::request(int signal) {
  {
    std::lock_guard lock(mutex_);
    int none = 0;
    signal_.compare_exchange_strong(none, signal);
    stop_.store(true);
  }
  cv_.notify_all();
}

bool SignalStop::sleep_for(std::chrono::nanoseconds d) {
  std::unique_lock lock(mutex_);
  return !cv_.wait_for(lock, d, [this] { return stop_.load(); });
}

}  // namespace softndk::perf
