// NDK_QP and NDK_SRQ: the receive queue, the initiator queue and the shared receive queue,
// and the QP's side of the data path (fabric::QpEndpoint).
#pragma once

#include <atomic>
#include <memory>
#include <span>
#include <vector>

#include "core/object.hpp"
#include "core/receive_queue.hpp"
#include "fabric/connection.hpp"

namespace softndk {

class Cq;
class Mr;
class Mw;
class Pd;

class Srq final : public Object {
 public:
  Srq(Pd& pd, ULONG depth, ULONG max_sge, ULONG threshold,
      NDK_FN_SRQ_NOTIFICATION_CALLBACK notification, PVOID context);
  static Srq* from(NDK_SRQ* ndk) { return object_of<Srq>(ndk, NdkObjectTypeSrq); }

  NTSTATUS modify(ULONG depth, ULONG threshold);
  NTSTATUS post(PVOID request_context, const NDK_SGE* sgl, ULONG count);
  // Takes the next receive for a QP of this SRQ (the data path).
  bool take(PostedReceive& out);
  // A fatal fault: the notification reports STATUS_INTERNAL_ERROR, the SRQ and its QPs
  // become unusable, no receive of it completes any more (R204).
  void fail();
  bool in_error() const { return error_.load(std::memory_order_acquire); }
  ULONG max_sge() const { return max_sge_; }
  Pd& pd() const { return pd_; }

 private:
  void check_threshold_locked(size_t posted);

  Pd& pd_;
  const ULONG max_sge_;
  NDK_FN_SRQ_NOTIFICATION_CALLBACK notification_;
  PVOID notification_context_;
  ReceiveQueue receives_;
  // Scratch lists for resolving memory: the initiator queue and the receive side are each
  // used by one thread at a time (R067), so the data path allocates nothing.
  std::unique_ptr<ExtentList> initiator_extents_ = std::make_unique<ExtentList>();
  std::unique_ptr<ExtentList> receive_extents_ = std::make_unique<ExtentList>();
  std::mutex threshold_mutex_;
  ULONG threshold_;  // 0: not armed
  std::atomic<bool> error_{false};
};

class Qp final : public Object, public fabric::QpEndpoint {
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

  // ---- posting (the consumer's calls) ----
  NTSTATUS post_send(PVOID request_context, const NDK_SGE* sgl, ULONG count, ULONG flags,
                     bool invalidate, uint32_t invalidate_token);
  NTSTATUS post_write(PVOID request_context, const NDK_SGE* sgl, ULONG count, uint64_t address,
                      uint32_t token, ULONG flags);
  NTSTATUS post_read(PVOID request_context, const NDK_SGE* sgl, ULONG count, uint64_t address,
                     uint32_t token, ULONG flags);
  NTSTATUS post_bind(PVOID request_context, Mr& mr, Mw& mw, uint64_t address, size_t length,
                     ULONG flags);
  NTSTATUS post_fast_register(PVOID request_context, Mr& mr, ULONG page_count,
                              const NDK_LOGICAL_ADDRESS* pages, ULONG fbo, size_t length,
                              uint64_t base, ULONG flags);
  NTSTATUS post_invalidate(PVOID request_context, Object& target, ULONG flags);
  NTSTATUS post_receive(PVOID request_context, const NDK_SGE* sgl, ULONG count);
  // Hands every request held back by NDK_OP_FLAG_DEFER to the fabric: where a deferred
  // chain ends without a request reaching it (one refused inline, R083, or one that
  // fails before it is sent, R084).
  void start_deferred();
  void flush();

  // ---- the connection (the connector's calls) ----
  // Binds the QP to one connection; false if it already has one.
  bool claim_for_connection();
  void release_claim() { claimed_.store(false); }
  void connected(std::shared_ptr<fabric::Connection> connection, fabric::Connection::Side side);
  // The connection ended: gracefully (the QP keeps its requests, R103) or with an error
  // (every outstanding request completes flushed).
  void connection_ended(NTSTATUS status);

  Pd& pd() const { return pd_; }
  Cq& receive_cq() { return receive_cq_; }
  Cq& initiator_cq() { return initiator_cq_; }

  // ---- fabric::QpEndpoint: the peer's messages and accesses ----
  SendOutcome deliver_send(const ExtentList& data, bool solicited, bool invalidate,
                           uint32_t token) override;
  NTSTATUS resolve_tagged(uint32_t token, uint64_t address, size_t length, ULONG need,
                          ExtentList& out, AccessGuard& guard) override;
  void terminated(NTSTATUS status) override { connection_ended(status); }
  bool take_receive(PostedReceive& receive) override;
  NTSTATUS place_receive(const PostedReceive& receive, uint64_t offset,
                         std::span<const uint8_t> bytes) override;
  NTSTATUS resolve_receive(const PostedReceive& receive, ExtentList& out, AccessGuard& guard) override;
  SendOutcome finish_receive(const PostedReceive& receive, NTSTATUS placed, size_t bytes,
                             bool solicited, bool invalidate, uint32_t token) override;
  void initiator_completed(NTSTATUS status) override;
  ULONG initiator_depth() const override { return static_cast<ULONG>(outstanding_.size()); }

 protected:
  void on_close_requested() override { flush(); }  // R042

 private:
  enum State : int { kIdle, kConnected, kError, kDisconnected };

  // Checks what every initiator request needs: known flags, SGE count, a connection.
  NTSTATUS check_initiator(ULONG flags, ULONG allowed_flags, const NDK_SGE* sgl, ULONG count,
                           bool inline_allowed) const;
  // Local SGEs (or INLINE data) of an initiator request as extents.
  NTSTATUS gather(const NDK_SGE* sgl, ULONG count, ULONG flags, ULONG need, ExtentList& out,
                  AccessGuard& guard) const;
  // Invalidates the region or window a token of this QP's PD names (remote invalidation,
  // read with local invalidate). False when the token names nothing invalidatable.
  bool invalidate_token(uint32_t token, bool remote);
  // An initiator request in flight: what its completion needs.
  struct Outstanding {
    PVOID request_context;
    NDK_OPERATION_TYPE type;
    ULONG flags;
    uint32_t invalidate_token;  // a read with local invalidate: its first SGE's token
  };
  // Hands one request to the fabric (`start`) and completes it: at once when the fabric
  // finished it within the call, otherwise when it reports completion (in order). The
  // regions `guard` pins are released once the fabric has the request.
  template <class Start>
  void submit(const Outstanding& request, NTSTATUS gathered, AccessGuard& guard, Start&& start);
  // Queues the completion of a finished request (local invalidation first, R094).
  void finish_initiator(const Outstanding& request, NTSTATUS status);
  // Completes an initiator request in the initiator CQ (R075, R080); an error ends the
  // connection (the QP enters the error state).
  void complete_initiator(PVOID request_context, NDK_OPERATION_TYPE type, NTSTATUS status,
                          ULONG flags);
  void fail(NTSTATUS status);
  void complete_receive(const PostedReceive& receive, NTSTATUS status, size_t bytes,
                        bool solicited, uint32_t invalidated);

  Pd& pd_;
  Cq& receive_cq_;
  Cq& initiator_cq_;
  Srq* srq_;
  PVOID context_;
  Limits limits_;
  ReceiveQueue receives_;
  // Scratch lists for resolving memory: the initiator queue and the receive side are each
  // used by one thread at a time (R067), so the data path allocates nothing.
  std::unique_ptr<ExtentList> initiator_extents_ = std::make_unique<ExtentList>();
  std::unique_ptr<ExtentList> receive_extents_ = std::make_unique<ExtentList>();
  // Requests a fabric completes later, oldest first: a ring of initiator_depth entries
  // that the consumer's thread fills (tail) and the fabric's completions drain (head).
  std::vector<Outstanding> outstanding_;
  std::atomic<size_t> outstanding_head_{0};
  std::atomic<size_t> outstanding_tail_{0};
  std::atomic<int> state_{kIdle};
  std::atomic<bool> claimed_{false};
  std::shared_ptr<fabric::Connection> connection_;  // set once, before kConnected
  fabric::Connection::Side side_ = fabric::Connection::kActive;
};

// Checks an SGE list against a maximum count; null list with a non-zero count fails.
NTSTATUS validate_sgl(const NDK_SGE* sgl, ULONG count, ULONG max_count);

}  // namespace softndk
