// The in-process fabric: several adapters in one process, each host an interface with
// the addresses its creator chose. Nothing to start, nothing to configure. A loopback
// host (127.0.0.1 and ::1) always exists.
#pragma once

#include <array>
#include <compare>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "fabric/fabric.hpp"

namespace softndk::fabric::inproc {

class InprocHost final : public Interface {
 public:
  InprocHost(ULONG ifindex, std::string name, std::vector<SockAddr> addresses);
  SOFTNDK_FABRIC fabric() const override { return SOFTNDK_FABRIC_INPROC; }
  ULONG ifindex() const override { return ifindex_; }
  std::string name() const override { return name_; }
  std::vector<SockAddr> addresses() const override { return addresses_; }
  NTSTATUS reserve(SockAddr& address) override;
  void unreserve(const SockAddr& address) override;
  void listen(const SockAddr& address, ListenerEvents* events) override;
  void unlisten(const SockAddr& address) override;
  std::shared_ptr<Connection> connect(const SockAddr& source, const SockAddr& destination,
                                      ConnectorEvents* events) override;

  // A connect request arriving at this host for `destination`.
  NTSTATUS deliver_request(const SockAddr& destination, std::shared_ptr<Connection> connection,
                           ULONG inbound_limit, ULONG outbound_limit,
                           std::span<const uint8_t> private_data);

 private:
  using Key = SockAddr::Key;

  const ULONG ifindex_;
  const std::string name_;
  const std::vector<SockAddr> addresses_;
  std::mutex mutex_;
  std::set<Key> reserved_;
  std::map<Key, ListenerEvents*> listeners_;
  uint32_t next_ephemeral_ = 0;
};

class InprocFabric final : public Fabric {
 public:
  static constexpr ULONG kLoopbackIfIndex = 1;
  static InprocFabric& instance();

  SOFTNDK_FABRIC kind() const override { return SOFTNDK_FABRIC_INPROC; }
  const char* name() const override { return "inproc"; }
  std::vector<std::shared_ptr<Interface>> interfaces() override;

  NTSTATUS create_host(const std::string& name, const std::vector<SockAddr>& addresses,
                       ULONG* ifindex);
  NTSTATUS destroy_host(ULONG ifindex);
  // The host owning `address`: the in-process network is flat, every host reaches all.
  std::shared_ptr<InprocHost> host_owning(const SockAddr& address);

 private:
  InprocFabric();
  std::mutex mutex_;
  std::map<ULONG, std::shared_ptr<InprocHost>> hosts_;
  ULONG next_ifindex_ = kLoopbackIfIndex + 1;
};

}  // namespace softndk::fabric::inproc
