// NDK_ADAPTER: one open instance on a fabric interface. It owns what its objects share:
// the negotiated version and limits, the delivery policy and provider thread that
// complete asynchronous calls, the token table and the logical address mappings.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/completion.hpp"
#include "core/object.hpp"
#include "core/tokens.hpp"
#include "fabric/fabric.hpp"

namespace softndk {

struct AdapterOptions {
  SOFTNDK_COMPLETION_MODE mode = SOFTNDK_COMPLETION_INLINE;
  uint64_t seed = 1;
};

class Adapter final : public Object {
 public:
  // OPEN_NDK_ADAPTER_HANDLER: NDIS_STATUS_SUCCESS, NDIS_STATUS_BAD_VERSION (R001, R004).
  static NTSTATUS open(std::shared_ptr<fabric::Interface> iface, NDK_VERSION requested,
                       const AdapterOptions& options, Adapter** adapter);
  // CLOSE_NDK_ADAPTER_HANDLER: blocks until every child is closed and every callback
  // has returned (R052-R054).
  void close_blocking();

  static Adapter* from(NDK_ADAPTER* ndk) { return object_of<Adapter>(ndk, NdkObjectTypeAdapter); }

  NDK_VERSION version() const { return version_; }
  const NDK_ADAPTER_INFO& info() const { return info_; }
  fabric::Interface& iface() const { return *iface_; }
  TokenTable& tokens() { return tokens_; }
  ProviderThread& provider_thread() { return *provider_thread_; }
  DeliveryPolicy& policy() { return policy_; }

  // ---- delivering completions (the asynchronous contract) ----
  // Completes a create whose outcome is known: `created` (status success) or a failure.
  // Inline: stores the object in *out and returns the status. Otherwise STATUS_PENDING
  // and exactly one CreateCompletion, *out untouched (R014-R019). `parent` is held until
  // the callback has returned (R040).
  NTSTATUS complete_create(Object* parent, NDK_FN_CREATE_COMPLETION completion, PVOID context,
                           NTSTATUS status, Object* created, PVOID* out);
  // Same for a request that takes a RequestCompletion; `target` is held until the callback
  // has returned. With a null `completion` the status is returned inline.
  NTSTATUS complete_request(Object* target, NDK_FN_REQUEST_COMPLETION completion, PVOID context,
                            NTSTATUS status);
  // A request that completes on a later event (a peer's answer), not within the call.
  struct PendingRequest {
    NDK_FN_REQUEST_COMPLETION completion = nullptr;
    PVOID context = nullptr;
    bool active = false;
  };
  // Records the request and holds `target` until its callback has returned (R040).
  void begin_pending(Object* target, PendingRequest& request, NDK_FN_REQUEST_COMPLETION completion,
                     PVOID context);
  // Completes it (once) from the provider thread.
  void finish_pending(Object* target, PendingRequest& request, NTSTATUS status);

  // Runs an event callback (CQ/SRQ notification, connect or disconnect event) for
  // `target` on the provider thread, holding `target` while it runs (R041).
  void post_event(Object* target, void (*run)(const Task&), const Task& task);

  // ---- fault injection ----
  void inject_fault(SOFTNDK_FAULT_POINT point, NTSTATUS status, ULONG count);
  // STATUS_SUCCESS, or the injected failure for this operation.
  NTSTATUS take_fault(SOFTNDK_FAULT_POINT point);

  // ---- logical address mappings (children of the adapter) ----
  // The pages come from the MDL chain's PFN arrays, copied before the call returns (R131,
  // R132); the LAM's AdapterContext names the record this adapter keeps of it (R156).
  NTSTATUS build_lam(MDL* mdl, SIZE_T length, NDK_FN_REQUEST_COMPLETION completion, PVOID context,
                     NDK_LOGICAL_ADDRESS_MAPPING* lam, ULONG* lam_size, ULONG* fbo);
  // Releases a LAM this adapter built. A LAM it does not know (never built, released
  // already, built by another adapter) or whose AdapterContext, AdapterPageCount or pages
  // were changed is left alone and reported on stderr (R156): the mapping stays live.
  void release_lam(NDK_LOGICAL_ADDRESS_MAPPING* lam);
  // Whether every page [address, address+length) touches is a page of a live LAM of this
  // adapter.
  bool lam_covers(uintptr_t address, size_t length) const;
  ULONG live_lams() const;

  // ---- live objects, for the diagnostics extension ----
  void object_created(NDK_OBJECT_TYPE type) { live_[type].fetch_add(1, std::memory_order_relaxed); }
  void object_destroyed(NDK_OBJECT_TYPE type) { live_[type].fetch_sub(1, std::memory_order_relaxed); }
  ULONG live_objects(NDK_OBJECT_TYPE type) const { return live_[type].load(std::memory_order_relaxed); }

  NTSTATUS query_info(NDK_ADAPTER_INFO* info, ULONG* size) const;

 private:
  Adapter(std::shared_ptr<fabric::Interface> iface, NDK_VERSION version,
          const AdapterOptions& options);
  ~Adapter() override;
  void on_drained() override;

  std::shared_ptr<fabric::Interface> iface_;
  NDK_VERSION version_;
  NDK_ADAPTER_INFO info_{};
  DeliveryPolicy policy_;
  std::unique_ptr<ProviderThread> provider_thread_;
  TokenTable tokens_;
  std::condition_variable drained_;

  std::mutex fault_mutex_;
  struct Fault {
    NTSTATUS status = STATUS_SUCCESS;
    ULONG count = 0;
  } faults_[SOFTNDK_FAULT_CONNECT + 1];
  std::atomic<bool> any_fault_{false};

  // One built LAM: the pages it handed out, as this adapter recorded them.
  struct LamRecord {
    const NDK_LOGICAL_ADDRESS_MAPPING* lam;
    std::vector<uintptr_t> pages;
  };
  mutable std::mutex lam_mutex_;
  // Keyed by the record itself: LAM.AdapterContext holds its address (R156).
  std::unordered_map<const LamRecord*, std::unique_ptr<LamRecord>> lams_;
  std::map<uintptr_t, ULONG> lam_pages_;  // page -> how many live LAMs map it

  std::atomic<ULONG> live_[NdkObjectTypeMax] = {};
};

}  // namespace softndk
