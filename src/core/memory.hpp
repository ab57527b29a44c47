// Resolving memory for the data path: local SGEs (NDK_SGE with an MR's local token or the
// PD's privileged token) and remote (address, token) pairs, with the protection checks
// of RDMA — token known, same protection domain, rights, bounds — and the guarantee that
// a region stays registered while an operation copies into or out of it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <shared_mutex>

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

struct Extent {
  uint8_t* data;
  size_t length;
};

// Keeps the regions an operation touches registered (their data lock held shared) until
// it ends. Fixed capacity: a request touches at most kMaxSge local regions plus one remote.
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
  std::array<std::shared_mutex*, 2 * kMaxSge + 2> locks_{};
  size_t count_ = 0;
};

// Resolves `count` local SGEs of a QP (or SRQ) in `pd` for `need` rights into `out`.
// STATUS_ACCESS_VIOLATION for an unknown token, another PD's region, missing rights or
// a range outside the region.
NTSTATUS resolve_local(Adapter& adapter, const Pd& pd, const NDK_SGE* sgl, ULONG count, ULONG need,
                       Extent* out, AccessGuard& guard);

// Resolves a remote access arriving at `adapter` for a QP in `pd`.
// STATUS_ACCESS_VIOLATION (token, PD, rights), STATUS_REMOTE_RESOURCES (bounds).
NTSTATUS resolve_remote(Adapter& adapter, const Pd& pd, uint32_t token, uint64_t address,
                        size_t length, ULONG need, Extent* out, AccessGuard& guard);

// Copies from one extent list into another; returns the bytes copied (the smaller total).
size_t copy_extents(const Extent* to, ULONG nto, const Extent* from, ULONG nfrom);

// Sum of the extents' lengths.
size_t total_length(const Extent* extents, ULONG count);

}  // namespace softndk
