// R178 on the wire: SoftNDK never has more than ORD of its own reads in flight. The peer is
// a hand-made iWARP responder on a raw loopback socket (the project's own MPA and FPDU
// codecs), which counts the RDMA Read Requests it holds unanswered: five reads posted at
// once with an ORD of 2 put exactly two on the wire; each response lets exactly one more go,
// and the reads complete in order with the bytes the responder sent. The same responder
// answers wrongly: a short, a wrapping and an early Read Response each end the connection.
#include <net/if.h>

#include <map>

#include "e2e.hpp"
#include "raw_peer.hpp"

namespace {

using namespace e2e;
using raw_peer::RawResponder;
using raw_peer::encode_tagged;
using namespace softndk::fabric::tcp;

// One side of SoftNDK on loopback, connected to the raw responder (ORD 2).
class IwarpOrd : public ::testing::Test {
 protected:
  // The responder's IRD and ORD in its Reply (RFC 6581), as a variant may change them.
  virtual uint16_t responder_ird() const { return 2; }
  virtual void before_connect() {}
  void SetUp() override {
    before_connect();
    const ULONG flags =
        NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ | NDK_MR_FLAG_ALLOW_REMOTE_WRITE;
    ASSERT_NO_FATAL_FAILURE(side.open(if_nametoindex("lo"), SOFTNDK_COMPLETION_INLINE, flags, SOFTNDK_FABRIC_TCP));
    NDK_ADAPTER* a = side.adapter;
    connector = create<NDK_CONNECTOR>([&](auto cb, auto ctx, NDK_CONNECTOR** out) {
      return a->Dispatch->NdkCreateConnector(a, cb, ctx, out);
    });
    ASSERT_NE(connector, nullptr);
    SOCKADDR_INET source = ipv4("127.0.0.1", 0), destination = ipv4("127.0.0.1", responder.port());
    Waiter connected;
    NTSTATUS returned = connector->Dispatch->NdkConnect(
        connector, side.qp, reinterpret_cast<PSOCKADDR>(&source), length_of(source),
        reinterpret_cast<PSOCKADDR>(&destination), length_of(destination), 8, 8, nullptr, 0,
        &Waiter::on_request, &connected);
    ASSERT_TRUE(responder.handshake(responder_ird(), 2));
    ASSERT_EQ(connected.wait(returned), STATUS_SUCCESS);
    ULONG inbound = 0, outbound = 0, length = 0;
    ASSERT_EQ(connector->Dispatch->NdkGetConnectionData(connector, &inbound, &outbound, nullptr, &length),
              STATUS_SUCCESS);
    EXPECT_EQ(outbound, ULONG{responder_ird()}) << "our ORD: min(8, the responder's IRD) (R177)";
    Waiter completed;
    ASSERT_EQ(completed.wait(connector->Dispatch->NdkCompleteConnect(connector, nullptr, nullptr,
                                                                     &Waiter::on_request, &completed)),
              STATUS_SUCCESS);
  }
  void TearDown() override {
    close(connector);  // reads still in flight complete, cancelled
    side.close_all();
    SoftNdkResetTunables();
  }
  NTSTATUS post_read(int i) {
    NDK_SGE sink = side.sge((i % 64) * 64, 16);
    return side.qp->Dispatch->NdkRead(side.qp, reinterpret_cast<PVOID>(uintptr_t(i + 1)), &sink, 1,
                                      0x10000 + i * 16, 0x1234, 0);
  }

  RawResponder responder;
  Side side;
  NDK_CONNECTOR* connector = nullptr;
};

TEST_F(IwarpOrd, R178_NoMoreThanOrdReadsInFlightAndTheRestWaitInOrder) {
  constexpr int kReads = 5;
  for (int i = 0; i < kReads; ++i) ASSERT_EQ(post_read(i), STATUS_SUCCESS);
  // Two on the wire, however long we wait; the other three wait in the queue (R178).
  EXPECT_EQ(responder.wait_requests(kReads, 300), 2u) << "(R178)";
  for (int answered = 0; answered < kReads; ++answered) {
    ASSERT_TRUE(responder.answer(static_cast<uint8_t>(0xA0 + answered)));
    auto done = side.poll(1);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].Status, STATUS_SUCCESS);
    EXPECT_EQ(done[0].RequestContext, reinterpret_cast<PVOID>(uintptr_t(answered + 1))) << "in order";
    EXPECT_EQ(side.buffer[answered * 64], 0xA0 + answered);
    EXPECT_EQ(side.buffer[answered * 64 + 15], 0xA0 + answered);
    const size_t expected_held = std::min<size_t>(2, kReads - answered - 1);
    EXPECT_EQ(responder.wait_requests(expected_held + 1, 100), expected_held)
        << "one more read per response, never more than ORD held (R178)";
  }
  EXPECT_EQ(responder.total_requests(), size_t{kReads});
}

// R091 on the initiator queue: with its reads held by the peer, a QP's initiator queue
// fills to its depth (64 here), the next post is refused inline, and an answer frees a slot.
TEST_F(IwarpOrd, R091_InitiatorQueueFullOfReadsInFlight) {
  for (int i = 0; i < 64; ++i) ASSERT_EQ(post_read(i), STATUS_SUCCESS) << i;
  EXPECT_EQ(post_read(64), STATUS_INSUFFICIENT_RESOURCES) << "(R091)";
  EXPECT_EQ(responder.wait_requests(2, 1000), 2u);
  ASSERT_TRUE(responder.answer(0x5A));
  auto done = side.poll(1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(post_read(64), STATUS_SUCCESS) << "a completed read frees its slot (R091)";
}

// A Read Response must answer the oldest read on the wire, in order, within its sink, and
// its last segment must complete it: otherwise SoftNDK ends the connection with a DDP
// tagged-buffer Terminate and the read fails (never completes over an untouched sink).
class IwarpReadResponses : public IwarpOrd {
 protected:
  // Sends a Read Response of `length` bytes of 0xEE for sink STag `stag` at offset `to`.
  bool respond(uint32_t stag, uint64_t to, size_t length) {
    return responder.send(encode_tagged(responder.crc(), Opcode::kRdmaReadResponse, stag, to, length, 0xEE));
  }
  void expect_terminated_with(const TerminateCode& code) {
    responder.reader().read_until(5000, [&] { return !responder.reader().terminates().empty(); });
    ASSERT_FALSE(responder.reader().terminates().empty()) << "no Terminate";
    EXPECT_TRUE(responder.reader().terminates().front().code == code);
    auto done = side.poll(1);  // the oldest read first (with the others flushed, maybe)
    ASSERT_GE(done.size(), 1u);
    EXPECT_NE(done[0].Status, STATUS_SUCCESS) << "the read completed over a sink it never got";
  }
};

TEST_F(IwarpReadResponses, AShortResponseFailsTheRead) {
  ASSERT_EQ(post_read(0), STATUS_SUCCESS);
  ASSERT_EQ(responder.wait_requests(1, 2000), 1u);
  const ReadRequest r = responder.reader().held().front();
  ASSERT_TRUE(respond(r.data_sink_stag, r.data_sink_to, r.rdma_read_message_size / 2));  // 8 of 16, last
  expect_terminated_with(term::kDdpTaggedBaseOrBounds);
}

TEST_F(IwarpReadResponses, AResponseWhoseOffsetWrapsFailsTheRead) {
  ASSERT_EQ(post_read(0), STATUS_SUCCESS);
  ASSERT_EQ(responder.wait_requests(1, 2000), 1u);
  const ReadRequest r = responder.reader().held().front();
  ASSERT_TRUE(respond(r.data_sink_stag, UINT64_MAX - 7, 8));  // ends exactly at 2^64
  expect_terminated_with(term::kDdpTaggedBaseOrBounds);
}

TEST_F(IwarpReadResponses, AResponseForAReadOrdStillHoldsBackFails) {
  for (int i = 0; i < 3; ++i) ASSERT_EQ(post_read(i), STATUS_SUCCESS);
  ASSERT_EQ(responder.wait_requests(3, 300), 2u);  // ORD 2: the third waits in SoftNDK
  // Sink STags are handed out in order: the held-back read's is the next one.
  const uint32_t held_back = responder.reader().held().back().data_sink_stag + 1;
  ASSERT_TRUE(respond(held_back, 0, 16));
  expect_terminated_with(term::kDdpTaggedInvalidStag);
}

// A Terminate that names a failed read by the Read Request header it copied (RFC 5040's
// R flag) fails that read, whatever the MSN says: Linux siw, failing while it answers a
// read, puts the read's length where the MSN goes. The other read is flushed.
TEST_F(IwarpReadResponses, ATerminateNamesTheReadByItsCopiedReadRequestHeader) {
  for (int i = 0; i < 2; ++i) ASSERT_EQ(post_read(i), STATUS_SUCCESS);
  ASSERT_EQ(responder.wait_requests(2, 2000), 2u);
  const ReadRequest second = responder.reader().held().back();
  TxMessage m;
  m.opcode = Opcode::kTerminate;
  m.msn = 1;
  // The second read's request copied, its MSN replaced by its length (as siw does).
  m.terminate = read_request_terminate(term::kRdmapInvalidStag, second.rdma_read_message_size, second);
  ASSERT_TRUE(responder.send(raw_peer::encode(responder.crc(), m)));
  auto done = side.poll(2);
  ASSERT_EQ(done.size(), 2u);
  std::map<PVOID, NTSTATUS> status;
  for (const auto& d : done) status[d.RequestContext] = d.Status;
  EXPECT_EQ(status[reinterpret_cast<PVOID>(uintptr_t{2})], STATUS_ACCESS_VIOLATION) << "the read it names";
  EXPECT_EQ(status[reinterpret_cast<PVOID>(uintptr_t{1})], STATUS_CANCELLED) << "the other, flushed";
}

// A responder that serves no reads (IRD 0 in its Reply, as a siw consumer with no responder
// resources): SoftNDK sends it no Read Request at all, not even the empty ones that prove
// a write's placement (siw would answer one with a Terminate). Writes then complete once
// sent; the consumer's read waits in the queue (R178) and is flushed at the end.
class IwarpNoReads : public IwarpOrd {
 protected:
  uint16_t responder_ird() const override { return 0; }
};

TEST_F(IwarpNoReads, R178_NoReadRequestReachesAPeerWithIrdZero) {
  NDK_SGE w = side.sge(0, 256);
  ASSERT_EQ(side.qp->Dispatch->NdkWrite(side.qp, reinterpret_cast<PVOID>(uintptr_t{100}), &w, 1, 0x10000, 0x1234, 0),
            STATUS_SUCCESS);
  auto written = side.poll(1);
  ASSERT_EQ(written.size(), 1u) << "a write waited for a proof of placement it cannot get";
  EXPECT_EQ(written[0].Status, STATUS_SUCCESS);
  ASSERT_EQ(post_read(0), STATUS_SUCCESS);
  EXPECT_EQ(responder.wait_requests(1, 300), 0u) << "a Read Request reached a peer with IRD 0";
  responder.reader().read_until(100, [] { return false; });
  EXPECT_EQ(responder.reader().data_segments(), 1u) << "the write";
  EXPECT_TRUE(responder.reader().terminates().empty());
  NDK_RESULT_EX none[1];
  EXPECT_EQ(side.cq->Dispatch->NdkGetCqResultsEx(side.cq, none, 1), 0u) << "the read waits (R178)";
}

// Without peer-to-peer mode (no RTR agreed), SoftNDK as initiator still opens with an empty
// RDMA Write: a responder sends nothing before the initiator's first FPDU (RFC 5044 7.1.2),
// so a consumer whose server speaks first would otherwise wait for ever.
class IwarpNoRtr : public IwarpOrd {
 protected:
  void before_connect() override { ASSERT_EQ(SoftNdkSetTunable("iwarp_peer_to_peer", "0"), STATUS_SUCCESS); }
};

TEST_F(IwarpNoRtr, TheInitiatorOpensWithAnEmptyWrite) {
  EXPECT_FALSE(responder.request().frame().v2.peer_to_peer) << "no peer-to-peer mode asked";
  responder.reader().read_until(2000, [&] { return responder.reader().empty_writes() > 0; });
  EXPECT_EQ(responder.reader().empty_writes(), 1u);
  EXPECT_TRUE(responder.reader().first_was_empty_write());
  // And the connection carries reads as usual.
  ASSERT_EQ(post_read(0), STATUS_SUCCESS);
  ASSERT_EQ(responder.wait_requests(1, 2000), 1u);
  ASSERT_TRUE(responder.answer(0x3C));
  auto done = side.poll(1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(side.buffer[0], 0x3C);
}

}  // namespace
