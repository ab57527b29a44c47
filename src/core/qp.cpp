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
      receives_(srq != nullptr ? 1 : limits.receive_depth, srq != nullptr ? 1 : limits.receive_sge) {}

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
  {
    AccessGuard guard;
    status = gather(sgl, count, flags, /*need=*/0, *initiator_extents_, guard);
    if (NT_SUCCESS(status))
      status = connection_->send(side_, *initiator_extents_,
                                 (flags & NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT) != 0, invalidate,
                                 invalidate_token);
  }
  complete_initiator(request_context, NdkOperationTypeSend, status, flags);  // R095
  return STATUS_SUCCESS;
}

NTSTATUS Qp::post_write(PVOID request_context, const NDK_SGE* sgl, ULONG count, uint64_t address,
                        uint32_t token, ULONG flags) {
  constexpr ULONG kAllowed = NDK_OP_FLAG_SILENT_SUCCESS | NDK_OP_FLAG_READ_FENCE |
                             NDK_OP_FLAG_DEFER | NDK_OP_FLAG_INLINE;  // INLINE: §7 item 15
  NTSTATUS status = check_initiator(flags, kAllowed, sgl, count, /*inline_allowed=*/true);
  if (!NT_SUCCESS(status)) return status;
  {
    AccessGuard guard;
    status = gather(sgl, count, flags, /*need=*/0, *initiator_extents_, guard);
    if (NT_SUCCESS(status)) status = connection_->write(side_, *initiator_extents_, token, address);
  }
  complete_initiator(request_context, NdkOperationTypeWrite, status, flags);
  return STATUS_SUCCESS;
}

NTSTATUS Qp::post_read(PVOID request_context, const NDK_SGE* sgl, ULONG count, uint64_t address,
                       uint32_t token, ULONG flags) {
  constexpr ULONG kAllowed = NDK_OP_FLAG_SILENT_SUCCESS | NDK_OP_FLAG_READ_FENCE |
                             NDK_OP_FLAG_DEFER | NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE;
  if (count > adapter().info().MaxReadRequestSge) return STATUS_INVALID_PARAMETER;
  NTSTATUS status = check_initiator(flags, kAllowed, sgl, count, /*inline_allowed=*/false);
  if (!NT_SUCCESS(status)) return status;
  {
    AccessGuard guard;
    status = gather(sgl, count, flags, kNeedLocalWrite, *initiator_extents_, guard);
    // Reads run to completion here, one at a time: at most one is ever in flight, within
    // any negotiated ORD/IRD (R178), and READ_FENCE holds trivially (R081).
    if (NT_SUCCESS(status)) status = connection_->read(side_, *initiator_extents_, token, address);
  }
  // Read with local invalidate: the first SGE's region is invalidated after a success
  // (R094); a token naming a registered (not fast-registered) region is left alone.
  if (NT_SUCCESS(status) && (flags & NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE) && count > 0)
    invalidate_token(sgl[0].MemoryRegionToken, /*remote=*/false);
  complete_initiator(request_context, NdkOperationTypeRead, status, flags);
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
  complete_initiator(request_context, NdkOperationTypeBind, STATUS_SUCCESS, flags);
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
  complete_initiator(request_context, NdkOperationTypeFastRegister, STATUS_SUCCESS, flags);
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
  complete_initiator(request_context, NdkOperationTypeInvalidate, STATUS_SUCCESS, flags);
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

void Qp::flush() {
  // Every pending receive completes with STATUS_CANCELLED, in posting order (R101). The
  // initiator queue has nothing pending: requests run to completion when posted.
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
  bool have = srq_ != nullptr ? srq_->take(receive) : receives_.pop(receive);
  if (!have) return {kNoReceive, true};  // iWARP terminates (docs/DATAPATH.md)
  ExtentList& into = *receive_extents_;
  into.clear();
  size_t copied;
  {
    AccessGuard guard;
    NTSTATUS status = resolve_local(adapter(), pd_, receive.sge, receive.count, kNeedLocalWrite, into, guard);
    if (!NT_SUCCESS(status)) {
      complete_receive(receive, status, 0, solicited, 0);
      return {STATUS_CONNECTION_ABORTED, true};
    }
    copied = copy_extents(into, data);  // the only copy
  }
  if (data.total() > into.total()) {
    complete_receive(receive, STATUS_BUFFER_OVERFLOW, copied, solicited, 0);
    return {STATUS_BUFFER_OVERFLOW, true};
  }
  // Remote invalidation happens before the receive completes (R096); a token naming
  // nothing invalidatable aborts the connection (R099).
  if (invalidate && !invalidate_token(token, /*remote=*/true)) {
    complete_receive(receive, STATUS_ACCESS_VIOLATION, copied, solicited, 0);
    return {STATUS_ACCESS_VIOLATION, true};
  }
  complete_receive(receive, STATUS_SUCCESS, copied, solicited, invalidate ? token : 0);
  return {STATUS_SUCCESS, false};
}

NTSTATUS Qp::resolve_tagged(uint32_t token, uint64_t address, size_t length, ULONG need,
                            ExtentList& out, AccessGuard& guard) {
  return resolve_remote(adapter(), pd_, token, address, length, need, out, guard);
}

}  // namespace softndk
