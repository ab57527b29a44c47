#include "perf/pair.hpp"

#include "perf/ndk_call.hpp"

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

namespace {

using namespace detail;

constexpr uint16_t kPort = 18515;  // perftest's default port, for familiarity

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

Pair::Pair(const PairOptions& options) : options_(options), incoming_(std::make_unique<detail::Incoming>()) {
  if (options_.area_size == 0 || options_.queue_depth == 0)
    throw Error("area_size and queue_depth must be positive", STATUS_INVALID_PARAMETER);
  client_.name = "perf-client";
  server_.name = "perf-server";
  try {
    open(server_, true);
    open(client_, false);
    connect();
  } catch (...) {
    teardown();
    throw;
  }
}

Pair::~Pair() { teardown(); }

void Pair::on_disconnect(PVOID context) { static_cast<Pair*>(context)->disconnects_++; }

void Pair::open(Endpoint& e, bool server) {
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

  open_adapter(e, options_, ifindex);
  create_queues(e, options_);
}

void Pair::connect() {
  listener_ = listen(server_, incoming_.get());
  // The connect completes only once the server accepted, so it is settled after that.
  ULONG ird = std::min(client_.info.MaxInboundReadLimit, server_.info.MaxOutboundReadLimit);
  ULONG ord = std::min(client_.info.MaxOutboundReadLimit, server_.info.MaxInboundReadLimit);
  Waiter& connected = incoming_->connected;
  NTSTATUS returned = start_connect(client_, server_.address, ird, ord, options_.caller_data, connected);

  server_.connector = incoming_->next(kTimeout, nullptr);
  if (server_.connector == nullptr) throw Error("waiting for the connect event", STATUS_IO_TIMEOUT);
  server_.peer_data = connection_data(server_.connector, "the server");
  Waiter& accepted = incoming_->accepted;
  NTSTATUS accept_returned = STATUS_PENDING;
  if (options_.server_answer == PairOptions::Answer::kAccept) {
    accept_returned = start_accept(server_, ord, ird, options_.callee_data, &Pair::on_disconnect, this, accepted);
  } else if (options_.server_answer == PairOptions::Answer::kReject) {
    NTSTATUS rejected = server_.connector->Dispatch->NdkReject(server_.connector, data_of(options_.callee_data),
                                                               size_of(options_.callee_data));
    if (rejected != STATUS_SUCCESS) throw Error("rejecting", rejected);
  }

  finish_connect(client_, connected, returned, &Pair::on_disconnect, this);
  NTSTATUS status = accepted.settle(accept_returned);
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
  incoming_->close_all();
  for (Endpoint* e : {&client_, &server_}) {
    close_endpoint(*e);
    if (e->host != 0) {
      NTSTATUS status = SoftNdkDestroyInprocHost(e->host);
      if (status != STATUS_SUCCESS)
        std::fprintf(stderr, "softndk perf: destroying the %s host: %s\n", e->name, status_text(status).c_str());
    }
    e->host = 0;
  }
}

}  // namespace softndk::perf
