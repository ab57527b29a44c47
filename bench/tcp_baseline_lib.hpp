// The raw TCP baseline's measuring code, shared by the tcp_baseline tool and the iWARP
// benchmark (softndk_iwarp_bench), so both measure TCP the same way:
//
//   latency    a ping-pong of SIZE-byte messages; both ends busy-poll a non-blocking
//              socket; reported as half the round trip (min, median, p99, mean).
//   bandwidth  a stream of SIZE-byte messages from the client to the server, timed from
//              the first byte sent to the server's answer that it received the last one.
//   crc        every message carries a 4-byte CRC32c of its payload (as an MPA FPDU does):
//              the sender computes it, the receiver computes it again and compares. The
//              CRC is the one the iWARP fabric uses (ISA-L, src/fabric/tcp/iwarp_wire.hpp).
//
// Sockets have TCP_NODELAY and are non-blocking; both ends spin on EAGAIN.
#pragma once

#include <sched.h>
#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace softndk::tcp_baseline {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kMaxSize = 256ull << 20;  // the largest message

// A run that failed: connection, CRC mismatch, silent peer.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string errno_text(const char* what);

// ---- sockets ----------------------------------------------------------------------------

// A busy-polled non-blocking socket (owns the descriptor).
class Socket {
 public:
  Socket(int fd, double idle_timeout_s) : fd_(fd), idle_timeout_(idle_timeout_s) {}
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // Sends or receives exactly n bytes, spinning on EAGAIN. A peer silent for longer than
  // the idle timeout is an error, so that a dead peer cannot hang a benchmark.
  void send_all(const uint8_t* p, size_t n) { transfer(const_cast<uint8_t*>(p), n, true); }
  void recv_all(uint8_t* p, size_t n) { transfer(p, n, false); }
  void send_u64(uint64_t v);
  uint64_t recv_u64();
  int fd() const { return fd_; }

 private:
  void transfer(uint8_t* p, size_t n, bool sending);
  int fd_;
  double idle_timeout_;
};

int get_int_option(int fd, int level, int name);
// TCP_NODELAY, SO_SNDBUF/SO_RCVBUF = sockbuf unless 0 (autotuning), non-blocking.
void prepare(int fd, int sockbuf);
// Pins the calling thread to one CPU.
void pin(int cpu);
// A listening socket on ADDRESS:PORT (port 0: any free one); `bound` is its address.
int listen_on(const std::string& address, uint16_t port, sockaddr_storage& bound);
uint16_t port_of(const sockaddr_storage& a);
int connect_to(const std::string& host, uint16_t port);

// Pins the calling thread to `cpu` and gives it back its former CPUs when it goes.
class ScopedPin {
 public:
  explicit ScopedPin(int cpu);
  ~ScopedPin();
  ScopedPin(const ScopedPin&) = delete;
  ScopedPin& operator=(const ScopedPin&) = delete;

 private:
  cpu_set_t saved_;
  bool restore_ = false;
};

// ---- the server -------------------------------------------------------------------------

// Serves one client until it says quit; returns the batches served.
uint64_t serve(Socket& s);

// The server on a second thread of this process (one client, over loopback). Whatever
// happens to the client, finish() (or the destructor) unblocks and joins it.
class ServerThread {
 public:
  ServerThread() = default;
  ServerThread(const ServerThread&) = delete;
  ServerThread& operator=(const ServerThread&) = delete;
  ~ServerThread() { finish(); }

  // Listens on a free loopback port, serves from a thread pinned to cpu; returns the port.
  uint16_t start(int cpu, int sockbuf, double idle_timeout);
  // Joins the thread; what went wrong on the server, or "".
  std::string finish();

 private:
  int listener_ = -1;
  std::thread thread_;
  std::string error_;
};

// ---- the client -------------------------------------------------------------------------

struct Run {
  bool latency;  // ping-pong, else stream
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

double median_of(std::vector<double> v);

struct Message;

class Client {
 public:
  explicit Client(Socket& s) : s_(s) {}
  // A warm-up of run.warmup messages, then run.repetitions batches of run.iterations;
  // figures are medians over the repetitions. Throws Failure.
  Figures measure(const Run& run);
  void quit();

 private:
  double batch(const Run& run, Message& m, uint64_t count, std::vector<double>* samples);
  Socket& s_;
};

// Both ends in this process over 127.0.0.1: the server on a thread pinned to server_cpu,
// the client on whichever thread calls client().measure() (pinned by the caller).
class Loopback {
 public:
  Loopback(int server_cpu, int sockbuf, double idle_timeout);  // throws Failure
  ~Loopback();  // says quit and joins the server
  Loopback(const Loopback&) = delete;
  Loopback& operator=(const Loopback&) = delete;
  Client& client() { return *client_; }
  // Says quit, joins the server; what went wrong on the server, or "".
  std::string finish();

 private:
  ServerThread server_;
  std::unique_ptr<Socket> socket_;
  std::unique_ptr<Client> client_;
};

// ---- defaults -----------------------------------------------------------------------------

// The default socket buffers: 4 MiB when net.core.rmem_max and wmem_max allow it (on
// loopback here 5-20% more bandwidth than the kernel's autotuning), else 0 (autotuning).
constexpr uint64_t kDefaultSockbuf = 4u << 20;
uint64_t default_sockbuf();
// Messages per repetition: about 64 MiB (latency) or 256 MiB (bandwidth).
uint64_t default_iterations(bool latency, uint64_t size);
// The CPUs this process may run on.
std::vector<int> allowed_cpus();

}  // namespace softndk::tcp_baseline
