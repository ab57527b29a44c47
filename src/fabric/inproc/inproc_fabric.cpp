#include "fabric/inproc/inproc_fabric.hpp"

#include <arpa/inet.h>

#include <cstring>

#include "fabric/inproc/inproc_connection.hpp"

namespace softndk::fabric::inproc {

namespace {
constexpr uint32_t kEphemeralFirst = 49152;
constexpr uint32_t kEphemeralCount = 65536 - kEphemeralFirst;
}  // namespace

InprocHost::InprocHost(ULONG ifindex, std::string name, std::vector<SockAddr> addresses)
    : ifindex_(ifindex), name_(std::move(name)), addresses_(std::move(addresses)) {}

NTSTATUS InprocHost::reserve(SockAddr& address) {
  if (!owns(address)) return STATUS_INVALID_ADDRESS;
  std::lock_guard lock(mutex_);
  if (address.port() != 0) {
    return reserved_.insert(address.key()).second ? STATUS_SUCCESS : STATUS_SHARING_VIOLATION;
  }
  // Port 0: the next free ephemeral port, round robin so a port just released is not
  // handed out again at once.
  for (uint32_t i = 0; i < kEphemeralCount; ++i) {
    uint32_t port = kEphemeralFirst + (next_ephemeral_ + i) % kEphemeralCount;
    address.set_port(static_cast<uint16_t>(port));
    if (reserved_.insert(address.key()).second) {
      next_ephemeral_ = (port - kEphemeralFirst + 1) % kEphemeralCount;
      return STATUS_SUCCESS;
    }
  }
  address.set_port(0);
  return STATUS_TOO_MANY_ADDRESSES;
}

void InprocHost::unreserve(const SockAddr& address) {
  std::lock_guard lock(mutex_);
  reserved_.erase(address.key());
}

void InprocHost::listen(const SockAddr& address, ListenerEvents* events) {
  std::lock_guard lock(mutex_);
  listeners_[address.key()] = events;
}

void InprocHost::unlisten(const SockAddr& address) {
  std::lock_guard lock(mutex_);
  listeners_.erase(address.key());
}

std::shared_ptr<Connection> InprocHost::connect(const SockAddr& source,
                                                const SockAddr& destination,
                                                ConnectorEvents* events) {
  return std::make_shared<InprocConnection>(source, destination, events);
}

NTSTATUS InprocHost::deliver_request(const SockAddr& destination,
                                     std::shared_ptr<Connection> connection, ULONG inbound_limit,
                                     ULONG outbound_limit, std::span<const uint8_t> private_data) {
  ListenerEvents* listener;
  {
    std::lock_guard lock(mutex_);
    auto it = listeners_.find(destination.key());
    if (it == listeners_.end()) return STATUS_CONNECTION_REFUSED;  // nobody listening
    listener = it->second;
    listener->pin();
  }
  NTSTATUS status =
      listener->connect_request(std::move(connection), inbound_limit, outbound_limit, private_data);
  listener->unpin();
  return status;
}

InprocFabric& InprocFabric::instance() {
  static InprocFabric fabric;
  return fabric;
}

InprocFabric::InprocFabric() {
  SOCKADDR_INET v4{};
  v4.Ipv4.sin_family = AF_INET;
  v4.Ipv4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  SOCKADDR_INET v6{};
  v6.Ipv6.sin6_family = AF_INET6;
  v6.Ipv6.sin6_addr = in6addr_loopback;
  hosts_[kLoopbackIfIndex] = std::make_shared<InprocHost>(
      kLoopbackIfIndex, "inproc-lo",
      std::vector<SockAddr>{SockAddr::from_inet(v4), SockAddr::from_inet(v6)});
}

std::vector<std::shared_ptr<Interface>> InprocFabric::interfaces() {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<Interface>> result;
  for (auto& [index, host] : hosts_) result.push_back(host);
  return result;
}

NTSTATUS InprocFabric::create_host(const std::string& name,
                                   const std::vector<SockAddr>& addresses, ULONG* ifindex) {
  std::lock_guard lock(mutex_);
  for (const SockAddr& address : addresses) {
    if (address.is_unspecified()) return STATUS_INVALID_ADDRESS;
    for (auto& [index, host] : hosts_)
      if (host->owns(address)) return STATUS_ADDRESS_ALREADY_EXISTS;
  }
  std::vector<SockAddr> own;
  for (SockAddr address : addresses) {
    address.set_port(0);
    own.push_back(address);
  }
  ULONG index = next_ifindex_++;
  hosts_[index] = std::make_shared<InprocHost>(index, name, std::move(own));
  *ifindex = index;
  return STATUS_SUCCESS;
}

std::shared_ptr<InprocHost> InprocFabric::host_owning(const SockAddr& address) {
  std::lock_guard lock(mutex_);
  for (auto& [index, host] : hosts_)
    if (host->owns(address)) return host;
  return nullptr;
}

NTSTATUS InprocFabric::destroy_host(ULONG ifindex) {
  std::lock_guard lock(mutex_);
  auto it = hosts_.find(ifindex);
  if (it == hosts_.end() || ifindex == kLoopbackIfIndex) return STATUS_NOT_FOUND;
  if (it->second->open_adapters() > 0) return STATUS_INVALID_DEVICE_STATE;
  hosts_.erase(it);
  return STATUS_SUCCESS;
}

}  // namespace softndk::fabric::inproc
