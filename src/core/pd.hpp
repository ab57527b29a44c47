// NDK_PD, NDK_MR and NDK_MW: protection domain, memory regions and memory windows.
#pragma once

#include <shared_mutex>

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

// Access rights of a region or window, as NDK_MR_FLAG_* bits.
class Mr final : public Object {
 public:
  Mr(Pd& pd, bool fast_register);
  ~Mr() override;
  static Mr* from(NDK_MR* ndk) { return object_of<Mr>(ndk, NdkObjectTypeMr); }

  NTSTATUS register_mdl(MDL* mdl, SIZE_T length, ULONG flags);
  NTSTATUS deregister();
  NTSTATUS initialize_fast_register(ULONG page_count, bool remote_access);
  UINT32 local_token() const;
  UINT32 remote_token() const;
  bool fast_register() const { return fast_register_; }
  const Pd& pd() const { return pd_; }

  // The data path reads the registration under this lock, held shared for as long as
  // it copies; (de)registration takes it exclusively, so memory is never reached
  // through a registration that is going away.
  std::shared_mutex& data_lock() const { return data_lock_; }
  // With data_lock() held: where [address, address+length) named by `token` lives, if
  // that token grants `need`. STATUS_ACCESS_VIOLATION or STATUS_REMOTE_RESOURCES.
  NTSTATUS check_locked(uint32_t token, uint64_t address, size_t length, ULONG need,
                        bool remote, uint8_t** data) const;

 private:
  void drop_tokens();

  const Pd& pd_;
  const bool fast_register_;
  mutable std::shared_mutex data_lock_;
  uint8_t* data_ = nullptr;   // the memory the MDL describes (user space: its address)
  bool registered_ = false;   // NdkRegisterMr done (register-only MRs)
  bool initialized_ = false;  // NdkInitializeFastRegisterMr done (fast-register MRs)
  ULONG page_capacity_ = 0;
  bool remote_access_ = false;
  uintptr_t base_ = 0;        // first registered virtual address (an index, R131)
  SIZE_T length_ = 0;
  ULONG flags_ = 0;
  UINT32 local_token_ = 0;
  UINT32 remote_token_ = 0;
};

class Mw final : public Object {
 public:
  explicit Mw(Pd& pd);
  ~Mw() override;
  static Mw* from(NDK_MW* ndk) { return object_of<Mw>(ndk, NdkObjectTypeMw); }
  UINT32 remote_token() const { return token_; }

 private:
  UINT32 token_;
};

}  // namespace softndk
