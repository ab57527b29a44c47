#include "peer.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <sstream>

#include "core/kernel_sync.hpp"

namespace conformance {

// ------------------------------------------------------------------------ encoding --

namespace {

void PutU16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v));
  out.push_back(static_cast<uint8_t>(v >> 8));
}
void PutU32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void PutU64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint16_t GetU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::vector<uint8_t> EncodeRecord(uint32_t magic, uint32_t word, uint32_t sequence,
                                  const uint64_t (&values)[8], const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out;
  out.reserve(kPeerRecordSize + data.size());
  PutU32(out, magic);
  PutU32(out, word);
  PutU32(out, sequence);
  PutU32(out, static_cast<uint32_t>(data.size()));
  for (uint64_t v : values) PutU64(out, v);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

bool DecodeRecord(const uint8_t* record, uint32_t magic, uint32_t* word, uint32_t* sequence,
                  uint32_t* length, uint64_t (&values)[8]) {
  if (GetU32(record) != magic) return false;
  *word = GetU32(record + 4);
  *sequence = GetU32(record + 8);
  *length = GetU32(record + 12);
  if (*length > kPeerMaxData) return false;
  for (int i = 0; i < 8; ++i) values[i] = GetU64(record + 16 + 8 * i);
  return true;
}

}  // namespace

std::vector<uint8_t> EncodePeerCommand(const PeerCommand& command, uint32_t sequence) {
  return EncodeRecord(kPeerCommandMagic, static_cast<uint32_t>(command.op), sequence, command.arg,
                      command.data);
}

std::vector<uint8_t> EncodePeerReply(const PeerReply& reply, uint32_t sequence) {
  return EncodeRecord(kPeerReplyMagic, static_cast<uint32_t>(reply.status), sequence, reply.value,
                      reply.data);
}

bool DecodePeerCommand(const uint8_t* record, PeerCommand* command, uint32_t* sequence,
                       uint32_t* length) {
  uint32_t op;
  if (!DecodeRecord(record, kPeerCommandMagic, &op, sequence, length, command->arg)) return false;
  command->op = static_cast<PeerOp>(op);
  return true;
}

bool DecodePeerReply(const uint8_t* record, PeerReply* reply, uint32_t* sequence,
                     uint32_t* length) {
  uint32_t status;
  if (!DecodeRecord(record, kPeerReplyMagic, &status, sequence, length, reply->value)) return false;
  reply->status = static_cast<NTSTATUS>(status);
  return true;
}

void PutPeerAddress(std::vector<uint8_t>& out, const SOCKADDR_INET& address) {
  PutU16(out, address.si_family);
  const unsigned char* bytes;
  size_t size;
  uint16_t port;
  if (address.si_family == AF_INET) {
    port = ntohs(address.Ipv4.sin_port);
    bytes = reinterpret_cast<const unsigned char*>(&address.Ipv4.sin_addr);
    size = 4;
  } else {
    port = ntohs(address.Ipv6.sin6_port);
    bytes = address.Ipv6.sin6_addr.s6_addr;
    size = 16;
  }
  PutU16(out, port);
  for (size_t i = 0; i < 16; ++i) out.push_back(i < size ? bytes[i] : 0);
}

SOCKADDR_INET ReadPeerAddress(const uint8_t* in) {
  SOCKADDR_INET a{};
  uint16_t family = GetU16(in);
  uint16_t port = GetU16(in + 2);
  if (family == AF_INET) {
    a.Ipv4.sin_family = AF_INET;
    a.Ipv4.sin_port = htons(port);
    std::memcpy(&a.Ipv4.sin_addr, in + 4, 4);
  } else if (family == AF_INET6) {
    a.Ipv6.sin6_family = AF_INET6;
    a.Ipv6.sin6_port = htons(port);
    std::memcpy(a.Ipv6.sin6_addr.s6_addr, in + 4, 16);
  }
  return a;
}

std::vector<uint8_t> EncodePeerSges(const std::vector<PeerSge>& sges) {
  std::vector<uint8_t> out;
  for (const PeerSge& s : sges) {
    PutU64(out, s.region);
    PutU64(out, s.offset);
    PutU64(out, s.length);
    PutU64(out, s.token);
  }
  return out;
}

// -------------------------------------------------------------------------- engine --

namespace {

constexpr size_t kAddressBytes = 20;

ULONG AddressLength(const SOCKADDR_INET& a) {
  return a.si_family == AF_INET ? sizeof(SOCKADDR_IN) : sizeof(SOCKADDR_IN6);
}

// One create, request or close of the peer, waited for with a bound.
struct Waiter {
  std::mutex mutex;
  std::condition_variable cv;
  std::atomic<int> calls{0};
  NTSTATUS status = STATUS_PENDING;
  NDK_OBJECT_HEADER* object = nullptr;
  bool done = false;

  void Finish(NTSTATUS s, NDK_OBJECT_HEADER* o) {
    calls.fetch_add(1);
    {
      std::lock_guard lock(mutex);
      if (!done) {
        status = s;
        object = o;
        done = true;
      }
    }
    cv.notify_all();
  }
  bool Wait(Millis timeout) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, timeout, [&] { return done; });
  }
  NTSTATUS Status() {
    std::lock_guard lock(mutex);
    return status;
  }
  static VOID OnCreate(PVOID c, NTSTATUS s, NDK_OBJECT_HEADER* o) {
    static_cast<Waiter*>(c)->Finish(s, o);
  }
  static VOID OnRequest(PVOID c, NTSTATUS s) { static_cast<Waiter*>(c)->Finish(s, nullptr); }
  static VOID OnClose(PVOID c) { static_cast<Waiter*>(c)->Finish(STATUS_SUCCESS, nullptr); }
};

struct CqRecord {
  std::atomic<int> count{0};
  std::atomic<NTSTATUS> last{STATUS_PENDING};
  std::atomic<int> stall_ms{0};
  std::atomic<bool> stalled{false};
  static VOID OnNotify(PVOID context, NTSTATUS status) {
    auto* self = static_cast<CqRecord*>(context);
    self->last = status;
    self->count.fetch_add(1);
    int ms = self->stall_ms.exchange(0);
    if (ms > 0) {
      self->stalled = true;
      std::this_thread::sleep_for(Millis(ms));
    }
  }
};

struct ListenerRecord {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<NDK_CONNECTOR*> queue;
  static VOID OnConnect(PVOID context, NDK_CONNECTOR* connector) {
    auto* self = static_cast<ListenerRecord*>(context);
    {
      std::lock_guard lock(self->mutex);
      self->queue.push_back(connector);
    }
    self->cv.notify_all();
  }
};

struct DisconnectRecord {
  std::atomic<int> count{0};
  std::atomic<ULONG> reason{0};
  static VOID On(PVOID context) { static_cast<DisconnectRecord*>(context)->count.fetch_add(1); }
  static VOID OnEx(PVOID context, ULONG reason) {
    auto* self = static_cast<DisconnectRecord*>(context);
    self->reason = reason;
    self->count.fetch_add(1);
  }
};

struct Region {
  unsigned char* memory = nullptr;  // std::aligned_alloc
  unsigned char* start = nullptr;   // the first registered (or backing) byte
  size_t length = 0;
  MDL* mdl = nullptr;
  NDK_MR* mr = nullptr;
  bool fast = false;
  std::vector<uint64_t> lam_storage;
  NDK_LOGICAL_ADDRESS_MAPPING* lam = nullptr;
  uint64_t base = 0;  // fast: the registered base
};

class PeerEngine {
 public:
  explicit PeerEngine(SOFTNDK_FABRIC fabric) : fabric_(fabric) {}
  ~PeerEngine() { ShutdownAll(); }

  PeerReply Execute(const PeerCommand& c) {
    std::lock_guard lock(execute_mutex_);
    try {
      return Run(c);
    } catch (const std::exception& e) {
      PeerReply r;
      r.status = STATUS_INTERNAL_ERROR;
      std::string text = e.what();
      r.data.assign(text.begin(), text.end());
      return r;
    }
  }

 private:
  struct Entry {
    NDK_OBJECT_HEADER* header = nullptr;
    bool closing = false;
  };

  // ---- helpers ----
  PeerId NewId() { return next_id_++; }
  Waiter* NewWaiter() {
    waiters_.push_back(std::make_unique<Waiter>());
    return waiters_.back().get();
  }
  template <class T>
  T* Find(PeerId id, NDK_OBJECT_TYPE type) {
    auto it = objects_.find(id);
    if (it == objects_.end() || it->second.header == nullptr) return nullptr;
    if (it->second.header->ObjectType != type) return nullptr;
    return reinterpret_cast<T*>(it->second.header);
  }
  Region* FindRegion(PeerId id) {
    auto it = regions_.find(id);
    return it == regions_.end() ? nullptr : &it->second;
  }
  NDK_PD* Pd(uint64_t id) { return Find<NDK_PD>(id == 0 ? default_pd_ : id, NdkObjectTypePd); }
  PeerId Adopt(NDK_OBJECT_HEADER* header) {
    PeerId id = NewId();
    objects_[id] = Entry{header, false};
    return id;
  }

  // Runs a create and waits for it; the object (or null) and the final status.
  template <class T, class F>
  NTSTATUS Create(F&& call, T** out) {
    Waiter* w = NewWaiter();
    T* object = nullptr;
    NTSTATUS s = call(&Waiter::OnCreate, w, &object);
    if (s == STATUS_PENDING) {
      if (!w->Wait(kWait)) return STATUS_IO_TIMEOUT;
      s = w->Status();
      object = reinterpret_cast<T*>(w->object);
    }
    *out = NT_SUCCESS(s) ? object : nullptr;
    return s;
  }
  template <class F>
  NTSTATUS Request(F&& call) {
    Waiter* w = NewWaiter();
    NTSTATUS s = call(&Waiter::OnRequest, w);
    if (s != STATUS_PENDING) return s;
    if (!w->Wait(kWait)) return STATUS_IO_TIMEOUT;
    return w->Status();
  }
  // Starts an asynchronous request; its op id (waited for with kWaitOp).
  template <class F>
  PeerReply StartRequest(F&& call) {
    Waiter* w = NewWaiter();
    PeerReply r;
    r.status = call(&Waiter::OnRequest, w);
    PeerId op = NewId();
    ops_[op] = w;
    if (r.status != STATUS_PENDING) {
      w->Finish(r.status, nullptr);  // finished inline: not a callback
      w->calls.fetch_sub(1);
    }
    r.value[0] = op;
    return r;
  }
  static NDK_FN_CLOSE_OBJECT CloseOf(NDK_OBJECT_HEADER* h) { return CloseFunctionOf(h); }
  Waiter* BeginClose(PeerId id) {
    auto it = objects_.find(id);
    if (it == objects_.end() || it->second.closing || it->second.header == nullptr) return nullptr;
    it->second.closing = true;
    Waiter* w = NewWaiter();
    NTSTATUS s = CloseOf(it->second.header)(it->second.header, &Waiter::OnClose, w);
    if (s != STATUS_PENDING) {
      w->Finish(s, nullptr);
      w->calls.fetch_sub(1);
    }
    closes_.push_back(w);
    return w;
  }
  std::vector<NDK_SGE> Sges(const std::vector<uint8_t>& data, NTSTATUS* status) {
    std::vector<NDK_SGE> sges;
    *status = STATUS_SUCCESS;
    for (size_t at = 0; at + 32 <= data.size(); at += 32) {
      PeerId region = GetU64(&data[at]);
      uint64_t offset = GetU64(&data[at + 8]);
      NDK_SGE s{};
      s.Length = static_cast<ULONG>(GetU64(&data[at + 16]));
      s.MemoryRegionToken = static_cast<UINT32>(GetU64(&data[at + 24]));
      if (region == 0) {
        s.VirtualAddress = reinterpret_cast<PVOID>(static_cast<uintptr_t>(offset));
      } else {
        Region* r = FindRegion(region);
        if (r == nullptr) {
          *status = STATUS_NOT_FOUND;
          return {};
        }
        s.VirtualAddress = r->fast
                               ? reinterpret_cast<PVOID>(static_cast<uintptr_t>(r->base + offset))
                               : r->start + offset;
        if (s.MemoryRegionToken == 0)
          s.MemoryRegionToken = r->mr->Dispatch->NdkGetLocalTokenFromMr(r->mr);
      }
      sges.push_back(s);
    }
    return sges;
  }

  PeerReply Status(NTSTATUS s) {
    PeerReply r;
    r.status = s;
    return r;
  }
  PeerReply Id(NTSTATUS s, PeerId id) {
    PeerReply r;
    r.status = s;
    r.value[0] = id;
    return r;
  }

  PeerReply Run(const PeerCommand& c) {
    const uint64_t* a = c.arg;
    if (c.op == PeerOp::kSetTunable) {
      std::string text(c.data.begin(), c.data.end());
      size_t nul = text.find('\0');
      if (nul == std::string::npos) return Status(STATUS_INVALID_PARAMETER);
      return Status(SoftNdkSetTunable(text.substr(0, nul).c_str(), text.substr(nul + 1).c_str()));
    }
    if (c.op == PeerOp::kOpen) return Open(static_cast<SOFTNDK_COMPLETION_MODE>(a[0]), a[1]);
    if (c.op == PeerOp::kShutdown) return ShutdownAll();
    if (adapter_ == nullptr) return Status(STATUS_INVALID_DEVICE_STATE);
    NDK_ADAPTER* ad = adapter_;
    switch (c.op) {
      case PeerOp::kCreateCq: {
        auto rec = std::make_unique<CqRecord>();
        NDK_CQ* cq;
        NTSTATUS s = Create<NDK_CQ>(
            [&](auto cb, auto ctx, NDK_CQ** out) {
              return ad->Dispatch->NdkCreateCq(ad, static_cast<ULONG>(a[0]), &CqRecord::OnNotify,
                                               rec.get(), nullptr, cb, ctx, out);
            },
            &cq);
        if (!NT_SUCCESS(s)) return Status(s);
        PeerId id = Adopt(&cq->Header);
        cqs_[id] = std::move(rec);
        return Id(s, id);
      }
      case PeerOp::kCreatePd: {
        NDK_PD* pd;
        NTSTATUS s = Create<NDK_PD>(
            [&](auto cb, auto ctx, NDK_PD** out) {
              return ad->Dispatch->NdkCreatePd(ad, cb, ctx, out);
            },
            &pd);
        return NT_SUCCESS(s) ? Id(s, Adopt(&pd->Header)) : Status(s);
      }
      case PeerOp::kCreateQp: {
        NDK_CQ* rcq = Find<NDK_CQ>(a[0], NdkObjectTypeCq);
        NDK_CQ* icq = Find<NDK_CQ>(a[1], NdkObjectTypeCq);
        NDK_PD* pd = Pd(a[7]);
        if (rcq == nullptr || icq == nullptr || pd == nullptr) return Status(STATUS_NOT_FOUND);
        PeerId id = NewId();
        NDK_QP* qp;
        NTSTATUS s = Create<NDK_QP>(
            [&](auto cb, auto ctx, NDK_QP** out) {
              return pd->Dispatch->NdkCreateQp(pd, rcq, icq, reinterpret_cast<PVOID>(id),
                                               static_cast<ULONG>(a[2]), static_cast<ULONG>(a[3]),
                                               static_cast<ULONG>(a[4]), static_cast<ULONG>(a[5]),
                                               static_cast<ULONG>(a[6]), cb, ctx, out);
            },
            &qp);
        if (!NT_SUCCESS(s)) return Status(s);
        objects_[id] = Entry{&qp->Header, false};
        return Id(s, id);
      }
      case PeerOp::kCreateMw: {
        NDK_PD* pd = Pd(a[0]);
        if (pd == nullptr) return Status(STATUS_NOT_FOUND);
        NDK_MW* mw;
        NTSTATUS s = Create<NDK_MW>(
            [&](auto cb, auto ctx, NDK_MW** out) {
              return pd->Dispatch->NdkCreateMw(pd, cb, ctx, out);
            },
            &mw);
        return NT_SUCCESS(s) ? Id(s, Adopt(&mw->Header)) : Status(s);
      }
      case PeerOp::kCreateListener: {
        auto rec = std::make_unique<ListenerRecord>();
        NDK_LISTENER* l;
        NTSTATUS s = Create<NDK_LISTENER>(
            [&](auto cb, auto ctx, NDK_LISTENER** out) {
              return ad->Dispatch->NdkCreateListener(ad, &ListenerRecord::OnConnect, rec.get(), cb,
                                                     ctx, out);
            },
            &l);
        if (!NT_SUCCESS(s)) return Status(s);
        PeerId id = Adopt(&l->Header);
        listeners_[id] = std::move(rec);
        return Id(s, id);
      }
      case PeerOp::kCreateConnector: {
        NDK_CONNECTOR* con;
        NTSTATUS s = Create<NDK_CONNECTOR>(
            [&](auto cb, auto ctx, NDK_CONNECTOR** out) {
              return ad->Dispatch->NdkCreateConnector(ad, cb, ctx, out);
            },
            &con);
        return NT_SUCCESS(s) ? Id(s, AdoptConnector(con)) : Status(s);
      }
      case PeerOp::kCreateSharedEndpoint: {
        if (c.data.size() < kAddressBytes) return Status(STATUS_INVALID_PARAMETER);
        SOCKADDR_INET address = ReadPeerAddress(c.data.data());
        NDK_SHARED_ENDPOINT* e;
        NTSTATUS s = Create<NDK_SHARED_ENDPOINT>(
            [&](auto cb, auto ctx, NDK_SHARED_ENDPOINT** out) {
              return ad->Dispatch->NdkCreateSharedEndpoint(
                  ad, reinterpret_cast<PSOCKADDR>(&address), AddressLength(address), cb, ctx, out);
            },
            &e);
        return NT_SUCCESS(s) ? Id(s, Adopt(&e->Header)) : Status(s);
      }
      case PeerOp::kRegister:
        return RegisterRegion(a[0], static_cast<ULONG>(a[1]), a[2], a[3]);
      case PeerOp::kDeregister: {
        Region* r = FindRegion(a[0]);
        if (r == nullptr || r->fast) return Status(STATUS_NOT_FOUND);
        return Status(Request(
            [&](auto cb, auto ctx) { return r->mr->Dispatch->NdkDeregisterMr(r->mr, cb, ctx); }));
      }
      case PeerOp::kFill: {
        Region* r = FindRegion(a[0]);
        if (r == nullptr || a[1] + c.data.size() > r->length)
          return Status(STATUS_INVALID_PARAMETER);
        std::memcpy(r->start + a[1], c.data.data(), c.data.size());
        return Status(STATUS_SUCCESS);
      }
      case PeerOp::kReadMemory: {
        Region* r = FindRegion(a[0]);
        if (r == nullptr || a[1] + a[2] > r->length) return Status(STATUS_INVALID_PARAMETER);
        PeerReply reply;
        reply.data.assign(r->start + a[1], r->start + a[1] + a[2]);
        return reply;
      }
      case PeerOp::kCreateFastRegion:
        return CreateFastRegion(static_cast<ULONG>(a[0]), a[1] != 0, a[2]);
      case PeerOp::kPrivilegedToken: {
        NDK_PD* pd = Pd(a[0]);
        if (pd == nullptr) return Status(STATUS_NOT_FOUND);
        UINT32 token = 0;
        pd->Dispatch->NdkGetPrivilegedMemoryRegionToken(pd, &token);
        PeerReply r;
        r.value[0] = token;
        return r;
      }
      case PeerOp::kReceive:
      case PeerOp::kSend:
      case PeerOp::kSendAndInvalidate:
      case PeerOp::kWrite:
      case PeerOp::kRead:
        return Post(c);
      case PeerOp::kBind: {
        NDK_QP* qp = Find<NDK_QP>(a[0], NdkObjectTypeQp);
        Region* r = FindRegion(a[1]);
        NDK_MW* mw = Find<NDK_MW>(a[2], NdkObjectTypeMw);
        if (qp == nullptr || r == nullptr || mw == nullptr) return Status(STATUS_NOT_FOUND);
        PeerReply reply;
        reply.status = qp->Dispatch->NdkBind(qp, reinterpret_cast<PVOID>(a[6]), r->mr, mw,
                                             r->start + a[3], a[4], static_cast<ULONG>(a[5]));
        reply.value[0] = mw->Dispatch->NdkGetRemoteTokenFromMw(mw);
        return reply;
      }
      case PeerOp::kFastRegister: {
        NDK_QP* qp = Find<NDK_QP>(a[0], NdkObjectTypeQp);
        Region* r = FindRegion(a[1]);
        if (qp == nullptr || r == nullptr || !r->fast) return Status(STATUS_NOT_FOUND);
        ULONG fbo = static_cast<ULONG>(a[3]);
        size_t length = a[2];
        ULONG pages = static_cast<ULONG>((fbo + length + PAGE_SIZE - 1) / PAGE_SIZE);
        uint64_t base = reinterpret_cast<uintptr_t>(r->start) + fbo;
        PeerReply reply;
        reply.status = qp->Dispatch->NdkFastRegister(
            qp, reinterpret_cast<PVOID>(a[5]), r->mr, pages, r->lam->AdapterPageArray, fbo, length,
            reinterpret_cast<PVOID>(static_cast<uintptr_t>(base)), static_cast<ULONG>(a[4]));
        if (NT_SUCCESS(reply.status)) r->base = base;
        reply.value[0] = r->base;
        reply.value[1] = r->mr->Dispatch->NdkGetLocalTokenFromMr(r->mr);
        reply.value[2] = r->mr->Dispatch->NdkGetRemoteTokenFromMr(r->mr);
        return reply;
      }
      case PeerOp::kInvalidate: {
        NDK_QP* qp = Find<NDK_QP>(a[0], NdkObjectTypeQp);
        auto it = objects_.find(a[1]);
        if (qp == nullptr || it == objects_.end()) return Status(STATUS_NOT_FOUND);
        return Status(qp->Dispatch->NdkInvalidate(qp, reinterpret_cast<PVOID>(a[3]),
                                                  it->second.header, static_cast<ULONG>(a[2])));
      }
      case PeerOp::kFlush: {
        NDK_QP* qp = Find<NDK_QP>(a[0], NdkObjectTypeQp);
        if (qp == nullptr) return Status(STATUS_NOT_FOUND);
        qp->Dispatch->NdkFlush(qp);
        return Status(STATUS_SUCCESS);
      }
      case PeerOp::kPoll:
        return Poll(a[0], a[1], a[2], Millis(a[3]), a[4] != 0);
      case PeerOp::kArmCq: {
        NDK_CQ* cq = Find<NDK_CQ>(a[0], NdkObjectTypeCq);
        if (cq == nullptr) return Status(STATUS_NOT_FOUND);
        cq->Dispatch->NdkArmCq(cq, static_cast<ULONG>(a[1]));
        return Status(STATUS_SUCCESS);
      }
      case PeerOp::kNotifications: {
        auto it = cqs_.find(a[0]);
        if (it == cqs_.end()) return Status(STATUS_NOT_FOUND);
        PeerReply r;
        r.value[0] = static_cast<uint64_t>(it->second->count.load());
        r.value[1] = static_cast<uint32_t>(it->second->last.load());
        return r;
      }
      case PeerOp::kListen: {
        NDK_LISTENER* l = Find<NDK_LISTENER>(a[0], NdkObjectTypeListener);
        if (l == nullptr || c.data.size() < kAddressBytes) return Status(STATUS_NOT_FOUND);
        SOCKADDR_INET address = ReadPeerAddress(c.data.data());
        return Status(Request([&](auto cb, auto ctx) {
          return l->Dispatch->NdkListen(l, reinterpret_cast<PSOCKADDR>(&address),
                                        AddressLength(address), cb, ctx);
        }));
      }
      case PeerOp::kPauseListener: {
        NDK_LISTENER* l = Find<NDK_LISTENER>(a[0], NdkObjectTypeListener);
        if (l == nullptr) return Status(STATUS_NOT_FOUND);
        l->Dispatch->NdkControlConnectEvents(l, a[1] != 0 ? TRUE : FALSE);
        return Status(STATUS_SUCCESS);
      }
      case PeerOp::kNextConnectEvent: {
        auto it = listeners_.find(a[0]);
        if (it == listeners_.end()) return Status(STATUS_NOT_FOUND);
        ListenerRecord& rec = *it->second;
        NDK_CONNECTOR* con = nullptr;
        {
          std::unique_lock lock(rec.mutex);
          if (rec.cv.wait_for(lock, Millis(a[1]), [&] { return !rec.queue.empty(); })) {
            con = rec.queue.front();
            rec.queue.pop_front();
          }
        }
        if (con == nullptr) return Status(STATUS_IO_TIMEOUT);
        return Id(STATUS_SUCCESS, AdoptConnector(con));
      }
      case PeerOp::kConnect:
      case PeerOp::kConnectShared:
        return Connect(c);
      case PeerOp::kCompleteConnect: {
        NDK_CONNECTOR* con = Find<NDK_CONNECTOR>(a[0], NdkObjectTypeConnector);
        if (con == nullptr) return Status(STATUS_NOT_FOUND);
        DisconnectRecord* rec = disconnects_[a[0]].get();
        bool ex = a[1] != 0, with_event = a[2] != 0;
        return Status(Request([&](auto cb, auto ctx) {
          return ex ? con->Dispatch->NdkCompleteConnectEx(
                          con, with_event ? &DisconnectRecord::OnEx : nullptr, rec, cb, ctx)
                    : con->Dispatch->NdkCompleteConnect(
                          con, with_event ? &DisconnectRecord::On : nullptr, rec, cb, ctx);
        }));
      }
      case PeerOp::kAccept: {
        NDK_CONNECTOR* con = Find<NDK_CONNECTOR>(a[0], NdkObjectTypeConnector);
        NDK_QP* qp = Find<NDK_QP>(a[1], NdkObjectTypeQp);
        if (con == nullptr || qp == nullptr) return Status(STATUS_NOT_FOUND);
        DisconnectRecord* rec = disconnects_[a[0]].get();
        bool ex = a[4] != 0, with_event = a[6] != 0;
        std::vector<uint8_t> data = c.data;
        PVOID pdata = a[5] != 0 ? data.data() : nullptr;
        ULONG plen = a[5] != 0 ? static_cast<ULONG>(data.size()) : 0;
        ULONG ird = static_cast<ULONG>(a[2]), ord = static_cast<ULONG>(a[3]);
        return StartRequest([&](auto cb, auto ctx) {
          return ex ? con->Dispatch->NdkAcceptEx(con, qp, ird, ord, pdata, plen,
                                                 with_event ? &DisconnectRecord::OnEx : nullptr,
                                                 rec, cb, ctx)
                    : con->Dispatch->NdkAccept(con, qp, ird, ord, pdata, plen,
                                               with_event ? &DisconnectRecord::On : nullptr, rec,
                                               cb, ctx);
        });
      }
      case PeerOp::kReject: {
        NDK_CONNECTOR* con = Find<NDK_CONNECTOR>(a[0], NdkObjectTypeConnector);
        if (con == nullptr) return Status(STATUS_NOT_FOUND);
        std::vector<uint8_t> data = c.data;
        return Status(con->Dispatch->NdkReject(con, a[1] != 0 ? data.data() : nullptr,
                                               a[1] != 0 ? static_cast<ULONG>(data.size()) : 0));
      }
      case PeerOp::kGetConnectionData: {
        NDK_CONNECTOR* con = Find<NDK_CONNECTOR>(a[0], NdkObjectTypeConnector);
        if (con == nullptr) return Status(STATUS_NOT_FOUND);
        ULONG length = static_cast<ULONG>(a[1]);
        std::vector<uint8_t> buffer(std::max<ULONG>(length, 1));
        ULONG in = 0, out = 0;
        PeerReply r;
        r.status = con->Dispatch->NdkGetConnectionData(
            con, &in, &out, a[2] != 0 ? nullptr : buffer.data(), &length);
        r.value[0] = in;
        r.value[1] = out;
        r.value[2] = length;
        if (a[2] == 0)
          r.data.assign(buffer.begin(), buffer.begin() + std::min<size_t>(length, a[1]));
        return r;
      }
      case PeerOp::kGetLocalAddress:
      case PeerOp::kGetPeerAddress: {
        auto it = objects_.find(a[0]);
        if (it == objects_.end() || it->second.header == nullptr) return Status(STATUS_NOT_FOUND);
        NDK_OBJECT_HEADER* h = it->second.header;
        SOCKADDR_INET address{};
        ULONG length = sizeof(address);
        auto* out = reinterpret_cast<PSOCKADDR>(&address);
        PeerReply r;
        if (c.op == PeerOp::kGetPeerAddress) {
          if (h->ObjectType != NdkObjectTypeConnector) return Status(STATUS_NOT_FOUND);
          auto* con = reinterpret_cast<NDK_CONNECTOR*>(h);
          r.status = con->Dispatch->NdkGetPeerAddress(con, out, &length);
        } else if (h->ObjectType == NdkObjectTypeConnector) {
          auto* con = reinterpret_cast<NDK_CONNECTOR*>(h);
          r.status = con->Dispatch->NdkGetLocalAddress(con, out, &length);
        } else if (h->ObjectType == NdkObjectTypeListener) {
          auto* l = reinterpret_cast<NDK_LISTENER*>(h);
          r.status = l->Dispatch->NdkGetLocalAddress(l, out, &length);
        } else if (h->ObjectType == NdkObjectTypeSharedEndpoint) {
          auto* e = reinterpret_cast<NDK_SHARED_ENDPOINT*>(h);
          r.status = e->Dispatch->NdkGetLocalAddress(e, out, &length);
        } else {
          return Status(STATUS_NOT_FOUND);
        }
        if (NT_SUCCESS(r.status)) PutPeerAddress(r.data, address);
        return r;
      }
      case PeerOp::kDisconnect: {
        NDK_CONNECTOR* con = Find<NDK_CONNECTOR>(a[0], NdkObjectTypeConnector);
        if (con == nullptr) return Status(STATUS_NOT_FOUND);
        return Status(
            Request([&](auto cb, auto ctx) { return con->Dispatch->NdkDisconnect(con, cb, ctx); }));
      }
      case PeerOp::kDisconnectEvents: {
        auto it = disconnects_.find(a[0]);
        if (it == disconnects_.end()) return Status(STATUS_NOT_FOUND);
        PeerReply r;
        r.value[0] = static_cast<uint64_t>(it->second->count.load());
        r.value[1] = it->second->reason.load();
        return r;
      }
      case PeerOp::kWaitOp: {
        auto it = ops_.find(a[0]);
        if (it == ops_.end()) return Status(STATUS_NOT_FOUND);
        PeerReply r;
        bool done = it->second->Wait(Millis(a[1]));
        r.value[0] = done ? 1 : 0;
        r.status = done ? it->second->Status() : STATUS_PENDING;
        return r;
      }
      case PeerOp::kClose: {
        Waiter* w = BeginClose(a[0]);
        if (w == nullptr) return Status(STATUS_NOT_FOUND);
        return Status(w->Wait(kWait) ? STATUS_SUCCESS : STATUS_IO_TIMEOUT);
      }
      case PeerOp::kStartClose: {
        auto it = objects_.find(a[0]);
        if (it == objects_.end() || it->second.closing) return Status(STATUS_NOT_FOUND);
        it->second.closing = true;
        Waiter* w = NewWaiter();
        PeerReply r;
        r.status = CloseOf(it->second.header)(it->second.header, &Waiter::OnClose, w);
        if (r.status != STATUS_PENDING) {
          w->Finish(r.status, nullptr);
          w->calls.fetch_sub(1);
        }
        closes_.push_back(w);
        PeerId op = NewId();
        ops_[op] = w;
        r.value[0] = op;
        return r;
      }
      case PeerOp::kStallProvider:
        return Stall(static_cast<int>(a[0]));
      default:
        return Status(STATUS_NOT_SUPPORTED);
    }
  }

  PeerId AdoptConnector(NDK_CONNECTOR* con) {
    PeerId id = Adopt(&con->Header);
    disconnects_[id] = std::make_unique<DisconnectRecord>();
    return id;
  }

  PeerReply Open(SOFTNDK_COMPLETION_MODE mode, uint64_t seed) {
    if (adapter_ != nullptr) return Status(STATUS_INVALID_DEVICE_STATE);
    if (!CreateTestHost(fabric_, &host_)) return Status(STATUS_INSUFFICIENT_RESOURCES);
    SOFTNDK_OPEN_OPTIONS options{};
    options.Size = sizeof(options);
    options.Fabric = fabric_;
    options.CompletionMode = mode;
    options.Seed = seed;
    NTSTATUS s = SoftNdkOpenAdapter(host_.if_index, NDK_VERSION{2, 1}, &options, &adapter_);
    if (!NT_SUCCESS(s)) {
      adapter_ = nullptr;
      return Status(s);
    }
    NDK_ADAPTER_INFO info{};
    ULONG size = sizeof(info);
    s = adapter_->Dispatch->NdkQueryAdapterInfo(adapter_, &info, &size);
    if (!NT_SUCCESS(s)) return Status(s);
    NDK_PD* pd;
    s = Create<NDK_PD>(
        [&](auto cb, auto ctx, NDK_PD** out) {
          return adapter_->Dispatch->NdkCreatePd(adapter_, cb, ctx, out);
        },
        &pd);
    if (!NT_SUCCESS(s)) return Status(s);
    default_pd_ = Adopt(&pd->Header);
    PeerReply r;
    const uint64_t fields[] = {info.Version.Major,
                               info.Version.Minor,
                               info.VendorId,
                               info.DeviceId,
                               info.MaxRegistrationSize,
                               info.MaxWindowSize,
                               info.FRMRPageCount,
                               info.MaxInitiatorRequestSge,
                               info.MaxReceiveRequestSge,
                               info.MaxReadRequestSge,
                               info.MaxTransferLength,
                               info.MaxInlineDataSize,
                               info.MaxInboundReadLimit,
                               info.MaxOutboundReadLimit,
                               info.MaxReceiveQueueDepth,
                               info.MaxInitiatorQueueDepth,
                               info.MaxSrqDepth,
                               info.MaxCqDepth,
                               info.LargeRequestThreshold,
                               info.MaxCallerData,
                               info.MaxCalleeData,
                               info.AdapterFlags,
                               static_cast<uint64_t>(info.RdmaTechnology)};
    for (uint64_t f : fields) PutU64(r.data, f);
    PutPeerAddress(r.data, host_.v4);
    PutPeerAddress(r.data, host_.v6);
    return r;
  }

  PeerReply RegisterRegion(size_t length, ULONG flags, size_t offset, PeerId pd_id) {
    NDK_PD* pd = Pd(pd_id);
    if (pd == nullptr || length == 0) return Status(STATUS_NOT_FOUND);
    Region r;
    size_t total = (offset + length + PAGE_SIZE - 1) / PAGE_SIZE * PAGE_SIZE;
    r.memory = static_cast<unsigned char*>(std::aligned_alloc(PAGE_SIZE, total));
    if (r.memory == nullptr) return Status(STATUS_INSUFFICIENT_RESOURCES);
    std::memset(r.memory, 0, total);
    r.start = r.memory + offset;
    r.length = length;
    r.mdl = IoAllocateMdl(r.start, static_cast<ULONG>(length), FALSE, FALSE, nullptr);
    MmBuildMdlForNonPagedPool(r.mdl);
    NTSTATUS s = Create<NDK_MR>(
        [&](auto cb, auto ctx, NDK_MR** out) {
          return pd->Dispatch->NdkCreateMr(pd, FALSE, cb, ctx, out);
        },
        &r.mr);
    if (!NT_SUCCESS(s)) {
      IoFreeMdl(r.mdl);
      std::free(r.memory);
      return Status(s);
    }
    PeerId id = Adopt(&r.mr->Header);
    NDK_MR* mr = r.mr;
    MDL* mdl = r.mdl;
    regions_[id] = std::move(r);
    s = Request([&](auto cb, auto ctx) {
      return mr->Dispatch->NdkRegisterMr(mr, mdl, length, flags, cb, ctx);
    });
    PeerReply reply;
    reply.status = s;
    reply.value[0] = id;
    reply.value[1] = reinterpret_cast<uintptr_t>(regions_[id].start);
    reply.value[2] = mr->Dispatch->NdkGetLocalTokenFromMr(mr);
    reply.value[3] = mr->Dispatch->NdkGetRemoteTokenFromMr(mr);
    return reply;
  }

  PeerReply CreateFastRegion(ULONG pages, bool remote, PeerId pd_id) {
    NDK_PD* pd = Pd(pd_id);
    if (pd == nullptr || pages == 0) return Status(STATUS_NOT_FOUND);
    Region r;
    r.fast = true;
    size_t total = static_cast<size_t>(pages) * PAGE_SIZE;
    r.memory = static_cast<unsigned char*>(std::aligned_alloc(PAGE_SIZE, total));
    if (r.memory == nullptr) return Status(STATUS_INSUFFICIENT_RESOURCES);
    std::memset(r.memory, 0, total);
    r.start = r.memory;
    r.length = total;
    r.mdl = IoAllocateMdl(r.start, static_cast<ULONG>(total), FALSE, FALSE, nullptr);
    MmBuildMdlForNonPagedPool(r.mdl);
    r.lam_storage.resize(4 + pages);
    r.lam = reinterpret_cast<NDK_LOGICAL_ADDRESS_MAPPING*>(r.lam_storage.data());
    ULONG lam_size = static_cast<ULONG>(r.lam_storage.size() * sizeof(uint64_t));
    ULONG fbo = 0;
    NDK_ADAPTER* ad = adapter_;
    MDL* mdl = r.mdl;
    NDK_LOGICAL_ADDRESS_MAPPING* lam = r.lam;
    NTSTATUS s = Request([&](auto cb, auto ctx) {
      return ad->Dispatch->NdkBuildLAM(ad, mdl, total, cb, ctx, lam, &lam_size, &fbo);
    });
    if (!NT_SUCCESS(s)) {
      IoFreeMdl(r.mdl);
      std::free(r.memory);
      return Status(s);
    }
    s = Create<NDK_MR>(
        [&](auto cb, auto ctx, NDK_MR** out) {
          return pd->Dispatch->NdkCreateMr(pd, TRUE, cb, ctx, out);
        },
        &r.mr);
    if (!NT_SUCCESS(s)) {
      ad->Dispatch->NdkReleaseLAM(ad, r.lam);
      IoFreeMdl(r.mdl);
      std::free(r.memory);
      return Status(s);
    }
    PeerId id = Adopt(&r.mr->Header);
    NDK_MR* mr = r.mr;
    regions_[id] = std::move(r);
    s = Request([&](auto cb, auto ctx) {
      return mr->Dispatch->NdkInitializeFastRegisterMr(mr, pages, remote ? TRUE : FALSE, cb, ctx);
    });
    PeerReply reply;
    reply.status = s;
    reply.value[0] = id;
    reply.value[1] = mr->Dispatch->NdkGetLocalTokenFromMr(mr);
    reply.value[2] = mr->Dispatch->NdkGetRemoteTokenFromMr(mr);
    return reply;
  }

  PeerReply Post(const PeerCommand& c) {
    const uint64_t* a = c.arg;
    NDK_QP* qp = Find<NDK_QP>(a[0], NdkObjectTypeQp);
    if (qp == nullptr) return Status(STATUS_NOT_FOUND);
    NTSTATUS s;
    std::vector<NDK_SGE> sges = Sges(c.data, &s);
    if (!NT_SUCCESS(s)) return Status(s);
    auto* context = reinterpret_cast<PVOID>(a[1]);
    NDK_SGE* list = sges.empty() ? nullptr : sges.data();
    auto n = static_cast<ULONG>(sges.size());
    auto flags = static_cast<ULONG>(a[2]);
    switch (c.op) {
      case PeerOp::kReceive:
        return Status(qp->Dispatch->NdkReceive(qp, context, list, n));
      case PeerOp::kSend:
        return Status(qp->Dispatch->NdkSend(qp, context, list, n, flags));
      case PeerOp::kSendAndInvalidate:
        return Status(qp->Dispatch->NdkSendAndInvalidate(qp, context, list, n, flags,
                                                         static_cast<UINT32>(a[3])));
      case PeerOp::kWrite:
        return Status(
            qp->Dispatch->NdkWrite(qp, context, list, n, a[3], static_cast<UINT32>(a[4]), flags));
      case PeerOp::kRead:
        return Status(
            qp->Dispatch->NdkRead(qp, context, list, n, a[3], static_cast<UINT32>(a[4]), flags));
      default:
        return Status(STATUS_NOT_SUPPORTED);
    }
  }

  PeerReply Poll(PeerId id, size_t max, size_t min, Millis timeout, bool ex) {
    NDK_CQ* cq = Find<NDK_CQ>(id, NdkObjectTypeCq);
    if (cq == nullptr) return Status(STATUS_NOT_FOUND);
    PeerReply reply;
    size_t got = 0;
    auto deadline = Clock::now() + timeout;
    for (;;) {
      NDK_RESULT_EX results[16];
      ULONG want = static_cast<ULONG>(std::min<size_t>(16, max - got));
      ULONG n = 0;
      if (want > 0) {
        if (ex) {
          n = cq->Dispatch->NdkGetCqResultsEx(cq, results, want);
        } else {
          NDK_RESULT plain[16];
          n = cq->Dispatch->NdkGetCqResults(cq, plain, want);
          for (ULONG i = 0; i < n; ++i) {
            results[i] = NDK_RESULT_EX{};
            results[i].Status = plain[i].Status;
            results[i].BytesTransferred = plain[i].BytesTransferred;
            results[i].QPContext = plain[i].QPContext;
            results[i].RequestContext = plain[i].RequestContext;
          }
        }
      }
      for (ULONG i = 0; i < n; ++i) {
        const NDK_RESULT_EX& x = results[i];
        PutU64(reply.data, static_cast<uint32_t>(x.Status));
        PutU64(reply.data, x.BytesTransferred);
        PutU64(reply.data, reinterpret_cast<uintptr_t>(x.QPContext));
        PutU64(reply.data, reinterpret_cast<uintptr_t>(x.RequestContext));
        PutU64(reply.data, static_cast<uint64_t>(x.Type));
        PutU64(reply.data, x.ProviderErrorCode);
        PutU64(reply.data, x.TypeSpecificCompletionOutput);
      }
      got += n;
      if (got >= min || got >= max || Clock::now() > deadline) break;
      if (n == 0) std::this_thread::sleep_for(Millis(1));
    }
    return reply;
  }

  PeerReply Connect(const PeerCommand& c) {
    const uint64_t* a = c.arg;
    bool shared = c.op == PeerOp::kConnectShared;
    NDK_CONNECTOR* con = Find<NDK_CONNECTOR>(a[0], NdkObjectTypeConnector);
    NDK_QP* qp = Find<NDK_QP>(a[1], NdkObjectTypeQp);
    NDK_SHARED_ENDPOINT* endpoint =
        shared ? Find<NDK_SHARED_ENDPOINT>(a[2], NdkObjectTypeSharedEndpoint) : nullptr;
    size_t addresses = shared ? 1 : 2;
    if (con == nullptr || qp == nullptr || (shared && endpoint == nullptr) ||
        c.data.size() < addresses * kAddressBytes)
      return Status(STATUS_NOT_FOUND);
    SOCKADDR_INET source = shared ? SOCKADDR_INET{} : ReadPeerAddress(c.data.data());
    SOCKADDR_INET destination = ReadPeerAddress(c.data.data() + (addresses - 1) * kAddressBytes);
    std::vector<uint8_t> data(c.data.begin() + static_cast<ptrdiff_t>(addresses * kAddressBytes),
                              c.data.end());
    ULONG ird = static_cast<ULONG>(shared ? a[3] : a[2]);
    ULONG ord = static_cast<ULONG>(shared ? a[4] : a[3]);
    bool has_data = (shared ? a[5] : a[4]) != 0;
    PVOID pdata = has_data ? data.data() : nullptr;
    ULONG plen = has_data ? static_cast<ULONG>(data.size()) : 0;
    return StartRequest([&](auto cb, auto ctx) {
      if (shared)
        return con->Dispatch->NdkConnectWithSharedEndpoint(
            con, qp, endpoint, reinterpret_cast<PSOCKADDR>(&destination),
            AddressLength(destination), ird, ord, pdata, plen, cb, ctx);
      return con->Dispatch->NdkConnect(con, qp, reinterpret_cast<PSOCKADDR>(&source),
                                       AddressLength(source),
                                       reinterpret_cast<PSOCKADDR>(&destination),
                                       AddressLength(destination), ird, ord, pdata, plen, cb, ctx);
    });
  }

  PeerReply Stall(int ms) {
    // A CQ and QP of its own: a flushed receive makes a notification, whose callback holds
    // the provider thread for `ms`.
    if (stall_qp_ == 0) {
      PeerCommand cq{PeerOp::kCreateCq, {4}, {}};
      PeerReply r = Run(cq);
      if (!NT_SUCCESS(r.status)) return r;
      stall_cq_ = r.value[0];
      PeerCommand qp{PeerOp::kCreateQp, {stall_cq_, stall_cq_, 2, 1, 1, 1, 0, 0}, {}};
      r = Run(qp);
      if (!NT_SUCCESS(r.status)) return r;
      stall_qp_ = r.value[0];
    }
    NDK_CQ* cq = Find<NDK_CQ>(stall_cq_, NdkObjectTypeCq);
    NDK_QP* qp = Find<NDK_QP>(stall_qp_, NdkObjectTypeQp);
    CqRecord& rec = *cqs_[stall_cq_];
    NDK_RESULT drain[4];
    while (cq->Dispatch->NdkGetCqResults(cq, drain, 4) > 0) {
    }
    rec.stalled = false;
    rec.stall_ms = ms;
    cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ANY);
    NTSTATUS s = qp->Dispatch->NdkReceive(qp, nullptr, nullptr, 0);
    if (!NT_SUCCESS(s)) return Status(s);
    qp->Dispatch->NdkFlush(qp);
    return Status(WaitUntil([&] { return rec.stalled.load(); }) ? STATUS_SUCCESS
                                                                : STATUS_IO_TIMEOUT);
  }

  // Closes everything, then the adapter and the host. Reports what went wrong.
  PeerReply ShutdownAll() {
    PeerReply reply;
    if (adapter_ == nullptr && host_.if_index == 0) return reply;
    std::ostringstream problems;
    if (adapter_ != nullptr) {
      // Every object, newest first (children before parents; closes wait for successors
      // anyway, R049). Connectors that arrived but were never taken are closed too.
      auto deadline = Clock::now() + kWait;
      for (;;) {
        for (auto& [id, rec] : listeners_) {
          std::lock_guard lock(rec->mutex);
          while (!rec->queue.empty()) {
            objects_[NewId()] = Entry{&rec->queue.front()->Header, false};
            rec->queue.pop_front();
          }
        }
        for (auto it = objects_.rbegin(); it != objects_.rend(); ++it)
          if (!it->second.closing) BeginClose(it->first);
        bool all = true;
        for (Waiter* w : closes_) all = all && w->Wait(Millis(0));
        bool queued = false;
        for (auto& [id, rec] : listeners_) {
          std::lock_guard lock(rec->mutex);
          queued = queued || !rec->queue.empty();
        }
        if (all && !queued) break;
        if (Clock::now() > deadline) {
          problems << "peer objects still closing after " << kWait.count() << " ms; ";
          break;
        }
        std::this_thread::sleep_for(Millis(1));
      }
      bool hung = !problems.str().empty();
      if (!hung) {
        for (auto& [id, r] : regions_) {
          if (r.lam != nullptr) adapter_->Dispatch->NdkReleaseLAM(adapter_, r.lam);
          r.lam = nullptr;
        }
        NDK_ADAPTER* adapter = adapter_;
        auto done = std::make_shared<std::promise<void>>();
        std::future<void> finished = done->get_future();
        std::thread closer([adapter, done] {
          SoftNdkCloseAdapter(adapter);
          done->set_value();
        });
        if (finished.wait_for(kWait) == std::future_status::ready) {
          closer.join();
        } else {
          closer.detach();
          hung = true;
          problems << "SoftNdkCloseAdapter of the peer did not return; ";
        }
      }
      if (hung) {
        // Callbacks may still come: leak everything they could touch.
        leaked_ = true;
      } else {
        for (auto& [id, r] : regions_) {
          IoFreeMdl(r.mdl);
          std::free(r.memory);
        }
        regions_.clear();
      }
      adapter_ = nullptr;
    }
    for (const auto& w : waiters_)
      if (w->calls.load() > 1)
        problems << "a peer callback was called " << w->calls.load() << " times; ";
    if (host_.if_index != 0 && !leaked_) {
      NTSTATUS s = DestroyTestHost(host_);
      if (!NT_SUCCESS(s)) problems << "destroying the peer's host: " << StatusText(s) << "; ";
    }
    host_.if_index = 0;
    std::string text = problems.str();
    if (!text.empty()) {
      reply.status = STATUS_INTERNAL_ERROR;
      reply.data.assign(text.begin(), text.end());
    }
    return reply;
  }

 public:
  bool leaked() const { return leaked_; }

 private:
  SOFTNDK_FABRIC fabric_;
  std::mutex execute_mutex_;
  TestHost host_{};
  NDK_ADAPTER* adapter_ = nullptr;
  PeerId next_id_ = 1;
  PeerId default_pd_ = 0;
  PeerId stall_cq_ = 0;
  PeerId stall_qp_ = 0;
  bool leaked_ = false;
  std::map<PeerId, Entry> objects_;
  std::map<PeerId, Region> regions_;
  std::map<PeerId, std::unique_ptr<CqRecord>> cqs_;
  std::map<PeerId, std::unique_ptr<ListenerRecord>> listeners_;
  std::map<PeerId, std::unique_ptr<DisconnectRecord>> disconnects_;
  std::map<PeerId, Waiter*> ops_;
  std::vector<Waiter*> closes_;
  std::deque<std::unique_ptr<Waiter>> waiters_;
};

// ---------------------------------------------------------------------- transports --

class DirectTransport final : public PeerTransport {
 public:
  explicit DirectTransport(SOFTNDK_FABRIC fabric) : engine_(std::make_unique<PeerEngine>(fabric)) {}
  ~DirectTransport() override { Stop(); }
  PeerReply Call(const PeerCommand& command, Millis) override {
    if (!engine_) {
      PeerReply r;
      r.status = STATUS_INVALID_DEVICE_STATE;
      return r;
    }
    return engine_->Execute(command);
  }
  bool Stop() override {
    if (engine_ && engine_->leaked()) {
      (void)engine_.release();  // callbacks may still reach it
      return true;
    }
    engine_.reset();
    return true;
  }

 private:
  std::unique_ptr<PeerEngine> engine_;
};

// Waits until `fd` is ready for `events` (POLLIN, POLLOUT): true at once without a
// deadline; false once the deadline has passed or the poll failed; EINTR retries.
bool WaitReady(int fd, short events, const Clock::time_point* deadline) {
  if (deadline == nullptr) return true;
  for (;;) {
    auto left = std::chrono::duration_cast<Millis>(*deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int ready = ::poll(&p, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    return ready > 0;
  }
}

// Reads or writes exactly `size` bytes; with a deadline (poll) unless `deadline` is null.
bool ReadFull(int fd, uint8_t* out, size_t size, const Clock::time_point* deadline) {
  size_t done = 0;
  while (done < size) {
    if (!WaitReady(fd, POLLIN, deadline)) return false;
    ssize_t n = ::read(fd, out + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    softndk::wire_received();  // what the other end did before sending is ordered before us
    done += static_cast<size_t>(n);
  }
  return true;
}

bool WriteFull(int fd, const std::vector<uint8_t>& bytes,
               const Clock::time_point* deadline = nullptr) {
  size_t done = 0;
  while (done < bytes.size()) {
    softndk::wire_sent();
    if (!WaitReady(fd, POLLOUT, deadline)) return false;
    // With a deadline, never blocked inside send: only in the poll.
    int flags = MSG_NOSIGNAL | (deadline != nullptr ? MSG_DONTWAIT : 0);
    ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, flags);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// The peer's thread: owns the engine (and so the adapter and every peer object) and
// serves requests until the other end closes.
void Serve(int fd, SOFTNDK_FABRIC fabric, std::shared_ptr<std::atomic<bool>> finished) {
  auto engine = std::make_unique<PeerEngine>(fabric);
  for (;;) {
    uint8_t record[kPeerRecordSize];
    if (!ReadFull(fd, record, sizeof(record), nullptr)) break;  // EOF: the client is done
    PeerCommand command;
    uint32_t sequence, length;
    if (!DecodePeerCommand(record, &command, &sequence, &length)) break;
    command.data.resize(length);
    if (length > 0 && !ReadFull(fd, command.data.data(), length, nullptr)) break;
    PeerReply reply = engine->Execute(command);
    if (!WriteFull(fd, EncodePeerReply(reply, sequence))) break;
  }
  engine->Execute(PeerCommand{PeerOp::kShutdown, {}, {}});
  if (engine->leaked()) (void)engine.release();
  engine.reset();
  ::close(fd);
  finished->store(true);
}

// The client's end of a command channel: one request at a time, each bounded by the wait
// the request names plus kWait; a channel that timed out or broke is marked broken and
// every later call fails at once.
class ChannelClient : public PeerTransport {
 public:
  PeerReply Call(const PeerCommand& command, Millis wait) override {
    PeerReply reply;
    reply.status = STATUS_IO_TIMEOUT;
    if (broken_) return reply;
    uint32_t sequence = ++sequence_;
    auto deadline = Clock::now() + wait + kWait;
    if (!WriteFull(fd_, EncodePeerCommand(command, sequence), &deadline)) {
      Broken("the request could not be written (the peer is gone or stuck)");
      return reply;
    }
    uint8_t record[kPeerRecordSize];
    uint32_t got_sequence, length;
    if (!ReadFull(fd_, record, sizeof(record), &deadline) ||
        !DecodePeerReply(record, &reply, &got_sequence, &length) || got_sequence != sequence) {
      Broken("no well-formed response in time");
      reply = PeerReply{};
      reply.status = STATUS_IO_TIMEOUT;
      return reply;
    }
    reply.data.resize(length);
    if (length > 0 && !ReadFull(fd_, reply.data.data(), length, &deadline)) {
      Broken("the response's data did not arrive in time");
      reply = PeerReply{};
      reply.status = STATUS_IO_TIMEOUT;
    }
    return reply;
  }

 protected:
  void Broken(const char* what) {
    broken_ = true;
    ADD_FAILURE() << "peer channel: " << what << "; the peer is treated as gone" << Ended();
  }
  // What became of the peer when its channel broke ("" when it is not known).
  virtual std::string Ended() { return ""; }

  int fd_ = -1;
  bool broken_ = false;
  bool stopped_ = false;

 private:
  uint32_t sequence_ = 0;
};

class ChannelTransport final : public ChannelClient {
 public:
  explicit ChannelTransport(SOFTNDK_FABRIC fabric) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      ADD_FAILURE() << "socketpair: " << std::strerror(errno);
      broken_ = true;
      return;
    }
    fd_ = fds[0];
    thread_ = std::thread(Serve, fds[1], fabric, finished_);
  }
  ~ChannelTransport() override { Stop(); }

  bool Stop() override {
    if (stopped_) return true;
    stopped_ = true;
    if (fd_ >= 0) {
      ::shutdown(fd_, SHUT_RDWR);  // the peer thread sees EOF and shuts its engine down
    }
    bool ended = WaitUntil([&] { return finished_->load(); }, kWait * 3);
    if (thread_.joinable()) {
      if (ended) {
        thread_.join();
      } else {
        thread_.detach();
        ADD_FAILURE() << "the channel peer's thread did not end (its adapter close hung?)";
      }
    }
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    return ended;
  }

 private:
  std::thread thread_;
  std::shared_ptr<std::atomic<bool>> finished_ = std::make_shared<std::atomic<bool>>(false);
};

// The process form: this test binary re-executed as the peer (RunPeerProcessIfAsked, called
// by the suite's main before GoogleTest starts), one child per Peer, reached through a
// socketpair. The child is forked and at once replaced by a fresh image (execve of
// /proc/self/exe): only async-signal-safe calls run between fork and exec, so the test's
// threads and locks never matter. It dies with the thread that forked it (PR_SET_PDEATHSIG,
// SIGKILL; the test's main thread, which lives as long as the test process), and Stop()
// reaps it: a clean exit, or a failure saying how it ended, and a child that does not end
// in time is killed and reaped too.
constexpr char kPeerFdFlag[] = "--softndk-peer-fd=";
constexpr char kPeerFabricFlag[] = "--softndk-peer-fabric=";
constexpr char kPeerParentFlag[] = "--softndk-peer-parent=";
constexpr int kPeerChildFd = 3;  // the channel's number in the child
// Exit codes of the peer process.
constexpr int kPeerExitBadArguments = 2;
constexpr int kPeerExitOrphaned = 3;
constexpr int kPeerExitFailures = 4;  // a check failed inside the peer (its output says which)
constexpr int kPeerExitExecFailed = 127;

std::string DescribeExit(int status) {
  std::ostringstream text;
  if (WIFEXITED(status)) {
    text << "exited with " << WEXITSTATUS(status);
    switch (WEXITSTATUS(status)) {
      case kPeerExitBadArguments: text << " (bad arguments)"; break;
      case kPeerExitOrphaned: text << " (its parent was gone before it started)"; break;
      case kPeerExitFailures: text << " (a check failed in the peer: see its output above)"; break;
      case kPeerExitExecFailed: text << " (execve of /proc/self/exe failed)"; break;
      default: break;
    }
  } else if (WIFSIGNALED(status)) {
    text << "killed by signal " << WTERMSIG(status) << " (" << strsignal(WTERMSIG(status)) << ")";
  } else {
    text << "ended with wait status " << status;
  }
  return text.str();
}

class ProcessTransport final : public ChannelClient {
 public:
  explicit ProcessTransport(SOFTNDK_FABRIC fabric) {
    // PR_SET_PDEATHSIG follows the forking thread, not the process: a thread that ends
    // before the test would take the peer with it.
    if (::gettid() != ::getpid())
      ADD_FAILURE() << "the peer process is spawned from a thread other than the main thread: "
                       "it would die with that thread (PR_SET_PDEATHSIG)";
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      ADD_FAILURE() << "socketpair: " << std::strerror(errno);
      broken_ = true;
      return;
    }
    // Everything the child needs is prepared before fork: after it, only async-signal-safe
    // calls (no allocation, no locks).
    const pid_t parent = ::getpid();
    char self[4096] = "/proc/self/exe";  // argv[0]: the binary's name, for ps and the logs
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) self[n] = '\0';
    std::string args[] = {self,
                          kPeerFdFlag + std::to_string(kPeerChildFd),
                          kPeerFabricFlag + std::to_string(static_cast<int>(fabric)),
                          kPeerParentFlag + std::to_string(parent)};
    char* argv[] = {args[0].data(), args[1].data(), args[2].data(), args[3].data(), nullptr};
    const int child_end = fds[1];
    pid_t pid = ::fork();
    if (pid == 0) {
      // The child: die with the parent's thread; a parent already gone is not waited for.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(kPeerExitOrphaned);
      // The channel becomes descriptor 3 (without close-on-exec); every other inherited
      // descriptor above 2 is closed (a socket of the test's own adapter must not outlive
      // it in the peer).
      if (child_end == kPeerChildFd) {
        ::fcntl(kPeerChildFd, F_SETFD, 0);
      } else if (::dup2(child_end, kPeerChildFd) != kPeerChildFd) {
        ::_exit(kPeerExitExecFailed);
      }
      ::syscall(SYS_close_range, kPeerChildFd + 1, ~0u, 0u);
      ::execve("/proc/self/exe", argv, environ);
      ::_exit(kPeerExitExecFailed);
    }
    int saved = errno;
    ::close(child_end);
    if (pid < 0) {
      ADD_FAILURE() << "fork: " << std::strerror(saved);
      ::close(fds[0]);
      broken_ = true;
      return;
    }
    pid_ = pid;
    fd_ = fds[0];
  }
  ~ProcessTransport() override { Stop(); }
  int process_id() const override { return pid_; }

  bool Stop() override {
    if (stopped_) return true;
    stopped_ = true;
    // EOF: the peer shuts its engine down and exits.
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
    bool ended = true;
    if (pid_ > 0 && !reaped_) {
      if (!WaitUntil([&] { return Reap(WNOHANG); }, kWait * 3)) {
        ended = false;
        ADD_FAILURE() << "the peer process " << pid_ << " did not end within "
                      << (kWait * 3).count() << " ms of its channel closing; killed";
        ::kill(pid_, SIGKILL);
        Reap(0);
      }
      if (!reaped_) {
        ended = false;
        ADD_FAILURE() << "waitpid(" << pid_ << "): " << std::strerror(errno);
      }
    }
    if (reaped_ && !(WIFEXITED(status_) && WEXITSTATUS(status_) == 0)) {
      if (ended) ADD_FAILURE() << "the peer process " << pid_ << " " << DescribeExit(status_);
      ended = false;
    }
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    return ended;
  }

 private:
  // Collects the child's exit status once it has ended; true when it has been reaped.
  bool Reap(int options) {
    if (reaped_) return true;
    pid_t got;
    while ((got = ::waitpid(pid_, &status_, options)) < 0 && errno == EINTR) {
    }
    if (got == pid_) reaped_ = true;
    return reaped_ || got < 0;  // an error (no such child): nothing left to wait for
  }
  std::string Ended() override {
    // A child that died is gone at once; give one that is exiting a moment to finish.
    if (pid_ <= 0 || !WaitUntil([&] { return Reap(WNOHANG); }, Millis(200))) return "";
    return reaped_ ? "; the peer process " + DescribeExit(status_) : "";
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

bool ParseFlag(const char* arg, const char* flag, long long* value) {
  size_t n = std::strlen(flag);
  if (std::strncmp(arg, flag, n) != 0) return false;
  char* end = nullptr;
  errno = 0;
  *value = std::strtoll(arg + n, &end, 10);
  return errno == 0 && end != arg + n && *end == '\0';
}

}  // namespace

std::unique_ptr<PeerTransport> MakeDirectPeer(SOFTNDK_FABRIC fabric) {
  return std::make_unique<DirectTransport>(fabric);
}

std::unique_ptr<PeerTransport> MakeChannelPeer(SOFTNDK_FABRIC fabric) {
  return std::make_unique<ChannelTransport>(fabric);
}

std::unique_ptr<PeerTransport> MakeProcessPeer(SOFTNDK_FABRIC fabric) {
  return std::make_unique<ProcessTransport>(fabric);
}

bool RunPeerProcessIfAsked(int argc, char** argv, int* exit_code) {
  if (argc < 2 || std::strncmp(argv[1], kPeerFdFlag, std::strlen(kPeerFdFlag)) != 0) return false;
  long long fd = -1, fabric = -1, parent = -1;
  if (argc != 4 || !ParseFlag(argv[1], kPeerFdFlag, &fd) ||
      !ParseFlag(argv[2], kPeerFabricFlag, &fabric) ||
      !ParseFlag(argv[3], kPeerParentFlag, &parent) || fd < 0) {
    std::fprintf(stderr, "softndk peer: expected %sN %sN %sPID\n", kPeerFdFlag, kPeerFabricFlag,
                 kPeerParentFlag);
    *exit_code = kPeerExitBadArguments;
    return true;
  }
  // PR_SET_PDEATHSIG survived the execve; a parent that ended before it was set is not
  // waited for.
  if (::getppid() != static_cast<pid_t>(parent)) {
    *exit_code = kPeerExitOrphaned;
    return true;
  }
  ::prctl(PR_SET_NAME, "softndk-peer");  // what ps and top show
  auto finished = std::make_shared<std::atomic<bool>>(false);
  Serve(static_cast<int>(fd), static_cast<SOFTNDK_FABRIC>(fabric), finished);
  // Checks inside the engine (the harness's helpers it shares) report through GoogleTest,
  // which records them outside any test here.
  *exit_code = testing::UnitTest::GetInstance()->ad_hoc_test_result().Failed() ? kPeerExitFailures
                                                                                 : 0;
  return true;
}

// --------------------------------------------------------------------------- facade --

Peer::Peer(PeerForm form, SOFTNDK_FABRIC fabric)
    : form_(form),
      transport_(form == PeerForm::kProcess   ? MakeProcessPeer(fabric)
                 : form == PeerForm::kChannel ? MakeChannelPeer(fabric)
                                              : MakeDirectPeer(fabric)) {}

Peer::~Peer() { Shutdown(); }

PeerReply Peer::Call(PeerOp op, std::initializer_list<uint64_t> args, std::vector<uint8_t> data,
                     Millis wait) {
  PeerCommand c;
  c.op = op;
  size_t i = 0;
  for (uint64_t v : args) c.arg[i++] = v;
  c.data = std::move(data);
  if (stopped_) {
    PeerReply r;
    r.status = STATUS_INVALID_DEVICE_STATE;
    return r;
  }
  return transport_->Call(c, wait);
}

PeerId Peer::Created(const PeerReply& reply, const char* what, NTSTATUS* status) {
  if (status != nullptr) *status = reply.status;
  if (NT_SUCCESS(reply.status)) return reply.value[0];
  if (status == nullptr) ADD_FAILURE() << "peer " << what << ": " << StatusText(reply.status);
  return 0;
}

bool Peer::SetTunable(const char* name, const char* value) {
  std::vector<uint8_t> data(name, name + std::strlen(name));
  data.push_back(0);
  data.insert(data.end(), value, value + std::strlen(value));
  PeerReply r = Call(PeerOp::kSetTunable, {}, data);
  EXPECT_EQ(r.status, STATUS_SUCCESS) << "peer tunable " << name << "=" << value;
  return NT_SUCCESS(r.status);
}

bool Peer::Open(SOFTNDK_COMPLETION_MODE mode, ULONG64 seed) {
  PeerReply r = Call(PeerOp::kOpen, {static_cast<uint64_t>(mode), seed});
  if (!NT_SUCCESS(r.status) || r.data.size() < 23 * 8 + 2 * kAddressBytes) {
    ADD_FAILURE() << "opening the peer's adapter: " << StatusText(r.status);
    return false;
  }
  uint64_t f[23];
  for (int i = 0; i < 23; ++i) f[i] = GetU64(&r.data[static_cast<size_t>(8 * i)]);
  info_.Version = NDK_VERSION{static_cast<USHORT>(f[0]), static_cast<USHORT>(f[1])};
  info_.VendorId = static_cast<UINT32>(f[2]);
  info_.DeviceId = static_cast<UINT32>(f[3]);
  info_.MaxRegistrationSize = f[4];
  info_.MaxWindowSize = f[5];
  ULONG* ulongs[] = {&info_.FRMRPageCount,         &info_.MaxInitiatorRequestSge,
                     &info_.MaxReceiveRequestSge,  &info_.MaxReadRequestSge,
                     &info_.MaxTransferLength,     &info_.MaxInlineDataSize,
                     &info_.MaxInboundReadLimit,   &info_.MaxOutboundReadLimit,
                     &info_.MaxReceiveQueueDepth,  &info_.MaxInitiatorQueueDepth,
                     &info_.MaxSrqDepth,           &info_.MaxCqDepth,
                     &info_.LargeRequestThreshold, &info_.MaxCallerData,
                     &info_.MaxCalleeData,         &info_.AdapterFlags};
  for (int i = 0; i < 16; ++i) *ulongs[i] = static_cast<ULONG>(f[6 + i]);
  info_.RdmaTechnology = static_cast<NDK_RDMA_TECHNOLOGY>(f[22]);
  v4_ = ReadPeerAddress(&r.data[23 * 8]);
  v6_ = ReadPeerAddress(&r.data[23 * 8 + kAddressBytes]);
  return true;
}

SOCKADDR_INET Peer::Address(int family, uint16_t port) const {
  SOCKADDR_INET a = family == AF_INET6 ? v6_ : v4_;
  if (family == AF_INET6)
    a.Ipv6.sin6_port = htons(port);
  else
    a.Ipv4.sin_port = htons(port);
  return a;
}

void Peer::Shutdown() {
  if (stopped_) return;
  PeerReply r = Call(PeerOp::kShutdown, {}, {}, kWait * 4);
  EXPECT_EQ(r.status, STATUS_SUCCESS)
      << "peer shutdown: " << std::string(r.data.begin(), r.data.end());
  stopped_ = true;
  EXPECT_TRUE(transport_->Stop()) << "the peer did not end";
}

PeerId Peer::CreateCq(ULONG depth) {
  return Created(Call(PeerOp::kCreateCq, {depth}), "NdkCreateCq", nullptr);
}
PeerId Peer::CreatePd() { return Created(Call(PeerOp::kCreatePd, {}), "NdkCreatePd", nullptr); }

PeerQp Peer::CreateQp(ULONG depth, ULONG sge, ULONG inline_data, ULONG cq_depth, bool shared_cq) {
  // Within the peer's limits (tests may have lowered them).
  depth = std::min({depth, info_.MaxReceiveQueueDepth, info_.MaxInitiatorQueueDepth});
  sge = std::min({sge, info_.MaxReceiveRequestSge, info_.MaxInitiatorRequestSge});
  inline_data = std::min(inline_data, info_.MaxInlineDataSize);
  cq_depth = std::min(cq_depth, info_.MaxCqDepth);
  PeerQp q;
  q.rcq = CreateCq(cq_depth);
  q.icq = shared_cq ? q.rcq : CreateCq(cq_depth);
  if (q.rcq == 0 || q.icq == 0) return q;
  q.qp = CreateQpOn(q.rcq, q.icq, depth, depth, sge, sge, inline_data);
  return q;
}

PeerId Peer::CreateQpOn(PeerId rcq, PeerId icq, ULONG rdepth, ULONG idepth, ULONG rsge, ULONG isge,
                        ULONG inline_data, PeerId pd, NTSTATUS* status) {
  return Created(Call(PeerOp::kCreateQp, {rcq, icq, rdepth, idepth, rsge, isge, inline_data, pd}),
                 "NdkCreateQp", status);
}

PeerId Peer::CreateMw(PeerId pd) {
  return Created(Call(PeerOp::kCreateMw, {pd}), "NdkCreateMw", nullptr);
}
PeerId Peer::CreateListener() {
  return Created(Call(PeerOp::kCreateListener, {}), "NdkCreateListener", nullptr);
}
PeerId Peer::CreateConnector() {
  return Created(Call(PeerOp::kCreateConnector, {}), "NdkCreateConnector", nullptr);
}
PeerId Peer::CreateSharedEndpoint(const SOCKADDR_INET& address, NTSTATUS* status) {
  std::vector<uint8_t> data;
  PutPeerAddress(data, address);
  return Created(Call(PeerOp::kCreateSharedEndpoint, {}, data), "NdkCreateSharedEndpoint", status);
}

NTSTATUS Peer::Close(PeerId object) { return Call(PeerOp::kClose, {object}).status; }

PeerAsync Peer::StartClose(PeerId object) {
  PeerReply r = Call(PeerOp::kStartClose, {object});
  return PeerAsync{r.status, r.value[0]};
}

PeerRegion Peer::Register(size_t length, ULONG mr_flags, size_t page_offset, PeerId pd,
                          NTSTATUS* status) {
  PeerReply r = Call(PeerOp::kRegister, {length, mr_flags, page_offset, pd});
  if (status != nullptr) *status = r.status;
  PeerRegion region;
  if (!NT_SUCCESS(r.status)) {
    if (status == nullptr) ADD_FAILURE() << "peer NdkRegisterMr: " << StatusText(r.status);
    return region;
  }
  region.id = r.value[0];
  region.address = r.value[1];
  region.length = length;
  region.local_token = static_cast<UINT32>(r.value[2]);
  region.remote_token = static_cast<UINT32>(r.value[3]);
  return region;
}

NTSTATUS Peer::Deregister(const PeerRegion& region) {
  return Call(PeerOp::kDeregister, {region.id}).status;
}

void Peer::Fill(const PeerRegion& region, size_t offset, const std::vector<uint8_t>& bytes) {
  PeerReply r = Call(PeerOp::kFill, {region.id, offset}, bytes);
  EXPECT_EQ(r.status, STATUS_SUCCESS) << "peer fill";
}

std::vector<uint8_t> Peer::ReadMemory(const PeerRegion& region, size_t offset, size_t length) {
  PeerReply r = Call(PeerOp::kReadMemory, {region.id, offset, length});
  EXPECT_EQ(r.status, STATUS_SUCCESS) << "peer read-back";
  return r.data;
}

PeerRegion Peer::CreateFastRegion(ULONG pages, bool remote_access, PeerId pd) {
  PeerReply r = Call(PeerOp::kCreateFastRegion, {pages, remote_access ? 1u : 0u, pd});
  PeerRegion region;
  if (!NT_SUCCESS(r.status)) {
    ADD_FAILURE() << "peer fast-register MR: " << StatusText(r.status);
    return region;
  }
  region.id = r.value[0];
  region.length = static_cast<size_t>(pages) * PAGE_SIZE;
  region.local_token = static_cast<UINT32>(r.value[1]);
  region.remote_token = static_cast<UINT32>(r.value[2]);
  return region;
}

NTSTATUS Peer::FastRegister(PeerId qp, PeerRegion& region, size_t length, ULONG fbo, ULONG flags,
                            uint64_t context) {
  PeerReply r = Call(PeerOp::kFastRegister, {qp, region.id, length, fbo, flags, context});
  if (NT_SUCCESS(r.status)) {
    region.address = r.value[0];
    region.length = length;
    region.local_token = static_cast<UINT32>(r.value[1]);
    region.remote_token = static_cast<UINT32>(r.value[2]);
  }
  return r.status;
}

NTSTATUS Peer::Bind(PeerId qp, const PeerRegion& region, PeerId mw, size_t offset, size_t length,
                    ULONG flags, UINT32* token, uint64_t context) {
  PeerReply r = Call(PeerOp::kBind, {qp, region.id, mw, offset, length, flags, context});
  if (token != nullptr) *token = static_cast<UINT32>(r.value[0]);
  return r.status;
}

NTSTATUS Peer::Invalidate(PeerId qp, PeerId target, ULONG flags, uint64_t context) {
  return Call(PeerOp::kInvalidate, {qp, target, flags, context}).status;
}

UINT32 Peer::PrivilegedToken(PeerId pd) {
  return static_cast<UINT32>(Call(PeerOp::kPrivilegedToken, {pd}).value[0]);
}

NTSTATUS Peer::Receive(PeerId qp, uint64_t context, const std::vector<PeerSge>& sges) {
  return Call(PeerOp::kReceive, {qp, context}, EncodePeerSges(sges)).status;
}
NTSTATUS Peer::Send(PeerId qp, uint64_t context, const std::vector<PeerSge>& sges, ULONG flags) {
  return Call(PeerOp::kSend, {qp, context, flags}, EncodePeerSges(sges)).status;
}
NTSTATUS Peer::SendAndInvalidate(PeerId qp, uint64_t context, const std::vector<PeerSge>& sges,
                                 UINT32 token, ULONG flags) {
  return Call(PeerOp::kSendAndInvalidate, {qp, context, flags, token}, EncodePeerSges(sges)).status;
}
NTSTATUS Peer::Write(PeerId qp, uint64_t context, const std::vector<PeerSge>& sges,
                     uint64_t address, UINT32 token, ULONG flags) {
  return Call(PeerOp::kWrite, {qp, context, flags, address, token}, EncodePeerSges(sges)).status;
}
NTSTATUS Peer::Read(PeerId qp, uint64_t context, const std::vector<PeerSge>& sges, uint64_t address,
                    UINT32 token, ULONG flags) {
  return Call(PeerOp::kRead, {qp, context, flags, address, token}, EncodePeerSges(sges)).status;
}
void Peer::Flush(PeerId qp) { Call(PeerOp::kFlush, {qp}); }

std::vector<PeerResult> Peer::Poll(PeerId cq, size_t min, size_t max, Millis timeout, bool ex) {
  PeerReply r =
      Call(PeerOp::kPoll, {cq, max, min, static_cast<uint64_t>(timeout.count()), ex ? 1u : 0u}, {},
           timeout + kWait);
  std::vector<PeerResult> results;
  for (size_t at = 0; at + 56 <= r.data.size(); at += 56) {
    PeerResult x;
    x.status = static_cast<NTSTATUS>(GetU64(&r.data[at]));
    x.bytes = static_cast<ULONG>(GetU64(&r.data[at + 8]));
    x.qp_context = GetU64(&r.data[at + 16]);
    x.request_context = GetU64(&r.data[at + 24]);
    x.type = static_cast<ULONG>(GetU64(&r.data[at + 32]));
    x.provider_error = static_cast<ULONG>(GetU64(&r.data[at + 40]));
    x.type_specific = GetU64(&r.data[at + 48]);
    if (ex) ExpectTypeSpecificOutput(x.type, x.type_specific);  // R107
    results.push_back(x);
  }
  return results;
}

void Peer::ArmCq(PeerId cq, ULONG type) { Call(PeerOp::kArmCq, {cq, type}); }

int Peer::Notifications(PeerId cq, NTSTATUS* last) {
  PeerReply r = Call(PeerOp::kNotifications, {cq});
  if (last != nullptr) *last = static_cast<NTSTATUS>(r.value[1]);
  return static_cast<int>(r.value[0]);
}

NTSTATUS Peer::Listen(PeerId listener, const SOCKADDR_INET& address) {
  std::vector<uint8_t> data;
  PutPeerAddress(data, address);
  return Call(PeerOp::kListen, {listener}, data).status;
}

void Peer::PauseListener(PeerId listener, bool pause) {
  Call(PeerOp::kPauseListener, {listener, pause ? 1u : 0u});
}

PeerId Peer::NextConnectEvent(PeerId listener, Millis timeout) {
  PeerReply r = Call(PeerOp::kNextConnectEvent, {listener, static_cast<uint64_t>(timeout.count())},
                     {}, timeout + kWait);
  return NT_SUCCESS(r.status) ? r.value[0] : 0;
}

PeerAsync Peer::Connect(PeerId connector, PeerId qp, const SOCKADDR_INET& source,
                        const SOCKADDR_INET& destination, ULONG ird, ULONG ord,
                        const std::vector<uint8_t>* data) {
  std::vector<uint8_t> bytes;
  PutPeerAddress(bytes, source);
  PutPeerAddress(bytes, destination);
  if (data != nullptr) bytes.insert(bytes.end(), data->begin(), data->end());
  PeerReply r = Call(PeerOp::kConnect, {connector, qp, ird, ord, data != nullptr ? 1u : 0u}, bytes);
  return PeerAsync{r.status, r.value[0]};
}

PeerAsync Peer::ConnectShared(PeerId connector, PeerId qp, PeerId endpoint,
                              const SOCKADDR_INET& destination, ULONG ird, ULONG ord,
                              const std::vector<uint8_t>* data) {
  std::vector<uint8_t> bytes;
  PutPeerAddress(bytes, destination);
  if (data != nullptr) bytes.insert(bytes.end(), data->begin(), data->end());
  PeerReply r = Call(PeerOp::kConnectShared,
                     {connector, qp, endpoint, ird, ord, data != nullptr ? 1u : 0u}, bytes);
  return PeerAsync{r.status, r.value[0]};
}

NTSTATUS Peer::CompleteConnect(PeerId connector, bool ex, bool with_event) {
  return Call(PeerOp::kCompleteConnect, {connector, ex ? 1u : 0u, with_event ? 1u : 0u}).status;
}

PeerAsync Peer::Accept(PeerId connector, PeerId qp, ULONG ird, ULONG ord,
                       const std::vector<uint8_t>* data, bool ex, bool with_event) {
  PeerReply r =
      Call(PeerOp::kAccept,
           {connector, qp, ird, ord, ex ? 1u : 0u, data != nullptr ? 1u : 0u, with_event ? 1u : 0u},
           data != nullptr ? *data : std::vector<uint8_t>{});
  return PeerAsync{r.status, r.value[0]};
}

NTSTATUS Peer::Reject(PeerId connector, const std::vector<uint8_t>* data) {
  return Call(PeerOp::kReject, {connector, data != nullptr ? 1u : 0u},
              data != nullptr ? *data : std::vector<uint8_t>{})
      .status;
}

PeerConnectionData Peer::GetConnectionData(PeerId connector, ULONG buffer_length,
                                           bool null_buffer) {
  PeerReply r = Call(PeerOp::kGetConnectionData, {connector, buffer_length, null_buffer ? 1u : 0u});
  PeerConnectionData d;
  d.status = r.status;
  d.inbound = static_cast<ULONG>(r.value[0]);
  d.outbound = static_cast<ULONG>(r.value[1]);
  d.length = static_cast<ULONG>(r.value[2]);
  d.data = r.data;
  return d;
}

NTSTATUS Peer::GetLocalAddress(PeerId object, SOCKADDR_INET* address) {
  PeerReply r = Call(PeerOp::kGetLocalAddress, {object});
  if (NT_SUCCESS(r.status) && r.data.size() >= kAddressBytes)
    *address = ReadPeerAddress(r.data.data());
  return r.status;
}

NTSTATUS Peer::GetPeerAddress(PeerId connector, SOCKADDR_INET* address) {
  PeerReply r = Call(PeerOp::kGetPeerAddress, {connector});
  if (NT_SUCCESS(r.status) && r.data.size() >= kAddressBytes)
    *address = ReadPeerAddress(r.data.data());
  return r.status;
}

NTSTATUS Peer::Disconnect(PeerId connector) {
  return Call(PeerOp::kDisconnect, {connector}).status;
}

int Peer::DisconnectEvents(PeerId connector, ULONG* reason) {
  PeerReply r = Call(PeerOp::kDisconnectEvents, {connector});
  if (reason != nullptr) *reason = static_cast<ULONG>(r.value[1]);
  return static_cast<int>(r.value[0]);
}

NTSTATUS Peer::WaitOp(const PeerAsync& op, Millis timeout, bool* done) {
  PeerReply r =
      Call(PeerOp::kWaitOp, {op.op, static_cast<uint64_t>(timeout.count())}, {}, timeout + kWait);
  if (done != nullptr) *done = r.value[0] != 0;
  return r.status;
}

void Peer::StallProvider(Millis duration) {
  PeerReply r = Call(PeerOp::kStallProvider, {static_cast<uint64_t>(duration.count())});
  EXPECT_EQ(r.status, STATUS_SUCCESS) << "stalling the peer's provider thread";
}

}  // namespace conformance
