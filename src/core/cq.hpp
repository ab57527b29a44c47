// NDK_CQ: a ring of completions filled by the provider (work requests, flushes) and
// drained by the consumer with NdkGetCqResults[Ex]; one notification per NdkArmCq.
#pragma once

#include <atomic>
#include <mutex>
#include <vector>

#include "core/object.hpp"

namespace softndk {

class Cq final : public Object {
 public:
  Cq(Adapter& adapter, ULONG depth, NDK_FN_CQ_NOTIFICATION_CALLBACK notification, PVOID context);
  static Cq* from(NDK_CQ* ndk) { return object_of<Cq>(ndk, NdkObjectTypeCq); }

  NTSTATUS resize(ULONG depth);
  void arm(ULONG type);
  ULONG get_results(NDK_RESULT* results, ULONG count);
  ULONG get_results_ex(NDK_RESULT_EX* results, ULONG count);
  NTSTATUS moderate(ULONG interval, ULONG count);
  ULONG depth() const;

  // Producer side: queues one completion. A full CQ enters the error state (R116).
  // `solicited` marks the receive of a send that asked for a solicited event.
  void push(const NDK_RESULT_EX& result, bool solicited);
  // An overrun CQ is unusable, and so are the QPs that use it (R116).
  bool in_error() const { return error_.load(std::memory_order_acquire); }
  // Enters the error state with `status` (STATUS_BUFFER_OVERFLOW: overrun, R116;
  // STATUS_INTERNAL_ERROR: a fatal fault, R117), notifying an arm with it.
  void fail(NTSTATUS status);

 protected:
  void on_close_requested() override;

 private:
  // Nothing queued, even after letting the fabric make progress on this thread.
  bool empty_after_progress();
  void notify_locked(NTSTATUS status);  // consumes the arm, queues the callback
  void fail_locked(NTSTATUS status);
  // An arm was satisfied by one more completion: notify now, or once moderation allows.
  void satisfied_locked();
  void moderation_expired();
  void stop_moderation_timer_locked();

  NDK_FN_CQ_NOTIFICATION_CALLBACK notification_;
  PVOID notification_context_;
  mutable std::mutex mutex_;
  std::vector<NDK_RESULT_EX> ring_;
  size_t head_ = 0;   // next entry to hand to the consumer
  std::atomic<size_t> count_{0};  // entries queued; read without the lock by empty polls
  int armed_ = -1;    // NDK_CQ_NOTIFY_* or -1
  // What arrived since the last notification: an arm it satisfies fires at once (R112).
  bool new_since_notify_ = false;
  bool new_error_ = false;
  bool new_solicited_ = false;
  std::atomic<bool> error_{false};
  NTSTATUS error_status_ = STATUS_SUCCESS;  // what the error state is reported as
  ULONG moderation_interval_ = 0;  // microseconds; 0: off (R123)
  ULONG moderation_count_ = 0;
  ULONG satisfied_ = 0;            // completions that satisfied the arm, not yet notified
  uint64_t moderation_timer_ = 0;  // holds the CQ while it runs
};

}  // namespace softndk
