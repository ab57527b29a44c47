// The iWARP fabric: NDK over RDMAP/DDP/MPA on the kernel's TCP. Its interfaces are the
// host's IP interfaces (loopback included); an adapter opened on one listens and connects
// on that interface's addresses. Connections are TcpConnection (tcp_connection.hpp); every
// socket is served by the process-wide progress engine (engine.hpp).
#pragma once

#include <array>
#include <atomic>
#include <compare>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>

#include "fabric/fabric.hpp"

namespace softndk::fabric::tcp {

class TcpInterface final : public Interface, public std::enable_shared_from_this<TcpInterface> {
 public:
  TcpInterface(ULONG ifindex, std::string name, std::vector<SockAddr> addresses, bool loopback);
  ~TcpInterface() override;
  SOFTNDK_FABRIC fabric() const override { return SOFTNDK_FABRIC_TCP; }
  ULONG ifindex() const override { return ifindex_; }
  std::string name() const override { return name_; }
  std::vector<SockAddr> addresses() const override { return addresses_; }
  // Its addresses; the loopback interface also owns all of 127.0.0.0/8, as the kernel
  // routes every such address to it (tests give each host its own one).
  bool owns(const SockAddr& address) const override;
  // Binds a socket to the address (port 0: a free port of 49152-65535) and keeps it while
  // the reservation lasts, so that other programs see the port taken.
  NTSTATUS reserve(SockAddr& address) override;
  void unreserve(const SockAddr& address) override;
  void listen(const SockAddr& address, ListenerEvents* events) override;
  void unlisten(const SockAddr& address) override;
  void progress() override;
  void consumer_waits() override;
  std::shared_ptr<Connection> connect(const SockAddr& source, const SockAddr& destination,
                                      ConnectorEvents* events) override;

  // A passive connection whose MPA Request arrived on `local`: hands it to the listener
  // there. STATUS_PENDING when a connect event was raised; STATUS_CONNECTION_REFUSED when
  // nobody listens (any more) or the listener refuses.
  NTSTATUS deliver_request(const SockAddr& local, std::shared_ptr<Connection> connection,
                           ULONG inbound_limit, ULONG outbound_limit,
                           std::span<const uint8_t> private_data);

 private:
  class Acceptor;
  using Key = SockAddr::Key;
  NTSTATUS bind_reserved(const SockAddr& address);

  const ULONG ifindex_;
  const std::string name_;
  const std::vector<SockAddr> addresses_;
  const bool loopback_;
  std::atomic<uint32_t> next_ephemeral_;
  std::mutex mutex_;
  std::map<Key, int> reserved_;  // the bound socket of each reservation
  std::map<Key, ListenerEvents*> listeners_;  // listening now
  std::set<Key> acceptors_;                   // reservations whose socket accepts
};

class TcpFabric final : public Fabric {
 public:
  static TcpFabric& instance();
  SOFTNDK_FABRIC kind() const override { return SOFTNDK_FABRIC_TCP; }
  const char* name() const override { return "tcp"; }
  // The host's interfaces that have an IPv4 or IPv6 address and are up, read afresh; an
  // interface keeps its object while its index and addresses stay the same.
  std::vector<std::shared_ptr<Interface>> interfaces() override;

 private:
  TcpFabric() = default;
  std::mutex mutex_;
  std::map<ULONG, std::shared_ptr<TcpInterface>> interfaces_;
};

// Maps a socket error (errno) to the NTSTATUS a connect or a connection reports.
NTSTATUS status_of_errno(int error);

}  // namespace softndk::fabric::tcp
