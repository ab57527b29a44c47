// The TCP fabric's progress engine (src/fabric/tcp/engine.hpp): a consumer's poll runs
// the handlers of ready sockets on its own thread, the engine thread serves them when
// nobody polls, a handler never runs on two threads at once, and no event is lost or run
// after remove().
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "fabric/tcp/engine.hpp"

namespace softndk::fabric::tcp {
namespace {

using namespace std::chrono_literals;

// Reads one byte per event; records on which thread and whether another thread was inside.
class ByteReader final : public Engine::Handler {
 public:
  explicit ByteReader(int fd) : fd_(fd) {}
  void on_events(uint32_t events) override {
    if (inside_.fetch_add(1) != 0) overlapped_ = true;
    std::this_thread::yield();  // widens the window another thread would overlap in
    if (events == 0) {
      posted_.fetch_add(1);
    } else {
      uint8_t byte;
      while (read(fd_, &byte, 1) == 1) {
        if (byte != static_cast<uint8_t>(next_)) out_of_order_ = true;
        ++next_;
        if (std::this_thread::get_id() == watched_) on_watched_.fetch_add(1);
        received_.fetch_add(1);
        if (!drain_) break;
      }
    }
    inside_.fetch_sub(1);
  }
  // One byte at a time, so that a socket given many stays "with input".
  bool try_input() override {
    if (inside_.fetch_add(1) != 0) overlapped_ = true;
    tries_.fetch_add(1);
    uint8_t byte;
    const bool got = read(fd_, &byte, 1) == 1;
    if (got) {
      if (byte != static_cast<uint8_t>(next_)) out_of_order_ = true;
      ++next_;
      if (std::this_thread::get_id() == watched_) on_watched_.fetch_add(1);
      received_.fetch_add(1);
    }
    inside_.fetch_sub(1);
    return got;
  }
  int fd_;
  std::atomic<bool> drain_{true};  // an event reads all there is, else one byte
  std::thread::id watched_;
  std::atomic<int> inside_{0};
  std::atomic<bool> overlapped_{false};
  bool out_of_order_ = false;
  int next_ = 0;
  std::atomic<int> received_{0}, on_watched_{0}, posted_{0}, tries_{0};
};

struct SocketPair {
  int fd[2] = {-1, -1};
  SocketPair() {
    // The handler's end never blocks; the writer's does, when the handlers fall behind.
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd), 0);
    EXPECT_EQ(fcntl(fd[0], F_SETFL, O_NONBLOCK), 0);
  }
  ~SocketPair() {
    close(fd[0]);
    close(fd[1]);
  }
  void send_byte(uint8_t b) const { ASSERT_EQ(write(fd[1], &b, 1), 1); }
};

template <class F>
bool wait_until(F&& done, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// A reader of the pair's first end, added to the engine, counting what this thread reads.
std::shared_ptr<ByteReader> watched_by_this_thread(const SocketPair& pair) {
  auto reader = std::make_shared<ByteReader>(pair.fd[0]);
  reader->watched_ = std::this_thread::get_id();
  EXPECT_TRUE(Engine::instance().add(pair.fd[0], EPOLLIN, reader));
  return reader;
}

TEST(TcpEngine, PollingConsumerRunsTheHandlerOnItsOwnThread) {
  SocketPair pair;
  auto reader = watched_by_this_thread(pair);
  Engine& engine = Engine::instance();
  constexpr int kBytes = 200;
  for (int i = 0; i < kBytes; ++i) {
    pair.send_byte(static_cast<uint8_t>(i));
    // The consumer's poll: progress until the byte was taken (by whichever thread).
    ASSERT_TRUE(wait_until([&] {
      engine.progress();
      return reader->received_.load() == i + 1;
    })) << "byte " << i << " never handled";
  }
  engine.remove(pair.fd[0]);
  EXPECT_EQ(reader->received_.load(), kBytes);
  EXPECT_FALSE(reader->out_of_order_);
  // The engine thread takes some (it watches when the consumer was scheduled out for more
  // than the handoff, as on a loaded machine); the consumer's poll takes the others.
  EXPECT_GT(reader->on_watched_.load(), 0);
}

TEST(TcpEngine, APollTriesTheSocketThatHadInputFirstAndStillServesTheOthers) {
  // A consumer's poll that found input on a socket tries that socket first next time (one
  // receive call instead of epoll_wait and the receive); a socket that always has input
  // does not keep the others waiting: every kEpollEvery-th poll asks epoll.
  SocketPair busy, other;
  auto hot = watched_by_this_thread(busy);
  // One byte per event: the engine thread, if it still watches, takes a byte and steps
  // back rather than draining the busy socket under the polls' feet.
  hot->drain_ = false;
  Engine& engine = Engine::instance();
  for (int i = 0; hot->on_watched_.load() == 0; ++i) {  // input found by this thread's poll
    ASSERT_LT(i, 200) << "this thread's polls never found the byte";
    busy.send_byte(static_cast<uint8_t>(i));
    ASSERT_TRUE(wait_until([&] {
      engine.progress();
      return hot->received_.load() == i + 1;
    }));
  }
  const int sent = hot->received_.load();
  for (int i = 0; i < 100; ++i) busy.send_byte(static_cast<uint8_t>(sent + i));
  auto reader = std::make_shared<ByteReader>(other.fd[0]);
  ASSERT_TRUE(engine.add(other.fd[0], EPOLLIN, reader));
  other.send_byte(0);
  const int tries_before = hot->tries_.load();
  // Epoll is asked every 8th poll: within 32 the other socket is served (by this thread,
  // or by the engine thread if it was still watching).
  int polls = 0;
  while (reader->received_.load() == 0 && polls < 32) {
    engine.progress();
    ++polls;
  }
  EXPECT_EQ(reader->received_.load(), 1) << "the other socket waited " << polls << " polls";
  // And the polls try the busy socket directly (once no other thread is inside it).
  EXPECT_TRUE(wait_until([&] {
    engine.progress();
    return hot->tries_.load() > tries_before;
  })) << "the poll never tried the socket that had input";
  engine.remove(other.fd[0]);
  engine.remove(busy.fd[0]);
  EXPECT_FALSE(hot->overlapped_.load());
  EXPECT_FALSE(hot->out_of_order_);
}

TEST(TcpEngine, NobodyPollingTheEngineThreadServes) {
  SocketPair pair;
  auto reader = watched_by_this_thread(pair);
  Engine& engine = Engine::instance();
  engine.consumer_waits();  // as a consumer arming its CQ: the engine thread watches now
  for (int i = 0; i < 20; ++i) {
    pair.send_byte(static_cast<uint8_t>(i));
    ASSERT_TRUE(wait_until([&] { return reader->received_.load() == i + 1; }))
        << "the engine thread did not take byte " << i;
  }
  engine.remove(pair.fd[0]);
  EXPECT_EQ(reader->on_watched_.load(), 0);  // this thread never polled
  EXPECT_FALSE(reader->out_of_order_);
}

TEST(TcpEngine, AHandlerRunsOnOneThreadAtATimeAndLosesNoEvent) {
  SocketPair pair;
  auto reader = std::make_shared<ByteReader>(pair.fd[0]);
  Engine& engine = Engine::instance();
  ASSERT_TRUE(engine.add(pair.fd[0], EPOLLIN, reader));
  constexpr int kBytes = 2000, kPosts = 50;
  std::atomic<bool> stop{false};
  std::vector<std::thread> pollers;
  for (int t = 0; t < 2; ++t)
    pollers.emplace_back([&] {
      while (!stop.load()) engine.progress();
    });
  for (int i = 0; i < kBytes; ++i) {
    pair.send_byte(static_cast<uint8_t>(i));
    if (i % (kBytes / kPosts) == 0) engine.post(reader);
  }
  const bool all = wait_until([&] { return reader->received_.load() == kBytes; });
  // Posts run on the engine thread; every one that was not merged with a pending one runs.
  const bool posts = wait_until([&] { return reader->posted_.load() > 0; });
  stop = true;
  for (auto& t : pollers) t.join();
  engine.remove(pair.fd[0]);
  EXPECT_TRUE(all) << reader->received_.load() << " of " << kBytes << " bytes handled";
  EXPECT_TRUE(posts);
  EXPECT_LE(reader->posted_.load(), kPosts);
  EXPECT_FALSE(reader->overlapped_.load()) << "the handler ran on two threads at once";
  EXPECT_FALSE(reader->out_of_order_);
}

TEST(TcpEngine, NoEventRunsAfterRemoveReturns) {
  Engine& engine = Engine::instance();
  for (int round = 0; round < 50; ++round) {
    SocketPair pair;
    auto reader = std::make_shared<ByteReader>(pair.fd[0]);
    ASSERT_TRUE(engine.add(pair.fd[0], EPOLLIN, reader));
    std::atomic<bool> stop{false};
    std::thread poller([&] {
      while (!stop.load()) engine.progress();
    });
    for (int i = 0; i < 20; ++i) pair.send_byte(static_cast<uint8_t>(i));
    engine.remove(pair.fd[0]);
    const int seen = reader->received_.load();
    EXPECT_EQ(reader->inside_.load(), 0) << "round " << round;
    for (int i = 0; i < 5; ++i) pair.send_byte(0xEE);
    std::this_thread::sleep_for(2ms);
    stop = true;
    poller.join();
    EXPECT_EQ(reader->received_.load(), seen) << "round " << round << ": ran after remove()";
  }
}

}  // namespace
}  // namespace softndk::fabric::tcp
