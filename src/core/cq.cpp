#include "core/cq.hpp"

#include <algorithm>

#include "core/adapter.hpp"
#include "core/dispatch.hpp"

namespace softndk {

Cq::Cq(Adapter& adapter, ULONG depth, NDK_FN_CQ_NOTIFICATION_CALLBACK notification,
       PVOID context)
    : Object(NdkObjectTypeCq, &adapter, &dispatch::kCq),
      notification_(notification),
      notification_context_(context),
      ring_(depth) {}

ULONG Cq::depth() const {
  std::lock_guard lock(mutex_);
  return static_cast<ULONG>(ring_.size());
}

NTSTATUS Cq::resize(ULONG depth) {
  std::lock_guard lock(mutex_);
  if (error_.load(std::memory_order_relaxed)) return STATUS_INVALID_DEVICE_STATE;
  // Decision (INVENTORY §7 item 24): a CQ never shrinks below what it holds, so no
  // completion is ever dropped by a resize.
  if (depth < count_) return STATUS_INVALID_PARAMETER;
  std::vector<NDK_RESULT_EX> ring(depth);
  for (size_t i = 0; i < count_; ++i) ring[i] = ring_[(head_ + i) % ring_.size()];
  ring_.swap(ring);
  head_ = 0;
  return STATUS_SUCCESS;
}

void Cq::arm(ULONG type) {
  adapter().iface().consumer_waits();
  std::lock_guard lock(mutex_);
  // Two arms before a notification merge to the wider one (R114): ANY > SOLICITED > ERRORS.
  auto rank = [](int t) { return t == NDK_CQ_NOTIFY_ANY ? 2 : t == NDK_CQ_NOTIFY_SOLICITED ? 1 : 0; };
  int wanted = static_cast<int>(type);
  if (armed_ < 0 || rank(wanted) > rank(armed_)) armed_ = wanted;
  if (error_.load(std::memory_order_relaxed)) {
    notify_locked(error_status_);
  } else if (count_ > 0 && ((armed_ == NDK_CQ_NOTIFY_ANY && new_since_notify_) ||
                             (armed_ == NDK_CQ_NOTIFY_SOLICITED && (new_solicited_ || new_error_)) ||
                             (armed_ == NDK_CQ_NOTIFY_ERRORS && new_error_))) {
    notify_locked(STATUS_SUCCESS);  // R112: a completion that satisfies it arrived already
  }
}

void Cq::notify_locked(NTSTATUS status) {
  armed_ = -1;
  new_since_notify_ = new_error_ = new_solicited_ = false;
  satisfied_ = 0;
  stop_moderation_timer_locked();
  Task task;
  task.callback = reinterpret_cast<AnyCallback>(notification_);
  task.context = notification_context_;
  task.status = status;
  adapter().post_event(this, [](const Task& t) {
    reinterpret_cast<NDK_FN_CQ_NOTIFICATION_CALLBACK>(t.callback)(t.context, t.status);
  }, task);
}

void Cq::push(const NDK_RESULT_EX& result, bool solicited) {
  std::lock_guard lock(mutex_);
  if (error_.load(std::memory_order_relaxed)) return;  // an overrun CQ reports nothing more (R116)
  if (count_ == ring_.size()) {
    fail_locked(STATUS_BUFFER_OVERFLOW);
    return;
  }
  ring_[(head_ + count_) % ring_.size()] = result;
  ++count_;
  new_since_notify_ = true;
  bool failed = !NT_SUCCESS(result.Status);
  new_error_ |= failed;
  new_solicited_ |= solicited;
  if (armed_ == NDK_CQ_NOTIFY_ANY || (armed_ == NDK_CQ_NOTIFY_SOLICITED && (solicited || failed)) ||
      (armed_ == NDK_CQ_NOTIFY_ERRORS && failed))
    satisfied_locked();
}

void Cq::fail(NTSTATUS status) {
  std::lock_guard lock(mutex_);
  if (!error_.load(std::memory_order_relaxed)) fail_locked(status);
}

void Cq::fail_locked(NTSTATUS status) {
  error_status_ = status;
  error_.store(true, std::memory_order_release);
  if (armed_ >= 0) notify_locked(status);
}

void Cq::satisfied_locked() {
  ++satisfied_;
  // R124, R125: interval 0 or count 0/1 switch moderation off; MAXULONG (or a count above
  // the depth) leaves the other setting alone in charge.
  bool by_interval = moderation_interval_ != 0 && moderation_interval_ != MAXULONG;
  bool by_count = moderation_count_ > 1 && moderation_count_ != MAXULONG && moderation_count_ <= ring_.size();
  bool off = moderation_interval_ == 0 || moderation_count_ <= 1;
  if (off || (by_count && satisfied_ >= moderation_count_)) {
    notify_locked(STATUS_SUCCESS);
    return;
  }
  if (by_interval && moderation_timer_ == 0) {
    Task task;
    task.object = this;
    task.run = [](const Task& t) {
      auto* cq = static_cast<Cq*>(t.object);
      cq->moderation_expired();
      cq->release();  // the hold taken when the timer started
    };
    hold();
    moderation_timer_ = adapter().provider_thread().post_after(
        std::chrono::microseconds(moderation_interval_), task);
  }
}

void Cq::moderation_expired() {
  std::lock_guard lock(mutex_);
  moderation_timer_ = 0;
  if (armed_ >= 0 && satisfied_ > 0) notify_locked(STATUS_SUCCESS);
}

void Cq::stop_moderation_timer_locked() {
  if (moderation_timer_ == 0) return;
  if (adapter().provider_thread().cancel(moderation_timer_)) release();
  moderation_timer_ = 0;
}

void Cq::on_close_requested() {
  std::lock_guard lock(mutex_);
  stop_moderation_timer_locked();  // the close need not wait for it
}

bool Cq::empty_after_progress() {
  if (count_.load(std::memory_order_acquire) != 0) return false;
  adapter().iface().progress();  // the consumer's poll drives the fabric
  return count_.load(std::memory_order_acquire) == 0;
}

ULONG Cq::get_results(NDK_RESULT* results, ULONG count) {
  if (empty_after_progress()) return 0;  // an empty poll takes no lock
  std::lock_guard lock(mutex_);
  if (error_.load(std::memory_order_relaxed)) return 0;  // unusable after an overrun (R116)
  ULONG n = static_cast<ULONG>(std::min<size_t>(count, count_.load(std::memory_order_relaxed)));
  for (ULONG i = 0; i < n; ++i) {
    const NDK_RESULT_EX& r = ring_[head_];
    results[i] = NDK_RESULT{r.Status, r.BytesTransferred, r.QPContext, r.RequestContext};
    head_ = (head_ + 1) % ring_.size();
  }
  count_ -= n;
  return n;
}

ULONG Cq::get_results_ex(NDK_RESULT_EX* results, ULONG count) {
  if (empty_after_progress()) return 0;
  std::lock_guard lock(mutex_);
  if (error_.load(std::memory_order_relaxed)) return 0;
  ULONG n = static_cast<ULONG>(std::min<size_t>(count, count_.load(std::memory_order_relaxed)));
  for (ULONG i = 0; i < n; ++i) {
    results[i] = ring_[head_];
    head_ = (head_ + 1) % ring_.size();
  }
  count_ -= n;
  return n;
}

NTSTATUS Cq::moderate(ULONG interval, ULONG count) {
  std::lock_guard lock(mutex_);
  // R126: "count alone" and "interval alone" at once leaves nothing to moderate by.
  if (interval == MAXULONG && (count == MAXULONG || count > ring_.size()))
    return STATUS_INVALID_PARAMETER_MIX;
  // Takes effect from the next completion; the newest settings win (R129).
  moderation_interval_ = interval;
  moderation_count_ = count;
  return STATUS_SUCCESS;
}

}  // namespace softndk
