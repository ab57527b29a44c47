#include "datapath.hpp"

#include <cstdio>

namespace conformance {

ULONG AddressLength(const SOCKADDR_INET& address) {
  return address.si_family == AF_INET ? sizeof(SOCKADDR_IN) : sizeof(SOCKADDR_IN6);
}

bool SameAddress(const SOCKADDR_INET& a, const SOCKADDR_INET& b) {
  if (a.si_family != b.si_family) return false;
  if (a.si_family == AF_INET)
    return a.Ipv4.sin_port == b.Ipv4.sin_port && a.Ipv4.sin_addr.s_addr == b.Ipv4.sin_addr.s_addr;
  return a.Ipv6.sin6_port == b.Ipv6.sin6_port &&
         std::memcmp(&a.Ipv6.sin6_addr, &b.Ipv6.sin6_addr, sizeof(in6_addr)) == 0;
}

uint16_t PortOf(const SOCKADDR_INET& address) {
  return ntohs(address.si_family == AF_INET ? address.Ipv4.sin_port : address.Ipv6.sin6_port);
}

std::string AddressText(const SOCKADDR_INET& address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.si_family == AF_INET) {
    inet_ntop(AF_INET, &address.Ipv4.sin_addr, text, sizeof(text));
    return std::string(text) + ":" + std::to_string(PortOf(address));
  }
  inet_ntop(AF_INET6, &address.Ipv6.sin6_addr, text, sizeof(text));
  return "[" + std::string(text) + "]:" + std::to_string(PortOf(address));
}

std::vector<uint8_t> Pattern(size_t length, unsigned seed) {
  std::vector<uint8_t> bytes(length);
  uint32_t x = 0x9E3779B9u * (seed + 1);
  for (size_t i = 0; i < length; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    bytes[i] = static_cast<uint8_t>(x);
  }
  return bytes;
}

std::string ResultText(const NDK_RESULT_EX& r) {
  char text[160];
  std::snprintf(text, sizeof(text), "{%s bytes=%u type=%d ctx=%p qp=%p}",
                StatusText(r.Status).c_str(), r.BytesTransferred, static_cast<int>(r.Type),
                r.RequestContext, r.QPContext);
  return text;
}

// ------------------------------------------------------------------------- fixture --

bool DataPathTest::WaitPeerGone(NDK_CONNECTOR* connector) {
  return WaitUntil([&] {
    ULONG length = 0;
    return connector->Dispatch->NdkGetConnectionData(connector, nullptr, nullptr, nullptr, &length) !=
           STATUS_SUCCESS;
  });
}

void DataPathTest::SetUp() {
  ConformanceTest::SetUp();
  if (HasFatalFailure()) return;
  const testing::TestInfo* info = testing::UnitTest::GetInstance()->current_test_info();
  std::string suite = info->test_suite_name();
  std::string test = info->name();
  suite = suite.substr(suite.find('/') + 1);  // "Inproc/PostingTest" -> "PostingTest"
  test = test.substr(0, test.find('/'));      // "R073_X/Inline_DirectPeer" -> "R073_X"
  if (const char* why = ExclusionFor(GetParam(), suite, test)) {
    GTEST_SKIP() << "excluded on " << GetParam().fabric_name << ": " << why;
  }
  peer_ = std::make_unique<Peer>(GetParam().peer, GetParam().fabric);
}

void DataPathTest::TearDown() {
  if (peer_) peer_->Shutdown();
  // LAMs are released before their adapter closes, as consumers do.
  if (local_ != nullptr && !local_->closed() && !local_->leaked())
    for (NDK_LOGICAL_ADDRESS_MAPPING* lam : lams_built_)
      local_->dispatch()->NdkReleaseLAM(local_->get(), lam);
  lams_built_.clear();
  ConformanceTest::TearDown();
}

void DataPathTest::Start(std::initializer_list<std::pair<const char*, const char*>> tunables) {
  ASSERT_FALSE(started_) << "Start() twice";
  ASSERT_TRUE(peer_ != nullptr);
  started_ = true;
  for (const auto& [name, value] : tunables) {
    ASSERT_EQ(SoftNdkSetTunable(name, value), STATUS_SUCCESS) << name << "=" << value;
    ASSERT_TRUE(peer_->SetTunable(name, value));
  }
  local_ = tunables.size() > 0 ? OpenAdapter() : adapter_;
  ASSERT_NE(local_, nullptr);
  ULONG64 seed = GetParam().seed != 0 ? GetParam().seed + 1 : 0;
  ASSERT_TRUE(peer_->Open(mode(), seed));
  pd_ = local_->CreatePd();
  ASSERT_NE(pd_, nullptr);
}

bool DataPathTest::BothHave(ULONG flag) const {
  return (local_->info().AdapterFlags & flag) == flag &&
         (peer_->info().AdapterFlags & flag) == flag;
}

LocalRegion& DataPathTest::Region(size_t length, ULONG flags, size_t page_offset, NDK_PD* pd) {
  buffers_.push_back(std::make_unique<TestBuffer>(length, page_offset));
  TestBuffer* buffer = buffers_.back().get();
  std::memset(buffer->data(), 0, length);
  LocalRegion region;
  region.buffer = buffer;
  region.data = buffer->data();
  region.length = length;
  region.mr = local_->CreateMr(pd != nullptr ? pd : pd_, false);
  if (region.mr != nullptr) {
    NDK_MR* mr = region.mr;
    Requested r = local_->Request("NdkRegisterMr", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
      return mr->Dispatch->NdkRegisterMr(mr, buffer->mdl(), length, flags, cb, ctx);
    });
    EXPECT_EQ(r.status, STATUS_SUCCESS) << "NdkRegisterMr: " << StatusText(r.status);
    region.local_token = mr->Dispatch->NdkGetLocalTokenFromMr(mr);
    region.remote_token = mr->Dispatch->NdkGetRemoteTokenFromMr(mr);
  }
  regions_.push_back(region);
  return regions_.back();
}

EventCounter& DataPathTest::NewCounter() {
  counters_.push_back(std::make_unique<EventCounter>());
  return *counters_.back();
}

DisconnectEvents& DataPathTest::NewDisconnects() {
  disconnects_.push_back(std::make_unique<DisconnectEvents>());
  return *disconnects_.back();
}

ConnectEvents& DataPathTest::NewConnectEvents() {
  connect_events_.push_back(std::make_unique<ConnectEvents>(*local_));
  return *connect_events_.back();
}

LocalQp DataPathTest::MakeQp(const QpShape& shape, ULONG cq_depth, bool shared_cq, PVOID context) {
  LocalQp q;
  q.rnotify = &NewCounter();
  q.rcq = local_->CreateCq(cq_depth, q.rnotify);
  if (shared_cq) {
    q.inotify = q.rnotify;
    q.icq = q.rcq;
  } else {
    q.inotify = &NewCounter();
    q.icq = local_->CreateCq(cq_depth, q.inotify);
  }
  q.context = context != nullptr
                  ? context
                  : reinterpret_cast<PVOID>(uintptr_t{0xC0FFEE00} + counters_.size());
  if (q.rcq != nullptr && q.icq != nullptr)
    q.qp = local_->CreateQp(pd_, q.rcq, q.icq, shape, q.context);
  return q;
}

DataPathTest::LocalFast DataPathTest::MakeFast(ULONG pages, bool remote_access, ULONG backing) {
  LocalFast f;
  if (backing == 0) backing = pages;
  buffers_.push_back(std::make_unique<TestBuffer>(static_cast<size_t>(backing) * PAGE_SIZE, 0));
  f.buffer = buffers_.back().get();
  std::memset(f.buffer->data(), 0, f.buffer->length());
  lams_.emplace_back(4 + backing);
  f.lam = reinterpret_cast<NDK_LOGICAL_ADDRESS_MAPPING*>(lams_.back().data());
  ULONG size = static_cast<ULONG>(lams_.back().size() * sizeof(uint64_t));
  ULONG fbo = 0;
  NDK_ADAPTER* a = local_->get();
  NDK_LOGICAL_ADDRESS_MAPPING* lam = f.lam;
  TestBuffer* buffer = f.buffer;
  Requested built = local_->Request("NdkBuildLAM", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return a->Dispatch->NdkBuildLAM(a, buffer->mdl(), buffer->length(), cb, ctx, lam, &size, &fbo);
  });
  if (built.status != STATUS_SUCCESS) {
    ADD_FAILURE() << "NdkBuildLAM: " << StatusText(built.status);
    f.lam = nullptr;
    return f;
  }
  lams_built_.push_back(f.lam);
  f.pages.assign(f.lam->AdapterPageArray, f.lam->AdapterPageArray + f.lam->AdapterPageCount);
  f.mr = local_->CreateMr(pd_, true);
  if (f.mr == nullptr) return f;
  NDK_MR* mr = f.mr;
  Requested init =
      local_->Request("NdkInitializeFastRegisterMr", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return mr->Dispatch->NdkInitializeFastRegisterMr(mr, pages, remote_access ? TRUE : FALSE,
                                                         cb, ctx);
      });
  EXPECT_EQ(init.status, STATUS_SUCCESS) << "NdkInitializeFastRegisterMr";
  return f;
}

// ---- connections ----

NDK_LISTENER* DataPathTest::Listen(ConnectEvents& events, const SOCKADDR_INET& address,
                                   NTSTATUS* status) {
  Created<NDK_LISTENER> l = local_->TryCreateListenerWith(&events);
  if (!l.ok()) {
    ADD_FAILURE() << "NdkCreateListener: " << StatusText(l.status);
    return nullptr;
  }
  NDK_LISTENER* listener = l.object;
  SOCKADDR_INET copy = address;
  Requested r = local_->Request("NdkListen", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return listener->Dispatch->NdkListen(listener, Sa(copy), AddressLength(copy), cb, ctx);
  });
  if (status != nullptr) {
    *status = r.status;
  } else {
    EXPECT_EQ(r.status, STATUS_SUCCESS)
        << "NdkListen(" << AddressText(address) << "): " << StatusText(r.status);
  }
  return listener;
}

PeerId DataPathTest::PeerListen(const SOCKADDR_INET& address) {
  PeerId listener = peer_->CreateListener();
  if (listener == 0) return 0;
  NTSTATUS s = peer_->Listen(listener, address);
  EXPECT_EQ(s, STATUS_SUCCESS) << "peer NdkListen(" << AddressText(address)
                               << "): " << StatusText(s);
  return NT_SUCCESS(s) ? listener : 0;
}

Requested DataPathTest::StartConnect(NDK_CONNECTOR* connector, NDK_QP* qp,
                                     const SOCKADDR_INET& source, const SOCKADDR_INET& destination,
                                     ULONG ird, ULONG ord, const std::vector<uint8_t>* data) {
  SOCKADDR_INET src = source, dst = destination;
  auto* bytes = data != nullptr ? const_cast<uint8_t*>(data->data()) : nullptr;
  ULONG length = data != nullptr ? static_cast<ULONG>(data->size()) : 0;
  return local_->Request(
      "NdkConnect",
      [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return connector->Dispatch->NdkConnect(connector, qp, Sa(src), AddressLength(src), Sa(dst),
                                               AddressLength(dst), ird, ord, bytes, length, cb,
                                               ctx);
      },
      {}, /*wait=*/false);
}

Requested DataPathTest::StartConnectShared(NDK_CONNECTOR* connector, NDK_QP* qp,
                                           NDK_SHARED_ENDPOINT* endpoint,
                                           const SOCKADDR_INET& destination, ULONG ird, ULONG ord,
                                           const std::vector<uint8_t>* data) {
  SOCKADDR_INET dst = destination;
  auto* bytes = data != nullptr ? const_cast<uint8_t*>(data->data()) : nullptr;
  ULONG length = data != nullptr ? static_cast<ULONG>(data->size()) : 0;
  return local_->Request(
      "NdkConnectWithSharedEndpoint",
      [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return connector->Dispatch->NdkConnectWithSharedEndpoint(
            connector, qp, endpoint, Sa(dst), AddressLength(dst), ird, ord, bytes, length, cb, ctx);
      },
      {}, /*wait=*/false);
}

Requested DataPathTest::StartAccept(NDK_CONNECTOR* connector, NDK_QP* qp, ULONG ird, ULONG ord,
                                    const std::vector<uint8_t>* data, DisconnectEvents* events,
                                    bool ex) {
  auto* bytes = data != nullptr ? const_cast<uint8_t*>(data->data()) : nullptr;
  ULONG length = data != nullptr ? static_cast<ULONG>(data->size()) : 0;
  return local_->Request(
      ex ? "NdkAcceptEx" : "NdkAccept",
      [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        if (ex)
          return connector->Dispatch->NdkAcceptEx(
              connector, qp, ird, ord, bytes, length,
              events != nullptr ? &DisconnectEvents::OnEx : nullptr, events, cb, ctx);
        return connector->Dispatch->NdkAccept(connector, qp, ird, ord, bytes, length,
                                              events != nullptr ? &DisconnectEvents::On : nullptr,
                                              events, cb, ctx);
      },
      {}, /*wait=*/false);
}

Requested DataPathTest::StartCompleteConnect(NDK_CONNECTOR* connector, DisconnectEvents* events,
                                             bool ex) {
  return local_->Request(
      ex ? "NdkCompleteConnectEx" : "NdkCompleteConnect",
      [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        if (ex)
          return connector->Dispatch->NdkCompleteConnectEx(
              connector, events != nullptr ? &DisconnectEvents::OnEx : nullptr, events, cb, ctx);
        return connector->Dispatch->NdkCompleteConnect(
            connector, events != nullptr ? &DisconnectEvents::On : nullptr, events, cb, ctx);
      },
      {}, /*wait=*/false);
}

NTSTATUS DataPathTest::Reject(NDK_CONNECTOR* connector, const std::vector<uint8_t>* data) {
  auto* bytes = data != nullptr ? const_cast<uint8_t*>(data->data()) : nullptr;
  ULONG length = data != nullptr ? static_cast<ULONG>(data->size()) : 0;
  NTSTATUS s = connector->Dispatch->NdkReject(connector, bytes, length);
  EXPECT_NE(s, STATUS_PENDING) << "NdkReject is synchronous (R168)";
  return s;
}

NTSTATUS DataPathTest::Disconnect(NDK_CONNECTOR* connector) {
  Requested r = local_->Request("NdkDisconnect", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return connector->Dispatch->NdkDisconnect(connector, cb, ctx);
  });
  return r.status;
}

NTSTATUS DataPathTest::Finish(const Requested& request) {
  if (request.returned != STATUS_PENDING) return request.returned;
  if (!request.completion->WaitReturned(1)) {
    ADD_FAILURE() << request.completion->what() << ": no completion within " << kWait.count()
                  << " ms (R058)";
    return STATUS_PENDING;
  }
  return request.completion->status();
}

Link DataPathTest::Connect(LocalQp& q, const PeerQp& p, const LinkOptions& o) {
  Link link;
  if (!q.ok() || !p.ok()) {
    ADD_FAILURE() << "Connect: QPs missing";
    return link;
  }
  uint16_t port = NextPort();
  link.disconnects = &NewDisconnects();
  DisconnectEvents* events = o.local_event ? link.disconnects : nullptr;
  if (o.local_active) {
    SOCKADDR_INET destination = peer_->Address(o.family, port);
    link.peer_listener = PeerListen(destination);
    if (link.peer_listener == 0) return link;
    NDK_CONNECTOR* connector = local_->CreateConnector();
    if (connector == nullptr) return link;
    Requested c = StartConnect(connector, q.qp, LocalAddress(o.family, 0), destination, o.local_ird,
                               o.local_ord, o.caller_data);
    EXPECT_EQ(c.returned, STATUS_PENDING)
        << "NdkConnect completed before the peer answered: " << StatusText(c.returned);
    PeerId passive = peer_->NextConnectEvent(link.peer_listener);
    if (passive == 0) {
      ADD_FAILURE() << "the peer got no connect event (R173)";
      return link;
    }
    PeerAsync accept = peer_->Accept(passive, p.qp, o.peer_ird, o.peer_ord, o.callee_data);
    NTSTATUS s = Finish(c);
    if (s != STATUS_SUCCESS) {
      ADD_FAILURE() << "NdkConnect: " << StatusText(s);
      return link;
    }
    s = Finish(StartCompleteConnect(connector, events, o.ex));
    if (s != STATUS_SUCCESS) {
      ADD_FAILURE() << "NdkCompleteConnect: " << StatusText(s);
      return link;
    }
    s = peer_->WaitOp(accept);
    if (s != STATUS_SUCCESS) {
      ADD_FAILURE() << "peer NdkAccept: " << StatusText(s);
      return link;
    }
    link.local = connector;
    link.peer = passive;
  } else {
    SOCKADDR_INET destination = LocalAddress(o.family, port);
    link.events = &NewConnectEvents();
    link.local_listener = Listen(*link.events, destination);
    if (link.local_listener == nullptr) return link;
    PeerId active = peer_->CreateConnector();
    if (active == 0) return link;
    PeerAsync c = peer_->Connect(active, p.qp, peer_->Address(o.family, 0), destination, o.peer_ird,
                                 o.peer_ord, o.caller_data);
    NDK_CONNECTOR* passive = link.events->Next();
    if (passive == nullptr) {
      ADD_FAILURE() << "no connect event for the peer's Connect (" << StatusText(c.returned) << ")";
      return link;
    }
    Requested a = StartAccept(passive, q.qp, o.local_ird, o.local_ord, o.callee_data, events, o.ex);
    NTSTATUS s = peer_->WaitOp(c);
    if (s != STATUS_SUCCESS) {
      ADD_FAILURE() << "peer NdkConnect: " << StatusText(s);
      return link;
    }
    s = peer_->CompleteConnect(active);
    if (s != STATUS_SUCCESS) {
      ADD_FAILURE() << "peer NdkCompleteConnect: " << StatusText(s);
      return link;
    }
    s = Finish(a);
    if (s != STATUS_SUCCESS) {
      ADD_FAILURE() << "NdkAccept: " << StatusText(s);
      return link;
    }
    link.local = passive;
    link.peer = active;
  }
  return link;
}

Pair DataPathTest::MakePair(const LinkOptions& options, const QpShape& shape) {
  Pair pair;
  pair.q = MakeQp(shape);
  pair.p = peer_->CreateQp(32, 4, 64, 128, /*shared_cq=*/false);
  if (pair.q.ok() && pair.p.ok()) pair.link = Connect(pair.q, pair.p, options);
  return pair;
}

bool DataPathTest::WaitPeerDisconnect(PeerId connector, int n, ULONG* reason) {
  bool seen = WaitUntil([&] { return peer_->DisconnectEvents(connector, reason) >= n; });
  return seen;
}

void DataPathTest::ExpectTerminated(Pair& pair, NTSTATUS reason, LocalRegion& scratch,
                                    const PeerRegion& remote) {
  ULONG got = 0;
  EXPECT_TRUE(WaitPeerDisconnect(pair.link.peer, 1, &got))
      << "the peer's connector got no disconnect event after the failure (docs/DATAPATH.md)";
  EXPECT_EQ(static_cast<NTSTATUS>(got), reason)
      << "ProviderDisconnectReason " << StatusText(static_cast<NTSTATUS>(got)) << " (R170)";
  EXPECT_EQ(PostWrite(pair.q, nullptr, {scratch.Sge(0, 8)}, remote.address, remote.remote_token),
            STATUS_CONNECTION_INVALID)
      << "a write after the connection was terminated (docs/DATAPATH.md)";
  EXPECT_EQ(PostSend(pair.q, nullptr, {scratch.Sge(0, 8)}), STATUS_CONNECTION_INVALID);
  EXPECT_EQ(
      peer_->Write(pair.p.qp, 0, {{remote.id, 0, 8}}, scratch.address(), scratch.remote_token),
      STATUS_CONNECTION_INVALID)
      << "the peer's write after the connection was terminated";
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(peer_->DisconnectEvents(pair.link.peer), 1) << "one disconnect event (R169)";
}

// ---- work requests ----

namespace {
NTSTATUS Checked(const char* what, const std::function<NTSTATUS()>& post) {
  auto start = Clock::now();
  NTSTATUS s = post();
  EXPECT_NE(s, STATUS_PENDING) << what << " returned STATUS_PENDING (R074)";
  EXPECT_LT(Clock::now() - start, kBoundedCall) << what << " blocked (R065)";
  return s;
}
NDK_SGE* List(std::vector<NDK_SGE>& sges) { return sges.empty() ? nullptr : sges.data(); }
ULONG Count(const std::vector<NDK_SGE>& sges) { return static_cast<ULONG>(sges.size()); }
}  // namespace

NTSTATUS DataPathTest::PostReceive(const LocalQp& q, PVOID context, std::vector<NDK_SGE> sges) {
  return Checked("NdkReceive", [&] {
    return q.qp->Dispatch->NdkReceive(q.qp, context, List(sges), Count(sges));
  });
}

NTSTATUS DataPathTest::PostSend(const LocalQp& q, PVOID context, std::vector<NDK_SGE> sges,
                                ULONG flags) {
  return Checked("NdkSend", [&] {
    return q.qp->Dispatch->NdkSend(q.qp, context, List(sges), Count(sges), flags);
  });
}

NTSTATUS DataPathTest::PostSendInvalidate(const LocalQp& q, PVOID context,
                                          std::vector<NDK_SGE> sges, UINT32 token, ULONG flags) {
  return Checked("NdkSendAndInvalidate", [&] {
    return q.qp->Dispatch->NdkSendAndInvalidate(q.qp, context, List(sges), Count(sges), flags,
                                                token);
  });
}

NTSTATUS DataPathTest::PostWrite(const LocalQp& q, PVOID context, std::vector<NDK_SGE> sges,
                                 uint64_t address, UINT32 token, ULONG flags) {
  return Checked("NdkWrite", [&] {
    return q.qp->Dispatch->NdkWrite(q.qp, context, List(sges), Count(sges), address, token, flags);
  });
}

NTSTATUS DataPathTest::PostRead(const LocalQp& q, PVOID context, std::vector<NDK_SGE> sges,
                                uint64_t address, UINT32 token, ULONG flags) {
  return Checked("NdkRead", [&] {
    return q.qp->Dispatch->NdkRead(q.qp, context, List(sges), Count(sges), address, token, flags);
  });
}

NTSTATUS DataPathTest::PostBind(const LocalQp& q, PVOID context, NDK_MR* mr, NDK_MW* mw,
                                uint64_t address, size_t length, ULONG flags) {
  return Checked("NdkBind", [&] {
    return q.qp->Dispatch->NdkBind(q.qp, context, mr, mw,
                                   reinterpret_cast<PVOID>(static_cast<uintptr_t>(address)), length,
                                   flags);
  });
}

NTSTATUS DataPathTest::PostInvalidate(const LocalQp& q, PVOID context, NDK_OBJECT_HEADER* target,
                                      ULONG flags) {
  return Checked("NdkInvalidate",
                 [&] { return q.qp->Dispatch->NdkInvalidate(q.qp, context, target, flags); });
}

NTSTATUS DataPathTest::PostFastRegister(const LocalQp& q, PVOID context, NDK_MR* mr,
                                        const std::vector<NDK_LOGICAL_ADDRESS>& pages, ULONG fbo,
                                        size_t length, uint64_t base, ULONG flags) {
  return Checked("NdkFastRegister", [&] {
    return q.qp->Dispatch->NdkFastRegister(
        q.qp, context, mr, static_cast<ULONG>(pages.size()), pages.empty() ? nullptr : pages.data(),
        fbo, length, reinterpret_cast<PVOID>(static_cast<uintptr_t>(base)), flags);
  });
}

// ---- completions ----

std::vector<NDK_RESULT_EX> DataPathTest::Poll(NDK_CQ* cq, size_t n, Millis timeout) {
  std::vector<NDK_RESULT_EX> results;
  auto deadline = Clock::now() + timeout;
  while (results.size() < n) {
    NDK_RESULT_EX r[16];
    ULONG want = static_cast<ULONG>(std::min<size_t>(16, n - results.size()));
    ULONG got = cq->Dispatch->NdkGetCqResultsEx(cq, r, want);
    EXPECT_LE(got, want) << "NdkGetCqResultsEx returned more than asked for (R118)";
    for (ULONG i = 0; i < std::min(got, want); ++i)
      ExpectTypeSpecificOutput(r[i].Type, r[i].TypeSpecificCompletionOutput);  // R107
    results.insert(results.end(), r, r + std::min(got, want));
    if (got == 0) {
      if (Clock::now() > deadline) break;
      std::this_thread::sleep_for(Millis(1));
    }
  }
  return results;
}

std::vector<NDK_RESULT_EX> DataPathTest::Drain(NDK_CQ* cq) {
  std::vector<NDK_RESULT_EX> results;
  for (;;) {
    NDK_RESULT_EX r[16];
    ULONG got = cq->Dispatch->NdkGetCqResultsEx(cq, r, 16);
    for (ULONG i = 0; i < std::min<ULONG>(got, 16); ++i)
      ExpectTypeSpecificOutput(r[i].Type, r[i].TypeSpecificCompletionOutput);  // R107
    results.insert(results.end(), r, r + std::min<ULONG>(got, 16));
    if (got < 16) return results;
  }
}

void DataPathTest::ExpectNoResults(NDK_CQ* cq, const std::string& why) {
  std::this_thread::sleep_for(kSettle);
  std::vector<NDK_RESULT_EX> extra = Drain(cq);
  EXPECT_TRUE(extra.empty()) << why << ": " << extra.size() << " unexpected completion(s), first "
                             << (extra.empty() ? "" : ResultText(extra[0]));
}

}  // namespace conformance
