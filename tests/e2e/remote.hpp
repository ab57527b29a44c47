// A SoftNDK peer in another process (process.hpp), as a consumer protocol would meet it:
// the server listens on its host's address and accepts with private data offering one
// registered region (token, address, size); the client connects and reads the offer.
#pragma once

#include <net/if.h>

#include <cstdlib>
#include <string>

#include "e2e.hpp"
#include "process.hpp"

namespace e2e {

// Where a role runs: its interface and address (a namespace's, or the loopback's), from
// SOFTNDK_TEST_IFNAME and SOFTNDK_TEST_ADDRESS.
struct Host {
  std::string ifname = "lo";
  std::string address = "127.0.0.1";
};

inline Host role_host() {
  Host host;
  if (const char* name = std::getenv("SOFTNDK_TEST_IFNAME")) host.ifname = name;
  if (const char* address = std::getenv("SOFTNDK_TEST_ADDRESS")) host.address = address;
  return host;
}

// What the server's accept carries.
struct Offer {
  UINT32 token;
  UINT64 address;
  UINT64 size;
};

constexpr ULONG kRemoteAccess =
    NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ | NDK_MR_FLAG_ALLOW_REMOTE_WRITE;

// Server: opens `side` on `host`, listens on its address (an ephemeral port, reported to
// the parent) and returns the first connect request's connector in `connector`.
inline void listen_and_take_request(Side& side, const Host& host, SOFTNDK_COMPLETION_MODE mode,
                                    NDK_LISTENER*& listener, Incoming& incoming, NDK_CONNECTOR*& connector) {
  ASSERT_NO_FATAL_FAILURE(side.open(if_nametoindex(host.ifname.c_str()), mode, kRemoteAccess, SOFTNDK_FABRIC_TCP));
  NDK_ADAPTER* a = side.adapter;
  listener = create<NDK_LISTENER>([&](auto cb, auto ctx, NDK_LISTENER** out) {
    return a->Dispatch->NdkCreateListener(a, &Incoming::on_connect, &incoming, cb, ctx, out);
  });
  ASSERT_NE(listener, nullptr);
  SOCKADDR_INET address = ipv4(host.address.c_str(), 0);
  Waiter listened;
  ASSERT_EQ(listened.wait(listener->Dispatch->NdkListen(listener, reinterpret_cast<PSOCKADDR>(&address),
                                                        length_of(address), &Waiter::on_request, &listened)),
            STATUS_SUCCESS);
  ULONG length = sizeof(address);
  ASSERT_EQ(listener->Dispatch->NdkGetLocalAddress(listener, reinterpret_cast<PSOCKADDR>(&address), &length),
            STATUS_SUCCESS);
  ASSERT_TRUE(report_line(std::to_string(ntohs(address.Ipv4.sin_port))));
  connector = incoming.next();
  ASSERT_NE(connector, nullptr);
}

// Server: accepts (read limits 4 and 4) offering the side's whole region; its disconnect
// event (the Ex one: with the provider's reason) counts in `disconnects`.
// `qp` (default: the side's) takes the connection.
inline void accept_with_offer(Side& side, NDK_CONNECTOR* connector, Disconnects& disconnects,
                              NDK_QP* qp = nullptr) {
  Offer offer{side.remote_token(), side.address(0), side.buffer.size()};
  Waiter accepted;
  ASSERT_EQ(accepted.wait(connector->Dispatch->NdkAcceptEx(connector, qp != nullptr ? qp : side.qp, 4, 4, &offer,
                                                           sizeof(offer), &Disconnects::on_ex, &disconnects,
                                                           &Waiter::on_request, &accepted)),
            STATUS_SUCCESS);
}

// Client: connects `side` (open on `host`) to `destination`:`port` and completes the
// connection; `offer` is what the server's accept carried. The disconnect event, if
// asked for, is the Ex one: `disconnects` records the provider's reason.
// `qp` (default: the side's) makes the connection.
inline void connect_to_server(Side& side, const Host& host, const std::string& destination, uint16_t port,
                              NDK_CONNECTOR*& connector, Offer& offer, Disconnects* disconnects = nullptr,
                              NDK_QP* qp = nullptr) {
  NDK_ADAPTER* a = side.adapter;
  if (qp == nullptr) qp = side.qp;
  connector = create<NDK_CONNECTOR>([&](auto cb, auto ctx, NDK_CONNECTOR** out) {
    return a->Dispatch->NdkCreateConnector(a, cb, ctx, out);
  });
  ASSERT_NE(connector, nullptr);
  SOCKADDR_INET source = ipv4(host.address.c_str(), 0), to = ipv4(destination.c_str(), port);
  Waiter connected;
  ASSERT_EQ(connected.wait(connector->Dispatch->NdkConnect(connector, qp, reinterpret_cast<PSOCKADDR>(&source),
                                                           length_of(source), reinterpret_cast<PSOCKADDR>(&to),
                                                           length_of(to), 4, 4, nullptr, 0, &Waiter::on_request,
                                                           &connected)),
            STATUS_SUCCESS);
  ULONG offer_length = sizeof(offer);
  ASSERT_EQ(connector->Dispatch->NdkGetConnectionData(connector, nullptr, nullptr, &offer, &offer_length),
            STATUS_SUCCESS);
  ASSERT_EQ(offer_length, sizeof(offer));
  Waiter completed;
  ASSERT_EQ(completed.wait(connector->Dispatch->NdkCompleteConnectEx(
                connector, disconnects == nullptr ? nullptr : &Disconnects::on_ex, disconnects, &Waiter::on_request,
                &completed)),
            STATUS_SUCCESS);
}

}  // namespace e2e
