#include "core/qp.hpp"

#include "core/adapter.hpp"
#include "core/cq.hpp"
#include "core/dispatch.hpp"
#include "core/pd.hpp"

#include <shared_mutex>

namespace softndk {

NTSTATUS validate_sgl(const NDK_SGE* sgl, ULONG count, ULONG max_count) {
  if (count > max_count) return STATUS_INVALID_PARAMETER;  // R090
  if (count > 0 && sgl == nullptr) return STATUS_INVALID_PARAMETER;
  return STATUS_SUCCESS;
}

// ---------------------------------------------------------------------------- SRQ --

Srq::Srq(Pd& pd, ULONG depth, ULONG max_sge, ULONG threshold,
         NDK_FN_SRQ_NOTIFICATION_CALLBACK notification, PVOID context)
    : Object(NdkObjectTypeSrq, &pd.adapter(), &dispatch::kSrq),
      pd_(pd),
      max_sge_(max_sge),
      notification_(notification),
      notification_context_(context),
      receives_(depth, max_sge),
      threshold_(notification != nullptr ? threshold : 0) {}

NTSTATUS Srq::modify(ULONG depth, ULONG threshold) {
  if (depth > adapter().info().MaxSrqDepth) return STATUS_INVALID_PARAMETER;  // R203
  if (depth != 0 && !receives_.resize(depth)) return STATUS_INVALID_PARAMETER;  // would drop receives
  if (threshold != 0 && notification_ != nullptr) {
    std::lock_guard lock(threshold_mutex_);
    threshold_ = threshold;  // (re)arms (R200); 0 keeps threshold and arm state (R202)
    check_threshold_locked(receives_.size());
  }
  return STATUS_SUCCESS;
}

void Srq::check_threshold_locked(size_t posted) {
  if (threshold_ == 0 || posted >= threshold_) return;
  threshold_ = 0;  // one notification per arm (R201)
  Task task;
  task.callback = reinterpret_cast<AnyCallback>(notification_);
  task.context = notification_context_;
  task.status = STATUS_SUCCESS;
  adapter().post_event(this, [](const Task& t) {
    reinterpret_cast<NDK_FN_SRQ_NOTIFICATION_CALLBACK>(t.callback)(t.context, t.status);
  }, task);
}

NTSTATUS Srq::post(PVOID request_context, const NDK_SGE* sgl, ULONG count) {
  NTSTATUS status = validate_sgl(sgl, count, max_sge_);
  if (!NT_SUCCESS(status)) return status;
  if (in_error()) return STATUS_INVALID_DEVICE_STATE;  // R204
  return receives_.post(request_context, sgl, count);
}

void Srq::fail() {
  if (error_.exchange(true)) return;
  if (notification_ == nullptr) return;
  Task task;
  task.callback = reinterpret_cast<AnyCallback>(notification_);
  task.context = notification_context_;
  task.status = STATUS_INTERNAL_ERROR;
  adapter().post_event(this, [](const Task& t) {
    reinterpret_cast<NDK_FN_SRQ_NOTIFICATION_CALLBACK>(t.callback)(t.context, t.status);
  }, task);
}

bool Srq::take(PostedReceive& out) {
  if (in_error() || !receives_.pop(out)) return false;
  std::lock_guard lock(threshold_mutex_);
  check_threshold_locked(receives_.size());  // R199: fewer than the threshold remain
  return true;
}

// ----------------------------------------------------------------------------- QP --

namespace {
constexpr NTSTATUS kNoReceive = STATUS_REMOTE_RESOURCES;  // docs/DATAPATH.md
}  // namespace

Qp::Qp(Pd& pd, Cq& receive_cq, Cq& initiator_cq, Srq* srq, PVOID context, const Limits& limits)
    : Object(NdkObjectTypeQp, &pd.adapter(), &dispatch::kQp),
      pd_(pd),
      receive_cq_(receive_cq),
      initiator_cq_(initiator_cq),
      srq_(srq),
      context_(context),
      limits_(limits),
      receives_(srq != nullptr ? 1 : limits.receive_depth, srq != nullptr ? 1 : limits.receive_sge),
      outstanding_(limits.initiator_depth) {}

NTSTATUS Qp::check_initiator(ULONG flags, ULONG allowed_flags, const NDK_SGE* sgl, ULONG count,
                             bool inline_allowed) const {
  if ((flags & ~allowed_flags) != 0) return STATUS_INVALID_PARAMETER;
  if ((flags & NDK_OP_FLAG_INLINE) && inline_allowed) {
    // INLINE ignores tokens and may exceed the SGE maximum, not the inline size (R087).
    if ((count > 0 && sgl == nullptr) || count > kMaxSge) return STATUS_INVALID_PARAMETER;
    uint64_t bytes = 0;
    for (ULONG i = 0; i < count; ++i) bytes += sgl[i].Length;
    if (bytes > limits_.inline_data) return STATUS_INVALID_BUFFER_SIZE;
  } else {
    NTSTATUS status = validate_sgl(sgl, count, limits_.initiator_sge);
    if (!NT_SUCCESS(status)) return status;
  }
  if (receive_cq_.in_error() || initiator_cq_.in_error() || (srq_ != nullptr && srq_->in_error()))
    return STATUS_INVALID_DEVICE_STATE;  // R116, R117, R204
  // Not connected (yet, or any more): fails inline (R077).
  if (state_.load(std::memory_order_acquire) != kConnected) return STATUS_CONNECTION_INVALID;
  // Every slot of the initiator queue holds a request still in flight (R091).
  if (outstanding_tail_.load(std::memory_order_relaxed) -
          outstanding_head_.load(std::memory_order_acquire) >= outstanding_.size())
    return STATUS_INSUFFICIENT_RESOURCES;
  return STATUS_SUCCESS;
}

NTSTATUS Qp::gather(const NDK_SGE* sgl, ULONG count, ULONG flags, ULONG need, ExtentList& out,
                    AccessGuard& guard) const {
  out.clear();
  if (flags & NDK_OP_FLAG_INLINE) {
    // The caller's buffers themselves, copied before the call returns (R087).
    for (ULONG i = 0; i < count; ++i)
      if (!out.add(static_cast<uint8_t*>(sgl[i].VirtualAddress), sgl[i].Length))
        return STATUS_INSUFFICIENT_RESOURCES;
    return STATUS_SUCCESS;
  }
  return resolve_local(adapter(), pd_, sgl, count, need, out, guard);
}

void Qp::complete_initiator(PVOID request_context, NDK_OPERATION_TYPE type, NTSTATUS status,
                            ULONG flags) {
  if (!NT_SUCCESS(status) && status != STATUS_CANCELLED) fail(status);
  if (NT_SUCCESS(status) && (flags & NDK_OP_FLAG_SILENT_SUCCESS)) return;  // R080
  NDK_RESULT_EX result{};
  result.Status = status;
  result.QPContext = context_;
  result.RequestContext = request_context;
  result.Type = type;
  initiator_cq_.push(result, false);
}

template <class Start>
void Qp::submit(const Outstanding& request, NTSTATUS gathered, AccessGuard& guard, Start&& start) {
  if (!NT_SUCCESS(gathered)) {
    guard.release();
    if (!(request.flags & NDK_OP_FLAG_DEFER)) start_deferred();  // it ends a chain (R084)
    complete_initiator(request.request_context, request.type, gathered, request.flags);
    return;
  }
  // Published before the fabric sees the request: its completion may come from another
  // thread before start() returns. check_initiator made room.
  const size_t tail = outstanding_tail_.load(std::memory_order_relaxed);
  outstanding_[tail % outstanding_.size()] = request;
  outstanding_tail_.store(tail + 1, std::memory_order_release);
  NTSTATUS status = start();
  guard.release();  // before completing: a local invalidation needs the region unpinned
  if (status == STATUS_PENDING) return;
  // Finished within the call: a fabric that does so has nothing else outstanding, so the
  // slot is still ours to take back.
  outstanding_tail_.store(tail, std::memory_order_relaxed);
  if (!NT_SUCCESS(status) && status != STATUS_CANCELLED) fail(status);
  finish_initiator(request, status);
}

void Qp::finish_initiator(const Outstanding& request, NTSTATUS status) {
  // Read with local invalidate: the first SGE's region is invalidated after a success
  // (R094); a token naming a registered (not fast-registered) region is left alone.
  if (NT_SUCCESS(status) && request.invalidate_token != 0)
    invalidate_token(request.invalidate_token, /*remote=*/false);
  if (NT_SUCCESS(status) && (request.flags & NDK_OP_FLAG_SILENT_SUCCESS)) return;  // R080
  NDK_RESULT_EX result{};
  result.Status = status;
  result.QPContext = context_;
  result.RequestContext = request.request_context;
  result.Type = request.type;
  initiator_cq_.push(result, false);
}

void Qp::initiator_completed(NTSTATUS status) {
  const size_t head = outstanding_head_.load(std::memory_order_relaxed);
  const Outstanding request = outstanding_[head % outstanding_.size()];
  outstanding_head_.store(head + 1, std::memory_order_release);
  finish_initiator(request, status);
}

void Qp::fail(NTSTATUS status) {
  // Terminates the connection (the peer learns of it) and enters the error state.
  if (connection_) connection_->terminate(side_, status);
  connection_ended(status);
}

NTSTATUS Qp::post_send(PVOID request_context, const NDK_SGE* sgl, ULONG count, ULONG flags,
                       bool invalidate, uint32_t invalidate_token) {
  constexpr ULONG kAllowed = NDK_OP_FLAG_SILENT_SUCCESS | NDK_OP_FLAG_READ_FENCE |
                             NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT | NDK_OP_FLAG_INLINE |
                             NDK_OP_FLAG_DEFER;
  NTSTATUS status = check_initiator(flags, kAllowed, sgl, count, /*inline_allowed=*/true);
  if (!NT_SUCCESS(status)) return status;
  AccessGuard guard;
  status = gather(sgl, count, flags, /*need=*/0, *initiator_extents_, guard);
  submit({request_context, NdkOperationTypeSend, flags, 0}, status, guard, [&] {  // R095
    return connection_->send(side_, *initiator_extents_,
                             (flags & NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT) != 0, invalidate,
                             invalidate_token, flags);
  });
  return STATUS_SUCCESS;
}

NTSTATUS Qp::post_write(PVOID request_context, const NDK_SGE* sgl, ULONG count, uint64_t address,
                        uint32_t token, ULONG flags) {
  constexpr ULONG kAllowed = NDK_OP_FLAG_SILENT_SUCCESS | NDK_OP_FLAG_READ_FENCE |
                             NDK_OP_FLAG_DEFER | NDK_OP_FLAG_INLINE;  // INLINE: §7 item 15
  NTSTATUS status = check_initiator(flags, kAllowed, sgl, count, /*inline_allowed=*/true);
  if (!NT_SUCCESS(status)) return status;
  AccessGuard guard;
  status = gather(sgl, count, flags, /*need=*/0, *initiator_extents_, guard);
  submit({request_context, NdkOperationTypeWrite, flags, 0}, status, guard, [&] {
    return connection_->write(side_, *initiator_extents_, token, address, flags);
  });
  return STATUS_SUCCESS;
}

NTSTATUS Qp::post_read(PVOID request_context, const NDK_SGE* sgl, ULONG count, uint64_t address,
                       uint32_t token, ULONG flags) {
  constexpr ULONG kAllowed = NDK_OP_FLAG_SILENT_SUCCESS | NDK_OP_FLAG_READ_FENCE |
                             NDK_OP_FLAG_DEFER | NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE;
  if (count > adapter().info().MaxReadRequestSge) return STATUS_INVALID_PARAMETER;
  NTSTATUS status = check_initiator(flags, kAllowed, sgl, count, /*inline_allowed=*/false);
  if (!NT_SUCCESS(status)) return status;
  AccessGuard guard;
  status = gather(sgl, count, flags, kNeedLocalWrite, *initiator_extents_, guard);
  const uint32_t invalidate = (flags & NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE) && count > 0
                                  ? sgl[0].MemoryRegionToken
                                  : 0;
  // The fabric keeps at most ORD reads in flight and honours READ_FENCE (R081, R178).
  submit({request_context, NdkOperationTypeRead, flags, invalidate}, status, guard, [&] {
    return connection_->read(side_, *initiator_extents_, token, address, flags);
  });
  return STATUS_SUCCESS;
}

NTSTATUS Qp::post_bind(PVOID request_context, Mr& mr, Mw& mw, uint64_t address, size_t length,
                       ULONG flags) {
  constexpr ULONG kAllowed = NDK_OP_FLAG_SILENT_SUCCESS | NDK_OP_FLAG_READ_FENCE | NDK_OP_FLAG_DEFER |
                             NDK_OP_FLAG_ALLOW_REMOTE_READ | NDK_OP_FLAG_ALLOW_REMOTE_WRITE;
  NTSTATUS status = check_initiator(flags, kAllowed, nullptr, 0, false);
  if (!NT_SUCCESS(status)) return status;
  if (&mr.pd() != &pd_ || &mw.pd() != &pd_ || mr.fast_register()) return STATUS_INVALID_PARAMETER;
  ULONG rights = 0;
  if (flags & NDK_OP_FLAG_ALLOW_REMOTE_READ) rights |= kNeedRemoteRead;
  if ((flags & NDK_OP_FLAG_ALLOW_REMOTE_WRITE) == NDK_OP_FLAG_ALLOW_REMOTE_WRITE) rights |= kNeedRemoteWrite;
  {
    std::shared_lock lock(mr.data_lock());
    const Mapping& mapping = mr.mapping_locked();
    if (!mapping.valid()) return STATUS_INVALID_DEVICE_STATE;  // not registered
    // The whole window lies inside the region (R146, §7 item 5).
    if (length == 0 || !mapping.contains(address, length)) return STATUS_INVALID_PARAMETER;
    // Write through a window needs a region the adapter may write locally (R147).
    if ((rights & kNeedRemoteWrite) && !(mapping.rights & NDK_MR_FLAG_ALLOW_LOCAL_WRITE))
      return STATUS_ACCESS_VIOLATION;
  }
  mw.bind(mr, address, length, rights);  // the token works once NdkBind returns (R148)
  AccessGuard none;
  submit({request_context, NdkOperationTypeBind, flags, 0}, STATUS_SUCCESS, none,
         [&] { return connection_->local(side_, flags); });  // in order after those before it
  return STATUS_SUCCESS;
}

NTSTATUS Qp::post_fast_register(PVOID request_context, Mr& mr, ULONG page_count,
                                const NDK_LOGICAL_ADDRESS* pages, ULONG fbo, size_t length,
                                uint64_t base, ULONG flags) {
  constexpr ULONG kAllowed = NDK_OP_FLAG_SILENT_SUCCESS | NDK_OP_FLAG_READ_FENCE | NDK_OP_FLAG_DEFER |
                             NDK_OP_FLAG_ALLOW_REMOTE_READ | NDK_OP_FLAG_ALLOW_LOCAL_WRITE |
                             NDK_OP_FLAG_ALLOW_REMOTE_WRITE | NDK_OP_FLAG_RDMA_READ_SINK;
  NTSTATUS status = check_initiator(flags, kAllowed, nullptr, 0, false);
  if (!NT_SUCCESS(status)) return status;
  if (&mr.pd() != &pd_) return STATUS_INVALID_PARAMETER;
  // BaseVirtualAddress = FBO + n pages (R143); the length fits the pages (R142).
  if (base % PAGE_SIZE != fbo) return STATUS_INVALID_PARAMETER;
  ULONG rights = 0;
  if (flags & NDK_OP_FLAG_ALLOW_LOCAL_WRITE) rights |= NDK_MR_FLAG_ALLOW_LOCAL_WRITE;
  if (flags & NDK_OP_FLAG_ALLOW_REMOTE_READ) rights |= NDK_MR_FLAG_ALLOW_REMOTE_READ;
  if ((flags & NDK_OP_FLAG_ALLOW_REMOTE_WRITE) == NDK_OP_FLAG_ALLOW_REMOTE_WRITE)
    rights |= NDK_MR_FLAG_ALLOW_REMOTE_WRITE;
  status = mr.fast_register(page_count, pages, fbo, length, base, rights);
  if (!NT_SUCCESS(status)) return status;  // inline, no CQ entry (R076)
  AccessGuard none;
  submit({request_context, NdkOperationTypeFastRegister, flags, 0}, STATUS_SUCCESS, none,
         [&] { return connection_->local(side_, flags); });  // in order after those before it
  return STATUS_SUCCESS;
}

NTSTATUS Qp::post_invalidate(PVOID request_context, Object& target, ULONG flags) {
  constexpr ULONG kAllowed = NDK_OP_FLAG_SILENT_SUCCESS | NDK_OP_FLAG_READ_FENCE | NDK_OP_FLAG_DEFER;
  NTSTATUS status = check_initiator(flags, kAllowed, nullptr, 0, false);
  if (!NT_SUCCESS(status)) return status;
  if (target.type() == NdkObjectTypeMr) {
    auto& mr = static_cast<Mr&>(target);
    if (&mr.pd() != &pd_) return STATUS_INVALID_PARAMETER;
    status = mr.invalidate();
  } else {
    auto& mw = static_cast<Mw&>(target);
    if (&mw.pd() != &pd_) return STATUS_INVALID_PARAMETER;
    status = mw.invalidate();
  }
  if (!NT_SUCCESS(status)) return status;  // already invalid (R145), or a registered MR (R137)
  AccessGuard none;
  submit({request_context, NdkOperationTypeInvalidate, flags, 0}, STATUS_SUCCESS, none,
         [&] { return connection_->local(side_, flags); });  // in order after those before it
  return STATUS_SUCCESS;
}

bool Qp::invalidate_token(uint32_t token, bool remote) {
  // Find the owner under the table's lock, keep it alive by a hold, invalidate outside.
  Object* owner = adapter().tokens().with_owner(token, [&](Object* o) -> Object* {
    if (o == nullptr) return nullptr;
    if (o->type() == NdkObjectTypeMr) {
      auto* mr = static_cast<Mr*>(o);
      if (&mr->pd() != &pd_ || !mr->fast_register()) return nullptr;
      if (token != (remote ? mr->remote_token() : mr->local_token())) return nullptr;
    } else if (o->type() == NdkObjectTypeMw) {
      auto* mw = static_cast<Mw*>(o);
      if (!remote || &mw->pd() != &pd_ || token != mw->remote_token()) return nullptr;
    } else {
      return nullptr;
    }
    o->hold();
    return o;
  });
  if (owner == nullptr) return false;
  NTSTATUS status = owner->type() == NdkObjectTypeMr ? static_cast<Mr*>(owner)->invalidate()
                                                     : static_cast<Mw*>(owner)->invalidate();
  owner->release();
  return NT_SUCCESS(status);
}

NTSTATUS Qp::post_receive(PVOID request_context, const NDK_SGE* sgl, ULONG count) {
  if (srq_ != nullptr) return STATUS_INVALID_DEVICE_REQUEST;  // receives go to the SRQ
  NTSTATUS status = validate_sgl(sgl, count, limits_.receive_sge);
  if (!NT_SUCCESS(status)) return status;
  if (receive_cq_.in_error()) return STATUS_INVALID_DEVICE_STATE;  // R116
  // Kept before a connection exists (R078) and until flushed.
  return receives_.post(request_context, sgl, count);  // full: R091
}

void Qp::complete_receive(const PostedReceive& receive, NTSTATUS status, size_t bytes,
                          bool solicited, uint32_t invalidated) {
  NDK_RESULT_EX result{};
  result.Status = status;
  result.BytesTransferred = static_cast<ULONG>(bytes);
  result.QPContext = context_;
  result.RequestContext = receive.request_context;
  result.Type = invalidated != 0 ? NdkOperationTypeReceiveAndInvalidate : NdkOperationTypeReceive;
  result.TypeSpecificCompletionOutput = invalidated;
  receive_cq_.push(result, solicited);
}

void Qp::start_deferred() {
  // connection_ is set before the state becomes kConnected (release) and never reset;
  // kDisconnected comes only after kConnected. A graceful end keeps what is posted (R103),
  // so a chain refused by it still goes to the fabric; after an error, nothing is held.
  const int state = state_.load(std::memory_order_acquire);
  if (state == kConnected || state == kDisconnected) connection_->start_deferred(side_);
}

void Qp::flush() {
  // Every pending receive completes with STATUS_CANCELLED, in posting order (R101).
  // Initiator requests a fabric holds are its to flush when the connection ends.
  receives_.drain([this](const PostedReceive& receive) {
    complete_receive(receive, STATUS_CANCELLED, 0, false, 0);
  });
}

bool Qp::claim_for_connection() { return !claimed_.exchange(true); }

void Qp::connected(std::shared_ptr<fabric::Connection> connection, fabric::Connection::Side side) {
  connection_ = std::move(connection);
  side_ = side;
  state_.store(kConnected, std::memory_order_release);
}

void Qp::connection_ended(NTSTATUS status) {
  int state = state_.load(std::memory_order_acquire);
  if (NT_SUCCESS(status)) {
    // A graceful end keeps what is posted (R103); new initiator requests fail inline.
    if (state == kConnected) state_.store(kDisconnected, std::memory_order_release);
    return;
  }
  state_.store(kError, std::memory_order_release);
  flush();
}

fabric::QpEndpoint::SendOutcome Qp::deliver_send(const ExtentList& data, bool solicited,
                                                 bool invalidate, uint32_t token) {
  PostedReceive receive;
  if (!take_receive(receive)) return {kNoReceive, true};  // iWARP terminates (docs/DATAPATH.md)
  ExtentList& into = *receive_extents_;
  into.clear();
  size_t copied = 0;
  NTSTATUS placed;
  {
    AccessGuard guard;
    placed = resolve_local(adapter(), pd_, receive.sge, receive.count, kNeedLocalWrite, into, guard);
    if (NT_SUCCESS(placed)) {
      copied = copy_extents(into, data);  // the only copy
      if (data.total() > into.total()) placed = STATUS_BUFFER_OVERFLOW;
    }
  }
  return finish_receive(receive, placed, copied, solicited, invalidate, token);
}

bool Qp::take_receive(PostedReceive& receive) {
  return srq_ != nullptr ? srq_->take(receive) : receives_.pop(receive);
}

NTSTATUS Qp::resolve_receive(const PostedReceive& receive, ExtentList& out, AccessGuard& guard) {
  return resolve_local(adapter(), pd_, receive.sge, receive.count, kNeedLocalWrite, out, guard);
}

NTSTATUS Qp::place_receive(const PostedReceive& receive, uint64_t offset,
                           std::span<const uint8_t> bytes) {
  ExtentList& into = *receive_extents_;
  into.clear();
  AccessGuard guard;
  NTSTATUS status = resolve_receive(receive, into, guard);
  if (!NT_SUCCESS(status)) return status;
  return copy_to_extents(into, offset, bytes) == bytes.size() ? STATUS_SUCCESS
                                                              : STATUS_BUFFER_OVERFLOW;
}

fabric::QpEndpoint::SendOutcome Qp::finish_receive(const PostedReceive& receive, NTSTATUS placed,
                                                   size_t bytes, bool solicited, bool invalidate,
                                                   uint32_t token) {
  if (placed == STATUS_BUFFER_OVERFLOW) {
    complete_receive(receive, STATUS_BUFFER_OVERFLOW, bytes, solicited, 0);
    return {STATUS_BUFFER_OVERFLOW, true};
  }
  if (!NT_SUCCESS(placed)) {  // the receive's own SGEs are invalid here
    complete_receive(receive, placed, 0, solicited, 0);
    return {STATUS_CONNECTION_ABORTED, true};
  }
  // Remote invalidation happens before the receive completes (R096); a token naming
  // nothing invalidatable aborts the connection (R099).
  if (invalidate && !invalidate_token(token, /*remote=*/true)) {
    complete_receive(receive, STATUS_ACCESS_VIOLATION, bytes, solicited, 0);
    return {STATUS_ACCESS_VIOLATION, true};
  }
  complete_receive(receive, STATUS_SUCCESS, bytes, solicited, invalidate ? token : 0);
  return {STATUS_SUCCESS, false};
}

NTSTATUS Qp::resolve_tagged(uint32_t token, uint64_t address, size_t length, ULONG need,
                            ExtentList& out, AccessGuard& guard) {
  return resolve_remote(adapter(), pd_, token, address, length, need, out, guard);
}

}  // namespace softndk
