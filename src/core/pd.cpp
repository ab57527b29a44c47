#include "core/pd.hpp"

#include <algorithm>

#include "core/adapter.hpp"
#include "core/dispatch.hpp"
#include "ndk/mdl.h"

namespace softndk {

namespace {
constexpr ULONG kKnownMrFlags = NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ |
                                NDK_MR_FLAG_ALLOW_REMOTE_WRITE | NDK_MR_FLAG_RDMA_READ_SINK;
}  // namespace

bool Mapping::map(uint64_t address, size_t size, ExtentList& out) const {
  if (size == 0) return true;
  uint64_t offset = address - base;
  if (data != nullptr) return out.add(data + offset, size);
  // Fast-registered: the region starts first_byte_offset bytes into the first page.
  uint64_t position = first_byte_offset + offset;
  while (size > 0) {
    uint64_t page = position / PAGE_SIZE;
    uint64_t within = position % PAGE_SIZE;
    size_t piece = std::min<size_t>(size, PAGE_SIZE - within);
    if (!out.add(reinterpret_cast<uint8_t*>(pages[page]) + within, piece)) return false;
    position += piece;
    size -= piece;
  }
  return true;
}

// ----------------------------------------------------------------------------- PD --

Pd::Pd(Adapter& adapter)
    : Object(NdkObjectTypePd, &adapter, &dispatch::kPd),
      privileged_token_(adapter.tokens().allocate(this)) {}

Pd::~Pd() { adapter().tokens().free(privileged_token_); }

// ----------------------------------------------------------------------------- MR --

Mr::Mr(Pd& pd, bool fast_register)
    : Object(NdkObjectTypeMr, &pd.adapter(), &dispatch::kMr), pd_(pd), fast_register_(fast_register) {}

Mr::~Mr() { replace_tokens(false); }

void Mr::replace_tokens(bool allocate) {
  UINT32 old_local = local_token_.load();
  UINT32 old_remote = remote_token_.load();
  adapter().tokens().free(old_local);
  adapter().tokens().free(old_remote);
  UINT32 local = allocate ? adapter().tokens().allocate(this) : 0;
  UINT32 remote = allocate ? adapter().tokens().allocate(this) : 0;
  std::unique_lock lock(data_lock_);  // waits for copies still using the old tokens
  local_token_ = local;
  remote_token_ = remote;
}

NTSTATUS Mr::map_locked(uint32_t token, uint64_t address, size_t length, ULONG need, bool remote,
                        ExtentList& out) const {
  // A local token grants local access only, a remote token remote access only.
  if (token == 0 || token != (remote ? remote_token_ : local_token_) || !mapping_.valid())
    return STATUS_ACCESS_VIOLATION;
  if ((mapping_.rights & need) != need) return STATUS_ACCESS_VIOLATION;
  if (!mapping_.contains(address, length))
    return remote ? STATUS_REMOTE_RESOURCES : STATUS_ACCESS_VIOLATION;
  return mapping_.map(address, length, out) ? STATUS_SUCCESS : STATUS_INSUFFICIENT_RESOURCES;
}

NTSTATUS Mr::register_mdl(MDL* mdl, SIZE_T length, ULONG flags) {
  if (mdl == nullptr || length == 0 || (flags & ~kKnownMrFlags) != 0)
    return STATUS_INVALID_PARAMETER;
  if (fast_register_) return STATUS_INVALID_DEVICE_REQUEST;  // R035: wrong kind of MR
  if (length > adapter().info().MaxRegistrationSize) return STATUS_INVALID_PARAMETER;
  // The first `length` bytes of the chain must be virtually contiguous (R130). What the
  // region reaches is read from the chain's page frames now, during the call: the chain
  // may change as soon as the call returns (R132), and its virtual address is only the
  // base that addresses are counted from (R131).
  ChainPages described;
  NTSTATUS status = describe_chain(mdl, length, described);
  if (!NT_SUCCESS(status)) return status;
  const bool adjacent = described.adjacent();
  {
    std::unique_lock lock(data_lock_);
    if (registered_) return STATUS_INVALID_DEVICE_STATE;
    registered_ = true;
    mapping_ = Mapping{};
    mapping_.base = described.base;
    mapping_.length = length;
    mapping_.rights = flags & ~NDK_MR_FLAG_RDMA_READ_SINK;
    if (adjacent) {
      // One run of memory: reached through one pointer (the data path's fast case).
      mapping_.data = reinterpret_cast<uint8_t*>(described.pages[0] + described.first_byte_offset);
    } else {
      pages_ = std::move(described.pages);
      mapping_.pages = pages_.data();
      mapping_.first_byte_offset = described.first_byte_offset;
    }
  }
  replace_tokens(true);  // published last: nobody can name the region before it is complete
  return STATUS_SUCCESS;
}

NTSTATUS Mr::deregister() {
  if (windows_.load() > 0) return STATUS_INVALID_DEVICE_STATE;  // windows still bound
  {
    std::unique_lock lock(data_lock_);
    if (!registered_) return STATUS_INVALID_DEVICE_STATE;
    registered_ = false;
  }
  replace_tokens(false);  // the old tokens no longer grant access (R136)
  std::unique_lock lock(data_lock_);
  mapping_ = Mapping{};
  pages_.clear();
  return STATUS_SUCCESS;
}

NTSTATUS Mr::initialize_fast_register(ULONG page_count, bool remote_access) {
  if (!fast_register_) return STATUS_INVALID_DEVICE_REQUEST;  // R035
  if (page_count == 0) return STATUS_INVALID_PARAMETER;
  if (page_count > adapter().info().FRMRPageCount) return STATUS_IMPLEMENTATION_LIMIT;  // R139
  {
    std::unique_lock lock(data_lock_);
    if (mapping_.valid()) return STATUS_INVALID_DEVICE_STATE;  // registered right now
    // May be called again (R071): the newest capacity and access mode apply.
    initialized_ = true;
    remote_access_ = remote_access;
    pages_.assign(page_count, 0);  // so that NdkFastRegister allocates nothing
  }
  // Tokens exist from here on (R138); each fast registration replaces them (R144).
  if (local_token() == 0) replace_tokens(true);
  return STATUS_SUCCESS;
}

NTSTATUS Mr::fast_register(ULONG page_count, const NDK_LOGICAL_ADDRESS* pages, ULONG fbo,
                           SIZE_T length, uint64_t base, ULONG rights) {
  if (!fast_register_) return STATUS_INVALID_DEVICE_REQUEST;  // R035
  {
    std::unique_lock lock(data_lock_);
    if (!initialized_ || mapping_.valid()) return STATUS_INVALID_DEVICE_STATE;
    if (page_count > pages_.size()) return STATUS_INVALID_PARAMETER;  // beyond the initialization
    // Remote rights need an MR initialized for remote access (R140).
    if ((rights & (NDK_MR_FLAG_ALLOW_REMOTE_READ | kNeedRemoteWrite)) && !remote_access_)
      return STATUS_ACCESS_VIOLATION;
    for (ULONG i = 0; i < page_count; ++i) {
      auto page = static_cast<uintptr_t>(pages[i].QuadPart);
      // Each entry is a page-aligned logical address from a LAM of this adapter (R141, R154).
      if (page % PAGE_SIZE != 0 || !adapter().lam_covers(page, PAGE_SIZE)) return STATUS_ACCESS_VIOLATION;
      pages_[i] = page;
    }
    mapping_ = Mapping{};
    mapping_.base = base;
    mapping_.length = length;
    mapping_.rights = rights;
    mapping_.pages = pages_.data();
    mapping_.first_byte_offset = fbo;
  }
  replace_tokens(true);  // a new token per registration (R144)
  return STATUS_SUCCESS;
}

NTSTATUS Mr::invalidate() {
  if (!fast_register_) return STATUS_INVALID_DEVICE_REQUEST;  // never a registered MR (R137)
  // The tokens stay allocated but grant nothing until the next fast registration.
  std::unique_lock lock(data_lock_);
  if (!mapping_.valid()) return STATUS_INVALID_DEVICE_STATE;  // already invalid (R145)
  mapping_ = Mapping{};
  return STATUS_SUCCESS;
}

UINT32 Mr::local_token() const { return local_token_.load(std::memory_order_acquire); }

UINT32 Mr::remote_token() const { return remote_token_.load(std::memory_order_acquire); }

// ----------------------------------------------------------------------------- MW --

Mw::Mw(Pd& pd)
    : Object(NdkObjectTypeMw, &pd.adapter(), &dispatch::kMw),
      pd_(pd),
      token_(pd.adapter().tokens().allocate(this)) {}

Mw::~Mw() { adapter().tokens().free(token_); }

void Mw::bind(Mr& region, uint64_t address, size_t length, ULONG rights) {
  if (std::find(antecedents_.begin(), antecedents_.end(), &region) == antecedents_.end()) {
    add_antecedent(&region);
    antecedents_.push_back(&region);
  }
  UINT32 fresh = adapter().tokens().allocate(this);
  UINT32 old;
  region.window_bound();
  {
    std::unique_lock lock(data_lock_);
    unbind_locked();
    region_ = &region;
    base_ = address;
    length_ = length;
    rights_ = rights;
    old = token_.exchange(fresh);  // usable as soon as NdkBind returns (R148)
  }
  adapter().tokens().free(old);
}

void Mw::unbind_locked() {
  if (region_ != nullptr) region_->window_unbound();
  region_ = nullptr;
}

NTSTATUS Mw::invalidate() {
  std::unique_lock lock(data_lock_);
  if (region_ == nullptr) return STATUS_INVALID_DEVICE_STATE;  // not bound (R145)
  unbind_locked();
  return STATUS_SUCCESS;
}

void Mw::on_closed() {
  std::unique_lock lock(data_lock_);
  unbind_locked();
}

UINT32 Mw::remote_token() const { return token_.load(std::memory_order_acquire); }

NTSTATUS Mw::check_locked(uint32_t token, uint64_t address, size_t length, ULONG need,
                          Mr** region) const {
  if (region_ == nullptr || token != token_) return STATUS_ACCESS_VIOLATION;
  if ((rights_ & need) != need) return STATUS_ACCESS_VIOLATION;
  if (address < base_ || length > length_ || address - base_ > length_ - length)
    return STATUS_REMOTE_RESOURCES;  // past the window's end
  *region = region_;
  return STATUS_SUCCESS;
}

}  // namespace softndk
