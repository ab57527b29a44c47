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
// By default both ends live in this process: on two hosts of the in-process fabric, or
// (--fabric tcp) on the host's loopback interface with the iWARP fabric, through the
// kernel's TCP. With --server and --client they are two processes, on one host or two,
// over the iWARP fabric. Then each iteration also has two short control exchanges (they
// are not timed): before the ping the server fills the pattern the client will read and
// poisons what the ping and the write will overwrite; after the read the server checks the
// written bytes in its memory and says what it found. The server serves one client, printing
// what it checked, and exits once the client said goodbye (exit status 1 if it saw a
// mismatch or the client went away mid-run).
//
// Exit status: 0 every iteration verified; 1 a mismatch, a lost reply (timeout), a
// failed request, a refused or timed-out connection, the peer going away, or a set-up
// failure; 2 a bad command line (or a mode this build cannot run); the server: 128 +
// signal when SIGINT or SIGTERM ended it.
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
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "common/cli.hpp"
#include "common/serve.hpp"
#include "ndk/softndk.h"
#include "perf/pair.hpp"
#include "perf/session.hpp"
#include "perf/stop.hpp"

namespace {

namespace perf = softndk::perf;
using Clock = std::chrono::steady_clock;

constexpr const char* kTool = "ndkping";
constexpr uint64_t kMaxSize = 16ull << 20;
constexpr uint16_t kDefaultPort = 18516;

// Control messages of the two-process mode (perf::Control::kCheck): arg[0] the sequence
// number, arg[1] the phase.
enum Phase : uint64_t { kPrepare = 0, kCheckWrite = 1 };

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

using perf::ip_text;
using perf::port_of;

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
  // Both ends here (a Pair), or the client's end with the server in another process (a
  // Session: s is the view of its endpoint).
  Pinger(perf::Endpoint& c, perf::Endpoint& s, perf::Session* remote, const std::atomic<int>& disconnects,
         const perf::SignalStop& stop, size_t size, double timeout_s, Simulate simulate, uint64_t session, bool quiet)
      : c_(c), s_(s), remote_(remote), disconnects_(disconnects), stop_(stop), size_(size), stride_((size + 63) / 64 * 64),
        timeout_(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s))),
        timeout_s_(timeout_s), simulate_(simulate), session_(session), quiet_(quiet) {}

  // Posts the first receive on each side; false (and a message on stderr) on failure.
  // (Between processes each receive is posted when its message is due.)
  bool start() {
    if (remote_ != nullptr || (receive(s_, "server") && receive(c_, "client"))) return true;
    fmt::print(stderr, "{}: {}\n", kTool, problem_);
    ++errors;
    return false;
  }

  // One iteration, printed (a mismatch is counted and the run goes on); false when the
  // run cannot go on: a lost echo, a timeout, a failed request, or a stop.
  bool iteration(uint64_t seq);

  uint64_t sent = 0, received = 0, mismatches = 0, errors = 0, disconnected = 0;
  Stats rtt, write, read;
  // Every iteration ran to its end (none broke off with a problem).
  bool whole() const { return !broken_; }

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

  enum class Wait { kDone, kTimeout, kStopped, kDisconnected };
  // Polls for one completion; a failed one is reported as a request error. Between
  // processes a stop waits for the end of the iteration (the server expects it whole).
  Wait wait(NDK_CQ* cq, NDK_RESULT& result) {
    const Clock::time_point deadline = Clock::now() + timeout_;
    for (uint64_t spins = 0;; ++spins) {
      if (cq->Dispatch->NdkGetCqResults(cq, &result, 1) == 1) return Wait::kDone;
      if ((spins & 1023) == 1023) {
        if (remote_ == nullptr && stop_.requested()) return Wait::kStopped;
        if (remote_ != nullptr && disconnects_.load() > 0) return Wait::kDisconnected;
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
      case Wait::kDisconnected:
        problem_ = fmt::format("the server disconnected (waiting for the {})", what);
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
  bool serve_ping(uint64_t seq);
  bool rdma(uint64_t seq, Kind kind, double* us);
  void verify_write(uint64_t seq);
  bool control(uint64_t seq, Phase phase);

  perf::Endpoint& c_;
  perf::Endpoint& s_;
  perf::Session* const remote_;
  const std::atomic<int>& disconnects_;
  const perf::SignalStop& stop_;
  const size_t size_, stride_;
  const Clock::duration timeout_;
  const double timeout_s_;
  const Simulate simulate_;
  const uint64_t session_;
  const bool quiet_;
  std::string problem_, mismatch_;
  bool stopped_ = false, timed_out_ = false, broken_ = false;
};

// The ping and its echo. Times the round trip: from the post of the ping to the echo's
// receive completion; the checks come after.
bool Pinger::exchange(uint64_t seq, double* us) {
  NDK_RESULT r{};
  fill(slot(c_.out(), 0), size_, session_, seq, kPing);
  if (remote_ == nullptr) fill(slot(s_.in(), 0), size_, session_, seq, kPing, true);
  fill(slot(c_.in(), 0), size_, session_, seq, kPing, true);
  if (remote_ != nullptr && !receive(c_, "client")) return false;  // for the echo
  const Clock::time_point t0 = Clock::now();
  NDK_SGE ping = c_.sge(slot(c_.out(), 0), size_);
  NTSTATUS status = c_.qp->Dispatch->NdkSend(c_.qp, nullptr, &ping, 1, 0);
  if (status != STATUS_SUCCESS) {
    problem_ = "posting the ping send returned " + perf::status_text(status);
    return false;
  }
  ++sent;
  if (!complete(c_.send_cq, "ping send", r)) return false;
  if (remote_ == nullptr && !serve_ping(seq)) return false;  // else the server process takes and echoes it
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
  if (remote_ != nullptr) {
    verify(slot(c_.in(), 0), seq, kPing, "echo as the client received it");
    return true;
  }
  verify(slot(s_.in(), 0), seq, kPing, "ping as the server received it");
  verify(slot(c_.in(), 0), seq, kPing, "echo as the client received it");
  return receive(s_, "server") && receive(c_, "client");
}

// One process: the server's side of the ping, taken and echoed from its receive buffer.
bool Pinger::serve_ping(uint64_t seq) {
  NDK_RESULT r{};
  if (!complete(s_.recv_cq, "ping receive (server)", r)) return false;
  if (r.BytesTransferred != size_) {
    problem_ = fmt::format("the server received {} bytes, not {}", r.BytesTransferred, size_);
    return false;
  }
  if (simulate_ == Simulate::kLost && seq == 2) return true;
  NDK_SGE echo = s_.sge(slot(s_.in(), 0), size_);
  NTSTATUS status = s_.qp->Dispatch->NdkSend(s_.qp, nullptr, &echo, 1, 0);
  if (status != STATUS_SUCCESS) {
    problem_ = "posting the echo send returned " + perf::status_text(status);
    return false;
  }
  return complete(s_.send_cq, "echo send", r);
}

// An RDMA write (client -> server memory) or read (server memory -> client) of slot 1.
bool Pinger::rdma(uint64_t seq, Kind kind, double* us) {
  const bool is_write = kind == kWrite;
  uint8_t* source = slot(is_write ? c_.out() : s_.out(), 1);
  uint8_t* target = slot(is_write ? s_.in() : c_.in(), 1);
  // Between processes the server fills its own memory (at the prepare exchange).
  if (is_write || remote_ == nullptr) fill(source, size_, session_, seq, kind);
  if (!is_write || remote_ == nullptr) fill(target, size_, session_, seq, kind, true);
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
  bool ok = remote_ != nullptr
                ? control(seq, kPrepare) && exchange(seq, &t_rtt) && rdma(seq, kWrite, &t_write) &&
                      rdma(seq, kRead, &t_read) && control(seq, kCheckWrite)
                : exchange(seq, &t_rtt) && rdma(seq, kWrite, &t_write) && rdma(seq, kRead, &t_read);
  if (ok && remote_ == nullptr) verify_write(seq);
  if (stopped_) return false;  // interrupted mid-iteration: the summary says the rest
  std::string line = fmt::format("{} bytes from {}: seq={}", size_,
                                 ip_text(remote_ != nullptr ? remote_->peer_address() : s_.address), seq);
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
  bool gone = false;
  if (!problem_.empty() && remote_ != nullptr) {
    // A failure because the server went away: its disconnect may follow by a moment.
    for (int i = 0; i < 40 && disconnects_.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    gone = disconnects_.load() > 0;
    if (gone && problem_.rfind("the server disconnected", 0) != 0)
      problem_ = "the server disconnected (" + problem_ + ")";
  }
  if (!problem_.empty()) {
    broken_ = true;
    if (gone) ++disconnected;
    else if (sent == received) ++errors;  // a lost echo counts as lost, anything else as a failure
    line += " " + problem_;
    if (remote_ == nullptr && disconnects_.load() > 0) line += " (the connection was terminated)";
  }
  if (!quiet_ || !mismatch_.empty() || !problem_.empty()) {
    fmt::print("{}\n", line);
    std::fflush(stdout);
  }
  return ok;
}

// One control exchange with the server process: kPrepare before the ping, kCheckWrite
// after the read (its answer tells what the server found where the write landed).
bool Pinger::control(uint64_t seq, Phase phase) {
  perf::Control question, answer;
  question.kind = perf::Control::kCheck;
  question.arg[0] = seq;
  question.arg[1] = phase;
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(timeout_);
  const char* what = phase == kPrepare ? "preparing the iteration" : "checking the write";
  try {
    remote_->post_control_receive();
    remote_->send_control(question, timeout);
    switch (remote_->wait_control(answer, timeout, nullptr)) {
      case perf::Session::Wait::kDone: break;
      case perf::Session::Wait::kDisconnected: problem_ = fmt::format("the server disconnected ({})", what); return false;
      default:
        timed_out_ = true;
        problem_ = fmt::format("timeout: the server did not answer within {} s ({})", timeout_s_, what);
        return false;
    }
  } catch (const perf::Error& e) {
    problem_ = fmt::format("{}: {}", what, e.what());
    return false;
  }
  if (answer.kind != perf::Control::kVerdict || answer.arg[0] != seq) {
    problem_ = fmt::format("{}: the server's answer does not match", what);
    return false;
  }
  if (phase == kCheckWrite && answer.arg[1] != 0) {
    if (!mismatch_.empty()) mismatch_ += "; ";
    mismatch_ += fmt::format("MISMATCH in the RDMA write: byte {} of {} is 0x{:02X}, expected 0x{:02X} (found by the server)",
                             answer.arg[2], size_, answer.arg[3], answer.arg[4]);
  }
  return true;
}

// ---- the server process ----------------------------------------------------------------------

class PingServer {
 public:
  PingServer(perf::Session& session, const perf::SignalStop& stop, size_t size, Simulate simulate, uint64_t nonce,
             bool quiet)
      : session_(session), e_(session.local()), stop_(stop), size_(size), stride_((size + 63) / 64 * 64),
        simulate_(simulate), nonce_(nonce), quiet_(quiet) {}

  // Answers the client's iterations until it says goodbye; the exit status.
  int run() {
    const std::string from = perf::address_text(session_.peer_address());
    for (;;) {
      perf::Control c;
      perf::Session::Wait w;
      try {
        w = session_.wait_control(c, std::chrono::milliseconds(0), &stop_.flag());
      } catch (const perf::Error& e) {
        return failed(e.what());
      }
      if (w == perf::Session::Wait::kStopped)
        return softndk::tools::interrupted(
            kTool, stop_, fmt::format(" after {} iteration{}", iterations_, iterations_ == 1 ? "" : "s").c_str());
      if (w == perf::Session::Wait::kDisconnected)
        return failed(fmt::format("the client {} disconnected without saying goodbye", from));
      if (c.kind == perf::Control::kBye) break;
      if (c.kind != perf::Control::kCheck) return failed("the client sent an unexpected control message");
      const uint64_t seq = c.arg[0];
      if (!(c.arg[1] == kPrepare ? on_prepare(seq) : on_check(seq))) return failed(problem_);
    }
    fmt::print("client {} said goodbye after {} iteration{}, {} mismatch{}\n", from, iterations_,
               iterations_ == 1 ? "" : "s", mismatches_, mismatches_ == 1 ? "" : "es");
    return mismatches_ == 0 ? 0 : 1;
  }

 private:
  uint8_t* slot(uint8_t* area, int k) const { return area + static_cast<size_t>(k) * stride_; }

  int failed(const std::string& why) {
    fmt::print(stderr, "{}: {} (after {} iteration{})\n", kTool, why, iterations_, iterations_ == 1 ? "" : "s");
    return 1;
  }

  bool answer(uint64_t seq, std::optional<Mismatch> m) {
    perf::Control v;
    v.kind = perf::Control::kVerdict;
    v.arg[0] = seq;
    if (m) {
      v.arg[1] = 1;
      v.arg[2] = m->offset;
      v.arg[3] = m->found;
      v.arg[4] = m->expected;
    }
    try {
      session_.send_control(v, std::chrono::seconds(10));
    } catch (const perf::Error& e) {
      problem_ = e.what();
      return false;
    }
    return true;
  }

  bool post(uint8_t* at, size_t length, PVOID context) {
    NDK_SGE sge = e_.sge(at, length);
    NTSTATUS status = e_.qp->Dispatch->NdkReceive(e_.qp, context, &sge, 1);
    if (status != STATUS_SUCCESS) problem_ = "posting a receive: " + perf::status_text(status);
    return status == STATUS_SUCCESS;
  }

  // Polls `cq` for one completion, as long as the client is there.
  bool wait(NDK_CQ* cq, NDK_RESULT& r, const char* what) {
    for (uint64_t spins = 0;; ++spins) {
      if (cq->Dispatch->NdkGetCqResults(cq, &r, 1) == 1) break;
      if ((spins & 1023) != 1023) continue;
      if (stop_.requested() || session_.disconnects() > 0) {
        problem_ = fmt::format("the client {} went away (waiting for the {})",
                               perf::address_text(session_.peer_address()), what);
        return false;
      }
    }
    if (r.Status != STATUS_SUCCESS) problem_ = fmt::format("the {} completed with {}", what, perf::status_text(r.Status));
    return r.Status == STATUS_SUCCESS;
  }

  // Before the ping: the pattern the client will read, poison where the ping and the write
  // will land, the ping's receive (then the control receive for the check); then the
  // ping, checked and echoed.
  bool on_prepare(uint64_t seq) {
    fill(slot(e_.out(), 1), size_, nonce_, seq, kRead);
    fill(slot(e_.in(), 1), size_, nonce_, seq, kWrite, true);
    fill(slot(e_.in(), 0), size_, nonce_, seq, kPing, true);
    if (!post(slot(e_.in(), 0), size_, nullptr)) return false;
    try {
      session_.post_control_receive();
    } catch (const perf::Error& e) {
      problem_ = e.what();
      return false;
    }
    if (!answer(seq, std::nullopt)) return false;
    NDK_RESULT r{};
    if (!wait(e_.recv_cq, r, "ping")) return false;
    if (r.BytesTransferred != size_) {
      problem_ = fmt::format("the ping of seq {} has {} bytes, not {}", seq, r.BytesTransferred, size_);
      return false;
    }
    ping_ = check(slot(e_.in(), 0), size_, nonce_, seq, kPing);
    if (simulate_ == Simulate::kLost && seq == 2) return true;  // no echo
    NDK_SGE echo = e_.sge(slot(e_.in(), 0), size_);
    NTSTATUS status = e_.qp->Dispatch->NdkSend(e_.qp, nullptr, &echo, 1, 0);
    if (status != STATUS_SUCCESS) {
      problem_ = "posting the echo: " + perf::status_text(status);
      return false;
    }
    return wait(e_.send_cq, r, "echo send");
  }

  // After the read: the written bytes checked where they landed.
  bool on_check(uint64_t seq) {
    uint8_t* target = slot(e_.in(), 1);
    if (simulate_ == Simulate::kCorrupt && seq == 2) target[size_ / 2] ^= 0x5A;  // as a bad wire would
    std::optional<Mismatch> m = check(target, size_, nonce_, seq, kWrite);
    ++iterations_;
    std::string line = fmt::format("{} bytes from {}: seq={}", size_, ip_text(session_.peer_address()), seq);
    line += ping_ ? fmt::format(" MISMATCH in the ping: byte {} is 0x{:02X}, expected 0x{:02X}", ping_->offset,
                                ping_->found, ping_->expected)
                  : " ping verified";
    line += m ? fmt::format(" MISMATCH in the RDMA write: byte {} is 0x{:02X}, expected 0x{:02X}", m->offset,
                            m->found, m->expected)
              : ", RDMA write verified";
    if (m || ping_) ++mismatches_;
    if (!quiet_ || m || ping_) {
      fmt::print("{}\n", line);
      std::fflush(stdout);
    }
    try {
      session_.post_control_receive();  // the next iteration's prepare, or the goodbye
    } catch (const perf::Error& e) {
      problem_ = e.what();
      return false;
    }
    return answer(seq, m);
  }

  perf::Session& session_;
  perf::Endpoint& e_;
  const perf::SignalStop& stop_;
  const size_t size_, stride_;
  const Simulate simulate_;
  const uint64_t nonce_;
  const bool quiet_;
  std::optional<Mismatch> ping_;
  uint64_t iterations_ = 0, mismatches_ = 0;
  std::string problem_;
};

int run_server(perf::SignalStop& stop, const SOCKADDR_INET& bind, SOFTNDK_COMPLETION_MODE mode, Simulate simulate,
               bool quiet) {
  softndk::tools::Pending pending = softndk::tools::wait_for_one_client(kTool, stop, bind, mode);
  if (!pending.hello) return pending.status;
  perf::Session* session = pending.session.get();
  const perf::Greeting* hello = &*pending.hello;
  const std::string from = perf::address_text(session->peer_address());
  perf::Greeting answer;
  answer.tool = perf::Tool::kPing;
  answer.nonce = hello->nonce;
  const bool wrong = hello->tool != perf::Tool::kPing || hello->message_size == 0 || hello->message_size > kMaxSize ||
                     hello->area < 2 * hello->message_size || hello->area > 2 * kMaxSize + 128;
  if (wrong || simulate == Simulate::kRefused) {
    answer.status = hello->tool != perf::Tool::kPing ? perf::Greeting::kWrongTool
                    : wrong                          ? perf::Greeting::kTooLarge
                                                     : perf::Greeting::kSimulated;
    session->reject(answer);
    fmt::print(stderr, "{}: refused {}{}\n", kTool, from, wrong ? "" : " (simulated)");
    return wrong ? 1 : 0;
  }
  if (simulate == Simulate::kConnectTimeout) {  // never answers; the client gives up
    fmt::print("not answering {} (simulated)\n", from);
    std::fflush(stdout);
    while (stop.sleep_for(std::chrono::milliseconds(100))) {
    }
    return softndk::tools::interrupted(kTool, stop);
  }
  perf::EndpointOptions options;
  options.fabric = SOFTNDK_FABRIC_TCP;
  options.completion_mode = mode;
  options.area_size = hello->area;
  options.queue_depth = 4;
  try {
    session->accept(options, answer);
  } catch (const perf::Error& e) {
    fmt::print(stderr, "{}: accepting {}: {}\n", kTool, from, e.what());
    return 1;
  }
  // The client's messages are as large as its area's slot.
  const size_t size = hello->message_size;
  fmt::print("client {} connected: {} bytes per message\n", from, size);
  std::fflush(stdout);
  return PingServer(*session, stop, size, simulate, hello->nonce, quiet).run();
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
      "By default both endpoints run in this process on two in-process hosts (192.0.2.x serving,\n"
      "198.51.100.x connecting; 2001:db8:: with --ipv6), or with --fabric tcp on loopback iWARP.\n"
      "Two processes, on one host or two (iWARP over TCP): `ndkping --server --bind ADDR` on one,\n"
      "`ndkping --client ADDR` on the other; the server serves one client and exits.\n"
      "Exit status: 0 all verified; 1 a mismatch, lost reply (timeout), failed request, refused\n"
      "or timed-out connection, the peer going away, or set-up failure; 2 a bad command line."};
  app.set_version_flag("--version", std::string("ndkping (SoftNDK) ") + SOFTNDK_VERSION_TEXT);
  uint64_t count = 0;
  uint64_t size = 64;
  double interval = 1.0;
  double timeout = 5.0;
  bool ipv6 = false, quiet = false;
  std::string mode = "default", simulate = "none";
  softndk::tools::Fabric two;
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
  app.add_flag("-6,--ipv6", ipv6, "IPv6 instead of IPv4 (in-process: 2001:db8::/32; tcp: ::1; --server: listen on ::1 unless --bind)");
  app.add_option("-m,--mode", mode,
                 "Completion mode of creates, connects and closes (default: the completion_mode tunable, "
                 "SOFTNDK_COMPLETION_MODE)")
      ->check(CLI::IsMember({"default", "inline", "caller-thread", "provider-thread", "mixed"}))
      ->capture_default_str();
  app.add_flag("-q,--quiet", quiet, "Print only the summary (and failures)");
  two.add_options(app, kTool, kDefaultPort, "answer its iterations");
  app.add_option("--simulate", simulate,
                 "Show a failure path: refused (the server rejects the connection), connect-timeout "
                 "(it never answers), lost (no echo for seq 2), corrupt (a byte of seq 2's RDMA write "
                 "changes after it lands). Two processes: give it to the server")
      ->check(CLI::IsMember({"none", "refused", "connect-timeout", "lost", "corrupt"}))
      ->group("Testing");
  if (auto code = parse(app, argc, argv)) return *code;

  if (std::string problem = two.resolve(app, ipv6); !problem.empty()) return usage_error(problem);
  const bool two_processes = two.two_processes(), server = two.server;
  const std::string& fabric = two.fabric;
  const std::optional<SOCKADDR_INET>& server_address = two.server_address;
  if (!two.client.empty() && simulate != "none")
    return usage_error("--simulate with --client: give it to the server (--server --simulate ...)");
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
  if (server) return run_server(stop, *server_address, completion_mode(mode), sim, quiet);

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
  std::unique_ptr<perf::Session> remote;
  const std::string target = two_processes ? perf::address_text(*server_address) : "the server";
  try {
    if (two_processes) {
      perf::Greeting greeting;
      greeting.tool = perf::Tool::kPing;
      greeting.nonce = session;
      greeting.message_size = static_cast<uint32_t>(size);
      greeting.area = options.area_size;
      options.fabric = SOFTNDK_FABRIC_TCP;
      remote = perf::Session::connect(*server_address, options, greeting,
                                      std::chrono::milliseconds(std::llround(timeout * 1000)));
    } else {
      pair = std::make_unique<perf::Pair>(options);
    }
  } catch (const perf::Error& e) {
    if (e.status() == STATUS_CONNECTION_REFUSED)
      fmt::print(stderr, "{}: connection refused: {} ({})\n", kTool,
                 two_processes && std::string(e.what()).find("server") == std::string::npos
                     ? "nothing listens at " + target
                     : target + " rejected the connect request",
                 e.what());
    else if (e.status() == STATUS_IO_TIMEOUT)
      fmt::print(stderr, "{}: connection timed out: {} did not answer within {} s ({})\n", kTool, target, timeout,
                 e.what());
    else
      fmt::print(stderr, "{}: cannot set up the connection{}: {}\n", kTool,
                 two_processes ? " to " + target : std::string(), e.what());
    return 1;
  }
  perf::Endpoint& c = remote ? remote->local() : pair->client();
  perf::Endpoint& s = remote ? remote->peer() : pair->server();
  const std::string peer = remote ? ip_text(remote->peer_address()) : ip_text(s.address);

  // Each side checks the private data it got (between processes: greetings, the nonce
  // echoed, checked by Session::connect).
  auto as_text = [](const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); };
  if (!remote && (as_text(s.peer_data) != hello || as_text(c.peer_data) != welcome)) {
    fmt::print(stderr, "{}: private data mismatch: the server got \"{}\" (sent \"{}\"), the client got \"{}\" (sent \"{}\")\n",
               kTool, as_text(s.peer_data), hello, as_text(c.peer_data), welcome);
    return 1;
  }
  SOFTNDK_COMPLETION_MODE in_force = SOFTNDK_COMPLETION_DEFAULT;
  SoftNdkGetCompletionMode(c.adapter, &in_force, nullptr);
  fmt::print("NDKPING {} port {} from {}: {} bytes per message, RDMA write and read; {}, {} completions\n",
             peer, port_of(remote ? remote->peer_address() : s.address), ip_text(c.address), size,
             remote            ? "iWARP fabric, two processes"
             : fabric == "tcp" ? "iWARP fabric over loopback TCP"
                               : "in-process fabric",
             SoftNdkCompletionModeName(in_force));
  if (remote)
    fmt::print("connected: private data verified both ways (greetings of {} bytes, the nonce echoed)\n",
               perf::Greeting::kBytes);
  else
    fmt::print("connected: private data verified both ways ({} bytes sent, {} bytes back)\n", hello.size(),
               welcome.size());
  std::fflush(stdout);

  Pinger pinger(c, s, remote.get(), remote ? remote->disconnect_count() : pair->disconnect_count(), stop, size, timeout,
                sim, session, quiet);
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
  // The server waits for a goodbye between iterations: said unless an iteration broke off.
  if (remote && pinger.whole() && remote->disconnects() == 0) {
    perf::Control bye;
    bye.kind = perf::Control::kBye;
    try {
      remote->send_control(bye, std::chrono::seconds(5));
    } catch (const perf::Error&) {
      // The summary below says what happened; the server reports a client gone without a word.
    }
  }

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
  // One ping is in flight at a time: when the server went away, the echo it owed is lost to
  // that, not to a timeout.
  const uint64_t timed_out = lost - (pinger.disconnected && lost > 0 ? 1 : 0);
  if (timed_out) why.push_back(fmt::format("{} echo{} lost (timeout)", timed_out, timed_out == 1 ? "" : "es"));
  if (pinger.disconnected) why.push_back("the server disconnected mid-run");
  if (pinger.errors)
    why.push_back(fmt::format("{} iteration{} failed (timeout or failed request)", pinger.errors,
                              pinger.errors == 1 ? "" : "s"));
  if (!why.empty()) {
    fmt::print(stderr, "{}: FAILED: {}\n", kTool, fmt::join(why, ", "));
    return 1;
  }
  return 0;
}
