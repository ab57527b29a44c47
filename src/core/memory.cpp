#include "core/memory.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <thread>

#include "core/adapter.hpp"
#include "core/pd.hpp"
#include "ndk/mdl.h"

namespace softndk {

bool ExtentList::add(uint8_t* data, size_t length) {
  if (length == 0) return true;
  total_ += length;
  if (count_ > 0 && items_[count_ - 1].data + items_[count_ - 1].length == data) {
    items_[count_ - 1].length += length;  // adjacent: one piece
    return true;
  }
  if (count_ == kMaxExtents) return false;
  items_[count_++] = Extent{data, length};
  return true;
}

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

constexpr NTSTATUS kBusy = STATUS_PENDING;  // a lock is held exclusively: retry

// Pins `lock` shared for the guard's lifetime. Only ever tries: the token table's lock is
// held while pinning, and a waiting pin could otherwise deadlock against a writer.
bool try_pin(std::shared_mutex& lock, AccessGuard& guard) {
  if (guard.holds(&lock)) return true;
  if (!lock.try_lock_shared()) return false;  // capacity: at most kMaxSge + 2 distinct locks
  guard.add(&lock);
  return true;
}

// Looks `token` up and appends the memory it names. The table's lock is held across the
// pinning, so a region cannot lose its registration between being found and being pinned.
NTSTATUS pin(Adapter& adapter, const Pd& pd, uint32_t token, uint64_t address, size_t length,
             ULONG need, bool remote, ExtentList& out, AccessGuard& guard) {
  NTSTATUS status = adapter.tokens().with_owner(token, [&](Object* owner) -> NTSTATUS {
      if (owner == nullptr) return STATUS_ACCESS_VIOLATION;
      if (owner->type() == NdkObjectTypeMr) {
        auto* mr = static_cast<Mr*>(owner);
        if (&mr->pd() != &pd) return STATUS_ACCESS_VIOLATION;  // another protection domain
        if (!try_pin(mr->data_lock(), guard)) return kBusy;
        return mr->map_locked(token, address, length, need, remote, out);
      }
      if (owner->type() == NdkObjectTypeMw && remote) {  // windows grant remote access only
        auto* mw = static_cast<Mw*>(owner);
        if (&mw->pd() != &pd) return STATUS_ACCESS_VIOLATION;
        if (!try_pin(mw->data_lock(), guard)) return kBusy;
        Mr* region;
        NTSTATUS checked = mw->check_locked(token, address, length, need, &region);
        if (!NT_SUCCESS(checked)) return checked;
        if (!try_pin(region->data_lock(), guard)) return kBusy;
        const Mapping& mapping = region->mapping_locked();
        if (!mapping.valid() || !mapping.contains(address, length)) return STATUS_ACCESS_VIOLATION;
        return mapping.map(address, length, out) ? STATUS_SUCCESS : STATUS_INSUFFICIENT_RESOURCES;
      }
      return STATUS_ACCESS_VIOLATION;
  });
  if (status == kBusy) {
    guard.release();  // let the writer finish; the caller pins everything again
    out.clear();
  }
  return status;
}

}  // namespace

NTSTATUS resolve_local(Adapter& adapter, const Pd& pd, const NDK_SGE* sgl, ULONG count, ULONG need,
                       ExtentList& out, AccessGuard& guard) {
  for (;;) {
    NTSTATUS status = STATUS_SUCCESS;
    for (ULONG i = 0; i < count && NT_SUCCESS(status); ++i) {
      const NDK_SGE& sge = sgl[i];
      if (sge.Length == 0) continue;
      if (sge.MemoryRegionToken == pd.privileged_token()) {
        // A logical address from a LAM of this adapter: local access without registration.
        auto address = static_cast<uintptr_t>(sge.LogicalAddress.QuadPart);
        if (!adapter.lam_covers(address, sge.Length)) return STATUS_ACCESS_VIOLATION;
        if (!out.add(reinterpret_cast<uint8_t*>(address), sge.Length)) return STATUS_INSUFFICIENT_RESOURCES;
        continue;
      }
      status = pin(adapter, pd, sge.MemoryRegionToken, reinterpret_cast<uintptr_t>(sge.VirtualAddress),
                   sge.Length, need, /*remote=*/false, out, guard);
    }
    if (status != kBusy) return status;
    std::this_thread::yield();  // a registration was changing: start over
  }
}

NTSTATUS resolve_remote(Adapter& adapter, const Pd& pd, uint32_t token, uint64_t address,
                        size_t length, ULONG need, ExtentList& out, AccessGuard& guard) {
  if (token == pd.privileged_token()) return STATUS_ACCESS_VIOLATION;  // never remote (R150)
  for (;;) {
    NTSTATUS status = pin(adapter, pd, token, address, length, need, /*remote=*/true, out, guard);
    if (status != kBusy) return status;
    std::this_thread::yield();
  }
}

bool ChainPages::adjacent() const {
  for (size_t i = 1; i < pages.size(); ++i)
    if (pages[i] != pages[i - 1] + PAGE_SIZE) return false;
  return true;
}

NTSTATUS describe_chain(MDL* mdl, SIZE_T length, ChainPages& out) {
  if (mdl == nullptr || length == 0) return STATUS_INVALID_PARAMETER;
  const auto start = reinterpret_cast<uintptr_t>(MmGetMdlVirtualAddress(mdl));
  SIZE_T covered = 0;
  for (MDL* m = mdl; m != nullptr && covered < length; m = m->Next) {
    if (reinterpret_cast<uintptr_t>(MmGetMdlVirtualAddress(m)) != start + covered)
      return STATUS_INVALID_PARAMETER;  // not virtually contiguous
    covered += MmGetMdlByteCount(m);
  }
  if (covered < length) return STATUS_INVALID_PARAMETER;
  out.base = start;
  out.first_byte_offset = static_cast<ULONG>(start & (PAGE_SIZE - 1));
  const SIZE_T count = (out.first_byte_offset + length + PAGE_SIZE - 1) / PAGE_SIZE;
  try {
    out.pages.assign(count, 0);
  } catch (const std::bad_alloc&) {
    return STATUS_INSUFFICIENT_RESOURCES;
  }
  // Each MDL's PFN array covers the pages its own range touches; a page two MDLs share
  // (one ends and the next begins inside it) is the same page in both.
  const uintptr_t first_page = start - out.first_byte_offset;
  covered = 0;
  for (MDL* m = mdl; m != nullptr && covered < length; m = m->Next) {
    const auto va = reinterpret_cast<uintptr_t>(MmGetMdlVirtualAddress(m));
    const SIZE_T index = ((va & ~uintptr_t{PAGE_SIZE - 1}) - first_page) / PAGE_SIZE;
    const SIZE_T spanned = ((va & (PAGE_SIZE - 1)) + MmGetMdlByteCount(m) + PAGE_SIZE - 1) / PAGE_SIZE;
    const PPFN_NUMBER pfn = MmGetMdlPfnArray(m);
    for (SIZE_T j = 0; j < spanned && index + j < count; ++j) {
      if (pfn[j] == 0) return STATUS_INVALID_PARAMETER;  // never described
      out.pages[index + j] = static_cast<uintptr_t>(pfn[j]) << PAGE_SHIFT;
    }
    covered += MmGetMdlByteCount(m);
  }
  return STATUS_SUCCESS;
}

size_t copy_extents(const ExtentList& to, const ExtentList& from) {
  size_t copied = 0;
  const Extent* t = to.begin();
  const Extent* f = from.begin();
  ULONG ti = 0, fi = 0;
  size_t to_off = 0, from_off = 0;
  while (ti < to.count() && fi < from.count()) {
    size_t n = std::min(t[ti].length - to_off, f[fi].length - from_off);
    std::memcpy(t[ti].data + to_off, f[fi].data + from_off, n);
    copied += n;
    to_off += n;
    from_off += n;
    if (to_off == t[ti].length) {
      ++ti;
      to_off = 0;
    }
    if (from_off == f[fi].length) {
      ++fi;
      from_off = 0;
    }
  }
  return copied;
}

namespace {
// Calls each(piece, position in `bytes`) for the pieces of [offset, offset + n) of `list`.
template <class F>
size_t for_range(const ExtentList& list, uint64_t offset, size_t n, F&& each) {
  size_t done = 0;
  for (ULONG i = 0; i < list.count() && done < n; ++i) {
    const Extent& e = list.begin()[i];
    if (offset >= e.length) {
      offset -= e.length;
      continue;
    }
    const size_t take = std::min<size_t>(e.length - offset, n - done);
    each(e.data + offset, done, take);
    done += take;
    offset = 0;
  }
  return done;
}
}  // namespace

size_t copy_to_extents(const ExtentList& to, uint64_t offset, std::span<const uint8_t> from) {
  return for_range(to, offset, from.size(), [&](uint8_t* piece, size_t at, size_t n) {
    std::memcpy(piece, from.data() + at, n);
  });
}

size_t copy_from_extents(std::span<uint8_t> to, const ExtentList& from, uint64_t offset) {
  return for_range(from, offset, to.size(), [&](uint8_t* piece, size_t at, size_t n) {
    std::memcpy(to.data() + at, piece, n);
  });
}

}  // namespace softndk
