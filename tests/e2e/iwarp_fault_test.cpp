// Faults on the iWARP fabric between processes and hosts: the peer process killed or
// stopped in the middle of sends, writes and reads, and the link between two hosts
// (network namespaces joined by a veth pair) cut and restored. The survivor keeps requests
// of every kind in flight and counts their completions by request: every one completes
// exactly once with its status (none lost, none twice), the disconnect event fires once,
// nothing hangs, posting stays bounded in time and memory while the peer stalls, and a new
// connection works afterwards.
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <span>
#include <algorithm>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "core/kernel_sync.hpp"
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
// Send credits, as an RDMA consumer keeps them: the peer counts the receives it reposted
// in one byte of its region (mod 256: a byte cannot be read torn), and the survivor posts
// a send only while the peer has a receive for it, reading that byte when out of credit.
// Without them a fast survivor overruns a peer whose consumer is slow to repost, and the
// peer rightly ends the connection (no receive posted).
constexpr size_t kCreditOffset = 1020 * 1024;

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
  uint64_t received = 0;
  NTSTATUS ended_by = STATUS_SUCCESS;  // the first failed receive or repost
  for (bool serving = true; serving && disconnects.count == 0;) {
    NDK_RESULT_EX results[16];
    const ULONG got = server.cq->Dispatch->NdkGetCqResultsEx(server.cq, results, 16);
    for (ULONG i = 0; i < got && serving; ++i) {
      ended_by = results[i].Status;
      const uintptr_t slot = reinterpret_cast<uintptr_t>(results[i].RequestContext);
      NDK_SGE rx = server.sge(slot * kMessage, kMessage);
      if (ended_by == STATUS_SUCCESS) ended_by = server.qp->Dispatch->NdkReceive(server.qp, results[i].RequestContext, &rx, 1);
      serving = ended_by == STATUS_SUCCESS;
      if (!serving) break;
      softndk::write_exposed([&] { ++server.buffer[kCreditOffset]; });
      ++received;
    }
    if (got == 0) std::this_thread::sleep_for(50us);
  }
  // Why it ended, for the log of a test that failed.
  std::printf("the peer served %llu sends; it ended with receive status 0x%lx, disconnect reason 0x%lx (%d events)\n",
              static_cast<unsigned long long>(received), static_cast<unsigned long>(ended_by),
              static_cast<unsigned long>(disconnects.reason.load()), disconnects.count.load());
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
      Kind kind = static_cast<Kind>(turn_ % 3);
      if (kind == kSend && sends_ >= reposted_ + kPeerReceives) kind = credit_asked_ ? kWrite : kCreditRead;
      const auto start = Clock::now();
      NTSTATUS status;
      if (kind == kCreditRead) {
        NDK_SGE s = side_.sge(kCreditOffset, 1);
        status = qp->Dispatch->NdkRead(qp, context, &s, 1, offer_.address + kCreditOffset, offer_.token, 0);
      } else if (kind == kSend) {
        NDK_SGE s = side_.sge(slot * kMessage, kMessage);
        status = qp->Dispatch->NdkSend(qp, context, &s, 1, 0);
      } else if (kind == kWrite) {
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
      ++turn_;
      completions_.push_back(0);
      sends_ += kind == kSend;
      if (kind == kCreditRead) credit_asked_ = true, credit_read_ = posted_;
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
      if (number == credit_read_ && results[i].Status == STATUS_SUCCESS) {
        // The true count is at least what we knew and at most sends_ (< 256 more).
        reposted_ += static_cast<uint8_t>(side_.buffer[kCreditOffset] - static_cast<uint8_t>(reposted_));
        credit_asked_ = false;
      }
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
        << disconnects() << " (reason 0x" << std::hex << disconnects_.reason.load() << std::dec << ")";
    return out.str();
  }

 private:
  Side side_;
  NDK_CONNECTOR* connector_ = nullptr;
  Offer offer_{};
  Disconnects disconnects_;
  enum Kind { kSend, kWrite, kRead, kCreditRead };
  uint64_t posted_ = 0, completed_ = 0, refused_ = 0, strangers_ = 0;
  uint64_t turn_ = 0;      // sends, writes and reads in turn
  uint64_t sends_ = 0;     // posted
  uint64_t reposted_ = 0;  // the peer's reposted receives, as last read
  bool credit_asked_ = false;
  uint64_t credit_read_ = 0;  // the number of the credit read in flight
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
  ASSERT_TRUE(peer.stop(5s)) << "the peer did not stop";
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
  ASSERT_TRUE(peer.stop(5s)) << "the peer did not stop";
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

// ------------------------------------------------------------- many connections --

constexpr int kConnections = 256;
constexpr ULONG kSlot = 2048;  // each connection's share of the server's region

// Serves kConnections connections at once on one adapter (one QP each, one CQ): keeps 4
// receives posted per QP and serves writes and reads, until every one disconnected.
TEST(FaultPeer, ManyServer) {
  if (role_report_fd() < 0) GTEST_SKIP() << "the peer of IwarpFaults.ManyConnections";
  Side server;
  server.cq_depth = 8 * kConnections;
  Incoming incoming;
  NDK_LISTENER* listener = nullptr;
  NDK_CONNECTOR* first = nullptr;
  ASSERT_NO_FATAL_FAILURE(
      listen_and_take_request(server, role_host(), SOFTNDK_COMPLETION_PROVIDER_THREAD, listener, incoming, first));
  std::vector<NDK_QP*> qps;
  std::vector<NDK_CONNECTOR*> connectors;
  std::vector<Disconnects> disconnects(kConnections);
  auto receive = [&](uintptr_t index, uintptr_t slot) {
    NDK_SGE rx = server.sge((index * 4 + slot) * 256, 256);
    return qps[index]->Dispatch->NdkReceive(qps[index], reinterpret_cast<PVOID>(slot), &rx, 1);
  };
  for (uintptr_t i = 0; i < kConnections; ++i) {
    NDK_CONNECTOR* connector = i == 0 ? first : incoming.next();
    ASSERT_NE(connector, nullptr) << "connect request " << i;
    connectors.push_back(connector);
    qps.push_back(server.new_qp(reinterpret_cast<PVOID>(i), 8));
    ASSERT_NE(qps.back(), nullptr);
    for (uintptr_t slot = 0; slot < 4; ++slot) ASSERT_EQ(receive(i, slot), STATUS_SUCCESS);
    ASSERT_NO_FATAL_FAILURE(accept_with_offer(server, connector, disconnects[i], qps.back()));
  }
  const auto connected = [&] {
    return std::any_of(disconnects.begin(), disconnects.end(), [](const Disconnects& d) { return d.count == 0; });
  };
  for (const auto end = Clock::now() + 60s; connected() && Clock::now() < end;) {
    NDK_RESULT_EX results[64];
    const ULONG got = server.cq->Dispatch->NdkGetCqResultsEx(server.cq, results, 64);
    for (ULONG k = 0; k < got; ++k) {
      if (results[k].Status != STATUS_SUCCESS || results[k].Type != NdkOperationTypeReceive) continue;
      ASSERT_EQ(receive(reinterpret_cast<uintptr_t>(results[k].QPContext),
                        reinterpret_cast<uintptr_t>(results[k].RequestContext)),
                STATUS_SUCCESS);
    }
    if (got == 0) std::this_thread::sleep_for(50us);
  }
  for (NDK_CONNECTOR*& c : connectors) close(c);
  for (NDK_QP*& qp : qps) close(qp);
  close(listener);
  server.close_all();
}

// A raw TCP client to `port` that sends `bytes` and keeps the connection open.
struct RawClient {
  int fd = -1;
  RawClient(uint16_t port, std::span<const uint8_t> bytes) {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    SOCKADDR_INET to = ipv4("127.0.0.1", port);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to.Ipv4)) != 0 ||
        ::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
      ::close(fd);
      fd = -1;
    }
  }
  ~RawClient() {
    if (fd >= 0) ::close(fd);
  }
  // Whether the server closed the connection within `limit`.
  bool closed_by_peer(std::chrono::milliseconds limit) const {
    for (const auto end = Clock::now() + limit; Clock::now() < end;) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) != 1) continue;
      uint8_t sink[256];
      if (::read(fd, sink, sizeof sink) <= 0) return true;
    }
    return false;
  }
};

// 256 connections between two processes at once, next to two peers that misbehave: one
// sends garbage instead of an MPA Request, one stalls halfway through its Request. The
// server closes the first, and every one of the 256 moves verified data regardless.
TEST(IwarpFaults, ManyConnectionsBetweenTwoProcessesWithMisbehavingPeersBeside) {
  Child peer("FaultPeer.ManyServer", {});
  const uint16_t port = port_of(peer);
  ASSERT_NE(port, 0) << "the peer did not report its port";
  const std::vector<uint8_t> garbage(64, 0x5A);
  const uint8_t half_request[] = {'M', 'P', 'A', ' ', 'I', 'D', ' ', 'R', 'e', 'q'};
  RawClient staller(port, half_request);
  ASSERT_GE(staller.fd, 0);

  Side client;
  client.cq_depth = 8 * kConnections;
  ASSERT_NO_FATAL_FAILURE(client.open(if_nametoindex("lo"), SOFTNDK_COMPLETION_INLINE, kRemoteAccess, SOFTNDK_FABRIC_TCP));
  std::vector<NDK_QP*> qps;
  std::vector<NDK_CONNECTOR*> connectors(kConnections, nullptr);
  std::vector<Disconnects> disconnects(kConnections);
  Offer offer{};
  for (uintptr_t i = 0; i < kConnections; ++i) {
    qps.push_back(client.new_qp(reinterpret_cast<PVOID>(i), 8));
    ASSERT_NE(qps.back(), nullptr);
    ASSERT_NO_FATAL_FAILURE(
        connect_to_server(client, Host{}, "127.0.0.1", port, connectors[i], offer, &disconnects[i], qps.back()));
  }
  RawClient garbler(port, garbage);
  ASSERT_GE(garbler.fd, 0);
  // Each connection: a write of its pattern into its slot of the server's region, a read
  // of it back, and a send; three rounds, every byte of every read checked.
  for (int round = 0; round < 3; ++round) {
    for (uintptr_t i = 0; i < kConnections; ++i) {
      unsigned char* out = client.buffer.data() + i * kSlot;
      for (ULONG k = 0; k < kSlot; ++k) out[k] = static_cast<unsigned char>(k * 7 + i * 31 + round);
      std::memset(client.buffer.data() + 512 * 1024 + i * kSlot, 0, kSlot);
      NDK_SGE w = client.sge(i * kSlot, kSlot), r = client.sge(512 * 1024 + i * kSlot, kSlot), m = client.sge(i * kSlot, 200);
      const UINT64 remote = offer.address + 256 * 1024 + i * kSlot;
      ASSERT_EQ(qps[i]->Dispatch->NdkWrite(qps[i], nullptr, &w, 1, remote, offer.token, 0), STATUS_SUCCESS);
      ASSERT_EQ(qps[i]->Dispatch->NdkRead(qps[i], nullptr, &r, 1, remote, offer.token, 0), STATUS_SUCCESS);
      ASSERT_EQ(qps[i]->Dispatch->NdkSend(qps[i], nullptr, &m, 1, 0), STATUS_SUCCESS);
    }
    std::vector<int> done(kConnections, 0);
    size_t total = 0;
    for (const auto end = Clock::now() + 20s; total < 3u * kConnections && Clock::now() < end;) {
      NDK_RESULT_EX results[64];
      const ULONG got = client.cq->Dispatch->NdkGetCqResultsEx(client.cq, results, 64);
      for (ULONG k = 0; k < got; ++k) {
        ASSERT_EQ(results[k].Status, STATUS_SUCCESS) << "round " << round;
        ++done[reinterpret_cast<uintptr_t>(results[k].QPContext)];
      }
      total += got;
    }
    ASSERT_EQ(total, 3u * kConnections) << "round " << round << ": completions missing";
    for (uintptr_t i = 0; i < kConnections; ++i) {
      ASSERT_EQ(done[i], 3) << "connection " << i;
      ASSERT_EQ(std::memcmp(client.buffer.data() + 512 * 1024 + i * kSlot, client.buffer.data() + i * kSlot, kSlot), 0)
          << "connection " << i << ", round " << round;
    }
  }
  EXPECT_TRUE(garbler.closed_by_peer(5s)) << "the server kept a connection that sent garbage";
  for (const Disconnects& d : disconnects) EXPECT_EQ(d.count, 0);
  for (uintptr_t i = 0; i < kConnections; ++i) {
    Waiter disconnected;
    ASSERT_EQ(disconnected.wait(connectors[i]->Dispatch->NdkDisconnect(connectors[i], &Waiter::on_request, &disconnected)),
              STATUS_SUCCESS);
    close(connectors[i]);
    close(qps[i]);
  }
  client.close_all();
  ASSERT_TRUE(peer.wait(30s)) << "the server did not finish";
  EXPECT_EQ(peer.exit_status(), 0);
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
