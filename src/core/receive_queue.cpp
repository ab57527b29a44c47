#include "core/receive_queue.hpp"

#include <algorithm>

namespace softndk {

ReceiveQueue::ReceiveQueue(ULONG depth, ULONG max_sge)
    : max_sge_(max_sge), depth_(depth), contexts_(depth), counts_(depth),
      sges_(static_cast<size_t>(depth) * max_sge) {}

NTSTATUS ReceiveQueue::post(PVOID request_context, const NDK_SGE* sgl, ULONG count) {
  std::lock_guard lock(mutex_);
  if (size_ == depth_) return STATUS_INSUFFICIENT_RESOURCES;
  size_t slot = (head_ + size_) % depth_;
  contexts_[slot] = request_context;
  counts_[slot] = count;
  std::copy(sgl, sgl + count, sges_.begin() + static_cast<ptrdiff_t>(slot * max_sge_));
  ++size_;
  return STATUS_SUCCESS;
}

bool ReceiveQueue::pop(PostedReceive& out) {
  std::lock_guard lock(mutex_);
  if (size_ == 0) return false;
  out.request_context = contexts_[head_];
  out.count = counts_[head_];
  auto first = sges_.begin() + static_cast<ptrdiff_t>(head_ * max_sge_);
  std::copy(first, first + out.count, out.sge);
  head_ = (head_ + 1) % depth_;
  --size_;
  return true;
}

size_t ReceiveQueue::size() const {
  std::lock_guard lock(mutex_);
  return size_;
}

ULONG ReceiveQueue::depth() const {
  std::lock_guard lock(mutex_);
  return depth_;
}

bool ReceiveQueue::resize(ULONG depth) {
  std::lock_guard lock(mutex_);
  if (depth < size_) return false;
  std::vector<PVOID> contexts(depth);
  std::vector<ULONG> counts(depth);
  std::vector<NDK_SGE> sges(static_cast<size_t>(depth) * max_sge_);
  for (size_t i = 0; i < size_; ++i) {
    size_t from = (head_ + i) % depth_;
    contexts[i] = contexts_[from];
    counts[i] = counts_[from];
    std::copy_n(sges_.begin() + static_cast<ptrdiff_t>(from * max_sge_), max_sge_,
                sges.begin() + static_cast<ptrdiff_t>(i * max_sge_));
  }
  contexts_.swap(contexts);
  counts_.swap(counts);
  sges_.swap(sges);
  depth_ = depth;
  head_ = 0;
  return true;
}

}  // namespace softndk
