// The base of every NDK object: the NDK-visible structure, the conversion back from a
// header, and the lifetime rules of the close contract (ndkpi-object-lifetime-requirements).
//
// Lifetime in one paragraph. An object counts "holds": each live successor (a child, a
// QP using a CQ, a window bound to a region ...), each asynchronous request whose callback
// has not yet returned, and each event callback running for it. NdkCloseObject marks the
// object closing and starts cancelling its work; the close completes when the holds reach
// zero — at once (STATUS_SUCCESS, or the callback before returning) if there are none,
// else later on the provider thread. Only after the close callback has returned does the
// object release the holds it has on its own antecedents, so an antecedent never completes
// its close while a successor's close callback runs (R049, R050).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "ndk/ndkpi.h"

namespace softndk {

class Adapter;
class Object;

// Standard-layout block whose first member is the NDK-visible structure, so that the
// header pointer a consumer hands back converts to it (the NDK struct comes first).
struct ObjectLink {
  union {
    NDK_OBJECT_HEADER header;
    NDK_ADAPTER adapter;
    NDK_QP qp;
    NDK_CQ cq;
    NDK_MR mr;
    NDK_MW mw;
    NDK_PD pd;
    NDK_SHARED_ENDPOINT shared_endpoint;
    NDK_CONNECTOR connector;
    NDK_LISTENER listener;
    NDK_SRQ srq;
  } ndk;
  uint64_t magic;  // kLiveMagic while the object exists
  Object* object;
};

class Object {
 public:
  static constexpr uint64_t kLiveMagic = 0x4b444e74666f53ULL;  // "SoftNDK"

  // `dispatch` is the table for `type`; `adapter` is null only for the adapter itself.
  Object(NDK_OBJECT_TYPE type, Adapter* adapter, const void* dispatch);
  virtual ~Object();
  Object(const Object&) = delete;
  Object& operator=(const Object&) = delete;

  // The object behind a header, or null when the header is not a live SoftNDK object
  // of that type. `type` NdkObjectTypeUndefined accepts any type.
  static Object* from_header(const NDK_OBJECT_HEADER* header, NDK_OBJECT_TYPE type);

  NDK_OBJECT_TYPE type() const { return type_; }
  NDK_OBJECT_HEADER* header() { return &link_.ndk.header; }
  template <class NdkStruct>
  NdkStruct* ndk() {
    return reinterpret_cast<NdkStruct*>(&link_.ndk);
  }
  Adapter& adapter() const { return *adapter_; }

  // ---- lifetime ----
  void hold();
  void release();
  // Makes `antecedent` wait for this object's close (R049): holds it until then.
  void add_antecedent(Object* antecedent);
  // Ends a relationship before close (e.g. a window unbound from its region).
  void drop_antecedent(Object* antecedent);
  // NdkCloseObject. STATUS_SUCCESS (closed, no callback) or STATUS_PENDING (callback
  // follows); STATUS_INVALID_DEVICE_STATE for a second close of an object still closing.
  NTSTATUS close(NDK_FN_CLOSE_COMPLETION completion, PVOID context);
  bool close_requested() const;

 protected:
  // The adapter is its own adapter: it calls this from its constructor.
  void become_adapter(Adapter* self) { adapter_ = self; }

  // Called once when the close is requested, without locks held: cancel what is
  // pending so that the close finishes on its own (R042).
  virtual void on_close_requested() {}
  // Called once when the close completes, before the close callback runs: release what
  // the consumer may reuse as soon as it hears of the close (an address:port).
  virtual void on_closed() {}
  // Called when the last hold is gone after a close was requested. The default queues
  // the close completion to the provider thread; the adapter overrides it.
  virtual void on_drained();

  mutable std::mutex lifetime_mutex_;
  int holds_ = 0;
  std::atomic<bool> close_requested_{false};  // written under the mutex, read without
  bool close_started_ = false;  // the close completion has been claimed by someone

 private:
  static void run_close_completion(Object* object);
  static void destroy(Object* object);

  ObjectLink link_;
  NDK_OBJECT_TYPE type_;
  Adapter* adapter_;
  NDK_FN_CLOSE_COMPLETION close_completion_ = nullptr;
  PVOID close_context_ = nullptr;
  std::vector<Object*> antecedents_;
};

// Checked conversion from an NDK structure to the SoftNDK object behind it.
template <class T, class NdkStruct>
T* object_of(NdkStruct* ndk, NDK_OBJECT_TYPE type) {
  if (ndk == nullptr) return nullptr;
  return static_cast<T*>(Object::from_header(&ndk->Header, type));
}

}  // namespace softndk
