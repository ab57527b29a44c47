// The raw TCP baseline's measuring code: see tcp_baseline_lib.hpp.
#include "tcp_baseline_lib.hpp"

#include <arpa/inet.h>
#include <endian.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>

#include <fmt/format.h>

#include "fabric/tcp/iwarp_wire.hpp"

namespace softndk::tcp_baseline {

namespace {

constexpr uint32_t kMagic = 0x54434250;  // "TCBP"
constexpr size_t kTrailer = 4;           // the CRC32c after each payload, with crc

void set_int_option(int fd, int level, int name, int value, const char* what) {
  if (setsockopt(fd, level, name, &value, sizeof value) != 0) throw Failure(errno_text(what));
}

uint32_t crc32c(const uint8_t* p, size_t n) {
  softndk::fabric::tcp::Crc32c c;
  c.update(p, n);
  return c.value();
}

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

double percentile(const std::vector<double>& sorted, double q) {
  size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, i == 0 ? 0 : i - 1)];
}

}  // namespace

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

std::string errno_text(const char* what) { return fmt::format("{}: {}", what, std::strerror(errno)); }

// ---- sockets ----------------------------------------------------------------------------

Socket::~Socket() {
  if (fd_ >= 0) close(fd_);
}

void Socket::send_u64(uint64_t v) {
  v = htobe64(v);
  send_all(reinterpret_cast<const uint8_t*>(&v), sizeof v);
}

uint64_t Socket::recv_u64() {
  uint64_t v = 0;
  recv_all(reinterpret_cast<uint8_t*>(&v), sizeof v);
  return be64toh(v);
}

void Socket::transfer(uint8_t* p, size_t n, bool sending) {
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

ScopedPin::ScopedPin(int cpu) {
  CPU_ZERO(&saved_);
  restore_ = pthread_getaffinity_np(pthread_self(), sizeof saved_, &saved_) == 0;
  pin(cpu);
}

ScopedPin::~ScopedPin() {
  if (restore_) pthread_setaffinity_np(pthread_self(), sizeof saved_, &saved_);
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

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

Figures Client::measure(const Run& run) {
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

void Client::quit() { send_request(s_, Request{kQuit, false, 0, 0}); }

// One batch of count messages; the seconds it took (latency: half round trips into samples).
double Client::batch(const Run& run, Message& m, uint64_t count, std::vector<double>* samples) {
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

uint16_t ServerThread::start(int cpu, int sockbuf, double idle_timeout) {
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

std::string ServerThread::finish() {
  if (listener_ >= 0) shutdown(listener_, SHUT_RDWR);  // wakes an accept that never got a client
  if (thread_.joinable()) thread_.join();
  if (listener_ >= 0) close(listener_);
  listener_ = -1;
  return error_;
}

Loopback::Loopback(int server_cpu, int sockbuf, double idle_timeout) {
  const uint16_t port = server_.start(server_cpu, sockbuf, idle_timeout);
  const int fd = connect_to("127.0.0.1", port);
  socket_ = std::make_unique<Socket>(fd, idle_timeout);  // owns fd from here on
  prepare(fd, sockbuf);
  client_ = std::make_unique<Client>(*socket_);
}

Loopback::~Loopback() { finish(); }

std::string Loopback::finish() {
  if (client_) {
    try {
      client_->quit();
    } catch (const Failure&) {
      shutdown(socket_->fd(), SHUT_RDWR);  // the server then fails its read and ends
    }
    client_.reset();
  }
  std::string error = server_.finish();
  socket_.reset();
  return error;
}

// ---- defaults -----------------------------------------------------------------------------

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

}  // namespace softndk::tcp_baseline
