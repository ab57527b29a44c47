// Hostile input on the iWARP wire (issue 11). SoftNDK's side is a real adapter listening on
// 127.0.0.1 (and, for the active-side cases, connecting out); the attacker is a raw TCP peer
// (raw_peer.hpp) that builds valid frames with the project's own codecs and then corrupts
// them: garbage instead of an MPA Request, truncated frames, wrong CRCs, impossible lengths,
// STags never advertised or gone, writes and reads outside a region or without its right,
// out-of-range MSNs and queues, read responses nobody asked for, floods of Terminates.
//
// Each case checks (1) the Terminate the attacker receives, its layer/type/code the RFC's
// for the error (RFC 5040 RDMAP, RFC 5041 DDP, RFC 5044 MPA), or before MPA is
// established the connection closed (and an MPA Reject where RFC 5044 gives one); (2) what
// SoftNDK's consumer sees: the disconnect event with the status docs/IWARP.md gives for
// that Terminate, its receives completed (none lost), no connect event for a Request that
// never was one; (3) memory: every target region is the middle page of three, and no byte
// outside what the case may touch changes — for an STag that is unknown, gone, or lacks
// the right, nothing changes at all; (4) the process keeps serving: an honest
// SoftNDK-to-SoftNDK connection made before the attack moves verified data after it.
#include <net/if.h>

#include <algorithm>
#include <numeric>
#include <string>

#include "e2e.hpp"
#include "raw_peer.hpp"

namespace {

using namespace e2e;
using namespace raw_peer;

constexpr size_t kPage = 4096;

// A registered region that is the middle page of a three-page arena; the outer pages are
// its guards. Every byte starts with a known pattern.
struct Guarded {
  std::vector<uint8_t> arena = std::vector<uint8_t>(3 * kPage);
  std::vector<uint8_t> original;
  PMDL mdl = nullptr;
  NDK_MR* mr = nullptr;
  UINT32 token = 0;

  Guarded() {
    for (size_t i = 0; i < arena.size(); ++i) arena[i] = static_cast<uint8_t>(i * 7 + 3);
    original = arena;
  }
  uint8_t* slice() { return arena.data() + kPage; }
  uint64_t address(size_t offset = 0) { return reinterpret_cast<uintptr_t>(slice()) + offset; }
  UINT32 local_token() const { return mr->Dispatch->NdkGetLocalTokenFromMr(mr); }
  // Bytes of the arena that differ from the pattern, outside [from, to) of the slice.
  size_t changed_outside(size_t from, size_t to) const {
    size_t n = 0;
    for (size_t i = 0; i < arena.size(); ++i)
      if ((i < kPage + from || i >= kPage + to) && arena[i] != original[i]) ++n;
    return n;
  }
  size_t changed() const { return changed_outside(0, 0); }
};

std::string name(const TerminateCode& c) { return describe(c); }

void set_be32(Bytes& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}
void set_be16(Bytes& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v);
}
Bytes operator+(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
// Offsets in an FPDU: ULPDU_Length, then the DDP header.
constexpr size_t kDdpControl = 2;
constexpr size_t kUntaggedQn = 2 + 6, kUntaggedMo = 2 + 14;

class IwarpHostile : public LinkFixture<int> {
 protected:
  void SetUp() override {
    const ULONG lo = if_nametoindex("lo");
    ASSERT_NE(lo, 0u);
    const ULONG all = NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ | NDK_MR_FLAG_ALLOW_REMOTE_WRITE;
    server_address_ = ipv4("127.0.0.1", 0);
    client_address_ = ipv4("127.0.0.1", 0);
    ASSERT_NO_FATAL_FAILURE(server_.open(lo, SOFTNDK_COMPLETION_INLINE, all, SOFTNDK_FABRIC_TCP));
    ASSERT_NO_FATAL_FAILURE(client_.open(lo, SOFTNDK_COMPLETION_INLINE, all, SOFTNDK_FABRIC_TCP));
    // (4): the honest connection, made before any attack.
    ASSERT_NO_FATAL_FAILURE(connect());
    ASSERT_NO_FATAL_FAILURE(register_guarded(rw_, all));
    ASSERT_NO_FATAL_FAILURE(register_guarded(read_only_, NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ));
    ASSERT_NO_FATAL_FAILURE(register_guarded(write_only_, NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_WRITE));
    ASSERT_NO_FATAL_FAILURE(register_guarded(rx_, NDK_MR_FLAG_ALLOW_LOCAL_WRITE));
    ASSERT_NO_FATAL_FAILURE(make_qp(server_, attack_cq_, attack_qp_));
  }

  void TearDown() override {
    close(attack_connector_);
    close(out_connector_);
    close(attack_qp_);
    close(out_qp_);
    for (Guarded* g : {&rw_, &read_only_, &write_only_, &rx_}) {
      close(g->mr);
      if (g->mdl) IoFreeMdl(g->mdl);
      g->mdl = nullptr;
    }
    close(attack_cq_);
    close(out_cq_);
    close_link();
  }

  void register_guarded(Guarded& g, ULONG flags) {
    g.mr = register_region(server_.pd, g.slice(), kPage, flags, g.mdl);
    ASSERT_NE(g.mr, nullptr);
    g.token = g.mr->Dispatch->NdkGetRemoteTokenFromMr(g.mr);
  }

  static void make_qp(Side& side, NDK_CQ*& cq, NDK_QP*& qp) {
    NDK_ADAPTER* a = side.adapter;
    cq = create<NDK_CQ>([&](auto cb, auto ctx, NDK_CQ** out) {
      return a->Dispatch->NdkCreateCq(a, 64, no_cq_event, nullptr, nullptr, cb, ctx, out);
    });
    ASSERT_NE(cq, nullptr);
    NDK_PD* pd = side.pd;
    NDK_CQ* c = cq;
    qp = create<NDK_QP>([&](auto cb, auto ctx, NDK_QP** out) {
      return pd->Dispatch->NdkCreateQp(pd, c, c, nullptr, 16, 16, 4, 4, 64, cb, ctx, out);
    });
    ASSERT_NE(qp, nullptr);
  }

  // Results on `cq` until `n` arrived or `ms` passed.
  static std::vector<NDK_RESULT_EX> poll(NDK_CQ* cq, size_t n, int ms = 3000) {
    std::vector<NDK_RESULT_EX> results;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (results.size() < n && std::chrono::steady_clock::now() < deadline) {
      NDK_RESULT_EX r[16];
      ULONG got = cq->Dispatch->NdkGetCqResultsEx(cq, r, 16);
      results.insert(results.end(), r, r + got);
      if (got == 0) std::this_thread::sleep_for(1ms);
    }
    return results;
  }

  static bool wait_for(const std::atomic<int>& count, int n, int ms = 3000) {
    for (int i = 0; i < ms && count < n; ++i) std::this_thread::sleep_for(1ms);
    return count >= n;
  }

  // A receive on the attacked QP: `length` bytes at the start of rx_'s slice.
  void post_receive(ULONG length, uintptr_t context = 1) {
    NDK_SGE sge{};
    sge.VirtualAddress = rx_.slice();
    sge.Length = length;
    sge.MemoryRegionToken = rx_.local_token();
    ASSERT_EQ(attack_qp_->Dispatch->NdkReceive(attack_qp_, reinterpret_cast<PVOID>(context), &sge, 1), STATUS_SUCCESS);
  }

  // The attacker connects as an honest initiator would (MPA revision 2, CRC, peer-to-peer
  // with a zero-length Write as RTR); SoftNDK accepts on attack_qp_ (IRD `ird`, ORD 4).
  // `receive_buffer`: the attacker's SO_RCVBUF (0: the default).
  void establish_attack(ULONG ird = 4, int receive_buffer = 0) {
    ASSERT_NO_FATAL_FAILURE(open_with(encode_frame(request_frame()), false, receive_buffer));
    attack_connector_ = incoming_.next();
    ASSERT_NE(attack_connector_, nullptr);
    Waiter accepted;
    ASSERT_EQ(attack_connector_->Dispatch->NdkAcceptEx(attack_connector_, attack_qp_, ird, 4, nullptr, 0,
                                                       &Disconnects::on_ex, &attack_disconnects_,
                                                       &Waiter::on_request, &accepted),
              STATUS_PENDING);  // until the RTR
    MpaFrameParser reply(MpaFrameType::kReply);
    ASSERT_TRUE(read_mpa_frame(attacker_.fd(), reply));
    ASSERT_EQ(reply.state(), MpaFrameParser::State::kComplete);
    ASSERT_FALSE(reply.frame().reject);
    ASSERT_TRUE(reply.frame().crc);
    ASSERT_EQ(reply.frame().v2.rtr, rtr::kZeroLengthWrite);
    TxMessage rtr_write;
    rtr_write.opcode = Opcode::kRdmaWrite;
    ASSERT_TRUE(write_all(attacker_.fd(), encode(true, rtr_write)));
    ASSERT_EQ(accepted.wait(STATUS_PENDING), STATUS_SUCCESS);
    reader_.start(attacker_.fd(), true);
  }

  static MpaFrame request_frame() {
    static const uint8_t hello[] = "attacker";
    MpaFrame f;
    f.type = MpaFrameType::kRequest;
    f.revision = kMpaRevision2;
    f.crc = true;
    f.enhanced = true;
    f.v2 = {4, 4, true, rtr::kZeroLengthWrite};
    f.private_data = hello;
    return f;
  }

  // A new raw connection that sends `bytes` where the MPA Request goes (and then FIN).
  void open_with(std::span<const uint8_t> bytes, bool fin, int receive_buffer = 0) {
    attacker_ = connect_loopback(ntohs(server_address_.Ipv4.sin_port), receive_buffer);
    ASSERT_TRUE(attacker_.valid());
    ASSERT_TRUE(write_all(attacker_.fd(), bytes));
    if (fin) ::shutdown(attacker_.fd(), SHUT_WR);
  }
  // An MPA Request with a 16-bit field changed (Rev is byte 17, PD_Length bytes 18-19).
  static Bytes request_with_pd_length(uint16_t pd_length) {
    Bytes request = encode_frame(request_frame());
    set_be16(request, 18, pd_length);
    return request;
  }

  void attack(std::span<const uint8_t> bytes) { ASSERT_TRUE(write_all(attacker_.fd(), bytes)); }

  // (1) and (2): the attacker gets exactly one Terminate with `code`, then the connection
  // closes; the attacked connector's disconnect event (exactly one) carries `status`.
  void expect_terminated(const TerminateCode& code, NTSTATUS status) {
    reader_.read_until(3000, [&] { return !reader_.terminates().empty(); });
    reader_.read_to_end(3000);
    ASSERT_EQ(reader_.terminates().size(), 1u) << "expected " << name(code);
    EXPECT_EQ(reader_.terminates()[0].code, code)
        << "got " << name(reader_.terminates()[0].code) << ", expected " << name(code);
    EXPECT_TRUE(reader_.eof()) << "the connection ends after the Terminate";
    EXPECT_FALSE(reader_.parse_failed()) << "SoftNDK's own FPDUs parse";
    ASSERT_TRUE(wait_for(attack_disconnects_.count, 1));
    EXPECT_EQ(attack_disconnects_.reason, static_cast<ULONG>(status));
    std::this_thread::sleep_for(20ms);
    EXPECT_EQ(attack_disconnects_.count, 1) << "one disconnect event";
  }

  // Before MPA is established: SoftNDK closes without a word (no Reply, no FPDU) and its
  // consumer never hears of the connection.
  void expect_closed_silently() {
    uint8_t buffer[256];
    size_t received = 0;
    bool eof = false;
    const auto end = std::chrono::steady_clock::now() + 3s;
    while (!eof && std::chrono::steady_clock::now() < end) {
      pollfd p{attacker_.fd(), POLLIN, 0};
      if (::poll(&p, 1, 10) != 1) continue;
      ssize_t n = ::recv(attacker_.fd(), buffer, sizeof buffer, 0);
      if (n <= 0) eof = true;
      else received += static_cast<size_t>(n);
    }
    EXPECT_TRUE(eof) << "SoftNDK closes the connection";
    EXPECT_EQ(received, 0u) << "no MPA Reply to what is not an MPA Request";
    std::this_thread::sleep_for(20ms);
    std::lock_guard lock(incoming_.mutex);
    EXPECT_TRUE(incoming_.connectors.empty()) << "no connect event";
  }

  // (3) for an access that had no right to any memory: not one byte of any region changed.
  void expect_no_byte_changed() {
    for (Guarded* g : {&rw_, &read_only_, &write_only_, &rx_}) EXPECT_EQ(g->changed(), 0u);
  }

  // (2) and (3) for the attacked QP's receives: they complete with `statuses` in order
  // (none lost), the first with `first_bytes`, and no byte of rx_'s arena past the first
  // `placed` of its slice changed.
  void expect_receives(std::initializer_list<NTSTATUS> statuses, ULONG first_bytes, size_t placed) {
    auto results = poll(attack_cq_, statuses.size());
    ASSERT_EQ(results.size(), statuses.size()) << "a receive never completed";
    size_t i = 0;
    for (NTSTATUS status : statuses) EXPECT_EQ(results[i++].Status, status) << i;
    EXPECT_EQ(results[0].BytesTransferred, first_bytes);
    EXPECT_EQ(rx_.changed_outside(0, placed), 0u) << "a byte landed outside the receive";
  }

  // (4): the honest connection still moves verified data: a write, a send, a read back.
  void expect_still_serving() {
    const uint8_t seed = static_cast<uint8_t>(0x40 + ++honest_round_);
    for (size_t i = 0; i < kPage; ++i) client_.buffer[i] = static_cast<uint8_t>(seed + i * 13);
    NDK_SGE from = client_.sge(0, kPage);
    ASSERT_EQ(client_.qp->Dispatch->NdkWrite(client_.qp, nullptr, &from, 1, server_.address(kPage),
                                             server_.remote_token(), 0),
              STATUS_SUCCESS);
    NDK_SGE into = server_.sge(4 * kPage, 64);
    ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, nullptr, &into, 1), STATUS_SUCCESS);
    NDK_SGE hello = client_.sge(0, 64);
    ASSERT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, nullptr, &hello, 1, 0), STATUS_SUCCESS);
    NDK_SGE back = client_.sge(8 * kPage, kPage);
    ASSERT_EQ(client_.qp->Dispatch->NdkRead(client_.qp, nullptr, &back, 1, server_.address(kPage),
                                            server_.remote_token(), 0),
              STATUS_SUCCESS);
    auto done = client_.poll(3);
    ASSERT_EQ(done.size(), 3u) << "the honest connection stalls";
    for (const auto& r : done) EXPECT_EQ(r.Status, STATUS_SUCCESS);
    auto received = server_.poll(1);
    ASSERT_EQ(received.size(), 1u);
    EXPECT_EQ(received[0].Status, STATUS_SUCCESS);
    EXPECT_EQ(std::memcmp(server_.buffer.data() + kPage, client_.buffer.data(), kPage), 0);
    EXPECT_EQ(std::memcmp(server_.buffer.data() + 4 * kPage, client_.buffer.data(), 64), 0);
    EXPECT_EQ(std::memcmp(client_.buffer.data() + 8 * kPage, client_.buffer.data(), kPage), 0);
  }

  // Messages as an honest peer would build them (CRC on).
  static Bytes write_fpdu(uint32_t stag, uint64_t to, size_t length, uint8_t fill, bool last = true) {
    Bytes b = encode_tagged(true, Opcode::kRdmaWrite, stag, to, length, fill, 9000);
    if (!last) {
      b[kDdpControl] &= static_cast<uint8_t>(~ddp_flag::kLast);
      reseal(b);
    }
    return b;
  }
  static Bytes send_fpdu(uint32_t msn, size_t length, uint8_t fill, uint32_t mo = 0, bool last = true,
                         uint32_t max_fpdu = 9000) {
    Bytes data(length, fill);
    iovec v{data.data(), data.size()};
    TxMessage m;
    m.opcode = Opcode::kSend;
    m.msn = msn;
    m.payload = {&v, 1};
    Bytes b = encode(true, m, max_fpdu);
    if (mo != 0 || !last) {
      set_be32(b, kUntaggedMo, mo);
      if (!last) b[kDdpControl] &= static_cast<uint8_t>(~ddp_flag::kLast);
      reseal(b);
    }
    return b;
  }
  static Bytes read_request_fpdu(uint32_t msn, uint32_t source_stag, uint64_t source_to, uint32_t size) {
    TxMessage m;
    m.opcode = Opcode::kRdmaReadRequest;
    m.msn = msn;
    m.read_request = {0x77, 0, size, source_stag, source_to};
    return encode(true, m);
  }

  Guarded rw_, read_only_, write_only_, rx_;
  NDK_CQ* attack_cq_ = nullptr;
  NDK_QP* attack_qp_ = nullptr;
  NDK_CONNECTOR* attack_connector_ = nullptr;
  Disconnects attack_disconnects_;
  Socket attacker_;
  FpduReader reader_;
  int honest_round_ = 0;
  // Active side: SoftNDK connecting out to a raw listener.
  NDK_CQ* out_cq_ = nullptr;
  NDK_QP* out_qp_ = nullptr;
  NDK_CONNECTOR* out_connector_ = nullptr;
};

// ---- Before MPA is established (passive side) ----

TEST_F(IwarpHostile, GarbageInsteadOfMpaRequestIsClosedWithoutConnectEvent) {
  const std::string garbage = "GET / HTTP/1.1\r\nHost: softndk\r\n\r\n";
  ASSERT_NO_FATAL_FAILURE(open_with({reinterpret_cast<const uint8_t*>(garbage.data()), garbage.size()}, false));
  expect_closed_silently();
  expect_still_serving();
}

TEST_F(IwarpHostile, TruncatedMpaRequestThenCloseIsForgotten) {
  for (size_t cut : {size_t{10}, sizeof(MpaFrameHeader) + 2}) {  // inside the header, inside the private data
    const Bytes request = encode_frame(request_frame());
    ASSERT_NO_FATAL_FAILURE(open_with(std::span(request).first(cut), true));
    expect_closed_silently();
  }
  expect_still_serving();
}

TEST_F(IwarpHostile, StalledMpaRequestIsClosedOnceTheConnectTimeoutPasses) {
  // Half a Request, then silence: the listener holds the socket for connect_timeout_ms,
  // then closes it without a word (the consumer never heard of it). Before this bound a
  // peer could hold a socket for as long as it liked, per connection.
  struct RestoreTimeout {
    ~RestoreTimeout() { SoftNdkSetTunable("connect_timeout_ms", "30000"); }
  } restore;
  ASSERT_EQ(SoftNdkSetTunable("connect_timeout_ms", "300"), STATUS_SUCCESS);
  const Bytes request = encode_frame(request_frame());
  const auto start = std::chrono::steady_clock::now();
  ASSERT_NO_FATAL_FAILURE(open_with(std::span(request).first(10), false));
  expect_closed_silently();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 250ms) << "closed before the timeout";
  EXPECT_LT(took, 2500ms) << "held well past the timeout";
  expect_still_serving();
}

TEST_F(IwarpHostile, PrivateDataLengthBeyondTheFrameOrTheMaximumIsClosed) {
  // Larger than the frame: PD_Length says 200, 12 bytes follow, then FIN.
  ASSERT_NO_FATAL_FAILURE(open_with(request_with_pd_length(200), true));
  expect_closed_silently();
  // Larger than RFC 5044's 512: refused at the header, before reading it.
  Bytes request = request_with_pd_length(513);
  request.resize(sizeof(MpaFrameHeader) + 513, 0x5a);
  ASSERT_NO_FATAL_FAILURE(open_with(request, false));
  expect_closed_silently();
  expect_still_serving();
}

TEST_F(IwarpHostile, UnknownMpaRevisionIsClosed) {
  Bytes request = encode_frame(request_frame());
  request[17] = 3;  // Rev
  ASSERT_NO_FATAL_FAILURE(open_with(request, false));
  expect_closed_silently();
  expect_still_serving();
}

TEST_F(IwarpHostile, MarkersRequestedGetAnMpaReject) {
  MpaFrame f = request_frame();
  f.markers = true;
  ASSERT_NO_FATAL_FAILURE(open_with(encode_frame(f), false));
  MpaFrameParser reply(MpaFrameType::kReply);
  ASSERT_TRUE(read_mpa_frame(attacker_.fd(), reply));
  EXPECT_EQ(reply.state(), MpaFrameParser::State::kComplete);
  EXPECT_TRUE(reply.frame().reject) << "RFC 5044: a Reject for a Request we cannot serve";
  expect_closed_silently();  // nothing after the Reject, and no connect event
  expect_still_serving();
}

// ---- MPA and DDP framing (established) ----

TEST_F(IwarpHostile, WrongCrcTerminatesWithMpaCrcErrorAndLosesNoReceive) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  ASSERT_NO_FATAL_FAILURE(post_receive(256, 1));
  ASSERT_NO_FATAL_FAILURE(post_receive(256, 2));
  Bytes b = send_fpdu(1, 64, 0xC5);
  b.back() ^= 0xff;
  attack(b);
  expect_terminated(term::kMpaCrcError, STATUS_DATA_ERROR);
  // Both receives complete, flushed: the one the bad FPDU had taken, then the other. The
  // payload ahead of the CRC may have reached the receive (its 64 bytes), no further.
  expect_receives({STATUS_CANCELLED, STATUS_CANCELLED}, 0, 64);
  expect_still_serving();
}

// Reads beyond our IRD: up to IRD rounded up to a power of two are served, since Linux
// siw sizes its read queue so and issues reads until it is full; one more terminates. The
// attacker reads nothing (a small receive buffer) and each response is 64 MiB, more than
// the sockets hold: the first stays in progress and the others queue behind it.
TEST_F(IwarpHostile, ReadsBeyondIrdRoundedUpToAPowerOfTwoTerminate) {
  ASSERT_NO_FATAL_FAILURE(establish_attack(/*ird=*/3, /*receive_buffer=*/4096));
  std::vector<unsigned char> big(64u << 20, 0x6B);
  PMDL mdl = nullptr;
  NDK_MR* source = register_region(server_.pd, big.data(), big.size(), NDK_MR_FLAG_ALLOW_REMOTE_READ, mdl);
  ASSERT_NE(source, nullptr);
  const uint32_t token = source->Dispatch->NdkGetRemoteTokenFromMr(source);
  const uint64_t at = reinterpret_cast<uintptr_t>(big.data());
  const auto size = static_cast<uint32_t>(big.size());
  for (uint32_t msn = 1; msn <= 4; ++msn) attack(read_request_fpdu(msn, token, at, size));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(attack_disconnects_.count, 0) << "four reads at IRD 3: within a read queue of four";
  attack(read_request_fpdu(5, token, at, size));
  ASSERT_TRUE(wait_for(attack_disconnects_.count, 1)) << "a fifth read at IRD 3 was queued";
  const int buffer = 4 << 20;  // now read what was sent, up to the Terminate
  setsockopt(attacker_.fd(), SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  expect_terminated(term::kRdmapCatastrophicStream, STATUS_CONNECTION_ABORTED);
  close(source);  // the connection is over: nothing reads the region any more
  IoFreeMdl(mdl);
  expect_still_serving();
}

TEST_F(IwarpHostile, UlpduShorterThanTheDdpHeaderTerminates) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  Bytes b = {0x00, 0x04, 0x41, 0x01, 0x00, 0x00, 0x00, 0x00, 0, 0, 0, 0};
  reseal(b);
  attack(b);
  expect_terminated(term::kRdmapCatastrophicStream, STATUS_CONNECTION_ABORTED);
  expect_still_serving();
}

TEST_F(IwarpHostile, UlpduShorterThanTheOpcodeHeadersTerminates) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  Bytes b = read_request_fpdu(1, rw_.token, rw_.address(), 64);
  set_be16(b, 0, sizeof(DdpUntaggedHeader) + 4);  // the Read Request header cut short
  attack(b);
  expect_terminated(term::kRdmapCatastrophicStream, STATUS_CONNECTION_ABORTED);
  EXPECT_EQ(reader_.data_segments(), 0u) << "no Read Response";
  expect_still_serving();
}

TEST_F(IwarpHostile, ReadRequestLongerThanItsHeaderTerminates) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  // A 60-byte ULPDU for a 46-byte Read Request: a single-segment message too long.
  Bytes b = read_request_fpdu(1, rw_.token, rw_.address(), 64);
  const size_t header = b.size() - kMpaCrcSize;  // no PAD for 46 + 2 bytes
  b.resize(header);
  b.insert(b.end(), 14, 0x33);
  set_be16(b, 0, static_cast<uint16_t>(b.size() - 2));
  b.resize(mpa_fpdu_size(static_cast<uint32_t>(b.size() - 2)), 0);
  reseal(b);
  attack(b);
  expect_terminated(term::kDdpUntaggedMessageTooLong, STATUS_BUFFER_OVERFLOW);
  EXPECT_EQ(reader_.data_segments(), 0u);
  expect_still_serving();
}

TEST_F(IwarpHostile, HugeUlpduIntoASmallReceiveTerminatesMessageTooLong) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  ASSERT_NO_FATAL_FAILURE(post_receive(256));
  // One FPDU of 60000 bytes (far beyond the path's MSS) into 256 bytes.
  attack(send_fpdu(1, 60000, 0xB7, 0, true, 65535));
  expect_terminated(term::kDdpUntaggedMessageTooLong, STATUS_BUFFER_OVERFLOW);
  expect_receives({STATUS_BUFFER_OVERFLOW}, 256, 256);  // what fitted
  expect_still_serving();
}

// ---- Tagged: STags, bounds and rights ----

TEST_F(IwarpHostile, WriteToANeverAdvertisedStagTerminatesAndChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  attack(write_fpdu(rw_.token ^ 0x00a5a500, rw_.address(), 64, 0xEE));
  expect_terminated(term::kDdpTaggedInvalidStag, STATUS_ACCESS_VIOLATION);
  expect_no_byte_changed();
  expect_still_serving();
}

TEST_F(IwarpHostile, WriteToADeregisteredStagTerminatesAndChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  const UINT32 gone = rw_.token;
  Waiter w;
  ASSERT_EQ(w.wait(rw_.mr->Dispatch->NdkDeregisterMr(rw_.mr, &Waiter::on_request, &w)), STATUS_SUCCESS);
  attack(write_fpdu(gone, rw_.address(), 64, 0xEE));
  expect_terminated(term::kDdpTaggedInvalidStag, STATUS_ACCESS_VIOLATION);
  EXPECT_EQ(rw_.changed(), 0u);
  expect_still_serving();
}

TEST_F(IwarpHostile, WritePastTheRegionsEndTerminatesAndPlacesNothingBeyond) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  // Wholly out of bounds in one segment: refused before any byte.
  attack(write_fpdu(rw_.token, rw_.address(kPage - 32), 64, 0xEE));
  expect_terminated(term::kDdpTaggedBaseOrBounds, STATUS_REMOTE_RESOURCES);
  EXPECT_EQ(rw_.changed(), 0u);
  expect_still_serving();
}

TEST_F(IwarpHostile, SecondSegmentOfAWritePastTheEndStopsAtTheEnd) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  // The first segment fills the last 64 bytes of the region; the second runs past it.
  attack(write_fpdu(rw_.token, rw_.address(kPage - 64), 64, 0xEE, /*last=*/false) +
         write_fpdu(rw_.token, rw_.address(kPage), 64, 0xEF));
  expect_terminated(term::kDdpTaggedBaseOrBounds, STATUS_REMOTE_RESOURCES);
  EXPECT_EQ(rw_.changed_outside(kPage - 64, kPage), 0u) << "a byte landed outside the region";
  EXPECT_EQ(rw_.slice()[kPage - 1], 0xEE);
  expect_still_serving();
}

TEST_F(IwarpHostile, R134_WriteWithoutRemoteWriteTerminatesWithAccessRights) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  attack(write_fpdu(read_only_.token, read_only_.address(), 64, 0xEE));
  expect_terminated(term::kRdmapAccessRights, STATUS_ACCESS_VIOLATION);
  EXPECT_EQ(read_only_.changed(), 0u);
  expect_still_serving();
}

TEST_F(IwarpHostile, R134_ReadWithoutRemoteReadTerminatesWithAccessRights) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  attack(read_request_fpdu(1, write_only_.token, write_only_.address(), 64));
  expect_terminated(term::kRdmapAccessRights, STATUS_ACCESS_VIOLATION);
  EXPECT_EQ(reader_.data_segments(), 0u) << "no byte of the region left";
  EXPECT_EQ(write_only_.changed(), 0u);
  expect_still_serving();
}

TEST_F(IwarpHostile, ReadPastTheRegionsEndTerminatesWithBaseOrBounds) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  attack(read_request_fpdu(1, rw_.token, rw_.address(kPage - 16), 64));
  expect_terminated(term::kRdmapBaseOrBounds, STATUS_REMOTE_RESOURCES);
  EXPECT_EQ(reader_.data_segments(), 0u) << "not even the bytes inside";
  expect_still_serving();
}

TEST_F(IwarpHostile, ReadOfAnUnknownStagTerminatesWithInvalidStag) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  attack(read_request_fpdu(1, rw_.token ^ 0x00a5a500, rw_.address(), 64));
  expect_terminated(term::kRdmapInvalidStag, STATUS_ACCESS_VIOLATION);
  EXPECT_EQ(reader_.data_segments(), 0u);
  expect_still_serving();
}

TEST_F(IwarpHostile, ReadResponseNobodyAskedForTerminates) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  attack(encode_tagged(true, Opcode::kRdmaReadResponse, 0x1234, 0, 64, 0xEE));
  expect_terminated(term::kDdpTaggedInvalidStag, STATUS_ACCESS_VIOLATION);
  expect_no_byte_changed();
  expect_still_serving();
}

// ---- Untagged: queues, sequence, offsets, buffers ----

TEST_F(IwarpHostile, SendWithOutOfRangeMsnTerminates) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  ASSERT_NO_FATAL_FAILURE(post_receive(256));
  attack(send_fpdu(7, 64, 0xEE));  // the first Send must carry MSN 1
  expect_terminated(term::kDdpUntaggedMsnRange, STATUS_CONNECTION_ABORTED);
  expect_receives({STATUS_CANCELLED}, 0, 0);
  expect_still_serving();
}

TEST_F(IwarpHostile, SendToAQueueBeyondTwoTerminatesInvalidQn) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  ASSERT_NO_FATAL_FAILURE(post_receive(256));
  Bytes b = send_fpdu(1, 64, 0xEE);
  set_be32(b, kUntaggedQn, 3);
  reseal(b);
  attack(b);
  expect_terminated(term::kDdpUntaggedInvalidQn, STATUS_CONNECTION_ABORTED);
  expect_receives({STATUS_CANCELLED}, 0, 0);
  expect_still_serving();
}

TEST_F(IwarpHostile, MessageOffsetBeyondTheReceiveTerminatesMessageTooLong) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  ASSERT_NO_FATAL_FAILURE(post_receive(256));
  // Two segments in order (MO 0 and 200) of a 400-byte message for a 256-byte receive.
  attack(send_fpdu(1, 200, 0xE1, 0, /*last=*/false) + send_fpdu(1, 200, 0xE2, 200));
  expect_terminated(term::kDdpUntaggedMessageTooLong, STATUS_BUFFER_OVERFLOW);
  expect_receives({STATUS_BUFFER_OVERFLOW}, 256, 256);  // what fitted
  expect_still_serving();
}

TEST_F(IwarpHostile, MessageOffsetJumpTerminatesInvalidMoAndLosesNoReceive) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  ASSERT_NO_FATAL_FAILURE(post_receive(256));
  // The first segment is placed; the next claims MO 4096 instead of 16.
  attack(send_fpdu(1, 16, 0xE1, 0, /*last=*/false) + send_fpdu(1, 16, 0xE2, 4096));
  expect_terminated(term::kDdpUntaggedInvalidMo, STATUS_CONNECTION_ABORTED);
  expect_receives({STATUS_CANCELLED}, 0, 16);  // the message had taken it
  expect_still_serving();
}

TEST_F(IwarpHostile, SendWithoutAPostedReceiveTerminatesNoBuffer) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  attack(send_fpdu(1, 64, 0xEE));
  expect_terminated(term::kDdpUntaggedNoBuffer, STATUS_REMOTE_RESOURCES);
  expect_no_byte_changed();
  expect_still_serving();
}

TEST_F(IwarpHostile, FinInTheMiddleOfAMessageIsNoGracefulDisconnect) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  ASSERT_NO_FATAL_FAILURE(post_receive(256));
  Bytes b = send_fpdu(1, 128, 0xE1);
  attack(std::span(b).first(b.size() - 40));  // the FPDU cut, then FIN
  ::shutdown(attacker_.fd(), SHUT_WR);
  ASSERT_TRUE(wait_for(attack_disconnects_.count, 1));
  EXPECT_EQ(attack_disconnects_.reason, static_cast<ULONG>(STATUS_CONNECTION_ABORTED));
  expect_receives({STATUS_CANCELLED}, 0, 128);  // the cut message had taken it
  expect_still_serving();
}

// ---- Terminates ----

TEST_F(IwarpHostile, FloodOfTerminatesEndsTheConnectionOnce) {
  ASSERT_NO_FATAL_FAILURE(establish_attack());
  ASSERT_NO_FATAL_FAILURE(post_receive(256));
  Bytes flood;
  for (int i = 0; i < 200; ++i) {
    TxMessage m;
    m.opcode = Opcode::kTerminate;
    m.msn = 1;
    m.terminate.code = i == 0 ? term::kDdpUntaggedMessageTooLong : term::kRdmapInvalidStag;
    const Bytes t = encode(true, m);
    flood.insert(flood.end(), t.begin(), t.end());
  }
  attack(flood);
  // The first one ends the connection with its status; none is answered with a Terminate.
  ASSERT_TRUE(wait_for(attack_disconnects_.count, 1));
  EXPECT_EQ(attack_disconnects_.reason, static_cast<ULONG>(STATUS_BUFFER_OVERFLOW));
  reader_.read_to_end(3000);
  EXPECT_TRUE(reader_.terminates().empty()) << "RFC 5040: a Terminate is never answered with one";
  EXPECT_TRUE(reader_.eof());
  EXPECT_EQ(attack_disconnects_.count, 1) << "one disconnect event";
  expect_receives({STATUS_CANCELLED}, 0, 0);
  expect_still_serving();
}

// ---- Connection startup without an RTR ----

// An initiator that asks for no peer-to-peer mode (as Linux siw does) agrees on no RTR:
// SoftNDK's Accept completes at once and its consumer may post, but no FPDU leaves before
// the initiator's first (RFC 5044 7.1.2: the initiator may still be reading the Reply, and
// siw refuses a Reply followed by anything in the same read). That FPDU releases them.
TEST_F(IwarpHostile, WithoutRtrTheResponderSendsNothingBeforeTheInitiatorsFirstFpdu) {
  MpaFrame request = request_frame();
  request.v2 = {4, 4, false, 0};
  ASSERT_NO_FATAL_FAILURE(open_with(encode_frame(request), false));
  attack_connector_ = incoming_.next();
  ASSERT_NE(attack_connector_, nullptr);
  Waiter accepted;
  ASSERT_EQ(accepted.wait(attack_connector_->Dispatch->NdkAcceptEx(attack_connector_, attack_qp_, 4, 4, nullptr, 0,
                                                                   &Disconnects::on_ex, &attack_disconnects_,
                                                                   &Waiter::on_request, &accepted)),
            STATUS_SUCCESS)
      << "no RTR to wait for";
  MpaFrameParser reply(MpaFrameType::kReply);
  ASSERT_TRUE(read_mpa_frame(attacker_.fd(), reply));
  ASSERT_EQ(reply.state(), MpaFrameParser::State::kComplete);
  ASSERT_FALSE(reply.frame().v2.peer_to_peer);
  NDK_SGE hello{};
  hello.VirtualAddress = rx_.slice();
  hello.Length = 64;
  hello.MemoryRegionToken = rx_.local_token();
  ASSERT_EQ(attack_qp_->Dispatch->NdkSend(attack_qp_, nullptr, &hello, 1, 0), STATUS_SUCCESS);
  reader_.start(attacker_.fd(), true);
  reader_.read_until(200, [&] { return reader_.data_segments() > 0; });
  EXPECT_EQ(reader_.data_segments(), 0u) << "an FPDU left before the initiator's first";
  EXPECT_FALSE(reader_.eof());
  TxMessage opening;  // an empty RDMA Write, as SoftNDK's own initiator opens
  opening.opcode = Opcode::kRdmaWrite;
  attack(encode(true, opening));
  reader_.read_until(3000, [&] { return reader_.data_segments() > 0; });
  EXPECT_EQ(reader_.data_segments(), 1u) << "the held send never left";
  EXPECT_TRUE(reader_.terminates().empty());
  expect_still_serving();
}

// ---- Active side: SoftNDK connects out to a raw listener that answers wrongly ----

class IwarpHostileResponder : public IwarpHostile {
 protected:
  // SoftNDK connects to the raw listener, which reads its Request; `connected` learns the
  // outcome.
  void connect_out(RawResponder& responder, Waiter& connected) {
    ASSERT_NO_FATAL_FAILURE(make_qp(client_, out_cq_, out_qp_));
    out_connector_ = new_connector(client_);
    ASSERT_NE(out_connector_, nullptr);
    SOCKADDR_INET source = ipv4("127.0.0.1", 0), destination = ipv4("127.0.0.1", responder.port());
    ASSERT_EQ(out_connector_->Dispatch->NdkConnect(out_connector_, out_qp_, reinterpret_cast<PSOCKADDR>(&source),
                                                   length_of(source), reinterpret_cast<PSOCKADDR>(&destination),
                                                   length_of(destination), 4, 4, nullptr, 0, &Waiter::on_request,
                                                   &connected),
              STATUS_PENDING);
    ASSERT_TRUE(responder.accept_request());
  }
  // The raw listener's side sees the connection closed, with nothing (or only `allowed`
  // Terminates) sent after the Request.
  static void expect_closed(RawResponder& responder) {
    uint8_t buffer[256];
    bool eof = false;
    size_t received = 0;
    const auto end = std::chrono::steady_clock::now() + 3s;
    while (!eof && std::chrono::steady_clock::now() < end) {
      pollfd p{responder.fd(), POLLIN, 0};
      if (::poll(&p, 1, 10) != 1) continue;
      ssize_t n = ::recv(responder.fd(), buffer, sizeof buffer, 0);
      if (n <= 0) eof = true;
      else received += static_cast<size_t>(n);
    }
    EXPECT_TRUE(eof);
    EXPECT_EQ(received, 0u);
  }
};

TEST_F(IwarpHostileResponder, GarbageInsteadOfMpaReplyFailsTheConnect) {
  RawResponder responder;
  Waiter connected;
  ASSERT_NO_FATAL_FAILURE(connect_out(responder, connected));
  const std::string garbage = "HTTP/1.1 400 Bad Request\r\n\r\n";
  ASSERT_TRUE(responder.send({reinterpret_cast<const uint8_t*>(garbage.data()), garbage.size()}));
  EXPECT_EQ(connected.wait(STATUS_PENDING), STATUS_CONNECTION_REFUSED);
  expect_closed(responder);
  expect_still_serving();
}

TEST_F(IwarpHostileResponder, ReplyWithPrivateDataLengthAboveTheMaximumFailsTheConnect) {
  RawResponder responder;
  Waiter connected;
  ASSERT_NO_FATAL_FAILURE(connect_out(responder, connected));
  Bytes reply = encode_frame(mpa_reply_for(responder.request().frame(), true, 4, 4, {}));
  set_be16(reply, 18, 1000);
  reply.resize(sizeof(MpaFrameHeader) + 1000, 0x5a);
  ASSERT_TRUE(responder.send(reply));
  EXPECT_EQ(connected.wait(STATUS_PENDING), STATUS_CONNECTION_REFUSED);
  expect_closed(responder);
  expect_still_serving();
}

TEST_F(IwarpHostileResponder, ReplyWithPrivateDataLengthBeyondTheFrameThenCloseFailsTheConnect) {
  RawResponder responder;
  Waiter connected;
  ASSERT_NO_FATAL_FAILURE(connect_out(responder, connected));
  Bytes reply = encode_frame(mpa_reply_for(responder.request().frame(), true, 4, 4, {}));
  set_be16(reply, 18, 300);
  ASSERT_TRUE(responder.send(reply));
  ::shutdown(responder.fd(), SHUT_WR);
  EXPECT_EQ(connected.wait(STATUS_PENDING), STATUS_CONNECTION_REFUSED);
  expect_closed(responder);
  expect_still_serving();
}

TEST_F(IwarpHostileResponder, ReplyWithUnknownRevisionOrMarkersFailsTheConnect) {
  for (int variant = 0; variant < 2; ++variant) {
    RawResponder responder;
    Waiter connected;
    ASSERT_NO_FATAL_FAILURE(connect_out(responder, connected));
    MpaFrame f = mpa_reply_for(responder.request().frame(), true, 4, 4, {});
    f.markers = variant == 1;
    Bytes reply = encode_frame(f);
    if (variant == 0) reply[17] = 7;  // Rev
    ASSERT_TRUE(responder.send(reply));
    EXPECT_EQ(connected.wait(STATUS_PENDING), STATUS_CONNECTION_REFUSED) << variant;
    expect_closed(responder);
    close(out_connector_);
    close(out_qp_);
    close(out_cq_);
  }
  expect_still_serving();
}

TEST_F(IwarpHostileResponder, ReplyWithOrdAboveOurIrdTerminatesInsufficientIrd) {
  RawResponder responder;
  Waiter connected;
  ASSERT_NO_FATAL_FAILURE(connect_out(responder, connected));
  // Our IRD is 4; the responder says it will issue 9 reads at once (RFC 6581).
  const MpaFrame reply = mpa_reply_for(responder.request().frame(), true, 4, 9, {});
  ASSERT_TRUE(responder.send(encode_frame(reply)));
  EXPECT_EQ(connected.wait(STATUS_PENDING), STATUS_CONNECTION_REFUSED);
  FpduReader& r = responder.reader();
  r.start(responder.fd(), true);
  r.read_to_end(3000);
  ASSERT_EQ(r.terminates().size(), 1u);
  EXPECT_EQ(r.terminates()[0].code, term::kMpaInsufficientIrd) << name(r.terminates()[0].code);
  EXPECT_TRUE(r.eof());
  expect_still_serving();
}

// Without an RTR (no peer-to-peer mode asked), a responder that sends before our first
// FPDU, as Linux siw may, has its messages kept until NdkCompleteConnect, then placed in
// order; one that sends more than SoftNDK keeps (1 MiB) ends the connection, and
// NdkCompleteConnect says so, rather than the stream going on with bytes missing.
class IwarpEarlyResponder : public IwarpHostileResponder {
 protected:
  void SetUp() override {
    IwarpHostileResponder::SetUp();
    ASSERT_EQ(SoftNdkSetTunable("iwarp_peer_to_peer", "0"), STATUS_SUCCESS);
  }
  void TearDown() override {
    IwarpHostileResponder::TearDown();
    SoftNdkResetTunables();
  }
  // Connects out to `responder`, which replies without RTR: Connect completes.
  void connect_without_rtr(RawResponder& responder) {
    Waiter connected;
    ASSERT_NO_FATAL_FAILURE(connect_out(responder, connected));
    ASSERT_FALSE(responder.request().frame().v2.peer_to_peer);
    ASSERT_TRUE(responder.send(encode_frame(mpa_reply_for(responder.request().frame(), true, 4, 4, {}))));
    ASSERT_EQ(connected.wait(STATUS_PENDING), STATUS_SUCCESS);
  }
  NTSTATUS complete_connect() {
    Waiter completed;
    return completed.wait(out_connector_->Dispatch->NdkCompleteConnect(out_connector_, nullptr, nullptr,
                                                                      &Waiter::on_request, &completed));
  }
};

TEST_F(IwarpEarlyResponder, MessagesSentBeforeCompleteConnectLandAfterIt) {
  RawResponder responder;
  ASSERT_NO_FATAL_FAILURE(connect_without_rtr(responder));
  for (uintptr_t i = 0; i < 3; ++i) {
    NDK_SGE into = client_.sge(i * kPage, kPage);
    ASSERT_EQ(out_qp_->Dispatch->NdkReceive(out_qp_, reinterpret_cast<PVOID>(i + 1), &into, 1), STATUS_SUCCESS);
  }
  ASSERT_TRUE(responder.send(send_fpdu(1, 100, 0xA1) + send_fpdu(2, 200, 0xA2) + send_fpdu(3, 300, 0xA3)));
  std::this_thread::sleep_for(100ms);  // read by SoftNDK and kept
  ASSERT_EQ(complete_connect(), STATUS_SUCCESS);
  auto received = poll(out_cq_, 3);
  ASSERT_EQ(received.size(), 3u);
  for (uintptr_t i = 0; i < 3; ++i) {
    EXPECT_EQ(received[i].Status, STATUS_SUCCESS);
    EXPECT_EQ(received[i].RequestContext, reinterpret_cast<PVOID>(i + 1)) << "in order";
    EXPECT_EQ(received[i].BytesTransferred, 100 * (i + 1));
    EXPECT_EQ(client_.buffer[i * kPage], 0xA1 + i);
  }
}

TEST_F(IwarpEarlyResponder, ResponderSendingMoreThanIsKeptBeforeOurFirstFpduEndsTheConnection) {
  RawResponder responder;
  ASSERT_NO_FATAL_FAILURE(connect_without_rtr(responder));
  Bytes flood;
  for (uint32_t msn = 1; msn <= 40; ++msn) flood = flood + send_fpdu(msn, 32 * 1024, 0x5E);  // 1.25 MiB
  (void)responder.send(flood);  // SoftNDK may close while it is written
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(complete_connect(), STATUS_CONNECTION_ABORTED);
  expect_still_serving();
}

TEST_F(IwarpHostileResponder, ReplyChoosingAnRtrNotOfferedTerminatesNoMatchingRtr) {
  RawResponder responder;
  Waiter connected;
  ASSERT_NO_FATAL_FAILURE(connect_out(responder, connected));
  MpaFrame reply = mpa_reply_for(responder.request().frame(), true, 4, 4, {});
  reply.v2.rtr = rtr::kZeroLengthSend;  // SoftNDK offers zero-length Write and Read only
  ASSERT_TRUE(responder.send(encode_frame(reply)));
  EXPECT_EQ(connected.wait(STATUS_PENDING), STATUS_CONNECTION_REFUSED);
  FpduReader& r = responder.reader();
  r.start(responder.fd(), true);
  r.read_to_end(3000);
  ASSERT_EQ(r.terminates().size(), 1u);
  EXPECT_EQ(r.terminates()[0].code, term::kMpaNoMatchingRtr) << name(r.terminates()[0].code);
  expect_still_serving();
}

}  // namespace
