// NDK_LISTENER, NDK_SHARED_ENDPOINT and NDK_CONNECTOR: local endpoints and connections.
#pragma once

#include <mutex>
#include <optional>

#include "core/object.hpp"
#include "core/sockaddr.hpp"

namespace softndk {

class Listener final : public Object {
 public:
  Listener(Adapter& adapter, NDK_FN_CONNECT_EVENT_CALLBACK connect_event, PVOID context);
  ~Listener() override;
  static Listener* from(NDK_LISTENER* ndk) { return object_of<Listener>(ndk, NdkObjectTypeListener); }

  // Reserves the address (port 0: ephemeral) and starts listening.
  NTSTATUS listen(const SockAddr& address);
  NTSTATUS local_address(PSOCKADDR out, ULONG* length) const;
  void pause(bool paused);
  bool paused() const;
  NDK_FN_CONNECT_EVENT_CALLBACK connect_event() const { return connect_event_; }
  PVOID connect_event_context() const { return connect_event_context_; }

 private:
  NDK_FN_CONNECT_EVENT_CALLBACK connect_event_;
  PVOID connect_event_context_;
  mutable std::mutex mutex_;
  std::optional<SockAddr> address_;
  bool paused_ = false;
};

class SharedEndpoint final : public Object {
 public:
  SharedEndpoint(Adapter& adapter, const SockAddr& reserved);
  ~SharedEndpoint() override;
  static SharedEndpoint* from(NDK_SHARED_ENDPOINT* ndk) {
    return object_of<SharedEndpoint>(ndk, NdkObjectTypeSharedEndpoint);
  }
  const SockAddr& address() const { return address_; }

 private:
  SockAddr address_;
};

class Connector final : public Object {
 public:
  explicit Connector(Adapter& adapter);
  static Connector* from(NDK_CONNECTOR* ndk) {
    return object_of<Connector>(ndk, NdkObjectTypeConnector);
  }
  // The connection state machine comes with the data path; until a connection exists
  // every query reports STATUS_CONNECTION_INVALID.
  bool connected() const { return false; }
};

}  // namespace softndk
