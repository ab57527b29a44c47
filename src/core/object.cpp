#include "core/object.hpp"

#include <algorithm>
#include <cstring>

#include "core/adapter.hpp"

namespace softndk {

Object::Object(NDK_OBJECT_TYPE type, Adapter* adapter, const void* dispatch)
    : type_(type), adapter_(adapter) {
  std::memset(&link_.ndk, 0, sizeof(link_.ndk));  // NdkReserved zero at hand-over (R023)
  link_.ndk.header.ObjectType = type;
  link_.ndk.header.Version = adapter != nullptr ? adapter->version() : NDK_VERSION{};
  // Every NDK object is { Header; Dispatch }: set Dispatch through one of them (R024).
  link_.ndk.cq.Dispatch = static_cast<const NDK_CQ_DISPATCH*>(dispatch);
  link_.magic = kLiveMagic;
  link_.object = this;
  if (adapter != nullptr) adapter->object_created(type);
}

Object::~Object() {
  link_.magic = 0;
  if (type_ != NdkObjectTypeAdapter) adapter_->object_destroyed(type_);
}

Object* Object::from_header(const NDK_OBJECT_HEADER* header, NDK_OBJECT_TYPE type) {
  if (header == nullptr) return nullptr;
  // Header is the first member of ObjectLink's first member (both standard layout).
  const auto* link = reinterpret_cast<const ObjectLink*>(header);
  if (link->magic != kLiveMagic || link->object == nullptr) return nullptr;
  Object* object = link->object;
  if (type != NdkObjectTypeUndefined && object->type_ != type) return nullptr;
  return object;
}

void Object::hold() {
  std::lock_guard lock(lifetime_mutex_);
  ++holds_;
}

void Object::release() {
  bool drained = false;
  {
    std::lock_guard lock(lifetime_mutex_);
    --holds_;
    if (holds_ == 0 && close_requested_ && !close_started_) {
      close_started_ = true;
      drained = true;
    }
  }
  if (drained) on_drained();
}

void Object::add_antecedent(Object* antecedent) {
  antecedent->hold();
  std::lock_guard lock(lifetime_mutex_);
  antecedents_.push_back(antecedent);
}

void Object::drop_antecedent(Object* antecedent) {
  {
    std::lock_guard lock(lifetime_mutex_);
    auto it = std::find(antecedents_.begin(), antecedents_.end(), antecedent);
    if (it == antecedents_.end()) return;
    antecedents_.erase(it);
  }
  antecedent->release();
}

bool Object::close_requested() const {
  // Every post asks this: no lock (the flag only ever goes from false to true).
  return close_requested_.load(std::memory_order_acquire);
}

NTSTATUS Object::close(NDK_FN_CLOSE_COMPLETION completion, PVOID context) {
  {
    std::lock_guard lock(lifetime_mutex_);
    if (close_requested_) return STATUS_INVALID_DEVICE_STATE;  // used after close (R046)
    close_requested_ = true;
    close_completion_ = completion;
    close_context_ = context;
    ++holds_;  // keeps the object alive while its pending work is cancelled
  }
  on_close_requested();
  {
    std::lock_guard lock(lifetime_mutex_);
    --holds_;
    if (holds_ > 0 || close_started_) return STATUS_PENDING;  // finishes in release()
    close_started_ = true;
  }
  // Nothing holds the object: the close completes now, by the adapter's policy.
  switch (adapter_->policy().next()) {
    case Delivery::kInline:
      on_closed();
      destroy(this);
      return STATUS_SUCCESS;
    case Delivery::kCallerThread:
      run_close_completion(this);
      return STATUS_PENDING;
    case Delivery::kProviderThread:
      on_drained();
      return STATUS_PENDING;
  }
  return STATUS_PENDING;
}

void Object::on_drained() {
  Task task;
  task.run = [](const Task& t) { run_close_completion(static_cast<Object*>(t.object)); };
  task.object = this;
  adapter_->provider_thread().post(task);
}

void Object::run_close_completion(Object* object) {
  object->on_closed();
  if (object->close_completion_ != nullptr) {
    CallbackScope scope;
    object->close_completion_(object->close_context_);
  }
  destroy(object);
}

void Object::destroy(Object* object) {
  // The close callback has returned: only now may antecedents finish their own close.
  std::vector<Object*> antecedents = std::move(object->antecedents_);
  delete object;
  for (Object* antecedent : antecedents) antecedent->release();
}

}  // namespace softndk
