// Resolving memory for the data path: local SGEs (NDK_SGE with an MR's local token or the
// PD's privileged token) and remote (address, token) pairs, with the protection checks
// of RDMA — token known, same protection domain, rights, bounds — and the guarantee that
// a region stays registered while an operation copies into or out of it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <shared_mutex>
#include <span>
#include <vector>

#include "ndk/ndkpi.h"

namespace softndk {

class Adapter;
class Pd;

// Rights an access needs, as NDK_MR_FLAG_* bits (local read needs none).
constexpr ULONG kNeedLocalWrite = NDK_MR_FLAG_ALLOW_LOCAL_WRITE;
constexpr ULONG kNeedRemoteRead = NDK_MR_FLAG_ALLOW_REMOTE_READ;
constexpr ULONG kNeedRemoteWrite = NDK_MR_FLAG_ALLOW_REMOTE_WRITE & ~NDK_MR_FLAG_ALLOW_LOCAL_WRITE;

// The most SGEs one request may carry (the SGE tunables are capped to it), so that
// resolving a request needs no allocation.
constexpr ULONG kMaxSge = 64;
// The most pieces of memory one side of a request may span: fast-registered pages need
// not be adjacent, so one SGE can map to several pieces.
constexpr ULONG kMaxExtents = 1024;

struct Extent {
  uint8_t* data;
  size_t length;
};

// The pieces of memory behind one side of a request, in order. Fixed capacity.
class ExtentList {
 public:
  // Appends a piece, merging it with the previous one when adjacent; false when full.
  bool add(uint8_t* data, size_t length);
  ULONG count() const { return count_; }
  const Extent* begin() const { return items_; }
  size_t total() const { return total_; }
  void clear() { count_ = 0, total_ = 0; }

 private:
  Extent items_[kMaxExtents];
  ULONG count_ = 0;
  size_t total_ = 0;
};

// The memory behind a registered range: contiguous (NdkRegisterMr) or a list of pages
// (NdkFastRegister, pages need not be adjacent: R141).
struct Mapping {
  uint64_t base = 0;       // the first address, an index (R131)
  size_t length = 0;
  ULONG rights = 0;        // NDK_MR_FLAG_* bits
  uint8_t* data = nullptr; // contiguous memory, or
  const uintptr_t* pages = nullptr;
  ULONG first_byte_offset = 0;
  bool valid() const { return data != nullptr || pages != nullptr; }
  bool contains(uint64_t address, size_t size) const {
    return address >= base && size <= length && address - base <= length - size;
  }
  // Appends the memory of [address, address+size), which lies inside; false when full.
  bool map(uint64_t address, size_t size, ExtentList& out) const;
};

// The memory behind the first `length` bytes of an MDL chain, read from the chain's page
// frame numbers during the call (R131, R132): the chain's virtual address is only the base
// that offsets are counted from, never dereferenced.
struct ChainPages {
  uint64_t base = 0;             // the first MDL's virtual address (an index)
  ULONG first_byte_offset = 0;   // of the first byte in the first page
  std::vector<uintptr_t> pages;  // one memory page address per page the range touches
  // Whether the pages follow each other in memory (then one pointer reaches them all).
  bool adjacent() const;
};

// STATUS_INVALID_PARAMETER when the chain covers fewer than `length` bytes, is not
// virtually contiguous over them (R130, R151), or names page frame 0 (pages never
// described: no MmBuildMdlForNonPagedPool); STATUS_INSUFFICIENT_RESOURCES when the page
// list cannot be allocated.
NTSTATUS describe_chain(MDL* mdl, SIZE_T length, ChainPages& out);

// Keeps the regions an operation touches registered (their data lock held shared) until
// it ends. Fixed capacity: a request touches at most kMaxSge local regions plus one remote
// region and its window.
class AccessGuard {
 public:
  AccessGuard() = default;
  ~AccessGuard() { release(); }
  AccessGuard(const AccessGuard&) = delete;
  AccessGuard& operator=(const AccessGuard&) = delete;

  bool holds(const std::shared_mutex* lock) const;
  void add(std::shared_mutex* lock);  // already locked shared by the caller
  void release();

 private:
  std::array<std::shared_mutex*, 2 * kMaxSge + 4> locks_;  // only [0, count_) is set: never zeroed
  size_t count_ = 0;
};

// Resolves `count` local SGEs of a QP (or SRQ) in `pd` for `need` rights, appending
// their memory to `out`. STATUS_ACCESS_VIOLATION for an unknown token, another PD's
// region, missing rights or a range outside the region.
NTSTATUS resolve_local(Adapter& adapter, const Pd& pd, const NDK_SGE* sgl, ULONG count, ULONG need,
                       ExtentList& out, AccessGuard& guard);

// Resolves a remote access arriving at `adapter` for a QP in `pd` (a region's or a
// window's remote token). STATUS_ACCESS_VIOLATION (token, PD, rights),
// STATUS_REMOTE_RESOURCES (bounds).
NTSTATUS resolve_remote(Adapter& adapter, const Pd& pd, uint32_t token, uint64_t address,
                        size_t length, ULONG need, ExtentList& out, AccessGuard& guard);

// Copies from one extent list into another; returns the bytes copied (the smaller total).
size_t copy_extents(const ExtentList& to, const ExtentList& from);
// Copies `from` to `offset` of the memory `to` describes; returns the bytes copied (fewer
// when it runs past the end).
size_t copy_to_extents(const ExtentList& to, uint64_t offset, std::span<const uint8_t> from);
// Copies from `offset` of the memory `from` describes into `to`; returns the bytes copied.
size_t copy_from_extents(std::span<uint8_t> to, const ExtentList& from, uint64_t offset);

}  // namespace softndk
