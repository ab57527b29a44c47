// ndkping: the NDK ping. Two endpoints connect with private data (each side checks what
// the other sent), then every iteration:
//   1. the client sends a message of SIZE bytes; the server takes it and sends it back
//      (an echo); both copies are checked byte for byte: the round trip time (rtt);
//   2. the client RDMA-writes SIZE bytes of a known pattern into the server's memory; the
//      server checks them;
//   3. the client RDMA-reads SIZE bytes of another pattern from the server's memory and
//      checks them.
// Each pattern is new per iteration and each target is filled with its complement first,
// so a transfer that did not happen cannot pass. One line per iteration, a summary at
// the end (or on SIGINT/SIGTERM).
//
// Both ends live in this process: on two hosts of the in-process fabric, or (--fabric tcp)
// on the host's loopback interface with the iWARP fabric, through the kernel's TCP.
// --server and --client (two processes) are not available yet.
//
// Exit status: 0 every iteration verified; 1 a mismatch, a lost reply (timeout), a
// failed request, a refused or timed-out connection, or a set-up failure; 2 a bad command
// line (or a mode this build cannot run).
#include <arpa/inet.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/cli.hpp"
#include "ndk/softndk.h"
#include "perf/pair.hpp"
#include "perf/stop.hpp"

namespace {

namespace perf = softndk::perf;
using Clock = std::chrono::steady_clock;

constexpr const char* kTool = "ndkping";
constexpr uint64_t kMaxSize = 16ull << 20;

// Message kinds, each with its own pattern.
enum Kind : uint64_t { kPing = 1, kWrite = 2, kRead = 3 };

uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The known pattern of (session, seq, kind), optionally complemented (the poison that
// fills a target before the transfer).
void fill(uint8_t* p, size_t size, uint64_t session, uint64_t seq, uint64_t kind, bool complement = false) {
  uint64_t state = session ^ (seq << 2 | kind);
  for (size_t i = 0; i < size; i += 8) {
    uint64_t w = splitmix(state);
    if (complement) w = ~w;
    std::memcpy(p + i, &w, std::min<size_t>(8, size - i));
  }
}

struct Mismatch {
  size_t offset;
  uint8_t found, expected;
};

std::optional<Mismatch> check(const uint8_t* p, size_t size, uint64_t session, uint64_t seq, uint64_t kind) {
  uint64_t state = session ^ (seq << 2 | kind);
  for (size_t i = 0; i < size; i += 8) {
    uint64_t w = splitmix(state);
    size_t n = std::min<size_t>(8, size - i);
    if (std::memcmp(p + i, &w, n) != 0) {
      uint8_t bytes[8];
      std::memcpy(bytes, &w, 8);
      for (size_t k = 0; k < n; ++k)
        if (p[i + k] != bytes[k]) return Mismatch{i + k, p[i + k], bytes[k]};
    }
  }
  return std::nullopt;
}

std::string address_text(const SOCKADDR_INET& a) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (a.si_family == AF_INET) inet_ntop(AF_INET, &a.Ipv4.sin_addr, text, sizeof(text));
  if (a.si_family == AF_INET6) inet_ntop(AF_INET6, &a.Ipv6.sin6_addr, text, sizeof(text));
  return text;
}

uint16_t port_of(const SOCKADDR_INET& a) { return ntohs(a.si_family == AF_INET ? a.Ipv4.sin_port : a.Ipv6.sin6_port); }

SOFTNDK_COMPLETION_MODE completion_mode(const std::string& name) {
  for (int m = SOFTNDK_COMPLETION_INLINE; m <= SOFTNDK_COMPLETION_MIXED; ++m)
    if (name == SoftNdkCompletionModeName(static_cast<SOFTNDK_COMPLETION_MODE>(m)))
      return static_cast<SOFTNDK_COMPLETION_MODE>(m);
  return SOFTNDK_COMPLETION_DEFAULT;
}

// min/avg/max of one measured step, in microseconds.
struct Stats {
  double min = std::numeric_limits<double>::infinity(), max = 0, sum = 0;
  uint64_t count = 0;
  void add(double us) {
    min = std::min(min, us);
    max = std::max(max, us);
    sum += us;
    ++count;
  }
  std::string text() const {
    if (count == 0) return "-";
    return fmt::format("{:.3f}/{:.3f}/{:.3f} us", min, sum / static_cast<double>(count), max);
  }
};

double us_since(Clock::time_point t) { return std::chrono::duration<double, std::micro>(Clock::now() - t).count(); }

// What can be simulated, so that the failure paths can be seen (and tested).
enum class Simulate { kNone, kRefused, kConnectTimeout, kLost, kCorrupt };

class Pinger {
 public:
  Pinger(perf::Pair& pair, const perf::SignalStop& stop, size_t size, double timeout_s, Simulate simulate,
         uint64_t session, bool quiet)
      : pair_(pair), c_(pair.client()), s_(pair.server()), stop_(stop), size_(size), stride_((size + 63) / 64 * 64),
        timeout_(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s))),
        timeout_s_(timeout_s), simulate_(simulate), session_(session), quiet_(quiet) {}

  // Posts the first receive on each side; false (and a message on stderr) on failure.
  bool start() {
    if (receive(s_, "server") && receive(c_, "client")) return true;
    fmt::print(stderr, "{}: {}\n", kTool, problem_);
    ++errors;
    return false;
  }

  // One iteration, printed (a mismatch is counted and the run goes on); false when the
  // run cannot go on: a lost echo, a timeout, a failed request, or a stop.
  bool iteration(uint64_t seq);

  uint64_t sent = 0, received = 0, mismatches = 0, errors = 0;
  Stats rtt, write, read;

 private:
  // Areas: slot 0 carries the ping and its echo, slot 1 the RDMA write and read.
  uint8_t* slot(uint8_t* area, int k) const { return area + static_cast<size_t>(k) * stride_; }

  bool receive(perf::Endpoint& e, const char* who) {
    NDK_SGE sge = e.sge(slot(e.in(), 0), size_);
    NTSTATUS status = e.qp->Dispatch->NdkReceive(e.qp, nullptr, &sge, 1);
    if (status == STATUS_SUCCESS) return true;
    problem_ = fmt::format("posting the {} receive returned {}", who, perf::status_text(status));
    return false;
  }

  enum class Wait { kDone, kTimeout, kStopped };
  // Polls for one completion; a failed one is reported as a request error.
  Wait wait(NDK_CQ* cq, NDK_RESULT& result) {
    const Clock::time_point deadline = Clock::now() + timeout_;
    for (uint64_t spins = 0;; ++spins) {
      if (cq->Dispatch->NdkGetCqResults(cq, &result, 1) == 1) return Wait::kDone;
      if ((spins & 1023) == 1023) {
        if (stop_.requested()) return Wait::kStopped;
        if (Clock::now() > deadline) return Wait::kTimeout;
      }
    }
  }

  // Waits for the completion of `what`; on failure records why and returns false.
  bool complete(NDK_CQ* cq, const char* what, NDK_RESULT& result) {
    switch (wait(cq, result)) {
      case Wait::kStopped:
        stopped_ = true;
        return false;
      case Wait::kTimeout:
        timed_out_ = true;
        problem_ = fmt::format("timeout: no {} completion within {} s", what, timeout_s_);
        return false;
      case Wait::kDone:
        break;
    }
    if (result.Status != STATUS_SUCCESS) {
      problem_ = fmt::format("the {} completed with {}", what, perf::status_text(result.Status));
      return false;
    }
    return true;
  }

  // Checks `p` against the pattern; a mismatch is described in `mismatch_`.
  void verify(const uint8_t* p, uint64_t seq, Kind kind, const char* what) {
    if (auto m = check(p, size_, session_, seq, kind)) {
      if (!mismatch_.empty()) mismatch_ += "; ";
      mismatch_ += fmt::format("MISMATCH in the {}: byte {} of {} is 0x{:02X}, expected 0x{:02X}", what, m->offset,
                               size_, m->found, m->expected);
    }
  }

  bool exchange(uint64_t seq, double* us);
  bool rdma(uint64_t seq, Kind kind, double* us);
  void verify_write(uint64_t seq);

  perf::Pair& pair_;
  perf::Endpoint& c_;
  perf::Endpoint& s_;
  const perf::SignalStop& stop_;
  const size_t size_, stride_;
  const Clock::duration timeout_;
  const double timeout_s_;
  const Simulate simulate_;
  const uint64_t session_;
  const bool quiet_;
  std::string problem_, mismatch_;
  bool stopped_ = false, timed_out_ = false;
};

// The ping and its echo. Times the round trip: from the post of the ping to the echo's
// receive completion; the checks come after.
bool Pinger::exchange(uint64_t seq, double* us) {
  NDK_RESULT r{};
  fill(slot(c_.out(), 0), size_, session_, seq, kPing);
  fill(slot(s_.in(), 0), size_, session_, seq, kPing, true);
  fill(slot(c_.in(), 0), size_, session_, seq, kPing, true);
  const Clock::time_point t0 = Clock::now();
  NDK_SGE ping = c_.sge(slot(c_.out(), 0), size_);
  NTSTATUS status = c_.qp->Dispatch->NdkSend(c_.qp, nullptr, &ping, 1, 0);
  if (status != STATUS_SUCCESS) {
    problem_ = "posting the ping send returned " + perf::status_text(status);
    return false;
  }
  ++sent;
  if (!complete(c_.send_cq, "ping send", r)) return false;
  if (!complete(s_.recv_cq, "ping receive (server)", r)) return false;
  if (r.BytesTransferred != size_) {
    problem_ = fmt::format("the server received {} bytes, not {}", r.BytesTransferred, size_);
    return false;
  }
  // The server echoes what it received, straight from its receive buffer.
  if (!(simulate_ == Simulate::kLost && seq == 2)) {
    NDK_SGE echo = s_.sge(slot(s_.in(), 0), size_);
    status = s_.qp->Dispatch->NdkSend(s_.qp, nullptr, &echo, 1, 0);
    if (status != STATUS_SUCCESS) {
      problem_ = "posting the echo send returned " + perf::status_text(status);
      return false;
    }
    if (!complete(s_.send_cq, "echo send", r)) return false;
  }
  if (!complete(c_.recv_cq, "echo receive (client)", r)) {
    if (timed_out_) problem_ = fmt::format("timeout: no echo within {} s (lost)", timeout_s_);
    return false;
  }
  *us = us_since(t0);
  ++received;
  if (r.BytesTransferred != size_) {
    problem_ = fmt::format("the client received {} bytes, not {}", r.BytesTransferred, size_);
    return false;
  }
  verify(slot(s_.in(), 0), seq, kPing, "ping as the server received it");
  verify(slot(c_.in(), 0), seq, kPing, "echo as the client received it");
  return receive(s_, "server") && receive(c_, "client");
}

// An RDMA write (client -> server memory) or read (server memory -> client) of slot 1.
bool Pinger::rdma(uint64_t seq, Kind kind, double* us) {
  const bool is_write = kind == kWrite;
  uint8_t* source = slot(is_write ? c_.out() : s_.out(), 1);
  uint8_t* target = slot(is_write ? s_.in() : c_.in(), 1);
  fill(source, size_, session_, seq, kind);
  fill(target, size_, session_, seq, kind, true);
  const char* what = is_write ? "RDMA write" : "RDMA read";
  const Clock::time_point t0 = Clock::now();
  NDK_SGE sge = c_.sge(is_write ? source : target, size_);
  const UINT64 remote = reinterpret_cast<uintptr_t>(is_write ? target : source);
  NTSTATUS status = is_write ? c_.qp->Dispatch->NdkWrite(c_.qp, nullptr, &sge, 1, remote, s_.remote_token, 0)
                             : c_.qp->Dispatch->NdkRead(c_.qp, nullptr, &sge, 1, remote, s_.remote_token, 0);
  if (status != STATUS_SUCCESS) {
    problem_ = fmt::format("posting the {} returned {}", what, perf::status_text(status));
    return false;
  }
  NDK_RESULT r{};
  if (!complete(c_.send_cq, what, r)) return false;
  *us = us_since(t0);
  // A write's completion says its source may be reused, not that it landed: on iWARP the
  // bytes may still be on the wire. The read that follows is served only after the write
  // was placed (RDMAP ordering), so the write is checked once that read completes.
  if (!is_write) verify(target, seq, kind, what);
  return true;
}

void Pinger::verify_write(uint64_t seq) {
  uint8_t* target = slot(s_.in(), 1);
  if (simulate_ == Simulate::kCorrupt && seq == 2) target[size_ / 2] ^= 0x5A;  // as a bad wire would
  verify(target, seq, kWrite, "RDMA write");
}

bool Pinger::iteration(uint64_t seq) {
  problem_.clear();
  mismatch_.clear();
  double t_rtt = 0, t_write = 0, t_read = 0;
  bool ok = exchange(seq, &t_rtt) && rdma(seq, kWrite, &t_write) && rdma(seq, kRead, &t_read);
  if (ok) verify_write(seq);
  if (stopped_) return false;  // interrupted mid-iteration: the summary says the rest
  std::string line = fmt::format("{} bytes from {}: seq={}", size_, address_text(s_.address), seq);
  if (ok) {
    rtt.add(t_rtt);
    write.add(t_write);
    read.add(t_read);
    line += fmt::format(" rtt={:.3f} us write={:.3f} us read={:.3f} us", t_rtt, t_write, t_read);
  }
  if (!mismatch_.empty()) {
    ++mismatches;
    line += " " + mismatch_;
  }
  if (!problem_.empty()) {
    if (sent == received) ++errors;  // a lost echo counts as lost, anything else as a failure
    line += " " + problem_;
    if (pair_.disconnects() > 0) line += " (the connection was terminated)";
  }
  if (!quiet_ || !mismatch_.empty() || !problem_.empty()) {
    fmt::print("{}\n", line);
    std::fflush(stdout);
  }
  return ok;
}

std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  return softndk::tools::parse(kTool, app, argc, argv);
}

int usage_error(const std::string& what) { return softndk::tools::usage_error(kTool, what); }

}  // namespace

int main(int argc, char** argv) {
  perf::SignalStop stop;  // first: every thread started later leaves SIGINT/SIGTERM to it

  CLI::App app{
      "ndkping: connect two NDK endpoints with private data, then per iteration exchange a message\n"
      "(sent and echoed back), RDMA-write and RDMA-read a known pattern, checking every byte.\n"
      "Prints one line per iteration and a summary (also on SIGINT/SIGTERM).\n"
      "Today both endpoints run in this process on two in-process hosts (192.0.2.x serving,\n"
      "198.51.100.x connecting; 2001:db8:: with --ipv6).\n"
      "Exit status: 0 all verified; 1 a mismatch, lost reply (timeout), failed request, refused\n"
      "or timed-out connection, or set-up failure; 2 a bad command line."};
  app.set_version_flag("--version", std::string("ndkping (SoftNDK) ") + SOFTNDK_VERSION_TEXT);
  uint64_t count = 0;
  uint64_t size = 64;
  double interval = 1.0;
  double timeout = 5.0;
  bool ipv6 = false, quiet = false, server = false;
  std::string mode = "default", fabric = "inproc", client, simulate = "none";
  app.add_option("-c,--count", count, "Stop after COUNT iterations (0: until interrupted)")
      ->type_name("COUNT")
      ->capture_default_str();
  app.add_option("-s,--size", size, "Bytes of each message, RDMA write and RDMA read (1 .. 16 MiB; 4K, 1M...)")
      ->type_name("SIZE")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  app.add_option("-i,--interval", interval, "Seconds between iterations (0: back to back)")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app.add_option("-W,--timeout", timeout, "Seconds to wait for a completion, and for the connection")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.001, 3600.0))
      ->capture_default_str();
  app.add_flag("-6,--ipv6", ipv6, "Connect over IPv6 (in-process: 2001:db8::/32; tcp: ::1) instead of IPv4");
  app.add_option("-m,--mode", mode,
                 "Completion mode of creates, connects and closes (default: the completion_mode tunable, "
                 "SOFTNDK_COMPLETION_MODE)")
      ->check(CLI::IsMember({"default", "inline", "caller-thread", "provider-thread", "mixed"}))
      ->capture_default_str();
  app.add_flag("-q,--quiet", quiet, "Print only the summary (and failures)");
  auto* g = "Fabric, and two processes (not available yet)";
  app.add_option("--fabric", fabric,
                 "Fabric to use: inproc (in-process hosts) or tcp (iWARP over loopback TCP); shm is not "
                 "available yet")
      ->check(CLI::IsMember({"inproc", "tcp", "shm"}))
      ->capture_default_str()
      ->group(g);
  auto* server_flag = app.add_flag("--server", server, "Serve: wait for a client to connect")->group(g);
  app.add_option("--client", client, "Connect to the ndkping server at ADDR")
      ->type_name("ADDR")
      ->excludes(server_flag)
      ->group(g);
  app.add_option("--simulate", simulate,
                 "Show a failure path: refused (the server rejects the connection), connect-timeout "
                 "(it never answers), lost (no echo for seq 2), corrupt (a byte of seq 2's RDMA write "
                 "changes after it lands)")
      ->check(CLI::IsMember({"none", "refused", "connect-timeout", "lost", "corrupt"}))
      ->group("Testing");
  if (auto code = parse(app, argc, argv)) return *code;

  if (fabric == "shm") return usage_error("fabric shm is not available yet (use --fabric inproc or tcp)");
  if (server || !client.empty())
    return usage_error(fmt::format(
        "{} (two processes) is not available yet: without --server and --client, ndkping runs both "
        "ends in this process, over --fabric inproc or tcp",
        server ? "--server" : "--client"));
  if (size == 0 || size > kMaxSize) return usage_error(fmt::format("--size {}: must be 1 .. {} bytes", size, kMaxSize));

  Simulate sim = simulate == "refused"           ? Simulate::kRefused
                 : simulate == "connect-timeout" ? Simulate::kConnectTimeout
                 : simulate == "lost"            ? Simulate::kLost
                 : simulate == "corrupt"         ? Simulate::kCorrupt
                                                 : Simulate::kNone;

  // The connection waits as long as a completion does.
  const auto timeout_ms = std::to_string(std::max<int64_t>(1, std::llround(timeout * 1000)));
  if (SoftNdkSetTunable("connect_timeout_ms", timeout_ms.c_str()) != STATUS_SUCCESS)
    return usage_error("--timeout: not accepted as connect_timeout_ms");

  // Private data both ways: a greeting with this run's nonce, and the server's answer.
  const uint64_t session = std::random_device{}() * 0x100000001ull ^ static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  const std::string hello = fmt::format("ndkping/1 hello {:016x}", session);
  const std::string welcome = fmt::format("ndkping/1 {} {:016x} size {}",
                                          sim == Simulate::kRefused ? "refused (simulated)" : "welcome", session, size);
  perf::PairOptions options;
  const size_t stride = (size + 63) / 64 * 64;
  options.area_size = 2 * stride;
  options.queue_depth = 4;
  options.completion_mode = completion_mode(mode);
  options.ipv6 = ipv6;
  options.fabric = fabric == "tcp" ? SOFTNDK_FABRIC_TCP : SOFTNDK_FABRIC_INPROC;
  options.caller_data.assign(hello.begin(), hello.end());
  options.callee_data.assign(welcome.begin(), welcome.end());
  options.server_answer = sim == Simulate::kRefused          ? perf::PairOptions::Answer::kReject
                          : sim == Simulate::kConnectTimeout ? perf::PairOptions::Answer::kIgnore
                                                             : perf::PairOptions::Answer::kAccept;
  std::unique_ptr<perf::Pair> pair;
  try {
    pair = std::make_unique<perf::Pair>(options);
  } catch (const perf::Error& e) {
    if (e.status() == STATUS_CONNECTION_REFUSED)
      fmt::print(stderr, "{}: connection refused: the server rejected the connect request ({})\n", kTool, e.what());
    else if (e.status() == STATUS_IO_TIMEOUT)
      fmt::print(stderr, "{}: connection timed out: the server did not answer within {} s ({})\n", kTool, timeout,
                 e.what());
    else
      fmt::print(stderr, "{}: cannot set up the connection: {}\n", kTool, e.what());
    return 1;
  }
  perf::Endpoint& c = pair->client();
  perf::Endpoint& s = pair->server();
  const std::string peer = address_text(s.address);

  // Each side checks the private data it got.
  auto as_text = [](const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); };
  if (as_text(s.peer_data) != hello || as_text(c.peer_data) != welcome) {
    fmt::print(stderr, "{}: private data mismatch: the server got \"{}\" (sent \"{}\"), the client got \"{}\" (sent \"{}\")\n",
               kTool, as_text(s.peer_data), hello, as_text(c.peer_data), welcome);
    return 1;
  }
  SOFTNDK_COMPLETION_MODE in_force = SOFTNDK_COMPLETION_DEFAULT;
  SoftNdkGetCompletionMode(c.adapter, &in_force, nullptr);
  fmt::print("NDKPING {} port {} from {}: {} bytes per message, RDMA write and read; {}, {} completions\n",
             peer, port_of(s.address), address_text(c.address), size,
             fabric == "tcp" ? "iWARP fabric over loopback TCP" : "in-process fabric",
             SoftNdkCompletionModeName(in_force));
  fmt::print("connected: private data verified both ways ({} bytes sent, {} bytes back)\n", hello.size(),
             welcome.size());
  std::fflush(stdout);

  Pinger pinger(*pair, stop, size, timeout, sim, session, quiet);
  const Clock::time_point start = Clock::now();
  const auto pause = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(interval));
  if (pinger.start()) {
    for (uint64_t seq = 1; count == 0 || seq <= count; ++seq) {
      if (stop.requested() || !pinger.iteration(seq)) break;
      if (count != 0 && seq == count) break;
      if (interval > 0 && !stop.sleep_for(pause)) break;
    }
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  const uint64_t lost = pinger.sent - pinger.received;
  fmt::print("\n--- {} ndkping statistics ---\n", peer);
  fmt::print("{} sent, {} received, {} lost ({:.0f}% loss), {} mismatch{}, {} failed, time {}{}\n",
             pinger.sent, pinger.received, lost,
             pinger.sent ? 100.0 * static_cast<double>(lost) / static_cast<double>(pinger.sent) : 0.0,
             pinger.mismatches, pinger.mismatches == 1 ? "" : "es", pinger.errors,
             elapsed < 1 ? fmt::format("{:.3f} ms", elapsed * 1e3) : fmt::format("{:.3f} s", elapsed), stop.requested() ? fmt::format(" (interrupted by {})", stop.signal() == SIGTERM ? "SIGTERM" : "SIGINT") : "");
  fmt::print("rtt   min/avg/max = {}\n", pinger.rtt.text());
  fmt::print("write min/avg/max = {}\n", pinger.write.text());
  fmt::print("read  min/avg/max = {}\n", pinger.read.text());
  std::fflush(stdout);

  std::vector<std::string> why;
  if (pinger.mismatches)
    why.push_back(fmt::format("{} iteration{} with mismatched data", pinger.mismatches,
                              pinger.mismatches == 1 ? "" : "s"));
  if (lost) why.push_back(fmt::format("{} echo{} lost (timeout)", lost, lost == 1 ? "" : "es"));
  if (pinger.errors)
    why.push_back(fmt::format("{} iteration{} failed (timeout or failed request)", pinger.errors,
                              pinger.errors == 1 ? "" : "s"));
  if (!why.empty()) {
    fmt::print(stderr, "{}: FAILED: {}\n", kTool, fmt::join(why, ", "));
    return 1;
  }
  return 0;
}
