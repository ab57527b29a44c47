#include "core/adapter.hpp"

#include <cstdio>
#include <cstdlib>
#include <new>

#include "core/dispatch.hpp"
#include "core/memory.hpp"
#include "core/tunables.hpp"
#include "ndk/mdl.h"

namespace softndk {

namespace {

// Versions SoftNDK serves: the highest minor of each supported major (NOTES.md, R002-R005).
bool negotiate(NDK_VERSION requested, NDK_VERSION* result) {
  USHORT highest_minor;
  switch (requested.Major) {
    case 1:
      highest_minor = 2;
      break;
    case 2:
      highest_minor = 1;
      break;
    default:
      return false;
  }
  if (requested.Minor > highest_minor) return false;
  *result = NDK_VERSION{requested.Major, highest_minor};
  return true;
}

ULONG tunable_ulong(const char* name) {
  uint64_t v = tunables::number(name);
  return v > MAXULONG ? MAXULONG : static_cast<ULONG>(v);
}

// What a software adapter can truthfully promise; limits come from the tunables.
NDK_ADAPTER_INFO make_info(NDK_VERSION version) {
  NDK_ADAPTER_INFO info{};
  info.Version = version;
  info.VendorId = 0;
  info.DeviceId = 0;
  info.MaxRegistrationSize = static_cast<SIZE_T>(tunables::number("max_registration_size"));
  info.MaxWindowSize = info.MaxRegistrationSize;
  info.FRMRPageCount = tunable_ulong("frmr_page_count");
  info.MaxInitiatorRequestSge = tunable_ulong("max_initiator_sge");
  info.MaxReceiveRequestSge = tunable_ulong("max_receive_sge");
  info.MaxReadRequestSge = tunable_ulong("max_read_sge");
  info.MaxTransferLength = tunable_ulong("max_transfer_length");
  info.MaxInlineDataSize = tunable_ulong("max_inline_data");
  info.MaxInboundReadLimit = tunable_ulong("max_inbound_read_limit");
  info.MaxOutboundReadLimit = tunable_ulong("max_outbound_read_limit");
  info.MaxReceiveQueueDepth = tunable_ulong("max_receive_queue_depth");
  info.MaxInitiatorQueueDepth = tunable_ulong("max_initiator_queue_depth");
  info.MaxSrqDepth = tunable_ulong("max_srq_depth");
  info.MaxCqDepth = tunable_ulong("max_cq_depth");
  info.LargeRequestThreshold = tunable_ulong("large_request_threshold");
  info.MaxCallerData = tunable_ulong("max_caller_data");
  info.MaxCalleeData = tunable_ulong("max_callee_data");
  // Software moves bytes in order and needs no special read-sink memory; CQ moderation,
  // resizing, read-with-local-invalidate and loopback connections are implemented.
  info.AdapterFlags = NDK_ADAPTER_FLAG_IN_ORDER_DMA_SUPPORTED |
                      NDK_ADAPTER_FLAG_RDMA_READ_SINK_NOT_REQUIRED |
                      NDK_ADAPTER_FLAG_CQ_INTERRUPT_MODERATION_SUPPORTED |
                      NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED |
                      NDK_ADAPTER_FLAG_CQ_RESIZE_SUPPORTED |
                      NDK_ADAPTER_FLAG_LOOPBACK_CONNECTIONS_SUPPORTED;
  // A capability withheld is not advertised, and the adapter then acts without it
  // (dispatch.cpp: moderation refused, read-with-local-invalidate ignored).
  info.AdapterFlags &= ~static_cast<ULONG>(tunables::withheld_capabilities());
  info.RdmaTechnology = NdkiWarp;
  return info;
}

}  // namespace

Adapter::Adapter(std::shared_ptr<fabric::Interface> iface, NDK_VERSION version,
                 const AdapterOptions& options)
    : Object(NdkObjectTypeAdapter, nullptr, &dispatch::kAdapter),
      iface_(std::move(iface)),
      version_(version),
      info_(make_info(version)),
      policy_(options.mode, options.seed),
      provider_thread_(std::make_unique<ProviderThread>()) {
  become_adapter(this);
  header()->Version = version;
  iface_->adapter_opened();
}

Adapter::~Adapter() {
  provider_thread_.reset();  // runs whatever is still queued, then stops
  iface_->adapter_closed();
}

NTSTATUS Adapter::open(std::shared_ptr<fabric::Interface> iface, NDK_VERSION requested,
                       const AdapterOptions& options, Adapter** adapter) {
  NDK_VERSION version;
  if (!negotiate(requested, &version)) return NDIS_STATUS_BAD_VERSION;
  try {
    *adapter = new Adapter(std::move(iface), version, options);
  } catch (const std::exception&) {
    return NDIS_STATUS_RESOURCES;  // R007 (no memory, no thread)
  }
  return NDIS_STATUS_SUCCESS;
}

void Adapter::close_blocking() {
  if (CallbackScope::active() || provider_thread_->on_this_thread()) {
    // R055: closing an adapter from a callback would wait for that very callback.
    std::fprintf(stderr,
                 "softndk: fatal: CLOSE_NDK_ADAPTER_HANDLER called from inside an NDK "
                 "callback (forbidden by the lifetime rules, R055)\n");
    std::abort();
  }
  std::unique_lock lock(lifetime_mutex_);
  close_requested_ = true;
  drained_.wait(lock, [this] { return holds_ == 0; });
  lock.unlock();
  delete this;
}

void Adapter::on_drained() {
  // Called by release() when the last child has closed; close_blocking() waits on it.
  std::lock_guard lock(lifetime_mutex_);
  drained_.notify_all();
}

NTSTATUS Adapter::complete_create(Object* parent, NDK_FN_CREATE_COMPLETION completion,
                                  PVOID context, NTSTATUS status, Object* created, PVOID* out) {
  Delivery delivery = policy_.next();
  if (delivery == Delivery::kInline) {
    if (NT_SUCCESS(status)) *out = created->header();
    return status;
  }
  // Asynchronous: *out is never written (R017); the parent stays held until the
  // callback has returned (R040).
  Task task;
  task.run = [](const Task& t) {
    auto* parent_object = static_cast<Object*>(t.object);
    auto* new_object = static_cast<Object*>(t.other);
    {
      CallbackScope scope;
      reinterpret_cast<NDK_FN_CREATE_COMPLETION>(t.callback)(
          t.context, t.status, new_object != nullptr ? new_object->header() : nullptr);
    }
    parent_object->release();
  };
  task.object = parent;
  task.other = NT_SUCCESS(status) ? created : nullptr;
  task.callback = reinterpret_cast<AnyCallback>(completion);
  task.context = context;
  task.status = status;
  parent->hold();
  if (delivery == Delivery::kCallerThread)
    task.run(task);
  else
    provider_thread_->post(task);
  return STATUS_PENDING;
}

NTSTATUS Adapter::complete_request(Object* target, NDK_FN_REQUEST_COMPLETION completion,
                                   PVOID context, NTSTATUS status) {
  Delivery delivery = completion == nullptr ? Delivery::kInline : policy_.next();
  if (delivery == Delivery::kInline) return status;
  Task task;
  task.run = [](const Task& t) {
    {
      CallbackScope scope;
      reinterpret_cast<NDK_FN_REQUEST_COMPLETION>(t.callback)(t.context, t.status);
    }
    static_cast<Object*>(t.object)->release();
  };
  task.object = target;
  task.callback = reinterpret_cast<AnyCallback>(completion);
  task.context = context;
  task.status = status;
  target->hold();
  if (delivery == Delivery::kCallerThread)
    task.run(task);
  else
    provider_thread_->post(task);
  return STATUS_PENDING;
}

void Adapter::begin_pending(Object* target, PendingRequest& request,
                            NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  target->hold();
  request = PendingRequest{completion, context, true};
}

void Adapter::finish_pending(Object* target, PendingRequest& request, NTSTATUS status) {
  if (!request.active) return;
  request.active = false;
  Task task;
  task.run = [](const Task& t) {
    {
      CallbackScope scope;
      reinterpret_cast<NDK_FN_REQUEST_COMPLETION>(t.callback)(t.context, t.status);
    }
    static_cast<Object*>(t.object)->release();  // the hold begin_pending took
  };
  task.object = target;
  task.callback = reinterpret_cast<AnyCallback>(request.completion);
  task.context = request.context;
  task.status = status;
  provider_thread_->post(task);
}

void Adapter::post_event(Object* target, void (*run)(const Task&), const Task& event) {
  // The wrapper holds the target while the consumer's callback runs, so its close
  // cannot complete meanwhile (R041, R045).
  Task task = event;
  task.object = target;
  task.inner = run;
  task.run = [](const Task& t) {
    {
      CallbackScope scope;
      t.inner(t);
    }
    static_cast<Object*>(t.object)->release();
  };
  target->hold();
  provider_thread_->post(task);
}

void Adapter::inject_fault(SOFTNDK_FAULT_POINT point, NTSTATUS status, ULONG count) {
  std::lock_guard lock(fault_mutex_);
  faults_[point] = Fault{status, count};
  any_fault_.store(true, std::memory_order_release);
}

NTSTATUS Adapter::take_fault(SOFTNDK_FAULT_POINT point) {
  if (!any_fault_.load(std::memory_order_acquire)) return STATUS_SUCCESS;  // the usual case
  std::lock_guard lock(fault_mutex_);
  Fault& fault = faults_[point];
  if (fault.count == 0) return STATUS_SUCCESS;
  --fault.count;
  return fault.status;
}

NTSTATUS Adapter::query_info(NDK_ADAPTER_INFO* info, ULONG* size) const {
  if (size == nullptr) return STATUS_INVALID_PARAMETER;
  if (info == nullptr || *size < sizeof(NDK_ADAPTER_INFO)) {
    *size = sizeof(NDK_ADAPTER_INFO);
    return STATUS_BUFFER_TOO_SMALL;
  }
  *info = info_;
  *size = sizeof(NDK_ADAPTER_INFO);
  return STATUS_SUCCESS;
}

NTSTATUS Adapter::build_lam(MDL* mdl, SIZE_T length, NDK_FN_REQUEST_COMPLETION completion,
                            PVOID context, NDK_LOGICAL_ADDRESS_MAPPING* lam, ULONG* lam_size,
                            ULONG* fbo) {
  if (mdl == nullptr || lam_size == nullptr || fbo == nullptr || length == 0)
    return STATUS_INVALID_PARAMETER;
  // The chain must be virtually contiguous over `length` (R151); its pages are read from
  // its PFN arrays during this call (R131, R132).
  ChainPages described;
  NTSTATUS status = describe_chain(mdl, length, described);
  if (status == STATUS_INSUFFICIENT_RESOURCES) return complete_request(this, completion, context, status);
  if (!NT_SUCCESS(status)) return status;
  SIZE_T pages = described.pages.size();
  SIZE_T needed = offsetof(NDK_LOGICAL_ADDRESS_MAPPING, AdapterPageArray) +
                  pages * sizeof(NDK_LOGICAL_ADDRESS);
  if (pages > MAXULONG || needed > MAXULONG) return STATUS_INVALID_PARAMETER;
  if (lam == nullptr || *lam_size < needed) {
    *lam_size = static_cast<ULONG>(needed);
    return STATUS_BUFFER_TOO_SMALL;  // R152
  }
  status = take_fault(SOFTNDK_FAULT_REQUEST);
  if (NT_SUCCESS(status)) {
    // In user space the logical address of a page is the address of the memory behind it.
    std::unique_ptr<LamRecord> record;
    try {
      record = std::make_unique<LamRecord>(LamRecord{lam, std::move(described.pages)});
    } catch (const std::bad_alloc&) {
      status = STATUS_INSUFFICIENT_RESOURCES;  // nothing mapped yet (R153)
    }
    if (record) {
      lam->AdapterContext = record.get();  // provider-private (R156)
      lam->AdapterPageCount = static_cast<ULONG>(pages);
      for (SIZE_T i = 0; i < pages; ++i)
        lam->AdapterPageArray[i].QuadPart = static_cast<LONGLONG>(record->pages[i]);
      *lam_size = static_cast<ULONG>(needed);
      *fbo = described.first_byte_offset;
      std::lock_guard lock(lam_mutex_);
      for (uintptr_t page : record->pages) ++lam_pages_[page];
      const LamRecord* key = record.get();
      lams_.emplace(key, std::move(record));
    }
  }
  return complete_request(this, completion, context, status);
}

void Adapter::release_lam(NDK_LOGICAL_ADDRESS_MAPPING* lam) {
  if (lam == nullptr) return;
  std::lock_guard lock(lam_mutex_);
  // AdapterContext names this adapter's record of the LAM; the consumer never changes it
  // (R156). Whatever does not match that record exactly is refused and left mapped: a
  // release must never unmap pages some other LAM handed out.
  auto it = lams_.find(static_cast<const LamRecord*>(lam->AdapterContext));
  bool intact = it != lams_.end() && it->second->lam == lam &&
                lam->AdapterPageCount == it->second->pages.size();
  for (ULONG i = 0; intact && i < lam->AdapterPageCount; ++i)
    intact = static_cast<uintptr_t>(lam->AdapterPageArray[i].QuadPart) == it->second->pages[i];
  if (!intact) {
    std::fprintf(stderr,
                 "softndk: NdkReleaseLam(%p): not a live LAM of this adapter, or its "
                 "AdapterContext or pages were modified (R156); nothing released\n",
                 static_cast<void*>(lam));
    return;
  }
  for (uintptr_t page : it->second->pages) {
    auto counted = lam_pages_.find(page);
    if (--counted->second == 0) lam_pages_.erase(counted);
  }
  lams_.erase(it);  // the MDL is left exactly as it was given (R155)
}

bool Adapter::lam_covers(uintptr_t address, size_t length) const {
  const uintptr_t first = address & ~uintptr_t{PAGE_SIZE - 1};
  if (length > 0 && address + (length - 1) < address) return false;  // wraps
  const uintptr_t last = length == 0 ? first : (address + length - 1) & ~uintptr_t{PAGE_SIZE - 1};
  std::lock_guard lock(lam_mutex_);
  for (uintptr_t page = first;; page += PAGE_SIZE) {
    if (lam_pages_.find(page) == lam_pages_.end()) return false;
    if (page == last) return true;
  }
}

ULONG Adapter::live_lams() const {
  std::lock_guard lock(lam_mutex_);
  return static_cast<ULONG>(lams_.size());
}

}  // namespace softndk
