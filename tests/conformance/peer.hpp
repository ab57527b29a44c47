// The remote peer of the data-path suites.
//
// A data-path test drives two sides: the local side, on the fixture's TestAdapter (every
// call checked against the asynchronous contract), and a remote peer with its own adapter
// on its own host, driven only through the `Peer` interface below. The peer refers to its
// objects by numbers (PeerId) and to its memory by (address, token) pairs, never by
// pointers, so that it can live anywhere:
//
//   - PeerForm::kDirect:  a PeerEngine in this process, called directly on the test's
//                         thread;
//   - PeerForm::kChannel: a PeerEngine on its own thread, which owns the peer's adapter and
//                         every peer object, reached only through a socketpair carrying the
//                         small request/response protocol below;
//   - PeerForm::kProcess: the same engine and protocol in a child process: the test binary
//                         re-executed (fork, then at once execve of /proc/self/exe with
//                         --softndk-peer-fd=3 --softndk-peer-fabric=N --softndk-peer-parent=PID,
//                         which the suite's main hands to RunPeerProcessIfAsked before
//                         GoogleTest starts), the socketpair's other end as its descriptor 3.
//                         One child per test (per Peer): spawning, opening and ending one takes
//                         about 10 ms. It owns the peer's adapter on its own host of the fabric
//                         (the TCP fabric: its own 127.x.y.z), so every byte between the two
//                         sides crosses the kernel between two processes; tunables reach it
//                         through kSetTunable (Start() sets them on both sides). It dies with
//                         the test's main thread (PR_SET_PDEATHSIG, SIGKILL), exits when its
//                         channel closes, and Stop() reaps it: a child that crashed, leaked
//                         under LeakSanitizer or failed a check of its own fails the test with
//                         how it ended; one that does not end in time is killed and reaped.
//
// The protocol: each request is one record of 80 bytes, little-endian —
//   u32 magic "SNPQ" (0x51504E53), u32 command (PeerOp), u32 sequence, u32 data length,
//   u64 argument[8]
// — followed by `data length` bytes of variable data (buffers, private data, addresses,
// SGE lists). Each response is one record of the same shape —
//   u32 magic "SNPR" (0x52504E53), u32 NTSTATUS, u32 sequence (the request's), u32 data
//   length, u64 value[8]
// — followed by its data. One request is outstanding at a time. Variable data is at most
// kPeerMaxData bytes. Addresses travel as 20 bytes (u16 family, u16 port in host order, then
// 16 address bytes in network order); SGEs as 4 u64 (region, offset, length, token);
// completions as 7 u64 (status, bytes, QP context, request context, type, provider error,
// type-specific output). Every wait is bounded: the peer gives up on its own waits after
// the time the request names (or kWait), the client after that plus kWait; a channel that
// timed out is marked broken and every later call fails at once.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness.hpp"

namespace conformance {

using PeerId = uint64_t;  // a peer object, region or asynchronous request; 0: none

enum class PeerOp : uint32_t {
  kSetTunable = 1,             // data: name '\0' value
  kOpen = 2,                   // mode, seed -> data: adapter info + addresses
  kShutdown = 3,               // -> status, data: what went wrong
  kCreateCq = 4,               // depth -> id
  kCreatePd = 5,               // -> id
  kCreateQp = 6,               // rcq, icq, rdepth, idepth, rsge, isge, inline, pd -> id
  kCreateMw = 7,               // pd -> id
  kCreateListener = 8,         // -> id
  kCreateConnector = 9,        // -> id
  kCreateSharedEndpoint = 10,  // data: address -> id
  kRegister = 11,              // length, flags, page offset, pd -> region, address, ltoken, rtoken
  kDeregister = 12,            // region
  kFill = 13,                  // region, offset; data: bytes
  kReadMemory = 14,            // region, offset, length -> data
  kCreateFastRegion = 15,      // pages, remote access, pd -> region, ltoken, rtoken
  kPrivilegedToken = 16,       // pd -> token
  kReceive = 17,               // qp, context; data: SGEs
  kSend = 18,                  // qp, context, flags; data: SGEs
  kSendAndInvalidate = 19,     // qp, context, flags, token; data: SGEs
  kWrite = 20,                 // qp, context, flags, address, token; data: SGEs
  kRead = 21,                  // qp, context, flags, address, token; data: SGEs
  kBind = 22,                  // qp, region, mw, offset, length, flags, context -> token
  kFastRegister = 23,          // qp, region, length, fbo, flags, context -> address, ltoken, rtoken
  kInvalidate = 24,            // qp, target (region or MW), flags, context
  kFlush = 25,                 // qp
  kPoll = 26,                  // cq, max, min, timeout ms, ex -> data: results
  kArmCq = 27,                 // cq, type
  kNotifications = 28,         // cq -> count, last status
  kListen = 29,                // listener; data: address
  kPauseListener = 30,         // listener, pause
  kNextConnectEvent = 31,      // listener, timeout ms -> connector (status STATUS_IO_TIMEOUT: none)
  kConnect = 32,        // connector, qp, ird, ord, has data; data: source, destination, data -> op
  kConnectShared = 33,  // connector, qp, endpoint, ird, ord, has data; data: dest, data -> op
  kCompleteConnect = 34,    // connector, ex, with event
  kAccept = 35,             // connector, qp, ird, ord, ex, has data, with event; data -> op
  kReject = 36,             // connector, has data; data
  kGetConnectionData = 37,  // connector, buffer length, null buffer -> ird, ord, length; data
  kGetLocalAddress = 38,    // connector, listener or shared endpoint -> data: address
  kGetPeerAddress = 39,     // connector -> data: address
  kDisconnect = 40,         // connector
  kDisconnectEvents = 41,   // connector -> count, reason
  kWaitOp = 42,             // op, timeout ms -> done; status: the final status
  kClose = 43,              // id (waits)
  kStartClose = 44,         // id -> op
  kStallProvider = 45,      // ms: holds the provider thread inside a callback that long
};

inline constexpr uint32_t kPeerCommandMagic = 0x51504E53;  // "SNPQ"
inline constexpr uint32_t kPeerReplyMagic = 0x52504E53;    // "SNPR"
inline constexpr size_t kPeerRecordSize = 80;
inline constexpr uint32_t kPeerMaxData = 64u << 20;

struct PeerCommand {
  PeerOp op{};
  uint64_t arg[8] = {};
  std::vector<uint8_t> data;
};

struct PeerReply {
  NTSTATUS status = STATUS_SUCCESS;
  uint64_t value[8] = {};
  std::vector<uint8_t> data;
};

// The wire encoding (exposed for the protocol's own test).
std::vector<uint8_t> EncodePeerCommand(const PeerCommand& command, uint32_t sequence);
std::vector<uint8_t> EncodePeerReply(const PeerReply& reply, uint32_t sequence);
// Decode one record's fixed part; false for a malformed record. *length: data bytes after it.
bool DecodePeerCommand(const uint8_t* record, PeerCommand* command, uint32_t* sequence,
                       uint32_t* length);
bool DecodePeerReply(const uint8_t* record, PeerReply* reply, uint32_t* sequence, uint32_t* length);
void PutPeerAddress(std::vector<uint8_t>& out, const SOCKADDR_INET& address);
SOCKADDR_INET ReadPeerAddress(const uint8_t* in);  // 20 bytes

// How commands reach the engine.
class PeerTransport {
 public:
  virtual ~PeerTransport() = default;
  // Runs one command; `wait` bounds how long it may take at the peer.
  virtual PeerReply Call(const PeerCommand& command, Millis wait) = 0;
  // Ends the peer (its engine shuts down what is left). False when it did not end in time
  // (or, in the process form, did not exit cleanly).
  virtual bool Stop() = 0;
  // The peer's own process (the process form), or 0 when it runs in this one.
  virtual int process_id() const { return 0; }
};
std::unique_ptr<PeerTransport> MakeDirectPeer(SOFTNDK_FABRIC fabric);
std::unique_ptr<PeerTransport> MakeChannelPeer(SOFTNDK_FABRIC fabric);
std::unique_ptr<PeerTransport> MakeProcessPeer(SOFTNDK_FABRIC fabric);

// The process form's child: when argv asks for it (the arguments MakeProcessPeer passes),
// serves the peer on the inherited channel until the parent closes it, sets *exit_code and
// returns true; otherwise returns false at once. The suite's main calls it before
// GoogleTest parses its flags or registers a test.
bool RunPeerProcessIfAsked(int argc, char** argv, int* exit_code);

// ----------------------------------------------------------------------- the interface --

struct PeerRegion {
  PeerId id = 0;
  uint64_t address = 0;  // the first registered byte (an absolute address, R133)
  size_t length = 0;
  UINT32 local_token = 0;
  UINT32 remote_token = 0;
  bool ok() const { return id != 0; }
};

// One SGE of a peer request: `length` bytes at `offset` into `region`, with the region's
// local token unless `token` is given. Region 0: `offset` is a raw address.
struct PeerSge {
  PeerId region = 0;
  uint64_t offset = 0;
  ULONG length = 0;
  UINT32 token = 0;
};

struct PeerResult {
  NTSTATUS status = STATUS_PENDING;
  ULONG bytes = 0;
  uint64_t qp_context = 0;  // the QP's PeerId
  uint64_t request_context = 0;
  ULONG type = 0;
  ULONG provider_error = 0;
  uint64_t type_specific = 0;
};

struct PeerQp {
  PeerId rcq = 0;
  PeerId icq = 0;
  PeerId qp = 0;
  bool ok() const { return qp != 0; }
};

// An asynchronous peer request (Connect, Accept, a close): what the call returned, and the
// handle to wait for its completion.
struct PeerAsync {
  NTSTATUS returned = STATUS_PENDING;
  PeerId op = 0;
};

struct PeerConnectionData {
  NTSTATUS status = STATUS_PENDING;
  ULONG inbound = 0;
  ULONG outbound = 0;
  ULONG length = 0;
  std::vector<uint8_t> data;
};

// The typed face of the protocol. One thread at a time talks to a peer (the channel carries
// one request at a time); a test may hand the peer to another thread while it waits.
class Peer {
 public:
  Peer(PeerForm form, SOFTNDK_FABRIC fabric);
  ~Peer();
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;
  PeerForm form() const { return form_; }

  // ---- lifecycle ----
  bool SetTunable(const char* name, const char* value);
  // Opens the peer's adapter (NDK 2.1) on a host of its own, with one protection domain.
  bool Open(SOFTNDK_COMPLETION_MODE mode, ULONG64 seed);
  const NDK_ADAPTER_INFO& info() const { return info_; }
  SOCKADDR_INET Address(int family, uint16_t port = 0) const;
  // Closes every peer object, the adapter and the host, reports what went wrong, and ends
  // the peer. Idempotent.
  void Shutdown();

  // ---- objects (0 after a failure, which the test is told about) ----
  PeerId CreateCq(ULONG depth = 64);
  PeerId CreatePd();
  // A QP on a receive CQ and an initiator CQ (one CQ for both when `shared_cq`).
  PeerQp CreateQp(ULONG depth = 32, ULONG sge = 4, ULONG inline_data = 64, ULONG cq_depth = 128,
                  bool shared_cq = true);
  PeerId CreateQpOn(PeerId rcq, PeerId icq, ULONG rdepth, ULONG idepth, ULONG rsge, ULONG isge,
                    ULONG inline_data, PeerId pd = 0, NTSTATUS* status = nullptr);
  PeerId CreateMw(PeerId pd = 0);
  PeerId CreateListener();
  PeerId CreateConnector();
  PeerId CreateSharedEndpoint(const SOCKADDR_INET& address, NTSTATUS* status = nullptr);
  // Closes and waits (bounded) for the close to complete.
  NTSTATUS Close(PeerId object);
  PeerAsync StartClose(PeerId object);

  // ---- memory ----
  PeerRegion Register(size_t length, ULONG mr_flags, size_t page_offset = 0, PeerId pd = 0,
                      NTSTATUS* status = nullptr);
  NTSTATUS Deregister(const PeerRegion& region);
  void Fill(const PeerRegion& region, size_t offset, const std::vector<uint8_t>& bytes);
  std::vector<uint8_t> ReadMemory(const PeerRegion& region, size_t offset, size_t length);
  // A fast-register MR initialized for `pages` pages, over a LAM of its own backing pages.
  PeerRegion CreateFastRegion(ULONG pages, bool remote_access, PeerId pd = 0);
  // Fast-registers `length` bytes of the backing pages starting `fbo` bytes into the
  // first; updates the region's address and tokens.
  NTSTATUS FastRegister(PeerId qp, PeerRegion& region, size_t length, ULONG fbo, ULONG flags,
                        uint64_t context = 0);
  NTSTATUS Bind(PeerId qp, const PeerRegion& region, PeerId mw, size_t offset, size_t length,
                ULONG flags, UINT32* token, uint64_t context = 0);
  NTSTATUS Invalidate(PeerId qp, PeerId target, ULONG flags = 0, uint64_t context = 0);
  UINT32 PrivilegedToken(PeerId pd = 0);

  // ---- work requests (the status each post returned) ----
  NTSTATUS Receive(PeerId qp, uint64_t context, const std::vector<PeerSge>& sges);
  NTSTATUS Send(PeerId qp, uint64_t context, const std::vector<PeerSge>& sges, ULONG flags = 0);
  NTSTATUS SendAndInvalidate(PeerId qp, uint64_t context, const std::vector<PeerSge>& sges,
                             UINT32 token, ULONG flags = 0);
  NTSTATUS Write(PeerId qp, uint64_t context, const std::vector<PeerSge>& sges, uint64_t address,
                 UINT32 token, ULONG flags = 0);
  NTSTATUS Read(PeerId qp, uint64_t context, const std::vector<PeerSge>& sges, uint64_t address,
                UINT32 token, ULONG flags = 0);
  void Flush(PeerId qp);
  // Polls until at least `min` results arrived (at most `max`), or `timeout`.
  std::vector<PeerResult> Poll(PeerId cq, size_t min, size_t max = 256, Millis timeout = kWait,
                               bool ex = true);
  void ArmCq(PeerId cq, ULONG type);
  int Notifications(PeerId cq, NTSTATUS* last = nullptr);

  // ---- connections ----
  NTSTATUS Listen(PeerId listener, const SOCKADDR_INET& address);
  void PauseListener(PeerId listener, bool pause);
  // The connector of the next connect event on `listener`; 0 when none came in time.
  PeerId NextConnectEvent(PeerId listener, Millis timeout = kWait);
  PeerAsync Connect(PeerId connector, PeerId qp, const SOCKADDR_INET& source,
                    const SOCKADDR_INET& destination, ULONG ird, ULONG ord,
                    const std::vector<uint8_t>* data = nullptr);
  PeerAsync ConnectShared(PeerId connector, PeerId qp, PeerId endpoint,
                          const SOCKADDR_INET& destination, ULONG ird, ULONG ord,
                          const std::vector<uint8_t>* data = nullptr);
  NTSTATUS CompleteConnect(PeerId connector, bool ex = true, bool with_event = true);
  PeerAsync Accept(PeerId connector, PeerId qp, ULONG ird, ULONG ord,
                   const std::vector<uint8_t>* data = nullptr, bool ex = true,
                   bool with_event = true);
  NTSTATUS Reject(PeerId connector, const std::vector<uint8_t>* data = nullptr);
  PeerConnectionData GetConnectionData(PeerId connector, ULONG buffer_length = 256,
                                       bool null_buffer = false);
  NTSTATUS GetLocalAddress(PeerId object, SOCKADDR_INET* address);
  NTSTATUS GetPeerAddress(PeerId connector, SOCKADDR_INET* address);
  NTSTATUS Disconnect(PeerId connector);
  // Disconnect events the peer's connector has seen, and the last Ex reason.
  int DisconnectEvents(PeerId connector, ULONG* reason = nullptr);
  // The final status of an asynchronous request; *done false when it did not complete in
  // `timeout` (then the status is STATUS_PENDING).
  NTSTATUS WaitOp(const PeerAsync& op, Millis timeout = kWait, bool* done = nullptr);
  // Holds the peer's provider thread inside a callback for `duration`: the peer's events
  // and asynchronous completions wait meanwhile. Returns once the hold has begun.
  void StallProvider(Millis duration);

 private:
  PeerReply Call(PeerOp op, std::initializer_list<uint64_t> args, std::vector<uint8_t> data = {},
                 Millis wait = kWait * 2);
  PeerId Created(const PeerReply& reply, const char* what, NTSTATUS* status);

  PeerForm form_;
  std::unique_ptr<PeerTransport> transport_;
  NDK_ADAPTER_INFO info_{};
  SOCKADDR_INET v4_{};
  SOCKADDR_INET v6_{};
  bool stopped_ = false;
};

// Encodes SGEs for the wire.
std::vector<uint8_t> EncodePeerSges(const std::vector<PeerSge>& sges);

}  // namespace conformance
