#include "core/connection.hpp"

#include <algorithm>
#include <cstring>

#include "core/adapter.hpp"
#include "core/dispatch.hpp"
#include "core/qp.hpp"
#include "core/tunables.hpp"

namespace softndk {

// ------------------------------------------------------------------------- listener --

Listener::Listener(Adapter& adapter, NDK_FN_CONNECT_EVENT_CALLBACK connect_event, PVOID context)
    : Object(NdkObjectTypeListener, &adapter, &dispatch::kListener),
      connect_event_(connect_event),
      connect_event_context_(context) {}

void Listener::on_closed() {
  // The address:port is free again once the listener has fully closed (R191).
  std::lock_guard lock(mutex_);
  if (address_) adapter().iface().unreserve(*address_);
  address_.reset();
}

NTSTATUS Listener::listen(const SockAddr& requested) {
  std::lock_guard lock(mutex_);
  if (address_) return STATUS_INVALID_DEVICE_STATE;  // already listening
  SockAddr address = requested;
  NTSTATUS status = adapter().iface().reserve(address);
  if (!NT_SUCCESS(status)) return status;
  address_ = address;
  listening_ = true;
  adapter().iface().listen(address, this);
  return STATUS_SUCCESS;
}

void Listener::on_close_requested() {
  std::optional<SockAddr> address;
  {
    std::lock_guard lock(mutex_);
    listening_ = false;
    address = address_;
  }
  if (address) adapter().iface().unlisten(*address);
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

NTSTATUS Listener::connect_request(std::shared_ptr<fabric::Connection> connection,
                                   ULONG inbound_limit, ULONG outbound_limit,
                                   std::span<const uint8_t> private_data) {
  {
    // Paused or closing: as if nobody listened (R174, R187).
    std::lock_guard lock(mutex_);
    if (!listening_ || paused_) return STATUS_CONNECTION_REFUSED;
  }
  if (close_requested()) return STATUS_CONNECTION_REFUSED;
  Connector* connector;
  try {
    connector = new Connector(adapter(), connection, inbound_limit, outbound_limit, private_data);
  } catch (const std::bad_alloc&) {
    return STATUS_INSUFFICIENT_RESOURCES;
  }
  connector->add_antecedent(&adapter());
  connector->add_antecedent(this);  // the listener's close waits for it (R193)
  connection->attach_passive(connector);
  // One connect event per request, from the provider thread (R173).
  Task task;
  task.callback = reinterpret_cast<AnyCallback>(connect_event_);
  task.context = connect_event_context_;
  task.other = connector;
  adapter().post_event(this, [](const Task& t) {
    reinterpret_cast<NDK_FN_CONNECT_EVENT_CALLBACK>(t.callback)(
        t.context, static_cast<Connector*>(t.other)->ndk<NDK_CONNECTOR>());
  }, task);
  return STATUS_PENDING;
}

// ------------------------------------------------------------------ shared endpoint --

SharedEndpoint::SharedEndpoint(Adapter& adapter, const SockAddr& reserved)
    : Object(NdkObjectTypeSharedEndpoint, &adapter, &dispatch::kSharedEndpoint),
      address_(reserved) {}

void SharedEndpoint::on_closed() { adapter().iface().unreserve(address_); }

NTSTATUS SharedEndpoint::claim(const SockAddr& destination) {
  std::lock_guard lock(mutex_);
  for (const SockAddr& d : destinations_)
    if (d == destination) return STATUS_ADDRESS_ALREADY_EXISTS;
  destinations_.push_back(destination);
  return STATUS_SUCCESS;
}

void SharedEndpoint::unclaim(const SockAddr& destination) {
  std::lock_guard lock(mutex_);
  auto it = std::find(destinations_.begin(), destinations_.end(), destination);
  if (it != destinations_.end()) destinations_.erase(it);
}

// ------------------------------------------------------------------------ connector --

Connector::Connector(Adapter& adapter)
    : Object(NdkObjectTypeConnector, &adapter, &dispatch::kConnector),
      state_(State::kIdle),
      side_(fabric::Connection::kActive) {}

Connector::Connector(Adapter& adapter, std::shared_ptr<fabric::Connection> connection,
                     ULONG peer_inbound, ULONG peer_outbound, std::span<const uint8_t> data)
    : Object(NdkObjectTypeConnector, &adapter, &dispatch::kConnector),
      state_(State::kRequested),
      side_(fabric::Connection::kPassive),
      connection_(std::move(connection)),
      // Before Accept, the limits are what the peer asks for, within this adapter's (R176).
      inbound_limit_(std::min(peer_outbound, adapter.info().MaxInboundReadLimit)),
      outbound_limit_(std::min(peer_inbound, adapter.info().MaxOutboundReadLimit)),
      own_inbound_(peer_inbound),
      own_outbound_(peer_outbound),
      peer_data_(data.begin(), data.end()) {}

void Connector::on_closed() {
  std::lock_guard lock(mutex_);
  if (reserved_) adapter().iface().unreserve(*reserved_);
  reserved_.reset();
  if (endpoint_ != nullptr) endpoint_->unclaim(endpoint_destination_);  // R195
  endpoint_ = nullptr;
}

NTSTATUS Connector::connect(Qp& qp, const SockAddr& source, SharedEndpoint* endpoint,
                            const SockAddr& destination, ULONG inbound, ULONG outbound,
                            std::span<const uint8_t> data, NDK_FN_REQUEST_COMPLETION completion,
                            PVOID context) {
  {
    std::lock_guard lock(mutex_);
    // A connector that failed to connect may try again (docs/DATAPATH.md).
    if ((state_ != State::kIdle && state_ != State::kFailed) || side_ != fabric::Connection::kActive)
      return STATUS_INVALID_DEVICE_STATE;
  }
  SockAddr local = endpoint != nullptr ? endpoint->address() : source;
  // The local address: the shared endpoint's (one connection per destination, R162), or
  // reserved for this connector alone (port 0: ephemeral, R159).
  NTSTATUS status = endpoint != nullptr ? endpoint->claim(destination) : adapter().iface().reserve(local);
  if (!NT_SUCCESS(status)) return adapter().complete_request(this, completion, context, status);
  auto undo_local = [&] {
    if (endpoint != nullptr)
      endpoint->unclaim(destination);
    else
      adapter().iface().unreserve(local);
  };
  if (!qp.claim_for_connection()) {
    undo_local();
    return STATUS_INVALID_DEVICE_STATE;  // the QP already has a connection
  }
  std::shared_ptr<fabric::Connection> connection = adapter().iface().connect(local, destination, this);
  {
    std::lock_guard lock(mutex_);
    if (reserved_) adapter().iface().unreserve(*reserved_);  // a previous attempt's
    reserved_.reset();
    if (endpoint == nullptr) reserved_ = local;
    endpoint_ = endpoint;
    endpoint_destination_ = destination;
    qp_ = &qp;
    connection_ = connection;
    own_inbound_ = std::min(inbound, adapter().info().MaxInboundReadLimit);
    own_outbound_ = std::min(outbound, adapter().info().MaxOutboundReadLimit);
    peer_data_.clear();
    aborted_ = false;
    rejected_ = false;
    state_ = State::kConnecting;
    adapter().begin_pending(this, connect_request_, completion, context);
    start_timer_locked();
  }
  add_antecedent(&qp);  // R172
  if (endpoint != nullptr) add_antecedent(endpoint);  // the endpoint's close waits (R196)
  status = connection->request(own_inbound_, own_outbound_, data);
  if (status == STATUS_PENDING) return STATUS_PENDING;  // the peer answers later
  // Refused at once (nobody listening, host unknown): retryable (R160).
  {
    std::lock_guard lock(mutex_);
    stop_timer_locked();
    connect_request_.active = false;
    connection_.reset();
    state_ = State::kFailed;
    qp_ = nullptr;
    endpoint_ = nullptr;
    reserved_.reset();
  }
  undo_local();
  if (endpoint != nullptr) drop_antecedent(endpoint);
  drop_antecedent(&qp);
  qp.release_claim();
  release();  // the hold begin_pending took
  return adapter().complete_request(this, completion, context, status);
}

void Connector::start_timer_locked() {
  // The task learns its own id through a shared cell: ids are known only once posted.
  Task task;
  task.object = this;
  task.run = [](const Task& t) {
    auto* connector = static_cast<Connector*>(t.object);
    connector->timed_out(reinterpret_cast<uintptr_t>(t.context));
    connector->release();  // the hold start_timer_locked took
  };
  hold();
  task.context = reinterpret_cast<PVOID>(static_cast<uintptr_t>(++timer_generation_));
  timer_ = adapter().provider_thread().post_after(
      std::chrono::milliseconds(tunables::number("connect_timeout_ms")), task);  // converts to us
  timer_generation_at_start_ = timer_generation_;
}

void Connector::stop_timer_locked() {
  if (timer_ == 0) return;
  if (adapter().provider_thread().cancel(timer_)) release();  // it will never run
  timer_ = 0;
}

void Connector::timed_out(uint64_t generation) {
  std::shared_ptr<fabric::Connection> connection;
  {
    std::lock_guard lock(mutex_);
    if (timer_ == 0 || generation != timer_generation_at_start_) return;  // a stale timer
    timer_ = 0;
    if (state_ == State::kConnecting) {
      adapter().finish_pending(this, connect_request_, STATUS_IO_TIMEOUT);  // R160
      release_attempt_locked();
    } else if (state_ == State::kAccepting) {
      adapter().finish_pending(this, accept_request_, STATUS_IO_TIMEOUT);  // R165
    } else {
      return;
    }
    state_ = State::kFailed;
    connection = connection_;
  }
  connection->detach(side_);  // the peer learns that this side gave up
}

void Connector::release_attempt_locked() {
  if (side_ != fabric::Connection::kActive) return;
  if (qp_ != nullptr) qp_->release_claim();
  if (endpoint_ != nullptr) endpoint_->unclaim(endpoint_destination_);
  endpoint_ = nullptr;
}

void Connector::peer_accepted(ULONG inbound_limit, ULONG outbound_limit,
                              std::span<const uint8_t> private_data) {
  std::lock_guard lock(mutex_);
  if (state_ != State::kConnecting) return;
  stop_timer_locked();
  inbound_limit_ = std::min(own_inbound_, outbound_limit);   // R176
  outbound_limit_ = std::min(own_outbound_, inbound_limit);  // R177
  peer_data_.assign(private_data.begin(), private_data.end());
  state_ = State::kAccepted;
  adapter().finish_pending(this, connect_request_, STATUS_SUCCESS);  // R161
}

void Connector::peer_rejected(std::span<const uint8_t> private_data) {
  std::lock_guard lock(mutex_);
  if (state_ != State::kConnecting) return;
  stop_timer_locked();
  peer_data_.assign(private_data.begin(), private_data.end());  // readable after (R166)
  rejected_ = true;
  state_ = State::kFailed;
  release_attempt_locked();
  adapter().finish_pending(this, connect_request_, STATUS_CONNECTION_REFUSED);
}

void Connector::peer_completed() {
  std::lock_guard lock(mutex_);
  if (state_ != State::kAccepting) return;
  stop_timer_locked();
  qp_->connected(connection_, side_);
  state_ = State::kConnected;
  adapter().finish_pending(this, accept_request_, STATUS_SUCCESS);  // R165
}

void Connector::peer_aborted() {
  std::lock_guard lock(mutex_);
  stop_timer_locked();
  switch (state_) {
    case State::kConnecting:  // the passive side closed its connector unanswered
      state_ = State::kFailed;
      release_attempt_locked();
      adapter().finish_pending(this, connect_request_, STATUS_CONNECTION_REFUSED);
      break;
    case State::kAccepting:  // the active side rejected or went away (R165, R167)
      state_ = State::kFailed;
      adapter().finish_pending(this, accept_request_, STATUS_CONNECTION_ABORTED);
      break;
    case State::kAccepted:
    case State::kRequested:
      state_ = State::kFailed;  // CompleteConnect / Accept / Reject now say ABORTED
      aborted_ = true;
      break;
    case State::kConnected:  // the peer vanished without a disconnect
      state_ = State::kDisconnected;
      qp_->connection_ended(STATUS_SUCCESS);
      report_disconnect_locked(0);
      break;
    default:
      break;
  }
}

void Connector::connect_failed(NTSTATUS status) {
  std::lock_guard lock(mutex_);
  if (state_ != State::kConnecting) return;
  stop_timer_locked();
  state_ = State::kFailed;
  release_attempt_locked();  // retryable (R160)
  adapter().finish_pending(this, connect_request_, status);
}

void Connector::peer_disconnected(NTSTATUS status) {
  std::lock_guard lock(mutex_);
  if (state_ != State::kConnected) return;
  state_ = State::kDisconnected;
  // Graceful: the QP keeps its requests (R103). Terminated by an error: they are flushed.
  qp_->connection_ended(status);
  report_disconnect_locked(NT_SUCCESS(status) ? 0 : static_cast<ULONG>(status));
}

void Connector::report_disconnect_locked(ULONG reason) {
  if (disconnect_reported_) return;
  disconnect_reported_ = true;  // at most once per connection (R169)
  if (disconnect_handler_.plain == nullptr && disconnect_handler_.ex == nullptr) return;
  Task task;
  task.context = disconnect_handler_.context;
  task.value = reason;
  if (disconnect_handler_.ex != nullptr) {
    task.callback = reinterpret_cast<AnyCallback>(disconnect_handler_.ex);
    adapter().post_event(this, [](const Task& t) {
      reinterpret_cast<NDK_FN_DISCONNECT_EVENT_CALLBACK_EX>(t.callback)(t.context, t.value);
    }, task);
  } else {
    task.callback = reinterpret_cast<AnyCallback>(disconnect_handler_.plain);
    adapter().post_event(this, [](const Task& t) {
      reinterpret_cast<NDK_FN_DISCONNECT_EVENT_CALLBACK>(t.callback)(t.context);
    }, task);
  }
}

NTSTATUS Connector::complete_connect(const DisconnectHandler& handler,
                                     NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  std::shared_ptr<fabric::Connection> connection;
  {
    std::lock_guard lock(mutex_);
    if (aborted_) return adapter().complete_request(this, completion, context, STATUS_CONNECTION_ABORTED);
    if (state_ != State::kAccepted) return STATUS_CONNECTION_INVALID;  // R163
    disconnect_handler_ = handler;
    qp_->connected(connection_, side_);
    state_ = State::kConnected;
    connection = connection_;
  }
  connection->complete(qp_);  // the passive side's Accept completes (R165)
  return adapter().complete_request(this, completion, context, STATUS_SUCCESS);
}

NTSTATUS Connector::accept(Qp& qp, ULONG inbound, ULONG outbound, std::span<const uint8_t> data,
                           const DisconnectHandler& handler, NDK_FN_REQUEST_COMPLETION completion,
                           PVOID context) {
  std::shared_ptr<fabric::Connection> connection;
  ULONG offered_inbound, offered_outbound;
  {
    std::lock_guard lock(mutex_);
    if (aborted_) return adapter().complete_request(this, completion, context, STATUS_CONNECTION_ABORTED);
    if (state_ != State::kRequested) return STATUS_CONNECTION_INVALID;
    if (!qp.claim_for_connection()) return STATUS_INVALID_DEVICE_STATE;
    qp_ = &qp;
    offered_inbound = std::min(inbound, adapter().info().MaxInboundReadLimit);
    offered_outbound = std::min(outbound, adapter().info().MaxOutboundReadLimit);
    inbound_limit_ = std::min(offered_inbound, own_outbound_);    // R176 (own_* = the peer's)
    outbound_limit_ = std::min(offered_outbound, own_inbound_);   // R177
    disconnect_handler_ = handler;
    state_ = State::kAccepting;
    adapter().begin_pending(this, accept_request_, completion, context);
    start_timer_locked();
    connection = connection_;
  }
  add_antecedent(&qp);  // R172
  connection->accept(&qp, offered_inbound, offered_outbound, data);
  return STATUS_PENDING;  // until the active side completes (R165)
}

NTSTATUS Connector::reject(std::span<const uint8_t> data) {
  std::shared_ptr<fabric::Connection> connection;
  {
    std::lock_guard lock(mutex_);
    bool passive = side_ == fabric::Connection::kPassive;
    if (aborted_) return STATUS_CONNECTION_ABORTED;  // R168
    if (state_ != (passive ? State::kRequested : State::kAccepted)) return STATUS_CONNECTION_INVALID;
    state_ = State::kFailed;
    connection = connection_;
  }
  connection->reject(side_, data);  // R166, R167
  return STATUS_SUCCESS;
}

NTSTATUS Connector::connection_data(ULONG* inbound, ULONG* outbound, PVOID data,
                                    ULONG* length) const {
  std::lock_guard lock(mutex_);
  bool answered = state_ == State::kRequested || state_ == State::kAccepted ||
                  (state_ == State::kFailed && rejected_);
  if (!answered) return STATUS_CONNECTION_INVALID;
  if (inbound != nullptr) *inbound = inbound_limit_;    // R179
  if (outbound != nullptr) *outbound = outbound_limit_;
  // RDS, the buffer size needed, is the number of bytes the peer sent (R181-R183).
  auto required = static_cast<ULONG>(peer_data_.size());
  if (data == nullptr) {
    *length = required;
    return STATUS_SUCCESS;
  }
  ULONG copied = std::min(*length, required);
  if (copied > 0) std::memcpy(data, peer_data_.data(), copied);
  NTSTATUS status = *length >= required ? STATUS_SUCCESS : STATUS_BUFFER_TOO_SMALL;
  *length = required;
  return status;
}

NTSTATUS Connector::local_address(PSOCKADDR out, ULONG* length) const {
  std::lock_guard lock(mutex_);
  if (connection_) return connection_->local_address(side_).copy_out(out, length);
  if (reserved_) return reserved_->copy_out(out, length);
  return STATUS_CONNECTION_INVALID;
}

NTSTATUS Connector::peer_address(PSOCKADDR out, ULONG* length) const {
  std::lock_guard lock(mutex_);
  if (!connection_) return STATUS_CONNECTION_INVALID;
  return connection_->remote_address(side_).copy_out(out, length);
}

NTSTATUS Connector::disconnect(NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  std::shared_ptr<fabric::Connection> connection;
  Qp* qp;
  {
    std::lock_guard lock(mutex_);
    if (state_ != State::kConnected && state_ != State::kDisconnected) return STATUS_CONNECTION_INVALID;
    if (state_ == State::kConnected) connection = connection_;
    state_ = State::kDisconnected;
    disconnect_reported_ = true;  // our own disconnect raises no event here
    qp = qp_;
  }
  if (connection) connection->disconnect(side_);  // the peer gets its disconnect event
  // After the transport-level close, the QP is flushed implicitly (R102).
  qp->connection_ended(STATUS_SUCCESS);
  qp->flush();
  return adapter().complete_request(this, completion, context, STATUS_SUCCESS);
}

void Connector::on_close_requested() {
  std::shared_ptr<fabric::Connection> connection;
  Qp* qp;
  {
    std::lock_guard lock(mutex_);
    // Pending requests end now, cancelled (R042).
    stop_timer_locked();
    adapter().finish_pending(this, connect_request_, STATUS_CANCELLED);
    adapter().finish_pending(this, accept_request_, STATUS_CANCELLED);
    connection = connection_;
    qp = qp_;
    state_ = State::kFailed;
  }
  if (connection) connection->detach(side_);  // no event reaches us after this
  // A connection closed without a disconnect is aborted: its requests are flushed.
  if (qp != nullptr) qp->connection_ended(STATUS_CONNECTION_ABORTED);
}

}  // namespace softndk
