// What the end-to-end tests share: bounded waits for completions, creating and closing
// objects through their dispatch tables, connect and disconnect events, one side of a
// connection (adapter, CQ, PD, QP, a registered buffer) and socket addresses. Public
// headers only.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ndk/mdl.h"
#include "ndk/ndkpi.h"
#include "ndk/softndk.h"

namespace e2e {

using namespace std::chrono_literals;

// One completion of any kind, waited for with a bound.
struct Waiter {
  std::mutex mutex;
  std::condition_variable cv;
  int calls = 0;
  NTSTATUS status = STATUS_PENDING;
  NDK_OBJECT_HEADER* object = nullptr;

  void signal(NTSTATUS s, NDK_OBJECT_HEADER* o) {
    std::lock_guard lock(mutex);
    ++calls;
    status = s;
    object = o;
    cv.notify_all();
  }
  NTSTATUS wait(NTSTATUS returned) {
    if (returned != STATUS_PENDING) return returned;
    std::unique_lock lock(mutex);
    if (!cv.wait_for(lock, 5s, [this] { return calls > 0; })) return STATUS_IO_TIMEOUT;
    return status;
  }
  static void on_create(PVOID c, NTSTATUS s, NDK_OBJECT_HEADER* o) { static_cast<Waiter*>(c)->signal(s, o); }
  static void on_request(PVOID c, NTSTATUS s) { static_cast<Waiter*>(c)->signal(s, nullptr); }
  static void on_close(PVOID c) { static_cast<Waiter*>(c)->signal(STATUS_SUCCESS, nullptr); }
};

template <class T, class F>
T* create(F&& call) {
  Waiter w;
  T* out = nullptr;
  NTSTATUS s = call(&Waiter::on_create, &w, &out);
  if (s == STATUS_PENDING) {
    if (w.wait(s) != STATUS_SUCCESS) return nullptr;
    return reinterpret_cast<T*>(w.object);
  }
  return s == STATUS_SUCCESS ? out : nullptr;
}

template <class T>
void close(T*& object) {
  if (object == nullptr) return;
  Waiter w;
  NDK_FN_CLOSE_OBJECT fn = *reinterpret_cast<const NDK_FN_CLOSE_OBJECT*>(object->Dispatch);
  EXPECT_EQ(w.wait(fn(&object->Header, &Waiter::on_close, &w)), STATUS_SUCCESS);
  object = nullptr;
}

void no_cq_event(PVOID, NTSTATUS) {}

// What the connect event hands over, and the disconnect events seen.
struct Incoming {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<NDK_CONNECTOR*> connectors;
  static void on_connect(PVOID c, NDK_CONNECTOR* connector) {
    auto* self = static_cast<Incoming*>(c);
    std::lock_guard lock(self->mutex);
    self->connectors.push_back(connector);
    self->cv.notify_all();
  }
  NDK_CONNECTOR* next() {
    std::unique_lock lock(mutex);
    if (!cv.wait_for(lock, 5s, [this] { return !connectors.empty(); })) return nullptr;
    NDK_CONNECTOR* c = connectors.front();
    connectors.erase(connectors.begin());
    return c;
  }
};

struct Disconnects {
  std::atomic<int> count{0};
  std::atomic<ULONG> reason{0};
  static void on(PVOID c) { static_cast<Disconnects*>(c)->count++; }
  static void on_ex(PVOID c, ULONG reason) {
    static_cast<Disconnects*>(c)->reason = reason;
    static_cast<Disconnects*>(c)->count++;
  }
};

// A region of `pd` over `bytes` (its MDL built in `mdl`, which the caller frees after
// closing the MR), registered with `flags`; null if that failed.
inline NDK_MR* register_region(NDK_PD* pd, void* bytes, size_t size, ULONG flags, PMDL& mdl) {
  mdl = IoAllocateMdl(bytes, static_cast<ULONG>(size), FALSE, FALSE, nullptr);
  MmBuildMdlForNonPagedPool(mdl);
  NDK_MR* mr = create<NDK_MR>([&](auto cb, auto ctx, NDK_MR** out) { return pd->Dispatch->NdkCreateMr(pd, FALSE, cb, ctx, out); });
  if (mr == nullptr) return nullptr;
  Waiter w;
  if (w.wait(mr->Dispatch->NdkRegisterMr(mr, mdl, size, flags, &Waiter::on_request, &w)) != STATUS_SUCCESS) {
    close(mr);
    return nullptr;
  }
  return mr;
}

// One side: adapter, CQ, PD, QP and a registered buffer.
struct Side {
  NDK_ADAPTER* adapter = nullptr;
  NDK_CQ* cq = nullptr;
  NDK_PD* pd = nullptr;
  NDK_QP* qp = nullptr;
  NDK_MR* mr = nullptr;
  std::vector<unsigned char> buffer;
  PMDL mdl = nullptr;
  NDK_ADAPTER_INFO info{};
  ULONG cq_depth = 256;  // set before open()

  void open(ULONG ifindex, SOFTNDK_COMPLETION_MODE mode, ULONG mr_flags,
            SOFTNDK_FABRIC fabric = SOFTNDK_FABRIC_INPROC) {
    SOFTNDK_OPEN_OPTIONS options{sizeof(options), fabric, mode, 7};
    ASSERT_EQ(SoftNdkOpenAdapter(ifindex, NDK_VERSION{2, 0}, &options, &adapter), STATUS_SUCCESS);
    ULONG size = sizeof(info);
    ASSERT_EQ(adapter->Dispatch->NdkQueryAdapterInfo(adapter, &info, &size), STATUS_SUCCESS);
    cq = create<NDK_CQ>([&](auto cb, auto ctx, NDK_CQ** out) {
      return adapter->Dispatch->NdkCreateCq(adapter, cq_depth, no_cq_event, nullptr, nullptr, cb, ctx, out);
    });
    ASSERT_NE(cq, nullptr);
    pd = create<NDK_PD>([&](auto cb, auto ctx, NDK_PD** out) { return adapter->Dispatch->NdkCreatePd(adapter, cb, ctx, out); });
    ASSERT_NE(pd, nullptr);
    qp = new_qp(this, 64);
    ASSERT_NE(qp, nullptr);
    buffer.assign(1 << 20, 0);
    mr = register_region(pd, buffer.data(), buffer.size(), mr_flags, mdl);
    ASSERT_NE(mr, nullptr);
  }
  // Another QP on the side's CQ and PD (receive and initiator depth `depth`), or null.
  NDK_QP* new_qp(PVOID context, ULONG depth) {
    return create<NDK_QP>([&](auto cb, auto ctx, NDK_QP** out) {
      return pd->Dispatch->NdkCreateQp(pd, cq, cq, context, depth, depth, 4, 4, 64, cb, ctx, out);
    });
  }
  NDK_SGE sge(size_t offset, ULONG length) const {
    NDK_SGE s{};
    s.VirtualAddress = const_cast<unsigned char*>(buffer.data()) + offset;
    s.Length = length;
    s.MemoryRegionToken = mr->Dispatch->NdkGetLocalTokenFromMr(mr);
    return s;
  }
  uint64_t address(size_t offset) const { return reinterpret_cast<uintptr_t>(buffer.data()) + offset; }
  UINT32 remote_token() const { return mr->Dispatch->NdkGetRemoteTokenFromMr(mr); }
  // Polls until `n` results arrived (bounded).
  std::vector<NDK_RESULT_EX> poll(size_t n) {
    std::vector<NDK_RESULT_EX> results;
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (results.size() < n && std::chrono::steady_clock::now() < deadline) {
      NDK_RESULT_EX r[16];
      ULONG got = cq->Dispatch->NdkGetCqResultsEx(cq, r, 16);
      results.insert(results.end(), r, r + got);
      if (got == 0) std::this_thread::yield();
    }
    return results;
  }
  void close_all() {
    close(qp);
    close(mr);
    if (mdl) IoFreeMdl(mdl);
    mdl = nullptr;
    close(pd);
    close(cq);
    if (adapter) SoftNdkCloseAdapter(adapter);
    adapter = nullptr;
  }
};

SOCKADDR_INET ipv4(const char* text, uint16_t port) {
  SOCKADDR_INET a{};
  a.Ipv4.sin_family = AF_INET;
  a.Ipv4.sin_port = htons(port);
  inet_pton(AF_INET, text, &a.Ipv4.sin_addr);
  return a;
}

SOCKADDR_INET ipv6(const char* text, uint16_t port) {
  SOCKADDR_INET a{};
  a.Ipv6.sin6_family = AF_INET6;
  a.Ipv6.sin6_port = htons(port);
  inet_pton(AF_INET6, text, &a.Ipv6.sin6_addr);
  return a;
}

ULONG length_of(const SOCKADDR_INET& a) { return a.si_family == AF_INET ? sizeof(SOCKADDR_IN) : sizeof(SOCKADDR_IN6); }

// Two sides and the connection between them: a server listening on server_address_ (port
// 0: the one chosen, read back) and a client connecting from client_address_. Fixtures
// derive from it with their parameter type, open server_ and client_ in SetUp and call
// close_link() in TearDown.
template <class Param>
class LinkFixture : public ::testing::TestWithParam<Param> {
 protected:
  void listen() {
    NDK_ADAPTER* s = server_.adapter;
    listener_ = create<NDK_LISTENER>([&](auto cb, auto ctx, NDK_LISTENER** out) {
      return s->Dispatch->NdkCreateListener(s, &Incoming::on_connect, &incoming_, cb, ctx, out);
    });
    ASSERT_NE(listener_, nullptr);
    Waiter listened;
    ASSERT_EQ(listened.wait(listener_->Dispatch->NdkListen(
                  listener_, reinterpret_cast<PSOCKADDR>(&server_address_), length_of(server_address_),
                  &Waiter::on_request, &listened)),
              STATUS_SUCCESS);
    ULONG length = sizeof(server_address_);
    ASSERT_EQ(listener_->Dispatch->NdkGetLocalAddress(listener_, reinterpret_cast<PSOCKADDR>(&server_address_),
                                                      &length),
              STATUS_SUCCESS);
  }

  static NDK_CONNECTOR* new_connector(Side& side) {
    NDK_ADAPTER* a = side.adapter;
    return create<NDK_CONNECTOR>([&](auto cb, auto ctx, NDK_CONNECTOR** out) {
      return a->Dispatch->NdkCreateConnector(a, cb, ctx, out);
    });
  }

  // Starts a Connect (read limits 4 and 4) carrying `hello`; `connected` learns its outcome.
  void start_connect(const char* hello, ULONG length, Waiter& connected) {
    client_connector_ = new_connector(client_);
    ASSERT_NE(client_connector_, nullptr);
    ASSERT_EQ(client_connector_->Dispatch->NdkConnect(
                  client_connector_, client_.qp, reinterpret_cast<PSOCKADDR>(&client_address_),
                  length_of(client_address_), reinterpret_cast<PSOCKADDR>(&server_address_),
                  length_of(server_address_), 4, 4, const_cast<char*>(hello), length,
                  &Waiter::on_request, &connected),
              STATUS_PENDING);  // the peer decides
  }

  // Listen, connect with private data, accept (IRD 2, ORD 8) with private data, complete
  // (the Ex form when `complete_ex`). The client's outbound limit is min(4, the server's
  // IRD 2) where the fabric carries it.
  void connect(ULONG expected_outbound = 2, bool complete_ex = false) {
    ASSERT_NO_FATAL_FAILURE(listen());
    const char hello[] = "hello from the client";
    Waiter connected;
    ASSERT_NO_FATAL_FAILURE(start_connect(hello, sizeof(hello), connected));
    server_connector_ = incoming_.next();
    ASSERT_NE(server_connector_, nullptr);
    char got[64] = {};
    ULONG got_length = sizeof(got), inbound = 0, outbound = 0;
    ASSERT_EQ(server_connector_->Dispatch->NdkGetConnectionData(server_connector_, &inbound, &outbound, got,
                                                                &got_length),
              STATUS_SUCCESS);
    EXPECT_EQ(got_length, sizeof(hello));
    EXPECT_STREQ(got, hello);
    const char welcome[] = "welcome";
    Waiter accepted;
    ASSERT_EQ(server_connector_->Dispatch->NdkAcceptEx(server_connector_, server_.qp, 2, 8,
                                                       const_cast<char*>(welcome), sizeof(welcome),
                                                       &Disconnects::on_ex, &server_disconnects_,
                                                       &Waiter::on_request, &accepted),
              STATUS_PENDING);  // until the client completes (R165)
    ASSERT_EQ(connected.wait(STATUS_PENDING), STATUS_SUCCESS);
    got_length = sizeof(got);
    ASSERT_EQ(client_connector_->Dispatch->NdkGetConnectionData(client_connector_, &inbound, &outbound, got,
                                                                &got_length),
              STATUS_SUCCESS);
    EXPECT_STREQ(got, welcome);
    EXPECT_EQ(inbound, 4u);  // min(4, the server's ORD 8)
    EXPECT_EQ(outbound, expected_outbound);
    Waiter completed;
    NTSTATUS returned =
        complete_ex ? client_connector_->Dispatch->NdkCompleteConnectEx(client_connector_, &Disconnects::on_ex,
                                                                       &client_disconnects_, &Waiter::on_request,
                                                                       &completed)
                    : client_connector_->Dispatch->NdkCompleteConnect(client_connector_, &Disconnects::on,
                                                                     &client_disconnects_, &Waiter::on_request,
                                                                     &completed);
    ASSERT_EQ(completed.wait(returned), STATUS_SUCCESS);
    ASSERT_EQ(accepted.wait(STATUS_PENDING), STATUS_SUCCESS);
  }

  void close_link() {
    close(client_connector_);
    close(server_connector_);
    close(listener_);
    client_.close_all();
    server_.close_all();
  }

  SOCKADDR_INET server_address_{}, client_address_{};
  Side server_, client_;
  Incoming incoming_;
  Disconnects server_disconnects_, client_disconnects_;
  NDK_LISTENER* listener_ = nullptr;
  NDK_CONNECTOR* client_connector_ = nullptr;
  NDK_CONNECTOR* server_connector_ = nullptr;
};

}  // namespace e2e
