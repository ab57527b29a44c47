#include "perf/engine.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>

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

class Engine {
 public:
  Engine(Pair& pair, const Params& params, Result& result)
      : p_(params), r_(result), pair_(pair), client_(pair.client()), server_(pair.server()) {}

  void execute() {
    if (!prepare()) return;
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

 private:
  bool prepare();
  bool phase(uint64_t n, bool measured);
  bool one_sided_latency(uint64_t n, bool measured);
  bool one_sided_bandwidth(uint64_t n, bool measured);
  bool send_latency(uint64_t n, bool measured);
  bool send_bandwidth(uint64_t n, bool measured);
  bool leg(Endpoint& from, Endpoint& to, uint64_t index, uint64_t n, uint64_t id);
  void summarise();

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
      if (pair_.disconnects() > 0) r_.error += " (the connection was terminated)";
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
    if (r.Status != STATUS_SUCCESS)
      return fail(r.Status, text("%s #%llu completed with %s", what, index, status_text(r.Status).c_str()));
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
      if (stalled()) {
        fail(STATUS_IO_TIMEOUT, text("no %s completion within 5 s", what));
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
  Pair& pair_;
  Endpoint& client_;
  Endpoint& server_;
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
  if (p_.queue_depth == 0 || p_.queue_depth > pair_.options().queue_depth)
    return fail(STATUS_INVALID_PARAMETER,
                text("queue_depth %lu: must be 1 .. the Pair's %lu", static_cast<unsigned long>(p_.queue_depth),
                     static_cast<unsigned long>(pair_.options().queue_depth)));
  const ULONG max_sge = std::min({client_.max_sge, server_.max_sge, kMaxSge});
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
  next_id_ = g_run_counter.fetch_add(1) << 40;
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
  while (done < n) {
    while (posted < n && posted - done < window_) {
      // After a stop: one more request, signalled, then only the reaping.
      if ((posted & kCheckpointMask) == 0 && checkpoint(done)) n = posted + 1;
      if (p_.verify) fill(source(posted), p_.size, base + posted);
      NTSTATUS status = post_one_sided(posted, flags(signalled(posted, n)));
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

// One message of a ping-pong: `from` sends message `index`, `to` takes it and reposts.
bool Engine::leg(Endpoint& from, Endpoint& to, uint64_t index, uint64_t n, uint64_t id) {
  uint8_t* data = from.out() + offset(index);
  if (p_.verify) fill(data, p_.size, id);
  const bool signal = signalled(index, n);
  NDK_SGE s[kMaxSge];
  ULONG count = sges(from, data, s);
  NTSTATUS status = from.qp->Dispatch->NdkSend(from.qp, context_of(index), s, count, flags(signal));
  if (status != STATUS_SUCCESS) return fail_post(status, "send", index);
  if (signal && (poll(from.send_cq, 1, "send") == 0 || !check(results_[0], "send", index))) return false;
  if (poll(to.recv_cq, 1, "receive") == 0 || !check(results_[0], "receive", index)) return false;
  if (results_[0].BytesTransferred != p_.size)
    return fail(STATUS_DATA_ERROR, text("receive #%llu: %lu bytes, not %zu", static_cast<unsigned long long>(index),
                                        static_cast<unsigned long>(results_[0].BytesTransferred), p_.size));
  if (p_.verify && !verify_at(to.in() + offset(index), id, index)) return false;
  return index + 1 == n || post_receive(to, index + 1);
}

bool Engine::send_latency(uint64_t n, bool measured) {
  const uint64_t base = next_id_;
  next_id_ += 2 * n;
  // One receive on each side, reposted as it is consumed: none is left over at the end.
  if (!post_receive(server_, 0) || !post_receive(client_, 0)) return false;
  const bool sample = measured && !samples_.empty();
  const Ticks start = now();
  Ticks previous = start;
  for (uint64_t i = 0; i < n; ++i) {
    // After a stop this round trip is the last: it consumes the receives posted for it
    // and posts none.
    if ((i & kCheckpointMask) == 0 && checkpoint(i)) n = i + 1;
    if (!leg(client_, server_, i, n, base + 2 * i)) return false;      // ping
    if (!leg(server_, client_, i, n, base + 2 * i + 1)) return false;  // pong
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
  while (receives < n && receives < window_)
    if (!post_receive(server_, receives++)) return false;
  const Ticks start = now();
  while (done < n || received < n) {
    bool progress = false;
    while (posted < n && posted - done < window_ && posted < receives) {
      // After a stop: sends only for the receives already posted (none is left over).
      if ((posted & kCheckpointMask) == 0 && checkpoint(received)) n = receives;
      uint8_t* data = client_.out() + offset(posted);
      if (p_.verify) fill(data, p_.size, base + posted);
      NDK_SGE s[kMaxSge];
      ULONG count = sges(client_, data, s);
      NTSTATUS status =
          client_.qp->Dispatch->NdkSend(client_.qp, context_of(posted), s, count, flags(signalled(posted, n)));
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
    ULONG taken = server_.recv_cq->Dispatch->NdkGetCqResults(server_.recv_cq, results_, kPollBatch);
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
    } else if (stalled()) {
      return fail(STATUS_IO_TIMEOUT, text("stalled for 5 s with %llu of %llu sends and %llu receives completed",
                                          static_cast<unsigned long long>(done), static_cast<unsigned long long>(n),
                                          static_cast<unsigned long long>(received)));
    }
  }
  if (measured) elapsed_ = now() - start;
  finished(n, measured);
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

}  // namespace

Result run(Pair& pair, const Params& params) {
  Result result;
  Engine(pair, params, result).execute();
  return result;
}

}  // namespace softndk::perf
