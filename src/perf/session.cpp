#include "perf/session.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "perf/ndk_call.hpp"

namespace softndk::perf {

using namespace detail;

// ---- addresses ----------------------------------------------------------------------------

std::optional<SOCKADDR_INET> parse_address(const std::string& text, uint16_t default_port, std::string* error) {
  std::string host = text, port;
  bool has_port = false;
  if (!text.empty() && text.front() == '[') {  // [v6]:port
    size_t close = text.find(']');
    if (close == std::string::npos) {
      *error = "'" + text + "': no closing ]";
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') {
        *error = "'" + text + "': expected :PORT after ]";
        return std::nullopt;
      }
      port = text.substr(close + 2);
      has_port = true;
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {  // v4:port
    host = text.substr(0, text.find(':'));
    port = text.substr(text.find(':') + 1);
    has_port = true;
  }
  SOCKADDR_INET a{};
  uint16_t p = default_port;
  if (has_port) {
    char* end = nullptr;
    unsigned long value = std::strtoul(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || value > 65535) {
      *error = "'" + text + "': the port must be 0 .. 65535";
      return std::nullopt;
    }
    p = static_cast<uint16_t>(value);
  }
  if (inet_pton(AF_INET, host.c_str(), &a.Ipv4.sin_addr) == 1) {
    a.Ipv4.sin_family = AF_INET;
    a.Ipv4.sin_port = htons(p);
  } else if (inet_pton(AF_INET6, host.c_str(), &a.Ipv6.sin6_addr) == 1) {
    a.Ipv6.sin6_family = AF_INET6;
    a.Ipv6.sin6_port = htons(p);
  } else {
    *error = "'" + text + "': not an IPv4 or IPv6 address (ADDR, ADDR:PORT or [IPV6]:PORT)";
    return std::nullopt;
  }
  return a;
}

std::string ip_text(const SOCKADDR_INET& a) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (a.si_family == AF_INET) inet_ntop(AF_INET, &a.Ipv4.sin_addr, text, sizeof(text));
  if (a.si_family == AF_INET6) inet_ntop(AF_INET6, &a.Ipv6.sin6_addr, text, sizeof(text));
  return text;
}

uint16_t port_of(const SOCKADDR_INET& a) { return ntohs(a.si_family == AF_INET ? a.Ipv4.sin_port : a.Ipv6.sin6_port); }

std::string address_text(const SOCKADDR_INET& a) {
  // fmt, not string concatenation: GCC 12 at -O3 misreads `"[" + std::string` (-Wrestrict).
  if (a.si_family == AF_INET6) return fmt::format("[{}]:{}", ip_text(a), port_of(a));
  return fmt::format("{}:{}", ip_text(a), port_of(a));
}

const char* to_string(Tool tool) { return tool == Tool::kPing ? "ndkping" : "ndkperf"; }

// ---- wire formats: little-endian ----------------------------------------------------------

namespace {

constexpr uint32_t kGreetingMagic = 0x4B444E53;  // "SNDK"
constexpr uint32_t kControlMagic = 0x4C54434E;   // "NCTL"
constexpr uint8_t kVersion = 1;

void put(uint8_t* to, uint64_t value, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) to[i] = static_cast<uint8_t>(value >> (8 * i));
}
uint64_t get(const uint8_t* from, size_t bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes; ++i) value |= uint64_t{from[i]} << (8 * i);
  return value;
}

// The local address the kernel would use to reach `to` (a UDP socket's route, no packet).
std::optional<SOCKADDR_INET> source_for(const SOCKADDR_INET& to) {
  int fd = socket(to.si_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  SOCKADDR_INET target = to, local{};
  if (port_of(target) == 0) {  // connect() wants a port; any will do
    if (target.si_family == AF_INET) target.Ipv4.sin_port = htons(9);
    else target.Ipv6.sin6_port = htons(9);
  }
  socklen_t length = sizeof(local);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&target), length_of(target)) == 0 &&
            getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0;
  ::close(fd);
  if (!ok) return std::nullopt;
  if (local.si_family == AF_INET) local.Ipv4.sin_port = 0;
  else local.Ipv6.sin6_port = 0;
  return local;
}

}  // namespace

std::vector<uint8_t> Greeting::encode() const {
  std::vector<uint8_t> b(kBytes);
  put(&b[0], kGreetingMagic, 4);
  b[4] = kVersion;
  b[5] = static_cast<uint8_t>(tool);
  put(&b[6], status, 2);
  put(&b[8], area, 8);
  put(&b[16], queue_depth, 4);
  put(&b[20], max_sge, 4);
  put(&b[24], inline_data, 4);
  put(&b[28], nonce, 8);
  put(&b[36], buffer, 8);
  put(&b[44], token, 4);
  put(&b[48], message_size, 4);
  return b;
}

std::optional<Greeting> Greeting::decode(const std::vector<uint8_t>& b) {
  if (b.size() < kBytes || get(&b[0], 4) != kGreetingMagic || b[4] != kVersion) return std::nullopt;
  Greeting g;
  g.tool = static_cast<Tool>(b[5]);
  g.status = static_cast<uint16_t>(get(&b[6], 2));
  g.area = get(&b[8], 8);
  g.queue_depth = static_cast<uint32_t>(get(&b[16], 4));
  g.max_sge = static_cast<uint32_t>(get(&b[20], 4));
  g.inline_data = static_cast<uint32_t>(get(&b[24], 4));
  g.nonce = get(&b[28], 8);
  g.buffer = get(&b[36], 8);
  g.token = static_cast<uint32_t>(get(&b[44], 4));
  g.message_size = static_cast<uint32_t>(get(&b[48], 4));
  return g;
}

void Control::encode(uint8_t* to) const {
  std::memset(to, 0, kBytes);
  put(to, kControlMagic, 4);
  put(to + 4, kind, 4);
  for (int i = 0; i < 8; ++i) put(to + 8 + 8 * i, arg[i], 8);
  std::memcpy(to + 72, text.data(), std::min(text.size(), kTextBytes));
}

std::optional<Control> Control::decode(const uint8_t* from, size_t bytes) {
  if (bytes != kBytes || get(from, 4) != kControlMagic) return std::nullopt;
  Control c;
  c.kind = static_cast<uint32_t>(get(from + 4, 4));
  for (int i = 0; i < 8; ++i) c.arg[i] = get(from + 8 + 8 * i, 8);
  const char* text = reinterpret_cast<const char*>(from + 72);
  c.text.assign(text, strnlen(text, kTextBytes));
  return c;
}

// ---- the session ----------------------------------------------------------------------------

Session::Session() : incoming_(std::make_unique<Incoming>()) {
  local_.name = "local";
  peer_.name = "peer";
  peer_.remote = true;
}

Session::~Session() { teardown(); }

void Session::on_disconnect(PVOID context) { static_cast<Session*>(context)->disconnects_++; }

namespace {

// The peer's endpoint as far as this process knows it.
void describe_peer(Endpoint& peer, const Endpoint& local, const Greeting& g) {
  peer.info = local.info;
  peer.buffer = reinterpret_cast<uint8_t*>(static_cast<uintptr_t>(g.buffer));
  peer.area = g.area;
  peer.remote_token = g.token;
  peer.max_sge = g.max_sge;
  peer.inline_data = g.inline_data;
}

void complete(Greeting& g, const Endpoint& e) {
  g.area = e.area;
  g.max_sge = e.max_sge;
  g.inline_data = e.inline_data;
  g.buffer = reinterpret_cast<uintptr_t>(e.buffer);
  g.token = e.remote_token;
}

}  // namespace

std::unique_ptr<Session> Session::listen(const SOCKADDR_INET& bind, SOFTNDK_COMPLETION_MODE mode) {
  std::unique_ptr<Session> s(new Session());
  s->local_.address = bind;
  EndpointOptions options;
  options.fabric = SOFTNDK_FABRIC_TCP;
  options.completion_mode = mode;
  if (bind.si_family == AF_INET ? bind.Ipv4.sin_addr.s_addr == 0 : IN6_IS_ADDR_UNSPECIFIED(&bind.Ipv6.sin6_addr))
    throw Error("listening on " + ip_text(bind) + ": give one of this host's addresses (ndkinfo lists them)",
                STATUS_INVALID_ADDRESS);
  open_adapter(s->local_, options, 0);
  s->listener_ = detail::listen(s->local_, s->incoming_.get());
  return s;
}

std::optional<Greeting> Session::wait_for_client(const std::atomic<bool>* stop) {
  for (;;) {
    NDK_CONNECTOR* c = incoming_->next(std::chrono::hours(24), stop);
    if (c == nullptr) {
      if (stop != nullptr && stop->load()) return std::nullopt;
      continue;
    }
    ULONG length = 0;
    std::vector<uint8_t> data(Greeting::kBytes + 64);
    length = static_cast<ULONG>(data.size());
    NTSTATUS status = c->Dispatch->NdkGetConnectionData(c, &peer_ird_, &peer_ord_, data.data(), &length);
    data.resize(status == STATUS_SUCCESS ? length : 0);
    std::optional<Greeting> hello = Greeting::decode(data);
    if (!hello) {
      c->Dispatch->NdkReject(c, nullptr, 0);
      close(c, "connector");
      continue;
    }
    local_.connector = c;
    ULONG address_length = sizeof(peer_address_);
    c->Dispatch->NdkGetPeerAddress(c, as_sockaddr(peer_address_), &address_length);
    peer_greeting_ = *hello;
    return hello;
  }
}

void Session::accept(const EndpointOptions& options, Greeting answer) {
  create_queues(local_, options);
  describe_peer(peer_, local_, peer_greeting_);
  post_control_receive();
  complete(answer, local_);
  answer.queue_depth = options.queue_depth;
  queue_depth_ = std::min<ULONG>(options.queue_depth, peer_greeting_.queue_depth);
  ULONG ird = std::min(local_.info.MaxInboundReadLimit, peer_ord_);
  ULONG ord = std::min(local_.info.MaxOutboundReadLimit, peer_ird_);
  NTSTATUS returned = start_accept(local_, ird, ord, answer.encode(), &Session::on_disconnect, this, incoming_->accepted);
  NTSTATUS status = incoming_->accepted.settle(returned);
  if (status != STATUS_SUCCESS) throw Error("accepting", status);
  connected_ = true;
}

void Session::reject(Greeting answer) {
  std::vector<uint8_t> data = answer.encode();
  local_.connector->Dispatch->NdkReject(local_.connector, data.data(), static_cast<ULONG>(data.size()));
  close(local_.connector, "connector");
}

std::unique_ptr<Session> Session::connect(const SOCKADDR_INET& server, const EndpointOptions& options, Greeting hello,
                                          std::chrono::milliseconds timeout) {
  std::unique_ptr<Session> s(new Session());
  s->peer_address_ = server;
  std::optional<SOCKADDR_INET> source = source_for(server);
  if (!source) throw Error("no route to " + ip_text(server), STATUS_NETWORK_UNREACHABLE);
  s->local_.address = *source;
  open_adapter(s->local_, options, 0);
  create_queues(s->local_, options);
  complete(hello, s->local_);
  hello.queue_depth = options.queue_depth;
  Endpoint& e = s->local_;
  Waiter& connected = s->incoming_->connected;
  NTSTATUS returned = start_connect(e, server, e.info.MaxInboundReadLimit, e.info.MaxOutboundReadLimit,
                                    hello.encode(), connected);
  try {
    // The connect_timeout_ms tunable ends a connect nobody answers; this is the backstop.
    finish_connect(e, connected, returned, &Session::on_disconnect, s.get(), timeout + std::chrono::seconds(5));
  } catch (const Error& error) {
    if (error.status() == STATUS_CONNECTION_REFUSED) {
      // A server that refused says why in its private data; the kernel's refusal has none.
      try {
        if (auto why = Greeting::decode(connection_data(e.connector, "the client"))) s->peer_greeting_ = *why;
      } catch (const Error&) {
      }
      throw Error(s->peer_greeting_.status == Greeting::kWrongTool
                      ? std::string("connecting: the server is ") + to_string(s->peer_greeting_.tool) + ", not " +
                            to_string(hello.tool)
                  : s->peer_greeting_.status == Greeting::kTooLarge ? "connecting: the server cannot register that much"
                  : s->peer_greeting_.status == Greeting::kSimulated ? "connecting: the server refused (simulated)"
                  : s->peer_greeting_.status == Greeting::kBusy      ? "connecting: the server is busy"
                                                                     : "connecting",
                  STATUS_CONNECTION_REFUSED);
    }
    throw;
  }
  s->connected_ = true;
  std::optional<Greeting> welcome = Greeting::decode(e.peer_data);
  if (!welcome || welcome->tool != hello.tool || welcome->nonce != hello.nonce)
    throw Error("the server's private data is not a matching greeting", STATUS_DATA_ERROR);
  s->peer_greeting_ = *welcome;
  s->queue_depth_ = std::min<ULONG>(options.queue_depth, welcome->queue_depth);
  describe_peer(s->peer_, e, *welcome);
  return s;
}

void Session::teardown() noexcept {
  if (connected_ && local_.connector != nullptr) {
    Waiter w;
    w.settle(local_.connector->Dispatch->NdkDisconnect(local_.connector, &Waiter::on_request, &w));
  }
  close(local_.connector, "connector");
  close(listener_, "listener");
  incoming_->close_all();
  close_endpoint(local_);
}

// ---- control messages -------------------------------------------------------------------------

void Session::post_control_receive() {
  NDK_SGE sge = local_.sge(local_.control() + kControlReceiveOffset, Control::kBytes);
  NTSTATUS status = local_.qp->Dispatch->NdkReceive(local_.qp, control_context(), &sge, 1);
  if (status != STATUS_SUCCESS) throw Error("posting a control receive", status);
}

void Session::send_control(const Control& message, std::chrono::milliseconds timeout) {
  uint8_t* slot = local_.control() + kControlSendOffset;
  message.encode(slot);
  NDK_SGE sge = local_.sge(slot, Control::kBytes);
  NTSTATUS status = local_.qp->Dispatch->NdkSend(local_.qp, control_context(), &sge, 1, 0);
  if (status != STATUS_SUCCESS) throw Error("sending a control message", status);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  NDK_RESULT r{};
  // Completions of silent requests that no signalled one retired may come first.
  for (uint64_t spins = 0;; ++spins) {
    if (local_.send_cq->Dispatch->NdkGetCqResults(local_.send_cq, &r, 1) == 1) {
      if (r.RequestContext == control_context() || r.Status != STATUS_SUCCESS) break;
      continue;
    }
    if ((spins & 1023) == 1023 && std::chrono::steady_clock::now() > deadline)
      throw Error("sending a control message", STATUS_IO_TIMEOUT);
  }
  if (r.Status != STATUS_SUCCESS) throw Error("sending a control message", r.Status);
}

Session::Wait Session::wait_control(Control& message, std::chrono::milliseconds timeout,
                                    const std::atomic<bool>* stop) {
  const auto start = std::chrono::steady_clock::now();
  NDK_RESULT r{};
  for (uint64_t spins = 0;; ++spins) {
    if (local_.recv_cq->Dispatch->NdkGetCqResults(local_.recv_cq, &r, 1) == 1) break;
    if ((spins & 1023) != 1023) continue;
    if (stop != nullptr && stop->load()) return Wait::kStopped;
    if (disconnects_.load() > 0) return Wait::kDisconnected;
    const auto waited = std::chrono::steady_clock::now() - start;
    if (timeout.count() > 0 && waited > timeout) return Wait::kTimeout;
    if (waited > std::chrono::milliseconds(200)) usleep(20);  // a long wait: leave the CPU to others

  }
  if (r.Status != STATUS_SUCCESS) {
    if (disconnects_.load() > 0) return Wait::kDisconnected;
    throw Error("a control receive", r.Status);
  }
  std::optional<Control> c = r.RequestContext == control_context()
                                 ? Control::decode(local_.control() + kControlReceiveOffset, r.BytesTransferred)
                                 : std::nullopt;
  if (!c) throw Error("a control message expected, something else received", STATUS_DATA_ERROR);
  message = *c;
  return Wait::kDone;
}

}  // namespace softndk::perf
