// NDK_LISTENER, NDK_SHARED_ENDPOINT and NDK_CONNECTOR: local endpoints and connections.
//
// Connector states (one connection per connector):
//   active:  Idle --Connect--> Connecting --peer accepts--> Accepted --CompleteConnect--> Connected
//                                         \--peer rejects / goes away--> Failed
//            Accepted --Reject--> Failed
//   passive: Requested (from the connect event) --Accept--> Accepting --peer completes--> Connected
//            Requested --Reject--> Failed
//   both:    Connected --Disconnect, or the peer's--> Disconnected
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "core/adapter.hpp"
#include "core/object.hpp"
#include "core/sockaddr.hpp"
#include "fabric/connection.hpp"

namespace softndk {

class Qp;
class SharedEndpoint;

class Listener final : public Object, public fabric::ListenerEvents {
 public:
  Listener(Adapter& adapter, NDK_FN_CONNECT_EVENT_CALLBACK connect_event, PVOID context);
  static Listener* from(NDK_LISTENER* ndk) { return object_of<Listener>(ndk, NdkObjectTypeListener); }

  // Reserves the address (port 0: ephemeral) and starts listening.
  NTSTATUS listen(const SockAddr& address);
  NTSTATUS local_address(PSOCKADDR out, ULONG* length) const;
  void pause(bool paused);
  bool paused() const;

  // fabric::ListenerEvents
  void pin() override { hold(); }
  void unpin() override { release(); }
  NTSTATUS connect_request(std::shared_ptr<fabric::Connection> connection, ULONG inbound_limit,
                           ULONG outbound_limit, std::span<const uint8_t> private_data) override;

 protected:
  // Refuses new connections at once, even while the close is pending (R187).
  void on_close_requested() override;
  void on_closed() override;

 private:
  NDK_FN_CONNECT_EVENT_CALLBACK connect_event_;
  PVOID connect_event_context_;
  mutable std::mutex mutex_;
  std::optional<SockAddr> address_;
  bool listening_ = false;
  bool paused_ = false;
};

class SharedEndpoint final : public Object {
 public:
  SharedEndpoint(Adapter& adapter, const SockAddr& reserved);
  static SharedEndpoint* from(NDK_SHARED_ENDPOINT* ndk) {
    return object_of<SharedEndpoint>(ndk, NdkObjectTypeSharedEndpoint);
  }
  const SockAddr& address() const { return address_; }
  // One connection per destination through the endpoint (R162):
  // STATUS_ADDRESS_ALREADY_EXISTS when one to `destination` exists already.
  NTSTATUS claim(const SockAddr& destination);
  void unclaim(const SockAddr& destination);

 protected:
  void on_closed() override;

 private:
  SockAddr address_;
  std::mutex mutex_;
  std::vector<SockAddr> destinations_;
};

class Connector final : public Object, public fabric::ConnectorEvents {
 public:
  // The active side: created by NdkCreateConnector.
  explicit Connector(Adapter& adapter);
  // The passive side: created for an incoming request on `listener`.
  Connector(Adapter& adapter, std::shared_ptr<fabric::Connection> connection, ULONG peer_inbound,
            ULONG peer_outbound, std::span<const uint8_t> private_data);
  static Connector* from(NDK_CONNECTOR* ndk) { return object_of<Connector>(ndk, NdkObjectTypeConnector); }

  struct DisconnectHandler {
    NDK_FN_DISCONNECT_EVENT_CALLBACK plain = nullptr;
    NDK_FN_DISCONNECT_EVENT_CALLBACK_EX ex = nullptr;
    PVOID context = nullptr;
  };

  // Connects from `source` (reserved for this connector, port 0: ephemeral), or from the
  // address of `endpoint` when it is given (NdkConnectWithSharedEndpoint).
  NTSTATUS connect(Qp& qp, const SockAddr& source, SharedEndpoint* endpoint,
                   const SockAddr& destination, ULONG inbound, ULONG outbound,
                   std::span<const uint8_t> data, NDK_FN_REQUEST_COMPLETION completion,
                   PVOID context);
  NTSTATUS complete_connect(const DisconnectHandler& handler, NDK_FN_REQUEST_COMPLETION completion,
                            PVOID context);
  NTSTATUS accept(Qp& qp, ULONG inbound, ULONG outbound, std::span<const uint8_t> data,
                  const DisconnectHandler& handler, NDK_FN_REQUEST_COMPLETION completion,
                  PVOID context);
  NTSTATUS reject(std::span<const uint8_t> data);
  NTSTATUS connection_data(ULONG* inbound, ULONG* outbound, PVOID data, ULONG* length) const;
  NTSTATUS local_address(PSOCKADDR out, ULONG* length) const;
  NTSTATUS peer_address(PSOCKADDR out, ULONG* length) const;
  NTSTATUS disconnect(NDK_FN_REQUEST_COMPLETION completion, PVOID context);

  // fabric::ConnectorEvents
  void pin() override { hold(); }
  void unpin() override { release(); }
  void peer_accepted(ULONG inbound_limit, ULONG outbound_limit,
                     std::span<const uint8_t> private_data) override;
  void peer_rejected(std::span<const uint8_t> private_data) override;
  void peer_completed() override;
  void peer_aborted() override;
  void connect_failed(NTSTATUS status) override;
  void peer_disconnected(NTSTATUS status) override;

 protected:
  void on_close_requested() override;
  void on_closed() override;

 private:
  enum class State { kIdle, kConnecting, kAccepted, kRequested, kAccepting, kConnected, kDisconnected, kFailed };

  // Raises the disconnect event once per connection (R169, R170), held while it runs.
  void report_disconnect_locked(ULONG reason);
  // The establishment timer (Connect waiting for an answer, Accept for CompleteConnect).
  void start_timer_locked();
  void stop_timer_locked();
  void timed_out(uint64_t timer);
  // A Connect that failed after it was sent: the QP and the shared endpoint's destination
  // are free for another attempt (docs/DATAPATH.md).
  void release_attempt_locked();

  mutable std::mutex mutex_;
  State state_;
  fabric::Connection::Side side_;
  std::shared_ptr<fabric::Connection> connection_;
  Qp* qp_ = nullptr;
  std::optional<SockAddr> reserved_;  // the local address a Connect reserved
  SharedEndpoint* endpoint_ = nullptr;  // the shared endpoint connected through, and
  SockAddr endpoint_destination_;       // the destination claimed on it
  Adapter::PendingRequest connect_request_;
  Adapter::PendingRequest accept_request_;
  ULONG inbound_limit_ = 0;   // effective IRD (R176), or the peer's offer before Accept
  ULONG outbound_limit_ = 0;  // effective ORD (R177)
  ULONG own_inbound_ = 0;     // what this side offered (active side)
  ULONG own_outbound_ = 0;
  std::vector<uint8_t> peer_data_;  // private data the peer sent (R184)
  DisconnectHandler disconnect_handler_;
  bool disconnect_reported_ = false;
  bool aborted_ = false;   // the peer went away during establishment
  bool rejected_ = false;  // the peer rejected: its private data stays readable (R166)
  uint64_t timer_ = 0;    // while establishing; holds the connector until it ends
  uint64_t timer_generation_ = 0;           // counts timers started
  uint64_t timer_generation_at_start_ = 0;  // the one currently running
};

}  // namespace softndk
