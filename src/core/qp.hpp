// NDK_QP and NDK_SRQ: the receive queue, the initiator queue and the shared receive queue.
#pragma once

#include <deque>
#include <mutex>

#include "core/object.hpp"

namespace softndk {

class Cq;
class Pd;

// One posted receive: what its completion will carry.
struct PostedReceive {
  PVOID request_context;
};

class Srq final : public Object {
 public:
  Srq(Pd& pd, ULONG depth, ULONG max_sge, ULONG threshold,
      NDK_FN_SRQ_NOTIFICATION_CALLBACK notification, PVOID context);
  static Srq* from(NDK_SRQ* ndk) { return object_of<Srq>(ndk, NdkObjectTypeSrq); }

  NTSTATUS modify(ULONG depth, ULONG threshold);
  NTSTATUS post(PVOID request_context, const NDK_SGE* sgl, ULONG count);
  ULONG max_sge() const { return max_sge_; }

 private:
  void check_threshold_locked();

  const ULONG max_sge_;
  NDK_FN_SRQ_NOTIFICATION_CALLBACK notification_;
  PVOID notification_context_;
  std::mutex mutex_;
  ULONG depth_;
  ULONG threshold_;  // 0: not armed
  std::deque<PostedReceive> receives_;
};

class Qp final : public Object {
 public:
  struct Limits {
    ULONG receive_depth;  // 0 with an SRQ
    ULONG initiator_depth;
    ULONG receive_sge;
    ULONG initiator_sge;
    ULONG inline_data;
  };
  Qp(Pd& pd, Cq& receive_cq, Cq& initiator_cq, Srq* srq, PVOID context, const Limits& limits);
  static Qp* from(NDK_QP* ndk) { return object_of<Qp>(ndk, NdkObjectTypeQp); }

  // Initiator requests (send, read, write, bind, fast register, invalidate): validates
  // what the posting rules fix (flags, SGE count, inline size), then needs a connection.
  NTSTATUS post_initiator(ULONG flags, ULONG allowed_flags, const NDK_SGE* sgl, ULONG count);
  NTSTATUS post_receive(PVOID request_context, const NDK_SGE* sgl, ULONG count);
  void flush();
  Cq& receive_cq() { return receive_cq_; }
  Cq& initiator_cq() { return initiator_cq_; }

 protected:
  void on_close_requested() override { flush(); }  // R042

 private:
  Cq& receive_cq_;
  Cq& initiator_cq_;
  Srq* srq_;
  PVOID context_;
  Limits limits_;
  std::mutex receive_mutex_;
  std::deque<PostedReceive> receives_;
};

// Checks an SGE list against a maximum count; null list with a non-zero count fails.
NTSTATUS validate_sgl(const NDK_SGE* sgl, ULONG count, ULONG max_count);

}  // namespace softndk
