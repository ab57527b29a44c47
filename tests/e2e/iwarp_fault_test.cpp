// Faults on the iWARP fabric between processes and hosts: the peer process killed or
// stopped in the middle of sends, writes and reads, and the link between two hosts
// (network namespaces joined by a veth pair) cut and restored. The survivor keeps requests
// of every kind in flight and counts their completions by request: every one completes
// exactly once with its status (none lost, none twice), the disconnect event fires once,
// nothing hangs, posting stays bounded in time and memory while the peer stalls, and a new
// connection works afterwards.
#include <net/if.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "netns.hpp"
#include "process.hpp"
#include "remote.hpp"

namespace {

using namespace e2e;
using Clock = std::chrono::steady_clock;

constexpr ULONG kMessage = 4096;     // a send, and each receive of the peer
constexpr ULONG kChunk = 32 * 1024;  // a write or a read
constexpr int kPeerReceives = 48;
constexpr uint64_t kInFlight = 32;   // the survivor's requests outstanding
constexpr uint64_t kQpInitiatorDepth = 64;  // as e2e::Side creates its QP

// ---------------------------------------------------------------------- the peer --

// Accepts one connection offering its region, keeps kPeerReceives receives posted
// (reposting each as it completes) and serves writes and reads, until the connection ends
// or the process is killed. Stopped with SIGSTOP, it is a stalled peer.
TEST(FaultPeer, Server) {
  if (role_report_fd() < 0) GTEST_SKIP() << "the peer of the IwarpFaults tests";
  Side server;
  Incoming incoming;
  NDK_LISTENER* listener = nullptr;
  NDK_CONNECTOR* connector = nullptr;
  ASSERT_NO_FATAL_FAILURE(
      listen_and_take_request(server, role_host(), SOFTNDK_COMPLETION_PROVIDER_THREAD, listener, incoming, connector));
  for (uintptr_t i = 0; i < kPeerReceives; ++i) {
    NDK_SGE rx = server.sge(i * kMessage, kMessage);
    ASSERT_EQ(server.qp->Dispatch->NdkReceive(server.qp, reinterpret_cast<PVOID>(i), &rx, 1), STATUS_SUCCESS);
  }
  Disconnects disconnects;
  ASSERT_NO_FATAL_FAILURE(accept_with_offer(server, connector, disconnects));
  for (bool serving = true; serving && disconnects.count == 0;) {
    NDK_RESULT_EX results[16];
    const ULONG got = server.cq->Dispatch->NdkGetCqResultsEx(server.cq, results, 16);
    for (ULONG i = 0; i < got && serving; ++i) {
      serving = results[i].Status == STATUS_SUCCESS;
      const uintptr_t slot = reinterpret_cast<uintptr_t>(results[i].RequestContext);
      NDK_SGE rx = server.sge(slot * kMessage, kMessage);
      if (serving) serving = server.qp->Dispatch->NdkReceive(server.qp, results[i].RequestContext, &rx, 1) == STATUS_SUCCESS;
    }
    if (got == 0) std::this_thread::sleep_for(50us);
  }
  close(connector);
  close(listener);
  server.close_all();
}

// ------------------------------------------------------------------ the survivor --

// One connection of the survivor, keeping up to kInFlight requests outstanding: sends,
// writes and reads in turn, each request's context its number; every completion counted.
class Traffic {
 public:
  void connect(const Host& host, const std::string& destination, uint16_t port) {
    ASSERT_NO_FATAL_FAILURE(side_.open(if_nametoindex(host.ifname.c_str()), SOFTNDK_COMPLETION_INLINE, kRemoteAccess,
                                       SOFTNDK_FABRIC_TCP));
    ASSERT_NO_FATAL_FAILURE(connect_to_server(side_, host, destination, port, connector_, offer_, &disconnects_));
  }
  ~Traffic() {
    close(connector_);
    side_.close_all();
  }

  // Posts while fewer than the limit are outstanding (unless `post` is false or the
  // connection failed), then polls once.
  void step(bool post = true) {
    while (post && !failed_ && in_flight() < limit_) {
      const uint64_t n = posted_;
      const uint64_t slot = n % 8;
      const auto context = reinterpret_cast<PVOID>(n + 1);
      NDK_QP* qp = side_.qp;
      const auto start = Clock::now();
      NTSTATUS status;
      if (n % 3 == 0) {
        NDK_SGE s = side_.sge(slot * kMessage, kMessage);
        status = qp->Dispatch->NdkSend(qp, context, &s, 1, 0);
      } else if (n % 3 == 1) {
        NDK_SGE s = side_.sge(256 * 1024 + slot * kChunk, kChunk);
        status = qp->Dispatch->NdkWrite(qp, context, &s, 1, offer_.address + 512 * 1024 + slot * kChunk, offer_.token, 0);
      } else {
        NDK_SGE s = side_.sge(512 * 1024 + slot * kChunk, kChunk);
        status = qp->Dispatch->NdkRead(qp, context, &s, 1, offer_.address + 512 * 1024 + slot * kChunk, offer_.token, 0);
      }
      longest_post_ = std::max(longest_post_, Clock::now() - start);
      if (status == STATUS_INSUFFICIENT_RESOURCES) {  // the initiator queue is full (R091)
        ++refused_;
        break;
      }
      if (status != STATUS_SUCCESS) {  // the QP left the connected state: nothing posted
        failed_ = true;
        break;
      }
      ++posted_;
      completions_.push_back(0);
    }
    NDK_RESULT_EX results[32];
    const ULONG got = side_.cq->Dispatch->NdkGetCqResultsEx(side_.cq, results, 32);
    for (ULONG i = 0; i < got; ++i) {
      const uint64_t number = reinterpret_cast<uintptr_t>(results[i].RequestContext);
      if (number == 0 || number > posted_) {
        ++strangers_;
        continue;
      }
      ++completions_[number - 1];
      ++completed_;
      ++statuses_[results[i].Status];
      if (results[i].Status != STATUS_SUCCESS) failed_ = true;
    }
  }

  // Steps until `done()` or `limit`; whether `done()` came true.
  template <class F>
  bool run_until(F&& done, std::chrono::milliseconds limit, bool post = true) {
    for (const auto end = Clock::now() + limit; !done();) {
      if (Clock::now() > end) return false;
      step(post);
    }
    return true;
  }

  uint64_t in_flight() const { return posted_ - completed_; }
  // How many requests step() keeps outstanding (beyond the QP's initiator depth: until
  // the queue refuses).
  void set_limit(uint64_t limit) { limit_ = limit; }
  uint64_t succeeded() const { return statuses_.count(STATUS_SUCCESS) ? statuses_.at(STATUS_SUCCESS) : 0; }
  // Requests posted that never completed, completed more than once, or completions naming no request.
  uint64_t lost() const { return std::count(completions_.begin(), completions_.end(), 0); }
  uint64_t twice() const {
    return std::count_if(completions_.begin(), completions_.end(), [](uint8_t c) { return c > 1; }) + strangers_;
  }
  int disconnects() const { return disconnects_.count; }
  bool failed() const { return failed_; }
  uint64_t refused() const { return refused_; }
  Clock::duration longest_post() const { return longest_post_; }
  const std::map<NTSTATUS, uint64_t>& statuses() const { return statuses_; }

  std::string summary() const {
    std::ostringstream out;
    out << "posted " << posted_ << ", completed " << completed_ << " (";
    for (const auto& [status, count] : statuses_) out << std::hex << "0x" << status << std::dec << ": " << count << " ";
    out << "), lost " << lost() << ", twice " << twice() << ", refused posts " << refused_ << ", disconnects "
        << disconnects();
    return out.str();
  }

 private:
  Side side_;
  NDK_CONNECTOR* connector_ = nullptr;
  Offer offer_{};
  Disconnects disconnects_;
  uint64_t posted_ = 0, completed_ = 0, refused_ = 0, strangers_ = 0;
  uint64_t limit_ = kInFlight;
  bool failed_ = false;
  std::vector<uint8_t> completions_;
  std::map<NTSTATUS, uint64_t> statuses_;
  Clock::duration longest_post_{};
};

// What a request flushed or failed by the end of its connection may complete with.
bool end_of_connection_status(NTSTATUS status) {
  return status == STATUS_SUCCESS || status == STATUS_CANCELLED || status == STATUS_CONNECTION_ABORTED ||
         status == STATUS_CONNECTION_RESET || status == STATUS_IO_TIMEOUT;
}

void expect_every_request_completed_once(const Traffic& t) {
  EXPECT_EQ(t.in_flight(), 0u) << t.summary();
  EXPECT_EQ(t.lost(), 0u) << t.summary();
  EXPECT_EQ(t.twice(), 0u) << t.summary();
  for (const auto& [status, count] : t.statuses())
    EXPECT_TRUE(end_of_connection_status(status)) << "status 0x" << std::hex << status << ": " << t.summary();
}

uint16_t port_of(Child& peer) { return static_cast<uint16_t>(std::atoi(peer.read_line(10s).c_str())); }

long resident_kib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

TEST(IwarpFaults, PeerKilledInTheMiddleOfSendsWritesAndReads) {
  Child peer("FaultPeer.Server", {});
  const uint16_t port = port_of(peer);
  ASSERT_NE(port, 0) << "the peer did not report its port";
  Traffic t;
  ASSERT_NO_FATAL_FAILURE(t.connect(Host{}, "127.0.0.1", port));
  ASSERT_TRUE(t.run_until([&] { return t.succeeded() >= 300; }, 10s)) << t.summary();
  ASSERT_FALSE(t.failed()) << t.summary();
  // Stopped first, so that requests of every kind are surely in flight when it dies.
  ASSERT_TRUE(peer.signal(SIGSTOP));
  ASSERT_TRUE(t.run_until([&] { return t.in_flight() >= kInFlight; }, 5s)) << t.summary();
  ASSERT_TRUE(peer.signal(SIGKILL));
  // Keep posting until the survivor notices, then until everything outstanding completed.
  ASSERT_TRUE(t.run_until([&] { return t.disconnects() > 0 && t.in_flight() == 0; }, 10s))
      << "the survivor did not finish: " << t.summary();
  std::printf("after SIGKILL of the peer: %s\n", t.summary().c_str());
  EXPECT_EQ(t.disconnects(), 1);
  EXPECT_TRUE(t.failed()) << "nothing was in flight when the peer died: " << t.summary();
  expect_every_request_completed_once(t);
}

TEST(IwarpFaults, StalledPeerKeepsPostingBoundedThenCompletesWhenItResumes) {
  Child peer("FaultPeer.Server", {});
  const uint16_t port = port_of(peer);
  ASSERT_NE(port, 0) << "the peer did not report its port";
  Traffic t;
  ASSERT_NO_FATAL_FAILURE(t.connect(Host{}, "127.0.0.1", port));
  ASSERT_TRUE(t.run_until([&] { return t.succeeded() >= 200; }, 10s)) << t.summary();
  ASSERT_TRUE(peer.signal(SIGSTOP));
  // The survivor keeps posting for 2 s against a peer that neither reads nor answers: its
  // initiator queue fills and further posts are refused at once (R091, R065); nothing is
  // buffered beyond the queue (sends and writes are sent from the consumer's memory).
  const long before = resident_kib();
  const uint64_t completed_before = t.succeeded();
  t.set_limit(UINT64_MAX);
  t.run_until([] { return false; }, 2s);
  t.set_limit(kInFlight);
  const long grown = resident_kib() - before;
  std::printf("while the peer was stopped: %s; longest post %.3f ms; resident memory grew %ld KiB\n",
              t.summary().c_str(), std::chrono::duration<double, std::milli>(t.longest_post()).count(), grown);
  EXPECT_GT(t.refused(), 0u) << "the queue never filled: " << t.summary();
  EXPECT_LE(t.in_flight(), kQpInitiatorDepth);
  EXPECT_LT(t.longest_post(), 100ms) << "a post waited for the stalled peer";
  EXPECT_LT(grown, 8 * 1024) << "the survivor buffered while its peer stalled";
  EXPECT_LE(t.succeeded() - completed_before, kQpInitiatorDepth) << "completions while the peer was stopped";
  ASSERT_TRUE(peer.signal(SIGCONT));
  // Resumed: everything outstanding completes successfully, and traffic goes on.
  ASSERT_TRUE(t.run_until([&] { return t.in_flight() == 0; }, 10s, /*post=*/false)) << t.summary();
  const uint64_t resumed = t.succeeded();
  ASSERT_TRUE(t.run_until([&] { return t.succeeded() >= resumed + 100; }, 10s)) << t.summary();
  ASSERT_TRUE(t.run_until([&] { return t.in_flight() == 0; }, 10s, /*post=*/false)) << t.summary();
  EXPECT_EQ(t.disconnects(), 0);
  EXPECT_FALSE(t.failed()) << t.summary();
  expect_every_request_completed_once(t);
}

// The survivor of a cut link, in its own namespace: runs traffic, reports "running", keeps
// it up until the parent says "cut", reports what happened when the connection died, then
// connects again to the port the parent names ("again PORT") and moves traffic.
TEST(FaultPeer, Survivor) {
  if (role_report_fd() < 0) GTEST_SKIP() << "the survivor of IwarpFaults.LinkCut";
  const Host host = role_host();
  const std::string destination = std::getenv("SOFTNDK_TEST_DESTINATION");
  {
    Traffic t;
    ASSERT_NO_FATAL_FAILURE(t.connect(host, destination, static_cast<uint16_t>(std::atoi(std::getenv("SOFTNDK_TEST_PORT")))));
    ASSERT_TRUE(t.run_until([&] { return t.succeeded() >= 200; }, 10s)) << t.summary();
    ASSERT_TRUE(report_line("running"));
    std::string command;
    ASSERT_TRUE(t.run_until([&] { return !(command = role_read_line(0ms)).empty(); }, 20s));
    ASSERT_EQ(command, "cut");
    const auto cut = Clock::now();
    ASSERT_TRUE(t.run_until([&] { return t.disconnects() > 0 && t.in_flight() == 0; }, 30s)) << t.summary();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - cut).count();
    ASSERT_TRUE(report_line("dead " + std::to_string(ms) + " lost " + std::to_string(t.lost()) + " twice " +
                            std::to_string(t.twice()) + " failed " + std::to_string(t.failed())));
    std::printf("after the cut: %s\n", t.summary().c_str());
    expect_every_request_completed_once(t);
  }
  const std::string again = role_read_line(20s);
  ASSERT_EQ(again.rfind("again ", 0), 0u) << again;
  Traffic t;
  ASSERT_NO_FATAL_FAILURE(t.connect(host, destination, static_cast<uint16_t>(std::atoi(again.c_str() + 6))));
  ASSERT_TRUE(t.run_until([&] { return t.succeeded() >= 200; }, 10s)) << t.summary();
  ASSERT_TRUE(t.run_until([&] { return t.in_flight() == 0; }, 10s, /*post=*/false)) << t.summary();
  EXPECT_FALSE(t.failed()) << t.summary();
  ASSERT_TRUE(report_line("again ok"));
}

TEST(IwarpFaults, LinkCutBetweenTwoHostsIsDetectedWithinTheDeadPeerTime) {
  NetnsPair hosts;
  if (!hosts.available()) GTEST_SKIP() << hosts.why();
  constexpr int kDeadPeerMs = 2000;  // iwarp_dead_peer_ms for the survivor
  const auto host_env = [](int i) {
    return std::vector<std::string>{std::string("SOFTNDK_TEST_IFNAME=") + NetnsPair::kVeth[i],
                                    std::string("SOFTNDK_TEST_ADDRESS=") + NetnsPair::kAddress[i]};
  };
  Child peer("FaultPeer.Server", host_env(0), hosts.name(0));
  const uint16_t port = port_of(peer);
  ASSERT_NE(port, 0) << "the peer did not report its port";
  std::vector<std::string> env = host_env(1);
  env.push_back(std::string("SOFTNDK_TEST_DESTINATION=") + NetnsPair::kAddress[0]);
  env.push_back("SOFTNDK_TEST_PORT=" + std::to_string(port));
  env.push_back("SOFTNDK_IWARP_DEAD_PEER_MS=" + std::to_string(kDeadPeerMs));
  Child survivor("FaultPeer.Survivor", env, hosts.name(1));
  ASSERT_EQ(survivor.read_line(15s), "running");
  ASSERT_TRUE(hosts.set_link(false));
  ASSERT_TRUE(survivor.write_line("cut"));
  const std::string dead = survivor.read_line(40s);
  int ms = -1, lost = -1, twice = -1, failed = -1;
  ASSERT_EQ(std::sscanf(dead.c_str(), "dead %d lost %d twice %d failed %d", &ms, &lost, &twice, &failed), 4) << dead;
  std::printf("the survivor declared its peer dead %d ms after the cut (iwarp_dead_peer_ms %d)\n", ms, kDeadPeerMs);
  EXPECT_EQ(lost, 0);
  EXPECT_EQ(twice, 0);
  EXPECT_EQ(failed, 1) << "requests were in flight: some must have been flushed";
  EXPECT_LE(ms, kDeadPeerMs + 3000);
  // Restored: a new connection works (to a new peer: the old one still waits for its own).
  ASSERT_TRUE(hosts.set_link(true));
  peer.signal(SIGKILL);
  Child again("FaultPeer.Server", host_env(0), hosts.name(0));
  const uint16_t port2 = port_of(again);
  ASSERT_NE(port2, 0);
  ASSERT_TRUE(survivor.write_line("again " + std::to_string(port2)));
  EXPECT_EQ(survivor.read_line(20s), "again ok");
  ASSERT_TRUE(survivor.wait(10s));
  EXPECT_EQ(survivor.exit_status(), 0);
}

TEST(IwarpFaults, StaleNamespacesOfAKilledRunAreRemoved) {
  // A namespace named as a run whose process is gone would name it.
  const pid_t gone = fork();
  if (gone == 0) _exit(0);
  ASSERT_GT(gone, 0);
  int status = 0;
  ASSERT_EQ(waitpid(gone, &status, 0), gone);
  const std::string stale = "sndk-" + std::to_string(gone) + "-0-a";
  if (run_quietly({NetnsPair::kIp, "netns", "add", stale}) != 0) GTEST_SKIP() << "cannot create a network namespace";
  {
    NetnsPair hosts;  // removes it before making its own
    std::string list;
    ASSERT_EQ(run_quietly({NetnsPair::kIp, "netns", "list"}, &list), 0);
    EXPECT_EQ(list.find(stale), std::string::npos) << "the stale namespace was kept";
    EXPECT_NE(list.find(hosts.name(0)), std::string::npos);
  }
  std::string list;
  ASSERT_EQ(run_quietly({NetnsPair::kIp, "netns", "list"}, &list), 0);
  EXPECT_EQ(list.find("sndk-" + std::to_string(getpid())), std::string::npos) << "this run left a namespace";
  run_quietly({NetnsPair::kIp, "netns", "del", stale});  // in case the check above failed
}

}  // namespace
