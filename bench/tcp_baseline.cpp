// tcp_baseline: what plain TCP does on this machine, the baseline for SoftNDK's fabrics
// (and, later, for its iWARP fabric over TCP).
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
#include <arpa/inet.h>
#include <endian.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common/cli.hpp"
#include "fabric/tcp/iwarp_wire.hpp"

namespace {

using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

constexpr const char* kTool = "tcp_baseline";
constexpr uint64_t kMaxSize = 256ull << 20;
constexpr uint32_t kMagic = 0x54434250;  // "TCBP"
constexpr size_t kTrailer = 4;           // the CRC32c after each payload, with --crc

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string errno_text(const char* what) { return fmt::format("{}: {}", what, std::strerror(errno)); }

// ---- a busy-polled non-blocking socket ------------------------------------------------

class Socket {
 public:
  Socket(int fd, double idle_timeout_s) : fd_(fd), idle_timeout_(idle_timeout_s) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // Sends or receives exactly n bytes, spinning on EAGAIN. A peer silent for longer than
  // the idle timeout is an error, so that a dead peer cannot hang a benchmark.
  void send_all(const uint8_t* p, size_t n) { transfer(const_cast<uint8_t*>(p), n, true); }
  void recv_all(uint8_t* p, size_t n) { transfer(p, n, false); }

  void send_u64(uint64_t v) {
    v = htobe64(v);
    send_all(reinterpret_cast<const uint8_t*>(&v), sizeof v);
  }
  uint64_t recv_u64() {
    uint64_t v = 0;
    recv_all(reinterpret_cast<uint8_t*>(&v), sizeof v);
    return be64toh(v);
  }
  int fd() const { return fd_; }

 private:
  void transfer(uint8_t* p, size_t n, bool sending) {
    uint32_t spins = 0;
    Clock::time_point idle_since{};
    while (n > 0) {
      ssize_t r = sending ? ::send(fd_, p, n, MSG_NOSIGNAL) : ::recv(fd_, p, n, 0);
      if (r > 0) {
        p += r;
        n -= static_cast<size_t>(r);
        spins = 0;
        continue;
      }
      if (r == 0) throw Failure("the peer closed the connection");
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) throw Failure(errno_text(sending ? "send" : "recv"));
      if (++spins % 4096 != 0) continue;
      if (spins == 4096) idle_since = Clock::now();
      else if (std::chrono::duration<double>(Clock::now() - idle_since).count() > idle_timeout_)
        throw Failure(fmt::format("the peer was silent for {} s", idle_timeout_));
    }
  }
  int fd_;
  double idle_timeout_;
};

void set_int_option(int fd, int level, int name, int value, const char* what) {
  if (setsockopt(fd, level, name, &value, sizeof value) != 0) throw Failure(errno_text(what));
}

int get_int_option(int fd, int level, int name) {
  int value = 0;
  socklen_t len = sizeof value;
  getsockopt(fd, level, name, &value, &len);
  return value;
}

// TCP_NODELAY, optional fixed buffers, non-blocking.
void prepare(int fd, int sockbuf) {
  set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
  if (sockbuf > 0) {
    set_int_option(fd, SOL_SOCKET, SO_SNDBUF, sockbuf, "SO_SNDBUF");
    set_int_option(fd, SOL_SOCKET, SO_RCVBUF, sockbuf, "SO_RCVBUF");
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) throw Failure(errno_text("O_NONBLOCK"));
}

void pin(int cpu) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  if (int e = pthread_setaffinity_np(pthread_self(), sizeof one, &one); e != 0)
    throw Failure(fmt::format("cannot pin to CPU {}: {}", cpu, std::strerror(e)));
}

// A listening socket on ADDRESS:PORT (port 0: any free one).
int listen_on(const std::string& address, uint16_t port, sockaddr_storage& bound) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* list = nullptr;
  if (int e = getaddrinfo(address.c_str(), std::to_string(port).c_str(), &hints, &list); e != 0)
    throw Failure(fmt::format("{}: {}", address, gai_strerror(e)));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> hold(list, freeaddrinfo);
  int fd = socket(list->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Failure(errno_text("socket"));
  set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
  if (bind(fd, list->ai_addr, list->ai_addrlen) != 0 || listen(fd, 4) != 0) {
    std::string what = errno_text(fmt::format("listen on {} port {}", address, port).c_str());
    close(fd);
    throw Failure(what);
  }
  socklen_t len = sizeof bound;
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  return fd;
}

uint16_t port_of(const sockaddr_storage& a) {
  return ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6&>(a).sin6_port
                                       : reinterpret_cast<const sockaddr_in&>(a).sin_port);
}

int connect_to(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* list = nullptr;
  if (int e = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list); e != 0)
    throw Failure(fmt::format("{}: {}", host, gai_strerror(e)));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> hold(list, freeaddrinfo);
  std::string last = "no address";
  for (addrinfo* a = list; a != nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) return fd;
    last = std::strerror(errno);
    close(fd);
  }
  throw Failure(fmt::format("cannot connect to {} port {}: {}", host, port, last));
}

// ---- messages ---------------------------------------------------------------------------

uint32_t crc32c(const uint8_t* p, size_t n) {
  softndk::fabric::tcp::Crc32c c;
  c.update(p, n);
  return c.value();
}

// A message buffer: the payload, then room for the CRC trailer.
struct Message {
  Message(uint64_t size, bool crc) : size(size), crc(crc), bytes(size + kTrailer) {
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 131 + 7);
  }
  size_t wire() const { return size + (crc ? kTrailer : 0); }
  void seal() {
    if (!crc) return;
    uint32_t v = crc32c(bytes.data(), size);
    std::memcpy(bytes.data() + size, &v, kTrailer);
  }
  bool intact() const {
    if (!crc) return true;
    uint32_t v = 0;
    std::memcpy(&v, bytes.data() + size, kTrailer);
    return v == crc32c(bytes.data(), size);
  }
  uint64_t size;
  bool crc;
  std::vector<uint8_t> bytes;
};

// What the client asks before each batch of messages; the server answers 0 when ready and,
// after the batch, the number of messages whose CRC did not match.
enum Op : uint32_t { kQuit = 0, kPingPong = 1, kStream = 2 };

struct Request {
  Op op = kQuit;
  bool crc = false;
  uint64_t size = 0, count = 0;
};

void send_request(Socket& s, const Request& r) {
  s.send_u64(uint64_t{kMagic} << 32 | uint64_t{r.op} << 1 | (r.crc ? 1 : 0));
  s.send_u64(r.size);
  s.send_u64(r.count);
}

// ---- the server -----------------------------------------------------------------------

// Serves one client until it says quit; returns the batches served.
uint64_t serve(Socket& s) {
  uint64_t batches = 0;
  std::unique_ptr<Message> m;
  for (;;) {
    const uint64_t head = s.recv_u64();
    if (head >> 32 != kMagic) throw Failure("the client does not speak tcp_baseline's protocol");
    Request r{static_cast<Op>((head >> 1) & 0xff), (head & 1) != 0, s.recv_u64(), s.recv_u64()};
    if (r.op == kQuit) return batches;
    if ((r.op != kPingPong && r.op != kStream) || r.size == 0 || r.size > kMaxSize)
      throw Failure(fmt::format("bad request: op {} size {}", static_cast<uint32_t>(r.op), r.size));
    if (!m || m->size != r.size || m->crc != r.crc) m = std::make_unique<Message>(r.size, r.crc);
    s.send_u64(0);
    uint64_t mismatches = 0;
    for (uint64_t i = 0; i < r.count; ++i) {
      s.recv_all(m->bytes.data(), m->wire());
      if (!m->intact()) ++mismatches;
      if (r.op == kPingPong) {
        m->seal();
        s.send_all(m->bytes.data(), m->wire());
      }
    }
    s.send_u64(mismatches);
    ++batches;
  }
}

// ---- the client -------------------------------------------------------------------------

struct Run {
  bool latency;
  uint64_t size, iterations, warmup;
  unsigned repetitions;
  bool crc;
};

struct Figures {
  Run run{};
  // latency, in ns of half a round trip
  double min_ns = 0, median_ns = 0, p99_ns = 0, avg_ns = 0;
  std::vector<double> rep_medians_ns;
  // bandwidth, payload bytes per second
  double bps = 0, bps_min = 0, bps_max = 0;
  std::vector<double> rep_bps;
  double seconds = 0;
};

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double percentile(const std::vector<double>& sorted, double q) {
  size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, i == 0 ? 0 : i - 1)];
}

class Client {
 public:
  explicit Client(Socket& s) : s_(s) {}

  Figures measure(const Run& run) {
    Message m(run.size, run.crc);
    Figures f;
    f.run = run;
    batch(run, m, run.warmup, nullptr);
    std::vector<double> samples, rep_p99, all_min;
    double total_ns = 0, total_n = 0;
    for (unsigned rep = 0; rep < run.repetitions; ++rep) {
      samples.clear();
      const double seconds = batch(run, m, run.iterations, run.latency ? &samples : nullptr);
      f.seconds += seconds;
      if (run.latency) {
        std::sort(samples.begin(), samples.end());
        f.rep_medians_ns.push_back(median_of(samples));
        rep_p99.push_back(percentile(samples, 0.99));
        all_min.push_back(samples.front());
        total_ns += std::accumulate(samples.begin(), samples.end(), 0.0);
        total_n += static_cast<double>(samples.size());
      } else {
        f.rep_bps.push_back(static_cast<double>(run.size * run.iterations) / seconds);
      }
    }
    if (run.latency) {
      f.min_ns = *std::min_element(all_min.begin(), all_min.end());
      f.median_ns = median_of(f.rep_medians_ns);
      f.p99_ns = median_of(rep_p99);
      f.avg_ns = total_ns / total_n;
    } else {
      f.bps = median_of(f.rep_bps);
      f.bps_min = *std::min_element(f.rep_bps.begin(), f.rep_bps.end());
      f.bps_max = *std::max_element(f.rep_bps.begin(), f.rep_bps.end());
    }
    return f;
  }

  void quit() { send_request(s_, Request{kQuit, false, 0, 0}); }

 private:
  // One batch of count messages; the seconds it took (latency: half round trips into samples).
  double batch(const Run& run, Message& m, uint64_t count, std::vector<double>* samples) {
    if (count == 0) return 0;
    send_request(s_, Request{run.latency ? kPingPong : kStream, run.crc, run.size, count});
    if (s_.recv_u64() != 0) throw Failure("the server refused the request");
    uint64_t mismatches = 0;
    const Clock::time_point start = Clock::now();
    if (run.latency) {
      if (samples) samples->reserve(count);
      Clock::time_point t0 = start;
      for (uint64_t i = 0; i < count; ++i) {
        m.seal();
        s_.send_all(m.bytes.data(), m.wire());
        s_.recv_all(m.bytes.data(), m.wire());
        if (!m.intact()) ++mismatches;
        const Clock::time_point t1 = Clock::now();
        if (samples) samples->push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / 2);
        t0 = t1;
      }
    } else {
      for (uint64_t i = 0; i < count; ++i) {
        m.seal();
        s_.send_all(m.bytes.data(), m.wire());
      }
    }
    const uint64_t server_mismatches = s_.recv_u64();  // for a stream: the end of the timing
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (mismatches + server_mismatches != 0)
      throw Failure(fmt::format("CRC32c mismatch: {} messages at the client, {} at the server", mismatches,
                                server_mismatches));
    return seconds;
  }
  Socket& s_;
};

// The server on a second thread of this process (one client, over loopback). Whatever
// happens to the client, finish() (or the destructor) unblocks and joins it.
class ServerThread {
 public:
  ServerThread() = default;
  ServerThread(const ServerThread&) = delete;
  ServerThread& operator=(const ServerThread&) = delete;
  ~ServerThread() { finish(); }

  // Listens on a free loopback port, serves from a thread pinned to cpu; returns the port.
  uint16_t start(int cpu, int sockbuf, double idle_timeout) {
    sockaddr_storage bound{};
    listener_ = listen_on("127.0.0.1", 0, bound);
    thread_ = std::thread([this, cpu, sockbuf, idle_timeout] {
      try {
        pin(cpu);
        int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) throw Failure(errno_text("accept"));
        prepare(fd, sockbuf);
        Socket s(fd, idle_timeout);
        serve(s);
      } catch (const std::exception& e) {
        error_ = e.what();
      }
    });
    return port_of(bound);
  }
  // Joins the thread; what went wrong on the server, or "".
  std::string finish() {
    if (listener_ >= 0) shutdown(listener_, SHUT_RDWR);  // wakes an accept that never got a client
    if (thread_.joinable()) thread_.join();
    if (listener_ >= 0) close(listener_);
    listener_ = -1;
    return error_;
  }

 private:
  int listener_ = -1;
  std::thread thread_;
  std::string error_;
};

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
constexpr uint64_t kDefaultSockbuf = 4u << 20;
uint64_t default_sockbuf() {
  for (const char* name : {"/proc/sys/net/core/rmem_max", "/proc/sys/net/core/wmem_max"}) {
    FILE* f = std::fopen(name, "r");
    unsigned long long max = 0;
    const bool read = f != nullptr && std::fscanf(f, "%llu", &max) == 1;
    if (f != nullptr) std::fclose(f);
    if (!read || max < kDefaultSockbuf) return 0;
  }
  return kDefaultSockbuf;
}

uint64_t default_iterations(bool latency, uint64_t size) {
  if (latency) return std::clamp<uint64_t>((64ull << 20) / size, 200, 20000);
  return std::clamp<uint64_t>((256ull << 20) / size, 200, 200000);
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof set, &set);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

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
