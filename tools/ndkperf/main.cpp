// ndkperf: latency and bandwidth of NDK sends, RDMA writes and RDMA reads, measured by the
// perf engine the project's benchmarks use (src/perf/engine.hpp). For one size (-s) or a
// sweep (-a: 1 B to 8 MiB by powers of two); as a table, CSV or JSON; optionally a chart
// drawn by gnuplot.
//
// What an iteration is (the engine's definitions):
//   latency    write, read: post one request and poll its completion (the round trip the
//              initiator sees); send: a ping-pong, reported as half the round trip.
//   bandwidth  queue-depth requests kept outstanding, completions reaped and reposted.
//
// By default both endpoints run in this process, driven by one thread (pinned with --cpu):
// on two hosts of the in-process fabric, or (--fabric tcp) on the host's loopback interface
// with the iWARP fabric, every byte through the kernel's TCP. With --server and --client
// they run in two processes, on one host or two, over the iWARP fabric: the client asks
// for each run and prints the results; the server plays its part (echoes for send latency,
// takes the sends of send bandwidth, is the passive target of writes and reads), prints
// a line per run and exits once its client said goodbye. Each process pins its own side.
//
// Exit status: 0 done; 1 a run or the set-up failed (a refused or timed-out connection,
// the peer going away), or the chart could not be drawn; 2 a bad command line; 128 +
// signal when SIGINT or SIGTERM ended the runs (what was measured is still printed).
#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/cli.hpp"
#include "common/serve.hpp"
#include "ndk/softndk.h"
#include "perf/clock.hpp"
#include "perf/engine.hpp"
#include "perf/pair.hpp"
#include "perf/session.hpp"
#include "perf/stop.hpp"

extern char** environ;

namespace {

namespace perf = softndk::perf;
using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

constexpr const char* kTool = "ndkperf";
constexpr uint64_t kMaxSize = 256ull << 20;        // each endpoint registers 2x this
constexpr uint64_t kSweepMax = 8ull << 20;         // -a: 1 B .. 8 MiB
constexpr uint64_t kMaxIterations = 1ull << 40;
constexpr uint64_t kMaxSamples = 1ull << 26;       // latency: the engine keeps a sample of each
constexpr uint16_t kDefaultPort = 18515;           // perftest's, for familiarity

std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  return softndk::tools::parse(kTool, app, argc, argv);
}

int usage_error(const std::string& what) { return softndk::tools::usage_error(kTool, what); }

std::string size_text(uint64_t n) {
  if (n >= (1u << 20) && n % (1u << 20) == 0) return fmt::format("{} MiB", n >> 20);
  if (n >= 1024 && n % 1024 == 0) return fmt::format("{} KiB", n >> 10);
  return fmt::format("{} B", n);
}

SOFTNDK_COMPLETION_MODE completion_mode(const std::string& name) {
  for (int m = SOFTNDK_COMPLETION_INLINE; m <= SOFTNDK_COMPLETION_MIXED; ++m)
    if (name == SoftNdkCompletionModeName(static_cast<SOFTNDK_COMPLETION_MODE>(m)))
      return static_cast<SOFTNDK_COMPLETION_MODE>(m);
  return SOFTNDK_COMPLETION_DEFAULT;
}

perf::Operation operation_of(const std::string& name) {
  return name == "send" ? perf::Operation::kSend : name == "read" ? perf::Operation::kRead : perf::Operation::kWrite;
}

// Iterations when -n is not given: about 256 MiB (latency) or 2 GiB (bandwidth) per size,
// within [100, 10000] and [200, 1000000]: each size takes well under a second here.
uint64_t default_iterations(perf::Mode mode, uint64_t size) {
  if (mode == perf::Mode::kLatency) return std::clamp<uint64_t>((256ull << 20) / size, 100, 10000);
  return std::clamp<uint64_t>((2ull << 30) / size, 200, 1000000);
}

// "0-1,3" for the CPUs in a set.
std::string cpu_list(const cpu_set_t& set) {
  std::vector<std::string> parts;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &set)) continue;
    int last = c;
    while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &set)) ++last;
    parts.push_back(last == c ? fmt::format("{}", c) : fmt::format("{}-{}", c, last));
    c = last;
  }
  return fmt::format("{}", fmt::join(parts, ","));
}

// The full path of an executable found on PATH, or "".
std::string find_on_path(const char* name) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  std::string all = path;
  size_t start = 0;
  while (start <= all.size()) {
    size_t end = all.find(':', start);
    if (end == std::string::npos) end = all.size();
    std::string dir = all.substr(start, end - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

// ---- what was measured --------------------------------------------------------------

struct Record {
  std::string operation;
  perf::Mode mode;
  uint64_t size;
  ULONG sge;
  bool inline_data;
  ULONG queue_depth;
  uint64_t iterations_asked, warmup;
  perf::Result result;

  const char* status() const { return result.ok() ? "ok" : result.cancelled() ? "interrupted" : "failed"; }
  double avg_ns() const { return result.ns_per_message(); }
};

ordered_json to_json(const Record& r) {
  ordered_json j;
  j["operation"] = r.operation;
  j["mode"] = perf::to_string(r.mode);
  j["bytes"] = r.size;
  j["sge"] = r.sge;
  j["inline"] = r.inline_data;
  j["queue_depth"] = r.mode == perf::Mode::kBandwidth ? r.queue_depth : 1;
  j["iterations"] = r.result.iterations;
  j["iterations_asked"] = r.iterations_asked;
  j["warmup"] = r.warmup;
  j["messages"] = r.result.messages;
  j["seconds"] = r.result.seconds;
  if (r.mode == perf::Mode::kLatency && r.result.iterations > 0) {
    const perf::Latency& l = r.result.latency;
    j["latency_ns"] = {{"min", l.min_ns}, {"median", l.median_ns}, {"p99", l.p99_ns}, {"max", l.max_ns}};
  }
  j["avg_ns"] = r.avg_ns();
  j["bytes_per_second"] = r.result.bandwidth();
  j["messages_per_second"] = r.result.message_rate();
  j["status"] = r.status();
  j["error"] = r.result.error.empty() ? ordered_json(nullptr) : ordered_json(r.result.error);
  return j;
}

constexpr const char* kCsvHeader =
    "operation,mode,bytes,sge,inline,queue_depth,iterations,iterations_asked,warmup,messages,seconds,"
    "min_ns,median_ns,p99_ns,max_ns,avg_ns,bytes_per_second,messages_per_second,status";

std::string csv_row(const Record& r) {
  const bool lat = r.mode == perf::Mode::kLatency && r.result.iterations > 0;
  const perf::Latency& l = r.result.latency;
  auto num = [&](double v) { return lat ? fmt::format("{:.2f}", v) : std::string(); };
  return fmt::format("{},{},{},{},{},{},{},{},{},{},{:.9f},{},{},{},{},{:.2f},{:.1f},{:.1f},{}", r.operation,
                     perf::to_string(r.mode), r.size, r.sge, r.inline_data ? 1 : 0,
                     r.mode == perf::Mode::kBandwidth ? r.queue_depth : 1, r.result.iterations, r.iterations_asked,
                     r.warmup, r.result.messages, r.result.seconds, num(l.min_ns), num(l.median_ns), num(l.p99_ns),
                     num(l.max_ns), r.avg_ns(), r.result.bandwidth(), r.result.message_rate(), r.status());
}

std::string table_heading(const std::string& op, perf::Mode mode, ULONG depth) {
  if (mode == perf::Mode::kLatency) {
    std::string what = op == "send" ? "half a ping-pong round trip (send, receive, send back)"
                                    : fmt::format("one {} posted and its completion polled", op);
    return fmt::format("{} latency in us: {}\n{:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}", op, what, "bytes",
                       "iterations", "min", "median", "p99", "max", "avg");
  }
  return fmt::format("{} bandwidth: {} requests outstanding\n{:>10} {:>10} {:>12} {:>10} {:>10} {:>10}", op, depth,
                     "bytes", "iterations", "MiB/s", "Gbit/s", "Mmsg/s", "avg us");
}

std::string table_row(const Record& r) {
  std::string row;
  const perf::Result& x = r.result;
  if (r.mode == perf::Mode::kLatency) {
    const perf::Latency& l = x.latency;
    row = fmt::format("{:>10} {:>10} {:>10.3f} {:>10.3f} {:>10.3f} {:>10.3f} {:>10.3f}", r.size, x.iterations,
                      l.min_ns / 1e3, l.median_ns / 1e3, l.p99_ns / 1e3, l.max_ns / 1e3, r.avg_ns() / 1e3);
  } else {
    row = fmt::format("{:>10} {:>10} {:>12.1f} {:>10.2f} {:>10.3f} {:>10.3f}", r.size, x.iterations,
                      x.bandwidth() / (1 << 20), x.bandwidth() * 8 / 1e9, x.message_rate() / 1e6, r.avg_ns() / 1e3);
  }
  if (r.result.cancelled()) row += fmt::format("   (interrupted: {} of {} iterations)", x.iterations, r.iterations_asked);
  return row;
}

// ---- the live progress line -----------------------------------------------------------

// On a terminal, once the runs have taken more than a second, one line (rewritten in
// place every 200 ms) says which run is going and how far it got. Everything printed to
// stdout goes through print() so that the line is cleared first.
class Output {
 public:
  explicit Output(bool live) {
    if (live) thread_ = std::thread([this] { loop(); });
  }
  ~Output() {
    {
      std::lock_guard lock(mutex_);
      quit_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    std::lock_guard lock(mutex_);
    clear();
  }
  void print(const std::string& text) {
    std::lock_guard lock(mutex_);
    clear();
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  }
  // A new run: its label and iterations (warm-up included).
  void begin(std::string label, uint64_t total) {
    std::lock_guard lock(mutex_);
    label_ = std::move(label);
    total_ = total;
    done.store(0, std::memory_order_relaxed);
  }
  std::atomic<uint64_t> done{0};  // the engine's Params::progress

 private:
  void clear() {
    if (!shown_) return;
    std::fputs("\r\033[K", stdout);
    std::fflush(stdout);
    shown_ = false;
  }
  void loop() {
    const Clock::time_point start = Clock::now();
    std::unique_lock lock(mutex_);
    while (!cv_.wait_for(lock, std::chrono::milliseconds(200), [this] { return quit_; })) {
      if (Clock::now() - start < std::chrono::seconds(1) || label_.empty()) continue;
      uint64_t d = std::min(done.load(std::memory_order_relaxed), total_);
      double pct = total_ ? 100.0 * static_cast<double>(d) / static_cast<double>(total_) : 0;
      std::string line = fmt::format("\r{}: {:3.0f}% ({}/{} iterations, warm-up included)\033[K", label_, pct, d, total_);
      std::fputs(line.c_str(), stdout);
      std::fflush(stdout);
      shown_ = true;
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  bool quit_ = false, shown_ = false;
  std::string label_;
  uint64_t total_ = 0;
  std::thread thread_;
};

// ---- the chart ----------------------------------------------------------------------

std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// Draws latency (top) and bandwidth (bottom) against message size, one line per
// operation. An operation measured in one mode only gets the other figure derived:
// bandwidth = size / mean latency (one request at a time), latency = mean time per message
// of the bandwidth run. Returns "" or what went wrong.
std::string plot(const std::string& gnuplot, const std::string& file, const std::vector<Record>& records,
                 const std::string& title) {
  char dir_template[] = "/tmp/ndkperf-plot-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) return fmt::format("cannot create a temporary folder: {}", std::strerror(errno));
  const std::string dir = dir_template;
  std::vector<std::string> files;
  // One data file per operation and mode: bytes median_us p99_us avg_us MiB/s
  std::map<std::pair<std::string, perf::Mode>, std::string> data;
  std::vector<std::string> operations;
  for (const Record& r : records) {
    if (r.result.iterations == 0) continue;
    if (std::find(operations.begin(), operations.end(), r.operation) == operations.end())
      operations.push_back(r.operation);
    auto key = std::make_pair(r.operation, r.mode);
    const perf::Latency& l = r.result.latency;
    data[key] += fmt::format("{} {} {} {} {}\n", r.size, l.median_ns / 1e3, l.p99_ns / 1e3, r.avg_ns() / 1e3,
                             r.result.bandwidth() / (1 << 20));
  }
  if (data.empty()) return "nothing was measured";
  auto file_of = [&](const std::string& op, perf::Mode m) {
    return fmt::format("{}/{}-{}.dat", dir, op, perf::to_string(m));
  };
  for (const auto& [key, text] : data) {
    std::string path = file_of(key.first, key.second);
    std::ofstream(path) << text;
    files.push_back(path);
  }
  uint64_t low = UINT64_MAX, high = 0;
  for (const Record& r : records) {
    low = std::min(low, r.size);
    high = std::max(high, r.size);
  }
  std::vector<std::string> tics;
  for (uint64_t s = 1; s <= (uint64_t{1} << 40); s *= 4)
    if (s >= low / 2 && s <= high * 2) tics.push_back(fmt::format("\"{}\" {}", size_text(s), s));

  const bool png = file.size() >= 4 && file.compare(file.size() - 4, 4, ".png") == 0;
  std::string script;
  script += png ? "set terminal png size 1000,800 font 'DejaVuSans,10'\n"
                : "set terminal svg size 1000,800 dynamic enhanced font 'sans,12' background rgb 'white'\n";
  script += "set output " + gnuplot_quote(file) + "\n";
  script += "set multiplot layout 2,1 title " + gnuplot_quote(title) + " noenhanced\n";
  script += "set logscale xy 2\nset grid\nset key left top noenhanced opaque\n";
  script += fmt::format("set xrange [{}:{}]\n", static_cast<double>(low) / 1.5, static_cast<double>(high) * 1.5);
  script += "set xtics (" + fmt::format("{}", fmt::join(tics, ", ")) + ")\n";
  script += "set format y '%g'\nset logscale y 10\n";
  std::vector<std::string> lat, bw;
  int color = 0;
  for (const std::string& op : operations) {
    ++color;
    bool has_lat = data.count({op, perf::Mode::kLatency}) != 0, has_bw = data.count({op, perf::Mode::kBandwidth}) != 0;
    if (has_lat) {
      std::string f = gnuplot_quote(file_of(op, perf::Mode::kLatency));
      lat.push_back(fmt::format("{} using 1:2 with linespoints lc {} lw 2 title '{} median'", f, color, op));
      lat.push_back(fmt::format("{} using 1:3 with lines lc {} dashtype 2 title '{} p99'", f, color, op));
      if (!has_bw)
        bw.push_back(fmt::format("{} using 1:($1/$4/1.048576) with linespoints lc {} lw 2 title '{} (size / mean latency)'",
                                 f, color, op));
    }
    if (has_bw) {
      std::string f = gnuplot_quote(file_of(op, perf::Mode::kBandwidth));
      bw.push_back(fmt::format("{} using 1:5 with linespoints lc {} lw 2 title '{}'", f, color, op));
      if (!has_lat)
        lat.push_back(fmt::format("{} using 1:4 with linespoints lc {} lw 2 title '{} (mean time per message, pipelined)'",
                                  f, color, op));
    }
  }
  script += "set ylabel 'latency (us)'\n";
  script += "plot " + fmt::format("{}", fmt::join(lat, ", ")) + "\n";
  script += "set xlabel 'message size'\nset ylabel 'bandwidth (MiB/s)'\n";
  script += "plot " + fmt::format("{}", fmt::join(bw, ", ")) + "\n";
  script += "unset multiplot\nset output\n";
  const std::string script_path = dir + "/plot.gp";
  std::ofstream(script_path) << script;
  files.push_back(script_path);

  std::string problem;
  pid_t pid = 0;
  char* args[] = {const_cast<char*>(gnuplot.c_str()), const_cast<char*>(script_path.c_str()), nullptr};
  int spawned = posix_spawn(&pid, gnuplot.c_str(), nullptr, nullptr, args, environ);
  if (spawned != 0) {
    problem = fmt::format("cannot run {}: {}", gnuplot, std::strerror(spawned));
  } else {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    struct stat st {};
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      problem = fmt::format("gnuplot failed (exit status {}) on {}", WIFEXITED(status) ? WEXITSTATUS(status) : -1, script_path);
    else if (stat(file.c_str(), &st) != 0 || st.st_size == 0)
      problem = fmt::format("gnuplot wrote nothing to {}", file);
  }
  if (problem.empty()) {
    for (const std::string& f : files) std::remove(f.c_str());
    rmdir(dir.c_str());
  }
  return problem;
}

// ---- the server process ------------------------------------------------------------------

void print_served(void*, const perf::Params& p, const perf::Result& r) {
  const std::string part = p.operation != perf::Operation::kSend ? "the target, passive"
                           : p.mode == perf::Mode::kLatency     ? fmt::format("{} pings echoed", r.messages)
                                                                : fmt::format("{} sends taken", r.messages);
  fmt::print("{} {} {}: {}{}\n", perf::to_string(p.operation), perf::to_string(p.mode), size_text(p.size), part,
             r.ok() ? "" : r.cancelled() ? " (the client stopped early)" : " FAILED: " + r.error);
  std::fflush(stdout);
}

// Serves one client: builds the endpoint it asks for, plays the server's part of each of
// its runs, exits once it said goodbye.
int run_server(const perf::SignalStop& stop, const SOCKADDR_INET& bind, SOFTNDK_COMPLETION_MODE mode,
               std::optional<int> cpu) {
  softndk::tools::Pending pending = softndk::tools::wait_for_one_client(kTool, stop, bind, mode);
  if (!pending.hello) return pending.status;
  perf::Session* session = pending.session.get();
  const perf::Greeting* hello = &*pending.hello;
  perf::Greeting answer;
  answer.tool = perf::Tool::kPerf;
  answer.nonce = hello->nonce;
  const std::string from = perf::address_text(session->peer_address());
  if (hello->tool != perf::Tool::kPerf || hello->area == 0 || hello->area > kMaxSize || hello->queue_depth == 0 ||
      hello->queue_depth > 16384 || hello->max_sge == 0 || hello->max_sge > 64) {
    answer.status = hello->tool != perf::Tool::kPerf ? perf::Greeting::kWrongTool : perf::Greeting::kTooLarge;
    session->reject(answer);
    fmt::print(stderr, "{}: refused {}: {}\n", kTool, from,
               hello->tool != perf::Tool::kPerf ? std::string("not an ndkperf client") : "it asks for too much");
    return 1;
  }
  perf::EndpointOptions options;
  options.fabric = SOFTNDK_FABRIC_TCP;
  options.completion_mode = mode;
  options.area_size = hello->area;
  options.queue_depth = hello->queue_depth;
  options.max_sge = hello->max_sge;
  options.inline_data = hello->inline_data;
  try {
    session->accept(options, answer);
  } catch (const perf::Error& e) {
    fmt::print(stderr, "{}: accepting {}: {}\n", kTool, from, e.what());
    return 1;
  }
  fmt::print("client {} connected: {} per area, queue depth {}\n", from, size_text(session->local().area),
             session->queue_depth());
  std::fflush(stdout);
  if (cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(*cpu, &one);
    if (int error = pthread_setaffinity_np(pthread_self(), sizeof(one), &one); error != 0) {
      fmt::print(stderr, "{}: cannot pin to CPU {}: {}\n", kTool, *cpu, std::strerror(error));
      return 1;
    }
  }
  perf::Served served = perf::serve(*session, &stop.flag(), &print_served);
  if (stop.requested()) return softndk::tools::interrupted(kTool, stop);
  if (!served.ok()) {
    fmt::print(stderr, "{}: {} after {} run{}\n", kTool, served.error, served.runs, served.runs == 1 ? "" : "s");
    return 1;
  }
  fmt::print("client {} said goodbye after {} run{}\n", from, served.runs, served.runs == 1 ? "" : "s");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  perf::SignalStop stop;  // first: every thread started later leaves SIGINT/SIGTERM to it

  CLI::App app{
      "ndkperf: latency and bandwidth of NDK sends, RDMA writes and RDMA reads, on the perf engine\n"
      "of the project's benchmarks. Latency: min, median, p99, max and mean per message (write,\n"
      "read: one request posted and its completion polled; send: half a ping-pong round trip).\n"
      "Bandwidth: --queue-depth requests outstanding; MiB/s and million messages per second.\n"
      "Both endpoints run in this process, driven by one thread (in-process hosts, or --fabric tcp:\n"
      "iWARP over loopback TCP), or in two processes on one host or two with --server and --client\n"
      "(iWARP over TCP; the client chooses the runs and prints the results).\n"
      "SIGINT/SIGTERM end the runs early; what was measured is still printed.\n"
      "Exit status: 0 done; 1 a run, the set-up or the chart failed; 2 a bad command line;\n"
      "128 + signal when a signal ended the runs.\n\n"
      "Examples:  ndkperf                      8-byte RDMA write latency\n"
      "           ndkperf send write read -a   every operation, 1 B .. 8 MiB\n"
      "           ndkperf write -a --bw --plot write.svg\n"
      "           ndkperf --server --bind 192.0.2.7            on host A (serves one client)\n"
      "           ndkperf send -a --client 192.0.2.7 --cpu 1   on host B"};
  app.set_version_flag("--version", std::string("ndkperf (SoftNDK) ") + SOFTNDK_VERSION_TEXT);

  std::vector<std::string> operations{"write"};
  bool latency = false, bandwidth = false, sweep = false, silent = false, verify = false, no_defer = false;
  uint64_t size = 8, max_size = kSweepMax, iterations = 0, inline_size = 0;
  std::optional<uint64_t> warmup;
  ULONG queue_depth = 16, sge = 1;
  std::optional<int> cpu;
  std::string mode = "default", plot_file;
  bool ipv6 = false, json = false, csv = false, no_progress = false;
  softndk::tools::Fabric two;

  app.add_option("operation", operations, "send, write or read (several: one after the other; all: the three)")
      ->check(CLI::IsMember({"send", "write", "read", "all"}))
      ->type_name("OPERATION...")
      ->capture_default_str();
  auto* g_what = "What to measure";
  app.add_flag("--lat,--latency", latency, "Latency mode (the default)")->group(g_what);
  app.add_flag("-b,--bw,--bandwidth", bandwidth, "Bandwidth and message-rate mode (with --lat: both)")->group(g_what);
  auto* size_opt = app.add_option("-s,--size", size, "Message size (1 B .. 256 MiB; 64, 4K, 1MiB...)")
                       ->type_name("SIZE")
                       ->transform(CLI::AsSizeValue(false))
                       ->capture_default_str()
                       ->group(g_what);
  auto* sweep_flag = app.add_flag("-a,--all", sweep, "Sweep message sizes: 1 B to 8 MiB by powers of two")
                        ->excludes(size_opt)
                        ->group(g_what);
  app.add_option("--max-size", max_size, "Largest size of the sweep (with -a)")
      ->needs(sweep_flag)
      ->type_name("SIZE")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str()
      ->group(g_what);
  app.add_option("-n,--iters", iterations,
                 "Measured iterations per size (send latency: round trips). Default: about 256 MiB "
                 "(latency, 100 .. 10000) or 2 GiB (bandwidth, 200 .. 1000000) per size; latency keeps a "
                 "sample of each iteration: at most 67108864")
      ->type_name("N")
      ->check(CLI::Range(uint64_t{1}, kMaxIterations))
      ->group(g_what);
  app.add_option("-w,--warmup", warmup, "Iterations run first and not measured (default: a tenth of -n)")
      ->type_name("N")
      ->group(g_what);
  app.add_option("-q,--queue-depth", queue_depth,
                 "Bandwidth: requests kept outstanding; with --silent also the signalling period")
      ->type_name("N")
      ->check(CLI::Range(1u, 16384u))
      ->capture_default_str()
      ->group(g_what);
  app.add_option("--sge", sge, "SGEs per request and per receive: each message cut into N adjacent pieces "
                               "(at most the adapter's MaxInitiatorRequestSge, 32; sizes below N use one per byte)")
      ->type_name("N")
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str()
      ->group(g_what);
  app.add_option("-I,--inline-size", inline_size,
                 "Sends and writes of at most this many bytes carry NDK_OP_FLAG_INLINE (0: never; at most "
                 "the adapter's MaxInlineDataSize, 256)")
      ->type_name("SIZE")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str()
      ->group(g_what);
  app.add_flag("--silent", silent, "NDK_OP_FLAG_SILENT_SUCCESS: only every --queue-depth-th request is signalled")
      ->group(g_what);
  app.add_flag("--no-defer", no_defer, "Bandwidth: every request rings its own doorbell (by default each burst of "
                                       "posts is one chain with NDK_OP_FLAG_DEFER on all but its last request)")
      ->group(g_what);
  app.add_flag("--verify", verify, "Give each message its own pattern and check every byte where it lands "
                                   "(timings then include the fill and the check)")
      ->group(g_what);

  auto* g_how = "How";
  app.add_option("--cpu", cpu, "Pin to this CPU: with one process, the thread driving both endpoints; "
                               "with --server/--client, this process's side")
      ->type_name("CPU")
      ->check(CLI::NonNegativeNumber)
      ->group(g_how);
  app.add_option("-m,--mode", mode, "Completion mode of creates, connects and closes (the data path polls its CQs)")
      ->check(CLI::IsMember({"default", "inline", "caller-thread", "provider-thread", "mixed"}))
      ->capture_default_str()
      ->group(g_how);
  app.add_flag("-6,--ipv6", ipv6, "IPv6 instead of IPv4 (in-process: 2001:db8::/32; tcp: ::1; --server: listen on ::1 unless --bind)")
      ->group(g_how);

  auto* g_out = "Output (default: a table)";
  auto* json_flag = app.add_flag("--json", json, "One JSON object: the configuration and every result")->group(g_out);
  app.add_flag("--csv", csv, "CSV: a header line, then one line per result")->excludes(json_flag)->group(g_out);
  app.add_option("--plot", plot_file, "Also draw latency and bandwidth against message size into FILE.svg or "
                                      "FILE.png (needs gnuplot: Debian package gnuplot-nox)")
      ->type_name("FILE")
      ->group(g_out);
  app.add_flag("--no-progress", no_progress, "No live progress line (shown only on a terminal, after 1 s)")
      ->group(g_out);

  two.add_options(app, kTool, kDefaultPort, "play the server's part of the runs it asks for");
  if (auto code = parse(app, argc, argv)) return *code;

  // ---- what this build can do, and what the arguments ask ----
  if (std::string problem = two.resolve(app, ipv6); !problem.empty()) return usage_error(problem);
  const bool two_processes = two.two_processes(), server = two.server;
  const std::string& fabric = two.fabric;
  const std::optional<SOCKADDR_INET>& server_address = two.server_address;
  if (std::find(operations.begin(), operations.end(), "all") != operations.end())
    operations = {"send", "write", "read"};
  std::vector<perf::Mode> modes;
  if (latency || !bandwidth) modes.push_back(perf::Mode::kLatency);
  if (bandwidth) modes.push_back(perf::Mode::kBandwidth);
  std::vector<uint64_t> sizes;
  if (sweep) {
    if (max_size == 0 || max_size > kMaxSize)
      return usage_error(fmt::format("--max-size {}: must be 1 .. {} bytes", max_size, kMaxSize));
    for (uint64_t s = 1; s <= max_size; s *= 2) sizes.push_back(s);
  } else {
    if (size == 0 || size > kMaxSize) return usage_error(fmt::format("--size {}: must be 1 .. {} bytes", size, kMaxSize));
    sizes.push_back(size);
  }
  if (warmup && *warmup > kMaxIterations) return usage_error(fmt::format("--warmup {}: at most {}", *warmup, kMaxIterations));
  if (iterations > kMaxSamples && modes.front() == perf::Mode::kLatency)
    return usage_error(fmt::format("--iters {}: latency keeps a sample of each iteration, at most {} (bandwidth "
                                   "runs may be longer)",
                                   iterations, kMaxSamples));
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  sched_getaffinity(0, sizeof(allowed), &allowed);
  if (cpu && (*cpu >= CPU_SETSIZE || !CPU_ISSET(*cpu, &allowed)))
    return usage_error(fmt::format("--cpu {}: not a CPU this process may run on ({})", *cpu, cpu_list(allowed)));
  if (server) return run_server(stop, *server_address, completion_mode(mode), cpu);
  if (verify && two_processes && (std::find(operations.begin(), operations.end(), "write") != operations.end() ||
                                  std::find(operations.begin(), operations.end(), "read") != operations.end()))
    return usage_error("--verify with --client: writes and reads cannot be verified between processes (the other "
                       "process owns their target or source); sends are, by their receivers");
  std::string gnuplot;
  if (!plot_file.empty()) {
    auto ends_with = [&](const char* e) {
      size_t n = std::strlen(e);
      return plot_file.size() > n && plot_file.compare(plot_file.size() - n, n, e) == 0;
    };
    if (!ends_with(".svg") && !ends_with(".png"))
      return usage_error(fmt::format("--plot {}: the file name must end in .svg or .png", plot_file));
    gnuplot = find_on_path("gnuplot");
    if (gnuplot.empty()) {
      fmt::print(stderr, "{}: --plot needs gnuplot, which is not installed (Debian: apt-get install gnuplot-nox)\n",
                 kTool);
      return 1;
    }
  }

  // ---- the two endpoints ----
  perf::PairOptions options;
  options.area_size = sizes.back();
  options.queue_depth = queue_depth;
  options.inline_data = inline_size > 0 ? static_cast<ULONG>(std::min<uint64_t>(inline_size, 1u << 20)) : 256;
  options.completion_mode = completion_mode(mode);
  options.ipv6 = ipv6;
  options.fabric = fabric == "tcp" ? SOFTNDK_FABRIC_TCP : SOFTNDK_FABRIC_INPROC;
  options.max_sge = sge;
  std::unique_ptr<perf::Pair> pair;
  std::unique_ptr<perf::Session> session;
  try {
    if (two_processes) {
      perf::Greeting hello;
      hello.tool = perf::Tool::kPerf;
      hello.nonce = std::random_device{}() * 0x100000001ull ^ static_cast<uint64_t>(Clock::now().time_since_epoch().count());
      session = perf::Session::connect(*server_address, options, hello, std::chrono::seconds(30));
    } else {
      pair = std::make_unique<perf::Pair>(options);
    }
  } catch (const perf::Error& e) {
    if (two_processes && e.status() == STATUS_CONNECTION_REFUSED)
      fmt::print(stderr, "{}: connection refused by {}: {}\n", kTool, perf::address_text(*server_address),
                 std::string(e.what()).find("server") != std::string::npos ? e.what()
                                                                         : "is an ndkperf --server listening there?");
    else if (two_processes && e.status() == STATUS_IO_TIMEOUT)
      fmt::print(stderr, "{}: connection timed out: {} did not answer ({})\n", kTool,
                 perf::address_text(*server_address), e.what());
    else
      fmt::print(stderr, "{}: cannot set up the {}: {}\n", kTool,
                 two_processes ? "connection to " + perf::address_text(*server_address) : "two endpoints", e.what());
    return 1;
  }
  const perf::Endpoint& c = session ? session->local() : pair->client();
  const perf::Endpoint& far = session ? session->peer() : pair->server();
  const ULONG sge_limit = std::min(c.max_sge, far.max_sge);
  if (sge > sge_limit)
    return usage_error(fmt::format("--sge {}: the adapter takes at most {} SGEs per request (tunables max_initiator_sge, "
                                   "max_receive_sge)",
                                   sge, sge_limit));
  const bool reads = std::find(operations.begin(), operations.end(), "read") != operations.end();
  if (reads && sge > c.info.MaxReadRequestSge)
    return usage_error(fmt::format("--sge {}: the adapter's reads take at most {} SGEs (tunable max_read_sge)", sge,
                                   c.info.MaxReadRequestSge));
  const ULONG inline_limit = std::min(c.inline_data, far.inline_data);
  if (inline_size > inline_limit)
    fmt::print(stderr, "{}: --inline-size {}: the QPs carry at most {} inline bytes; using {}\n", kTool, inline_size,
               inline_limit, inline_limit);
  const uint64_t inline_used = std::min<uint64_t>(inline_size, inline_limit);

  SOFTNDK_COMPLETION_MODE in_force = SOFTNDK_COMPLETION_DEFAULT;
  SoftNdkGetCompletionMode(c.adapter, &in_force, nullptr);
  const double timer_ns = perf::timer_overhead_ns();
  const std::string clock = perf::clock_uses_tsc() ? "TSC" : "steady_clock";

  Output out(!no_progress && isatty(STDOUT_FILENO) != 0);
  if (cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(*cpu, &one);
    int error = pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
    if (error != 0) {
      fmt::print(stderr, "{}: cannot pin to CPU {}: {}\n", kTool, *cpu, std::strerror(error));
      return 1;
    }
  }

  const std::string setting = fmt::format(
      "{}, {} completions, {}, {} SGE{}, {}{}{}, {}",
      session            ? fmt::format("iWARP fabric, two processes: {} to the server at {}", perf::ip_text(c.address),
                                       perf::address_text(*server_address))
      : fabric == "tcp" ? "iWARP fabric over loopback TCP"
                        : "in-process fabric",
      SoftNdkCompletionModeName(in_force),
      c.address.si_family == AF_INET6 ? "IPv6" : "IPv4", sge, sge == 1 ? "" : "s (at most)",
      inline_used ? fmt::format("inline up to {} B", inline_used) : std::string("no inline"),
      std::string(silent ? ", SILENT_SUCCESS" : "") + (no_defer ? ", no DEFER chains" : ""),
      verify ? ", every byte verified" : "",
      cpu ? fmt::format("{} on CPU {}", session ? "this side" : "thread", *cpu)
          : std::string(session ? "this side not pinned" : "thread not pinned"));
  if (!json && !csv) {
    out.print(fmt::format("ndkperf {}: {}\n", fmt::join(operations, ", "), setting));
    out.print(fmt::format("clock: {}, one read {:.1f} ns (included in each latency sample)\n", clock, timer_ns));
  }
  if (csv) out.print(std::string(kCsvHeader) + "\n");

  // ---- the runs ----
  std::vector<Record> records;
  std::string failure, last_label;
  size_t run_index = 0;
  const size_t runs = operations.size() * modes.size() * sizes.size();
  for (const std::string& op : operations) {
    for (perf::Mode m : modes) {
      if (!json && !csv) out.print("\n" + table_heading(op, m, queue_depth) + "\n");
      for (uint64_t s : sizes) {
        ++run_index;
        perf::Params p;
        p.operation = operation_of(op);
        p.mode = m;
        p.size = s;
        p.iterations = iterations ? iterations : default_iterations(m, s);
        p.warmup = warmup ? *warmup : std::max<uint64_t>(1, p.iterations / 10);
        p.queue_depth = queue_depth;
        p.sge_count = static_cast<ULONG>(std::min<uint64_t>(sge, s));
        const bool use_inline = op != "read" && s <= inline_used;
        p.flags = (use_inline ? NDK_OP_FLAG_INLINE : 0) | (silent ? NDK_OP_FLAG_SILENT_SUCCESS : 0);
        p.verify = verify;
        p.defer = !no_defer;
        p.stop = &stop.flag();
        p.progress = &out.done;
        out.begin(fmt::format("[{}/{}] {} {} {}", run_index, runs, op, perf::to_string(m), size_text(s)),
                  p.warmup + p.iterations);
        last_label = fmt::format("{} {} {}", op, perf::to_string(m), size_text(s));
        Record r{op, m, s, p.sge_count, use_inline, queue_depth, p.iterations, p.warmup, session ? perf::run(*session, p) : perf::run(*pair, p)};
        if (r.result.cancelled() && r.result.iterations == 0) last_label += ", stopped during its warm-up";
        if (r.result.ok() || (r.result.cancelled() && r.result.iterations > 0)) {
          records.push_back(r);
          if (csv) out.print(csv_row(r) + "\n");
          else if (!json) out.print(table_row(r) + "\n");
        }
        if (!r.result.ok() && !r.result.cancelled()) {
          failure = fmt::format("{} {} {}: {}", op, perf::to_string(m), size_text(s), r.result.error);
          records.push_back(r);
        }
        if (!r.result.ok() || stop.requested()) break;
      }
      if (!failure.empty() || stop.requested()) break;
    }
    if (!failure.empty() || stop.requested()) break;
  }

  const bool interrupted = stop.requested();
  if (json) {
    ordered_json root;
    root["tool"] = "ndkperf";
    root["version"] = SOFTNDK_VERSION_TEXT;
    root["config"] = {{"fabric", fabric},
                      {"operations", operations},
                      {"modes", ordered_json::array()},
                      {"sizes", sizes},
                      {"completion_mode", SoftNdkCompletionModeName(in_force)},
                      {"ipv6", c.address.si_family == AF_INET6},
                      {"sge", sge},
                      {"inline_size", inline_used},
                      {"queue_depth", queue_depth},
                      {"silent", silent},
                      {"defer", !no_defer},
                      {"verify", verify},
                      {"cpu", cpu ? ordered_json(*cpu) : ordered_json(nullptr)},
                      {"processes", session ? 2 : 1},
                      {"client_address", perf::ip_text(c.address)},
                      {"server_address", session ? perf::address_text(session->peer_address())
                                                 : perf::ip_text(pair->server().address)}};
    for (perf::Mode m : modes) root["config"]["modes"].push_back(perf::to_string(m));
    root["clock"] = {{"source", clock}, {"read_ns", timer_ns}};
    root["results"] = ordered_json::array();
    for (const Record& r : records) root["results"].push_back(to_json(r));
    root["complete"] = failure.empty() && !interrupted && run_index == runs;
    root["interrupted"] = interrupted;
    root["error"] = failure.empty() ? ordered_json(nullptr) : ordered_json(failure);
    out.print(root.dump(2) + "\n");
  }
  // The server waits for a goodbye: said when the last run ended as the protocol expects.
  if (session && failure.empty() && session->disconnects() == 0) {
    perf::Control bye;
    bye.kind = perf::Control::kBye;
    try {
      session->send_control(bye, std::chrono::seconds(10));
    } catch (const perf::Error& e) {
      if (session->disconnects() == 0) fmt::print(stderr, "{}: saying goodbye to the server: {}\n", kTool, e.what());
    }
  }
  if (!failure.empty()) fmt::print(stderr, "{}: {}\n", kTool, failure);
  if (interrupted)
    fmt::print(stderr, "{}: interrupted by {} during run {} of {} ({}); {}\n", kTool,
               stop.signal() == SIGTERM ? "SIGTERM" : "SIGINT", run_index, runs, last_label,
               records.empty() ? "nothing was measured" : "the results printed are what was measured");

  int status = !failure.empty() ? 1 : interrupted ? 128 + (stop.signal() ? stop.signal() : SIGINT) : 0;
  if (!plot_file.empty() && !records.empty()) {
    std::string title = fmt::format("ndkperf {}: {}", fmt::join(operations, ", "), setting);
    std::string problem = plot(gnuplot, plot_file, records, title);
    if (!problem.empty()) {
      fmt::print(stderr, "{}: --plot {}: {}\n", kTool, plot_file, problem);
      if (status == 0) status = 1;
    } else if (!json && !csv) {
      out.print(fmt::format("\nchart: {}\n", plot_file));
    }
  }
  return status;
}
