#include "core/qp.hpp"

#include "core/adapter.hpp"
#include "core/cq.hpp"
#include "core/dispatch.hpp"
#include "core/pd.hpp"

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
  return receives_.post(request_context, sgl, count);
}

bool Srq::take(PostedReceive& out) {
  if (!receives_.pop(out)) return false;
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
  if (receive_cq_.in_error() || initiator_cq_.in_error()) return STATUS_INVALID_DEVICE_STATE;  // R116
  // Not connected (yet, or any more): fails inline (R077).
  if (state_.load(std::memory_order_acquire) != kConnected) return STATUS_CONNECTION_INVALID;
  return STATUS_SUCCESS;
}

NTSTATUS Qp::gather(const NDK_SGE* sgl, ULONG count, ULONG flags, ULONG need, Extent* out,
                    AccessGuard& guard) const {
  if (flags & NDK_OP_FLAG_INLINE) {
    // The caller's buffers themselves, copied before the call returns (R087).
    for (ULONG i = 0; i < count; ++i)
      out[i] = Extent{static_cast<uint8_t*>(sgl[i].VirtualAddress), sgl[i].Length};
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
  Extent data[kMaxSge];
  {
    AccessGuard guard;
    status = gather(sgl, count, flags, /*need=*/0, data, guard);
    if (NT_SUCCESS(status))
      status = connection_->send(side_, data, count, (flags & NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT) != 0,
                                 invalidate, invalidate_token);
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
  Extent data[kMaxSge];
  {
    AccessGuard guard;
    status = gather(sgl, count, flags, /*need=*/0, data, guard);
    if (NT_SUCCESS(status)) status = connection_->write(side_, data, count, token, address);
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
  Extent into[kMaxSge];
  {
    AccessGuard guard;
    status = gather(sgl, count, flags, kNeedLocalWrite, into, guard);
    // Reads run to completion here, one at a time: at most one is ever in flight, within
    // any negotiated ORD/IRD (R178), and READ_FENCE holds trivially (R081).
    if (NT_SUCCESS(status)) status = connection_->read(side_, into, count, token, address);
  }
  complete_initiator(request_context, NdkOperationTypeRead, status, flags);
  return STATUS_SUCCESS;
}

NTSTATUS Qp::post_memory_operation(ULONG flags, ULONG allowed_flags) {
  NTSTATUS status = check_initiator(flags, allowed_flags, nullptr, 0, false);
  if (!NT_SUCCESS(status)) return status;
  return STATUS_NOT_SUPPORTED;  // memory windows and fast registration: the next issue
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

fabric::QpEndpoint::SendOutcome Qp::deliver_send(const Extent* data, ULONG count, bool solicited,
                                                 bool invalidate, uint32_t token) {
  PostedReceive receive;
  bool have = srq_ != nullptr ? srq_->take(receive) : receives_.pop(receive);
  if (!have) return {kNoReceive, true};  // iWARP terminates (docs/DATAPATH.md)
  Extent into[kMaxSge];
  AccessGuard guard;
  NTSTATUS status = resolve_local(adapter(), pd_, receive.sge, receive.count, kNeedLocalWrite, into, guard);
  if (!NT_SUCCESS(status)) {
    complete_receive(receive, status, 0, solicited, 0);
    return {STATUS_CONNECTION_ABORTED, true};
  }
  size_t capacity = total_length(into, receive.count);
  size_t length = total_length(data, count);
  size_t copied = copy_extents(into, receive.count, data, count);  // the only copy
  guard.release();
  if (length > capacity) {
    complete_receive(receive, STATUS_BUFFER_OVERFLOW, copied, solicited, 0);
    return {STATUS_BUFFER_OVERFLOW, true};
  }
  if (invalidate) {
    // Remote invalidation needs memory windows or fast-registered regions (the next
    // issue); a token naming neither aborts the connection (R099).
    (void)token;
    complete_receive(receive, STATUS_ACCESS_VIOLATION, copied, solicited, 0);
    return {STATUS_ACCESS_VIOLATION, true};
  }
  complete_receive(receive, STATUS_SUCCESS, copied, solicited, 0);
  return {STATUS_SUCCESS, false};
}

NTSTATUS Qp::resolve_tagged(uint32_t token, uint64_t address, size_t length, ULONG need,
                            Extent* out, AccessGuard& guard) {
  return resolve_remote(adapter(), pd_, token, address, length, need, out, guard);
}

}  // namespace softndk
