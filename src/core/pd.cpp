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
    : Object(NdkObjectTypeMr, &pd.adapter(), &dispatch::kMr), pd_(pd), fast_register_(fast_register) {}

Mr::~Mr() { drop_tokens(); }

// Tokens leave the table before the registration changes, and never under data_lock_:
// the data path takes the table's lock first, then data_lock_ (one order only).
void Mr::drop_tokens() {
  UINT32 local, remote;
  {
    std::shared_lock lock(data_lock_);
    local = local_token_;
    remote = remote_token_;
  }
  adapter().tokens().free(local);
  adapter().tokens().free(remote);
  std::unique_lock lock(data_lock_);  // waits for copies still using the region
  local_token_ = remote_token_ = 0;
}

NTSTATUS Mr::check_locked(uint32_t token, uint64_t address, size_t length, ULONG need,
                          bool remote, uint8_t** data) const {
  // A local token grants local access only, a remote token remote access only.
  if (token == 0 || token != (remote ? remote_token_ : local_token_) || data_ == nullptr)
    return STATUS_ACCESS_VIOLATION;
  if ((flags_ & need) != need) return STATUS_ACCESS_VIOLATION;
  // The registered base is an index (R131): offsets are taken from it.
  if (address < base_ || length > length_ || address - base_ > length_ - length)
    return remote ? STATUS_REMOTE_RESOURCES : STATUS_ACCESS_VIOLATION;
  *data = data_ + (address - base_);
  return STATUS_SUCCESS;
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

  {
    std::unique_lock lock(data_lock_);
    if (registered_) return STATUS_INVALID_DEVICE_STATE;
    registered_ = true;
    base_ = start;
    length_ = length;
    flags_ = flags;
    data_ = static_cast<uint8_t*>(MmGetMdlVirtualAddress(mdl));
  }
  // Published last: nobody can name the region before it is complete.
  UINT32 local = adapter().tokens().allocate(this);
  UINT32 remote = adapter().tokens().allocate(this);
  std::unique_lock lock(data_lock_);
  local_token_ = local;
  remote_token_ = remote;
  return STATUS_SUCCESS;
}

NTSTATUS Mr::deregister() {
  {
    std::unique_lock lock(data_lock_);
    if (!registered_) return STATUS_INVALID_DEVICE_STATE;
    registered_ = false;
  }
  drop_tokens();  // the old tokens no longer grant access (R136)
  std::unique_lock lock(data_lock_);
  data_ = nullptr;
  base_ = 0;
  length_ = 0;
  flags_ = 0;
  return STATUS_SUCCESS;
}

NTSTATUS Mr::initialize_fast_register(ULONG page_count, bool remote_access) {
  if (!fast_register_) return STATUS_INVALID_DEVICE_REQUEST;  // R035
  if (page_count == 0) return STATUS_INVALID_PARAMETER;
  if (page_count > adapter().info().FRMRPageCount) return STATUS_IMPLEMENTATION_LIMIT;  // R139
  bool first;
  {
    // May be called again (R071): the newest capacity and access mode apply.
    std::unique_lock lock(data_lock_);
    initialized_ = true;
    page_capacity_ = page_count;
    remote_access_ = remote_access;
    first = local_token_ == 0;
  }
  if (first) {
    UINT32 local = adapter().tokens().allocate(this);
    UINT32 remote = adapter().tokens().allocate(this);
    std::unique_lock lock(data_lock_);
    if (local_token_ == 0) {
      local_token_ = local;
      remote_token_ = remote;
      local = remote = 0;
    }
    lock.unlock();
    adapter().tokens().free(local);  // a concurrent initialization won the race
    adapter().tokens().free(remote);
  }
  return STATUS_SUCCESS;
}

UINT32 Mr::local_token() const {
  std::shared_lock lock(data_lock_);
  return local_token_;
}

UINT32 Mr::remote_token() const {
  std::shared_lock lock(data_lock_);
  return remote_token_;
}

Mw::Mw(Pd& pd)
    : Object(NdkObjectTypeMw, &pd.adapter(), &dispatch::kMw),
      token_(pd.adapter().tokens().allocate(this)) {}

Mw::~Mw() { adapter().tokens().free(token_); }

}  // namespace softndk
