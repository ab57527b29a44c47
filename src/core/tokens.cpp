#include "core/tokens.hpp"

namespace softndk {

TokenTable::TokenTable() : random_(std::random_device{}()) {}

uint32_t TokenTable::allocate(Object* owner) {
  std::lock_guard lock(mutex_);
  for (;;) {
    uint32_t token = random_();
    if (token != 0 && owners_.emplace(token, owner).second) return token;
  }
}

void TokenTable::free(uint32_t token) {
  if (token == 0) return;
  std::lock_guard lock(mutex_);
  owners_.erase(token);
}

Object* TokenTable::lookup(uint32_t token) const {
  std::lock_guard lock(mutex_);
  auto it = owners_.find(token);
  return it == owners_.end() ? nullptr : it->second;
}

size_t TokenTable::live() const {
  std::lock_guard lock(mutex_);
  return owners_.size();
}

}  // namespace softndk
