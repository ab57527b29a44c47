// Memory tokens (local and remote): random 32-bit values, unique among the live tokens of
// one adapter, so a peer cannot guess one (tokens travel to peers in consumer messages).
#pragma once

#include <cstdint>
#include <mutex>
#include <random>
#include <unordered_map>

namespace softndk {

class Object;

class TokenTable {
 public:
  TokenTable();
  // A fresh token owned by `owner`; never 0 (0 marks "no token").
  uint32_t allocate(Object* owner);
  void free(uint32_t token);
  // The owner of a live token, or null.
  Object* lookup(uint32_t token) const;
  // Runs f(owner or null) under the table's lock, so the owner cannot lose the token (and
  // so be destroyed) while f pins it. f must not take the table's lock again.
  template <class F>
  auto with_owner(uint32_t token, F&& f) const {
    std::lock_guard lock(mutex_);
    auto it = owners_.find(token);
    return f(it == owners_.end() ? nullptr : it->second);
  }
  size_t live() const;

 private:
  mutable std::mutex mutex_;
  std::mt19937 random_;
  std::unordered_map<uint32_t, Object*> owners_;
};

}  // namespace softndk
