// §5.F: posting work requests on a connected QP — queues and their CQs, one entry per
// successful post, contexts, flags (SILENT_SUCCESS, READ_FENCE, DEFER, SEND_AND_SOLICIT_EVENT,
// INLINE), SGEs and their tokens, limits, flush and disconnect (R073-R094, R101-R106, R120,
// R122), with the statuses of docs/DATAPATH.md.
#include <map>

#include "datapath.hpp"

namespace conformance {
namespace {

class PostingTest : public DataPathTest {};

PVOID Ctx(uintptr_t n) { return reinterpret_cast<PVOID>(n); }

// R073, R104, R122: each request completes on its own queue's CQ (receives in the receive
// CQ, the seven initiator requests in the initiator CQ) with the type of its operation.
TEST_P(PostingTest, R073_R104_R122_EachRequestCompletesOnItsQueuesCqWithItsType) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  ASSERT_NE(q.rcq, q.icq);
  LocalRegion& mine = Region(4 * PAGE_SIZE);
  PeerRegion theirs = peer().Register(4 * PAGE_SIZE, kMrAll);
  PeerRegion fast = peer().CreateFastRegion(2, true);
  ASSERT_TRUE(theirs.ok() && fast.ok());
  ASSERT_EQ(peer().FastRegister(pair.p.qp, fast, PAGE_SIZE, 0, NDK_OP_FLAG_ALLOW_REMOTE_WRITE),
            STATUS_SUCCESS);
  ASSERT_EQ(peer().Poll(pair.p.icq, 1).size(), 1u);
  NDK_MW* mw = local().CreateMw(pd());
  LocalFast lf = MakeFast(2, true);
  ASSERT_TRUE(mw != nullptr && lf.ok());

  // The receive: the peer sends into it.
  ASSERT_EQ(PostReceive(q, Ctx(1), {mine.Sge(0, 64)}), STATUS_SUCCESS);
  ASSERT_EQ(peer().Send(pair.p.qp, 0, {{theirs.id, 0, 16}}), STATUS_SUCCESS);
  // The seven initiator requests.
  // Every transfer has bytes of its own: the receive above may still be landing in
  // mine[0, 64) and the peer's send still reading theirs[0, 16) (a concurrent fabric).
  ASSERT_EQ(peer().Receive(pair.p.qp, 0, {{theirs.id, 128, 64}}), STATUS_SUCCESS);
  ASSERT_EQ(peer().Receive(pair.p.qp, 0, {{theirs.id, 192, 64}}), STATUS_SUCCESS);
  EXPECT_EQ(PostSend(q, Ctx(2), {mine.Sge(512, 8)}), STATUS_SUCCESS);
  EXPECT_EQ(PostWrite(q, Ctx(3), {mine.Sge(512, 8)}, theirs.address + 256, theirs.remote_token),
            STATUS_SUCCESS);
  EXPECT_EQ(PostRead(q, Ctx(4), {mine.Sge(1024, 8)}, theirs.address + 256, theirs.remote_token),
            STATUS_SUCCESS);
  EXPECT_EQ(
      PostBind(q, Ctx(5), mine.mr, mw, mine.address(0), PAGE_SIZE, NDK_OP_FLAG_ALLOW_REMOTE_READ),
      STATUS_SUCCESS);
  EXPECT_EQ(PostFastRegister(q, Ctx(6), lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, lf.pages[0].QuadPart,
                             NDK_OP_FLAG_ALLOW_LOCAL_WRITE),
            STATUS_SUCCESS);
  EXPECT_EQ(PostInvalidate(q, Ctx(7), H(mw)), STATUS_SUCCESS);
  EXPECT_EQ(PostSendInvalidate(q, Ctx(8), {mine.Sge(512, 8)}, fast.remote_token), STATUS_SUCCESS);

  std::vector<NDK_RESULT_EX> received = Poll(q.rcq, 1);
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].RequestContext, Ctx(1));
  EXPECT_EQ(received[0].Type, NdkOperationTypeReceive) << "(R104)";
  std::vector<NDK_RESULT_EX> initiated = Poll(q.icq, 7);
  ASSERT_EQ(initiated.size(), 7u) << "(R073, R075, R122)";
  const NDK_OPERATION_TYPE expected[] = {NdkOperationTypeSend,         NdkOperationTypeWrite,
                                         NdkOperationTypeRead,         NdkOperationTypeBind,
                                         NdkOperationTypeFastRegister, NdkOperationTypeInvalidate,
                                         NdkOperationTypeSend};
  for (size_t i = 0; i < 7; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(initiated[i].Status, STATUS_SUCCESS) << ResultText(initiated[i]);
    EXPECT_EQ(initiated[i].RequestContext, Ctx(2 + i)) << "(R079, R120)";
    EXPECT_EQ(initiated[i].Type, expected[i])
        << "(R104; SendAndInvalidate completes as Send, R095)";
  }
  ExpectNoResults(q.rcq, "initiator requests never complete in the receive CQ (R122)");
  ExpectNoResults(q.icq, "one entry per post (R075)");
  // The peer's receives: a plain receive, then a receive with invalidation (R104).
  std::vector<PeerResult> at_peer = peer().Poll(pair.p.rcq, 2);
  int receives = 0, invalidating = 0;
  for (const PeerResult& r : at_peer) {
    if (r.type == NdkOperationTypeReceive) ++receives;
    if (r.type == NdkOperationTypeReceiveAndInvalidate) ++invalidating;
  }
  EXPECT_EQ(receives, 1);
  EXPECT_EQ(invalidating, 1) << "(R104)";
}

// R074, R075, R079, R105, R106, R120: every successful post yields exactly one entry, in
// posting order per queue, with its RequestContext and the QP's QPContext; receives report
// the bytes received; ProviderErrorCode is 0 on success.
TEST_P(PostingTest, R075_R079_R105_R106_R120_OneEntryPerPostInOrderWithItsContexts) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  LocalRegion& mine = Region(64 * 1024);
  PeerRegion theirs = peer().Register(64 * 1024, kMrAll);
  constexpr int kN = 24;
  for (int i = 0; i < kN; ++i)
    ASSERT_EQ(PostReceive(q, Ctx(100 + i), {mine.Sge(1024 * i, 1024)}), STATUS_SUCCESS);
  for (int i = 0; i < kN; ++i)
    ASSERT_EQ(peer().Receive(pair.p.qp, 500 + i, {{theirs.id, 1024u * i, 1024}}), STATUS_SUCCESS);
  // Initiator requests of three kinds, interleaved.
  for (int i = 0; i < kN; ++i) {
    NTSTATUS s;
    switch (i % 3) {
      case 0:
        s = PostSend(q, Ctx(200 + i), {mine.Sge(0, static_cast<ULONG>(i + 1))});
        break;
      case 1:
        s = PostWrite(q, Ctx(200 + i), {mine.Sge(0, 32)}, theirs.address + 40000,
                      theirs.remote_token);
        break;
      default:
        s = PostRead(q, Ctx(200 + i), {mine.Sge(50000, 32)}, theirs.address + 40000,
                     theirs.remote_token);
        break;
    }
    ASSERT_EQ(s, STATUS_SUCCESS) << "post " << i;
  }
  std::vector<NDK_RESULT_EX> initiated = Poll(q.icq, kN);
  ASSERT_EQ(initiated.size(), static_cast<size_t>(kN));
  for (int i = 0; i < kN; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(initiated[i].Status, STATUS_SUCCESS) << ResultText(initiated[i]);
    EXPECT_EQ(initiated[i].RequestContext, Ctx(200 + i)) << "(R079, R120)";
    EXPECT_EQ(initiated[i].QPContext, q.context) << "(R079)";
    EXPECT_EQ(initiated[i].ProviderErrorCode, 0u) << "(R106)";
  }
  ExpectNoResults(q.icq, "exactly one entry per post (R075)");
  // The peer sends kN messages of distinct sizes; each fills the next receive.
  for (int i = 0; i < kN; ++i)
    ASSERT_EQ(peer().Send(pair.p.qp, 0, {{theirs.id, 0, static_cast<ULONG>(10 + i)}}),
              STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> received = Poll(q.rcq, kN);
  ASSERT_EQ(received.size(), static_cast<size_t>(kN));
  for (int i = 0; i < kN; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(received[i].Status, STATUS_SUCCESS);
    EXPECT_EQ(received[i].RequestContext, Ctx(100 + i)) << "(R079, R120)";
    EXPECT_EQ(received[i].QPContext, q.context);
    EXPECT_EQ(received[i].BytesTransferred, static_cast<ULONG>(10 + i)) << "(R105)";
    EXPECT_EQ(received[i].ProviderErrorCode, 0u) << "(R106)";
  }
  ExpectNoResults(q.rcq, "exactly one entry per receive (R075)");
  // The peer saw its receives in order too, with their bytes (R105, R120).
  std::vector<PeerResult> at_peer = peer().Poll(pair.p.rcq, kN / 3, kN / 3);
  ASSERT_EQ(at_peer.size(), static_cast<size_t>(kN / 3));
  for (size_t i = 0; i < at_peer.size(); ++i) {
    EXPECT_EQ(at_peer[i].request_context, 500 + i);
    EXPECT_EQ(at_peer[i].bytes, 3 * i + 1);
  }
}

// R076: a post that fails inline never produces an entry.
TEST_P(PostingTest, R076_InlineFailuresLeaveNoEntry) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  LocalRegion& mine = Region(4 * PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  NDK_MW* mw = local().CreateMw(pd());
  ASSERT_NE(mw, nullptr);
  std::vector<NDK_SGE> five(5, mine.Sge(0, 8));  // one more than the QP's 4
  EXPECT_EQ(PostSend(q, Ctx(1), five), STATUS_INVALID_PARAMETER) << "(R090)";
  EXPECT_EQ(PostWrite(q, Ctx(2), five, theirs.address, theirs.remote_token),
            STATUS_INVALID_PARAMETER);
  EXPECT_EQ(PostSend(q, Ctx(3), {mine.Sge(0, 8)}, 0x80000000u), STATUS_INVALID_PARAMETER)
      << "unknown flag";
  std::vector<NDK_SGE> big = {mine.Sge(0, 65)};  // InlineDataSize is 64
  EXPECT_EQ(PostSend(q, Ctx(4), big, NDK_OP_FLAG_INLINE), STATUS_INVALID_BUFFER_SIZE) << "(R087)";
  EXPECT_EQ(PostBind(q, Ctx(5), mine.mr, mw, mine.address(3 * PAGE_SIZE), 2 * PAGE_SIZE,
                     NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_INVALID_PARAMETER)
      << "a window past the region's end (R146)";
  EXPECT_EQ(PostInvalidate(q, Ctx(6), H(mw)), STATUS_INVALID_DEVICE_STATE) << "not bound (R145)";
  EXPECT_EQ(PostInvalidate(q, Ctx(7), H(mine.mr)), STATUS_INVALID_DEVICE_REQUEST) << "(R137)";
  LocalQp small = MakeQp(QpShape{2, 2, 1, 1, 0});
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(PostReceive(small, Ctx(8), {mine.Sge(0, 8)}), STATUS_SUCCESS);
  EXPECT_EQ(PostReceive(small, Ctx(9), {mine.Sge(0, 8)}), STATUS_SUCCESS);
  EXPECT_EQ(PostReceive(small, Ctx(10), {mine.Sge(0, 8)}), STATUS_INSUFFICIENT_RESOURCES)
      << "(R091)";
  ExpectNoResults(q.icq, "inline failures (R076)");
  ExpectNoResults(q.rcq, "inline failures (R076)");
  ExpectNoResults(small.rcq, "a refused receive (R076)");
  // The QP still works: the failures were inline, the connection is intact.
  EXPECT_EQ(PostWrite(q, Ctx(11), {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
            STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> r = Poll(q.icq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].RequestContext, Ctx(11));
  EXPECT_EQ(r[0].Status, STATUS_SUCCESS);
}

// R077, R164: the seven initiator requests fail inline with STATUS_CONNECTION_INVALID on a
// QP that was never connected, and after its connection ended; in between they work.
TEST_P(PostingTest, R077_R164_InitiatorRequestsNeedAConnection) {
  ASSERT_NO_FATAL_FAILURE(Start());
  LocalQp q = MakeQp();
  PeerQp p = peer().CreateQp();
  ASSERT_TRUE(q.ok() && p.ok());
  LocalRegion& mine = Region(2 * PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  NDK_MW* mw = local().CreateMw(pd());
  LocalFast lf = MakeFast(1, true);
  ASSERT_TRUE(mw != nullptr && lf.ok());
  auto all_seven = [&](NTSTATUS expected, const char* when) {
    SCOPED_TRACE(when);
    EXPECT_EQ(PostSend(q, nullptr, {mine.Sge(0, 8)}), expected) << "NdkSend (R077)";
    EXPECT_EQ(PostSendInvalidate(q, nullptr, {mine.Sge(0, 8)}, 1234), expected)
        << "NdkSendAndInvalidate (R077)";
    EXPECT_EQ(PostWrite(q, nullptr, {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
              expected)
        << "NdkWrite (R077)";
    EXPECT_EQ(PostRead(q, nullptr, {mine.Sge(0, 8)}, theirs.address, theirs.remote_token), expected)
        << "NdkRead (R077)";
    EXPECT_EQ(
        PostBind(q, nullptr, mine.mr, mw, mine.address(), PAGE_SIZE, NDK_OP_FLAG_ALLOW_REMOTE_READ),
        expected)
        << "NdkBind (R077)";
    EXPECT_EQ(PostFastRegister(q, nullptr, lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, lf.pages[0].QuadPart,
                               NDK_OP_FLAG_ALLOW_LOCAL_WRITE),
              expected)
        << "NdkFastRegister (R077)";
  };
  all_seven(STATUS_CONNECTION_INVALID, "never connected");
  EXPECT_EQ(PostInvalidate(q, nullptr, H(mw)), STATUS_CONNECTION_INVALID) << "NdkInvalidate (R077)";
  ExpectNoResults(q.icq, "inline failures (R076)");

  Link link = Connect(q, p);
  ASSERT_TRUE(link.ok());
  // Connected: none fails for want of a connection (R164). The send needs a receive.
  ASSERT_EQ(peer().Receive(p.qp, 0, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
  ASSERT_EQ(peer().Receive(p.qp, 0, {{theirs.id, 64, 64}}), STATUS_SUCCESS);
  PeerRegion fast = peer().CreateFastRegion(1, true);
  ASSERT_EQ(peer().FastRegister(p.qp, fast, 64, 0, NDK_OP_FLAG_ALLOW_REMOTE_READ), STATUS_SUCCESS);
  EXPECT_EQ(PostSend(q, nullptr, {mine.Sge(0, 8)}), STATUS_SUCCESS) << "(R164)";
  EXPECT_EQ(PostSendInvalidate(q, nullptr, {mine.Sge(0, 8)}, fast.remote_token), STATUS_SUCCESS)
      << "(R164)";
  EXPECT_EQ(PostWrite(q, nullptr, {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
            STATUS_SUCCESS);
  EXPECT_EQ(PostRead(q, nullptr, {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
            STATUS_SUCCESS);
  EXPECT_EQ(
      PostBind(q, nullptr, mine.mr, mw, mine.address(), PAGE_SIZE, NDK_OP_FLAG_ALLOW_REMOTE_READ),
      STATUS_SUCCESS);
  EXPECT_EQ(PostFastRegister(q, nullptr, lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, lf.pages[0].QuadPart,
                             NDK_OP_FLAG_ALLOW_LOCAL_WRITE),
            STATUS_SUCCESS);
  EXPECT_EQ(PostInvalidate(q, nullptr, H(mw)), STATUS_SUCCESS);
  EXPECT_EQ(PostInvalidate(q, nullptr, H(lf.mr)), STATUS_SUCCESS);
  EXPECT_EQ(Poll(q.icq, 8).size(), 8u);

  // Disconnected: inline failures again.
  ASSERT_EQ(Disconnect(link.local), STATUS_SUCCESS);
  all_seven(STATUS_CONNECTION_INVALID, "after NdkDisconnect");
  ExpectNoResults(q.icq, "inline failures after the disconnect (R076)");
}

// R078, R198: receives posted before the connection exists are kept and consumed once the
// peer sends; so are SRQ receives, which complete in the consuming QP's receive CQ with its
// QPContext.
TEST_P(PostingTest, R078_R198_ReceivesPostedBeforeTheConnectionAreConsumed) {
  ASSERT_NO_FATAL_FAILURE(Start());
  LocalRegion& mine = Region(8 * 1024);
  PeerRegion theirs = peer().Register(4096, kMrAll);
  peer().Fill(theirs, 0, Pattern(4096, 7));
  LocalQp q = MakeQp();
  NDK_SRQ* srq = local().CreateSrq(pd(), 8, 2, 0);
  NDK_CQ* srq_cq = local().CreateCq(32);
  NDK_QP* srq_qp = local().CreateQpWithSrq(pd(), srq_cq, srq_cq, srq, kDefaultShape, Ctx(0x5A7));
  ASSERT_TRUE(q.ok() && srq_qp != nullptr);
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(PostReceive(q, Ctx(10 + i), {mine.Sge(100 * i, 100)}), STATUS_SUCCESS);
  for (int i = 0; i < 3; ++i) {
    NDK_SGE sge = mine.Sge(4096 + 100 * i, 100);
    ASSERT_EQ(srq->Dispatch->NdkSrqReceive(srq, Ctx(20 + i), &sge, 1), STATUS_SUCCESS) << "(R078)";
  }
  ExpectNoResults(q.rcq, "receives wait for data (R078)");
  PeerQp p = peer().CreateQp();
  Link link = Connect(q, p);
  LocalQp sq;
  sq.rcq = sq.icq = srq_cq;
  sq.qp = srq_qp;
  PeerQp p2 = peer().CreateQp();
  Link link2 = Connect(sq, p2);
  ASSERT_TRUE(link.ok() && link2.ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(peer().Send(p.qp, 0, {{theirs.id, static_cast<uint64_t>(i), 50}}), STATUS_SUCCESS);
    ASSERT_EQ(peer().Send(p2.qp, 0, {{theirs.id, static_cast<uint64_t>(1000 + i), 60}}),
              STATUS_SUCCESS);
  }
  std::vector<NDK_RESULT_EX> r = Poll(q.rcq, 3);
  ASSERT_EQ(r.size(), 3u);
  std::vector<uint8_t> pattern = Pattern(4096, 7);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r[i].Status, STATUS_SUCCESS);
    EXPECT_EQ(r[i].RequestContext, Ctx(10 + i)) << "(R078)";
    EXPECT_EQ(r[i].BytesTransferred, 50u);
    EXPECT_EQ(std::memcmp(mine.data + 100 * i, pattern.data() + i, 50), 0);
  }
  std::vector<NDK_RESULT_EX> s = Poll(srq_cq, 3);
  ASSERT_EQ(s.size(), 3u) << "(R198)";
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(s[i].Status, STATUS_SUCCESS);
    EXPECT_EQ(s[i].RequestContext, Ctx(20 + i)) << "(R198)";
    EXPECT_EQ(s[i].QPContext, Ctx(0x5A7)) << "the consuming QP's context (R198)";
    EXPECT_EQ(s[i].Type, NdkOperationTypeReceive);
    EXPECT_EQ(s[i].BytesTransferred, 60u) << "(R105 for SRQ receives, §7 item 21)";
    EXPECT_EQ(std::memcmp(mine.data + 4096 + 100 * i, pattern.data() + 1000 + i, 60), 0);
  }
}

// R080: SILENT_SUCCESS suppresses the entry of a successful request, of every initiator
// kind; a failing request still produces one.
TEST_P(PostingTest, R080_SilentSuccessSuppressesOnlySuccessfulEntries) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  LocalRegion& mine = Region(2 * PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  PeerRegion fast = peer().CreateFastRegion(1, true);
  ASSERT_EQ(peer().FastRegister(pair.p.qp, fast, 64, 0, NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_SUCCESS);
  ASSERT_EQ(peer().Poll(pair.p.icq, 1).size(), 1u);
  NDK_MW* mw = local().CreateMw(pd());
  LocalFast lf = MakeFast(1, true);
  ASSERT_TRUE(mw != nullptr && lf.ok());
  ASSERT_EQ(peer().Receive(pair.p.qp, 1, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
  ASSERT_EQ(peer().Receive(pair.p.qp, 2, {{theirs.id, 64, 64}}), STATUS_SUCCESS);
  const ULONG silent = NDK_OP_FLAG_SILENT_SUCCESS;
  mine.data[0] = 0x42;
  EXPECT_EQ(PostSend(q, Ctx(1), {mine.Sge(0, 8)}, silent), STATUS_SUCCESS);
  EXPECT_EQ(
      PostWrite(q, Ctx(2), {mine.Sge(0, 8)}, theirs.address + 512, theirs.remote_token, silent),
      STATUS_SUCCESS);
  EXPECT_EQ(
      PostRead(q, Ctx(3), {mine.Sge(64, 8)}, theirs.address + 512, theirs.remote_token, silent),
      STATUS_SUCCESS);
  EXPECT_EQ(PostBind(q, Ctx(4), mine.mr, mw, mine.address(), PAGE_SIZE,
                     NDK_OP_FLAG_ALLOW_REMOTE_READ | silent),
            STATUS_SUCCESS);
  EXPECT_EQ(PostFastRegister(q, Ctx(5), lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, lf.pages[0].QuadPart,
                             NDK_OP_FLAG_ALLOW_LOCAL_WRITE | silent),
            STATUS_SUCCESS);
  EXPECT_EQ(PostInvalidate(q, Ctx(6), H(mw), silent), STATUS_SUCCESS);
  EXPECT_EQ(PostSendInvalidate(q, Ctx(7), {mine.Sge(0, 8)}, fast.remote_token, silent),
            STATUS_SUCCESS);
  ExpectNoResults(q.icq, "successful requests with SILENT_SUCCESS (R080)");
  // They did happen: the peer got both messages, the write moved the byte.
  EXPECT_EQ(peer().Poll(pair.p.rcq, 2).size(), 2u);
  EXPECT_EQ(peer().ReadMemory(theirs, 512, 1)[0], 0x42);
  // A failing request still produces its entry.
  EXPECT_EQ(PostWrite(q, Ctx(8), {mine.Sge(0, 8)}, theirs.address,
                      theirs.remote_token ^ 0x5A5A5A5Au, silent),
            STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> r = Poll(q.icq, 1);
  ASSERT_EQ(r.size(), 1u) << "a failed SILENT_SUCCESS request still has its entry (R080)";
  EXPECT_EQ(r[0].RequestContext, Ctx(8));
  EXPECT_EQ(r[0].Status, STATUS_ACCESS_VIOLATION) << "bad remote token (docs/DATAPATH.md)";
  // The read moved the byte too. Only now is that known: nothing else proves a silent read
  // complete (on the wire its response may still be on its way when the peer has seen the
  // messages posted before it); the entry of the write posted after it does (R075).
  EXPECT_EQ(mine.data[64], 0x42);
}

// R081: a request with READ_FENCE starts only after every earlier read completed: data a
// read brought in is what the fenced write or send carries.
TEST_P(PostingTest, R081_ReadFenceSeesTheEarlierReadsData) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  LocalRegion& mine = Region(64 * 1024);
  PeerRegion theirs = peer().Register(64 * 1024, kMrAll);
  std::vector<uint8_t> source = Pattern(16 * 1024, 81);
  peer().Fill(theirs, 0, source);
  ASSERT_EQ(peer().Receive(pair.p.qp, 1, {{theirs.id, 48 * 1024, 16 * 1024}}), STATUS_SUCCESS);
  for (int round = 0; round < 4; ++round) {
    ASSERT_EQ(PostRead(q, nullptr, {mine.Sge(4096 * round, 4096)}, theirs.address + 4096 * round,
                       theirs.remote_token),
              STATUS_SUCCESS);
  }
  ASSERT_EQ(PostWrite(q, nullptr, {mine.Sge(0, 16 * 1024)}, theirs.address + 16 * 1024,
                      theirs.remote_token, NDK_OP_FLAG_READ_FENCE),
            STATUS_SUCCESS);
  ASSERT_EQ(PostSend(q, nullptr, {mine.Sge(0, 16 * 1024)}, NDK_OP_FLAG_READ_FENCE), STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> r = Poll(q.icq, 6);
  ASSERT_EQ(r.size(), 6u);
  for (const NDK_RESULT_EX& x : r) EXPECT_EQ(x.Status, STATUS_SUCCESS) << ResultText(x);
  EXPECT_EQ(peer().ReadMemory(theirs, 16 * 1024, 16 * 1024), source) << "fenced write (R081)";
  ASSERT_EQ(peer().Poll(pair.p.rcq, 1).size(), 1u);
  EXPECT_EQ(peer().ReadMemory(theirs, 48 * 1024, 16 * 1024), source) << "fenced send (R081)";
}

// R082, R084: DEFER is accepted on every initiator request; a chain ended by a request
// without DEFER completes whole, each request with its one entry.
TEST_P(PostingTest, R082_R084_DeferredChainCompletesByItsEnd) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  LocalRegion& mine = Region(2 * PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  PeerRegion fast = peer().CreateFastRegion(1, true);
  ASSERT_EQ(peer().FastRegister(pair.p.qp, fast, 64, 0, NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_SUCCESS);
  ASSERT_EQ(peer().Poll(pair.p.icq, 1).size(), 1u);
  NDK_MW* mw = local().CreateMw(pd());
  LocalFast lf = MakeFast(1, true);
  ASSERT_TRUE(mw != nullptr && lf.ok());
  ASSERT_EQ(peer().Receive(pair.p.qp, 1, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
  ASSERT_EQ(peer().Receive(pair.p.qp, 2, {{theirs.id, 64, 64}}), STATUS_SUCCESS);
  const ULONG defer = NDK_OP_FLAG_DEFER;
  std::memcpy(mine.data, "deferred", 8);
  EXPECT_EQ(PostBind(q, Ctx(1), mine.mr, mw, mine.address(), PAGE_SIZE,
                     NDK_OP_FLAG_ALLOW_REMOTE_READ | defer),
            STATUS_SUCCESS)
      << "(R082)";
  EXPECT_EQ(PostFastRegister(q, Ctx(2), lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, lf.pages[0].QuadPart,
                             NDK_OP_FLAG_ALLOW_LOCAL_WRITE | defer),
            STATUS_SUCCESS)
      << "(R082)";
  EXPECT_EQ(PostInvalidate(q, Ctx(3), H(mw), defer), STATUS_SUCCESS) << "(R082)";
  EXPECT_EQ(
      PostWrite(q, Ctx(4), {mine.Sge(0, 8)}, theirs.address + 200, theirs.remote_token, defer),
      STATUS_SUCCESS)
      << "(R082)";
  EXPECT_EQ(
      PostRead(q, Ctx(5), {mine.Sge(100, 8)}, theirs.address + 200, theirs.remote_token, defer),
      STATUS_SUCCESS)
      << "(R082)";
  EXPECT_EQ(PostSend(q, Ctx(6), {mine.Sge(0, 8)}, defer), STATUS_SUCCESS) << "(R082)";
  EXPECT_EQ(PostSendInvalidate(q, Ctx(7), {mine.Sge(0, 8)}, fast.remote_token, defer),
            STATUS_SUCCESS)
      << "(R082)";
  EXPECT_EQ(PostWrite(q, Ctx(8), {mine.Sge(0, 8)}, theirs.address + 300, theirs.remote_token),
            STATUS_SUCCESS)
      << "the chain's end (R084)";
  std::vector<NDK_RESULT_EX> r = Poll(q.icq, 8);
  ASSERT_EQ(r.size(), 8u) << "(R084)";
  for (size_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(r[i].Status, STATUS_SUCCESS) << ResultText(r[i]);
    EXPECT_EQ(r[i].RequestContext, Ctx(i + 1)) << "(R075, R120)";
  }
  ExpectNoResults(q.icq, "one entry per deferred request (R082)");
  EXPECT_EQ(std::memcmp(mine.data + 100, "deferred", 8), 0);
  std::vector<uint8_t> at_peer = peer().ReadMemory(theirs, 300, 8);
  EXPECT_EQ(std::string(at_peer.begin(), at_peer.end()), "deferred");
  EXPECT_EQ(peer().Poll(pair.p.rcq, 2).size(), 2u);
}

// R083: before an initiator request fails inline, every earlier DEFER request has been
// handed to processing: it completes without any further post.
TEST_P(PostingTest, R083_InlineFailureStartsEarlierDeferredRequests) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  std::memcpy(mine.data, "handed over", 11);
  ASSERT_EQ(PostWrite(q, Ctx(1), {mine.Sge(0, 11)}, theirs.address, theirs.remote_token,
                      NDK_OP_FLAG_DEFER),
            STATUS_SUCCESS);
  ASSERT_EQ(PostWrite(q, Ctx(2), {mine.Sge(0, 11)}, theirs.address + 20, theirs.remote_token,
                      NDK_OP_FLAG_DEFER),
            STATUS_SUCCESS);
  std::vector<NDK_SGE> five(5, mine.Sge(0, 8));
  EXPECT_EQ(PostWrite(q, Ctx(3), five, theirs.address, theirs.remote_token),
            STATUS_INVALID_PARAMETER);
  std::vector<NDK_RESULT_EX> r = Poll(q.icq, 2);
  ASSERT_EQ(r.size(), 2u) << "the deferred requests before an inline failure complete (R083)";
  EXPECT_EQ(r[0].RequestContext, Ctx(1));
  EXPECT_EQ(r[1].RequestContext, Ctx(2));
  EXPECT_EQ(r[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(r[1].Status, STATUS_SUCCESS);
  ExpectNoResults(q.icq, "no entry for the inline failure (R076)");
  std::vector<uint8_t> got = peer().ReadMemory(theirs, 20, 11);
  EXPECT_EQ(std::string(got.begin(), got.end()), "handed over");
}

// R084: a chain ended by a request that fails after its post (a bad local SGE, R089) was
// still handed to processing: the deferred write reaches the target before the failure
// ends the connection. Its own completion may be a flush: a fabric that completes a write
// once its placement is proven (iWARP, docs/IWARP.md) gets no proof before the end.
TEST_P(PostingTest, R084_ChainEndedByAFailingRequestStillRuns) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  // Flushed once the failure's Terminate reached the peer, which comes after the write.
  ASSERT_EQ(peer().Receive(pair.p.qp, 2, {{theirs.id, 200, 64}}), STATUS_SUCCESS);
  std::memcpy(mine.data, "chain head", 10);
  ASSERT_EQ(PostWrite(pair.q, Ctx(1), {mine.Sge(0, 10)}, theirs.address + 40, theirs.remote_token,
                      NDK_OP_FLAG_DEFER),
            STATUS_SUCCESS);
  NDK_SGE unknown = mine.Sge(0, 16);
  unknown.MemoryRegionToken ^= 0x00FF00FFu;
  ASSERT_EQ(PostWrite(pair.q, Ctx(2), {unknown}, theirs.address, theirs.remote_token), STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].RequestContext, Ctx(1));
  EXPECT_TRUE(r[0].Status == STATUS_SUCCESS || r[0].Status == STATUS_CANCELLED) << ResultText(r[0]);
  EXPECT_EQ(r[1].RequestContext, Ctx(2));
  EXPECT_EQ(r[1].Status, STATUS_ACCESS_VIOLATION) << "(R089)";
  std::vector<PeerResult> flushed = peer().Poll(pair.p.rcq, 1);
  ASSERT_EQ(flushed.size(), 1u);
  EXPECT_EQ(flushed[0].status, STATUS_CANCELLED);
  std::vector<uint8_t> got = peer().ReadMemory(theirs, 40, 10);
  EXPECT_EQ(std::string(got.begin(), got.end()), "chain head") << "the chain's deferred write ran (R084)";
}

// R085: FastRegister(DEFER) succeeds, a second FastRegister(DEFER) fails inline, no send
// follows: exactly one entry, the first FastRegister's.
TEST_P(PostingTest, R085_DeferredFastRegisterThenInlineFailureMakesOneEntry) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalFast lf = MakeFast(2, true);
  ASSERT_TRUE(lf.ok());
  EXPECT_EQ(
      PostFastRegister(pair.q, Ctx(1), lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, lf.pages[0].QuadPart,
                       NDK_OP_FLAG_ALLOW_LOCAL_WRITE | NDK_OP_FLAG_DEFER),
      STATUS_SUCCESS);
  // Registered already (not invalidated): refused inline.
  NTSTATUS second =
      PostFastRegister(pair.q, Ctx(2), lf.mr, {lf.pages[1]}, 0, PAGE_SIZE, lf.pages[1].QuadPart,
                       NDK_OP_FLAG_ALLOW_LOCAL_WRITE | NDK_OP_FLAG_DEFER);
  EXPECT_FALSE(NT_SUCCESS(second)) << StatusText(second);
  std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 1);
  ASSERT_EQ(r.size(), 1u) << "(R085)";
  EXPECT_EQ(r[0].RequestContext, Ctx(1));
  EXPECT_EQ(r[0].Type, NdkOperationTypeFastRegister);
  EXPECT_EQ(r[0].Status, STATUS_SUCCESS);
  ExpectNoResults(pair.q.icq, "no entry for the refused FastRegister (R085)");
}

// R086, R111: a send with SEND_AND_SOLICIT_EVENT satisfies a SOLICITED arm on the
// receiver's receive CQ, after its receive completion is queued; a plain send does not.
TEST_P(PostingTest, R086_R111_SolicitedSendSatisfiesTheSolicitedArm) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  PeerRegion fast = peer().CreateFastRegion(1, true);
  ASSERT_EQ(peer().FastRegister(pair.p.qp, fast, 64, 0, NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_SUCCESS);
  ASSERT_EQ(peer().Poll(pair.p.icq, 1).size(), 1u);
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(PostReceive(q, Ctx(i + 1), {mine.Sge(64 * i, 64)}), STATUS_SUCCESS);
  auto queued_at_notification = std::make_shared<std::atomic<int>>(-1);
  NDK_CQ* rcq = q.rcq;
  q.rnotify->hook = [queued_at_notification, rcq](NTSTATUS) {
    NDK_RESULT r[8];
    queued_at_notification->store(static_cast<int>(rcq->Dispatch->NdkGetCqResults(rcq, r, 8)));
  };
  rcq->Dispatch->NdkArmCq(rcq, NDK_CQ_NOTIFY_SOLICITED);
  ASSERT_EQ(peer().Send(pair.p.qp, 0, {{theirs.id, 0, 8}}), STATUS_SUCCESS);
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(q.rnotify->count.load(), 0) << "a plain send does not satisfy SOLICITED (R086, R111)";
  ASSERT_EQ(Poll(rcq, 1).size(), 1u);
  ASSERT_EQ(peer().Send(pair.p.qp, 0, {{theirs.id, 0, 8}}, NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT),
            STATUS_SUCCESS);
  ASSERT_TRUE(q.rnotify->WaitCount(1)) << "the solicited receive satisfies the arm (R086, R111)";
  ASSERT_TRUE(WaitUntil([&] { return queued_at_notification->load() >= 0; }));
  EXPECT_EQ(q.rnotify->last_status.load(), STATUS_SUCCESS);
  EXPECT_EQ(queued_at_notification->load(), 1)
      << "the completion is queued before the notification (R086)";
  // Without an arm, a solicited send changes nothing (R086, R108).
  ASSERT_EQ(peer().Send(pair.p.qp, 0, {{theirs.id, 0, 8}}, NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT),
            STATUS_SUCCESS);
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(q.rnotify->count.load(), 1) << "(R086, R108)";
  EXPECT_EQ(Poll(rcq, 1).size(), 1u);
  // SendAndInvalidate carries the flag too: the peer's SOLICITED arm fires.
  ASSERT_EQ(peer().Receive(pair.p.qp, 9, {{theirs.id, 128, 64}}), STATUS_SUCCESS);
  peer().ArmCq(pair.p.rcq, NDK_CQ_NOTIFY_SOLICITED);
  ASSERT_EQ(PostSendInvalidate(q, nullptr, {mine.Sge(0, 8)}, fast.remote_token,
                               NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT),
            STATUS_SUCCESS);
  EXPECT_TRUE(WaitUntil([&] { return peer().Notifications(pair.p.rcq) >= 1; }))
      << "SendAndInvalidate with SEND_AND_SOLICIT_EVENT (R086)";
}

// R087: INLINE ignores tokens, copies the data before the call returns, allows more SGEs
// than MaxInitiatorRequestSge, and limits the total to InlineDataSize
// (STATUS_INVALID_BUFFER_SIZE above). Accepted on NdkWrite too (§7 item 15).
TEST_P(PostingTest, R087_InlineDataIsCopiedAtPostTime) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  ASSERT_EQ(peer().Receive(pair.p.qp, 1, {{theirs.id, 0, 128}}), STATUS_SUCCESS);
  // Six unregistered buffers with made-up tokens, 60 bytes in all (InlineDataSize 64, 4 SGEs).
  std::vector<std::vector<uint8_t>> parts;
  std::vector<NDK_SGE> sges;
  std::vector<uint8_t> expected;
  for (int i = 0; i < 6; ++i) {
    parts.push_back(Pattern(10, 870 + i));
    expected.insert(expected.end(), parts.back().begin(), parts.back().end());
  }
  for (int i = 0; i < 6; ++i) {
    NDK_SGE s{};
    s.VirtualAddress = parts[i].data();
    s.Length = 10;
    s.MemoryRegionToken = 0xDEAD0000u + i;
    sges.push_back(s);
  }
  ASSERT_EQ(PostSend(q, Ctx(1), sges, NDK_OP_FLAG_INLINE), STATUS_SUCCESS) << "(R087)";
  for (auto& p : parts) std::fill(p.begin(), p.end(), 0xEE);  // reused at once
  ASSERT_EQ(
      PostWrite(q, Ctx(2), sges, theirs.address + 1000, theirs.remote_token, NDK_OP_FLAG_INLINE),
      STATUS_SUCCESS)
      << "INLINE on NdkWrite (§7 item 15)";
  std::vector<NDK_RESULT_EX> r = Poll(q.icq, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(r[1].Status, STATUS_SUCCESS);
  std::vector<PeerResult> got = peer().Poll(pair.p.rcq, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, 60u);
  EXPECT_EQ(peer().ReadMemory(theirs, 0, 60), expected) << "copied before NdkSend returned (R087)";
  EXPECT_EQ(peer().ReadMemory(theirs, 1000, 60), std::vector<uint8_t>(60, 0xEE))
      << "the write carried the buffers as they were at its post";
  // Exactly InlineDataSize is accepted; one byte more is not.
  std::vector<uint8_t> full(64, 1), over(65, 2);
  NDK_SGE at = SgeOf(full.data(), 64);
  NDK_SGE above = SgeOf(over.data(), 65);
  ASSERT_EQ(peer().Receive(pair.p.qp, 2, {{theirs.id, 0, 128}}), STATUS_SUCCESS);
  EXPECT_EQ(PostSend(q, Ctx(3), {at}, NDK_OP_FLAG_INLINE), STATUS_SUCCESS);
  EXPECT_EQ(PostSend(q, Ctx(4), {above}, NDK_OP_FLAG_INLINE), STATUS_INVALID_BUFFER_SIZE)
      << "(R087)";
  EXPECT_EQ(PostWrite(q, Ctx(5), {above}, theirs.address, theirs.remote_token, NDK_OP_FLAG_INLINE),
            STATUS_INVALID_BUFFER_SIZE);
  r = Poll(q.icq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].RequestContext, Ctx(3));
  ExpectNoResults(q.icq, "refused inline requests (R076)");
}

// R087 with R082: an INLINE request held in a DEFER chain still owns its bytes from its
// post on: the caller's buffers, reused before the chain ends, change nothing.
TEST_P(PostingTest, R087_R082_DeferredInlineDataIsCopiedAtItsPost) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  ASSERT_EQ(peer().Receive(pair.p.qp, 1, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
  std::vector<uint8_t> send_bytes = Pattern(40, 881), write_bytes = Pattern(48, 882);
  const std::vector<uint8_t> sent = send_bytes, written = write_bytes;
  NDK_SGE s = SgeOf(send_bytes.data(), 40), w = SgeOf(write_bytes.data(), 48);
  ASSERT_EQ(PostSend(pair.q, Ctx(1), {s}, NDK_OP_FLAG_INLINE | NDK_OP_FLAG_DEFER), STATUS_SUCCESS);
  ASSERT_EQ(PostWrite(pair.q, Ctx(2), {w}, theirs.address + 500, theirs.remote_token,
                      NDK_OP_FLAG_INLINE | NDK_OP_FLAG_DEFER),
            STATUS_SUCCESS);
  std::fill(send_bytes.begin(), send_bytes.end(), 0xEE);  // reused before the chain ends
  std::fill(write_bytes.begin(), write_bytes.end(), 0xEE);
  ASSERT_EQ(PostWrite(pair.q, Ctx(3), {mine.Sge(0, 8)}, theirs.address + 800, theirs.remote_token),
            STATUS_SUCCESS);  // the chain's end
  std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 3);
  ASSERT_EQ(r.size(), 3u);
  for (const auto& x : r) EXPECT_EQ(x.Status, STATUS_SUCCESS) << ResultText(x);
  std::vector<PeerResult> got = peer().Poll(pair.p.rcq, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, 40u);
  EXPECT_EQ(peer().ReadMemory(theirs, 0, 40), sent) << "the send carried its bytes as posted (R087)";
  EXPECT_EQ(peer().ReadMemory(theirs, 500, 48), written) << "the write carried its bytes as posted (R087)";
}

// R088, R150, R154: an SGE with the PD's privileged token carries a LAM logical address:
// sends from it, receives and reads into it work without registration; the privileged token
// never grants remote access.
TEST_P(PostingTest, R088_R150_R154_PrivilegedTokenSgesCarryLamAddresses) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  LocalFast lam = MakeFast(1, false, 2);  // only its LAM is used
  ASSERT_TRUE(lam.ok());
  UINT32 privileged = 0;
  pd()->Dispatch->NdkGetPrivilegedMemoryRegionToken(pd(), &privileged);
  auto logical = [&](size_t offset, ULONG length) {
    NDK_SGE s{};
    s.LogicalAddress.QuadPart = lam.pages[0].QuadPart + static_cast<LONGLONG>(offset);
    s.Length = length;
    s.MemoryRegionToken = privileged;
    return s;
  };
  unsigned char* memory = lam.buffer->data();
  std::vector<uint8_t> bytes = Pattern(256, 88);
  std::memcpy(memory, bytes.data(), bytes.size());
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  peer().Fill(theirs, 2048, Pattern(256, 89));
  ASSERT_EQ(peer().Receive(pair.p.qp, 1, {{theirs.id, 0, 512}}), STATUS_SUCCESS);
  EXPECT_EQ(PostSend(q, Ctx(1), {logical(0, 256)}), STATUS_SUCCESS) << "(R088)";
  EXPECT_EQ(PostRead(q, Ctx(2), {logical(1024, 256)}, theirs.address + 2048, theirs.remote_token),
            STATUS_SUCCESS)
      << "privileged token: local write (R150)";
  ASSERT_EQ(PostReceive(q, Ctx(3), {logical(3000, 256)}), STATUS_SUCCESS);
  ASSERT_EQ(peer().Send(pair.p.qp, 0, {{theirs.id, 2048, 100}}), STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> r = Poll(q.icq, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].Status, STATUS_SUCCESS) << ResultText(r[0]);
  EXPECT_EQ(r[1].Status, STATUS_SUCCESS) << ResultText(r[1]);
  std::vector<NDK_RESULT_EX> in = Poll(q.rcq, 1);
  ASSERT_EQ(in.size(), 1u);
  EXPECT_EQ(in[0].Status, STATUS_SUCCESS) << ResultText(in[0]);
  ASSERT_EQ(peer().Poll(pair.p.rcq, 1).size(), 1u);
  EXPECT_EQ(peer().ReadMemory(theirs, 0, 256), bytes) << "(R088)";
  std::vector<uint8_t> remote = Pattern(256, 89);
  EXPECT_EQ(std::memcmp(memory + 1024, remote.data(), 256), 0) << "(R150)";
  EXPECT_EQ(std::memcmp(memory + 3000, remote.data(), 100), 0) << "(R150)";
  // The peer cannot use this side's privileged token remotely (R150).
  EXPECT_EQ(peer().Write(pair.p.qp, 7, {{theirs.id, 0, 16}}, lam.pages[0].QuadPart, privileged),
            STATUS_SUCCESS);
  std::vector<PeerResult> failed = peer().Poll(pair.p.icq, 2);  // its send, then this write
  ASSERT_EQ(failed.size(), 2u);
  EXPECT_EQ(failed[0].status, STATUS_SUCCESS);
  EXPECT_EQ(failed[1].status, STATUS_ACCESS_VIOLATION)
      << "a remote write with a privileged token (R150)";
}

// R089 with docs/DATAPATH.md: a local SGE with an unknown token, another PD's region, a
// missing right or a range outside its region fails its request with
// STATUS_ACCESS_VIOLATION and terminates the connection.
TEST_P(PostingTest, R089_BadLocalSgeFailsTheRequestAndTheConnection) {
  ASSERT_NO_FATAL_FAILURE(Start());
  NDK_PD* other_pd = local().CreatePd();
  ASSERT_NE(other_pd, nullptr);
  LocalRegion& mine = Region(PAGE_SIZE);
  LocalRegion& read_only = Region(PAGE_SIZE, NDK_MR_FLAG_ALLOW_REMOTE_READ);
  LocalRegion& foreign = Region(PAGE_SIZE, kMrAll, 0, other_pd);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  struct Case {
    const char* what;
    NDK_SGE sge;
    bool read;  // the SGE is a read's sink (needs local write)
  };
  NDK_SGE unknown = mine.Sge(0, 16);
  unknown.MemoryRegionToken ^= 0x00FF00FFu;
  const Case cases[] = {
      {"unknown token", unknown, false},
      {"another PD's region", foreign.Sge(0, 16), false},
      {"read into a region without local write", read_only.Sge(0, 16), true},
      {"a range past the region's end", mine.Sge(PAGE_SIZE - 8, 16), false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    ASSERT_EQ(PostReceive(pair.q, Ctx(1), {mine.Sge(100, 8)}), STATUS_SUCCESS);
    ASSERT_EQ(peer().Receive(pair.p.qp, 2, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
    NTSTATUS posted = c.read
                          ? PostRead(pair.q, Ctx(9), {c.sge}, theirs.address, theirs.remote_token)
                          : PostWrite(pair.q, Ctx(9), {c.sge}, theirs.address, theirs.remote_token);
    // Inline or as a CQ error (R089); SoftNDK: a CQ error (docs/DATAPATH.md).
    ASSERT_EQ(posted, STATUS_SUCCESS) << StatusText(posted);
    std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].RequestContext, Ctx(9));
    EXPECT_EQ(r[0].Status, STATUS_ACCESS_VIOLATION) << "(R089, docs/DATAPATH.md)";
    // Every other outstanding request on either QP: cancelled.
    std::vector<NDK_RESULT_EX> mine_flushed = Poll(pair.q.rcq, 1);
    ASSERT_EQ(mine_flushed.size(), 1u);
    EXPECT_EQ(mine_flushed[0].Status, STATUS_CANCELLED);
    std::vector<PeerResult> theirs_flushed = peer().Poll(pair.p.rcq, 1);
    ASSERT_EQ(theirs_flushed.size(), 1u);
    EXPECT_EQ(theirs_flushed[0].status, STATUS_CANCELLED);
    ExpectTerminated(pair, STATUS_ACCESS_VIOLATION, mine, theirs);
  }
}

// R090: SGE counts are checked against the queue's maximum on a connected QP too; reads
// against MaxReadRequestSge. At the maximum the request works.
TEST_P(PostingTest, R090_SgeCountLimitsOnAConnectedQp) {
  ASSERT_NO_FATAL_FAILURE(
      Start({{"max_initiator_sge", "4"}, {"max_read_sge", "2"}, {"max_receive_sge", "3"}}));
  ASSERT_EQ(local().info().MaxReadRequestSge, 2u);
  Pair pair = MakePair({}, QpShape{8, 8, 3, 4, 0});
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  std::vector<NDK_SGE> four(4, mine.Sge(0, 8)), five(5, mine.Sge(0, 8));
  std::vector<NDK_SGE> two = {mine.Sge(0, 8), mine.Sge(64, 8)},
                       three = {mine.Sge(0, 8), mine.Sge(64, 8), mine.Sge(128, 8)};
  EXPECT_EQ(PostWrite(q, Ctx(1), five, theirs.address, theirs.remote_token),
            STATUS_INVALID_PARAMETER);
  EXPECT_EQ(PostSend(q, Ctx(2), five), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(PostSendInvalidate(q, Ctx(3), five, 1), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(PostRead(q, Ctx(4), three, theirs.address, theirs.remote_token),
            STATUS_INVALID_PARAMETER)
      << "a read above MaxReadRequestSge";
  EXPECT_EQ(PostReceive(q, Ctx(5), four), STATUS_INVALID_PARAMETER) << "a receive above its QP's 3";
  ExpectNoResults(q.icq, "(R076)");
  ExpectNoResults(q.rcq, "(R076)");
  EXPECT_EQ(PostWrite(q, Ctx(6), four, theirs.address, theirs.remote_token), STATUS_SUCCESS);
  EXPECT_EQ(PostRead(q, Ctx(7), two, theirs.address, theirs.remote_token), STATUS_SUCCESS);
  EXPECT_EQ(PostReceive(q, Ctx(8), three), STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> r = Poll(q.icq, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(r[1].Status, STATUS_SUCCESS);
}

// R091: at most ReceiveQueueDepth receives (and SrqDepth SRQ receives) are outstanding; one
// more fails inline with STATUS_INSUFFICIENT_RESOURCES; a consumed receive frees its slot.
// (The in-process fabric completes initiator requests inside the post, so its initiator
// queue never holds one outstanding: see docs/COVERAGE.md.)
TEST_P(PostingTest, R091_ReceiveQueueAndSrqDepths) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair({}, QpShape{4, 4, 1, 1, 0});
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  for (int i = 0; i < 4; ++i)
    ASSERT_EQ(PostReceive(pair.q, Ctx(i), {mine.Sge(0, 64)}), STATUS_SUCCESS);
  EXPECT_EQ(PostReceive(pair.q, Ctx(4), {mine.Sge(0, 64)}), STATUS_INSUFFICIENT_RESOURCES)
      << "(R091)";
  ASSERT_EQ(peer().Send(pair.p.qp, 0, {{theirs.id, 0, 8}}), STATUS_SUCCESS);
  ASSERT_EQ(Poll(pair.q.rcq, 1).size(), 1u);
  EXPECT_EQ(PostReceive(pair.q, Ctx(5), {mine.Sge(0, 64)}), STATUS_SUCCESS) << "a slot was freed";
  EXPECT_EQ(PostReceive(pair.q, Ctx(6), {mine.Sge(0, 64)}), STATUS_INSUFFICIENT_RESOURCES);
  NDK_SRQ* srq = local().CreateSrq(pd(), 3, 1, 0);
  ASSERT_NE(srq, nullptr);
  NDK_SGE sge = mine.Sge(0, 64);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(srq->Dispatch->NdkSrqReceive(srq, nullptr, &sge, 1), STATUS_SUCCESS);
  EXPECT_EQ(srq->Dispatch->NdkSrqReceive(srq, nullptr, &sge, 1), STATUS_INSUFFICIENT_RESOURCES)
      << "(R091)";
}

// R092, R133: RemoteAddress is an absolute address in local byte order to which the consumer
// may add an offset; a zero-based address names nothing.
TEST_P(PostingTest, R092_R133_RemoteAddressIsAbsoluteAndMayCarryAnOffset) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(8 * 1024, kMrAll);
  std::vector<uint8_t> bytes = Pattern(100, 92);
  std::memcpy(mine.data, bytes.data(), 100);
  ASSERT_EQ(
      PostWrite(pair.q, Ctx(1), {mine.Sge(0, 100)}, theirs.address + 5000, theirs.remote_token),
      STATUS_SUCCESS);
  ASSERT_EQ(
      PostRead(pair.q, Ctx(2), {mine.Sge(200, 50)}, theirs.address + 5025, theirs.remote_token),
      STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(r[1].Status, STATUS_SUCCESS);
  EXPECT_EQ(peer().ReadMemory(theirs, 5000, 100), bytes) << "(R092)";
  EXPECT_EQ(std::memcmp(mine.data + 200, bytes.data() + 25, 50), 0) << "(R092)";
  // Offset 100 from zero (zero-based addressing) is outside the region (R133).
  ASSERT_EQ(PostWrite(pair.q, Ctx(3), {mine.Sge(0, 8)}, 100, theirs.remote_token), STATUS_SUCCESS);
  r = Poll(pair.q.icq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].Status, STATUS_REMOTE_RESOURCES) << "zero-based address (R133, docs/DATAPATH.md)";
}

// R093: a read past the end of the remote region completes with STATUS_REMOTE_RESOURCES
// (and terminates the connection, docs/DATAPATH.md).
TEST_P(PostingTest, R093_ReadPastTheRegionIsRemoteResources) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(1000, kMrAll);
  ASSERT_EQ(PostRead(pair.q, Ctx(1), {mine.Sge(0, 20)}, theirs.address + 990, theirs.remote_token),
            STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].Status, STATUS_REMOTE_RESOURCES) << "(R093)";
  EXPECT_EQ(r[0].Type, NdkOperationTypeRead);
  ExpectTerminated(pair, STATUS_REMOTE_RESOURCES, mine, theirs);
}

// R094 (adapters advertising RDMA_READ_LOCAL_INVALIDATE_SUPPORTED): a successful read with
// RDMA_READ_LOCAL_INVALIDATE invalidates the first SGE's fast-registered region; a
// registered region there is left alone.
TEST_P(PostingTest, R094_ReadWithLocalInvalidate) {
  ASSERT_NO_FATAL_FAILURE(Start());
  if (!BothHave(NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED))
    GTEST_SKIP() << "needs NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED";
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  LocalFast lf = MakeFast(1, false);
  ASSERT_TRUE(lf.ok());
  uint64_t base = lf.pages[0].QuadPart;
  ASSERT_EQ(PostFastRegister(q, nullptr, lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, base,
                             NDK_OP_FLAG_ALLOW_LOCAL_WRITE),
            STATUS_SUCCESS);
  ASSERT_EQ(Poll(q.icq, 1).size(), 1u);
  UINT32 token = lf.mr->Dispatch->NdkGetLocalTokenFromMr(lf.mr);
  LocalRegion& second = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  peer().Fill(theirs, 0, Pattern(64, 94));
  NDK_SGE first{};
  first.VirtualAddress = reinterpret_cast<PVOID>(static_cast<uintptr_t>(base));
  first.Length = 32;
  first.MemoryRegionToken = token;
  ASSERT_EQ(PostRead(q, Ctx(1), {first, second.Sge(0, 32)}, theirs.address, theirs.remote_token,
                     NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE),
            STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> r = Poll(q.icq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].Status, STATUS_SUCCESS);
  std::vector<uint8_t> expected = Pattern(64, 94);
  EXPECT_EQ(std::memcmp(lf.buffer->data(), expected.data(), 32), 0);
  EXPECT_EQ(std::memcmp(second.data, expected.data() + 32, 32), 0);
  EXPECT_EQ(PostInvalidate(q, nullptr, H(lf.mr)), STATUS_INVALID_DEVICE_STATE)
      << "the first SGE's region is invalid after the read (R094, R145)";
  // The second SGE's region, and a registered region as the first SGE, are left alone.
  ASSERT_EQ(PostRead(q, Ctx(2), {second.Sge(0, 32)}, theirs.address, theirs.remote_token,
                     NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE),
            STATUS_SUCCESS);
  ASSERT_EQ(PostRead(q, Ctx(3), {second.Sge(0, 32)}, theirs.address, theirs.remote_token),
            STATUS_SUCCESS);
  r = Poll(q.icq, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(r[1].Status, STATUS_SUCCESS)
      << "a registered region is not invalidated (docs/DATAPATH.md)";
}

// R094, R212: without NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED (SoftNDK: the
// withheld_capabilities tunable) the flag is not advertised and is ignored (the read works,
// the region stays valid).
TEST_P(PostingTest, R094_R212_LocalInvalidateIgnoredWithoutTheCapability) {
  ASSERT_NO_FATAL_FAILURE(Start({{"withheld_capabilities", "rdma_read_local_invalidate"}}));
  if (BothHave(NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED))
    GTEST_SKIP() << "this provider cannot withhold RDMA_READ_LOCAL_INVALIDATE_SUPPORTED "
                    "(R094_ReadWithLocalInvalidate checks it)";
  EXPECT_EQ(local().info().AdapterFlags & NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED, 0u)
      << "not advertised (R212)";
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalFast lf = MakeFast(1, false);
  ASSERT_TRUE(lf.ok());
  uint64_t base = lf.pages[0].QuadPart;
  ASSERT_EQ(PostFastRegister(pair.q, nullptr, lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, base,
                             NDK_OP_FLAG_ALLOW_LOCAL_WRITE | NDK_OP_FLAG_SILENT_SUCCESS),
            STATUS_SUCCESS);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  NDK_SGE first = SgeAt(base, 32, lf.mr->Dispatch->NdkGetLocalTokenFromMr(lf.mr));
  ASSERT_EQ(PostRead(pair.q, nullptr, {first}, theirs.address, theirs.remote_token,
                     NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE),
            STATUS_SUCCESS);
  EXPECT_EQ(Poll(pair.q.icq, 1).size(), 1u);
  EXPECT_EQ(PostInvalidate(pair.q, nullptr, H(lf.mr)), STATUS_SUCCESS) << "still valid (R094)";
}

// R101: NdkFlush completes every pending receive with STATUS_CANCELLED, in posting order,
// exactly once; a second flush, a disconnect and a close find nothing more.
TEST_P(PostingTest, R101_FlushCancelsEveryPendingReceiveOnce) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  LocalRegion& mine = Region(PAGE_SIZE);
  for (int i = 0; i < 6; ++i)
    ASSERT_EQ(PostReceive(q, Ctx(i + 1), {mine.Sge(64 * i, 64)}), STATUS_SUCCESS);
  q.qp->Dispatch->NdkFlush(q.qp);
  std::vector<NDK_RESULT_EX> r = Poll(q.rcq, 6);
  ASSERT_EQ(r.size(), 6u) << "(R101)";
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(r[i].Status, STATUS_CANCELLED) << "(R101)";
    EXPECT_EQ(r[i].RequestContext, Ctx(i + 1)) << "(R101, R120)";
    EXPECT_EQ(r[i].Type, NdkOperationTypeReceive);
  }
  q.qp->Dispatch->NdkFlush(q.qp);
  ExpectNoResults(q.rcq, "a second flush (R101)");
  // Receives posted after a flush are kept (the QP is still connected) and work.
  ASSERT_EQ(PostReceive(q, Ctx(7), {mine.Sge(0, 64)}), STATUS_SUCCESS);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  ASSERT_EQ(peer().Send(pair.p.qp, 0, {{theirs.id, 0, 8}}), STATUS_SUCCESS);
  r = Poll(q.rcq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(r[0].RequestContext, Ctx(7));
  ASSERT_EQ(Disconnect(pair.link.local), STATUS_SUCCESS);
  ExpectNoResults(q.rcq, "nothing left to flush (R101, R102)");
}

// R102, R103, R169, R170, R171: a graceful NdkDisconnect flushes the disconnecting side's
// QP; the peer gets one disconnect event (reason 0) and keeps its own outstanding receives
// until it flushes; initiator requests then fail inline on both sides.
TEST_P(PostingTest, R102_R103_GracefulDisconnectFlushesOnlyTheDisconnectingSide) {
  ASSERT_NO_FATAL_FAILURE(Start());
  for (bool local_disconnects : {true, false}) {
    SCOPED_TRACE(local_disconnects ? "the local side disconnects" : "the peer disconnects");
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    LocalQp& q = pair.q;
    LocalRegion& mine = Region(PAGE_SIZE);
    PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
    for (int i = 0; i < 3; ++i)
      ASSERT_EQ(PostReceive(q, Ctx(i + 1), {mine.Sge(64 * i, 64)}), STATUS_SUCCESS);
    for (int i = 0; i < 2; ++i)
      ASSERT_EQ(peer().Receive(pair.p.qp, 10 + i, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
    if (local_disconnects) {
      ASSERT_EQ(Disconnect(pair.link.local), STATUS_SUCCESS) << "(R171)";
      std::vector<NDK_RESULT_EX> r = Poll(q.rcq, 3);
      ASSERT_EQ(r.size(), 3u) << "the disconnecting side's QP is flushed (R102)";
      for (const NDK_RESULT_EX& x : r) EXPECT_EQ(x.Status, STATUS_CANCELLED);
      ULONG reason = 1;
      EXPECT_TRUE(WaitPeerDisconnect(pair.link.peer, 1, &reason)) << "(R171)";
      EXPECT_EQ(reason, 0u) << "graceful: reason 0 (R170)";
      EXPECT_TRUE(peer().Poll(pair.p.rcq, 1, 8, kSettle).empty())
          << "the peer's receives are not flushed by the provider (R103)";
      peer().Flush(pair.p.qp);
      std::vector<PeerResult> flushed = peer().Poll(pair.p.rcq, 2);
      ASSERT_EQ(flushed.size(), 2u);
      EXPECT_EQ(flushed[0].status, STATUS_CANCELLED);
      EXPECT_EQ(flushed[0].request_context, 10u);
      EXPECT_EQ(peer().Write(pair.p.qp, 0, {{theirs.id, 0, 8}}, mine.address(), mine.remote_token),
                STATUS_CONNECTION_INVALID);
    } else {
      ASSERT_EQ(peer().Disconnect(pair.link.peer), STATUS_SUCCESS);
      ASSERT_TRUE(pair.link.disconnects->WaitCount(1)) << "(R169, R171)";
      EXPECT_EQ(pair.link.disconnects->reason.load(), 0u) << "(R170)";
      ExpectNoResults(q.rcq, "a peer-initiated disconnect does not flush (R103)");
      q.qp->Dispatch->NdkFlush(q.qp);
      std::vector<NDK_RESULT_EX> r = Poll(q.rcq, 3);
      ASSERT_EQ(r.size(), 3u);
      for (const NDK_RESULT_EX& x : r) EXPECT_EQ(x.Status, STATUS_CANCELLED);
      std::vector<PeerResult> flushed = peer().Poll(pair.p.rcq, 2);
      EXPECT_EQ(flushed.size(), 2u) << "the disconnecting peer's QP is flushed (R102)";
    }
    EXPECT_EQ(PostWrite(q, nullptr, {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
              STATUS_CONNECTION_INVALID);
    std::this_thread::sleep_for(kSettle);
    EXPECT_LE(pair.link.disconnects->count.load(), 1) << "(R169)";
    EXPECT_LE(peer().DisconnectEvents(pair.link.peer), 1) << "(R169)";
  }
}

// R198, R199, R200, R201, R202: SRQ receives consumed by a peer's sends: the threshold given
// at creation arms the first notification, made when the posted receives drop below it;
// none follows until NdkModifySrq re-arms (at once when already below); a threshold of 0
// changes nothing.
TEST_P(PostingTest, R198_R199_R200_R201_R202_SrqThresholdsAsReceivesAreConsumed) {
  ASSERT_NO_FATAL_FAILURE(Start());
  EventCounter& n = NewCounter();
  NDK_SRQ* srq = local().CreateSrq(pd(), 16, 1, 3, &n);
  NDK_CQ* cq = local().CreateCq(64);
  NDK_QP* qp = local().CreateQpWithSrq(pd(), cq, cq, srq, kDefaultShape, Ctx(0x5A));
  ASSERT_NE(qp, nullptr);
  LocalQp q;
  q.rcq = q.icq = cq;
  q.qp = qp;
  PeerQp p = peer().CreateQp();
  ASSERT_TRUE(Connect(q, p).ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  auto post = [&](int count) {
    for (int i = 0; i < count; ++i) {
      NDK_SGE sge = mine.Sge(0, 64);
      ASSERT_EQ(srq->Dispatch->NdkSrqReceive(srq, nullptr, &sge, 1), STATUS_SUCCESS);
    }
  };
  auto consume = [&](int count) {
    for (int i = 0; i < count; ++i)
      ASSERT_EQ(peer().Send(p.qp, 0, {{theirs.id, 0, 8}}), STATUS_SUCCESS);
    std::vector<NDK_RESULT_EX> r = Poll(cq, static_cast<size_t>(count));
    ASSERT_EQ(r.size(), static_cast<size_t>(count));
    for (const NDK_RESULT_EX& x : r) EXPECT_EQ(x.QPContext, Ctx(0x5A)) << "(R198)";
  };
  auto modify = [&](ULONG threshold) {
    return local()
        .Request("NdkModifySrq",
                 [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                   return srq->Dispatch->NdkModifySrq(srq, 0, threshold, cb, ctx);
                 })
        .status;
  };
  ASSERT_NO_FATAL_FAILURE(post(5));
  ASSERT_NO_FATAL_FAILURE(consume(2));  // 3 left: not below 3
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(n.count.load(), 0) << "(R199)";
  ASSERT_NO_FATAL_FAILURE(consume(1));  // 2 left
  EXPECT_TRUE(n.WaitCount(1)) << "below the creation threshold (R199)";
  ASSERT_NO_FATAL_FAILURE(consume(1));  // 1 left
  EXPECT_EQ(modify(0), STATUS_SUCCESS);
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(n.count.load(), 1)
      << "no notification until re-armed (R201), threshold 0 changes nothing (R202)";
  EXPECT_EQ(modify(2), STATUS_SUCCESS);
  EXPECT_TRUE(n.WaitCount(2)) << "re-armed while already below: at once (R200)";
  ASSERT_NO_FATAL_FAILURE(post(4));  // 5 posted
  EXPECT_EQ(modify(4), STATUS_SUCCESS);
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(n.count.load(), 2) << "not below 4 yet (R200)";
  ASSERT_NO_FATAL_FAILURE(consume(2));  // 3 left
  EXPECT_TRUE(n.WaitCount(3)) << "(R199, R200)";
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(n.count.load(), 3) << "one per arm (R201)";
  // Every NdkModifySrq above passed SrqDepth 0: the depth is still 16 (R203).
  ASSERT_NO_FATAL_FAILURE(post(13));  // 3 + 13
  NDK_SGE sge = mine.Sge(0, 64);
  EXPECT_EQ(srq->Dispatch->NdkSrqReceive(srq, nullptr, &sge, 1), STATUS_INSUFFICIENT_RESOURCES)
      << "SrqDepth 0 keeps the depth (R203)";
}

// R107 (with R096, R104): TypeSpecificCompletionOutput means something only for
// NdkOperationTypeReceiveAndInvalidate, where it is the invalidated token; SoftNDK's
// decision (docs/DATAPATH.md) is 0 for every other type. Every type a QP produces is
// produced here, on both sides, and checked (the polling helpers check it on every entry
// of every test as well).
TEST_P(PostingTest, R107_TypeSpecificOutputOnlyForReceiveAndInvalidate) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalQp& q = pair.q;
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  std::map<ULONG, int> seen;
  auto collect = [&](NDK_CQ* cq, ULONG type) {
    std::vector<NDK_RESULT_EX> r = Poll(cq, 1);
    ASSERT_EQ(r.size(), 1u) << "type " << type;
    EXPECT_EQ(r[0].Status, STATUS_SUCCESS) << ResultText(r[0]);
    EXPECT_EQ(r[0].Type, type);
    EXPECT_EQ(r[0].TypeSpecificCompletionOutput, 0u) << ResultText(r[0]) << " (R107)";
    ++seen[r[0].Type];
  };
  auto peer_collect = [&](PeerId cq, ULONG type) {
    std::vector<PeerResult> r = peer().Poll(cq, 1);
    ASSERT_EQ(r.size(), 1u) << "type " << type;
    EXPECT_EQ(r[0].status, STATUS_SUCCESS);
    EXPECT_EQ(r[0].type, type);
    EXPECT_EQ(r[0].type_specific, 0u) << "the peer's entry of type " << type << " (R107)";
  };
  ASSERT_EQ(PostReceive(q, Ctx(1), {mine.Sge(0, 64)}), STATUS_SUCCESS);
  ASSERT_EQ(peer().Send(pair.p.qp, 1, {{theirs.id, 0, 16}}), STATUS_SUCCESS);
  collect(q.rcq, NdkOperationTypeReceive);
  peer_collect(pair.p.icq, NdkOperationTypeSend);
  ASSERT_EQ(peer().Receive(pair.p.qp, 2, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
  ASSERT_EQ(PostSend(q, Ctx(2), {mine.Sge(0, 16)}), STATUS_SUCCESS);
  collect(q.icq, NdkOperationTypeSend);
  peer_collect(pair.p.rcq, NdkOperationTypeReceive);
  ASSERT_EQ(PostWrite(q, Ctx(3), {mine.Sge(0, 16)}, theirs.address, theirs.remote_token),
            STATUS_SUCCESS);
  collect(q.icq, NdkOperationTypeWrite);
  ASSERT_EQ(PostRead(q, Ctx(4), {mine.Sge(0, 16)}, theirs.address, theirs.remote_token),
            STATUS_SUCCESS);
  collect(q.icq, NdkOperationTypeRead);
  NDK_MW* mw = local().CreateMw(pd());
  ASSERT_NE(mw, nullptr);
  ASSERT_EQ(PostBind(q, Ctx(5), mine.mr, mw, mine.address(), 64, NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_SUCCESS);
  collect(q.icq, NdkOperationTypeBind);
  ASSERT_EQ(PostInvalidate(q, Ctx(6), H(mw)), STATUS_SUCCESS);
  collect(q.icq, NdkOperationTypeInvalidate);
  LocalFast lf = MakeFast(1, true);
  ASSERT_TRUE(lf.ok());
  ASSERT_EQ(PostFastRegister(q, Ctx(7), lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, lf.pages[0].QuadPart,
                             NDK_OP_FLAG_ALLOW_LOCAL_WRITE | NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_SUCCESS);
  collect(q.icq, NdkOperationTypeFastRegister);
  // The one type that carries something: the token the peer invalidated (R096).
  UINT32 token = lf.mr->Dispatch->NdkGetRemoteTokenFromMr(lf.mr);
  ASSERT_EQ(PostReceive(q, Ctx(8), {mine.Sge(0, 64)}), STATUS_SUCCESS);
  ASSERT_EQ(peer().SendAndInvalidate(pair.p.qp, 3, {{theirs.id, 0, 8}}, token), STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> r = Poll(q.rcq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].Type, NdkOperationTypeReceiveAndInvalidate) << "(R096)";
  EXPECT_EQ(r[0].TypeSpecificCompletionOutput, token) << "(R096, R107)";
  peer_collect(pair.p.icq, NdkOperationTypeSend);
  EXPECT_EQ(seen.size(), 7u) << "every other type was produced";
}

SOFTNDK_INSTANTIATE_DATAPATH(PostingTest);

}  // namespace
}  // namespace conformance
