#include "fabric/tcp/engine.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace softndk::fabric::tcp {

Engine& Engine::instance() {
  static Engine engine;
  return engine;
}

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
  thread_id_ = thread_.get_id();
}

Engine::~Engine() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) {
  }
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
  std::unique_lock lock(mutex_);
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  handlers_.erase(fd);
  if (on_engine_thread()) return;
  idle_.wait(lock, [&] { return running_fd_ != fd; });
}

void Engine::post(std::shared_ptr<Handler> handler) {
  {
    std::lock_guard lock(mutex_);
    Handler* key = handler.get();
    if (!posted_.emplace(key, std::move(handler)).second) return;
  }
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) {
  }  // the counter is already non-zero: the engine wakes anyway
}

void Engine::run() {
  std::array<epoll_event, 64> events;
  std::vector<std::shared_ptr<Handler>> posted;
  for (;;) {
    int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), -1);
    if (n < 0) continue;  // EINTR
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        uint64_t count;
        if (read(wake_fd_, &count, sizeof count) < 0) {
        }
        std::lock_guard lock(mutex_);
        if (stopping_) return;
        for (auto& [key, handler] : posted_) posted.push_back(std::move(handler));
        posted_.clear();
        continue;
      }
      std::shared_ptr<Handler> handler;
      {
        std::lock_guard lock(mutex_);
        auto it = handlers_.find(fd);
        if (it == handlers_.end()) continue;  // removed since epoll reported it
        handler = it->second;
        running_fd_ = fd;
      }
      handler->on_events(events[i].events);
      {
        std::lock_guard lock(mutex_);
        running_fd_ = -1;
      }
      idle_.notify_all();
    }
    for (auto& handler : posted) handler->on_events(0);
    posted.clear();
  }
}

}  // namespace softndk::fabric::tcp
