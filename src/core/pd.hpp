// NDK_PD, NDK_MR and NDK_MW: protection domain, memory regions and memory windows.
#pragma once

#include <atomic>
#include <shared_mutex>
#include <vector>

#include "core/memory.hpp"
#include "core/object.hpp"

namespace softndk {

class Pd final : public Object {
 public:
  explicit Pd(Adapter& adapter);
  ~Pd() override;
  static Pd* from(NDK_PD* ndk) { return object_of<Pd>(ndk, NdkObjectTypePd); }
  // Lets SGEs carry logical addresses from a LAM; local access only (R150).
  UINT32 privileged_token() const { return privileged_token_; }

 private:
  UINT32 privileged_token_;
};

// A memory region: registered from an MDL (NdkRegisterMr), or fast-registered from LAM
// pages by a QP (NdkFastRegister) and invalidated again (NdkInvalidate).
//
// The data path reads the mapping under data_lock(), held shared for as long as it copies;
// every change of the mapping takes it exclusively, so memory is never reached through a
// registration that is going away.
class Mr final : public Object {
 public:
  Mr(Pd& pd, bool fast_register);
  ~Mr() override;
  static Mr* from(NDK_MR* ndk) { return object_of<Mr>(ndk, NdkObjectTypeMr); }

  NTSTATUS register_mdl(MDL* mdl, SIZE_T length, ULONG flags);
  // STATUS_INVALID_DEVICE_STATE while windows are bound to the region.
  NTSTATUS deregister();
  NTSTATUS initialize_fast_register(ULONG page_count, bool remote_access);
  // NdkFastRegister as the QP executes it; `rights` are NDK_MR_FLAG_* bits.
  NTSTATUS fast_register(ULONG page_count, const NDK_LOGICAL_ADDRESS* pages, ULONG fbo,
                         SIZE_T length, uint64_t base, ULONG rights);
  // NdkInvalidate (local or remote) of a fast-registered region.
  NTSTATUS invalidate();
  UINT32 local_token() const;
  UINT32 remote_token() const;
  bool fast_register() const { return fast_register_; }
  const Pd& pd() const { return pd_; }

  std::shared_mutex& data_lock() const { return data_lock_; }
  // With data_lock() held: appends the memory of [address, address+length) named by
  // `token` to `out`, if that token grants `need`.
  NTSTATUS map_locked(uint32_t token, uint64_t address, size_t length, ULONG need, bool remote,
                      ExtentList& out) const;
  // With data_lock() held: the registration (for windows bound to it).
  const Mapping& mapping_locked() const { return mapping_; }

  // Windows bound to this region; it cannot be deregistered meanwhile.
  void window_bound() { windows_.fetch_add(1); }
  void window_unbound() { windows_.fetch_sub(1); }

 private:
  // Replaces the tokens (0, 0: none). Tokens change outside data_lock_: the data path
  // takes the token table's lock before a region's lock, never the other way round.
  void replace_tokens(bool allocate);

  const Pd& pd_;
  const bool fast_register_;
  mutable std::shared_mutex data_lock_;
  Mapping mapping_;
  // Fast registration: sized at initialization. NdkRegisterMr: the pages of a chain whose
  // pages are not adjacent in memory.
  std::vector<uintptr_t> pages_;
  bool registered_ = false;       // NdkRegisterMr done
  bool initialized_ = false;      // NdkInitializeFastRegisterMr done
  bool remote_access_ = false;
  // Atomic so the token can be read without the lock (the table's lock may be held).
  std::atomic<UINT32> local_token_{0};
  std::atomic<UINT32> remote_token_{0};
  std::atomic<int> windows_{0};
};

// A memory window: a range of a registered region with its own rights and token.
class Mw final : public Object {
 public:
  explicit Mw(Pd& pd);
  ~Mw() override;
  static Mw* from(NDK_MW* ndk) { return object_of<Mw>(ndk, NdkObjectTypeMw); }

  // NdkBind as the QP executes it (arguments already checked); a new token each time.
  void bind(Mr& mr, uint64_t address, size_t length, ULONG rights);
  // STATUS_INVALID_DEVICE_STATE when not bound.
  NTSTATUS invalidate();
  UINT32 remote_token() const;
  const Pd& pd() const { return pd_; }

  std::shared_mutex& data_lock() const { return data_lock_; }
  // With data_lock() held: whether `token` grants `need` on the range, and the region.
  NTSTATUS check_locked(uint32_t token, uint64_t address, size_t length, ULONG need,
                        Mr** region) const;

 protected:
  void on_closed() override;

 private:
  void unbind_locked();

  const Pd& pd_;
  mutable std::shared_mutex data_lock_;
  Mr* region_ = nullptr;        // while bound
  std::vector<Mr*> antecedents_;  // every region it was bound to, held until close (R149)
  uint64_t base_ = 0;
  size_t length_ = 0;
  ULONG rights_ = 0;
  std::atomic<UINT32> token_{0};
};

}  // namespace softndk
