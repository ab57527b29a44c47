// The small interface between the provider core and a fabric. The core owns every NDK
// object, queue, token and state machine; a fabric only offers interfaces (the
// "NICs" adapters open on), their address and port space, and — from the data-path
// issue on — carries bytes, placements and connection events.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "core/sockaddr.hpp"
#include "fabric/connection.hpp"
#include "ndk/softndk.h"

namespace softndk::fabric {

// One interface of a fabric. Its address is the MiniportAdapterContext that the NDIS
// open/close handlers receive.
class Interface {
 public:
  virtual ~Interface() = default;
  virtual SOFTNDK_FABRIC fabric() const = 0;
  virtual ULONG ifindex() const = 0;
  virtual std::string name() const = 0;
  virtual std::vector<SockAddr> addresses() const = 0;

  // Whether `address` (port ignored) is one of this interface's addresses.
  virtual bool owns(const SockAddr& address) const;

  // Reserves a local address:port for a listener, shared endpoint or connection
  // (port 0: an ephemeral port in 49152-65535, written back into `address`).
  // STATUS_INVALID_ADDRESS (not ours), STATUS_SHARING_VIOLATION (in use),
  // STATUS_TOO_MANY_ADDRESSES (no ephemeral port left).
  virtual NTSTATUS reserve(SockAddr& address) = 0;
  virtual void unreserve(const SockAddr& address) = 0;

  // Starts accepting connect requests for a reserved address; until unlisten returns,
  // `events` may receive them (pinned while they are delivered).
  virtual void listen(const SockAddr& address, ListenerEvents* events) = 0;
  virtual void unlisten(const SockAddr& address) = 0;

  // A new connection from `source` (reserved by the caller) to `destination`, whose
  // active side's events go to `events`; Connection::request sends it.
  virtual std::shared_ptr<Connection> connect(const SockAddr& source, const SockAddr& destination,
                                              ConnectorEvents* events) = 0;

  // A consumer polled a CQ of an adapter on this interface and found it empty: a fabric
  // whose bytes arrive on sockets reads them now, on the consumer's thread (no thread
  // wake-up between the wire and the CQ). Never sleeps.
  virtual void progress() {}
  // A consumer armed a CQ: it will wait for the notification instead of polling, so the
  // fabric's own thread must make the progress.
  virtual void consumer_waits() {}

  void adapter_opened() { open_adapters_.fetch_add(1); }
  void adapter_closed() { open_adapters_.fetch_sub(1); }
  int open_adapters() const { return open_adapters_.load(); }

 private:
  std::atomic<int> open_adapters_{0};
};

class Fabric {
 public:
  virtual ~Fabric() = default;
  virtual SOFTNDK_FABRIC kind() const = 0;
  virtual const char* name() const = 0;
  virtual std::vector<std::shared_ptr<Interface>> interfaces() = 0;
};

// The fabric of that kind, or null when it is not available in this build.
Fabric* find(SOFTNDK_FABRIC kind);
// Every available fabric, the embedded in-process one first.
std::vector<Fabric*> all();

}  // namespace softndk::fabric
