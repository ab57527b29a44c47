// Connections and the data path between the core and a fabric.
//
// The core owns connectors, QPs and their state machines; a fabric carries connection
// events and moves bytes. The interfaces are shaped for a peer in another process (the TCP
// and shared-memory fabrics): every exchange is a message — request, accept, reject,
// complete, disconnect, send, write, read — and the receiving side's core decides where
// bytes land (QpEndpoint). The in-process fabric implements them by calling the peer's
// core directly, which is what makes one-sided operations complete with nobody polling.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "core/memory.hpp"
#include "core/receive_queue.hpp"
#include "core/sockaddr.hpp"

namespace softndk::fabric {

// The core's face of one connector, for a fabric delivering connection events to it.
// Events arrive on any thread, never under a fabric lock.
class ConnectorEvents {
 public:
  virtual ~ConnectorEvents() = default;
  // Keeps the connector alive while an event is being delivered to it.
  virtual void pin() = 0;
  virtual void unpin() = 0;
  // Active side: the passive side accepted (its read limits and private data) or rejected.
  virtual void peer_accepted(ULONG inbound_limit, ULONG outbound_limit,
                             std::span<const uint8_t> private_data) = 0;
  virtual void peer_rejected(std::span<const uint8_t> private_data) = 0;
  // Passive side: the active side completed the connection (NdkCompleteConnect).
  virtual void peer_completed() = 0;
  // The peer gave up before the connection was established (closed, rejected late).
  virtual void peer_aborted() = 0;
  // Active side, before the peer answered: the transport failed to reach a listener
  // (STATUS_CONNECTION_REFUSED, STATUS_HOST_UNREACHABLE, STATUS_NETWORK_UNREACHABLE, ...).
  virtual void connect_failed(NTSTATUS status) = 0;
  // The established connection ended: the peer disconnected (status success) or it was
  // terminated by an error (the status every outstanding request of ours completes with).
  virtual void peer_disconnected(NTSTATUS status) = 0;
};

// The core's face of one connected QP: where the peer's messages and accesses land.
class QpEndpoint {
 public:
  virtual ~QpEndpoint() = default;
  // An untagged message (send): placed into the next posted receive. Returns the status
  // the sender's request completes with; `error` says the connection must be terminated.
  struct SendOutcome {
    NTSTATUS sender_status;
    bool terminate;
  };
  // `invalidate` asks the receiver to invalidate `token` (send with invalidate).
  virtual SendOutcome deliver_send(const ExtentList& data, bool solicited, bool invalidate,
                                   uint32_t token) = 0;
  // A tagged access by the peer (the target of its write, the source of its read).
  virtual NTSTATUS resolve_tagged(uint32_t token, uint64_t address, size_t length, ULONG need,
                                  ExtentList& out, AccessGuard& guard) = 0;
  // The peer terminated the connection with an error.
  virtual void terminated(NTSTATUS status) = 0;

  // ---- an untagged message arriving in segments (fabrics with a wire) ----
  // Takes the next posted receive (of the QP, or of its SRQ) for a new message; false
  // when none is posted.
  virtual bool take_receive(PostedReceive& receive) = 0;
  // Copies `bytes` to `offset` of the message in the receive's buffers.
  // STATUS_ACCESS_VIOLATION: the receive's SGEs are not valid at this side;
  // STATUS_BUFFER_OVERFLOW: the message runs past the buffers (what fits is placed).
  virtual NTSTATUS place_receive(const PostedReceive& receive, uint64_t offset,
                                 std::span<const uint8_t> bytes) = 0;
  // The receive's buffers, for a fabric that receives a message straight into them; they
  // stay registered while `guard` holds.
  virtual NTSTATUS resolve_receive(const PostedReceive& receive, ExtentList& out, AccessGuard& guard) = 0;
  // The message ended: completes the receive with the placement's status and the bytes
  // placed, after invalidating `token` when asked (send with invalidate).
  virtual SendOutcome finish_receive(const PostedReceive& receive, NTSTATUS placed, size_t bytes,
                                     bool solicited, bool invalidate, uint32_t token) = 0;

  // The oldest initiator request that the fabric took with STATUS_PENDING completed with
  // `status`. Called in posting order, by one thread at a time, never under a fabric lock.
  virtual void initiator_completed(NTSTATUS status) = 0;
  // How many initiator requests the QP holds at most (its initiator queue depth).
  virtual ULONG initiator_depth() const = 0;
};

// One connection between two connectors, shared by both sides. Side 0 is the active
// (connecting) side, side 1 the passive (accepting) one.
class Connection {
 public:
  enum Side : int { kActive = 0, kPassive = 1 };
  virtual ~Connection() = default;

  // Sends the connect request (the active side, once). STATUS_PENDING: it reached a
  // listener, whose answer arrives through the active side's ConnectorEvents. Otherwise
  // the connect failed: STATUS_CONNECTION_REFUSED (nobody listening, paused, closing),
  // STATUS_HOST_UNREACHABLE, STATUS_NETWORK_UNREACHABLE, STATUS_INSUFFICIENT_RESOURCES.
  virtual NTSTATUS request(ULONG inbound_limit, ULONG outbound_limit,
                           std::span<const uint8_t> private_data) = 0;
  // The passive side's connector joins (from ListenerEvents::connect_request).
  virtual void attach_passive(ConnectorEvents* events) = 0;

  // The local and remote address as seen from `side`.
  virtual SockAddr local_address(Side side) const = 0;
  virtual SockAddr remote_address(Side side) const = 0;

  // Establishment. Each call forwards to the other side's ConnectorEvents.
  // Passive: accepts with its read limits and private data; `qp` is where the peer's
  // messages and accesses will land once the active side completes.
  virtual void accept(QpEndpoint* qp, ULONG inbound_limit, ULONG outbound_limit,
                      std::span<const uint8_t> private_data) = 0;
  virtual void reject(Side side, std::span<const uint8_t> private_data) = 0;
  // Active: completes the connection; from here on the two QPs exchange data.
  virtual void complete(QpEndpoint* qp) = 0;
  // Graceful disconnect by `side`; the other side gets peer_disconnected(STATUS_SUCCESS).
  virtual void disconnect(Side side) = 0;
  // Ends the connection with an error detected by `side` (a protection fault, a send
  // without receive): the other side gets peer_disconnected(status) and terminated().
  virtual void terminate(Side side, NTSTATUS status) = 0;
  // `side` leaves (its connector is closing): no event reaches it after this returns.
  virtual void detach(Side side) = 0;

  // Data path, initiated by `side` (already validated and resolved locally). Each returns
  // the request's final status when it completed within the call (the in-process fabric
  // always does), or STATUS_PENDING: the fabric keeps what it needs of `data` (the extents,
  // not the bytes) and completes it later through the QP's initiator_completed, in posting
  // order; a request still outstanding when the connection ends completes
  // STATUS_CANCELLED, before detach() returns at the latest.
  // `flags` are the request's NDK_OP_FLAG_*: READ_FENCE, the request starts only once every
  // earlier read has completed; SILENT_SUCCESS, nobody waits for its success (a fabric
  // may take longer to prove it, as long as a failure is still reported); DEFER, the
  // fabric may hold the request (to send it with those that follow) until a request of
  // `side` without DEFER or start_deferred(side).
  virtual NTSTATUS send(Side side, const ExtentList& data, bool solicited, bool invalidate,
                        uint32_t token, ULONG flags) = 0;
  virtual NTSTATUS write(Side side, const ExtentList& data, uint32_t token, uint64_t address,
                         ULONG flags) = 0;
  virtual NTSTATUS read(Side side, const ExtentList& into, uint32_t token, uint64_t address,
                        ULONG flags) = 0;
  // A request that touches nothing remote (bind, fast register, invalidate) and must
  // still complete in posting order: STATUS_SUCCESS when nothing is outstanding (it
  // completes now), else STATUS_PENDING (it completes after the requests before it).
  // Without DEFER in `flags` it ends a deferred chain, as any request does.
  virtual NTSTATUS local(Side side, ULONG flags) = 0;
  // Starts every request of `side` held back by DEFER (the core calls it where a chain
  // ends without reaching the fabric: a request that failed inline or before it was sent).
  virtual void start_deferred(Side side) = 0;
};

// The core's face of a listener: a connect request for its address. Returns the status
// the connecting side sees at once (STATUS_PENDING when a connect event was raised,
// after calling connection->attach_passive).
class ListenerEvents {
 public:
  virtual ~ListenerEvents() = default;
  virtual void pin() = 0;
  virtual void unpin() = 0;
  virtual NTSTATUS connect_request(std::shared_ptr<Connection> connection, ULONG inbound_limit,
                                   ULONG outbound_limit, std::span<const uint8_t> private_data) = 0;
};

}  // namespace softndk::fabric
