#include "core/connection.hpp"

#include "core/adapter.hpp"
#include "core/dispatch.hpp"

namespace softndk {

Listener::Listener(Adapter& adapter, NDK_FN_CONNECT_EVENT_CALLBACK connect_event, PVOID context)
    : Object(NdkObjectTypeListener, &adapter, &dispatch::kListener),
      connect_event_(connect_event),
      connect_event_context_(context) {}

Listener::~Listener() {
  // The address:port is free again only now, when the listener has fully closed (R191).
  if (address_) adapter().iface().unreserve(*address_);
}

NTSTATUS Listener::listen(const SockAddr& requested) {
  std::lock_guard lock(mutex_);
  if (address_) return STATUS_INVALID_DEVICE_STATE;  // already listening
  SockAddr address = requested;
  NTSTATUS status = adapter().iface().reserve(address);
  if (NT_SUCCESS(status)) address_ = address;
  return status;
}

NTSTATUS Listener::local_address(PSOCKADDR out, ULONG* length) const {
  std::lock_guard lock(mutex_);
  if (!address_) return STATUS_INVALID_DEVICE_STATE;  // not listening
  return address_->copy_out(out, length);
}

void Listener::pause(bool paused) {
  std::lock_guard lock(mutex_);
  paused_ = paused;
}

bool Listener::paused() const {
  std::lock_guard lock(mutex_);
  return paused_;
}

SharedEndpoint::SharedEndpoint(Adapter& adapter, const SockAddr& reserved)
    : Object(NdkObjectTypeSharedEndpoint, &adapter, &dispatch::kSharedEndpoint),
      address_(reserved) {}

SharedEndpoint::~SharedEndpoint() { adapter().iface().unreserve(address_); }

Connector::Connector(Adapter& adapter)
    : Object(NdkObjectTypeConnector, &adapter, &dispatch::kConnector) {}

}  // namespace softndk
