#include "fabric/inproc/inproc_connection.hpp"

#include <thread>

#include "fabric/inproc/inproc_fabric.hpp"

namespace softndk::fabric::inproc {

InprocConnection::InprocConnection(const SockAddr& active_address,
                                   const SockAddr& passive_address, ConnectorEvents* active)
    : addresses_{active_address, passive_address}, sides_{active, nullptr} {}

NTSTATUS InprocConnection::request(ULONG inbound_limit, ULONG outbound_limit,
                                   std::span<const uint8_t> private_data) {
  const SockAddr& source = addresses_[kActive];
  const SockAddr& destination = addresses_[kPassive];
  if (source.family() != destination.family()) return STATUS_NETWORK_UNREACHABLE;
  std::shared_ptr<InprocHost> target = InprocFabric::instance().host_owning(destination);
  if (!target) return STATUS_HOST_UNREACHABLE;
  return target->deliver_request(destination, shared_from_this(), inbound_limit, outbound_limit,
                                 private_data);
}

void InprocConnection::attach_passive(ConnectorEvents* passive) {
  std::lock_guard lock(mutex_);
  sides_[kPassive] = passive;
}

template <class F>
void InprocConnection::forward(Side to, F&& deliver) {
  ConnectorEvents* target;
  {
    std::lock_guard lock(mutex_);
    target = sides_[to];
    if (target == nullptr) return;
    target->pin();  // under the lock: a detaching side cannot vanish in between
  }
  deliver(target);
  target->unpin();
}

void InprocConnection::accept(QpEndpoint* qp, ULONG inbound_limit, ULONG outbound_limit,
                              std::span<const uint8_t> private_data) {
  {
    std::lock_guard lock(mutex_);
    qps_[kPassive] = qp;
  }
  forward(kActive, [&](ConnectorEvents* e) { e->peer_accepted(inbound_limit, outbound_limit, private_data); });
}

void InprocConnection::reject(Side side, std::span<const uint8_t> private_data) {
  Side other = side == kActive ? kPassive : kActive;
  if (side == kPassive)
    forward(other, [&](ConnectorEvents* e) { e->peer_rejected(private_data); });
  else
    forward(other, [](ConnectorEvents* e) { e->peer_aborted(); });
}

void InprocConnection::complete(QpEndpoint* qp) {
  {
    std::lock_guard lock(mutex_);
    qps_[kActive] = qp;
    if (qps_[kPassive] != nullptr && !ended_) open_.store(true, std::memory_order_release);
  }
  forward(kPassive, [](ConnectorEvents* e) { e->peer_completed(); });
}

void InprocConnection::close_data_path() {
  open_.store(false, std::memory_order_seq_cst);
  while (inflight_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
}

QpEndpoint* InprocConnection::enter(Side side) {
  inflight_.fetch_add(1, std::memory_order_seq_cst);
  if (!open_.load(std::memory_order_seq_cst)) {
    leave();
    return nullptr;
  }
  return qps_[1 - side];
}

void InprocConnection::disconnect(Side side) {
  {
    std::lock_guard lock(mutex_);
    if (ended_) return;
    ended_ = true;
  }
  close_data_path();
  Side other = side == kActive ? kPassive : kActive;
  forward(other, [](ConnectorEvents* e) { e->peer_disconnected(STATUS_SUCCESS); });
}

void InprocConnection::terminate(Side side, NTSTATUS status) {
  {
    std::lock_guard lock(mutex_);
    if (ended_) return;
    ended_ = true;
  }
  close_data_path();
  Side other = side == kActive ? kPassive : kActive;
  forward(other, [&](ConnectorEvents* e) { e->peer_disconnected(status); });
}

void InprocConnection::detach(Side side) {
  bool was_ended;
  {
    std::lock_guard lock(mutex_);
    was_ended = ended_;
    ended_ = true;
  }
  close_data_path();
  Side other = side == kActive ? kPassive : kActive;
  // A peer still connected (or still establishing) learns that this side went away.
  if (!was_ended) forward(other, [](ConnectorEvents* e) { e->peer_aborted(); });
  std::lock_guard lock(mutex_);
  sides_[side] = nullptr;
  qps_[side] = nullptr;
}

NTSTATUS InprocConnection::send(Side side, const ExtentList& data, bool solicited, bool invalidate,
                                uint32_t token, ULONG /*flags*/) {
  QpEndpoint* peer = enter(side);
  if (peer == nullptr) return STATUS_CANCELLED;  // the connection ended meanwhile: flushed
  QpEndpoint::SendOutcome outcome = peer->deliver_send(data, solicited, invalidate, token);
  leave();
  if (outcome.terminate) terminate(side, outcome.sender_status);
  return outcome.sender_status;
}

// The target's memory for a tagged access, then one copy per byte.
NTSTATUS InprocConnection::write(Side side, const ExtentList& data, uint32_t token,
                                 uint64_t address, ULONG /*flags*/) {
  QpEndpoint* peer = enter(side);
  if (peer == nullptr) return STATUS_CANCELLED;
  NTSTATUS status = STATUS_SUCCESS;
  if (data.total() > 0) {
    AccessGuard guard;
    ExtentList& target = scratch(side);
    target.clear();
    status = peer->resolve_tagged(token, address, data.total(), kNeedRemoteWrite, target, guard);
    if (NT_SUCCESS(status)) copy_extents(target, data);
  }
  leave();
  if (!NT_SUCCESS(status)) terminate(side, status);
  return status;
}

NTSTATUS InprocConnection::read(Side side, const ExtentList& into, uint32_t token, uint64_t address,
                                ULONG /*flags*/) {
  QpEndpoint* peer = enter(side);
  if (peer == nullptr) return STATUS_CANCELLED;
  NTSTATUS status = STATUS_SUCCESS;
  if (into.total() > 0) {
    AccessGuard guard;
    ExtentList& source = scratch(side);
    source.clear();
    status = peer->resolve_tagged(token, address, into.total(), kNeedRemoteRead, source, guard);
    if (NT_SUCCESS(status)) copy_extents(into, source);
  }
  leave();
  if (!NT_SUCCESS(status)) terminate(side, status);
  return status;
}

}  // namespace softndk::fabric::inproc
