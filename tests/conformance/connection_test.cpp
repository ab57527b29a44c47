// §5.I-§5.K with a peer: connect, accept, reject and their private data, read limits,
// address queries, disconnect events, timeouts, listener pause and close, endpoints and
// shared endpoints (R013, R041, R158-R197), over IPv4 and IPv6, with the local side in
// both roles.
#include <set>

#include "datapath.hpp"

namespace conformance {
namespace {

class ConnectionTest : public DataPathTest {
 protected:
  // The local address of a connector (or listener) and its status.
  template <class T>
  NTSTATUS LocalAddressOf(T* object, SOCKADDR_INET* out, ULONG* length = nullptr) {
    ULONG size = sizeof(*out);
    *out = SOCKADDR_INET{};
    NTSTATUS s =
        object->Dispatch->NdkGetLocalAddress(object, reinterpret_cast<PSOCKADDR>(out), &size);
    if (length != nullptr) *length = size;
    return s;
  }
  NTSTATUS PeerAddressOf(NDK_CONNECTOR* c, SOCKADDR_INET* out, ULONG* length = nullptr) {
    ULONG size = sizeof(*out);
    *out = SOCKADDR_INET{};
    NTSTATUS s = c->Dispatch->NdkGetPeerAddress(c, reinterpret_cast<PSOCKADDR>(out), &size);
    if (length != nullptr) *length = size;
    return s;
  }
  // Private data as the connector reports it (a buffer of `capacity` bytes).
  NTSTATUS ConnectionData(NDK_CONNECTOR* c, std::vector<uint8_t>* data, ULONG* length,
                          ULONG capacity = 256, ULONG* ird = nullptr, ULONG* ord = nullptr) {
    data->assign(capacity, 0xCD);
    *length = capacity;
    NTSTATUS s = c->Dispatch->NdkGetConnectionData(c, ird, ord, data->data(), length);
    data->resize(std::min(*length, capacity));
    return s;
  }
  // A local listener on a fresh port.
  NDK_LISTENER* LocalListener(int family, ConnectEvents** events, SOCKADDR_INET* address) {
    *events = &NewConnectEvents();
    *address = LocalAddress(family, NextPort());
    return Listen(**events, *address);
  }
};

// R013, R158, R159, R175, R190, R197: connections over IPv4 and IPv6, with the local side
// active and passive: each connector reports its own and its peer's address (an accepted
// connector the listener's, an active one an ephemeral port), short buffers get
// STATUS_BUFFER_TOO_SMALL with the size, and data flows both ways.
TEST_P(ConnectionTest, R013_R158_R159_R175_R197_AddressesAndTransferOverIPv4AndIPv6) {
  ASSERT_NO_FATAL_FAILURE(Start());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  for (int family : {AF_INET, AF_INET6}) {
    for (bool active : {true, false}) {
      SCOPED_TRACE(std::string(family == AF_INET ? "IPv4" : "IPv6") +
                   (active ? ", local active" : ", local passive"));
      LinkOptions o;
      o.family = family;
      o.local_active = active;
      Pair pair = MakePair(o);
      ASSERT_TRUE(pair.ok());
      SOCKADDR_INET local_address, peer_address, theirs_local, theirs_peer;
      ULONG length = 0;
      ASSERT_EQ(LocalAddressOf(pair.link.local, &local_address, &length), STATUS_SUCCESS)
          << "(R175)";
      EXPECT_EQ(length, family == AF_INET ? sizeof(SOCKADDR_IN) : sizeof(SOCKADDR_IN6)) << "(R175)";
      ASSERT_EQ(PeerAddressOf(pair.link.local, &peer_address, &length), STATUS_SUCCESS) << "(R175)";
      EXPECT_EQ(length, family == AF_INET ? sizeof(SOCKADDR_IN) : sizeof(SOCKADDR_IN6));
      ASSERT_EQ(peer().GetLocalAddress(pair.link.peer, &theirs_local), STATUS_SUCCESS);
      ASSERT_EQ(peer().GetPeerAddress(pair.link.peer, &theirs_peer), STATUS_SUCCESS);
      EXPECT_EQ(local_address.si_family, family) << "(R013)";
      EXPECT_TRUE(SameAddress(local_address, theirs_peer))
          << AddressText(local_address) << " vs the peer's view " << AddressText(theirs_peer);
      EXPECT_TRUE(SameAddress(peer_address, theirs_local))
          << AddressText(peer_address) << " vs " << AddressText(theirs_local);
      if (active) {
        SOCKADDR_INET host = LocalAddress(family, PortOf(local_address));
        EXPECT_TRUE(SameAddress(local_address, host)) << "the adapter's address (R158)";
        EXPECT_GE(PortOf(local_address), 49152) << "an ephemeral port for source port 0 (R159)";
        SOCKADDR_INET listened;
        ASSERT_EQ(peer().GetLocalAddress(pair.link.peer_listener, &listened), STATUS_SUCCESS);
        EXPECT_TRUE(SameAddress(theirs_local, listened)) << "accepted over the listener (R197)";
      } else {
        SOCKADDR_INET listened;
        ASSERT_EQ(LocalAddressOf(pair.link.local_listener, &listened), STATUS_SUCCESS) << "(R175)";
        EXPECT_TRUE(SameAddress(local_address, listened))
            << "an accepted connector reports the listener's address (R190, R197): "
            << AddressText(local_address) << " vs " << AddressText(listened);
        EXPECT_GE(PortOf(theirs_local), 49152) << "(R159)";
      }
      // Short buffers (R175).
      SOCKADDR_INET small{};
      ULONG tiny = 4;
      EXPECT_EQ(pair.link.local->Dispatch->NdkGetLocalAddress(pair.link.local, Sa(small), &tiny),
                STATUS_BUFFER_TOO_SMALL)
          << "(R175)";
      EXPECT_EQ(tiny, AddressLength(local_address)) << "(R175)";
      tiny = 4;
      EXPECT_EQ(pair.link.local->Dispatch->NdkGetPeerAddress(pair.link.local, Sa(small), &tiny),
                STATUS_BUFFER_TOO_SMALL)
          << "(R175)";
      EXPECT_EQ(tiny, AddressLength(local_address));
      if (!active) {
        tiny = 4;
        EXPECT_EQ(pair.link.local_listener->Dispatch->NdkGetLocalAddress(pair.link.local_listener,
                                                                         Sa(small), &tiny),
                  STATUS_BUFFER_TOO_SMALL)
            << "(R175)";
        EXPECT_EQ(tiny, AddressLength(local_address));
      }
      // Data both ways (R013).
      std::vector<uint8_t> out = Pattern(300, family + active), in = Pattern(200, 13 + family);
      std::memcpy(mine.data, out.data(), out.size());
      peer().Fill(theirs, 1000, in);
      ASSERT_EQ(peer().Receive(pair.p.qp, 1, {{theirs.id, 0, 512}}), STATUS_SUCCESS);
      ASSERT_EQ(PostReceive(pair.q, nullptr, {mine.Sge(2000, 512)}), STATUS_SUCCESS);
      EXPECT_EQ(PostSend(pair.q, nullptr, {mine.Sge(0, 300)}), STATUS_SUCCESS);
      EXPECT_EQ(peer().Send(pair.p.qp, 0, {{theirs.id, 1000, 200}}), STATUS_SUCCESS);
      EXPECT_EQ(PostWrite(pair.q, nullptr, {mine.Sge(0, 300)}, theirs.address + 2000,
                          theirs.remote_token),
                STATUS_SUCCESS);
      EXPECT_EQ(PostRead(pair.q, nullptr, {mine.Sge(3000, 200)}, theirs.address + 1000,
                         theirs.remote_token),
                STATUS_SUCCESS);
      std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 3);
      ASSERT_EQ(r.size(), 3u);
      for (const NDK_RESULT_EX& x : r) EXPECT_EQ(x.Status, STATUS_SUCCESS) << ResultText(x);
      ASSERT_EQ(Poll(pair.q.rcq, 1).size(), 1u);
      ASSERT_EQ(peer().Poll(pair.p.rcq, 1).size(), 1u);
      EXPECT_EQ(peer().ReadMemory(theirs, 0, 300), out);
      EXPECT_EQ(peer().ReadMemory(theirs, 2000, 300), out);
      EXPECT_EQ(std::memcmp(mine.data + 2000, in.data(), 200), 0);
      EXPECT_EQ(std::memcmp(mine.data + 3000, in.data(), 200), 0);
      Drain(pair.q.icq);
      peer().Poll(pair.p.icq, 1);
    }
  }
}

// R159, R189: with every ephemeral port of an address taken, Connect from port 0 and
// Listen on port 0 fail with STATUS_TOO_MANY_ADDRESSES; a port freed is used again. Costly
// (16384 endpoints): run once per fabric.
TEST_P(ConnectionTest, R159_R189_EphemeralPortsExhausted) {
  if (mode() != SOFTNDK_COMPLETION_INLINE || GetParam().peer != PeerForm::kDirect)
    GTEST_SKIP() << "runs once per fabric (inline mode, direct peer): it takes 16384 ports";
  ASSERT_NO_FATAL_FAILURE(Start());
  PeerId listener = PeerListen(peer().Address(AF_INET, NextPort()));
  ASSERT_NE(listener, 0u);
  std::vector<NDK_SHARED_ENDPOINT*> endpoints;
  for (int i = 0; i < 16384; ++i) {
    Created<NDK_SHARED_ENDPOINT> e = local().TryCreateSharedEndpoint(LocalAddress(AF_INET, 0));
    ASSERT_TRUE(e.ok()) << i << ": " << StatusText(e.status);
    endpoints.push_back(e.object);
  }
  LocalQp q = MakeQp();
  NDK_CONNECTOR* c = local().CreateConnector();
  ASSERT_TRUE(q.ok() && c != nullptr);
  SOCKADDR_INET destination = peer().Address(AF_INET, 7000);
  ASSERT_EQ(peer().GetLocalAddress(listener, &destination), STATUS_SUCCESS);
  EXPECT_EQ(Finish(StartConnect(c, q.qp, LocalAddress(AF_INET, 0), destination)),
            STATUS_TOO_MANY_ADDRESSES)
      << "(R159)";
  ConnectEvents& events = NewConnectEvents();
  NTSTATUS listened = STATUS_PENDING;
  Listen(events, LocalAddress(AF_INET, 0), &listened);
  EXPECT_EQ(listened, STATUS_TOO_MANY_ADDRESSES) << "(R189)";
  local().CloseAndWait(endpoints.back());
  Requested again = StartConnect(c, q.qp, LocalAddress(AF_INET, 0), destination);
  PeerId passive = peer().NextConnectEvent(listener);
  ASSERT_NE(passive, 0u) << "the freed port serves the retry";
  EXPECT_EQ(peer().Reject(passive), STATUS_SUCCESS);
  EXPECT_EQ(Finish(again), STATUS_CONNECTION_REFUSED);
}

// R188, R189, R013: NdkListen on port 0 gets a provider-chosen port that
// NdkGetLocalAddress reports and that peers connect to; an address:port in use fails with
// STATUS_SHARING_VIOLATION, an address the adapter does not own with STATUS_INVALID_ADDRESS.
TEST_P(ConnectionTest, R188_R189_ListenOnPortZeroAndListenFailures) {
  ASSERT_NO_FATAL_FAILURE(Start());
  for (int family : {AF_INET, AF_INET6}) {
    SCOPED_TRACE(family == AF_INET ? "IPv4" : "IPv6");
    ConnectEvents& events = NewConnectEvents();
    NDK_LISTENER* listener = Listen(events, LocalAddress(family, 0));
    ASSERT_NE(listener, nullptr);
    SOCKADDR_INET chosen;
    ASSERT_EQ(LocalAddressOf(listener, &chosen), STATUS_SUCCESS) << "(R188)";
    EXPECT_NE(PortOf(chosen), 0) << "a port was chosen (R188)";
    EXPECT_GE(PortOf(chosen), 49152) << "an ephemeral port (R188)";
    EXPECT_TRUE(SameAddress(chosen, LocalAddress(family, PortOf(chosen))));
    PeerQp p = peer().CreateQp();
    PeerId active = peer().CreateConnector();
    PeerAsync connect = peer().Connect(active, p.qp, peer().Address(family), chosen, 4, 4);
    NDK_CONNECTOR* passive = events.Next();
    ASSERT_NE(passive, nullptr) << "reachable on the chosen port (R188)";
    EXPECT_EQ(Reject(passive), STATUS_SUCCESS);
    EXPECT_EQ(peer().WaitOp(connect), STATUS_CONNECTION_REFUSED);
    ConnectEvents& more = NewConnectEvents();
    NTSTATUS status = STATUS_PENDING;
    Listen(more, chosen, &status);
    EXPECT_EQ(status, STATUS_SHARING_VIOLATION) << "(R189)";
    if (!HostsShareAnInterface()) {
      status = STATUS_PENDING;
      Listen(more, peer().Address(family, 4000), &status);
      EXPECT_EQ(status, STATUS_INVALID_ADDRESS) << "not an address of the adapter (R189)";
    }
  }
}

// R160 (with docs/DATAPATH.md): Connect fails with the status of each cause.
TEST_P(ConnectionTest, R160_ConnectFailures) {
  ASSERT_NO_FATAL_FAILURE(Start({{"connect_timeout_ms", "150"}}));
  LocalQp q = MakeQp();
  ASSERT_TRUE(q.ok());
  auto attempt = [&](const SOCKADDR_INET& source, const SOCKADDR_INET& destination) {
    NDK_CONNECTOR* c = local().CreateConnector();
    LocalQp fresh = MakeQp();
    NTSTATUS s = Finish(StartConnect(c, fresh.qp, source, destination));
    local().CloseAndWait(c);
    return s;
  };
  SOCKADDR_INET nobody = peer().Address(AF_INET, NextPort());
  EXPECT_EQ(attempt(LocalAddress(AF_INET), nobody), STATUS_CONNECTION_REFUSED)
      << "nobody listening (R160)";
  EXPECT_EQ(attempt(LocalAddress(AF_INET), peer().Address(AF_INET6, NextPort())),
            STATUS_NETWORK_UNREACHABLE)
      << "IPv4 source, IPv6 destination (R160)";
  SOCKADDR_INET unowned{};
  unowned.Ipv4.sin_family = AF_INET;
  unowned.Ipv4.sin_port = htons(445);
  unowned.Ipv4.sin_addr.s_addr = htonl(0xCB00714Du);  // 203.0.113.77
  EXPECT_EQ(attempt(LocalAddress(AF_INET), unowned), STATUS_HOST_UNREACHABLE) << "(R160)";
  ConnectEvents* events;
  SOCKADDR_INET busy;
  ASSERT_NE(LocalListener(AF_INET, &events, &busy), nullptr);
  SOCKADDR_INET listening = peer().Address(AF_INET, NextPort());
  PeerId listener = PeerListen(listening);
  ASSERT_NE(listener, 0u);
  EXPECT_EQ(attempt(busy, listening), STATUS_SHARING_VIOLATION)
      << "local address:port in use (R160)";
  EXPECT_EQ(attempt(peer().Address(AF_INET, 0), listening), STATUS_INVALID_ADDRESS)
      << "a source address that is not the adapter's (R160)";
  // Nobody answers: STATUS_IO_TIMEOUT after connect_timeout_ms; the late Accept finds the
  // connection abandoned (R165).
  NDK_CONNECTOR* c = local().CreateConnector();
  Requested timed = StartConnect(c, q.qp, LocalAddress(AF_INET), listening);
  PeerId passive = peer().NextConnectEvent(listener);
  ASSERT_NE(passive, 0u);
  EXPECT_EQ(Finish(timed), STATUS_IO_TIMEOUT) << "(R160)";
  PeerAsync late = peer().Accept(passive, peer().CreateQp().qp, 4, 4);
  EXPECT_EQ(peer().WaitOp(late), STATUS_CONNECTION_ABORTED) << "(R165)";
}

// R160 (retryable failures; docs/DATAPATH.md: a connector whose Connect failed may Connect
// again): after a refusal at once, a rejection, and a timeout, the same connector connects
// again with the same QP.
TEST_P(ConnectionTest, R160_FailedConnectIsRetryableOnTheSameConnectorAndQp) {
  ASSERT_NO_FATAL_FAILURE(Start({{"connect_timeout_ms", "150"}}));
  const char* kinds[] = {"refused at once", "rejected", "timed out"};
  for (int kind = 0; kind < 3; ++kind) {
    SCOPED_TRACE(kinds[kind]);
    LocalQp q = MakeQp();
    NDK_CONNECTOR* c = local().CreateConnector();
    ASSERT_TRUE(q.ok() && c != nullptr);
    SOCKADDR_INET destination = peer().Address(AF_INET, NextPort());
    PeerId listener = kind == 0 ? 0 : PeerListen(destination);
    Requested first = StartConnect(c, q.qp, LocalAddress(AF_INET), destination);
    if (kind == 1) {
      PeerId passive = peer().NextConnectEvent(listener);
      ASSERT_NE(passive, 0u);
      EXPECT_EQ(peer().Reject(passive), STATUS_SUCCESS);
    } else if (kind == 2) {
      ASSERT_NE(peer().NextConnectEvent(listener), 0u);
    }
    const NTSTATUS expected[] = {STATUS_CONNECTION_REFUSED, STATUS_CONNECTION_REFUSED,
                                 STATUS_IO_TIMEOUT};
    ASSERT_EQ(Finish(first), expected[kind]);
    if (listener == 0) listener = PeerListen(destination);
    PeerQp p = peer().CreateQp();
    Requested retry = StartConnect(c, q.qp, LocalAddress(AF_INET), destination);
    NTSTATUS returned = retry.returned;
    EXPECT_TRUE(returned == STATUS_PENDING || returned == STATUS_SUCCESS)
        << "retrying with the same connector and QP: " << StatusText(returned)
        << " (R160 retryable; docs/DATAPATH.md)";
    if (returned != STATUS_PENDING) continue;
    PeerId passive = peer().NextConnectEvent(listener);
    ASSERT_NE(passive, 0u);
    PeerAsync accept = peer().Accept(passive, p.qp, 4, 4);
    ASSERT_EQ(Finish(retry), STATUS_SUCCESS);
    EXPECT_EQ(Finish(StartCompleteConnect(c)), STATUS_SUCCESS);
    EXPECT_EQ(peer().WaitOp(accept), STATUS_SUCCESS);
  }
}

// R160, R162: out of resources (SoftNDK: the SOFTNDK_FAULT_CONNECT fault point), NdkConnect
// and NdkConnectWithSharedEndpoint fail with STATUS_INSUFFICIENT_RESOURCES, inline or through
// the callback as the mode says; nothing reaches the peer, and the same connector connects
// with the same QP right after.
TEST_P(ConnectionTest, R160_R162_ConnectOutOfResourcesThenRetry) {
  ASSERT_NO_FATAL_FAILURE(Start());
  SOCKADDR_INET destination = peer().Address(AF_INET, NextPort());
  PeerId listener = PeerListen(destination);
  ASSERT_NE(listener, 0u);
  NDK_SHARED_ENDPOINT* endpoint = local().CreateSharedEndpoint(LocalAddress(AF_INET));
  ASSERT_NE(endpoint, nullptr);
  for (bool shared : {false, true}) {
    SCOPED_TRACE(shared ? "NdkConnectWithSharedEndpoint" : "NdkConnect");
    LocalQp q = MakeQp();
    NDK_CONNECTOR* c = local().CreateConnector();
    ASSERT_TRUE(q.ok() && c != nullptr);
    auto connect = [&] {
      return shared ? StartConnectShared(c, q.qp, endpoint, destination)
                    : StartConnect(c, q.qp, LocalAddress(AF_INET), destination);
    };
    ASSERT_EQ(SoftNdkInjectFault(local().get(), SOFTNDK_FAULT_CONNECT,
                                 STATUS_INSUFFICIENT_RESOURCES, 1),
              STATUS_SUCCESS);
    EXPECT_EQ(Finish(connect()), STATUS_INSUFFICIENT_RESOURCES) << "(R160, R162)";
    EXPECT_EQ(peer().NextConnectEvent(listener, kSettle), 0u) << "nothing reached the peer";
    Requested retry = connect();
    PeerId passive = peer().NextConnectEvent(listener);
    ASSERT_NE(passive, 0u) << "the retry reached the peer";
    PeerAsync accept = peer().Accept(passive, peer().CreateQp().qp, 4, 4);
    EXPECT_EQ(Finish(retry), STATUS_SUCCESS) << "retryable with the same connector and QP (R160)";
    EXPECT_EQ(Finish(StartCompleteConnect(c)), STATUS_SUCCESS);
    EXPECT_EQ(peer().WaitOp(accept), STATUS_SUCCESS);
  }
}

// R161, R166, R184: a passive Reject makes the active Connect fail with
// STATUS_CONNECTION_REFUSED and hands it the reject's private data; the connect's private
// data reached the passive side. Both roles.
TEST_P(ConnectionTest, R161_R166_R184_RejectWithPrivateData) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::vector<uint8_t> hello = Pattern(37, 161), no = Pattern(91, 166);
  {
    SCOPED_TRACE("the peer rejects");
    LocalQp q = MakeQp();
    SOCKADDR_INET destination = peer().Address(AF_INET6, NextPort());
    PeerId listener = PeerListen(destination);
    NDK_CONNECTOR* c = local().CreateConnector();
    Requested r = StartConnect(c, q.qp, LocalAddress(AF_INET6), destination, 4, 4, &hello);
    PeerId passive = peer().NextConnectEvent(listener);
    ASSERT_NE(passive, 0u);
    PeerConnectionData got = peer().GetConnectionData(passive);
    EXPECT_EQ(got.status, STATUS_SUCCESS);
    EXPECT_EQ(got.length, hello.size()) << "(R183, R184)";
    EXPECT_EQ(got.data, hello) << "(R184)";
    EXPECT_EQ(peer().Reject(passive, &no), STATUS_SUCCESS);
    EXPECT_EQ(Finish(r), STATUS_CONNECTION_REFUSED) << "(R166)";
    std::vector<uint8_t> data;
    ULONG length;
    EXPECT_EQ(ConnectionData(c, &data, &length), STATUS_SUCCESS) << "(R166)";
    EXPECT_EQ(length, no.size());
    EXPECT_EQ(data, no) << "the reject's private data (R166, R184)";
  }
  {
    SCOPED_TRACE("the local side rejects");
    ConnectEvents* events;
    SOCKADDR_INET address;
    ASSERT_NE(LocalListener(AF_INET, &events, &address), nullptr);
    PeerQp p = peer().CreateQp();
    PeerId active = peer().CreateConnector();
    PeerAsync connect =
        peer().Connect(active, p.qp, peer().Address(AF_INET), address, 4, 4, &hello);
    NDK_CONNECTOR* passive = events->Next();
    ASSERT_NE(passive, nullptr) << "(R173)";
    std::vector<uint8_t> data;
    ULONG length;
    EXPECT_EQ(ConnectionData(passive, &data, &length), STATUS_SUCCESS);
    EXPECT_EQ(data, hello) << "(R184)";
    EXPECT_EQ(Reject(passive, &no), STATUS_SUCCESS) << "(R168)";
    EXPECT_EQ(peer().WaitOp(connect), STATUS_CONNECTION_REFUSED) << "(R166)";
    PeerConnectionData got = peer().GetConnectionData(active);
    EXPECT_EQ(got.status, STATUS_SUCCESS);
    EXPECT_EQ(got.data, no) << "(R166, R184)";
  }
}

// R166, R181, R185: a Reject with no private data: the Connect is refused and the active
// side reads zero bytes of private data (RDS 0).
TEST_P(ConnectionTest, R166_R181_R185_RejectWithoutPrivateData) {
  ASSERT_NO_FATAL_FAILURE(Start());
  LocalQp q = MakeQp();
  SOCKADDR_INET destination = peer().Address(AF_INET, NextPort());
  PeerId listener = PeerListen(destination);
  NDK_CONNECTOR* c = local().CreateConnector();
  Requested r = StartConnect(c, q.qp, LocalAddress(AF_INET), destination);
  PeerId passive = peer().NextConnectEvent(listener);
  ASSERT_NE(passive, 0u);
  PeerConnectionData got = peer().GetConnectionData(passive, 0, /*null_buffer=*/true);
  EXPECT_EQ(got.status, STATUS_SUCCESS) << "(R181, R185)";
  EXPECT_EQ(got.length, 0u) << "no private data (R185)";
  EXPECT_EQ(peer().Reject(passive, nullptr), STATUS_SUCCESS) << "(R185)";
  EXPECT_EQ(Finish(r), STATUS_CONNECTION_REFUSED);
  ULONG length = 0;
  EXPECT_EQ(c->Dispatch->NdkGetConnectionData(c, nullptr, nullptr, nullptr, &length),
            STATUS_SUCCESS)
      << "the reject's private data, none, is readable (R166, R181)";
  EXPECT_EQ(length, 0u);
}

// R161, R163: NdkCompleteConnect works only on a connector whose Connect succeeded:
// STATUS_CONNECTION_INVALID otherwise, STATUS_CONNECTION_ABORTED when the accepting peer went
// away meanwhile.
TEST_P(ConnectionTest, R161_R163_CompleteConnectOnlyWhenConnecting) {
  ASSERT_NO_FATAL_FAILURE(Start());
  NDK_CONNECTOR* idle = local().CreateConnector();
  EXPECT_EQ(Finish(StartCompleteConnect(idle)), STATUS_CONNECTION_INVALID)
      << "never connected (R163)";
  // The peer accepts, then abandons before the local side completes.
  LocalQp q = MakeQp();
  PeerQp p = peer().CreateQp();
  SOCKADDR_INET destination = peer().Address(AF_INET, NextPort());
  PeerId listener = PeerListen(destination);
  NDK_CONNECTOR* c = local().CreateConnector();
  Requested r = StartConnect(c, q.qp, LocalAddress(AF_INET), destination);
  PeerId passive = peer().NextConnectEvent(listener);
  ASSERT_NE(passive, 0u);
  PeerAsync accept = peer().Accept(passive, p.qp, 4, 4);
  ASSERT_EQ(Finish(r), STATUS_SUCCESS) << "the peer accepted (R161)";
  EXPECT_EQ(peer().Close(passive), STATUS_SUCCESS);
  EXPECT_EQ(peer().WaitOp(accept), STATUS_CANCELLED)
      << "closing a connector cancels its Accept (R042)";
  EXPECT_TRUE(WaitPeerGone(c));
  EXPECT_EQ(Finish(StartCompleteConnect(c)), STATUS_CONNECTION_ABORTED) << "(R163)";
  // Connected: a second CompleteConnect is in the wrong state.
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  EXPECT_EQ(Finish(StartCompleteConnect(pair.link.local)), STATUS_CONNECTION_INVALID) << "(R163)";
}

// R165: NdkAccept completes only once the active side has completed the connection; when
// the active side rejects late or goes away, STATUS_CONNECTION_ABORTED (R167).
TEST_P(ConnectionTest, R165_R167_AcceptCompletesOnlyAfterCompleteConnect) {
  ASSERT_NO_FATAL_FAILURE(Start());
  for (int ending = 0; ending < 3; ++ending) {
    const char* names[] = {"the peer completes", "the peer rejects late",
                           "the peer closes its connector"};
    SCOPED_TRACE(names[ending]);
    ConnectEvents* events;
    SOCKADDR_INET address;
    ASSERT_NE(LocalListener(AF_INET6, &events, &address), nullptr);
    LocalQp q = MakeQp();
    PeerQp p = peer().CreateQp();
    PeerId active = peer().CreateConnector();
    PeerAsync connect = peer().Connect(active, p.qp, peer().Address(AF_INET6), address, 4, 4);
    NDK_CONNECTOR* passive = events->Next();
    ASSERT_NE(passive, nullptr);
    Requested accept = StartAccept(passive, q.qp);
    EXPECT_EQ(accept.returned, STATUS_PENDING) << "(R165)";
    ASSERT_EQ(peer().WaitOp(connect), STATUS_SUCCESS);
    std::this_thread::sleep_for(kSettle);
    EXPECT_FALSE(Done(accept)) << "NdkAccept completed before the peer's CompleteConnect (R165)";
    if (ending == 0) {
      EXPECT_EQ(peer().CompleteConnect(active), STATUS_SUCCESS);
      EXPECT_EQ(Finish(accept), STATUS_SUCCESS) << "(R165)";
    } else if (ending == 1) {
      EXPECT_EQ(peer().Reject(active), STATUS_SUCCESS) << "a late reject on the active side (R167)";
      EXPECT_EQ(Finish(accept), STATUS_CONNECTION_ABORTED) << "(R165, R167)";
    } else {
      EXPECT_EQ(peer().Close(active), STATUS_SUCCESS);
      EXPECT_EQ(Finish(accept), STATUS_CONNECTION_ABORTED) << "(R165)";
    }
  }
}

// R167: the local side, active, rejects after its Connect succeeded: the peer's Accept
// fails with STATUS_CONNECTION_ABORTED.
TEST_P(ConnectionTest, R167_ActiveSideRejectAbortsThePeersAccept) {
  ASSERT_NO_FATAL_FAILURE(Start());
  LocalQp q = MakeQp();
  PeerQp p = peer().CreateQp();
  SOCKADDR_INET destination = peer().Address(AF_INET, NextPort());
  PeerId listener = PeerListen(destination);
  NDK_CONNECTOR* c = local().CreateConnector();
  Requested r = StartConnect(c, q.qp, LocalAddress(AF_INET), destination);
  PeerId passive = peer().NextConnectEvent(listener);
  ASSERT_NE(passive, 0u);
  std::vector<uint8_t> welcome = Pattern(20, 167);
  PeerAsync accept = peer().Accept(passive, p.qp, 4, 4, &welcome);
  ASSERT_EQ(Finish(r), STATUS_SUCCESS);
  std::vector<uint8_t> data;
  ULONG length;
  EXPECT_EQ(ConnectionData(c, &data, &length), STATUS_SUCCESS) << "before CompleteConnect (R180)";
  EXPECT_EQ(data, welcome) << "the accept's private data (R184)";
  EXPECT_EQ(Reject(c), STATUS_SUCCESS) << "(R167)";
  EXPECT_EQ(peer().WaitOp(accept), STATUS_CONNECTION_ABORTED) << "(R167)";
  EXPECT_EQ(Finish(StartCompleteConnect(c)), STATUS_CONNECTION_INVALID)
      << "rejected: not connecting (R163)";
}

// R168: NdkReject (and NdkAccept) on a request whose connecting peer already gave up:
// STATUS_CONNECTION_ABORTED.
TEST_P(ConnectionTest, R168_RejectAfterThePeerAbandoned) {
  ASSERT_NO_FATAL_FAILURE(Start());
  for (bool reject : {true, false}) {
    SCOPED_TRACE(reject ? "NdkReject" : "NdkAccept");
    ConnectEvents* events;
    SOCKADDR_INET address;
    ASSERT_NE(LocalListener(AF_INET, &events, &address), nullptr);
    PeerQp p = peer().CreateQp();
    PeerId active = peer().CreateConnector();
    PeerAsync connect = peer().Connect(active, p.qp, peer().Address(AF_INET), address, 4, 4);
    NDK_CONNECTOR* passive = events->Next();
    ASSERT_NE(passive, nullptr);
    EXPECT_EQ(peer().Close(active), STATUS_SUCCESS);
    EXPECT_EQ(peer().WaitOp(connect), STATUS_CANCELLED) << "(R042)";
    EXPECT_TRUE(WaitPeerGone(passive));
    if (reject) {
      EXPECT_EQ(Reject(passive), STATUS_CONNECTION_ABORTED) << "(R168)";
    } else {
      LocalQp q = MakeQp();
      EXPECT_EQ(Finish(StartAccept(passive, q.qp)), STATUS_CONNECTION_ABORTED)
          << "(R165, docs/DATAPATH.md)";
    }
  }
}

// R160, R163, R165: establishment times out after connect_timeout_ms — a Connect nobody
// answers, an Accept whose active side never completes, an Accept the local side never
// completes; the late party finds the connection aborted.
TEST_P(ConnectionTest, R160_R163_R165_EstablishmentTimesOut) {
  ASSERT_NO_FATAL_FAILURE(Start({{"connect_timeout_ms", "120"}}));
  {
    SCOPED_TRACE("the peer never completes: the local Accept times out");
    ConnectEvents* events;
    SOCKADDR_INET address;
    ASSERT_NE(LocalListener(AF_INET, &events, &address), nullptr);
    LocalQp q = MakeQp();
    PeerQp p = peer().CreateQp();
    PeerId active = peer().CreateConnector();
    PeerAsync connect = peer().Connect(active, p.qp, peer().Address(AF_INET), address, 4, 4);
    NDK_CONNECTOR* passive = events->Next();
    ASSERT_NE(passive, nullptr);
    Requested accept = StartAccept(passive, q.qp);
    ASSERT_EQ(peer().WaitOp(connect), STATUS_SUCCESS);
    EXPECT_EQ(Finish(accept), STATUS_IO_TIMEOUT) << "(R165)";
    // The peer learns of it at once in-process, with the FIN over TCP.
    EXPECT_TRUE(WaitUntil([&] { return peer().GetConnectionData(active).status != STATUS_SUCCESS; }));
    EXPECT_EQ(peer().CompleteConnect(active), STATUS_CONNECTION_ABORTED) << "(R163)";
  }
  {
    SCOPED_TRACE("the local side never completes: the peer's Accept times out");
    LocalQp q = MakeQp();
    PeerQp p = peer().CreateQp();
    SOCKADDR_INET destination = peer().Address(AF_INET6, NextPort());
    PeerId listener = PeerListen(destination);
    NDK_CONNECTOR* c = local().CreateConnector();
    Requested r = StartConnect(c, q.qp, LocalAddress(AF_INET6), destination);
    PeerId passive = peer().NextConnectEvent(listener);
    ASSERT_NE(passive, 0u);
    PeerAsync accept = peer().Accept(passive, p.qp, 4, 4);
    ASSERT_EQ(Finish(r), STATUS_SUCCESS);
    EXPECT_EQ(peer().WaitOp(accept), STATUS_IO_TIMEOUT) << "(R165)";
    EXPECT_TRUE(WaitPeerGone(c));
    EXPECT_EQ(Finish(StartCompleteConnect(c)), STATUS_CONNECTION_ABORTED) << "(R163)";
  }
}

// R169, R170: the disconnect callback comes once per connection with its context: the
// plain form, the Ex form with reason 0 for a graceful disconnect and the failure's
// NTSTATUS for a terminated connection; none when no callback was given.
TEST_P(ConnectionTest, R169_R170_DisconnectEventFormsAndReasons) {
  ASSERT_NO_FATAL_FAILURE(Start());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  for (bool active : {true, false}) {
    SCOPED_TRACE(active ? "local active" : "local passive");
    {
      LinkOptions o;
      o.local_active = active;
      o.ex = false;
      Pair pair = MakePair(o);
      ASSERT_TRUE(pair.ok());
      ASSERT_EQ(peer().Disconnect(pair.link.peer), STATUS_SUCCESS);
      EXPECT_TRUE(pair.link.disconnects->WaitCount(1)) << "the plain form (R169)";
      EXPECT_EQ(pair.link.disconnects->reason.load(), 0xFFFFFFFFu)
          << "the plain form has no reason";
      EXPECT_EQ(peer().Close(pair.link.peer), STATUS_SUCCESS);
      std::this_thread::sleep_for(kSettle);
      EXPECT_EQ(pair.link.disconnects->count.load(), 1) << "at most once per connection (R169)";
    }
    {
      LinkOptions o;
      o.local_active = active;
      o.local_event = false;
      Pair pair = MakePair(o);
      ASSERT_TRUE(pair.ok());
      ASSERT_EQ(peer().Disconnect(pair.link.peer), STATUS_SUCCESS);
      std::this_thread::sleep_for(kSettle);
      EXPECT_EQ(pair.link.disconnects->count.load(), 0) << "no callback registered (R169)";
      EXPECT_EQ(PostWrite(pair.q, nullptr, {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
                STATUS_CONNECTION_INVALID)
          << "the connection is gone all the same";
    }
    {
      LinkOptions o;
      o.local_active = active;
      Pair pair = MakePair(o);
      ASSERT_TRUE(pair.ok());
      // The peer sends with no receive posted here: the connection is terminated.
      ASSERT_EQ(peer().Send(pair.p.qp, 0, {{theirs.id, 0, 8}}), STATUS_SUCCESS);
      std::vector<PeerResult> sent = peer().Poll(pair.p.icq, 1);
      ASSERT_EQ(sent.size(), 1u);
      EXPECT_EQ(sent[0].status, STATUS_REMOTE_RESOURCES)
          << "a send without a receive (docs/DATAPATH.md)";
      EXPECT_TRUE(pair.link.disconnects->WaitCount(1)) << "(R169)";
      EXPECT_EQ(static_cast<NTSTATUS>(pair.link.disconnects->reason.load()),
                STATUS_REMOTE_RESOURCES)
          << "the Ex reason is the failure's NTSTATUS (R170, docs/DATAPATH.md)";
      EXPECT_EQ(Disconnect(pair.link.local), STATUS_SUCCESS);
      std::this_thread::sleep_for(kSettle);
      EXPECT_EQ(pair.link.disconnects->count.load(), 1) << "(R169)";
    }
  }
}

// R172: Connect and Accept make the QP an antecedent of the connector: the QP's close
// stays pending until the connector is closed.
TEST_P(ConnectionTest, R172_QpCloseWaitsForItsConnector) {
  ASSERT_NO_FATAL_FAILURE(Start());
  for (bool active : {true, false}) {
    SCOPED_TRACE(active ? "local active" : "local passive");
    LinkOptions o;
    o.local_active = active;
    Pair pair = MakePair(o);
    ASSERT_TRUE(pair.ok());
    Completion* qp_close = local().StartClose(pair.q.qp);
    ASSERT_NE(qp_close, nullptr);
    EXPECT_EQ(qp_close->call_status(), STATUS_PENDING) << "(R049, R172)";
    std::this_thread::sleep_for(kSettle);
    EXPECT_FALSE(TestAdapter::CloseDone(qp_close)) << "(R172)";
    local().CloseAndWait(pair.link.local);
    EXPECT_TRUE(TestAdapter::WaitCloseDone(qp_close)) << "(R172)";
  }
}

// R173: each incoming request produces exactly one connect event with a new connector and
// the listener's context.
TEST_P(ConnectionTest, R173_OneConnectEventPerRequest) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ConnectEvents* events;
  SOCKADDR_INET address;
  ASSERT_NE(LocalListener(AF_INET6, &events, &address), nullptr);
  std::vector<PeerAsync> connects;
  std::vector<PeerId> actives;
  for (int i = 0; i < 3; ++i) {
    PeerQp p = peer().CreateQp();
    actives.push_back(peer().CreateConnector());
    connects.push_back(
        peer().Connect(actives.back(), p.qp, peer().Address(AF_INET6), address, 4, 4));
  }
  std::set<NDK_CONNECTOR*> seen;
  for (int i = 0; i < 3; ++i) {
    NDK_CONNECTOR* c = events->Next();
    ASSERT_NE(c, nullptr) << "(R173)";
    EXPECT_TRUE(seen.insert(c).second) << "a connector handed over twice (R173)";
  }
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(events->count(), 3) << "exactly one event per request (R173)";
  for (NDK_CONNECTOR* c : seen) EXPECT_EQ(Reject(c), STATUS_SUCCESS);
  for (const PeerAsync& c : connects) EXPECT_EQ(peer().WaitOp(c), STATUS_CONNECTION_REFUSED);
}

// R174: a paused listener delivers no connect event and the connect is refused as if
// nobody listened; resumed, it accepts connections again.
TEST_P(ConnectionTest, R174_PausedListenerRefusesUntilResumed) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ConnectEvents* events;
  SOCKADDR_INET address;
  NDK_LISTENER* listener = LocalListener(AF_INET, &events, &address);
  ASSERT_NE(listener, nullptr);
  listener->Dispatch->NdkControlConnectEvents(listener, TRUE);
  PeerQp p = peer().CreateQp();
  PeerId active = peer().CreateConnector();
  PeerAsync refused = peer().Connect(active, p.qp, peer().Address(AF_INET), address, 4, 4);
  EXPECT_EQ(peer().WaitOp(refused), STATUS_CONNECTION_REFUSED) << "(R174)";
  EXPECT_EQ(events->Next(kSettle), nullptr) << "no connect event while paused (R174)";
  listener->Dispatch->NdkControlConnectEvents(listener, FALSE);
  PeerAsync accepted = peer().Connect(active, p.qp, peer().Address(AF_INET), address, 4, 4);
  NDK_CONNECTOR* passive = events->Next();
  ASSERT_NE(passive, nullptr) << "resumed (R174)";
  LocalQp q = MakeQp();
  Requested accept = StartAccept(passive, q.qp);
  EXPECT_EQ(peer().WaitOp(accepted), STATUS_SUCCESS);
  EXPECT_EQ(peer().CompleteConnect(active), STATUS_SUCCESS);
  EXPECT_EQ(Finish(accept), STATUS_SUCCESS);
}

// R176, R177, R179, R180: read limits. Each side offers min(its consumer's limit, its
// adapter's maximum); the effective inbound limit is min(own offer, the peer's outbound
// offer), the outbound limit min(own offer, the peer's inbound offer); before Accept the
// passive connector reports what the peer asks for within its adapter's maxima. The
// pointers are optional.
TEST_P(ConnectionTest, R176_R177_R179_R180_ReadLimitsAreNegotiated) {
  ASSERT_NO_FATAL_FAILURE(
      Start({{"max_inbound_read_limit", "6"}, {"max_outbound_read_limit", "5"}}));
  ASSERT_EQ(local().info().MaxInboundReadLimit, 6u);
  ASSERT_EQ(local().info().MaxOutboundReadLimit, 5u);
  struct Limits {
    ULONG active_ird, active_ord, passive_ird, passive_ord;
  };
  const Limits cases[] = {{4, 4, 2, 8}, {16, 16, 16, 16}, {1, 3, 7, 1}, {6, 5, 6, 5}};
  for (const Limits& l : cases) {
    for (bool active : {true, false}) {
      SCOPED_TRACE(std::to_string(l.active_ird) + "/" + std::to_string(l.active_ord) + " vs " +
                   std::to_string(l.passive_ird) + "/" + std::to_string(l.passive_ord) +
                   (active ? ", local active" : ", local passive"));
      ULONG offer_active_in = std::min(l.active_ird, 6u),
            offer_active_out = std::min(l.active_ord, 5u);
      ULONG offer_passive_in = std::min(l.passive_ird, 6u),
            offer_passive_out = std::min(l.passive_ord, 5u);
      // What the passive side reports before Accept, and the active side's effective limits.
      ULONG before_in = std::min(offer_active_out, 6u), before_out = std::min(offer_active_in, 5u);
      ULONG active_in = std::min(offer_active_in, offer_passive_out);
      ULONG active_out = std::min(offer_active_out, offer_passive_in);
      LocalQp q = MakeQp();
      PeerQp p = peer().CreateQp();
      if (active) {
        SOCKADDR_INET destination = peer().Address(AF_INET, NextPort());
        PeerId listener = PeerListen(destination);
        NDK_CONNECTOR* c = local().CreateConnector();
        Requested r =
            StartConnect(c, q.qp, LocalAddress(AF_INET), destination, l.active_ird, l.active_ord);
        PeerId passive = peer().NextConnectEvent(listener);
        ASSERT_NE(passive, 0u);
        PeerConnectionData before = peer().GetConnectionData(passive);
        EXPECT_EQ(before.inbound, before_in) << "passive side before Accept (R176, R180)";
        EXPECT_EQ(before.outbound, before_out) << "(R177, R180)";
        PeerAsync accept = peer().Accept(passive, p.qp, l.passive_ird, l.passive_ord);
        ASSERT_EQ(Finish(r), STATUS_SUCCESS);
        ULONG ird = 99, ord = 99, length = 0;
        EXPECT_EQ(c->Dispatch->NdkGetConnectionData(c, &ird, &ord, nullptr, &length),
                  STATUS_SUCCESS);
        EXPECT_EQ(ird, active_in) << "(R176, R179)";
        EXPECT_EQ(ord, active_out) << "(R177, R179)";
        ird = 99;
        EXPECT_EQ(c->Dispatch->NdkGetConnectionData(c, &ird, nullptr, nullptr, &length),
                  STATUS_SUCCESS)
            << "pOutboundReadLimit is optional (R179)";
        EXPECT_EQ(ird, active_in);
        EXPECT_EQ(c->Dispatch->NdkGetConnectionData(c, nullptr, nullptr, nullptr, &length),
                  STATUS_SUCCESS)
            << "both are optional (R179)";
        EXPECT_EQ(Finish(StartCompleteConnect(c)), STATUS_SUCCESS);
        EXPECT_EQ(peer().WaitOp(accept), STATUS_SUCCESS);
      } else {
        ConnectEvents* events;
        SOCKADDR_INET address;
        ASSERT_NE(LocalListener(AF_INET, &events, &address), nullptr);
        PeerId c = peer().CreateConnector();
        PeerAsync connect =
            peer().Connect(c, p.qp, peer().Address(AF_INET), address, l.active_ird, l.active_ord);
        NDK_CONNECTOR* passive = events->Next();
        ASSERT_NE(passive, nullptr);
        ULONG ird = 99, ord = 99, length = 0;
        EXPECT_EQ(passive->Dispatch->NdkGetConnectionData(passive, &ird, &ord, nullptr, &length),
                  STATUS_SUCCESS);
        EXPECT_EQ(ird, before_in) << "passive side before Accept (R176, R180)";
        EXPECT_EQ(ord, before_out) << "(R177, R180)";
        Requested accept = StartAccept(passive, q.qp, l.passive_ird, l.passive_ord);
        ASSERT_EQ(peer().WaitOp(connect), STATUS_SUCCESS);
        PeerConnectionData after = peer().GetConnectionData(c);
        EXPECT_EQ(after.inbound, active_in) << "(R176)";
        EXPECT_EQ(after.outbound, active_out) << "(R177)";
        EXPECT_EQ(peer().CompleteConnect(c), STATUS_SUCCESS);
        EXPECT_EQ(Finish(accept), STATUS_SUCCESS);
      }
    }
  }
}

// R181, R182, R183, R184, R185: private data through NdkGetConnectionData: NULL and 0 ask
// for the size; NULL with a size is invalid; a short buffer gets what fits and
// STATUS_BUFFER_TOO_SMALL; the size reported is what the peer sent; no data gives 0.
TEST_P(ConnectionTest, R181_R182_R183_R184_R185_PrivateDataThroughGetConnectionData) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::vector<uint8_t> caller = Pattern(local().info().MaxCallerData, 181);
  std::vector<uint8_t> callee = Pattern(60, 183);
  ConnectEvents* events;
  SOCKADDR_INET address;
  ASSERT_NE(LocalListener(AF_INET6, &events, &address), nullptr);
  LocalQp q = MakeQp();
  PeerQp p = peer().CreateQp();
  PeerId active = peer().CreateConnector();
  PeerAsync connect =
      peer().Connect(active, p.qp, peer().Address(AF_INET6), address, 4, 4, &caller);
  NDK_CONNECTOR* passive = events->Next();
  ASSERT_NE(passive, nullptr);
  ULONG length = 0;
  EXPECT_EQ(passive->Dispatch->NdkGetConnectionData(passive, nullptr, nullptr, nullptr, &length),
            STATUS_SUCCESS)
      << "(R181)";
  EXPECT_EQ(length, caller.size()) << "RDS (R181)";
  length = 5;
  EXPECT_EQ(passive->Dispatch->NdkGetConnectionData(passive, nullptr, nullptr, nullptr, &length),
            STATUS_INVALID_PARAMETER)
      << "(R182)";
  std::vector<uint8_t> data;
  EXPECT_EQ(ConnectionData(passive, &data, &length, 10), STATUS_BUFFER_TOO_SMALL) << "(R183)";
  EXPECT_EQ(length, caller.size()) << "(R183)";
  EXPECT_TRUE(std::equal(data.begin(), data.end(), caller.begin())) << "what fits is copied (R183)";
  EXPECT_EQ(ConnectionData(passive, &data, &length, 200), STATUS_SUCCESS) << "(R183)";
  EXPECT_EQ(length, caller.size());
  EXPECT_EQ(data, caller) << "byte for byte (R184)";
  Requested accept = StartAccept(passive, q.qp, 4, 4, &callee);
  ASSERT_EQ(peer().WaitOp(connect), STATUS_SUCCESS);
  PeerConnectionData got = peer().GetConnectionData(active, 0, /*null_buffer=*/true);
  EXPECT_EQ(got.status, STATUS_SUCCESS);
  EXPECT_EQ(got.length, callee.size()) << "(R181)";
  got = peer().GetConnectionData(active, 256);
  EXPECT_EQ(got.data, callee) << "the accept's private data (R184)";
  EXPECT_EQ(peer().CompleteConnect(active), STATUS_SUCCESS);
  EXPECT_EQ(Finish(accept), STATUS_SUCCESS);
  // No private data at all, both ways (R185).
  Pair pair;
  pair.q = MakeQp();
  pair.p = peer().CreateQp();
  SOCKADDR_INET destination = peer().Address(AF_INET, NextPort());
  PeerId listener = PeerListen(destination);
  NDK_CONNECTOR* c = local().CreateConnector();
  Requested r = StartConnect(c, pair.q.qp, LocalAddress(AF_INET), destination, 4, 4, nullptr);
  PeerId passive2 = peer().NextConnectEvent(listener);
  ASSERT_NE(passive2, 0u);
  EXPECT_EQ(peer().GetConnectionData(passive2, 0, true).length, 0u) << "(R185)";
  PeerAsync accept2 = peer().Accept(passive2, pair.p.qp, 4, 4, nullptr);
  ASSERT_EQ(Finish(r), STATUS_SUCCESS);
  std::vector<uint8_t> buffer(16);
  length = 16;
  EXPECT_EQ(c->Dispatch->NdkGetConnectionData(c, nullptr, nullptr, buffer.data(), &length),
            STATUS_SUCCESS);
  EXPECT_EQ(length, 0u) << "(R185)";
  EXPECT_EQ(Finish(StartCompleteConnect(c)), STATUS_SUCCESS);
  EXPECT_EQ(peer().WaitOp(accept2), STATUS_SUCCESS);
}

// R187, R193: from the moment a listener's close is requested, new connections are
// refused, although the close stays pending while a connector accepted over it is open.
TEST_P(ConnectionTest, R187_R193_ClosingListenerRefusesAtOnce) {
  ASSERT_NO_FATAL_FAILURE(Start());
  LinkOptions o;
  o.local_active = false;
  Pair pair = MakePair(o);
  ASSERT_TRUE(pair.ok());
  SOCKADDR_INET address;
  ASSERT_EQ(LocalAddressOf(pair.link.local_listener, &address), STATUS_SUCCESS);
  Completion* close = local().StartClose(pair.link.local_listener);
  ASSERT_NE(close, nullptr);
  EXPECT_EQ(close->call_status(), STATUS_PENDING) << "an accepted connector is open (R193)";
  PeerQp p = peer().CreateQp();
  PeerId active = peer().CreateConnector();
  PeerAsync refused = peer().Connect(active, p.qp, peer().Address(AF_INET), address, 4, 4);
  EXPECT_EQ(peer().WaitOp(refused), STATUS_CONNECTION_REFUSED) << "(R187)";
  EXPECT_EQ(pair.link.events->Next(kSettle), nullptr) << "no connect event after the close (R187)";
  EXPECT_FALSE(TestAdapter::CloseDone(close)) << "(R193)";
  local().CloseAndWait(pair.link.local);
  EXPECT_TRUE(TestAdapter::WaitCloseDone(close)) << "(R193)";
}

// R190, R191, R192: a listener's address:port stays taken while a connector accepted over it
// is open, even after the listener's close was requested: Listen, Connect and shared
// endpoints on it fail with STATUS_SHARING_VIOLATION; once the count is zero it is free.
TEST_P(ConnectionTest, R190_R191_R192_ListenerEndpointOutlivesTheListener) {
  ASSERT_NO_FATAL_FAILURE(Start());
  LinkOptions o;
  o.local_active = false;
  o.family = AF_INET6;
  Pair pair = MakePair(o);
  ASSERT_TRUE(pair.ok());
  SOCKADDR_INET address;
  ASSERT_EQ(LocalAddressOf(pair.link.local_listener, &address), STATUS_SUCCESS);
  Completion* close = local().StartClose(pair.link.local_listener);
  ASSERT_NE(close, nullptr);
  ConnectEvents& events = NewConnectEvents();
  NTSTATUS listened = STATUS_PENDING;
  Listen(events, address, &listened);
  EXPECT_EQ(listened, STATUS_SHARING_VIOLATION) << "(R191, R192)";
  EXPECT_EQ(local().TryCreateSharedEndpoint(address).status, STATUS_SHARING_VIOLATION) << "(R192)";
  LocalQp q = MakeQp();
  NDK_CONNECTOR* c = local().CreateConnector();
  SOCKADDR_INET destination = peer().Address(AF_INET6, NextPort());
  PeerId listener = PeerListen(destination);
  ASSERT_NE(listener, 0u);
  EXPECT_EQ(Finish(StartConnect(c, q.qp, address, destination)), STATUS_SHARING_VIOLATION)
      << "(R192)";
  local().CloseAndWait(pair.link.local);
  ASSERT_TRUE(TestAdapter::WaitCloseDone(close));
  ConnectEvents& again = NewConnectEvents();
  listened = STATUS_PENDING;
  Listen(again, address, &listened);
  EXPECT_EQ(listened, STATUS_SUCCESS) << "free once the count reached zero (R191)";
}

// R194: the implicit endpoint of an NdkConnect belongs to its connector alone and is freed
// when the connector closes.
TEST_P(ConnectionTest, R194_ConnectEndpointIsFreedWithItsConnector) {
  ASSERT_NO_FATAL_FAILURE(Start());
  LocalQp q = MakeQp();
  PeerQp p = peer().CreateQp();
  SOCKADDR_INET source = LocalAddress(AF_INET, NextPort());
  SOCKADDR_INET destination = peer().Address(AF_INET, NextPort());
  PeerId listener = PeerListen(destination);
  NDK_CONNECTOR* c = local().CreateConnector();
  Requested r = StartConnect(c, q.qp, source, destination);
  PeerId passive = peer().NextConnectEvent(listener);
  ASSERT_NE(passive, 0u);
  PeerAsync accept = peer().Accept(passive, p.qp, 4, 4);
  ASSERT_EQ(Finish(r), STATUS_SUCCESS);
  ASSERT_EQ(Finish(StartCompleteConnect(c)), STATUS_SUCCESS);
  ASSERT_EQ(peer().WaitOp(accept), STATUS_SUCCESS);
  SOCKADDR_INET used;
  ASSERT_EQ(LocalAddressOf(c, &used), STATUS_SUCCESS);
  EXPECT_TRUE(SameAddress(used, source)) << "the source given (R158)";
  EXPECT_EQ(local().TryCreateSharedEndpoint(source).status, STATUS_SHARING_VIOLATION) << "(R194)";
  local().CloseAndWait(c);
  Created<NDK_SHARED_ENDPOINT> reuse = local().TryCreateSharedEndpoint(source);
  EXPECT_EQ(reuse.status, STATUS_SUCCESS) << "freed with its connector (R194)";
}

// R162, R195, R196: connections through a shared endpoint use its address; several to
// different destinations succeed, a second one to the same destination fails with
// STATUS_ADDRESS_ALREADY_EXISTS; the address:port stays taken, and the endpoint's close
// pending, until every connector through it is closed.
TEST_P(ConnectionTest, R162_R195_R196_SharedEndpointConnections) {
  ASSERT_NO_FATAL_FAILURE(Start());
  NDK_SHARED_ENDPOINT* endpoint = local().CreateSharedEndpoint(LocalAddress(AF_INET6, 0));
  ASSERT_NE(endpoint, nullptr);
  SOCKADDR_INET shared;
  ULONG length = sizeof(shared);
  ASSERT_EQ(endpoint->Dispatch->NdkGetLocalAddress(endpoint, Sa(shared), &length), STATUS_SUCCESS);
  std::vector<NDK_CONNECTOR*> connectors;
  std::vector<SOCKADDR_INET> destinations;
  std::vector<uint8_t> hello = Pattern(12, 162);
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    LocalQp q = MakeQp();
    PeerQp p = peer().CreateQp();
    destinations.push_back(peer().Address(AF_INET6, NextPort()));
    PeerId listener = PeerListen(destinations.back());
    NDK_CONNECTOR* c = local().CreateConnector();
    // The first with private data, the second with none (R185).
    Requested r =
        StartConnectShared(c, q.qp, endpoint, destinations.back(), 4, 4, i == 0 ? &hello : nullptr);
    PeerId passive = peer().NextConnectEvent(listener);
    ASSERT_NE(passive, 0u);
    PeerConnectionData got = peer().GetConnectionData(passive);
    EXPECT_EQ(got.status, STATUS_SUCCESS);
    EXPECT_EQ(got.length, i == 0 ? hello.size() : 0u) << "(R184, R185)";
    if (i == 0) {
      EXPECT_EQ(got.data, hello) << "(R184)";
    }
    SOCKADDR_INET seen;
    ASSERT_EQ(peer().GetPeerAddress(passive, &seen), STATUS_SUCCESS);
    EXPECT_TRUE(SameAddress(seen, shared)) << "the shared endpoint's address is the source (R162)";
    PeerAsync accept = peer().Accept(passive, p.qp, 4, 4);
    ASSERT_EQ(Finish(r), STATUS_SUCCESS) << "(R162)";
    ASSERT_EQ(Finish(StartCompleteConnect(c)), STATUS_SUCCESS);
    ASSERT_EQ(peer().WaitOp(accept), STATUS_SUCCESS);
    SOCKADDR_INET mine;
    ASSERT_EQ(LocalAddressOf(c, &mine), STATUS_SUCCESS);
    EXPECT_TRUE(SameAddress(mine, shared)) << "(R162, R190)";
    connectors.push_back(c);
  }
  LocalQp q = MakeQp();
  NDK_CONNECTOR* duplicate = local().CreateConnector();
  EXPECT_EQ(Finish(StartConnectShared(duplicate, q.qp, endpoint, destinations[0])),
            STATUS_ADDRESS_ALREADY_EXISTS)
      << "a second connection to the same destination (R162)";
  ConnectEvents& events = NewConnectEvents();
  NTSTATUS listened = STATUS_PENDING;
  Listen(events, shared, &listened);
  EXPECT_EQ(listened, STATUS_SHARING_VIOLATION) << "(R195)";
  Completion* close = local().StartClose(endpoint);
  ASSERT_NE(close, nullptr);
  EXPECT_EQ(close->call_status(), STATUS_PENDING) << "connectors through it are open (R196)";
  local().CloseAndWait(connectors[0]);
  std::this_thread::sleep_for(kSettle);
  EXPECT_FALSE(TestAdapter::CloseDone(close)) << "one connector is still open (R196)";
  local().CloseAndWait(connectors[1]);
  EXPECT_TRUE(TestAdapter::WaitCloseDone(close)) << "(R196)";
  ConnectEvents& later = NewConnectEvents();
  listened = STATUS_PENDING;
  Listen(later, shared, &listened);
  EXPECT_EQ(listened, STATUS_SUCCESS) << "free at count zero (R195)";
}

// R041: a listener's close does not complete while its connect event runs, nor a
// connector's while its disconnect event runs.
TEST_P(ConnectionTest, R041_ClosesWaitForRunningConnectAndDisconnectEvents) {
  ASSERT_NO_FATAL_FAILURE(Start());
  {
    SCOPED_TRACE("connect event");
    auto gate = std::make_shared<Gate>();
    auto entered = std::make_shared<std::atomic<bool>>(false);
    auto returned = std::make_shared<std::atomic<uint64_t>>(0);
    ConnectEvents& events = NewConnectEvents();
    events.hook = [gate, entered, returned](NDK_CONNECTOR*) {
      entered->store(true);
      EXPECT_TRUE(gate->Wait()) << "the test never opened the gate";
      returned->store(NextStamp());
    };
    SOCKADDR_INET address = LocalAddress(AF_INET, NextPort());
    NDK_LISTENER* listener = Listen(events, address);
    ASSERT_NE(listener, nullptr);
    PeerQp p = peer().CreateQp();
    PeerId active = peer().CreateConnector();
    PeerAsync connect = peer().Connect(active, p.qp, peer().Address(AF_INET), address, 4, 4);
    ASSERT_TRUE(WaitUntil([&] { return entered->load(); }));
    NDK_CONNECTOR* passive = events.Next();
    ASSERT_NE(passive, nullptr);
    EXPECT_EQ(Reject(passive), STATUS_SUCCESS);
    Completion* connector_close = local().StartClose(passive);
    Completion* close = local().StartClose(listener);
    ASSERT_NE(close, nullptr);
    EXPECT_EQ(close->call_status(), STATUS_PENDING) << "its connect event is running (R041)";
    std::this_thread::sleep_for(kSettle);
    EXPECT_EQ(close->entered(), 0) << "closed while its connect event ran (R041)";
    gate->Open();
    EXPECT_TRUE(TestAdapter::WaitCloseDone(connector_close));
    ASSERT_TRUE(TestAdapter::WaitCloseDone(close));
    if (close->call_status() == STATUS_PENDING) {
      EXPECT_GT(close->enter_stamp(), returned->load()) << "(R041)";
    }
    EXPECT_EQ(peer().WaitOp(connect), STATUS_CONNECTION_REFUSED);
  }
  {
    SCOPED_TRACE("disconnect event");
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    auto gate = std::make_shared<Gate>();
    auto returned = std::make_shared<std::atomic<uint64_t>>(0);
    pair.link.disconnects->hook = [gate, returned] {
      EXPECT_TRUE(gate->Wait()) << "the test never opened the gate";
      returned->store(NextStamp());
    };
    ASSERT_EQ(peer().Disconnect(pair.link.peer), STATUS_SUCCESS);
    ASSERT_TRUE(pair.link.disconnects->WaitCount(1));
    Completion* close = local().StartClose(pair.link.local);
    ASSERT_NE(close, nullptr);
    EXPECT_EQ(close->call_status(), STATUS_PENDING) << "its disconnect event is running (R041)";
    std::this_thread::sleep_for(kSettle);
    EXPECT_EQ(close->entered(), 0) << "closed while its disconnect event ran (R041)";
    gate->Open();
    ASSERT_TRUE(TestAdapter::WaitCloseDone(close));
    if (close->call_status() == STATUS_PENDING) {
      EXPECT_GT(close->enter_stamp(), returned->load()) << "(R041)";
    }
  }
}

SOFTNDK_INSTANTIATE_DATAPATH(ConnectionTest);

}  // namespace
}  // namespace conformance
