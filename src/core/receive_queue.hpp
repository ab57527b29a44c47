// The receive side of a QP or an SRQ: a ring of posted receives, each with its SGE list
// copied in at post time (storage sized at creation, so posting allocates nothing).
// The owner's consumer posts; the peer's data path consumes, hence the lock.
#pragma once

#include <mutex>
#include <vector>

#include "core/memory.hpp"

namespace softndk {

struct PostedReceive {
  PVOID request_context;
  ULONG count;
  NDK_SGE sge[kMaxSge];
};

class ReceiveQueue {
 public:
  ReceiveQueue(ULONG depth, ULONG max_sge);

  // STATUS_INSUFFICIENT_RESOURCES when `depth` receives are already posted (R091).
  NTSTATUS post(PVOID request_context, const NDK_SGE* sgl, ULONG count);
  // Takes the oldest receive; false when none is posted.
  bool pop(PostedReceive& out);
  // Takes every posted receive, oldest first.
  template <class F>
  void drain(F&& each) {
    PostedReceive receive;
    while (pop(receive)) each(receive);
  }
  size_t size() const;
  ULONG depth() const;
  // Changes the depth; fails (false) below the number of posted receives.
  bool resize(ULONG depth);

 private:
  const ULONG max_sge_;
  mutable std::mutex mutex_;
  ULONG depth_;
  std::vector<PVOID> contexts_;
  std::vector<ULONG> counts_;
  std::vector<NDK_SGE> sges_;  // depth_ x max_sge_
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace softndk
