#include "perf/pair.hpp"

#include <arpa/inet.h>
#include <net/if.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>

namespace softndk::perf {

std::string status_text(NTSTATUS status) {
  if (const char* name = SoftNdkStatusName(status)) return name;
  char text[16];
  std::snprintf(text, sizeof(text), "0x%08X", static_cast<unsigned>(status));
  return text;
}

Error::Error(const std::string& what, NTSTATUS status)
    : std::runtime_error(what + ": " + status_text(status)), status_(status) {}

namespace {

constexpr auto kTimeout = std::chrono::seconds(10);
constexpr uint16_t kPort = 18515;  // perftest's default port, for familiarity
constexpr size_t kPage = 4096;

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
  NTSTATUS settle(NTSTATUS returned) {
    if (returned != STATUS_PENDING) return returned;
    std::unique_lock lock(mutex);
    if (!cv.wait_for(lock, kTimeout, [this] { return called; })) return STATUS_IO_TIMEOUT;
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
// a failure on stderr, since it runs from a destructor.
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

void no_cq_event(PVOID, NTSTATUS) {}

SOCKADDR_INET make_address(bool ipv6, bool server, unsigned n, uint16_t port) {
  SOCKADDR_INET a{};
  char text[64];
  if (ipv6) {
    std::snprintf(text, sizeof(text), "2001:db8:%s::%x", server ? "5e:1" : "5e:2", n);
    a.Ipv6.sin6_family = AF_INET6;
    a.Ipv6.sin6_port = htons(port);
    inet_pton(AF_INET6, text, &a.Ipv6.sin6_addr);
  } else {
    std::snprintf(text, sizeof(text), "%s.%u", server ? "192.0.2" : "198.51.100", n);
    a.Ipv4.sin_family = AF_INET;
    a.Ipv4.sin_port = htons(port);
    inet_pton(AF_INET, text, &a.Ipv4.sin_addr);
  }
  return a;
}

ULONG length_of(const SOCKADDR_INET& a) {
  return a.si_family == AF_INET ? sizeof(SOCKADDR_IN) : sizeof(SOCKADDR_IN6);
}

PSOCKADDR as_sockaddr(SOCKADDR_INET& a) { return reinterpret_cast<PSOCKADDR>(&a); }

PVOID data_of(const std::vector<uint8_t>& v) { return v.empty() ? nullptr : const_cast<uint8_t*>(v.data()); }
ULONG size_of(const std::vector<uint8_t>& v) { return static_cast<ULONG>(v.size()); }

// The private data the peer sent (empty when it sent none).
std::vector<uint8_t> connection_data(NDK_CONNECTOR* connector, const char* who) {
  ULONG length = 0;
  NTSTATUS status = connector->Dispatch->NdkGetConnectionData(connector, nullptr, nullptr, nullptr, &length);
  std::vector<uint8_t> data(length);
  if (status == STATUS_SUCCESS && length > 0)
    status = connector->Dispatch->NdkGetConnectionData(connector, nullptr, nullptr, data.data(), &length);
  if (status != STATUS_SUCCESS) throw Error(std::string("reading the connection data (") + who + ")", status);
  data.resize(length);
  return data;
}

// Creates a host on the next free documentation address (x.1 .. x.254, shared by every
// Pair of the process); another owner of an address just moves us on.
void create_host(Endpoint& e, bool ipv6, bool server) {
  static std::atomic<unsigned> next{0};
  NTSTATUS status = STATUS_ADDRESS_ALREADY_EXISTS;
  for (int tries = 0; tries < 254 && status == STATUS_ADDRESS_ALREADY_EXISTS; ++tries) {
    unsigned n = next.fetch_add(1) % 254 + 1;
    e.address = make_address(ipv6, server, n, server ? kPort : 0);
    status = SoftNdkCreateInprocHost(e.name, &e.address, 1, &e.host);
  }
  if (status != STATUS_SUCCESS) {
    e.host = 0;
    throw Error(std::string("creating the ") + e.name + " host", status);
  }
}

}  // namespace

// Connect events raised on the listener (the passive connectors, in order), and the
// connect and accept requests, which may complete during teardown after a failure.
struct Pair::Incoming {
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
  NDK_CONNECTOR* next() {
    std::unique_lock lock(mutex);
    if (!cv.wait_for(lock, kTimeout, [this] { return !connectors.empty(); })) return nullptr;
    NDK_CONNECTOR* c = connectors.front();
    connectors.pop_front();
    return c;
  }
};

Pair::Pair(const PairOptions& options) : options_(options), incoming_(std::make_unique<Incoming>()) {
  if (options_.area_size == 0 || options_.queue_depth == 0)
    throw Error("area_size and queue_depth must be positive", STATUS_INVALID_PARAMETER);
  client_.name = "perf-client";
  server_.name = "perf-server";
  try {
    open(server_, "server", true);
    open(client_, "client", false);
    connect();
  } catch (...) {
    teardown();
    throw;
  }
}

Pair::~Pair() { teardown(); }

void Pair::on_disconnect(PVOID context) { static_cast<Pair*>(context)->disconnects_++; }

void Pair::open(Endpoint& e, const char* name, bool server) {
  const std::string who = std::string(" (") + name + ")";
  ULONG ifindex;
  if (options_.fabric == SOFTNDK_FABRIC_TCP) {
    // Loopback; the server listens on a port the kernel picks (read back after NdkListen).
    ifindex = if_nametoindex("lo");
    e.address = {};
    if (options_.ipv6) {
      e.address.Ipv6.sin6_family = AF_INET6;
      e.address.Ipv6.sin6_addr = in6addr_loopback;
    } else {
      e.address.Ipv4.sin_family = AF_INET;
      e.address.Ipv4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
  } else {
    create_host(e, options_.ipv6, server);
    ifindex = e.host;
  }

  SOFTNDK_OPEN_OPTIONS open{sizeof(open), options_.fabric, options_.completion_mode, 0};
  NTSTATUS status = SoftNdkOpenAdapter(ifindex, NDK_VERSION{2, 0}, &open, &e.adapter);
  if (status != STATUS_SUCCESS) {
    e.adapter = nullptr;
    throw Error("opening the adapter" + who, status);
  }
  ULONG info_size = sizeof(e.info);
  status = e.adapter->Dispatch->NdkQueryAdapterInfo(e.adapter, &e.info, &info_size);
  if (status != STATUS_SUCCESS) throw Error("querying the adapter" + who, status);

  NDK_ADAPTER* adapter = e.adapter;
  ULONG cq_depth = 2 * options_.queue_depth;
  e.send_cq = create<NDK_CQ>("creating the send CQ", [&](auto cb, auto ctx, NDK_CQ** out) {
    return adapter->Dispatch->NdkCreateCq(adapter, cq_depth, no_cq_event, nullptr, nullptr, cb, ctx, out);
  });
  e.recv_cq = create<NDK_CQ>("creating the receive CQ", [&](auto cb, auto ctx, NDK_CQ** out) {
    return adapter->Dispatch->NdkCreateCq(adapter, cq_depth, no_cq_event, nullptr, nullptr, cb, ctx, out);
  });
  e.pd = create<NDK_PD>("creating the PD", [&](auto cb, auto ctx, NDK_PD** out) {
    return adapter->Dispatch->NdkCreatePd(adapter, cb, ctx, out);
  });
  NDK_PD* pd = e.pd;
  e.inline_data = std::min(options_.inline_data, e.info.MaxInlineDataSize);
  e.max_sge = std::max<ULONG>(1, std::min({options_.max_sge, e.info.MaxReceiveRequestSge,
                                           e.info.MaxInitiatorRequestSge}));
  e.qp = create<NDK_QP>("creating the QP", [&](auto cb, auto ctx, NDK_QP** out) {
    return pd->Dispatch->NdkCreateQp(pd, e.recv_cq, e.send_cq, &e, options_.queue_depth, options_.queue_depth,
                                     e.max_sge, e.max_sge, e.inline_data, cb, ctx, out);
  });

  // Two areas, each rounded up to whole pages.
  e.area = (options_.area_size + kPage - 1) / kPage * kPage;
  size_t bytes = 2 * e.area;
  if (bytes > 0xFFFFFFFFull) throw Error("area_size too large for one MDL", STATUS_INVALID_PARAMETER);
  e.buffer = static_cast<uint8_t*>(std::aligned_alloc(kPage, bytes));
  if (e.buffer == nullptr) throw Error("allocating the buffer", STATUS_INSUFFICIENT_RESOURCES);
  std::memset(e.buffer, 0, bytes);  // touch every page before any measurement
  e.mdl = IoAllocateMdl(e.buffer, static_cast<ULONG>(bytes), FALSE, FALSE, nullptr);
  if (e.mdl == nullptr) throw Error("allocating the MDL", STATUS_INSUFFICIENT_RESOURCES);
  MmBuildMdlForNonPagedPool(e.mdl);
  e.mr = create<NDK_MR>("creating the MR", [&](auto cb, auto ctx, NDK_MR** out) {
    return pd->Dispatch->NdkCreateMr(pd, FALSE, cb, ctx, out);
  });
  NDK_MR* mr = e.mr;
  constexpr ULONG kFlags =
      NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ | NDK_MR_FLAG_ALLOW_REMOTE_WRITE;
  request("registering the MR", [&](auto cb, auto ctx) {
    return mr->Dispatch->NdkRegisterMr(mr, e.mdl, bytes, kFlags, cb, ctx);
  });
  e.local_token = mr->Dispatch->NdkGetLocalTokenFromMr(mr);
  e.remote_token = mr->Dispatch->NdkGetRemoteTokenFromMr(mr);
}

void Pair::connect() {
  NDK_ADAPTER* s = server_.adapter;
  Incoming* incoming = incoming_.get();
  listener_ = create<NDK_LISTENER>("creating the listener", [&](auto cb, auto ctx, NDK_LISTENER** out) {
    return s->Dispatch->NdkCreateListener(s, &Incoming::on_connect, incoming, cb, ctx, out);
  });
  request("listening", [&](auto cb, auto ctx) {
    return listener_->Dispatch->NdkListen(listener_, as_sockaddr(server_.address), length_of(server_.address), cb, ctx);
  });
  ULONG address_length = sizeof(server_.address);  // the port, when the kernel chose it
  NTSTATUS got = listener_->Dispatch->NdkGetLocalAddress(listener_, as_sockaddr(server_.address), &address_length);
  if (got != STATUS_SUCCESS) throw Error("reading the listener's address", got);
  NDK_ADAPTER* c = client_.adapter;
  client_.connector = create<NDK_CONNECTOR>("creating the connector", [&](auto cb, auto ctx, NDK_CONNECTOR** out) {
    return c->Dispatch->NdkCreateConnector(c, cb, ctx, out);
  });

  // The connect completes only once the server accepted, so it is settled after that.
  ULONG ird = std::min(client_.info.MaxInboundReadLimit, server_.info.MaxOutboundReadLimit);
  ULONG ord = std::min(client_.info.MaxOutboundReadLimit, server_.info.MaxInboundReadLimit);
  Waiter& connected = incoming_->connected;
  NTSTATUS returned = client_.connector->Dispatch->NdkConnect(
      client_.connector, client_.qp, as_sockaddr(client_.address), length_of(client_.address),
      as_sockaddr(server_.address), length_of(server_.address), ird, ord, data_of(options_.caller_data),
      size_of(options_.caller_data), &Waiter::on_request, &connected);
  if (returned != STATUS_PENDING && returned != STATUS_SUCCESS) throw Error("connecting", returned);

  server_.connector = incoming_->next();
  if (server_.connector == nullptr) throw Error("waiting for the connect event", STATUS_IO_TIMEOUT);
  server_.peer_data = connection_data(server_.connector, "the server");
  Waiter& accepted = incoming_->accepted;
  NTSTATUS accept_returned = STATUS_PENDING;
  if (options_.server_answer == PairOptions::Answer::kAccept) {
    accept_returned = server_.connector->Dispatch->NdkAccept(
        server_.connector, server_.qp, ord, ird, data_of(options_.callee_data), size_of(options_.callee_data),
        &Pair::on_disconnect, this, &Waiter::on_request, &accepted);
    if (accept_returned != STATUS_PENDING && accept_returned != STATUS_SUCCESS)
      throw Error("accepting", accept_returned);
  } else if (options_.server_answer == PairOptions::Answer::kReject) {
    NTSTATUS rejected = server_.connector->Dispatch->NdkReject(server_.connector, data_of(options_.callee_data),
                                                               size_of(options_.callee_data));
    if (rejected != STATUS_SUCCESS) throw Error("rejecting", rejected);
  }

  NTSTATUS status = connected.settle(returned);
  if (status != STATUS_SUCCESS) throw Error("connecting", status);
  client_.peer_data = connection_data(client_.connector, "the client");
  request("completing the connection", [&](auto cb, auto ctx) {
    return client_.connector->Dispatch->NdkCompleteConnect(client_.connector, &Pair::on_disconnect, this, cb, ctx);
  });
  status = accepted.settle(accept_returned);
  if (status != STATUS_SUCCESS) throw Error("accepting", status);
}

void Pair::teardown() noexcept {
  // A graceful disconnect first, so neither side sees an abort; a connection that a run
  // broke answers STATUS_CONNECTION_INVALID, which is fine here.
  if (client_.connector != nullptr && server_.connector != nullptr) {
    Waiter w;
    w.settle(client_.connector->Dispatch->NdkDisconnect(client_.connector, &Waiter::on_request, &w));
  }
  close(client_.connector, "client connector");
  close(server_.connector, "server connector");
  close(listener_, "listener");
  // A connect event raised after we stopped waiting for it: close its connector too.
  while (!incoming_->connectors.empty()) {
    NDK_CONNECTOR* extra = incoming_->connectors.front();
    incoming_->connectors.pop_front();
    close(extra, "stray connector");
  }
  for (Endpoint* e : {&client_, &server_}) {
    close(e->qp, "QP");
    close(e->mr, "MR");
    if (e->mdl != nullptr) IoFreeMdl(e->mdl);
    e->mdl = nullptr;
    close(e->pd, "PD");
    close(e->send_cq, "send CQ");
    close(e->recv_cq, "receive CQ");
    if (e->adapter != nullptr) SoftNdkCloseAdapter(e->adapter);
    e->adapter = nullptr;
    std::free(e->buffer);
    e->buffer = nullptr;
    if (e->host != 0) {
      NTSTATUS status = SoftNdkDestroyInprocHost(e->host);
      if (status != STATUS_SUCCESS)
        std::fprintf(stderr, "softndk perf: destroying the %s host: %s\n", e->name, status_text(status).c_str());
    }
    e->host = 0;
  }
}

}  // namespace softndk::perf
