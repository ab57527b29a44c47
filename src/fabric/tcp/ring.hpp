// A FIFO whose slots are reused: a popped element stays constructed in its slot, with the
// memory it owns (an iovec vector's capacity), for the next push_slot() to reuse. After the
// first messages of a connection its queues allocate nothing; they grow (doubling) only
// when more is in flight than ever before.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace softndk::fabric::tcp {

template <class T>
class Ring {
 public:
  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return slots_[(head_ + i) & (slots_.size() - 1)]; }
  const T& operator[](size_t i) const { return slots_[(head_ + i) & (slots_.size() - 1)]; }
  T& front() { return (*this)[0]; }
  T& back() { return (*this)[size_ - 1]; }
  const T& front() const { return (*this)[0]; }
  const T& back() const { return (*this)[size_ - 1]; }

  // The slot after the last element, now the last: as the element that last used it left
  // it (the caller resets what it needs).
  T& push_slot() {
    if (size_ == slots_.size()) grow();
    ++size_;
    return back();
  }
  void pop_front() {
    head_ = (head_ + 1) & (slots_.size() - 1);
    --size_;
  }
  void pop_back() { --size_; }
  // Removes element i, keeping the order of the others (their slots' memory moves along).
  void erase(size_t i) {
    for (; i + 1 < size_; ++i) std::swap((*this)[i], (*this)[i + 1]);
    --size_;
  }
  void clear() { size_ = 0; }

 private:
  void grow() {
    std::vector<T> larger(slots_.empty() ? 8 : slots_.size() * 2);
    for (size_t i = 0; i < slots_.size(); ++i) larger[i] = std::move((*this)[i]);
    slots_ = std::move(larger);
    head_ = 0;
  }

  std::vector<T> slots_;  // a power of two in size
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace softndk::fabric::tcp
