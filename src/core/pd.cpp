#include "core/pd.hpp"

#include "core/adapter.hpp"
#include "core/dispatch.hpp"
#include "ndk/mdl.h"

namespace softndk {

namespace {
constexpr ULONG kKnownMrFlags = NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ |
                                NDK_MR_FLAG_ALLOW_REMOTE_WRITE | NDK_MR_FLAG_RDMA_READ_SINK;
}  // namespace

Pd::Pd(Adapter& adapter)
    : Object(NdkObjectTypePd, &adapter, &dispatch::kPd),
      privileged_token_(adapter.tokens().allocate(this)) {}

Pd::~Pd() { adapter().tokens().free(privileged_token_); }

Mr::Mr(Pd& pd, bool fast_register)
    : Object(NdkObjectTypeMr, &pd.adapter(), &dispatch::kMr), fast_register_(fast_register) {}

Mr::~Mr() {
  std::lock_guard lock(mutex_);
  drop_tokens_locked();
}

void Mr::drop_tokens_locked() {
  adapter().tokens().free(local_token_);
  adapter().tokens().free(remote_token_);
  local_token_ = remote_token_ = 0;
}

NTSTATUS Mr::register_mdl(MDL* mdl, SIZE_T length, ULONG flags) {
  if (mdl == nullptr || length == 0 || (flags & ~kKnownMrFlags) != 0)
    return STATUS_INVALID_PARAMETER;
  if (fast_register_) return STATUS_INVALID_DEVICE_REQUEST;  // R035: wrong kind of MR
  if (length > adapter().info().MaxRegistrationSize) return STATUS_INVALID_PARAMETER;
  // The first `length` bytes of the chain must be virtually contiguous (R130).
  auto start = reinterpret_cast<uintptr_t>(MmGetMdlVirtualAddress(mdl));
  SIZE_T covered = 0;
  for (MDL* m = mdl; m != nullptr && covered < length; m = m->Next) {
    if (reinterpret_cast<uintptr_t>(MmGetMdlVirtualAddress(m)) != start + covered)
      return STATUS_INVALID_PARAMETER;
    covered += MmGetMdlByteCount(m);
  }
  if (covered < length) return STATUS_INVALID_PARAMETER;

  std::lock_guard lock(mutex_);
  if (registered_) return STATUS_INVALID_DEVICE_STATE;
  registered_ = true;
  base_ = start;
  length_ = length;
  flags_ = flags;
  local_token_ = adapter().tokens().allocate(this);
  remote_token_ = adapter().tokens().allocate(this);
  return STATUS_SUCCESS;
}

NTSTATUS Mr::deregister() {
  std::lock_guard lock(mutex_);
  if (!registered_) return STATUS_INVALID_DEVICE_STATE;
  registered_ = false;
  drop_tokens_locked();  // the old tokens no longer grant access (R136)
  return STATUS_SUCCESS;
}

NTSTATUS Mr::initialize_fast_register(ULONG page_count, bool remote_access) {
  if (!fast_register_) return STATUS_INVALID_DEVICE_REQUEST;  // R035
  if (page_count == 0) return STATUS_INVALID_PARAMETER;
  if (page_count > adapter().info().FRMRPageCount) return STATUS_IMPLEMENTATION_LIMIT;  // R139
  std::lock_guard lock(mutex_);
  // May be called again (R071): the newest capacity and access mode apply.
  initialized_ = true;
  page_capacity_ = page_count;
  remote_access_ = remote_access;
  if (local_token_ == 0) {
    local_token_ = adapter().tokens().allocate(this);
    remote_token_ = adapter().tokens().allocate(this);
  }
  return STATUS_SUCCESS;
}

UINT32 Mr::local_token() const {
  std::lock_guard lock(mutex_);
  return local_token_;
}

UINT32 Mr::remote_token() const {
  std::lock_guard lock(mutex_);
  return remote_token_;
}

Mw::Mw(Pd& pd)
    : Object(NdkObjectTypeMw, &pd.adapter(), &dispatch::kMw),
      token_(pd.adapter().tokens().allocate(this)) {}

Mw::~Mw() { adapter().tokens().free(token_); }

}  // namespace softndk
