// Scenarios: the failures of docs/DATAPATH.md end to end (invalid reads and writes, a send
// with no receive, a receive too small), flushing, a peer that disconnects under a posted
// receive, queues at their maximum depth, many QPs on one CQ, and a QP at every maximum at
// once. Each checks the status the failed request gets, what happens to every other
// outstanding request, and the end of the connection.
#include <map>

#include "datapath.hpp"

namespace conformance {
namespace {

class ScenarioTest : public DataPathTest {};

PVOID Ctx(uintptr_t n) { return reinterpret_cast<PVOID>(n); }

// R089, R093, R134 with docs/DATAPATH.md: reads and writes with a bad token, outside the
// region, past its end, or without the right fail with the documented status; every other
// outstanding request on both QPs is cancelled; the peer learns why; the QPs refuse work.
TEST_P(ScenarioTest, R093_R134_InvalidReadsAndWrites) {
  ASSERT_NO_FATAL_FAILURE(Start());
  LocalRegion& mine = Region(2 * PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  PeerRegion read_only = peer().Register(PAGE_SIZE, NDK_MR_FLAG_ALLOW_REMOTE_READ);
  PeerRegion write_only = peer().Register(PAGE_SIZE, NDK_MR_FLAG_ALLOW_REMOTE_WRITE);
  struct Case {
    const char* what;
    bool write;
    const PeerRegion* target;
    int64_t offset;
    UINT32 token_xor;
    NTSTATUS expected;
  };
  const Case cases[] = {
      {"write, bad token", true, &theirs, 0, 0x13572468u, STATUS_ACCESS_VIOLATION},
      {"read, bad token", false, &theirs, 0, 0x13572468u, STATUS_ACCESS_VIOLATION},
      {"write outside the region", true, &theirs, 2 * PAGE_SIZE, 0, STATUS_REMOTE_RESOURCES},
      {"read outside the region", false, &theirs, -64, 0, STATUS_REMOTE_RESOURCES},
      {"write past the region's end", true, &theirs, PAGE_SIZE - 8, 0, STATUS_REMOTE_RESOURCES},
      {"read past the region's end", false, &theirs, PAGE_SIZE - 8, 0, STATUS_REMOTE_RESOURCES},
      {"write without remote write", true, &read_only, 0, 0, STATUS_ACCESS_VIOLATION},
      {"read without remote read", false, &write_only, 0, 0, STATUS_ACCESS_VIOLATION},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    ASSERT_EQ(PostReceive(pair.q, Ctx(1), {mine.Sge(0, 64)}), STATUS_SUCCESS);
    ASSERT_EQ(PostReceive(pair.q, Ctx(2), {mine.Sge(64, 64)}), STATUS_SUCCESS);
    ASSERT_EQ(peer().Receive(pair.p.qp, 3, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
    uint64_t address = c.target->address + c.offset;
    UINT32 token = c.target->remote_token ^ c.token_xor;
    NTSTATUS posted = c.write ? PostWrite(pair.q, Ctx(9), {mine.Sge(100, 16)}, address, token)
                              : PostRead(pair.q, Ctx(9), {mine.Sge(100, 16)}, address, token);
    ASSERT_EQ(posted, STATUS_SUCCESS) << "the peer's memory is checked at the peer: a CQ error";
    std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].Status, c.expected) << c.what;
    EXPECT_EQ(r[0].RequestContext, Ctx(9));
    EXPECT_EQ(r[0].Type, c.write ? NdkOperationTypeWrite : NdkOperationTypeRead) << "(R104)";
    std::vector<NDK_RESULT_EX> cancelled = Poll(pair.q.rcq, 2);
    ASSERT_EQ(cancelled.size(), 2u) << "this side's outstanding receives";
    for (const NDK_RESULT_EX& x : cancelled) EXPECT_EQ(x.Status, STATUS_CANCELLED);
    std::vector<PeerResult> theirs_cancelled = peer().Poll(pair.p.rcq, 1);
    ASSERT_EQ(theirs_cancelled.size(), 1u) << "the peer's outstanding receive";
    EXPECT_EQ(theirs_cancelled[0].status, STATUS_CANCELLED);
    ExpectTerminated(pair, c.expected, mine, theirs);
    ExpectNoResults(pair.q.rcq, "each outstanding request completes once");
  }
}

// docs/DATAPATH.md: a send that finds no posted receive fails with STATUS_REMOTE_RESOURCES
// and ends the connection.
TEST_P(ScenarioTest, SendWithNoReceive) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  ASSERT_EQ(PostReceive(pair.q, Ctx(1), {mine.Sge(0, 64)}), STATUS_SUCCESS);
  ASSERT_EQ(PostSend(pair.q, Ctx(5), {mine.Sge(0, 32)}), STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].Status, STATUS_REMOTE_RESOURCES) << "docs/DATAPATH.md";
  EXPECT_EQ(r[0].Type, NdkOperationTypeSend);
  std::vector<NDK_RESULT_EX> cancelled = Poll(pair.q.rcq, 1);
  ASSERT_EQ(cancelled.size(), 1u);
  EXPECT_EQ(cancelled[0].Status, STATUS_CANCELLED);
  ExpectTerminated(pair, STATUS_REMOTE_RESOURCES, mine, theirs);
}

// docs/DATAPATH.md: a receive too small for the send: both fail with STATUS_BUFFER_OVERFLOW,
// the receive holds what fitted, the connection ends.
TEST_P(ScenarioTest, ReceiveTooSmall) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  std::vector<uint8_t> bytes = Pattern(64, 7);
  std::memcpy(mine.data, bytes.data(), bytes.size());
  ASSERT_EQ(peer().Receive(pair.p.qp, 1, {{theirs.id, 0, 10}, {theirs.id, 100, 6}}),
            STATUS_SUCCESS);
  ASSERT_EQ(peer().Receive(pair.p.qp, 2, {{theirs.id, 200, 64}}), STATUS_SUCCESS);
  ASSERT_EQ(PostSend(pair.q, Ctx(5), {mine.Sge(0, 64)}), STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].Status, STATUS_BUFFER_OVERFLOW) << "the send (docs/DATAPATH.md)";
  std::vector<PeerResult> got = peer().Poll(pair.p.rcq, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].status, STATUS_BUFFER_OVERFLOW) << "the receive (docs/DATAPATH.md)";
  EXPECT_EQ(got[0].request_context, 1u);
  EXPECT_EQ(got[1].status, STATUS_CANCELLED) << "the other outstanding receive";
  EXPECT_EQ(peer().ReadMemory(theirs, 0, 10),
            std::vector<uint8_t>(bytes.begin(), bytes.begin() + 10))
      << "the receive holds what fitted";
  EXPECT_EQ(peer().ReadMemory(theirs, 100, 6),
            std::vector<uint8_t>(bytes.begin() + 10, bytes.begin() + 16));
  ExpectTerminated(pair, STATUS_BUFFER_OVERFLOW, mine, theirs);
}

// R101, R102, R103: receives outstanding across a flush, a peer's disconnect and a close:
// each completes exactly once — the consumed ones with their data, the rest with
// STATUS_CANCELLED — and none twice.
TEST_P(ScenarioTest, R101_FlushWithOutstandingReceivesCompletesEachOnce) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  std::map<PVOID, std::vector<NTSTATUS>> seen;
  auto collect = [&](size_t n) {
    for (const NDK_RESULT_EX& x : Poll(pair.q.rcq, n)) seen[x.RequestContext].push_back(x.Status);
  };
  for (int i = 1; i <= 10; ++i)
    ASSERT_EQ(PostReceive(pair.q, Ctx(i), {mine.Sge(64 * i, 64)}), STATUS_SUCCESS);
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(peer().Send(pair.p.qp, 0, {{theirs.id, 0, 8}}), STATUS_SUCCESS);
  collect(3);
  pair.q.qp->Dispatch->NdkFlush(pair.q.qp);
  collect(7);
  pair.q.qp->Dispatch->NdkFlush(pair.q.qp);
  for (int i = 11; i <= 12; ++i)
    ASSERT_EQ(PostReceive(pair.q, Ctx(i), {mine.Sge(64, 64)}), STATUS_SUCCESS);
  ASSERT_EQ(peer().Disconnect(pair.link.peer), STATUS_SUCCESS);
  ASSERT_TRUE(pair.link.disconnects->WaitCount(1));
  ExpectNoResults(pair.q.rcq, "a peer's disconnect does not flush (R103)");
  ASSERT_EQ(Disconnect(pair.link.local), STATUS_SUCCESS);
  collect(2);
  local().CloseAndWait(pair.link.local);
  local().CloseAndWait(pair.q.qp);
  ExpectNoResults(pair.q.rcq, "nothing completes twice (R101)");
  ASSERT_EQ(seen.size(), 12u);
  for (int i = 1; i <= 12; ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(seen[Ctx(i)].size(), 1u) << "exactly once";
    EXPECT_EQ(seen[Ctx(i)][0], i <= 3 ? STATUS_SUCCESS : STATUS_CANCELLED) << "(R101, R102)";
  }
}

// R103, R102: the peer disconnects while a receive is posted: the receive stays posted
// (the provider does not flush on a peer's disconnect), the local side gets its event, and
// its own NdkDisconnect then cancels the receive, once.
TEST_P(ScenarioTest, R102_R103_PeerDisconnectsWhileAReceiveIsPosted) {
  ASSERT_NO_FATAL_FAILURE(Start());
  for (bool active : {true, false}) {
    SCOPED_TRACE(active ? "local active" : "local passive");
    LinkOptions o;
    o.local_active = active;
    Pair pair = MakePair(o);
    ASSERT_TRUE(pair.ok());
    LocalRegion& mine = Region(PAGE_SIZE);
    ASSERT_EQ(PostReceive(pair.q, Ctx(1), {mine.Sge(0, 64)}), STATUS_SUCCESS);
    ASSERT_EQ(peer().Disconnect(pair.link.peer), STATUS_SUCCESS);
    ASSERT_TRUE(pair.link.disconnects->WaitCount(1)) << "(R169)";
    EXPECT_EQ(pair.link.disconnects->reason.load(), 0u) << "(R170)";
    ExpectNoResults(pair.q.rcq, "(R103)");
    EXPECT_EQ(peer().Close(pair.link.peer), STATUS_SUCCESS);
    std::this_thread::sleep_for(kSettle);
    EXPECT_EQ(pair.link.disconnects->count.load(), 1) << "(R169)";
    ASSERT_EQ(Disconnect(pair.link.local), STATUS_SUCCESS);
    std::vector<NDK_RESULT_EX> r = Poll(pair.q.rcq, 1);
    ASSERT_EQ(r.size(), 1u) << "(R102)";
    EXPECT_EQ(r[0].Status, STATUS_CANCELLED);
    EXPECT_EQ(r[0].RequestContext, Ctx(1));
    local().CloseAndWait(pair.link.local);
    ExpectNoResults(pair.q.rcq, "cancelled once");
  }
}

// R091, R116, R120, R203 with lowered maxima: a QP's receive queue, a CQ and an SRQ at
// exactly their maximum depth work; one more receive fails inline; one more completion
// overruns the CQ.
TEST_P(ScenarioTest, R091_R116_QueuesAtTheirMaximumDepth) {
  ASSERT_NO_FATAL_FAILURE(Start({{"max_receive_queue_depth", "8"},
                                 {"max_initiator_queue_depth", "8"},
                                 {"max_cq_depth", "16"},
                                 {"max_srq_depth", "8"}}));
  const NDK_ADAPTER_INFO& info = local().info();
  ASSERT_EQ(info.MaxCqDepth, 16u);
  LocalQp q;
  q.rnotify = &NewCounter();
  q.rcq = q.icq = local().CreateCq(16, q.rnotify);
  q.qp = local().CreateQp(pd(), q.rcq, q.icq, QpShape{8, 8, 2, 2, 0});
  ASSERT_TRUE(q.ok()) << "every depth at its maximum (R027)";
  PeerQp p = peer().CreateQp(8, 2, 0, 16, false);
  ASSERT_TRUE(Connect(q, p).ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  for (int i = 0; i < 8; ++i)
    ASSERT_EQ(PostReceive(q, Ctx(i), {mine.Sge(64 * i, 64)}), STATUS_SUCCESS);
  EXPECT_EQ(PostReceive(q, Ctx(99), {mine.Sge(0, 64)}), STATUS_INSUFFICIENT_RESOURCES) << "(R091)";
  q.rcq->Dispatch->NdkArmCq(q.rcq, NDK_CQ_NOTIFY_ERRORS);
  for (int i = 0; i < 8; ++i) ASSERT_EQ(peer().Send(p.qp, 0, {{theirs.id, 0, 8}}), STATUS_SUCCESS);
  ASSERT_EQ(peer().Poll(p.icq, 8).size(), 8u);  // the sends landed: the receives come first
  for (int i = 0; i < 8; ++i)
    ASSERT_EQ(PostWrite(q, Ctx(100 + i), {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
              STATUS_SUCCESS);
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(q.rnotify->count.load(), 0) << "16 completions in a CQ of 16: no overrun (R116)";
  std::vector<NDK_RESULT_EX> r = Poll(q.rcq, 16);
  ASSERT_EQ(r.size(), 16u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(r[i].RequestContext, Ctx(i)) << "(R120)";
    EXPECT_EQ(r[8 + i].RequestContext, Ctx(100 + i)) << "(R120)";
  }
  // The SRQ at its maximum.
  NDK_SRQ* srq = local().CreateSrq(pd(), 8, 1, 0);
  ASSERT_NE(srq, nullptr) << "(R029)";
  NDK_CQ* scq = local().CreateCq(16);
  NDK_QP* sqp = local().CreateQpWithSrq(pd(), scq, scq, srq, QpShape{8, 8, 1, 1, 0});
  ASSERT_NE(sqp, nullptr);
  for (int i = 0; i < 8; ++i) {
    NDK_SGE sge = mine.Sge(64 * i, 64);
    ASSERT_EQ(srq->Dispatch->NdkSrqReceive(srq, Ctx(200 + i), &sge, 1), STATUS_SUCCESS);
  }
  NDK_SGE sge = mine.Sge(0, 64);
  EXPECT_EQ(srq->Dispatch->NdkSrqReceive(srq, nullptr, &sge, 1), STATUS_INSUFFICIENT_RESOURCES)
      << "(R091)";
  LocalQp sq;
  sq.rcq = sq.icq = scq;
  sq.qp = sqp;
  PeerQp p2 = peer().CreateQp(8, 1, 0, 16, false);
  ASSERT_TRUE(Connect(sq, p2).ok());
  for (int i = 0; i < 8; ++i) ASSERT_EQ(peer().Send(p2.qp, 0, {{theirs.id, 0, 8}}), STATUS_SUCCESS);
  r = Poll(scq, 8);
  ASSERT_EQ(r.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(r[i].RequestContext, Ctx(200 + i)) << "(R120, R198)";
  // One completion more than the CQ holds: the overrun (R116).
  for (int i = 0; i < 8; ++i) ASSERT_EQ(PostReceive(q, Ctx(i), {mine.Sge(0, 64)}), STATUS_SUCCESS);
  for (int i = 0; i < 8; ++i) ASSERT_EQ(peer().Send(p.qp, 0, {{theirs.id, 0, 8}}), STATUS_SUCCESS);
  for (int i = 0; i < 8; ++i)
    ASSERT_EQ(PostWrite(q, nullptr, {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
              STATUS_SUCCESS);
  std::this_thread::sleep_for(kSettle);  // still armed for ERRORS from above
  EXPECT_EQ(q.rnotify->count.load(), 0) << "exactly full is not an overrun";
  EXPECT_EQ(PostWrite(q, nullptr, {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
            STATUS_SUCCESS);
  EXPECT_TRUE(q.rnotify->WaitCount(1)) << "the 17th completion overruns (R116)";
  EXPECT_EQ(q.rnotify->last_status.load(), STATUS_BUFFER_OVERFLOW) << "(R116)";
}

// R079, R120, R122: many QPs on one CQ: every entry carries its own QP's context, and each
// QP's entries keep their posting order.
TEST_P(ScenarioTest, R079_R120_ManyQpsOnOneCq) {
  ASSERT_NO_FATAL_FAILURE(Start());
  constexpr int kQps = 8;
  EventCounter& n = NewCounter();
  NDK_CQ* cq = local().CreateCq(kQps * 8, &n);
  ASSERT_NE(cq, nullptr);
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  std::vector<Pair> pairs(kQps);
  for (int i = 0; i < kQps; ++i) {
    LocalQp& q = pairs[i].q;
    q.rcq = q.icq = cq;
    q.rnotify = q.inotify = &n;
    q.context = Ctx(0x1000 + i);
    q.qp = local().CreateQp(pd(), cq, cq, QpShape{4, 4, 1, 1, 0}, q.context);
    ASSERT_TRUE(q.ok());
    pairs[i].p = peer().CreateQp(4, 1, 0, 16, false);
    LinkOptions o;
    o.local_active = i % 2 == 0;
    o.family = i % 3 == 0 ? AF_INET6 : AF_INET;
    pairs[i].link = Connect(q, pairs[i].p, o);
    ASSERT_TRUE(pairs[i].ok());
  }
  for (int round = 0; round < 2; ++round)
    for (int i = 0; i < kQps; ++i)
      ASSERT_EQ(PostReceive(pairs[i].q, Ctx(10 * i + round), {mine.Sge(64 * i, 64)}),
                STATUS_SUCCESS);
  for (int round = 0; round < 2; ++round) {
    for (int i = kQps - 1; i >= 0; --i) {
      ASSERT_EQ(peer().Send(pairs[i].p.qp, 0, {{theirs.id, 0, static_cast<ULONG>(i + 1)}}),
                STATUS_SUCCESS);
      // Away from the bytes the sends read and the receives fill, and each QP to its own
      // target: on a concurrent fabric they would race (the test's own memory, not the
      // provider's; two connections' writes to one address land in any order).
      ASSERT_EQ(PostWrite(pairs[i].q, Ctx(500 + 10 * i + round), {mine.Sge(2048, 8)},
                          theirs.address + 2048 + 16 * i, theirs.remote_token),
                STATUS_SUCCESS);
    }
  }
  std::vector<NDK_RESULT_EX> r = Poll(cq, 4 * kQps);
  ASSERT_EQ(r.size(), static_cast<size_t>(4 * kQps));
  std::map<PVOID, std::vector<NDK_RESULT_EX>> by_qp;
  for (const NDK_RESULT_EX& x : r) {
    EXPECT_EQ(x.Status, STATUS_SUCCESS) << ResultText(x);
    by_qp[x.QPContext].push_back(x);
  }
  ASSERT_EQ(by_qp.size(), static_cast<size_t>(kQps)) << "(R079)";
  for (int i = 0; i < kQps; ++i) {
    SCOPED_TRACE(i);
    const std::vector<NDK_RESULT_EX>& mine_only = by_qp[Ctx(0x1000 + i)];
    ASSERT_EQ(mine_only.size(), 4u) << "(R079, R122)";
    std::vector<PVOID> receives, writes;
    for (const NDK_RESULT_EX& x : mine_only) {
      if (x.Type == NdkOperationTypeReceive) {
        receives.push_back(x.RequestContext);
        EXPECT_EQ(x.BytesTransferred, static_cast<ULONG>(i + 1)) << "(R105)";
      } else {
        writes.push_back(x.RequestContext);
      }
    }
    EXPECT_EQ(receives, (std::vector<PVOID>{Ctx(10 * i), Ctx(10 * i + 1)})) << "(R120)";
    EXPECT_EQ(writes, (std::vector<PVOID>{Ctx(500 + 10 * i), Ctx(500 + 10 * i + 1)})) << "(R120)";
  }
}

// R027, R087, R090, R091, R176, R177, R186 with every maximum lowered: a QP created at every
// maximum at once, connected with the most private data and read limits, works at each:
// a full receive queue of receives with the most SGEs, sends and writes with the most SGEs,
// reads with the most read SGEs, inline data of the most bytes over more SGEs than the
// maximum, and a fast registration of the most pages.
TEST_P(ScenarioTest, R027_R087_R090_QpAtEveryMaximumAtOnce) {
  ASSERT_NO_FATAL_FAILURE(Start({{"max_receive_queue_depth", "8"},
                                 {"max_initiator_queue_depth", "8"},
                                 {"max_receive_sge", "3"},
                                 {"max_initiator_sge", "3"},
                                 {"max_read_sge", "2"},
                                 {"max_inline_data", "32"},
                                 {"max_inbound_read_limit", "2"},
                                 {"max_outbound_read_limit", "2"},
                                 {"max_caller_data", "24"},
                                 {"max_callee_data", "32"},
                                 {"max_cq_depth", "32"},
                                 {"frmr_page_count", "4"}}));
  const NDK_ADAPTER_INFO& info = local().info();
  ASSERT_EQ(info.MaxInlineDataSize, 32u);
  LocalQp q = MakeQp(QpShape{8, 8, 3, 3, 32}, 32);
  ASSERT_TRUE(q.ok()) << "every maximum at once (R027)";
  PeerQp p = peer().CreateQp(8, 3, 32, 32, false);
  ASSERT_TRUE(p.ok());
  std::vector<uint8_t> caller = Pattern(24, 1), callee = Pattern(32, 2);
  SOCKADDR_INET destination = peer().Address(AF_INET6, NextPort());
  PeerId listener = PeerListen(destination);
  NDK_CONNECTOR* c = local().CreateConnector();
  Requested r = StartConnect(c, q.qp, LocalAddress(AF_INET6), destination, 2, 2, &caller);
  PeerId passive = peer().NextConnectEvent(listener);
  ASSERT_NE(passive, 0u);
  EXPECT_EQ(peer().GetConnectionData(passive).data, caller) << "MaxCallerData bytes (R186)";
  PeerAsync accept = peer().Accept(passive, p.qp, 2, 2, &callee);
  ASSERT_EQ(Finish(r), STATUS_SUCCESS);
  std::vector<uint8_t> data(64);
  ULONG length = 64, ird = 0, ord = 0;
  EXPECT_EQ(c->Dispatch->NdkGetConnectionData(c, &ird, &ord, data.data(), &length), STATUS_SUCCESS);
  EXPECT_EQ(length, 32u) << "MaxCalleeData bytes (R186)";
  EXPECT_EQ(ird, 2u) << "(R176)";
  EXPECT_EQ(ord, 2u) << "(R177)";
  ASSERT_EQ(Finish(StartCompleteConnect(c)), STATUS_SUCCESS);
  ASSERT_EQ(peer().WaitOp(accept), STATUS_SUCCESS);

  LocalRegion& mine = Region(4 * PAGE_SIZE);
  PeerRegion theirs = peer().Register(4 * PAGE_SIZE, kMrAll);
  std::vector<uint8_t> bytes = Pattern(4 * PAGE_SIZE, 3);
  peer().Fill(theirs, 0, bytes);
  // A full receive queue, each receive with three SGEs of 10 bytes (R090, R091).
  for (int i = 0; i < 8; ++i)
    ASSERT_EQ(PostReceive(
                  q, Ctx(i),
                  {mine.Sge(100 * i, 10), mine.Sge(100 * i + 20, 10), mine.Sge(100 * i + 40, 10)}),
              STATUS_SUCCESS);
  EXPECT_EQ(PostReceive(q, Ctx(8), {mine.Sge(0, 10)}), STATUS_INSUFFICIENT_RESOURCES) << "(R091)";
  for (int i = 0; i < 8; ++i)
    ASSERT_EQ(peer().Send(p.qp, 0,
                          {{theirs.id, 30u * i, 10},
                           {theirs.id, 30u * i + 10, 10},
                           {theirs.id, 30u * i + 20, 10}}),
              STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> got = Poll(q.rcq, 8);
  ASSERT_EQ(got.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(got[i].Status, STATUS_SUCCESS);
    EXPECT_EQ(got[i].BytesTransferred, 30u);
    EXPECT_EQ(std::memcmp(mine.data + 100 * i, bytes.data() + 30 * i, 10), 0);
    EXPECT_EQ(std::memcmp(mine.data + 100 * i + 20, bytes.data() + 30 * i + 10, 10), 0);
    EXPECT_EQ(std::memcmp(mine.data + 100 * i + 40, bytes.data() + 30 * i + 20, 10), 0);
  }
  // Initiator requests at their maxima.
  ASSERT_EQ(peer().Receive(p.qp, 1, {{theirs.id, 8192, 512}}), STATUS_SUCCESS);
  ASSERT_EQ(peer().Receive(p.qp, 2, {{theirs.id, 9000, 512}}), STATUS_SUCCESS);
  std::memcpy(mine.data + 2000, bytes.data() + 5000, 300);
  EXPECT_EQ(PostSend(q, Ctx(20), {mine.Sge(2000, 100), mine.Sge(2100, 100), mine.Sge(2200, 100)}),
            STATUS_SUCCESS);
  std::vector<uint8_t> parts = Pattern(32, 4);
  std::vector<NDK_SGE> inline_sges;
  for (int i = 0; i < 8; ++i) inline_sges.push_back(SgeOf(parts.data() + 4 * i, 4));
  EXPECT_EQ(PostSend(q, Ctx(21), inline_sges, NDK_OP_FLAG_INLINE), STATUS_SUCCESS)
      << "32 bytes over 8 SGEs, more than the 3 allowed (R087)";
  EXPECT_EQ(PostWrite(q, Ctx(22), {mine.Sge(2000, 100), mine.Sge(2100, 100), mine.Sge(2200, 100)},
                      theirs.address + 10000, theirs.remote_token),
            STATUS_SUCCESS);
  EXPECT_EQ(PostRead(q, Ctx(23), {mine.Sge(3000, 50), mine.Sge(3100, 50)}, theirs.address + 700,
                     theirs.remote_token),
            STATUS_SUCCESS)
      << "MaxReadRequestSge SGEs";
  LocalFast lf = MakeFast(4, true);
  ASSERT_TRUE(lf.ok());
  EXPECT_EQ(PostFastRegister(q, Ctx(24), lf.mr, lf.pages, 0, 4 * PAGE_SIZE, lf.pages[0].QuadPart,
                             NDK_OP_FLAG_ALLOW_REMOTE_WRITE),
            STATUS_SUCCESS)
      << "FRMRPageCount pages (R139)";
  std::vector<NDK_RESULT_EX> done = Poll(q.icq, 5);
  ASSERT_EQ(done.size(), 5u);
  for (size_t i = 0; i < done.size(); ++i) {
    EXPECT_EQ(done[i].Status, STATUS_SUCCESS) << ResultText(done[i]);
    EXPECT_EQ(done[i].RequestContext, Ctx(20 + i));
  }
  std::vector<PeerResult> at_peer = peer().Poll(p.rcq, 2);
  ASSERT_EQ(at_peer.size(), 2u);
  EXPECT_EQ(at_peer[0].bytes, 300u);
  EXPECT_EQ(at_peer[1].bytes, 32u);
  EXPECT_EQ(peer().ReadMemory(theirs, 8192, 300),
            std::vector<uint8_t>(bytes.begin() + 5000, bytes.begin() + 5300));
  EXPECT_EQ(peer().ReadMemory(theirs, 9000, 32), parts);
  EXPECT_EQ(peer().ReadMemory(theirs, 10000, 300),
            std::vector<uint8_t>(bytes.begin() + 5000, bytes.begin() + 5300));
  EXPECT_EQ(std::memcmp(mine.data + 3000, bytes.data() + 700, 50), 0);
  EXPECT_EQ(std::memcmp(mine.data + 3100, bytes.data() + 750, 50), 0);
}

SOFTNDK_INSTANTIATE_DATAPATH(ScenarioTest);

}  // namespace
}  // namespace conformance
