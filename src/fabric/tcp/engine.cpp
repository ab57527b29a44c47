#include "fabric/tcp/engine.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace softndk::fabric::tcp {

namespace {

std::atomic<Engine*> g_running{nullptr};
// The handler this thread runs now (nested calls of progress() and remove() need it).
thread_local Engine::Handler* t_current = nullptr;
// The socket this consumer thread's poll found input on last (each consumer its own: with
// several, each keeps trying the socket it is waiting on).
thread_local std::weak_ptr<Engine::Handler> t_hot;

void wake(int fd) {
  uint64_t one = 1;
  if (write(fd, &one, sizeof one) < 0) {
  }  // the counter is already non-zero: the engine wakes anyway
}

}  // namespace

Engine& Engine::instance() {
  static Engine engine;
  return engine;
}

Engine* Engine::running() { return g_running.load(std::memory_order_acquire); }

Engine::Engine() {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    std::perror("softndk: tcp engine");
    std::abort();  // no file descriptors at start-up: nothing sensible to go on with
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  thread_ = std::thread([this] { run(); });
  g_running.store(this, std::memory_order_release);
}

Engine::~Engine() {
  g_running.store(nullptr, std::memory_order_release);
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake(wake_fd_);
  thread_.join();
  close(wake_fd_);
  close(epoll_fd_);
}

bool Engine::add(int fd, uint32_t events, std::shared_ptr<Handler> handler) {
  std::lock_guard lock(mutex_);
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) return false;
  handler->removed_.store(false);
  handlers_[fd] = std::move(handler);
  return true;
}

void Engine::modify(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
}

void Engine::remove(int fd) {
  std::shared_ptr<Handler> handler;
  {
    std::lock_guard lock(mutex_);
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    auto it = handlers_.find(fd);
    if (it == handlers_.end()) return;
    handler = std::move(it->second);
    handlers_.erase(it);
  }
  // Pairs with run_handler: it takes busy_, then reads removed_ (both sequentially
  // consistent), so either it sees the removal or we see it running and wait.
  handler->removed_.store(true);
  if (t_current == handler.get()) return;
  while (handler->busy_.load()) std::this_thread::yield();  // handlers run briefly
}

void Engine::post(std::shared_ptr<Handler> handler) {
  {
    std::lock_guard lock(mutex_);
    Handler* key = handler.get();
    if (!posted_.emplace(key, std::move(handler)).second) return;
  }
  wake(wake_fd_);
}

void Engine::progress() {
  if (t_current != nullptr) return;  // a handler's own call chain: it is progress already
  note_activity();
  thread_local unsigned t_polls = 0;
  if (++t_polls % kEpollEvery != 0) {
    const std::shared_ptr<Handler> hot = t_hot.lock();
    // Found nothing there either way: epoll's turn comes every kEpollEvery-th poll (one
    // system call per empty poll, not two).
    if (hot) {
      (void)try_handler(*hot);
      return;
    }
  }
  epoll_event events[16];
  int n = epoll_wait(epoll_fd_, events, 16, 0);
  if (n > 0) dispatch(events, n, false);
}

bool Engine::try_handler(Handler& handler) {
  if (handler.busy_.exchange(true)) return false;
  bool got = false;
  Handler* const outer = t_current;
  t_current = &handler;
  if (!handler.removed_.load()) got = handler.try_input();
  while (!handler.removed_.load() && handler.pending_.exchange(0) != 0) handler.on_events(0);
  t_current = outer;
  handler.busy_.store(false);
  // A post that came as we let go: run_handler takes it (and any that follow).
  if (!handler.removed_.load() && handler.pending_.load() != 0) run_handler(handler, 0);
  return got;
}

void Engine::note_activity() {
  // A plain increment (no read-modify-write on the hot path): concurrent consumers may
  // lose a count, never the change the engine thread looks for.
  activity_.store(activity_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

void Engine::consumer_posts() {
  if (t_current == nullptr) note_activity();
}

void Engine::consumer_waits() {
  // Pairs with run(): it sets stepped_back_ then reads consumer_waiting_ (both sequentially
  // consistent), so it either sees this call or is woken by it.
  consumer_waiting_.store(true);
  if (stepped_back_.load()) wake(wake_fd_);
}

void Engine::run_handler(Handler& handler, uint32_t events) {
  // Socket events need no remembering: epoll is level-triggered, so one that finds the
  // handler busy is reported again by the next epoll_wait if the busy thread left it. (A
  // poller re-adding them would keep the busy thread in the handler for as long as it
  // polls.) A post is remembered: whoever takes busy_ runs every pending post, and looks
  // again after letting go, so none is left behind.
  if (events & kPosted) handler.pending_.fetch_or(kPosted);
  uint32_t socket_events = events & ~kPosted;
  while (!handler.busy_.exchange(true)) {
    Handler* const outer = t_current;
    t_current = &handler;
    if (socket_events != 0 && !handler.removed_.load()) handler.on_events(socket_events);
    socket_events = 0;
    while (!handler.removed_.load() && handler.pending_.exchange(0) != 0) handler.on_events(0);
    t_current = outer;
    handler.busy_.store(false);
    if (handler.removed_.load() || handler.pending_.load() == 0) return;
  }
}

bool Engine::dispatch(const epoll_event* events, int count, bool engine_thread) {
  std::shared_ptr<Handler> ready[kBatch];
  uint32_t what[kBatch];
  int n = 0;
  bool posts = false;
  {
    std::lock_guard lock(mutex_);
    for (int i = 0; i < count && n < kBatch; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        posts = engine_thread;  // posts run on the engine thread (consumers leave them)
        continue;
      }
      auto it = handlers_.find(fd);
      if (it == handlers_.end()) continue;  // removed since epoll reported it
      if (!engine_thread && (events[i].events & EPOLLIN)) t_hot = it->second;
      ready[n] = it->second;
      what[n++] = events[i].events;
    }
  }
  for (int i = 0; i < n; ++i) run_handler(*ready[i], what[i]);
  if (!posts) return true;
  uint64_t count_read;
  if (read(wake_fd_, &count_read, sizeof count_read) < 0) {
  }
  std::vector<std::shared_ptr<Handler>> posted;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return false;
    for (auto& [key, handler] : posted_) posted.push_back(std::move(handler));
    posted_.clear();
  }
  for (auto& handler : posted) run_handler(*handler, kPosted);
  return true;
}

void Engine::run() {
  epoll_event events[kBatch];
  uint64_t seen = activity_.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t now = activity_.load(std::memory_order_relaxed);
    if (now != seen) {
      // Consumers made progress since we last looked: they drive the sockets. Wait only
      // for posts and consumer_waits, and look again after kHandoff.
      seen = now;
      stepped_back_.store(true);
      if (consumer_waiting_.exchange(false)) {  // a consumer is about to sleep
        seen = activity_.load(std::memory_order_relaxed);
        continue;
      }
      pollfd wake{wake_fd_, POLLIN, 0};
      if (::poll(&wake, 1, static_cast<int>(kHandoff.count())) > 0) {
        epoll_event posted{};
        posted.data.fd = wake_fd_;
        if (!dispatch(&posted, 1, true)) return;
        // A consumer about to sleep: the sockets are ours again at once.
        if (consumer_waiting_.exchange(false)) seen = activity_.load(std::memory_order_relaxed);
      }
      continue;
    }
    stepped_back_.store(false);
    consumer_waiting_.store(false);
    const int n = epoll_wait(epoll_fd_, events, kBatch, -1);
    if (n < 0) continue;  // EINTR
    if (!dispatch(events, n, true)) return;
  }
}

}  // namespace softndk::fabric::tcp
