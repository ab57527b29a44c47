// tcp_baseline: what plain TCP does on this machine, the baseline for SoftNDK's fabrics
// (softndk_iwarp_bench measures the iWARP fabric against it; the measuring code is
// tcp_baseline_lib, shared by both).
//
//   latency    a ping-pong of SIZE-byte messages; both ends busy-poll a non-blocking
//              socket; reported as half the round trip (min, median, p99, mean).
//   bandwidth  a stream of SIZE-byte messages from the client to the server, timed from
//              the first byte sent to the server's answer that it received the last one.
//   --crc      every message carries a 4-byte CRC32c of its payload (as an MPA FPDU does):
//              the sender computes it, the receiver computes it again and compares. The
//              CRC is the one the iWARP fabric uses (ISA-L, src/fabric/tcp/iwarp_wire.hpp).
//
// Each (mode, size) first runs a warm-up, then --reps repetitions of --iters messages;
// figures are medians over the repetitions (latency: of each repetition's median and p99;
// the minimum is the smallest sample). Sockets have TCP_NODELAY. SO_SNDBUF and SO_RCVBUF are
// 4 MiB when net.core.[rw]mem_max allow it (on loopback here 5-20% more bandwidth than the
// kernel's autotuning), else left to autotuning; --sockbuf chooses (0: autotuning).
//
// Without --server/--client, both ends run in this process: the client on the calling
// thread, the server on a second thread, pinned to the two CPUs of --cpus, over loopback.
//
// Exit status: 0 done; 1 a run failed (connection, CRC mismatch, peer silent); 2 a bad
// command line.
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common/cli.hpp"
#include "tcp_baseline_lib.hpp"

namespace {

using nlohmann::ordered_json;
using namespace softndk::tcp_baseline;

constexpr const char* kTool = "tcp_baseline";

// ---- output -------------------------------------------------------------------------------

std::string size_text(uint64_t n) {
  if (n >= (1u << 20) && n % (1u << 20) == 0) return fmt::format("{} MiB", n >> 20);
  if (n >= 1024 && n % 1024 == 0) return fmt::format("{} KiB", n >> 10);
  return fmt::format("{} B", n);
}

ordered_json to_json(const Figures& f) {
  ordered_json j;
  j["mode"] = f.run.latency ? "latency" : "bandwidth";
  j["bytes"] = f.run.size;
  j["crc32c"] = f.run.crc;
  j["iterations"] = f.run.iterations;
  j["warmup"] = f.run.warmup;
  j["repetitions"] = f.run.repetitions;
  j["seconds"] = f.seconds;
  if (f.run.latency) {
    j["latency_ns"] = {{"min", f.min_ns}, {"median", f.median_ns}, {"p99", f.p99_ns}, {"avg", f.avg_ns}};
    j["repetition_medians_ns"] = f.rep_medians_ns;
    j["bytes_per_second"] = f.median_ns > 0 ? static_cast<double>(f.run.size) / (f.median_ns * 1e-9) : 0;
  } else {
    j["bytes_per_second"] = f.bps;
    j["bytes_per_second_min"] = f.bps_min;
    j["bytes_per_second_max"] = f.bps_max;
    j["repetition_bytes_per_second"] = f.rep_bps;
  }
  j["status"] = "ok";
  return j;
}

std::string text_row(const Figures& f) {
  if (f.run.latency)
    return fmt::format("{:>10} {:>10} {:>10.3f} {:>10.3f} {:>10.3f} {:>10.3f}", f.run.size, f.run.iterations,
                       f.min_ns / 1e3, f.median_ns / 1e3, f.p99_ns / 1e3, f.avg_ns / 1e3);
  return fmt::format("{:>10} {:>10} {:>12.1f} {:>12.1f} {:>12.1f} {:>10.2f}", f.run.size, f.run.iterations,
                     f.bps / (1 << 20), f.bps_min / (1 << 20), f.bps_max / (1 << 20), f.bps * 8 / 1e9);
}

std::string text_heading(bool latency, bool crc, unsigned reps) {
  const char* with = crc ? ", CRC32c on every message" : "";
  if (latency)
    return fmt::format("latency in us, half a ping-pong round trip{} (median of {} repetitions)\n{:>10} {:>10} {:>10} "
                       "{:>10} {:>10} {:>10}",
                       with, reps, "bytes", "iterations", "min", "median", "p99", "avg");
  return fmt::format("stream bandwidth{} (median, min and max of {} repetitions)\n{:>10} {:>10} {:>12} {:>12} {:>12} "
                     "{:>10}",
                     with, reps, "bytes", "iterations", "MiB/s", "min MiB/s", "max MiB/s", "Gbit/s");
}

// --sockbuf's default: 4 MiB when the kernel lets a socket have that much, else 0 (autotuning).
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tcp_baseline: raw TCP ping-pong latency and stream bandwidth, both ends busy-polling\n"
      "non-blocking sockets with TCP_NODELAY; the baseline for SoftNDK's fabrics. Latency is half\n"
      "the round trip (min, median, p99, mean); bandwidth counts payload bytes. Each size runs a\n"
      "warm-up, then --reps repetitions; figures are medians over them. With --crc every message\n"
      "carries a CRC32c (ISA-L) that the receiver checks, as iWARP's MPA does.\n"
      "Without --server/--client both ends run in this process (two threads, pinned) over loopback.\n"
      "Exit status: 0 done; 1 a run failed; 2 a bad command line.\n\n"
      "Examples:  tcp_baseline --lat --bw -s 8,4K,64K,1M\n"
      "           tcp_baseline --server --port 0 --cpu 1   and   tcp_baseline --client 127.0.0.1 -p PORT --cpu 0"};
  app.set_version_flag("--version", std::string("tcp_baseline (SoftNDK) ") + SOFTNDK_VERSION_TEXT);

  bool latency = false, bandwidth = false, crc = false, json = false, server = false, forever = false;
  std::vector<uint64_t> sizes{8};
  uint64_t iterations = 0;
  std::optional<uint64_t> warmup;
  unsigned repetitions = 5;
  std::optional<uint64_t> sockbuf_option;
  double idle_timeout = 10;
  std::string client, bind_address = "0.0.0.0";
  uint16_t port = 18515;
  std::optional<int> cpu;
  std::vector<int> cpus;

  auto* g_what = "What to measure";
  app.add_flag("--lat,--latency", latency, "Ping-pong latency (the default)")->group(g_what);
  app.add_flag("-b,--bw,--bandwidth", bandwidth, "Stream bandwidth (with --lat: both)")->group(g_what);
  app.add_option("-s,--size", sizes, "Message sizes, 1 B .. 256 MiB (8,4K,64K,1M)")
      ->delimiter(',')
      ->type_name("SIZE,...")
      ->transform(CLI::AsSizeValue(false))
      ->group(g_what);
  app.add_option("-n,--iters", iterations,
                 "Messages per repetition. Default: about 64 MiB (latency, 200 .. 20000) or 256 MiB "
                 "(bandwidth, 200 .. 200000) per repetition")
      ->type_name("N")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32))
      ->group(g_what);
  app.add_option("-w,--warmup", warmup, "Messages sent first and not measured (default: a tenth of -n)")
      ->type_name("N")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 32))
      ->group(g_what);
  app.add_option("-r,--reps", repetitions, "Repetitions; figures are medians over them")
      ->check(CLI::Range(1u, 1000u))
      ->capture_default_str()
      ->group(g_what);
  app.add_flag("--crc", crc, "Every message carries a CRC32c of its payload, computed and checked on both ends")
      ->group(g_what);

  auto* g_how = "How";
  app.add_option("--cpus", cpus, "In one process: the client's and the server's CPU (default: the first two allowed)")
      ->delimiter(',')
      ->expected(2)
      ->type_name("CLIENT,SERVER")
      ->group(g_how);
  app.add_option("--cpu", cpu, "With --server or --client: pin this process's side to CPU")
      ->check(CLI::NonNegativeNumber)
      ->type_name("CPU")
      ->group(g_how);
  app.add_option("--sockbuf", sockbuf_option,
                 "SO_SNDBUF and SO_RCVBUF; 0: the kernel's autotuning. Default: 4 MiB when net.core.rmem_max and "
                 "wmem_max allow it, else 0 (a size turns autotuning off and is capped by those)")
      ->transform(CLI::AsSizeValue(false))
      ->type_name("SIZE")
      ->group(g_how);
  app.add_option("--idle-timeout", idle_timeout, "Fail when the peer is silent this long (seconds)")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str()
      ->group(g_how);

  auto* g_two = "Between two processes";
  auto* server_flag = app.add_flag("--server", server, "Serve one client (--forever: clients one after the other)")
                          ->group(g_two);
  app.add_flag("--forever", forever, "With --server: keep serving")->needs(server_flag)->group(g_two);
  app.add_option("--client", client, "Measure against the tcp_baseline server at HOST")
      ->type_name("HOST")
      ->excludes(server_flag)
      ->group(g_two);
  app.add_option("--bind", bind_address, "With --server: the address to listen on")
      ->needs(server_flag)
      ->capture_default_str()
      ->group(g_two);
  app.add_option("-p,--port", port, "TCP port (server: 0 picks a free one, printed)")->capture_default_str()->group(g_two);

  app.add_flag("--json", json, "One JSON object with the configuration and every result");
  if (auto code = softndk::tools::parse(kTool, app, argc, argv)) return *code;

  const auto usage_error = [](const std::string& what) { return softndk::tools::usage_error(kTool, what); };
  for (uint64_t s : sizes)
    if (s == 0 || s > kMaxSize) return usage_error(fmt::format("--size {}: must be 1 .. {} bytes", s, kMaxSize));
  const uint64_t sockbuf = sockbuf_option ? *sockbuf_option : default_sockbuf();
  if (sockbuf > (1u << 30)) return usage_error(fmt::format("--sockbuf {}: at most 1 GiB", sockbuf));
  if (!client.empty() && port == 0) return usage_error("--client needs a port other than 0");
  const std::vector<int> allowed = allowed_cpus();
  auto check_cpu = [&](int c, const char* option) -> std::optional<int> {
    if (std::find(allowed.begin(), allowed.end(), c) == allowed.end())
      return usage_error(fmt::format("{} {}: not a CPU this process may run on ({})", option, c, fmt::join(allowed, ",")));
    return std::nullopt;
  };
  const bool in_process = !server && client.empty();
  if (cpu && in_process) return usage_error("--cpu goes with --server or --client (in one process: --cpus)");
  if (!cpus.empty() && !in_process) return usage_error("--cpus is for one process (with --server/--client: --cpu)");
  if (cpu)
    if (auto e = check_cpu(*cpu, "--cpu")) return *e;
  for (int c : cpus)
    if (auto e = check_cpu(c, "--cpus")) return *e;
  if (in_process && cpus.empty()) cpus = {allowed[0], allowed.size() > 1 ? allowed[1] : allowed[0]};

  std::vector<Run> runs;
  for (bool lat : {true, false}) {
    if (lat ? !(latency || !bandwidth) : !bandwidth) continue;
    for (uint64_t s : sizes) {
      uint64_t n = iterations ? iterations : default_iterations(lat, s);
      runs.push_back(Run{lat, s, n, warmup ? *warmup : std::max<uint64_t>(1, n / 10), repetitions, crc});
    }
  }

  try {
    const int buf = static_cast<int>(sockbuf);
    if (server) {
      if (cpu) pin(*cpu);
      sockaddr_storage bound{};
      const int listener = listen_on(bind_address, port, bound);
      fmt::print("{}: listening on {} port {}\n", kTool, bind_address, port_of(bound));
      std::fflush(stdout);
      do {
        int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) throw Failure(errno_text("accept"));
        prepare(fd, buf);
        Socket s(fd, forever ? 1e9 : idle_timeout);
        const uint64_t batches = serve(s);
        fmt::print("{}: served {} batches\n", kTool, batches);
        std::fflush(stdout);
      } while (forever);
      close(listener);
      return 0;
    }

    // The client side: this thread, against a server thread or process.
    int fd = -1;
    ServerThread local;
    if (in_process) {
      pin(cpus[0]);
      port = local.start(cpus[1], buf, idle_timeout);
      fd = connect_to("127.0.0.1", port);
    } else {
      if (cpu) pin(*cpu);
      fd = connect_to(client, port);
    }
    prepare(fd, buf);
    std::vector<Figures> results;
    std::string failure;
    {
      Socket s(fd, idle_timeout);
      Client c(s);
      const std::string where = in_process ? fmt::format("one process, loopback, client on CPU {}, server on CPU {}",
                                                         cpus[0], cpus[1])
                                           : fmt::format("server {} port {}, client {}", client, port,
                                                         cpu ? fmt::format("on CPU {}", *cpu) : "not pinned");
      const std::string buffers = sockbuf ? fmt::format("SO_SNDBUF/SO_RCVBUF {} (kernel: {}/{})", sockbuf,
                                                        get_int_option(fd, SOL_SOCKET, SO_SNDBUF),
                                                        get_int_option(fd, SOL_SOCKET, SO_RCVBUF))
                                          : std::string("socket buffers autotuned");
      if (!json) fmt::print("tcp_baseline: {}; TCP_NODELAY, busy-polled, {}\n", where, buffers);
      bool heading_lat = false, first = true;
      try {
        for (const Run& r : runs) {
          if (first || heading_lat != r.latency) {
            if (!json) fmt::print("\n{}\n", text_heading(r.latency, crc, repetitions));
            heading_lat = r.latency;
            first = false;
          }
          results.push_back(c.measure(r));
          if (!json) fmt::print("{}\n", text_row(results.back()));
          std::fflush(stdout);
        }
        c.quit();
      } catch (const Failure& e) {
        const Run& r = runs[results.size()];
        failure = fmt::format("{} {}{}: {}", size_text(r.size), r.latency ? "latency" : "bandwidth",
                              crc ? " with CRC32c" : "", e.what());
        shutdown(fd, SHUT_RDWR);
      }
      if (json) {
        ordered_json root;
        root["tool"] = kTool;
        root["version"] = SOFTNDK_VERSION_TEXT;
        root["config"] = {{"in_process", in_process},
                          {"server", in_process ? std::string("127.0.0.1") : client},
                          {"port", port},
                          {"client_cpu", in_process ? ordered_json(cpus[0]) : cpu ? ordered_json(*cpu) : ordered_json()},
                          {"server_cpu", in_process ? ordered_json(cpus[1]) : ordered_json()},
                          {"crc32c", crc},
                          {"repetitions", repetitions},
                          {"tcp_nodelay", true},
                          {"busy_poll", true},
                          {"sockbuf", sockbuf},
                          {"so_sndbuf", get_int_option(fd, SOL_SOCKET, SO_SNDBUF)},
                          {"so_rcvbuf", get_int_option(fd, SOL_SOCKET, SO_RCVBUF)}};
        root["results"] = ordered_json::array();
        for (const Figures& f : results) root["results"].push_back(to_json(f));
        root["complete"] = failure.empty();
        root["error"] = failure.empty() ? ordered_json() : ordered_json(failure);
        fmt::print("{}\n", root.dump(2));
      }
    }
    const std::string server_error = local.finish();
    if (failure.empty() && !server_error.empty()) failure = "server: " + server_error;
    if (!failure.empty()) {
      fmt::print(stderr, "{}: {}\n", kTool, failure);
      return 1;
    }
  } catch (const Failure& e) {
    fmt::print(stderr, "{}: {}\n", kTool, e.what());
    return 1;
  }
  return 0;
}
