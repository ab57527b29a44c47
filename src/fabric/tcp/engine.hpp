// The TCP fabric's progress engine: one thread per process that waits in epoll on every
// listening and connected socket of the fabric and runs their handlers. It sleeps when
// nothing happens (an idle adapter burns no CPU), so one-sided operations targeting this
// process complete while its consumer makes no NDK call.
#pragma once

#include <sys/epoll.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace softndk::fabric::tcp {

class Engine {
 public:
  // A socket's owner. Runs on the engine thread only, one event at a time per handler.
  class Handler {
   public:
    virtual ~Handler() = default;
    virtual void on_events(uint32_t events) = 0;
  };

  static Engine& instance();

  // Watches `fd` for `events` (EPOLLIN, EPOLLOUT; level-triggered) on behalf of `handler`,
  // which the engine keeps alive while an event for it runs. False when epoll refuses.
  bool add(int fd, uint32_t events, std::shared_ptr<Handler> handler);
  void modify(int fd, uint32_t events);
  // Stops watching `fd`. When it returns, no event for it runs any more, unless called
  // from the engine thread itself (from inside that handler, which then simply returns).
  void remove(int fd);
  // Runs handler->on_events(0) on the engine thread soon (from any thread; posting a
  // handler already waiting to run does nothing more).
  void post(std::shared_ptr<Handler> handler);

  bool on_engine_thread() const { return std::this_thread::get_id() == thread_id_; }

 private:
  Engine();
  ~Engine();
  void run();

  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: post() and shutdown
  std::mutex mutex_;
  std::condition_variable idle_;
  std::unordered_map<int, std::shared_ptr<Handler>> handlers_;
  std::unordered_map<Handler*, std::shared_ptr<Handler>> posted_;
  int running_fd_ = -1;  // the fd whose handler runs now
  bool stopping_ = false;
  std::thread thread_;
  std::thread::id thread_id_;
};

}  // namespace softndk::fabric::tcp
