// The perf engine shared by softndk_bench and the ndkperf tool (one engine, like UCX's
// libperf): runs one kind of traffic over a Pair and measures it.
//
// What an iteration is, and what it measures (a single thread drives both endpoints; on
// the in-process fabric a request is complete when its post returns):
//   write, read  latency:   post one request and poll its completion: the one-sided round
//                            trip as the initiator sees it.
//   send         latency:   ping-pong. The client sends; the server polls the receive,
//                            reposts it and sends back; the client polls that receive and
//                            reposts. Each side also reaps its send completion. An iteration
//                            is one round trip; latency figures are half of it (one-way),
//                            as ib_send_lat reports.
//   any          bandwidth: keep queue_depth requests outstanding; poll completions (up to
//                            64 at a time) and repost, each burst of posts as one DEFER
//                            chain (Params::defer). Sends only go out against posted
//                            receives, which the server reposts as it consumes them.
// SILENT_SUCCESS in `flags`: only every queue_depth-th request (and the last one) is
// signalled and polled. Requests complete in order, so that completion proves the silent
// ones before it; their latency samples are the post alone.
// The measured loop allocates nothing and makes no system call.
//
// Two processes (src/perf/session.hpp; the iWARP fabric): the client process runs the
// same iterations on its side while the server process plays the server's part
// (serve()), so every figure means what it means in one process. Before each run the
// client sends the run's parameters in a control message and waits until the server is
// ready (its first receives posted); after it, it says so and waits for the server's
// verdict. The server's part: nothing for writes and reads (its memory is the target);
// for send latency, take each ping, repost, send the pong; for send bandwidth, take and
// repost, and tell the client by an RDMA write into its control page how many receives
// it has posted so far (iWARP has no receiver-not-ready retry: a send without a posted
// receive ends the connection), so sends still go out only against posted receives. The
// warm-up and the measured iterations are one stream of messages to the server.
// --verify between processes: the receiver of each send checks it (the server reports
// what it found); writes and reads, whose targets and sources the other process owns,
// cannot be verified.
//
// For tools: `sge_count` splits each message (and each receive) into that many adjacent
// SGEs; `stop` ends a run early (a signal handler's flag) and `progress` shows how far it
// got. Both are looked at every 256 iterations only.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "perf/pair.hpp"
#include "perf/session.hpp"

namespace softndk::perf {

enum class Operation { kSend, kWrite, kRead };
enum class Mode { kLatency, kBandwidth };

const char* to_string(Operation operation);
const char* to_string(Mode mode);

struct Params {
  Operation operation = Operation::kWrite;
  Mode mode = Mode::kLatency;
  size_t size = 8;              // bytes per message: 1 .. the Pair's area_size
  uint64_t iterations = 10000;  // measured iterations (send latency: round trips)
  uint64_t warmup = 1000;       // iterations run first, not measured
  ULONG queue_depth = 16;       // bandwidth: outstanding requests; SILENT: signal period
  ULONG flags = 0;              // NDK_OP_FLAG_* on every request (SILENT_SUCCESS, INLINE...)
  // Bandwidth: each burst of posts is one deferred chain, NDK_OP_FLAG_DEFER on all but its
  // last request (the NDK's doorbell batching: a fabric may send the burst together).
  bool defer = true;
  // Gives each message its own pattern (a fresh one per message and per run) and checks
  // every byte where it lands. Timings then include the fill and the check.
  bool verify = false;
  bool samples = true;          // latency: time each iteration (percentiles)
  bool keep_samples = false;    // latency: also return them (Result::samples_ns)
  // SGEs per request and per receive: the message cut into this many adjacent pieces
  // (sizes differing by at most one byte). 1 .. min(size, the Pair's max_sge).
  ULONG sge_count = 1;
  // Optional. Read every 256 iterations; once true the run stops posting, reaps what is
  // outstanding (leaving no receive posted, so the Pair stays usable) and returns
  // STATUS_CANCELLED with the figures of the measured iterations that completed
  // (Result::iterations < Params::iterations; none if it stopped during the warm-up).
  const std::atomic<bool>* stop = nullptr;
  // Optional. Iterations finished so far, warm-up ones first (0 .. warmup + iterations);
  // stored every 256 iterations and at the end of each phase.
  std::atomic<uint64_t>* progress = nullptr;
};

// Per message, in ns. From per-iteration samples; each includes one timestamp read.
struct Latency {
  double min_ns = 0;
  double median_ns = 0;
  double p99_ns = 0;
  double max_ns = 0;
};

struct Result {
  NTSTATUS status = STATUS_SUCCESS;  // the first failure, if any
  std::string error;                 // what failed (empty on success)
  uint64_t iterations = 0;           // measured
  uint64_t messages = 0;             // measured messages (send latency: 2 per iteration)
  uint64_t bytes = 0;                // measured payload bytes
  double seconds = 0;                // measured time
  Latency latency;                   // latency mode with samples
  double timer_ns = 0;               // the cost of one timestamp read
  std::vector<double> samples_ns;    // keep_samples: one per iteration (send: one-way)

  bool ok() const { return status == STATUS_SUCCESS; }
  bool cancelled() const { return status == STATUS_CANCELLED; }  // Params::stop ended it
  double ns_per_message() const { return messages ? seconds * 1e9 / static_cast<double>(messages) : 0; }
  double bandwidth() const { return seconds > 0 ? static_cast<double>(bytes) / seconds : 0; }  // bytes/s
  double message_rate() const { return seconds > 0 ? static_cast<double>(messages) / seconds : 0; }
};

// Runs warmup then the measured iterations. Never throws for a run-time failure: the
// Result says what went wrong (a failed run may leave the Pair's connection broken).
Result run(Pair& pair, const Params& params);
// The same, as the client of a Session, with the server process running serve().
Result run(Session& session, const Params& params);

// The server process's side of a Session: takes the client's runs one after the other
// until it says goodbye (ok), disconnects, *stop is set or a run fails. `on_run` is called
// after each run with its parameters and the server's part of it (messages it took).
struct Served {
  NTSTATUS status = STATUS_SUCCESS;
  std::string error;
  uint64_t runs = 0;
  bool ok() const { return status == STATUS_SUCCESS; }
};
using RunObserver = void (*)(void* context, const Params& params, const Result& result);
Served serve(Session& session, const std::atomic<bool>* stop, RunObserver on_run = nullptr,
             void* context = nullptr);

}  // namespace softndk::perf
