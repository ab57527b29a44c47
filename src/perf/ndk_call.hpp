// Internal to src/perf: running an NDK create, request or close to its final status,
// whichever way it completes, and the socket-address helpers the set-up needs.
#pragma once

#include <arpa/inet.h>

#include <chrono>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "perf/pair.hpp"

namespace softndk::perf::detail {

constexpr auto kTimeout = std::chrono::seconds(10);

// One completion of a create, request or close, whichever path it takes.
struct Waiter {
  std::mutex mutex;
  std::condition_variable cv;
  bool called = false;
  NTSTATUS status = STATUS_PENDING;
  NDK_OBJECT_HEADER* object = nullptr;

  void signal(NTSTATUS s, NDK_OBJECT_HEADER* o) {
    std::lock_guard lock(mutex);
    called = true;
    status = s;
    object = o;
    cv.notify_all();
  }
  // The final status of a call that returned `returned`.
  NTSTATUS settle(NTSTATUS returned, std::chrono::milliseconds timeout = kTimeout) {
    if (returned != STATUS_PENDING) return returned;
    std::unique_lock lock(mutex);
    if (!cv.wait_for(lock, timeout, [this] { return called; })) return STATUS_IO_TIMEOUT;
    return status;
  }
  static void on_create(PVOID c, NTSTATUS s, NDK_OBJECT_HEADER* o) { static_cast<Waiter*>(c)->signal(s, o); }
  static void on_request(PVOID c, NTSTATUS s) { static_cast<Waiter*>(c)->signal(s, nullptr); }
  static void on_close(PVOID c) { static_cast<Waiter*>(c)->signal(STATUS_SUCCESS, nullptr); }
};

// Runs a create call; returns the object or throws.
template <class T, class F>
T* create(const char* what, F&& call) {
  Waiter w;
  T* out = nullptr;
  NTSTATUS returned = call(&Waiter::on_create, &w, &out);
  NTSTATUS status = w.settle(returned);
  if (status != STATUS_SUCCESS) throw Error(what, status);
  return returned == STATUS_PENDING ? reinterpret_cast<T*>(w.object) : out;
}

// Runs a request call; throws unless it succeeds.
template <class F>
void request(const char* what, F&& call) {
  Waiter w;
  NTSTATUS status = w.settle(call(&Waiter::on_request, &w));
  if (status != STATUS_SUCCESS) throw Error(what, status);
}

// Closes any NDK object (its close entry comes first in every dispatch table); reports
// a failure on stderr, since it runs from destructors.
template <class T>
void close(T*& object, const char* what) noexcept {
  if (object == nullptr) return;
  Waiter w;
  auto fn = *reinterpret_cast<const NDK_FN_CLOSE_OBJECT*>(object->Dispatch);
  NTSTATUS status = w.settle(fn(&object->Header, &Waiter::on_close, &w));
  if (status != STATUS_SUCCESS)
    std::fprintf(stderr, "softndk perf: closing the %s: %s\n", what, status_text(status).c_str());
  object = nullptr;
}

// Connect events raised on a listener (the passive connectors, in order), and the
// connect and accept requests, which may complete during teardown after a failure.
struct Incoming {
  Waiter connected, accepted;
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<NDK_CONNECTOR*> connectors;

  static void on_connect(PVOID context, NDK_CONNECTOR* connector) {
    auto* self = static_cast<Incoming*>(context);
    std::lock_guard lock(self->mutex);
    self->connectors.push_back(connector);
    self->cv.notify_all();
  }
  // The next passive connector; nullptr after `timeout`, or once *stop is set (looked at
  // every 50 ms).
  NDK_CONNECTOR* next(std::chrono::milliseconds timeout, const std::atomic<bool>* stop) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::unique_lock lock(mutex);
    while (connectors.empty()) {
      if ((stop != nullptr && stop->load()) || std::chrono::steady_clock::now() >= deadline) return nullptr;
      cv.wait_for(lock, std::chrono::milliseconds(50));
    }
    NDK_CONNECTOR* c = connectors.front();
    connectors.pop_front();
    return c;
  }
  // Closes the connectors of connect events nobody took.
  void close_all() noexcept {
    while (!connectors.empty()) {
      NDK_CONNECTOR* extra = connectors.front();
      connectors.pop_front();
      close(extra, "stray connector");
    }
  }
};

inline ULONG length_of(const SOCKADDR_INET& a) {
  return a.si_family == AF_INET ? sizeof(SOCKADDR_IN) : sizeof(SOCKADDR_IN6);
}
inline PSOCKADDR as_sockaddr(SOCKADDR_INET& a) { return reinterpret_cast<PSOCKADDR>(&a); }
inline PVOID data_of(const std::vector<uint8_t>& v) {
  return v.empty() ? nullptr : const_cast<uint8_t*>(v.data());
}
inline ULONG size_of(const std::vector<uint8_t>& v) { return static_cast<ULONG>(v.size()); }

// The private data the peer sent (empty when it sent none).
std::vector<uint8_t> connection_data(NDK_CONNECTOR* connector, const char* who);

// Opens e.adapter on interface `ifindex` of `options.fabric` (0: the interface that owns
// e.address) and queries its limits.
void open_adapter(Endpoint& e, const EndpointOptions& options, ULONG ifindex);
// Creates e's CQs, PD, QP and registered buffer (out, in and control areas).
void create_queues(Endpoint& e, const EndpointOptions& options);
// The connection steps, shared by a Pair (both sides here, interleaved) and a Session
// (one side per process).
// Server: a listener on e.address (a port the kernel picked is read back into it).
NDK_LISTENER* listen(Endpoint& e, Incoming* incoming);
// Client: creates e.connector and starts the connect to `to`; returns what NdkConnect
// returned (throws on an immediate failure).
NTSTATUS start_connect(Endpoint& e, SOCKADDR_INET to, ULONG ird, ULONG ord, const std::vector<uint8_t>& data,
                       Waiter& connected);
// Client: waits for the connect, reads the server's private data, completes the connection.
void finish_connect(Endpoint& e, Waiter& connected, NTSTATUS returned, NDK_FN_DISCONNECT_EVENT_CALLBACK on_disconnect,
                    PVOID context, std::chrono::milliseconds timeout = kTimeout);
// Server: accepts the request on e.connector; returns what NdkAccept returned (throws on an
// immediate failure). The accept completes once the client completed the connection.
NTSTATUS start_accept(Endpoint& e, ULONG ird, ULONG ord, const std::vector<uint8_t>& data,
                      NDK_FN_DISCONNECT_EVENT_CALLBACK on_disconnect, PVOID context, Waiter& accepted);

// Closes what open_adapter and create_queues created (not the connector), in dependency order.
void close_endpoint(Endpoint& e) noexcept;

}  // namespace softndk::perf::detail
