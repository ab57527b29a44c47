#include "perf/engine.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <optional>

#include "perf/clock.hpp"

namespace softndk::perf {

const char* to_string(Operation operation) {
  switch (operation) {
    case Operation::kSend: return "send";
    case Operation::kWrite: return "write";
    case Operation::kRead: return "read";
  }
  return "?";
}

const char* to_string(Mode mode) { return mode == Mode::kLatency ? "latency" : "bandwidth"; }

namespace {

constexpr ULONG kPollBatch = 64;
constexpr ULONG kMaxSge = 64;                // the most SGEs any request takes
constexpr uint64_t kCheckpointMask = 255;   // stop and progress: every 256 iterations
constexpr auto kStall = std::chrono::seconds(5);  // no completion for this long: give up

// Message `id`'s pattern: 64-bit words, each a hash of (id, position).
inline uint64_t pattern_word(uint64_t id, uint64_t index) {
  uint64_t x = id * 0x9E3779B97F4A7C15ull + index;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return x;
}

void fill(uint8_t* p, size_t size, uint64_t id) {
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w = pattern_word(id, i / 8);
    std::memcpy(p + i, &w, 8);
  }
  if (i < size) {
    uint64_t w = pattern_word(id, i / 8);
    std::memcpy(p + i, &w, size - i);
  }
}

// Offset of the first 8-byte word that differs from message `id`'s pattern, or `size`.
size_t mismatch(const uint8_t* p, size_t size, uint64_t id) {
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w = pattern_word(id, i / 8);
    if (std::memcmp(p + i, &w, 8) != 0) return i;
  }
  if (i < size) {
    uint64_t w = pattern_word(id, i / 8);
    if (std::memcmp(p + i, &w, size - i) != 0) return i;
  }
  return size;
}

inline PVOID context_of(uint64_t index) { return reinterpret_cast<PVOID>(static_cast<uintptr_t>(index)); }
inline uint64_t index_of(const NDK_RESULT& r) { return reinterpret_cast<uintptr_t>(r.RequestContext); }
inline UINT64 address_of(const uint8_t* p) { return reinterpret_cast<uintptr_t>(p); }

// printf into a std::string; only ever used on the failure path.
__attribute__((format(printf, 1, 2))) std::string text(const char* fmt, ...) {
  char buffer[256];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buffer, sizeof(buffer), fmt, args);
  va_end(args);
  return buffer;
}

// Every run draws fresh message ids, so data left by an earlier run never verifies.
std::atomic<uint64_t> g_run_counter{1};
// Runs of Sessions, numbered: a credit record of an earlier run never counts.
std::atomic<uint64_t> g_remote_runs{0};
constexpr uint64_t kCreditKey = 0x6E646B7065726621ull;
constexpr auto kControlTimeout = std::chrono::seconds(10);

// What a run drives: two endpoints, both local (a Pair) or one local and the other the
// view of a peer process's endpoint (a Session, with its control messages).
struct Link {
  Endpoint& client;
  Endpoint& server;
  ULONG queue_depth;
  const std::atomic<int>& disconnects;
  Session* session = nullptr;
};

// Params in a control message and back.
Control encode_run(const Params& p, uint64_t base, uint64_t run) {
  Control c;
  c.kind = Control::kRun;
  c.arg[0] = static_cast<uint64_t>(p.operation) | static_cast<uint64_t>(p.mode) << 8 | uint64_t{p.verify} << 16;
  c.arg[1] = p.size;
  c.arg[2] = p.iterations;
  c.arg[3] = p.warmup;
  c.arg[4] = p.queue_depth | uint64_t{p.sge_count} << 32;
  c.arg[5] = p.flags;
  c.arg[6] = base;
  c.arg[7] = run;
  return c;
}

Params decode_run(const Control& c) {
  Params p;
  p.operation = static_cast<Operation>(c.arg[0] & 0xFF);
  p.mode = static_cast<Mode>((c.arg[0] >> 8) & 0xFF);
  p.verify = (c.arg[0] >> 16 & 1) != 0;
  p.size = c.arg[1];
  p.iterations = c.arg[2];
  p.warmup = c.arg[3];
  p.queue_depth = static_cast<ULONG>(c.arg[4] & 0xFFFFFFFF);
  p.sge_count = static_cast<ULONG>(c.arg[4] >> 32);
  p.flags = static_cast<ULONG>(c.arg[5]);
  p.samples = false;
  return p;
}

class Engine {
 public:
  Engine(const Link& link, const Params& params, Result& result)
      : p_(params), r_(result), link_(link), client_(link.client), server_(link.server),
        local_server_(!link.server.remote) {}

  // The client's side of a run (both sides when both endpoints are local).
  void execute() {
    if (!prepare()) return;
    if (link_.session != nullptr && !begin_remote()) return;
    run_phases();
    if (link_.session != nullptr && (r_.ok() || r_.cancelled())) end_remote();
  }

  // The server process's side of the run `request` asked for; false when the session
  // cannot go on (the Result says why).
  bool serve(const Control& request);

 private:
  void run_phases() {
    if (p_.warmup > 0 && !phase(p_.warmup, false)) return;
    if (stopped_) {
      fail(STATUS_CANCELLED, "stopped during the warm-up, nothing measured");
      return;
    }
    progress_base_ = p_.warmup;
    if (!phase(p_.iterations, true)) return;
    summarise();
    if (stopped_)
      fail(STATUS_CANCELLED, text("stopped after %llu of %llu iterations", static_cast<unsigned long long>(measured_),
                                  static_cast<unsigned long long>(p_.iterations)));
  }

  bool prepare();
  bool phase(uint64_t n, bool measured);
  bool one_sided_latency(uint64_t n, bool measured);
  bool one_sided_bandwidth(uint64_t n, bool measured);
  bool send_latency(uint64_t n, bool measured);
  bool send_bandwidth(uint64_t n, bool measured);
  bool send_half(Endpoint& from, uint64_t index, uint64_t n, uint64_t id);
  bool receive_half(Endpoint& to, uint64_t index, uint64_t n, uint64_t id);
  bool leg(Endpoint& from, Endpoint& to, uint64_t index, uint64_t n, uint64_t id) {
    return send_half(from, index, n, id) && receive_half(to, index, n, id);
  }
  bool repost(Endpoint& to, uint64_t next, uint64_t n);
  void summarise();

  // Two processes, the client: the run's start and end.
  bool begin_remote();
  void end_remote();
  bool exchange(const Control& question, Control& answer, const char* what);
  void read_credits() {
    auto* words = reinterpret_cast<uint64_t*>(client_.control() + kCreditOffset);
    uint64_t run = std::atomic_ref<uint64_t>(words[0]).load(std::memory_order_acquire);
    uint64_t count = std::atomic_ref<uint64_t>(words[1]).load(std::memory_order_acquire);
    uint64_t check = std::atomic_ref<uint64_t>(words[2]).load(std::memory_order_acquire);
    if (run == run_number_ && check == (count ^ run ^ kCreditKey)) credits_ = std::max(credits_, count);
  }
  // Two processes, the server.
  bool serve_send_latency(uint64_t n, uint64_t base);
  bool serve_send_bandwidth(uint64_t n, uint64_t base);
  bool is_end(const NDK_RESULT& r);
  bool write_credits(bool final);
  bool finish_serving();
  bool reply(uint32_t kind, NTSTATUS status, uint64_t messages, const std::string& why);
  uint64_t server_credits() const { return posted_receives_ + (ctl_posted_ ? 1 : 0); }

  // Every 256 iterations: publishes `done` (of this phase) and tells whether to stop.
  bool checkpoint(uint64_t done) {
    if (p_.progress != nullptr) p_.progress->store(progress_base_ + done, std::memory_order_relaxed);
    if (p_.stop != nullptr && p_.stop->load(std::memory_order_relaxed)) stopped_ = true;
    return stopped_;
  }
  // End of a phase of `n` iterations (after a stop, fewer than asked).
  void finished(uint64_t n, bool measured) {
    if (measured) measured_ = n;
    if (p_.progress != nullptr) p_.progress->store(progress_base_ + n, std::memory_order_relaxed);
  }

  // Records the first failure; returns false so that callers can `return fail(...)`.
  bool fail(NTSTATUS status, const std::string& what) {
    if (r_.ok()) {
      r_.status = status;
      r_.error = std::string(to_string(p_.operation)) + " " + to_string(p_.mode) + ": " + what;
      // Between processes a failure of the connection is usually the peer going away, whose
      // disconnect event may follow the failure by a moment.
      const bool connection = status == STATUS_CONNECTION_INVALID || status == STATUS_CONNECTION_ABORTED ||
                              status == STATUS_CONNECTION_RESET || status == STATUS_CONNECTION_DISCONNECTED;
      for (int i = 0; link_.session != nullptr && connection && i < 40 && link_.disconnects.load() == 0; ++i)
        usleep(5000);
      if (link_.disconnects.load() > 0)
        r_.error += link_.session == nullptr ? " (the connection was terminated)"
                    : serving_             ? " (the client disconnected)"
                                           : " (the server disconnected)";
    }
    return false;
  }
  bool fail_post(NTSTATUS status, const char* what, uint64_t index) {
    return fail(status, text("%s #%llu: the post returned %s", what, static_cast<unsigned long long>(index),
                             status_text(status).c_str()));
  }

  // A completion must succeed and be the one expected next (requests complete in order).
  bool check(const NDK_RESULT& r, const char* what, uint64_t expected) {
    unsigned long long index = index_of(r);
    // A request flushed by the end of the connection is no stop of the run (Result::cancelled).
    if (r.Status != STATUS_SUCCESS)
      return fail(r.Status == STATUS_CANCELLED ? STATUS_CONNECTION_ABORTED : r.Status,
                  text("%s #%llu completed with %s", what, index, status_text(r.Status).c_str()));
    if (index != expected)
      return fail(STATUS_INTERNAL_ERROR, text("%s #%llu completed where #%llu was expected", what, index,
                                              static_cast<unsigned long long>(expected)));
    return true;
  }

  bool verify_at(const uint8_t* p, uint64_t id, uint64_t index) {
    size_t at = mismatch(p, p_.size, id);
    if (at == p_.size) return true;
    return fail(STATUS_DATA_ERROR, text("message #%llu: wrong data at byte %zu of %zu",
                                        static_cast<unsigned long long>(index), at, p_.size));
  }

  // Bytes of message (or receive) `index` within an area.
  size_t offset(uint64_t index) const { return slots_ == 1 ? 0 : (index % slots_) * stride_; }
  bool signalled(uint64_t index, uint64_t n) const {
    return !silent_ || (index + 1) % window_ == 0 || index + 1 == n;
  }
  ULONG flags(bool signal) const { return signal ? flags_ & ~ULONG{NDK_OP_FLAG_SILENT_SUCCESS} : flags_; }
  // Bandwidth: a burst of posts is one deferred chain, ended by its last request.
  ULONG chained(bool more_follow) const { return p_.defer && more_follow ? NDK_OP_FLAG_DEFER : 0; }

  // Write: client out -> server in. Read: server out -> client in.
  uint8_t* source(uint64_t i) const {
    return (p_.operation == Operation::kWrite ? client_.out() : server_.out()) + offset(i);
  }
  uint8_t* target(uint64_t i) const {
    return (p_.operation == Operation::kWrite ? server_.in() : client_.in()) + offset(i);
  }

  // The SGEs of a message at `at` of endpoint `e`'s registered bytes: p_.sge_count
  // adjacent pieces. Returns their count.
  ULONG sges(const Endpoint& e, const uint8_t* at, NDK_SGE* out) const {
    if (p_.sge_count == 1) {
      out[0] = e.sge(at, p_.size);
      return 1;
    }
    for (ULONG k = 0; k < p_.sge_count; ++k) out[k] = e.sge(at + piece_offset_[k], piece_length_[k]);
    return p_.sge_count;
  }

  NTSTATUS post_one_sided(uint64_t i, ULONG f) {
    NDK_QP* qp = client_.qp;
    NDK_SGE s[kMaxSge];
    if (p_.operation == Operation::kWrite) {
      ULONG n = sges(client_, source(i), s);
      return qp->Dispatch->NdkWrite(qp, context_of(i), s, n, address_of(target(i)), server_.remote_token, f);
    }
    ULONG n = sges(client_, target(i), s);
    return qp->Dispatch->NdkRead(qp, context_of(i), s, n, address_of(source(i)), server_.remote_token, f);
  }

  bool post_receive(Endpoint& to, uint64_t i) {
    NDK_SGE s[kMaxSge];
    ULONG n = sges(to, to.in() + offset(i), s);
    // A server process's receive may take the client's control message that ends the
    // run early: room for it (past the slot if need be, the control page follows).
    if (serving_ && p_.size < Control::kBytes) s[n - 1].Length += static_cast<ULONG>(Control::kBytes - p_.size);
    NTSTATUS status = to.qp->Dispatch->NdkReceive(to.qp, context_of(i), s, n);
    return status == STATUS_SUCCESS || fail_post(status, "receive", i);
  }

  // Polls until `cq` yields at least one result (at most `max`); 0 after a stall.
  ULONG poll(NDK_CQ* cq, ULONG max, const char* what) {
    for (;;) {
      ULONG got = cq->Dispatch->NdkGetCqResults(cq, results_, max);
      if (got != 0) {
        idle_ = 0;
        return got;
      }
      if (serving_ && (idle_ & 1023) == 1023 && p_.stop != nullptr && p_.stop->load()) {
        fail(STATUS_CANCELLED, "stopped");
        return 0;
      }
      if (peer_gone() || stalled()) {
        fail(r_.ok() && peer_gone() ? STATUS_CONNECTION_DISCONNECTED : STATUS_IO_TIMEOUT,
             peer_gone() ? text("waiting for a %s completion", what) : text("no %s completion within 5 s", what));
        return 0;
      }
    }
  }

  // A write's completion says its source may be reused; on iWARP its bytes may still be
  // on the wire. A read posted after the writes returns only once they are placed
  // (RDMAP ordering), so verification first waits for a zero-length read; the writes'
  // completions polled meanwhile are appended to `batch` (the verify path only).
  bool fence_writes(std::vector<NDK_RESULT>& batch) {
    constexpr uint64_t kFence = ~uint64_t{0};
    NDK_QP* qp = client_.qp;
    NTSTATUS status = qp->Dispatch->NdkRead(qp, context_of(kFence), nullptr, 0, address_of(server_.in()),
                                            server_.remote_token, 0);
    if (status != STATUS_SUCCESS) return fail_post(status, "fence read", 0);
    for (;;) {
      ULONG got = poll(client_.send_cq, kPollBatch, "fence read");
      if (got == 0) return false;
      for (ULONG k = 0; k < got; ++k) {
        if (index_of(results_[k]) != kFence) {
          batch.push_back(results_[k]);
          continue;
        }
        if (results_[k].Status != STATUS_SUCCESS)
          return fail(results_[k].Status, "the fence read before verifying writes failed");
        return true;
      }
    }
  }

  // Two processes: the peer went away (looked at every 1024 idle spins).
  bool peer_gone() const {
    return link_.session != nullptr && (idle_ & 1023) == 0 && link_.disconnects.load() > 0;
  }

  // Called on each idle spin: true once nothing happened for kStall. Reads the clock only
  // every 1024 spins.
  bool stalled() {
    if (idle_++ == 0) {
      idle_since_ = std::chrono::steady_clock::now();
      return false;
    }
    return (idle_ & 1023) == 0 && std::chrono::steady_clock::now() - idle_since_ > kStall;
  }

  const Params p_;
  Result& r_;
  const Link link_;
  Endpoint& client_;
  Endpoint& server_;
  const bool local_server_;  // one process: this thread drives the server's side too
  // Two processes.
  bool serving_ = false;         // this is the server process's side
  uint64_t run_number_ = 0;
  uint64_t credits_ = 0;         // receives the server has posted in this run (data, then control)
  uint64_t stream_sent_ = 0;     // client: messages sent in the phases before this one
  uint64_t posted_receives_ = 0, taken_ = 0;  // server: data receives posted and taken
  bool ctl_posted_ = false;      // server: the control receive behind the data ones is posted
  bool end_in_data_ = false;     // server: the END took a data receive
  std::optional<Control> end_;   // server: the client's END
  uint64_t credits_written_ = 0; // server: the last count written to the client
  bool credit_write_out_ = false;
  bool silent_ = false;
  ULONG flags_ = 0;
  ULONG window_ = 1;   // outstanding requests (bandwidth) and signal period (SILENT)
  size_t stride_ = 0;  // distance between slots
  size_t slots_ = 1;   // message slots per area: 1 unless verifying
  uint64_t next_id_ = 0;
  Ticks elapsed_ = 0;
  uint64_t idle_ = 0;
  std::chrono::steady_clock::time_point idle_since_{};
  std::vector<Ticks> samples_;
  NDK_RESULT results_[kPollBatch];
  std::vector<NDK_RESULT> batch_;  // verified writes: completions gathered around a fence
  uint32_t piece_offset_[kMaxSge] = {};  // sge_count > 1: where each SGE starts in a message
  ULONG piece_length_[kMaxSge] = {};
  bool stopped_ = false;       // Params::stop was seen
  uint64_t progress_base_ = 0; // iterations of earlier phases (the warm-up)
  uint64_t measured_ = 0;      // measured iterations that ran (fewer than asked after a stop)
};

bool Engine::prepare() {
  const size_t area = std::min(client_.area, server_.area);
  if (p_.size == 0 || p_.size > area)
    return fail(STATUS_INVALID_PARAMETER, text("size %zu: must be 1 .. the Pair's area (%zu)", p_.size, area));
  if (p_.size > client_.info.MaxTransferLength)
    return fail(STATUS_INVALID_PARAMETER, text("size %zu above the adapter's MaxTransferLength", p_.size));
  if (p_.iterations == 0) return fail(STATUS_INVALID_PARAMETER, "iterations must be positive");
  constexpr uint64_t kMaxSamples = uint64_t{1} << 26;  // 512 MiB of timestamps
  if (p_.mode == Mode::kLatency && p_.samples && p_.iterations > kMaxSamples)
    return fail(STATUS_INVALID_PARAMETER, "too many iterations to keep a sample of each: turn samples off");
  if (p_.queue_depth == 0 || p_.queue_depth > link_.queue_depth)
    return fail(STATUS_INVALID_PARAMETER,
                text("queue_depth %lu: must be 1 .. the Pair's %lu", static_cast<unsigned long>(p_.queue_depth),
                     static_cast<unsigned long>(link_.queue_depth)));
  if (p_.verify && p_.operation != Operation::kSend && (client_.remote || server_.remote))
    return fail(STATUS_NOT_SUPPORTED, "verifying writes and reads needs both endpoints in one process (between "
                                      "processes, sends are verified by their receivers)");
  const ULONG max_sge = std::min({client_.max_sge, server_.max_sge, kMaxSge});
  if (p_.operation != Operation::kSend && p_.operation != Operation::kWrite && p_.operation != Operation::kRead)
    return fail(STATUS_INVALID_PARAMETER, "unknown operation");
  if (p_.sge_count == 0 || p_.sge_count > max_sge)
    return fail(STATUS_INVALID_PARAMETER, text("sge_count %lu: must be 1 .. the Pair's %lu",
                                               static_cast<unsigned long>(p_.sge_count),
                                               static_cast<unsigned long>(max_sge)));
  if (p_.sge_count > p_.size)
    return fail(STATUS_INVALID_PARAMETER, text("sge_count %lu above the size %zu (an SGE holds at least a byte)",
                                               static_cast<unsigned long>(p_.sge_count), p_.size));
  if (p_.operation == Operation::kRead && p_.sge_count > client_.info.MaxReadRequestSge)
    return fail(STATUS_INVALID_PARAMETER, text("sge_count %lu above the adapter's MaxReadRequestSge %lu",
                                               static_cast<unsigned long>(p_.sge_count),
                                               static_cast<unsigned long>(client_.info.MaxReadRequestSge)));
  for (ULONG k = 0, at = 0; k < p_.sge_count; ++k) {
    piece_offset_[k] = at;
    piece_length_[k] = static_cast<ULONG>(p_.size / p_.sge_count + (k < p_.size % p_.sge_count ? 1 : 0));
    at += piece_length_[k];
  }
  if (p_.flags & NDK_OP_FLAG_INLINE) {
    if (p_.operation == Operation::kRead) return fail(STATUS_INVALID_PARAMETER, "INLINE does not apply to reads");
    ULONG limit = std::min(client_.inline_data, server_.inline_data);
    if (p_.size > limit)
      return fail(STATUS_INVALID_PARAMETER,
                  text("INLINE: size %zu above the QPs' inline size %lu", p_.size, static_cast<unsigned long>(limit)));
  }
  silent_ = (p_.flags & NDK_OP_FLAG_SILENT_SUCCESS) != 0;
  flags_ = p_.flags;
  // Verifying gives each outstanding message its own slot, so none is overwritten before
  // it is checked; without verification every message uses the first bytes of the area
  // (as a memcpy loop over one source and one destination would).
  stride_ = (p_.size + 63) / 64 * 64;
  slots_ = p_.verify ? std::clamp<size_t>(area / stride_, 1, p_.queue_depth) : 1;
  window_ = static_cast<ULONG>(std::min<size_t>(p_.queue_depth, p_.verify ? slots_ : p_.queue_depth));
  if (!serving_) next_id_ = g_run_counter.fetch_add(1) << 40;
  if (p_.mode == Mode::kLatency && p_.samples) samples_.assign(p_.iterations, 0);
  r_.timer_ns = timer_overhead_ns();
  (void)ns_per_tick();  // calibrate now, not inside the measured loop
  return true;
}

bool Engine::phase(uint64_t n, bool measured) {
  if (p_.operation == Operation::kSend)
    return p_.mode == Mode::kLatency ? send_latency(n, measured) : send_bandwidth(n, measured);
  return p_.mode == Mode::kLatency ? one_sided_latency(n, measured) : one_sided_bandwidth(n, measured);
}

bool Engine::one_sided_latency(uint64_t n, bool measured) {
  const char* what = to_string(p_.operation);
  const uint64_t base = next_id_;
  next_id_ += n;
  const bool sample = measured && !samples_.empty();
  uint64_t checked = 0;
  const Ticks start = now();
  Ticks previous = start;
  for (uint64_t i = 0; i < n; ++i) {
    // After a stop this request is the last one (signalled, so it proves any silent ones).
    if ((i & kCheckpointMask) == 0 && checkpoint(i)) n = i + 1;
    if (p_.verify) fill(source(i), p_.size, base + i);
    const bool signal = signalled(i, n);
    NTSTATUS status = post_one_sided(i, flags(signal));
    if (status != STATUS_SUCCESS) return fail_post(status, what, i);
    if (signal) {
      if (poll(client_.send_cq, 1, what) == 0) return false;
      if (!check(results_[0], what, i)) return false;
      if (p_.verify && p_.operation == Operation::kWrite) {
        batch_.clear();
        if (!fence_writes(batch_)) return false;  // nothing else was in flight
      }
      if (p_.verify)
        for (; checked <= i; ++checked)
          if (!verify_at(target(checked), base + checked, checked)) return false;
    }
    if (sample) {
      Ticks t = now();
      samples_[i] = t - previous;
      previous = t;
    }
  }
  if (measured) elapsed_ = now() - start;
  finished(n, measured);
  return true;
}

bool Engine::one_sided_bandwidth(uint64_t n, bool measured) {
  const char* what = to_string(p_.operation);
  const uint64_t base = next_id_;
  next_id_ += n;
  uint64_t posted = 0, done = 0;
  const Ticks start = now();
  auto may_post = [&](uint64_t k) { return k < n && k - done < window_; };
  while (done < n) {
    while (may_post(posted)) {
      // After a stop: one more request, signalled, then only the reaping.
      if ((posted & kCheckpointMask) == 0 && checkpoint(done)) n = posted + 1;
      if (p_.verify) fill(source(posted), p_.size, base + posted);
      NTSTATUS status = post_one_sided(posted, flags(signalled(posted, n)) | chained(may_post(posted + 1)));
      if (status != STATUS_SUCCESS) return fail_post(status, what, posted);
      ++posted;
    }
    ULONG got = poll(client_.send_cq, kPollBatch, what);
    if (got == 0) return false;
    const NDK_RESULT* batch = results_;
    if (p_.verify && p_.operation == Operation::kWrite) {
      batch_.assign(results_, results_ + got);
      if (!fence_writes(batch_)) return false;
      batch = batch_.data();
      got = static_cast<ULONG>(batch_.size());
    }
    for (ULONG k = 0; k < got; ++k) {
      const NDK_RESULT& r = batch[k];
      uint64_t index = index_of(r);
      // A signalled completion retires it and every silent request before it.
      uint64_t expected = index >= done && index < posted && signalled(index, n) ? index : done;
      if (!check(r, what, expected)) return false;
      if (p_.verify) {
        for (; done <= index; ++done)
          if (!verify_at(target(done), base + done, done)) return false;
      }
      done = index + 1;
    }
  }
  if (measured) elapsed_ = now() - start;
  finished(n, measured);
  return true;
}

// One message of a ping-pong, the sending half: `from` sends message `index` (and reaps
// the send's completion when it is signalled).
bool Engine::send_half(Endpoint& from, uint64_t index, uint64_t n, uint64_t id) {
  uint8_t* data = from.out() + offset(index);
  if (p_.verify) fill(data, p_.size, id);
  const bool signal = signalled(index, n);
  NDK_SGE s[kMaxSge];
  ULONG count = sges(from, data, s);
  NTSTATUS status = from.qp->Dispatch->NdkSend(from.qp, context_of(index), s, count, flags(signal));
  if (status != STATUS_SUCCESS) return fail_post(status, "send", index);
  return !signal || (poll(from.send_cq, 1, "send") != 0 && check(results_[0], "send", index));
}

// The receiving half: `to` takes message `index`, checks it and reposts for the next.
bool Engine::receive_half(Endpoint& to, uint64_t index, uint64_t n, uint64_t id) {
  if (poll(to.recv_cq, 1, "receive") == 0) return false;
  if (serving_ && (is_end(results_[0]) || !r_.ok())) return false;
  if (!check(results_[0], "receive", index)) return false;
  if (results_[0].BytesTransferred != p_.size)
    return fail(STATUS_DATA_ERROR, text("receive #%llu: %lu bytes, not %zu", static_cast<unsigned long long>(index),
                                        static_cast<unsigned long>(results_[0].BytesTransferred), p_.size));
  if (p_.verify && !verify_at(to.in() + offset(index), id, index)) return false;
  if (serving_) ++taken_;
  return repost(to, index + 1, n);
}

// Posts receive `next` of `n` (none past the last). A server process posts its control
// receive right behind the last one, before the client can have anything more to say.
bool Engine::repost(Endpoint& to, uint64_t next, uint64_t n) {
  if (next >= n) return true;
  if (!post_receive(to, next)) return false;
  if (!serving_) return true;
  ++posted_receives_;
  if (next + 1 == n) {
    try {
      link_.session->post_control_receive();
    } catch (const Error& e) {
      return fail(e.status(), e.what());
    }
    ctl_posted_ = true;
  }
  return true;
}

bool Engine::send_latency(uint64_t n, bool measured) {
  const uint64_t base = next_id_;
  next_id_ += 2 * n;
  // One receive on each side, reposted as it is consumed: none is left over at the end.
  // (A server process posted its first one when the run began.)
  if ((local_server_ && !post_receive(server_, 0)) || !post_receive(client_, 0)) return false;
  const bool sample = measured && !samples_.empty();
  const Ticks start = now();
  Ticks previous = start;
  for (uint64_t i = 0; i < n; ++i) {
    // After a stop this round trip is the last: it consumes the receives posted for it
    // and posts none.
    if ((i & kCheckpointMask) == 0 && checkpoint(i)) n = i + 1;
    if (local_server_) {
      if (!leg(client_, server_, i, n, base + 2 * i)) return false;      // ping
      if (!leg(server_, client_, i, n, base + 2 * i + 1)) return false;  // pong
    } else if (!send_half(client_, i, n, base + 2 * i) || !receive_half(client_, i, n, base + 2 * i + 1)) {
      return false;  // the server process takes the ping and sends the pong
    }
    if (sample) {
      Ticks t = now();
      samples_[i] = t - previous;  // a round trip; halved in summarise()
      previous = t;
    }
  }
  if (measured) elapsed_ = now() - start;
  finished(n, measured);
  return true;
}

bool Engine::send_bandwidth(uint64_t n, bool measured) {
  const uint64_t base = next_id_;
  next_id_ += n;
  uint64_t posted = 0, done = 0;          // sends
  uint64_t received = 0, receives = 0;    // receives taken, posted
  // Receives for the first window, then one more per receive taken while any are due.
  // Between processes the server posts them and says how far it got (credits_).
  if (local_server_) {
    while (receives < n && receives < window_)
      if (!post_receive(server_, receives++)) return false;
  } else {
    received = n;  // not seen here
  }
  const Ticks start = now();
  while (done < n || received < n) {
    bool progress = false;
    if (!local_server_ && posted < n && stream_sent_ + posted >= credits_) read_credits();
    auto may_post = [&](uint64_t k) {
      return k < n && k - done < window_ && (local_server_ ? k < receives : stream_sent_ + k < credits_);
    };
    while (may_post(posted)) {
      // After a stop: sends only for the receives already posted (none is left over);
      // between processes, one more (the server learns of the stop from the client).
      if ((posted & kCheckpointMask) == 0 && checkpoint(local_server_ ? received : done))
        n = local_server_ ? receives : posted + 1;
      uint8_t* data = client_.out() + offset(posted);
      if (p_.verify) fill(data, p_.size, base + posted);
      NDK_SGE s[kMaxSge];
      ULONG count = sges(client_, data, s);
      NTSTATUS status = client_.qp->Dispatch->NdkSend(client_.qp, context_of(posted), s, count,
                                                      flags(signalled(posted, n)) | chained(may_post(posted + 1)));
      if (status != STATUS_SUCCESS) return fail_post(status, "send", posted);
      ++posted;
      progress = true;
    }
    ULONG got = client_.send_cq->Dispatch->NdkGetCqResults(client_.send_cq, results_, kPollBatch);
    for (ULONG k = 0; k < got; ++k) {
      uint64_t index = index_of(results_[k]);
      uint64_t expected = index >= done && index < posted && signalled(index, n) ? index : done;
      if (!check(results_[k], "send", expected)) return false;
      done = index + 1;
    }
    ULONG taken =
        local_server_ ? server_.recv_cq->Dispatch->NdkGetCqResults(server_.recv_cq, results_, kPollBatch) : 0;
    for (ULONG k = 0; k < taken; ++k) {
      if (!check(results_[k], "receive", received)) return false;
      if (results_[k].BytesTransferred != p_.size)
        return fail(STATUS_DATA_ERROR, text("receive #%llu: %lu bytes, not %zu",
                                            static_cast<unsigned long long>(received),
                                            static_cast<unsigned long>(results_[k].BytesTransferred), p_.size));
      if (p_.verify && !verify_at(server_.in() + offset(received), base + received, received)) return false;
      ++received;
      if (receives < n && !post_receive(server_, receives++)) return false;
    }
    if (got != 0 || taken != 0 || progress) {
      idle_ = 0;
    } else if (peer_gone()) {
      return fail(STATUS_CONNECTION_DISCONNECTED, text("after %llu of %llu sends", static_cast<unsigned long long>(done),
                                                       static_cast<unsigned long long>(n)));
    } else if (stalled()) {
      return fail(STATUS_IO_TIMEOUT, text("stalled for 5 s with %llu of %llu sends and %llu receives completed",
                                          static_cast<unsigned long long>(done), static_cast<unsigned long long>(n),
                                          static_cast<unsigned long long>(received)));
    }
  }
  if (measured) elapsed_ = now() - start;
  finished(n, measured);
  stream_sent_ += n;
  return true;
}

void Engine::summarise() {
  const uint64_t per_iteration = p_.operation == Operation::kSend && p_.mode == Mode::kLatency ? 2 : 1;
  r_.iterations = measured_;
  r_.messages = measured_ * per_iteration;
  r_.bytes = r_.messages * p_.size;
  r_.seconds = to_ns(elapsed_) * 1e-9;
  if (samples_.empty()) return;
  samples_.resize(measured_);  // after a stop, the iterations that ran
  // Samples are per iteration; a send round trip carries two messages.
  const double scale = ns_per_tick() / static_cast<double>(per_iteration);
  if (p_.keep_samples) {
    r_.samples_ns.resize(samples_.size());
    for (size_t i = 0; i < samples_.size(); ++i) r_.samples_ns[i] = static_cast<double>(samples_[i]) * scale;
  }
  // Nearest-rank percentiles: two partial sorts, the second on the upper half only.
  const size_t count = samples_.size();
  auto rank = [count](double q) {
    size_t r = static_cast<size_t>(q * static_cast<double>(count) + 0.999999);
    return std::clamp<size_t>(r, 1, count) - 1;
  };
  auto [lo, hi] = std::minmax_element(samples_.begin(), samples_.end());
  r_.latency.min_ns = static_cast<double>(*lo) * scale;
  r_.latency.max_ns = static_cast<double>(*hi) * scale;
  auto median = samples_.begin() + static_cast<ptrdiff_t>(rank(0.5));
  std::nth_element(samples_.begin(), median, samples_.end());
  r_.latency.median_ns = static_cast<double>(*median) * scale;
  auto p99 = samples_.begin() + static_cast<ptrdiff_t>(rank(0.99));
  std::nth_element(median, p99, samples_.end());
  r_.latency.p99_ns = static_cast<double>(*p99) * scale;
}

// ---- two processes: the client -------------------------------------------------------------

bool Engine::exchange(const Control& question, Control& answer, const char* what) {
  Session& session = *link_.session;
  try {
    session.post_control_receive();
    session.send_control(question, kControlTimeout);
    switch (session.wait_control(answer, kControlTimeout, nullptr)) {
      case Session::Wait::kDone: break;
      case Session::Wait::kDisconnected: return fail(STATUS_CONNECTION_DISCONNECTED, text("%s: the server disconnected", what));
      default: return fail(STATUS_IO_TIMEOUT, text("%s: the server did not answer within 10 s", what));
    }
  } catch (const Error& e) {
    return fail(e.status(), text("%s: %s", what, e.what()));
  }
  if (answer.kind == Control::kError)
    return fail(static_cast<NTSTATUS>(answer.arg[0]), text("%s: the server says: %s", what, answer.text.c_str()));
  return true;
}

bool Engine::begin_remote() {
  run_number_ = g_remote_runs.fetch_add(1) + 1;
  auto* words = reinterpret_cast<uint64_t*>(client_.control() + kCreditOffset);
  for (int k = 0; k < 3; ++k) std::atomic_ref<uint64_t>(words[k]).store(0, std::memory_order_relaxed);
  Control ready;
  if (!exchange(encode_run(p_, next_id_, run_number_), ready, "starting the run")) return false;
  if (ready.kind != Control::kReady) return fail(STATUS_DATA_ERROR, "starting the run: the server's answer is not READY");
  credits_ = ready.arg[0];
  return true;
}

void Engine::end_remote() {
  // The END must find a receive: after sends, wait until the server has one posted beyond
  // what was sent (it always will: the next data receive or its control receive).
  if (p_.operation == Operation::kSend && p_.mode == Mode::kBandwidth) {
    idle_ = 0;
    for (read_credits(); credits_ <= stream_sent_; read_credits()) {
      if (peer_gone()) {
        fail(STATUS_CONNECTION_DISCONNECTED, "ending the run: the server disconnected");
        return;
      }
      if (stalled()) {
        fail(STATUS_IO_TIMEOUT, "ending the run: the server posted no receive within 5 s");
        return;
      }
    }
  }
  Control end, done;
  end.kind = Control::kEnd;
  end.arg[0] = stream_sent_;
  end.arg[1] = stopped_;
  if (!exchange(end, done, "ending the run")) return;
  if (done.kind != Control::kDone) {
    fail(STATUS_DATA_ERROR, "ending the run: the server's answer is not DONE");
  } else if (static_cast<NTSTATUS>(done.arg[0]) != STATUS_SUCCESS && static_cast<NTSTATUS>(done.arg[0]) != STATUS_CANCELLED) {
    r_.status = STATUS_SUCCESS;  // the server's failure is the run's
    r_.error.clear();
    fail(static_cast<NTSTATUS>(done.arg[0]), "the server: " + done.text);
  }
}

// ---- two processes: the server -------------------------------------------------------------

// A receive completion that is the client's END (in the control receive, or in a data
// receive after the client stopped early); it ends the server's part.
bool Engine::is_end(const NDK_RESULT& r) {
  if (r.Status != STATUS_SUCCESS) return false;
  std::optional<Control> c;
  if (r.RequestContext == control_context()) {
    c = Control::decode(server_.control() + kControlReceiveOffset, r.BytesTransferred);
    if (!c) return fail(STATUS_DATA_ERROR, "the control receive took something else");
    ctl_posted_ = false;
  } else if (r.BytesTransferred == Control::kBytes) {
    c = Control::decode(server_.in() + offset(index_of(r)), r.BytesTransferred);
    if (!c) return false;  // data (of this size, or of the wrong size: check() says so)
    end_in_data_ = true;
    ++taken_;
  } else {
    return false;
  }
  if (c->kind != Control::kEnd) return fail(STATUS_DATA_ERROR, "a control message other than END during the run");
  end_ = c;
  return true;
}

// Tells the client how many receives are posted: an RDMA write of (run, count, check)
// into its control page, one at a time (its source stays untouched until it completed).
bool Engine::write_credits(bool final) {
  while (credit_write_out_) {
    ULONG got = server_.send_cq->Dispatch->NdkGetCqResults(server_.send_cq, results_, 1);
    if (got == 0) {
      if (!final) return true;
      if (peer_gone()) return fail(STATUS_CONNECTION_DISCONNECTED, "writing credits");
      if (stalled()) return fail(STATUS_IO_TIMEOUT, "a credit write did not complete within 5 s");
      continue;
    }
    if (results_[0].Status != STATUS_SUCCESS)
      return fail(results_[0].Status, text("a credit write completed with %s", status_text(results_[0].Status).c_str()));
    credit_write_out_ = false;
    idle_ = 0;
  }
  const uint64_t count = server_credits();
  if (count == credits_written_) return true;
  auto* words = reinterpret_cast<uint64_t*>(server_.control() + kCreditSourceOffset);
  words[0] = run_number_;
  words[1] = count;
  words[2] = count ^ run_number_ ^ kCreditKey;
  NDK_SGE sge = server_.sge(server_.control() + kCreditSourceOffset, 24);
  NTSTATUS status = server_.qp->Dispatch->NdkWrite(server_.qp, nullptr, &sge, 1, address_of(client_.control() + kCreditOffset),
                                                   client_.remote_token, 0);
  if (status != STATUS_SUCCESS) return fail_post(status, "credit write", count);
  credit_write_out_ = true;
  credits_written_ = count;
  return !final || write_credits(true);
}

bool Engine::serve_send_latency(uint64_t n, uint64_t base) {
  for (uint64_t k = 0; k < n; ++k) {
    if (!receive_half(server_, k, n, base + 2 * k)) return end_.has_value() && r_.ok();
    if (!send_half(server_, k, n, base + 2 * k + 1)) return false;
  }
  return true;
}

bool Engine::serve_send_bandwidth(uint64_t n, uint64_t base) {
  uint64_t receives = posted_receives_;  // the first window, posted before READY
  while (taken_ < n && !end_) {
    ULONG got = server_.recv_cq->Dispatch->NdkGetCqResults(server_.recv_cq, results_, kPollBatch);
    for (ULONG k = 0; k < got && !end_; ++k) {
      const NDK_RESULT& r = results_[k];
      if (is_end(r)) break;
      if (!r_.ok()) return false;
      if (!check(r, "receive", taken_)) return false;
      if (r.BytesTransferred != p_.size)
        return fail(STATUS_DATA_ERROR, text("receive #%llu: %lu bytes, not %zu", static_cast<unsigned long long>(taken_),
                                            static_cast<unsigned long>(r.BytesTransferred), p_.size));
      if (p_.verify && !verify_at(server_.in() + offset(taken_), base + taken_, taken_)) return false;
      ++taken_;
      if (receives < n && !repost(server_, receives++, n)) return false;
    }
    if (!write_credits(false)) return false;
    if (got != 0) {
      idle_ = 0;
    } else if ((idle_ & 1023) == 1023 && p_.stop != nullptr && p_.stop->load()) {
      return fail(STATUS_CANCELLED, "stopped");
    } else if (peer_gone()) {
      return fail(STATUS_CONNECTION_DISCONNECTED, text("after %llu of %llu receives", static_cast<unsigned long long>(taken_),
                                                       static_cast<unsigned long long>(n)));
    } else if (stalled()) {
      return fail(STATUS_IO_TIMEOUT, text("stalled for 5 s with %llu of %llu receives taken",
                                          static_cast<unsigned long long>(taken_), static_cast<unsigned long long>(n)));
    }
  }
  return r_.ok() && write_credits(true);
}

bool Engine::serve(const Control& request) {
  serving_ = true;
  run_number_ = request.arg[7];
  const uint64_t base = request.arg[6];
  Session& session = *link_.session;
  // A run the client may not ask for: the session goes on.
  if (!prepare()) return reply(Control::kError, r_.status, 0, r_.error);
  const uint64_t n = p_.warmup + p_.iterations;
  // The first receives, before the client may send anything.
  if (p_.operation == Operation::kSend) {
    const uint64_t first = p_.mode == Mode::kLatency ? 1 : std::min<uint64_t>(n, window_);
    for (uint64_t j = 0; j < first; ++j)
      if (!repost(server_, j, n)) return false;
  } else {
    try {
      session.post_control_receive();
    } catch (const Error& e) {
      return fail(e.status(), e.what());
    }
    ctl_posted_ = true;
  }
  credits_written_ = server_credits();
  Control ready;
  ready.kind = Control::kReady;
  ready.arg[0] = server_credits();
  try {
    session.send_control(ready, kControlTimeout);
  } catch (const Error& e) {
    return fail(e.status(), e.what());
  }
  // A failure is the verdict (r_); the run still ends with the client's END if it comes.
  if (p_.operation == Operation::kSend && p_.mode == Mode::kLatency) serve_send_latency(n, base);
  if (p_.operation == Operation::kSend && p_.mode == Mode::kBandwidth) serve_send_bandwidth(n, base);
  r_.messages = taken_ - (end_in_data_ ? 1 : 0);
  r_.iterations = p_.operation == Operation::kSend && p_.mode == Mode::kLatency ? r_.messages : 0;
  r_.bytes = r_.messages * p_.size;
  return finish_serving();
}

// After the server's part: the client's END (waited for if it has not come yet), the
// receives it no longer needs flushed, and the verdict.
bool Engine::finish_serving() {
  Session& session = *link_.session;
  if (!end_) {
    Control c;
    // A data-path failure usually ended the connection; otherwise the client ends the run.
    Session::Wait w;
    try {
      w = session.wait_control(c, std::chrono::milliseconds(0), p_.stop);
    } catch (const Error& e) {
      return fail(e.status(), e.what());
    }
    if (w == Session::Wait::kDisconnected) return fail(STATUS_CONNECTION_DISCONNECTED, "the client disconnected during the run");
    if (w != Session::Wait::kDone) return fail(STATUS_CANCELLED, "stopped during the run");
    if (c.kind != Control::kEnd) return fail(STATUS_DATA_ERROR, "the client sent something other than END");
    ctl_posted_ = false;
    end_ = c;
  }
  const NTSTATUS verdict = r_.status;
  const std::string why = r_.error;
  if (end_->arg[1] != 0 && r_.ok()) {
    r_.status = STATUS_CANCELLED;
    r_.error = "the client stopped early";
  }
  // Receives posted for messages that will not come (the client stopped early).
  uint64_t left = posted_receives_ - std::min(posted_receives_, taken_) + (ctl_posted_ ? 1 : 0);
  if (left > 0) {
    server_.qp->Dispatch->NdkFlush(server_.qp);
    idle_ = 0;
    while (left > 0) {
      ULONG got = server_.recv_cq->Dispatch->NdkGetCqResults(server_.recv_cq, results_, kPollBatch);
      left -= std::min<uint64_t>(left, got);
      if (got == 0 && stalled()) return fail(STATUS_IO_TIMEOUT, "flushing the receives left over");
    }
  }
  ctl_posted_ = false;
  return reply(Control::kDone, verdict, r_.messages, why);
}

// The server's answer, behind a control receive for the client's next message.
bool Engine::reply(uint32_t kind, NTSTATUS status, uint64_t messages, const std::string& why) {
  Control answer;
  answer.kind = kind;
  answer.arg[0] = static_cast<uint64_t>(static_cast<uint32_t>(status));
  answer.arg[1] = messages;
  answer.text = why;
  try {
    link_.session->post_control_receive();
    link_.session->send_control(answer, kControlTimeout);
  } catch (const Error& e) {
    return fail(e.status(), e.what());
  }
  return true;
}

}  // namespace

Result run(Session& session, const Params& params) {
  Result result;
  Link link{session.local(), session.peer(), session.queue_depth(), session.disconnect_count(), &session};
  Engine(link, params, result).execute();
  return result;
}

Served serve(Session& session, const std::atomic<bool>* stop, RunObserver on_run, void* context) {
  Served served;
  for (;;) {
    Control request;
    Session::Wait w;
    try {
      w = session.wait_control(request, std::chrono::milliseconds(0), stop);
    } catch (const Error& e) {
      served.status = e.status();
      served.error = e.what();
      return served;
    }
    if (w == Session::Wait::kStopped) {
      served.status = STATUS_CANCELLED;
      served.error = "stopped";
      return served;
    }
    if (w == Session::Wait::kDisconnected) {
      served.status = STATUS_CONNECTION_DISCONNECTED;
      served.error = "the client disconnected without saying goodbye";
      return served;
    }
    if (request.kind == Control::kBye) {
      // The client disconnects once its goodbye completed; leaving first would cancel it.
      for (int i = 0; i < 400 && session.disconnects() == 0; ++i) usleep(5000);
      return served;
    }
    if (request.kind != Control::kRun) {
      served.status = STATUS_DATA_ERROR;
      served.error = "the client sent an unexpected control message";
      return served;
    }
    Params params = decode_run(request);
    params.stop = stop;
    Result result;
    Link link{session.peer(), session.local(), session.queue_depth(), session.disconnect_count(), &session};
    const bool going_on = Engine(link, params, result).serve(request);
    ++served.runs;
    if (on_run != nullptr) on_run(context, params, result);
    if (!going_on) {
      served.status = result.status;
      served.error = std::string(to_string(params.operation)) + " " + to_string(params.mode) + ": " + result.error;
      return served;
    }
  }
}

Result run(Pair& pair, const Params& params) {
  Result result;
  Link link{pair.client(), pair.server(), pair.options().queue_depth, pair.disconnect_count()};
  Engine(link, params, result).execute();
  return result;
}

}  // namespace softndk::perf
