// The TCP fabric's progress engine: the process's listening and connected sockets in one
// epoll set, and the threads that run their handlers.
//
// Two kinds of thread make progress:
//   - a consumer polling a CQ that is empty (Interface::progress): it runs the handlers of
//     whatever is ready now, on its own thread, without sleeping -- the lowest latency, and
//     no thread wake-up between the socket and the CQ;
//   - the engine thread, which serves the sockets when nobody polls, so one-sided operations
//     targeting this process complete while its consumer makes no NDK call. While consumers
//     poll or post, it stops watching the sockets (it would only be woken to find the work
//     done, on a core a consumer needs, or contend with a posting consumer for the
//     connection) and checks back every kHandoff; an idle process sleeps.
// A handler runs on one thread at a time. A thread that finds it busy leaves the socket's
// events (level-triggered: reported again while unhandled) and hands a post to the busy
// thread, which runs it before letting go: nothing is lost.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace softndk::fabric::tcp {

class Engine {
 public:
  // A socket's owner.
  class Handler {
   public:
    virtual ~Handler() = default;
    // The socket's epoll events, or 0 for a post(). Never runs on two threads at once.
    virtual void on_events(uint32_t events) = 0;
    // A polling consumer tries the socket without asking epoll first (the socket that had
    // input last): whether anything came. Never runs on two threads at once either.
    virtual bool try_input() { return false; }

   private:
    friend class Engine;
    std::atomic<uint32_t> pending_{0};  // a post waiting for the thread that runs it
    std::atomic<bool> busy_{false};     // a thread runs it now
    std::atomic<bool> removed_{false};  // remove() was called: it runs no more
  };

  // While consumers poll, the engine thread checks this often whether they still do.
  static constexpr std::chrono::milliseconds kHandoff{1};

  static Engine& instance();
  // The engine when it runs (a TCP socket exists or existed), else null: polling an
  // adapter that never used a socket starts nothing.
  static Engine* running();

  // Watches `fd` for `events` (EPOLLIN, EPOLLOUT; level-triggered) on behalf of `handler`,
  // which the engine keeps alive while an event for it runs. False when epoll refuses.
  bool add(int fd, uint32_t events, std::shared_ptr<Handler> handler);
  void modify(int fd, uint32_t events);
  // Stops watching `fd`. When it returns, its handler runs no more, unless called from
  // inside that handler (which then simply returns).
  void remove(int fd);
  // Runs handler->on_events(0) on the engine thread soon (from any thread; posting a
  // handler already waiting to run does nothing more).
  void post(std::shared_ptr<Handler> handler);

  // A consumer's poll found nothing: runs the handlers of the sockets ready now, on this
  // thread, and keeps the engine thread off the sockets for (at least) kHandoff. Returns
  // at once when called from inside a handler.
  void progress();
  // A consumer posts: it is at work and will poll for the outcome, so the engine thread
  // keeps off the sockets as after a poll (a post sends on the consumer's thread, and the
  // engine thread would only contend with it for the connection).
  void consumer_posts();
  // A consumer stops polling (it armed a CQ and will wait for the notification): the
  // engine thread watches the sockets again now rather than after kHandoff.
  void consumer_waits();

 private:
  static constexpr uint32_t kPosted = EPOLLONESHOT;  // never asked of epoll: marks a post()
  static constexpr int kBatch = 64;
  // A consumer's poll tries the last socket that had input directly (one receive call where
  // epoll_wait and then the receive would be two); every kEpollEvery-th poll asks epoll
  // instead, so no other socket waits more than that many polls.
  static constexpr unsigned kEpollEvery = 8;

  Engine();
  ~Engine();
  void run();
  // Runs the handlers of `events` (from epoll_wait) on this thread. False: stopping.
  bool dispatch(const epoll_event* events, int count, bool engine_thread);
  void run_handler(Handler& handler, uint32_t events);
  // try_input() under the same rule as run_handler; false also when the handler is busy.
  bool try_handler(Handler& handler);
  void note_activity();

  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: post(), consumer_waits() and shutdown
  std::mutex mutex_;
  std::unordered_map<int, std::shared_ptr<Handler>> handlers_;
  std::unordered_map<Handler*, std::shared_ptr<Handler>> posted_;
  bool stopping_ = false;
  // Bumped by consumers' polls and posts; the engine thread steps back from the sockets
  // while it changes (no clock read on the consumers' path).
  std::atomic<uint64_t> activity_{0};
  std::atomic<bool> stepped_back_{false};      // the engine thread leaves the sockets to consumers
  std::atomic<bool> consumer_waiting_{false};  // consumer_waits() while it did
  std::thread thread_;
};

}  // namespace softndk::fabric::tcp
