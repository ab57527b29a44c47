#include "fabric/tcp/tcp_fabric.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "fabric/tcp/engine.hpp"
#include "fabric/tcp/tcp_connection.hpp"

namespace softndk::fabric::tcp {

NTSTATUS status_of_errno(int error) {
  switch (error) {
    case ECONNREFUSED:
      return STATUS_CONNECTION_REFUSED;
    case ENETUNREACH:
    case ENETDOWN:
    case EAFNOSUPPORT:
      return STATUS_NETWORK_UNREACHABLE;
    case EHOSTUNREACH:
    case EHOSTDOWN:
      return STATUS_HOST_UNREACHABLE;
    case ETIMEDOUT:
      return STATUS_IO_TIMEOUT;
    case EADDRINUSE:
      return STATUS_SHARING_VIOLATION;
    case EADDRNOTAVAIL:
      return STATUS_ADDRESS_ALREADY_EXISTS;  // the same 4-tuple exists (R160)
    case ECONNRESET:
      return STATUS_CONNECTION_RESET;
    case ENOMEM:
    case ENOBUFS:
    case EMFILE:
    case ENFILE:
      return STATUS_INSUFFICIENT_RESOURCES;
    default:
      return STATUS_CONNECTION_ABORTED;
  }
}

namespace {

// A non-blocking TCP socket of the address's family, SO_REUSEADDR so that a connection
// may use a reserved address (and a shared endpoint's several connections the same one).
int make_socket(int family) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  return fd;
}

SockAddr address_of(const sockaddr_storage& ss) {
  SOCKADDR_INET inet{};
  std::memcpy(&inet, &ss, ss.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
  return SockAddr::from_inet(inet);
}

}  // namespace

// The listening socket's handler: accepts and starts reading MPA Requests.
class TcpInterface::Acceptor final : public Engine::Handler {
 public:
  Acceptor(TcpInterface* iface, int fd) : iface_(iface), fd_(fd) {}
  void on_events(uint32_t) override {
    for (;;) {
      sockaddr_storage peer{}, local{};
      socklen_t peer_length = sizeof peer, local_length = sizeof local;
      int fd = accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or a connection that vanished
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length);
      auto connection = std::make_shared<TcpConnection>(fd, address_of(local), address_of(peer), iface_);
      connection->start_passive();  // on failure the connection (and socket) just goes
    }
  }

 private:
  TcpInterface* const iface_;
  const int fd_;
};

TcpInterface::TcpInterface(ULONG ifindex, std::string name, std::vector<SockAddr> addresses,
                           bool loopback)
    : ifindex_(ifindex),
      name_(std::move(name)),
      addresses_(std::move(addresses)),
      loopback_(loopback),
      // Processes start at different points of the range: fewer collisions between them.
      next_ephemeral_(static_cast<uint32_t>(getpid()) * 2654435761u) {}

bool TcpInterface::owns(const SockAddr& address) const {
  if (loopback_ && address.family() == AF_INET &&
      (ntohl(address.inet().Ipv4.sin_addr.s_addr) >> 24) == IN_LOOPBACKNET)
    return true;
  return Interface::owns(address);
}

TcpInterface::~TcpInterface() {
  for (auto& [key, fd] : reserved_) close(fd);
}

// Binds a socket to `address` and keeps it as the reservation; STATUS_SHARING_VIOLATION
// when the address:port is taken (here or by another program).
NTSTATUS TcpInterface::bind_reserved(const SockAddr& address) {
  int fd = make_socket(address.family());
  if (fd < 0) return STATUS_INSUFFICIENT_RESOURCES;
  if (bind(fd, address.sockaddr(), address.length()) != 0) {
    const int error = errno;
    close(fd);
    return error == EADDRINUSE ? STATUS_SHARING_VIOLATION
           : error == EADDRNOTAVAIL ? STATUS_INVALID_ADDRESS
                                    : STATUS_INSUFFICIENT_RESOURCES;
  }
  std::lock_guard lock(mutex_);
  // SO_REUSEADDR lets this process bind a port twice; a reservation is exclusive.
  if (!reserved_.emplace(address.key(), fd).second) {
    close(fd);
    return STATUS_SHARING_VIOLATION;
  }
  return STATUS_SUCCESS;
}

NTSTATUS TcpInterface::reserve(SockAddr& address) {
  if (!owns(address)) return STATUS_INVALID_ADDRESS;
  if (address.port() != 0) return bind_reserved(address);
  // Port 0: an ephemeral port of the NDK's range, 49152-65535 (R031, R159, R189), tried
  // from a point that moves on, so that a port just released is not handed out again.
  constexpr uint32_t kFirst = 49152, kCount = 65536 - kFirst;
  const uint32_t start = next_ephemeral_.fetch_add(1) % kCount;
  for (uint32_t i = 0; i < kCount; ++i) {
    const uint32_t port = kFirst + (start + i) % kCount;
    address.set_port(static_cast<uint16_t>(port));
    NTSTATUS status = bind_reserved(address);
    if (status != STATUS_SHARING_VIOLATION) {
      if (NT_SUCCESS(status)) next_ephemeral_.store(port - kFirst + 1);
      else address.set_port(0);
      return status;
    }
  }
  address.set_port(0);
  return STATUS_TOO_MANY_ADDRESSES;
}

void TcpInterface::unreserve(const SockAddr& address) {
  int fd;
  bool accepting;
  {
    std::lock_guard lock(mutex_);
    auto it = reserved_.find(address.key());
    if (it == reserved_.end()) return;
    fd = it->second;
    accepting = acceptors_.erase(address.key()) > 0;
    reserved_.erase(it);
  }
  if (accepting) Engine::instance().remove(fd);
  close(fd);
}

void TcpInterface::progress() {
  if (Engine* engine = Engine::running()) engine->progress();
}

void TcpInterface::consumer_waits() {
  if (Engine* engine = Engine::running()) engine->consumer_waits();
}

void TcpInterface::listen(const SockAddr& address, ListenerEvents* events) {
  std::lock_guard lock(mutex_);
  auto it = reserved_.find(address.key());
  if (it == reserved_.end() || ::listen(it->second, SOMAXCONN) != 0) return;
  listeners_[address.key()] = events;
  if (acceptors_.insert(address.key()).second)
    Engine::instance().add(it->second, EPOLLIN, std::make_shared<Acceptor>(this, it->second));
}

void TcpInterface::unlisten(const SockAddr& address) {
  // The socket keeps accepting until the address is released: a connection arriving in
  // between reads as refused (an MPA Reject), never as a peer that does not answer (R187).
  std::lock_guard lock(mutex_);
  listeners_.erase(address.key());
}

std::shared_ptr<Connection> TcpInterface::connect(const SockAddr& source, const SockAddr& destination,
                                                  ConnectorEvents* events) {
  int fd = make_socket(source.family());
  // A bind failure surfaces as the connect's failure (request() reports it).
  if (fd >= 0) bind(fd, source.sockaddr(), source.length());
  return std::make_shared<TcpConnection>(fd, source, destination, events);
}

NTSTATUS TcpInterface::deliver_request(const SockAddr& local, std::shared_ptr<Connection> connection,
                                       ULONG inbound_limit, ULONG outbound_limit,
                                       std::span<const uint8_t> private_data) {
  ListenerEvents* listener;
  {
    std::lock_guard lock(mutex_);
    auto it = listeners_.find(local.key());
    if (it == listeners_.end()) return STATUS_CONNECTION_REFUSED;  // nobody listening
    listener = it->second;
    listener->pin();
  }
  NTSTATUS status = listener->connect_request(std::move(connection), inbound_limit, outbound_limit,
                                              private_data);
  listener->unpin();
  return status;
}

// ------------------------------------------------------------------------ fabric --

TcpFabric& TcpFabric::instance() {
  static TcpFabric fabric;
  return fabric;
}

std::vector<std::shared_ptr<Interface>> TcpFabric::interfaces() {
  // Every address of every interface that is up (IPv6 link-local ones need a scope: left
  // out), grouped by interface index.
  struct Found {
    std::string name;
    std::vector<SockAddr> addresses;
    bool loopback = false;
  };
  std::map<ULONG, Found> found;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) == 0) {
    for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
      if (a->ifa_addr == nullptr || !(a->ifa_flags & IFF_UP)) continue;
      const int family = a->ifa_addr->sa_family;
      if (family != AF_INET && family != AF_INET6) continue;
      if (family == AF_INET6 &&
          IN6_IS_ADDR_LINKLOCAL(&reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr))
        continue;
      const ULONG index = if_nametoindex(a->ifa_name);
      if (index == 0) continue;
      sockaddr_storage ss{};
      std::memcpy(&ss, a->ifa_addr, family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
      Found& entry = found[index];
      entry.name = a->ifa_name;
      entry.loopback = (a->ifa_flags & IFF_LOOPBACK) != 0;
      entry.addresses.push_back(address_of(ss));
    }
    freeifaddrs(list);
  }
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<Interface>> result;
  for (auto& [index, entry] : found) {
    auto it = interfaces_.find(index);
    if (it == interfaces_.end() || it->second->name() != entry.name ||
        it->second->addresses() != entry.addresses)
      it = interfaces_
               .insert_or_assign(index, std::make_shared<TcpInterface>(index, entry.name, entry.addresses,
                                                                       entry.loopback))
               .first;
    result.push_back(it->second);
  }
  return result;
}

}  // namespace softndk::fabric::tcp
