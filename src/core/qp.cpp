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
      max_sge_(max_sge),
      notification_(notification),
      notification_context_(context),
      depth_(depth),
      threshold_(notification != nullptr ? threshold : 0) {}

NTSTATUS Srq::modify(ULONG depth, ULONG threshold) {
  if (depth > adapter().info().MaxSrqDepth) return STATUS_INVALID_PARAMETER;  // R203
  std::lock_guard lock(mutex_);
  if (depth != 0) {
    if (depth < receives_.size()) return STATUS_INVALID_PARAMETER;  // would drop receives
    depth_ = depth;
  }
  if (threshold != 0 && notification_ != nullptr) {
    threshold_ = threshold;  // (re)arms (R200); 0 keeps threshold and arm state (R202)
    check_threshold_locked();
  }
  return STATUS_SUCCESS;
}

void Srq::check_threshold_locked() {
  if (threshold_ == 0 || receives_.size() >= threshold_) return;
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
  std::lock_guard lock(mutex_);
  if (receives_.size() >= depth_) return STATUS_INSUFFICIENT_RESOURCES;  // R091
  receives_.push_back(PostedReceive{request_context});
  return STATUS_SUCCESS;
}

// ----------------------------------------------------------------------------- QP --

Qp::Qp(Pd& pd, Cq& receive_cq, Cq& initiator_cq, Srq* srq, PVOID context, const Limits& limits)
    : Object(NdkObjectTypeQp, &pd.adapter(), &dispatch::kQp),
      receive_cq_(receive_cq),
      initiator_cq_(initiator_cq),
      srq_(srq),
      context_(context),
      limits_(limits) {}

NTSTATUS Qp::post_initiator(ULONG flags, ULONG allowed_flags, const NDK_SGE* sgl, ULONG count) {
  if ((flags & ~allowed_flags) != 0) return STATUS_INVALID_PARAMETER;
  if (flags & NDK_OP_FLAG_INLINE) {
    // INLINE ignores tokens and may exceed the SGE maximum, but not the inline size (R087).
    if (count > 0 && sgl == nullptr) return STATUS_INVALID_PARAMETER;
    uint64_t bytes = 0;
    for (ULONG i = 0; i < count; ++i) bytes += sgl[i].Length;
    if (bytes > limits_.inline_data) return STATUS_INVALID_BUFFER_SIZE;
  } else {
    NTSTATUS status = validate_sgl(sgl, count, limits_.initiator_sge);
    if (!NT_SUCCESS(status)) return status;
  }
  // No connection yet: every initiator request fails inline (R077).
  return STATUS_CONNECTION_INVALID;
}

NTSTATUS Qp::post_receive(PVOID request_context, const NDK_SGE* sgl, ULONG count) {
  if (srq_ != nullptr) return STATUS_INVALID_DEVICE_REQUEST;  // receives go to the SRQ
  NTSTATUS status = validate_sgl(sgl, count, limits_.receive_sge);
  if (!NT_SUCCESS(status)) return status;
  std::lock_guard lock(receive_mutex_);
  if (receives_.size() >= limits_.receive_depth) return STATUS_INSUFFICIENT_RESOURCES;  // R091
  receives_.push_back(PostedReceive{request_context});  // kept until a connection (R078)
  return STATUS_SUCCESS;
}

void Qp::flush() {
  std::deque<PostedReceive> flushed;
  {
    std::lock_guard lock(receive_mutex_);
    flushed.swap(receives_);
  }
  // Every pending request completes with STATUS_CANCELLED, in posting order (R101).
  for (const PostedReceive& receive : flushed) {
    NDK_RESULT_EX result{};
    result.Status = STATUS_CANCELLED;
    result.QPContext = context_;
    result.RequestContext = receive.request_context;
    result.Type = NdkOperationTypeReceive;
    receive_cq_.push(result, false);
  }
}

}  // namespace softndk
