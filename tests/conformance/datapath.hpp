// The data-path fixture: a local side on the fixture's TestAdapter (every create, request
// and close checked against the asynchronous contract) and a remote peer (peer.hpp),
// connected by the fabric under test. Each test is instantiated for every fabric x
// completion mode x peer form (SOFTNDK_INSTANTIATE_DATAPATH); tests a fabric cannot run are
// skipped with their reason (ExclusionFor), tests needing an adapter capability are gated
// on the adapter flags both sides report (RequireFlags).
//
// A test calls Start() first (optionally with tunables, which both sides then open with),
// builds QPs and regions on both sides, and connects them with Connect(). Work requests
// are posted with the Post* helpers, which check that a post never pends (R074) and
// returns promptly (R065). Every wait is bounded.
#pragma once

#include <unistd.h>

#include <arpa/inet.h>

#include <initializer_list>
#include <utility>
#include <vector>

#include "harness.hpp"
#include "peer.hpp"

namespace conformance {

inline constexpr ULONG kMrAll =
    NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ | NDK_MR_FLAG_ALLOW_REMOTE_WRITE;

// A registered local buffer.
struct LocalRegion {
  TestBuffer* buffer = nullptr;
  NDK_MR* mr = nullptr;
  unsigned char* data = nullptr;
  size_t length = 0;
  UINT32 local_token = 0;
  UINT32 remote_token = 0;
  uint64_t address(size_t offset = 0) const { return reinterpret_cast<uintptr_t>(data) + offset; }
  NDK_SGE Sge(size_t offset, ULONG bytes) const {
    NDK_SGE s{};
    s.VirtualAddress = data + offset;
    s.Length = bytes;
    s.MemoryRegionToken = local_token;
    return s;
  }
};

// A local QP with its CQs (the same CQ for both queues when created so).
struct LocalQp {
  NDK_CQ* rcq = nullptr;
  NDK_CQ* icq = nullptr;
  NDK_QP* qp = nullptr;
  PVOID context = nullptr;
  EventCounter* rnotify = nullptr;
  EventCounter* inotify = nullptr;
  bool ok() const { return qp != nullptr; }
};

struct LinkOptions {
  int family = AF_INET;
  bool local_active = true;  // the local side connects; otherwise it listens and accepts
  ULONG local_ird = 4, local_ord = 4;
  ULONG peer_ird = 4, peer_ord = 4;
  const std::vector<uint8_t>* caller_data = nullptr;  // the connecting side's private data
  const std::vector<uint8_t>* callee_data = nullptr;  // the accepting side's
  bool ex = true;           // the local side uses the Ex forms (disconnect reason)
  bool local_event = true;  // the local side registers a disconnect callback
};

// One established connection between a local QP and a peer QP.
struct Link {
  NDK_CONNECTOR* local = nullptr;
  PeerId peer = 0;
  NDK_LISTENER* local_listener = nullptr;   // when the local side accepted
  PeerId peer_listener = 0;                 // when the peer accepted
  ConnectEvents* events = nullptr;          // the local listener's
  DisconnectEvents* disconnects = nullptr;  // the local connector's
  bool ok() const { return local != nullptr && peer != 0; }
};

// A local QP connected to a peer QP.
struct Pair {
  LocalQp q;
  PeerQp p;
  Link link;
  bool ok() const { return link.ok(); }
};

inline const QpShape kDefaultShape{32, 32, 4, 4, 64};

// An SGE for (virtual) address, length, token.
inline NDK_SGE SgeOf(const void* address, ULONG length, UINT32 token = 0) {
  NDK_SGE s{};
  s.VirtualAddress = const_cast<void*>(address);
  s.Length = length;
  s.MemoryRegionToken = token;
  return s;
}
inline NDK_SGE SgeAt(uint64_t address, ULONG length, UINT32 token) {
  return SgeOf(reinterpret_cast<const void*>(static_cast<uintptr_t>(address)), length, token);
}

ULONG AddressLength(const SOCKADDR_INET& address);
inline PSOCKADDR Sa(SOCKADDR_INET& address) { return reinterpret_cast<PSOCKADDR>(&address); }
bool SameAddress(const SOCKADDR_INET& a, const SOCKADDR_INET& b);
uint16_t PortOf(const SOCKADDR_INET& address);
std::string AddressText(const SOCKADDR_INET& address);
std::vector<uint8_t> Pattern(size_t length, unsigned seed);
std::string ResultText(const NDK_RESULT_EX& r);

class DataPathTest : public ConformanceTest {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Opens the local adapter and the peer (with these tunables set on both first).
  void Start(std::initializer_list<std::pair<const char*, const char*>> tunables = {});

  TestAdapter& local() { return *local_; }
  Peer& peer() { return *peer_; }
  NDK_PD* pd() const { return pd_; }
  // A flag both the local adapter and the peer advertise; skips the test otherwise.
  bool BothHave(ULONG flag) const;

  // ---- local objects ----
  LocalRegion& Region(size_t length, ULONG flags = kMrAll, size_t page_offset = 0,
                      NDK_PD* pd = nullptr);
  LocalQp MakeQp(const QpShape& shape = kDefaultShape, ULONG cq_depth = 128, bool shared_cq = false,
                 PVOID context = nullptr);
  EventCounter& NewCounter();
  DisconnectEvents& NewDisconnects();
  ConnectEvents& NewConnectEvents();

  // ---- connections ----
  uint16_t NextPort() { return next_port_++; }
  SOCKADDR_INET LocalAddress(int family, uint16_t port = 0) const {
    return family == AF_INET6 ? local_->Address6(port) : local_->Address4(port);
  }
  Link Connect(LocalQp& q, const PeerQp& p, const LinkOptions& options = {});
  // A fresh local QP (own CQs) and peer QP, connected.
  Pair MakePair(const LinkOptions& options = {}, const QpShape& shape = kDefaultShape);
  // Waits (bounded) until `connector` has learnt that its peer went away during
  // establishment (its connection data is no longer readable): at once in-process, a FIN
  // later over TCP. False on a timeout.
  bool WaitPeerGone(NDK_CONNECTOR* connector);
  // Waits (bounded) for the peer's connector to see `n` disconnect events; its reason.
  bool WaitPeerDisconnect(PeerId connector, int n = 1, ULONG* reason = nullptr);
  // After a failure that terminated the connection (docs/DATAPATH.md): the peer's connector
  // got its disconnect event with `reason`, and initiator requests on both sides now fail
  // inline with STATUS_CONNECTION_INVALID.
  void ExpectTerminated(Pair& pair, NTSTATUS reason, LocalRegion& scratch,
                        const PeerRegion& remote);
  // The pieces, for the connection tests.
  NDK_LISTENER* Listen(ConnectEvents& events, const SOCKADDR_INET& address,
                       NTSTATUS* status = nullptr);
  PeerId PeerListen(const SOCKADDR_INET& address);
  Requested StartConnect(NDK_CONNECTOR* connector, NDK_QP* qp, const SOCKADDR_INET& source,
                         const SOCKADDR_INET& destination, ULONG ird = 4, ULONG ord = 4,
                         const std::vector<uint8_t>* data = nullptr);
  Requested StartConnectShared(NDK_CONNECTOR* connector, NDK_QP* qp, NDK_SHARED_ENDPOINT* endpoint,
                               const SOCKADDR_INET& destination, ULONG ird = 4, ULONG ord = 4,
                               const std::vector<uint8_t>* data = nullptr);
  Requested StartAccept(NDK_CONNECTOR* connector, NDK_QP* qp, ULONG ird = 4, ULONG ord = 4,
                        const std::vector<uint8_t>* data = nullptr,
                        DisconnectEvents* events = nullptr, bool ex = true);
  Requested StartCompleteConnect(NDK_CONNECTOR* connector, DisconnectEvents* events = nullptr,
                                 bool ex = true);
  NTSTATUS Reject(NDK_CONNECTOR* connector, const std::vector<uint8_t>* data = nullptr);
  NTSTATUS Disconnect(NDK_CONNECTOR* connector);
  // The final status of a request (waits, bounded, for a pending one; STATUS_PENDING if its
  // callback never came, which is a failure).
  NTSTATUS Finish(const Requested& request);
  // Whether a pending request has completed (without waiting).
  static bool Done(const Requested& request) {
    return request.returned != STATUS_PENDING || request.completion->returned() > 0;
  }

  // ---- work requests: never STATUS_PENDING (R074), prompt (R065) ----
  NTSTATUS PostReceive(const LocalQp& q, PVOID context, std::vector<NDK_SGE> sges);
  NTSTATUS PostSend(const LocalQp& q, PVOID context, std::vector<NDK_SGE> sges, ULONG flags = 0);
  NTSTATUS PostSendInvalidate(const LocalQp& q, PVOID context, std::vector<NDK_SGE> sges,
                              UINT32 token, ULONG flags = 0);
  NTSTATUS PostWrite(const LocalQp& q, PVOID context, std::vector<NDK_SGE> sges, uint64_t address,
                     UINT32 token, ULONG flags = 0);
  NTSTATUS PostRead(const LocalQp& q, PVOID context, std::vector<NDK_SGE> sges, uint64_t address,
                    UINT32 token, ULONG flags = 0);
  NTSTATUS PostBind(const LocalQp& q, PVOID context, NDK_MR* mr, NDK_MW* mw, uint64_t address,
                    size_t length, ULONG flags);
  NTSTATUS PostInvalidate(const LocalQp& q, PVOID context, NDK_OBJECT_HEADER* target,
                          ULONG flags = 0);
  NTSTATUS PostFastRegister(const LocalQp& q, PVOID context, NDK_MR* mr,
                            const std::vector<NDK_LOGICAL_ADDRESS>& pages, ULONG fbo, size_t length,
                            uint64_t base, ULONG flags);

  // ---- completions ----
  // Polls (NdkGetCqResultsEx) until `n` results arrived or `timeout`.
  std::vector<NDK_RESULT_EX> Poll(NDK_CQ* cq, size_t n, Millis timeout = kWait);
  // What is queued now.
  std::vector<NDK_RESULT_EX> Drain(NDK_CQ* cq);
  // Waits kSettle and checks that nothing is queued.
  void ExpectNoResults(NDK_CQ* cq, const std::string& why);

  // A fast-register MR of the local side, initialized for `pages`, and a LAM of `backing`
  // pages of its own memory (page-aligned).
  struct LocalFast {
    NDK_MR* mr = nullptr;
    TestBuffer* buffer = nullptr;
    NDK_LOGICAL_ADDRESS_MAPPING* lam = nullptr;
    std::vector<NDK_LOGICAL_ADDRESS> pages;  // the LAM's page addresses
    bool ok() const { return mr != nullptr && lam != nullptr; }
  };
  LocalFast MakeFast(ULONG pages, bool remote_access, ULONG backing_pages = 0);

  TestAdapter* local_ = nullptr;
  std::unique_ptr<Peer> peer_;
  NDK_PD* pd_ = nullptr;

 private:
  // Fixed per test; on a real host (TCP) spread by process, so that tests running in
  // parallel on ::1 use distinct ports (below the kernel's ephemeral range).
  uint16_t next_port_ = static_cast<uint16_t>(7000 + (getpid() % 2000) * 12);
  std::deque<std::unique_ptr<TestBuffer>> buffers_;
  std::deque<LocalRegion> regions_;
  std::deque<std::unique_ptr<EventCounter>> counters_;
  std::deque<std::unique_ptr<DisconnectEvents>> disconnects_;
  std::deque<std::unique_ptr<ConnectEvents>> connect_events_;
  std::deque<std::vector<uint64_t>> lams_;
  std::vector<NDK_LOGICAL_ADDRESS_MAPPING*> lams_built_;
  bool started_ = false;
};

}  // namespace conformance
