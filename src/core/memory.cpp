#include "core/memory.hpp"

#include <algorithm>
#include <cstring>
#include <thread>

#include "core/adapter.hpp"
#include "core/pd.hpp"

namespace softndk {

bool AccessGuard::holds(const std::shared_mutex* lock) const {
  for (size_t i = 0; i < count_; ++i)
    if (locks_[i] == lock) return true;
  return false;
}

void AccessGuard::add(std::shared_mutex* lock) { locks_[count_++] = lock; }

void AccessGuard::release() {
  while (count_ > 0) locks_[--count_]->unlock_shared();
}

namespace {

// Looks `token` up, pins its region (shared data lock, once per region per guard) and
// checks the access. The table's lock is held while pinning, so a region cannot be
// deregistered between being found and being pinned; the pin itself only ever *tries*
// the region's lock, so the two locks never wait for each other in opposite orders.
NTSTATUS pin(Adapter& adapter, const Pd& pd, uint32_t token, uint64_t address, size_t length,
             ULONG need, bool remote, uint8_t** data, AccessGuard& guard) {
  constexpr NTSTATUS kBusy = STATUS_PENDING;  // a (de)registration holds the region: retry
  for (;;) {
    NTSTATUS status = adapter.tokens().with_owner(token, [&](Object* owner) -> NTSTATUS {
      if (owner == nullptr || owner->type() != NdkObjectTypeMr) return STATUS_ACCESS_VIOLATION;
      auto* mr = static_cast<Mr*>(owner);
      if (&mr->pd() != &pd) return STATUS_ACCESS_VIOLATION;  // another protection domain
      if (!guard.holds(&mr->data_lock())) {
        if (!mr->data_lock().try_lock_shared()) return kBusy;
        guard.add(&mr->data_lock());
      }
      return mr->check_locked(token, address, length, need, remote, data);
    });
    if (status != kBusy) return status;
    std::this_thread::yield();
  }
}

}  // namespace

NTSTATUS resolve_local(Adapter& adapter, const Pd& pd, const NDK_SGE* sgl, ULONG count, ULONG need,
                       Extent* out, AccessGuard& guard) {
  for (ULONG i = 0; i < count; ++i) {
    const NDK_SGE& sge = sgl[i];
    out[i] = Extent{nullptr, sge.Length};
    if (sge.Length == 0) continue;
    if (sge.MemoryRegionToken == pd.privileged_token()) {
      // A logical address from a LAM of this adapter: local access without registration.
      auto address = static_cast<uintptr_t>(sge.LogicalAddress.QuadPart);
      if (!adapter.lam_covers(address, sge.Length)) return STATUS_ACCESS_VIOLATION;
      out[i].data = reinterpret_cast<uint8_t*>(address);
      continue;
    }
    NTSTATUS status = pin(adapter, pd, sge.MemoryRegionToken,
                          reinterpret_cast<uintptr_t>(sge.VirtualAddress), sge.Length, need,
                          /*remote=*/false, &out[i].data, guard);
    if (!NT_SUCCESS(status)) return status;
  }
  return STATUS_SUCCESS;
}

NTSTATUS resolve_remote(Adapter& adapter, const Pd& pd, uint32_t token, uint64_t address,
                        size_t length, ULONG need, Extent* out, AccessGuard& guard) {
  *out = Extent{nullptr, length};
  if (token == pd.privileged_token()) return STATUS_ACCESS_VIOLATION;  // never remote (R150)
  return pin(adapter, pd, token, address, length, need, /*remote=*/true, &out->data, guard);
}

size_t copy_extents(const Extent* to, ULONG nto, const Extent* from, ULONG nfrom) {
  size_t copied = 0;
  ULONG ti = 0, fi = 0;
  size_t to_off = 0, from_off = 0;
  while (ti < nto && fi < nfrom) {
    size_t n = std::min(to[ti].length - to_off, from[fi].length - from_off);
    if (n > 0) std::memcpy(to[ti].data + to_off, from[fi].data + from_off, n);
    copied += n;
    to_off += n;
    from_off += n;
    if (to_off == to[ti].length) {
      ++ti;
      to_off = 0;
    }
    if (from_off == from[fi].length) {
      ++fi;
      from_off = 0;
    }
  }
  return copied;
}

size_t total_length(const Extent* extents, ULONG count) {
  size_t total = 0;
  for (ULONG i = 0; i < count; ++i) total += extents[i].length;
  return total;
}

}  // namespace softndk
