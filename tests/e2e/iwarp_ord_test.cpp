// R178 on the wire: SoftNDK never has more than ORD of its own reads in flight. The peer is
// a hand-made iWARP responder on a raw loopback socket (the project's own MPA and FPDU
// codecs), which counts the RDMA Read Requests it holds unanswered: five reads posted at
// once with an ORD of 2 put exactly two on the wire; each response lets exactly one more go,
// and the reads complete in order with the bytes the responder sent.
#include <net/if.h>

#include "e2e.hpp"
#include "raw_peer.hpp"

namespace {

using namespace e2e;
using raw_peer::RawResponder;

// One side of SoftNDK on loopback, connected to the raw responder (ORD 2).
class IwarpOrd : public ::testing::Test {
 protected:
  void SetUp() override {
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
    ASSERT_TRUE(responder.handshake());
    ASSERT_EQ(connected.wait(returned), STATUS_SUCCESS);
    ULONG inbound = 0, outbound = 0, length = 0;
    ASSERT_EQ(connector->Dispatch->NdkGetConnectionData(connector, &inbound, &outbound, nullptr, &length),
              STATUS_SUCCESS);
    EXPECT_EQ(outbound, 2u) << "our ORD: min(8, the responder's IRD 2) (R177)";
    Waiter completed;
    ASSERT_EQ(completed.wait(connector->Dispatch->NdkCompleteConnect(connector, nullptr, nullptr,
                                                                     &Waiter::on_request, &completed)),
              STATUS_SUCCESS);
  }
  void TearDown() override {
    close(connector);  // reads still in flight complete, cancelled
    side.close_all();
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

}  // namespace
