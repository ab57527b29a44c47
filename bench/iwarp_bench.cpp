// softndk_iwarp_bench: the iWARP fabric (SOFTNDK_FABRIC_TCP, both endpoints in this
// process on the loopback interface, driven by the perf engine) against raw TCP (the
// tcp_baseline library: both ends busy-polling non-blocking sockets), in the same run.
// Issue 10's speed bars:
//   - 8-byte send, half round trip            <= 1.3 x a busy-polled TCP ping-pong
//   - 64 KiB and 1 MiB RDMA write bandwidth   >= 0.9 x a TCP stream of the same sizes,
//     with CRC off, and with CRC on against a stream that computes CRC32c over every
//     buffer on both ends
//   - 1 MiB RDMA read bandwidth printed beside them.
// Every repetition of a case runs SoftNDK and the baseline back to back (which one goes
// first alternates), so machine noise hits both alike. Requests are signalled one in
// kQueueDepth, as perftest moderates its CQ (--signal-all: every one). See bench/README.md.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "perf/clock.hpp"
#include "perf/engine.hpp"
#include "perf/pair.hpp"
#include "tcp_baseline_lib.hpp"

#include <nlohmann/json.hpp>

namespace {

namespace perf = softndk::perf;
namespace tcp = softndk::tcp_baseline;
namespace bench = softndk::bench;

// The bars.
constexpr double kLatencyBar = 1.3;    // SoftNDK / TCP, at most
constexpr double kBandwidthBar = 0.9;  // SoftNDK / TCP, at least

constexpr ULONG kQueueDepth = 32;  // bandwidth: requests outstanding (as softndk_bench)
constexpr double kIdleTimeout = 10;  // the baseline: a silent peer fails the run

// --quick (the ctest): a 64th of the messages.
uint64_t g_divisor = 1;
// As perftest's CQ moderation: only every kQueueDepth-th request is signalled (its
// completion proves the silent ones before it). --signal-all: every request is, and on
// iWARP each then waits for the proof that the peer placed it.
ULONG g_flags = NDK_OP_FLAG_SILENT_SUCCESS;
// SoftNDK's side: two ndkperf processes (the default, as the baseline's two threads), or
// --one-process: a Pair in this process, one thread driving both ends.
bool g_one_process = false;
std::string g_ndkperf = SOFTNDK_NDKPERF;

// Messages per repetition, the same for both sides: 20000 round trips for the ping-pong,
// 256 MiB for a stream (as tcp_baseline's defaults). A tenth more as warm-up.
uint64_t messages(bool latency, size_t size) {
  const uint64_t n = latency ? 20000 : (uint64_t{256} << 20) / size;
  return std::max<uint64_t>(latency ? 200 : 16, n / g_divisor);
}

enum class Kind { kSendLatency, kWriteBandwidth, kReadBandwidth };

struct Case {
  Kind kind;
  size_t size;
  bool crc;
  std::string name;
  // Bandwidth: SoftNDK posts each burst as one NDK_OP_FLAG_DEFER chain (ndkperf's
  // default); a case without it (one doorbell per request) is printed beside, no bar.
  bool defer = true;
  bool latency() const { return kind == Kind::kSendLatency; }
  bool has_bar() const { return kind != Kind::kReadBandwidth && defer; }
};

// One repetition's pair of figures: latency in ns (half round trip), bandwidth in bytes/s.
struct Sample {
  double ndk = 0, tcp = 0;
};

// Every repetition of every case, recorded by the benchmarks for the summary (medians and
// spread over the repetitions, whatever Google Benchmark is told to report).
struct Record {
  Case c;
  std::vector<Sample> samples;
  std::string error;
};
std::deque<Record> g_records;  // stable references

Record& record_of(const Case& c) {
  for (Record& r : g_records)
    if (r.c.name == c.name) return r;
  g_records.push_back(Record{c, {}, {}});
  return g_records.back();
}

// The CPUs: the SoftNDK driver thread and the baseline's client on the first, the
// baseline's server on the second (the fabric's progress thread is not pinned).
int g_cpu_a = 0, g_cpu_b = 0;

// ---- SoftNDK ------------------------------------------------------------------------------

// After a write stream, the time until a zero-length read posted behind the last write
// completes: a write's completion only says the socket took its bytes, the read returns
// once every write before it was placed (RDMAP ordering). Seconds, or <0 on failure.
double drain_writes(perf::Pair& pair, std::string& error) {
  perf::Endpoint& c = pair.client();
  const perf::Ticks start = perf::now();
  NTSTATUS status = c.qp->Dispatch->NdkRead(c.qp, nullptr, nullptr, 0, reinterpret_cast<uintptr_t>(pair.server().in()),
                                            pair.server().remote_token, 0);
  if (status != STATUS_SUCCESS) {
    error = "fence read: the post returned " + perf::status_text(status);
    return -1;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  NDK_RESULT result{};
  while (c.send_cq->Dispatch->NdkGetCqResults(c.send_cq, &result, 1) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      error = "fence read: no completion within 5 s";
      return -1;
    }
  }
  if (result.Status != STATUS_SUCCESS) {
    error = "fence read completed with " + perf::status_text(result.Status);
    return -1;
  }
  return perf::to_ns(perf::now() - start) * 1e-9;
}

// One SoftNDK measurement on a fresh pair (its set-up is not timed). Returns false with
// `error` set on failure.
bool measure_ndk(const Case& c, double& figure, double& seconds, std::string& error) {
  if (NTSTATUS status = SoftNdkSetTunable("iwarp_crc", c.crc ? "1" : "0"); status != STATUS_SUCCESS) {
    error = "iwarp_crc: " + perf::status_text(status);
    return false;
  }
  perf::PairOptions options;
  options.fabric = SOFTNDK_FABRIC_TCP;
  options.area_size = c.size;
  std::unique_ptr<perf::Pair> pair;
  try {
    pair = std::make_unique<perf::Pair>(options);  // unpinned: the fabric's thread may be started here
  } catch (const std::exception& e) {
    error = std::string("pair: ") + e.what();
    return false;
  }
  perf::Params params;
  params.size = c.size;
  params.queue_depth = kQueueDepth;
  params.iterations = messages(c.latency(), c.size);
  params.warmup = params.iterations / 10;
  params.operation = c.kind == Kind::kSendLatency    ? perf::Operation::kSend
                     : c.kind == Kind::kWriteBandwidth ? perf::Operation::kWrite
                                                       : perf::Operation::kRead;
  params.mode = c.latency() ? perf::Mode::kLatency : perf::Mode::kBandwidth;
  params.flags = g_flags;
  params.defer = c.defer;
  perf::Result result;
  double drain = 0;
  try {
    tcp::ScopedPin pinned(g_cpu_a);
    result = perf::run(*pair, params);
    if (result.ok() && c.kind == Kind::kWriteBandwidth) drain = drain_writes(*pair, error);
  } catch (const std::exception& e) {
    error = e.what();
    return false;
  }
  if (!result.ok()) {
    error = result.error;
    return false;
  }
  if (drain < 0) return false;
  seconds = result.seconds + drain;
  figure = c.latency() ? result.latency.median_ns : static_cast<double>(result.bytes) / seconds;
  return true;
}

// The same measurement between two processes, as the baseline's two threads: an ndkperf
// --server pinned to the second CPU and an ndkperf --client pinned to the first, each
// driving its own side (its CQ polls drive its socket). The CRC is the iwarp_crc tunable,
// passed to both through the environment.
bool measure_ndk_processes(const Case& c, double& figure, double& seconds, std::string& error) {
  const std::string crc = std::string("SOFTNDK_IWARP_CRC=") + (c.crc ? "1" : "0");
  bench::Process server({g_ndkperf, "--fabric", "tcp", "--server", "--bind", "127.0.0.1", "-p", "0", "--cpu",
                         std::to_string(g_cpu_b)},
                        {crc});
  constexpr std::string_view kListening = "listening on 127.0.0.1:";
  const std::string line = server.read_until(std::string(kListening), std::chrono::seconds(10));
  const size_t at = line.find(kListening);
  const std::string port = at == std::string::npos ? "" : std::to_string(std::atoi(line.c_str() + at + kListening.size()));
  if (port.empty() || port == "0") {
    error = "ndkperf --server did not say where it listens: " + server.output();
    return false;
  }
  const uint64_t n = messages(c.latency(), c.size);
  const char* op = c.kind == Kind::kSendLatency ? "send" : c.kind == Kind::kWriteBandwidth ? "write" : "read";
  std::vector<std::string> argv = {g_ndkperf, "--fabric", "tcp", "--client",
                                   "127.0.0.1:" + port, "--cpu", std::to_string(g_cpu_a),
                                   op, c.latency() ? "--lat" : "--bw", "-s", std::to_string(c.size),
                                   "-n", std::to_string(n), "-w", std::to_string(n / 10),
                                   "-q", std::to_string(kQueueDepth), "--json", "--no-progress"};
  if (g_flags & NDK_OP_FLAG_SILENT_SUCCESS) argv.push_back("--silent");
  if (!c.defer) argv.push_back("--no-defer");
  bench::Process client(argv, {crc});
  const std::string out = client.finish(std::chrono::seconds(120));
  server.finish(std::chrono::seconds(10));
  try {
    const auto result = nlohmann::json::parse(out).at("results").at(0);
    if (result.at("status") != "ok") {
      error = "ndkperf: " + result.value("error", std::string("failed"));
      return false;
    }
    seconds = result.at("seconds").get<double>();
    figure = c.latency() ? result.at("latency_ns").at("median").get<double>()
                         : result.at("bytes_per_second").get<double>();
    return true;
  } catch (const std::exception& e) {
    error = std::string("ndkperf --client: ") + e.what() + ": " + out.substr(0, 400);
    return false;
  }
}

// ---- the baseline -------------------------------------------------------------------------

// One raw TCP measurement (one repetition) on a fresh loopback connection, torn down
// before SoftNDK runs again: its server busy-polls while it lives.
bool measure_tcp(const Case& c, double& figure, double& seconds, std::string& error) {
  try {
    tcp::Loopback loopback(g_cpu_b, static_cast<int>(tcp::default_sockbuf()), kIdleTimeout);
    tcp::Figures f;
    {
      tcp::ScopedPin pinned(g_cpu_a);
      const uint64_t n = messages(c.latency(), c.size);
      f = loopback.client().measure(tcp::Run{c.latency(), c.size, n, n / 10, 1, c.crc});
    }
    if (std::string e = loopback.finish(); !e.empty()) throw tcp::Failure("server: " + e);
    figure = c.latency() ? f.median_ns : f.bps;
    seconds = f.seconds;
    return true;
  } catch (const std::exception& e) {
    error = std::string("raw TCP: ") + e.what();
    return false;
  }
}

// ---- the benchmark ------------------------------------------------------------------------

// One repetition: SoftNDK and the baseline back to back, the order alternating. Time is
// SoftNDK's per message (send: per one-way message); the counters give both figures.
void bm_case(benchmark::State& state, const Case& c) {
  Record& rec = record_of(c);
  const bool ndk_first = rec.samples.size() % 2 == 0;
  Sample s;
  double ndk_seconds = 0, tcp_seconds = 0;
  std::string error;
  bool ok = true;
  for (int turn = 0; turn < 2 && ok; ++turn) {
    ok = (turn == 0) == ndk_first
             ? (g_one_process ? measure_ndk(c, s.ndk, ndk_seconds, error)
                              : measure_ndk_processes(c, s.ndk, ndk_seconds, error))
             : measure_tcp(c, s.tcp, tcp_seconds, error);
  }
  const uint64_t n = messages(c.latency(), c.size) * (c.latency() ? 2 : 1);
  while (state.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
    if (!ok) {
      state.SkipWithError(error.c_str());
      continue;
    }
    state.SetIterationTime(ndk_seconds);
  }
  if (!ok) {
    if (rec.error.empty()) rec.error = error;
    return;
  }
  rec.samples.push_back(s);
  if (c.latency()) {
    state.counters["ndk_p50_ns"] = s.ndk;
    state.counters["tcp_p50_ns"] = s.tcp;
  } else {
    state.counters["ndk_MiB_s"] = s.ndk / (1 << 20);
    state.counters["tcp_MiB_s"] = s.tcp / (1 << 20);
  }
  state.counters["vs_tcp"] = s.ndk / s.tcp;
}

std::vector<Case> cases() {
  std::vector<Case> all;
  auto add = [&](Kind kind, size_t size, bool crc, bool defer = true) {
    const char* op = kind == Kind::kSendLatency ? "send/lat/" : kind == Kind::kWriteBandwidth ? "write/bw/" : "read/bw/";
    all.push_back(Case{kind, size, crc, op + std::to_string(size) + (crc ? "/crc" : "/nocrc") + (defer ? "" : "/nodefer"),
                       defer});
  };
  for (bool crc : {false, true}) {
    add(Kind::kSendLatency, 8, crc);
    add(Kind::kWriteBandwidth, 65536, crc);
    add(Kind::kWriteBandwidth, 1 << 20, crc);
    add(Kind::kReadBandwidth, 1 << 20, crc);
  }
  add(Kind::kWriteBandwidth, 65536, false, /*defer=*/false);
  return all;
}

// ---- the summary --------------------------------------------------------------------------

double median_of(std::vector<double> v) { return tcp::median_of(std::move(v)); }

std::string size_name(size_t size) {
  if (size >= (1 << 20) && size % (1 << 20) == 0) return std::to_string(size >> 20) + " MiB";
  if (size >= 1024 && size % 1024 == 0) return std::to_string(size >> 10) + " KiB";
  return std::to_string(size) + " B";
}

// Latency in us, bandwidth in MiB/s.
std::string number(bool latency, double v) {
  char text[32];
  if (latency) std::snprintf(text, sizeof(text), "%.2f", v * 1e-3);
  else std::snprintf(text, sizeof(text), "%.0f", v / (1 << 20));
  return text;
}

// "median unit (min..max)"
std::string spread_text(bool latency, const std::vector<double>& v) {
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return number(latency, median_of(v)) + (latency ? " us (" : " MiB/s (") + number(latency, *lo) + ".." +
         number(latency, *hi) + ")";
}

// Forwards everything to the display reporter, then prints the summary from g_records.
class SummaryReporter : public benchmark::BenchmarkReporter {
 public:
  SummaryReporter(std::unique_ptr<benchmark::BenchmarkReporter> display, FILE* out)
      : display_(std::move(display)), out_(out) {}
  bool ReportContext(const Context& context) override {
    start_ = bench::sample_cpu();
    std::fprintf(out_ == stdout ? stderr : out_,
                 "SoftNDK iWARP fabric (loopback, one process) vs raw TCP (loopback, busy-polled), "
                 "driver/client on CPU %d, TCP server on CPU %d\n",
                 g_cpu_a, g_cpu_b);
    return display_->ReportContext(context);
  }
  void ReportRuns(const std::vector<Run>& runs) override { display_->ReportRuns(runs); }
  void Finalize() override {
    display_->Finalize();
    print();
  }

 private:
  void print() {
    FILE* o = out_;
    std::fprintf(o, "\n==== SoftNDK iWARP vs raw TCP, same run (medians over the repetitions, min..max) ====\n");
    std::fprintf(o, "%-34s %-30s %-30s %-22s %-12s %s\n", "", "SoftNDK iWARP", "raw TCP (reference)", "ratio", "bar",
                 "");
    int misses = 0, bars = 0;
    for (const Record& r : g_records) {
      const bool lat = r.c.latency();
      std::string what = (r.c.kind == Kind::kSendLatency     ? "send, half RTT "
                          : r.c.kind == Kind::kWriteBandwidth ? "write bw "
                                                              : "read bw ") +
                         size_name(r.c.size) + (r.c.crc ? ", CRC" : ", no CRC") + (r.c.defer ? "" : ", no DEFER");
      if (r.samples.empty()) {
        std::fprintf(o, "%-34s ERROR: %s\n", what.c_str(), r.error.empty() ? "not measured" : r.error.c_str());
        continue;
      }
      std::vector<double> ndk, ref, ratio;
      for (const Sample& s : r.samples) {
        ndk.push_back(s.ndk);
        ref.push_back(s.tcp);
        ratio.push_back(s.ndk / s.tcp);
      }
      const double m = median_of(ndk) / median_of(ref);
      const auto [rlo, rhi] = std::minmax_element(ratio.begin(), ratio.end());
      char ratio_text[48];
      std::snprintf(ratio_text, sizeof(ratio_text), "%.2fx (%.2f..%.2f)", m, *rlo, *rhi);
      std::string bar = "-", verdict = "(printed beside)";
      if (r.c.has_bar()) {
        const bool pass = lat ? m <= kLatencyBar : m >= kBandwidthBar;
        char text[16];
        std::snprintf(text, sizeof(text), "%s %.1fx", lat ? "<=" : ">=", lat ? kLatencyBar : kBandwidthBar);
        bar = text;
        ++bars;
        if (!pass) {
          ++misses;
          char miss[64];
          // By how much: what SoftNDK has to gain to reach the bar (a ratio printed as the
          // bar's own figure can still be a hair short of it).
          const double short_by = (lat ? m / kLatencyBar : kBandwidthBar / m) - 1;
          std::snprintf(miss, sizeof(miss), "MISS (%.1f%% short)", std::max(0.1, 100 * short_by));
          verdict = miss;
        } else {
          verdict = "PASS";
        }
      }
      std::fprintf(o, "%-34s %-30s %-30s %-22s %-12s %s\n", what.c_str(), spread_text(lat, ndk).c_str(), spread_text(lat, ref).c_str(),
                   ratio_text, bar.c_str(), verdict.c_str());
      if (!r.error.empty()) std::fprintf(o, "%-34s (a repetition failed: %s)\n", "", r.error.c_str());
    }
    std::fprintf(o,
                 "(ratio: SoftNDK median / TCP median, then the range of the per-repetition ratios; %zu repetition(s),\n"
                 " SoftNDK and TCP alternating; SoftNDK %s. Latency: median of one-way samples. Write\n"
                 " bandwidth is timed until every byte was placed; TCP's until the server has them all. SoftNDK\n"
                 " posts each bandwidth burst as one NDK_OP_FLAG_DEFER chain, sent together; 'no DEFER': a\n"
                 " doorbell per request.)\n",
                 g_records.empty() ? size_t{0} : g_records.front().samples.size(),
                 g_one_process ? "in this process" : "as two ndkperf processes");
    std::fprintf(o, "bars: %d of %d met%s\n", bars - misses, bars,
                 misses ? " -- a miss is a measurement, not an error (exit status 0)" : "");
    bench::print_other_activity(o, "", start_);
  }

  std::unique_ptr<benchmark::BenchmarkReporter> display_;
  FILE* out_;
  bench::CpuSample start_;
};

}  // namespace

int main(int argc, char** argv) {
  // --quick (ours, not Google Benchmark's): a 64th of the messages, for a smoke test;
  // --signal-all: see g_flags; --one-process: see g_one_process.
  std::vector<char*> arguments;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) g_divisor = 64;
    else if (std::strcmp(argv[i], "--signal-all") == 0) g_flags = 0;
    else if (std::strcmp(argv[i], "--one-process") == 0) g_one_process = true;
    else arguments.push_back(argv[i]);
  }
  if (!bench::initialize(argv[0], arguments)) return 1;

  const std::vector<int> cpus = tcp::allowed_cpus();
  g_cpu_a = cpus.at(0);
  g_cpu_b = cpus.size() > 1 ? cpus[1] : cpus[0];
  for (const Case& c : cases()) {
    benchmark::RegisterBenchmark(c.name.c_str(), [c](benchmark::State& st) { bm_case(st, c); })
        ->UseManualTime()
        ->Unit(c.latency() ? benchmark::kNanosecond : benchmark::kMicrosecond)
        ->Iterations(static_cast<benchmark::IterationCount>(messages(c.latency(), c.size) * (c.latency() ? 2 : 1)));
  }
  FILE* summary = stdout;
  auto display = bench::display_reporter(arguments, summary);
  SummaryReporter reporter(std::move(display), summary);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;  // a missed bar is a measurement, not a failure
}
