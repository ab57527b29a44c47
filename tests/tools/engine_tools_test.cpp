// What the tools need from the perf engine, checked directly: Params::stop ends a run in
// every operation, mode and flag set with its figures so far and leaves the Pair usable;
// Params::progress reaches warm-up + iterations; sge_count > 1 moves every byte (odd sizes
// too); the Pair carries private data both ways, and the server's reject and silence
// become STATUS_CONNECTION_REFUSED and STATUS_IO_TIMEOUT. Prints "N passed, N failed".
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "perf/engine.hpp"
#include "perf/pair.hpp"

namespace {

namespace perf = softndk::perf;

int g_passed = 0, g_failed = 0;

void expect(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL %s\n", what.c_str());
  }
}

std::string name(const perf::Params& p) {
  return std::string(perf::to_string(p.operation)) + " " + perf::to_string(p.mode) + " size " +
         std::to_string(p.size) + " sge " + std::to_string(p.sge_count) + " flags " + std::to_string(p.flags) +
         (p.verify ? " verified" : "");
}

// A verified run right after: fails if a stopped run left receives posted or requests out.
void expect_usable(perf::Pair& pair, perf::Params p, const std::string& what) {
  p.stop = nullptr;
  p.progress = nullptr;
  p.iterations = 300;
  p.warmup = 10;
  p.verify = true;
  perf::Result r = perf::run(pair, p);
  expect(r.ok() && r.iterations == 300, what + ": the pair is usable afterwards" + (r.ok() ? "" : ": " + r.error));
}

void stops(perf::Pair& pair) {
  for (perf::Operation op : {perf::Operation::kSend, perf::Operation::kWrite, perf::Operation::kRead}) {
    for (perf::Mode mode : {perf::Mode::kLatency, perf::Mode::kBandwidth}) {
      for (ULONG flags : {ULONG{0}, ULONG{NDK_OP_FLAG_SILENT_SUCCESS}}) {
        for (bool verify : {false, true}) {
          perf::Params p;
          p.operation = op;
          p.mode = mode;
          p.size = 24;
          p.queue_depth = 8;
          p.flags = flags;
          p.verify = verify;
          const std::string what = name(p);

          // Set before the run: the warm-up stops at once, nothing is measured.
          std::atomic<bool> stop{true};
          p.stop = &stop;
          p.warmup = 1000;
          p.iterations = 1000;
          perf::Result r = perf::run(pair, p);
          expect(r.cancelled() && r.iterations == 0 && !r.error.empty(), what + ": stop during the warm-up");
          expect_usable(pair, p, what + " (stopped in warm-up)");

          // Set while the measured iterations run: some are measured, not all.
          stop = false;
          std::atomic<uint64_t> progress{0};
          p.progress = &progress;
          p.warmup = 0;
          p.iterations = uint64_t{1} << 20;  // far more than run before the stop
          std::thread stopper([&] {
            while (progress.load() < 2000) std::this_thread::sleep_for(std::chrono::microseconds(200));
            stop = true;
          });
          r = perf::run(pair, p);
          stopper.join();
          expect(r.cancelled() && r.iterations >= 1 && r.iterations < p.iterations && r.seconds > 0 && r.bytes > 0,
                 what + ": stopped while measuring (" + std::to_string(r.iterations) + " iterations) " + r.error);
          if (mode == perf::Mode::kLatency)
            expect(r.latency.min_ns > 0 && r.latency.min_ns <= r.latency.median_ns &&
                       r.latency.median_ns <= r.latency.max_ns,
                   what + ": percentiles of the iterations that ran");
          expect_usable(pair, p, what + " (stopped while measuring)");

          // Progress, without a stop, ends at warm-up + iterations.
          p.stop = nullptr;
          p.warmup = 77;
          p.iterations = 1234;
          progress = 0;
          r = perf::run(pair, p);
          expect(r.ok() && progress.load() == 1311, what + ": progress reaches warm-up + iterations");
        }
      }
    }
  }
}

void sges(perf::Pair& pair) {
  for (perf::Operation op : {perf::Operation::kSend, perf::Operation::kWrite, perf::Operation::kRead}) {
    for (perf::Mode mode : {perf::Mode::kLatency, perf::Mode::kBandwidth}) {
      for (ULONG n : {1u, 2u, 3u, 7u}) {
        for (size_t size : {size_t{7}, size_t{100}, size_t{4097}}) {
          perf::Params p;
          p.operation = op;
          p.mode = mode;
          p.size = size;
          p.sge_count = n;
          p.iterations = 101;
          p.warmup = 3;
          p.queue_depth = 8;
          p.verify = true;
          if (n > size) continue;
          perf::Result r = perf::run(pair, p);
          expect(r.ok() && r.bytes == r.messages * size, name(p) + (r.ok() ? "" : ": " + r.error));
        }
      }
      perf::Params bad;
      bad.operation = op;
      bad.sge_count = 8;  // above the Pair's max_sge of 7
      expect(perf::run(pair, bad).status == STATUS_INVALID_PARAMETER, "refuses more SGEs than the QPs have");
      bad.sge_count = 5;
      bad.size = 4;
      expect(perf::run(pair, bad).status == STATUS_INVALID_PARAMETER, "refuses more SGEs than bytes");
      bad.sge_count = 0;
      bad.size = 8;
      expect(perf::run(pair, bad).status == STATUS_INVALID_PARAMETER, "refuses 0 SGEs");
    }
  }
}

void connections() {
  perf::PairOptions options;
  options.area_size = 4096;
  options.queue_depth = 4;
  options.caller_data = {'h', 'e', 'l', 'l', 'o'};
  options.callee_data = std::vector<uint8_t>(148, 0x5a);
  {
    perf::Pair pair(options);
    expect(pair.server().peer_data == options.caller_data, "the server got the caller's private data");
    expect(pair.client().peer_data == options.callee_data, "the client got the callee's private data");
  }
  options.server_answer = perf::PairOptions::Answer::kReject;
  try {
    perf::Pair pair(options);
    expect(false, "a rejected connection throws");
  } catch (const perf::Error& e) {
    expect(e.status() == STATUS_CONNECTION_REFUSED, std::string("reject: STATUS_CONNECTION_REFUSED: ") + e.what());
  }
  SoftNdkSetTunable("connect_timeout_ms", "100");
  options.server_answer = perf::PairOptions::Answer::kIgnore;
  try {
    perf::Pair pair(options);
    expect(false, "an unanswered connection throws");
  } catch (const perf::Error& e) {
    expect(e.status() == STATUS_IO_TIMEOUT, std::string("no answer: STATUS_IO_TIMEOUT: ") + e.what());
  }
  SoftNdkResetTunables();
  options.server_answer = perf::PairOptions::Answer::kAccept;
  options.caller_data.assign(57, 1);  // above MaxCallerData (56)
  try {
    perf::Pair pair(options);
    expect(false, "too much private data throws");
  } catch (const perf::Error& e) {
    expect(e.status() == STATUS_INVALID_PARAMETER, std::string("too much private data: ") + e.what());
  }
}

}  // namespace

int main() {
  try {
    perf::PairOptions options;
    options.area_size = 1 << 16;
    options.queue_depth = 16;
    options.max_sge = 7;
    perf::Pair pair(options);
    expect(pair.client().max_sge == 7 && pair.server().max_sge == 7, "QPs with 7 SGEs");
    stops(pair);
    sges(pair);
    expect(pair.disconnects() == 0, "no disconnect during the runs");
    connections();
  } catch (const std::exception& e) {
    expect(false, std::string("set-up: ") + e.what());
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
