// §5.G: completion queues driven by real completions — arming and its types, merging, the
// notification after an arm with completions queued, results, overrun and resize
// (R108-R122), serialized notifications (R072) and closing a CQ while its notification
// runs (R041, R045).
#include "datapath.hpp"

namespace conformance {
namespace {

PVOID Ctx(uintptr_t n) { return reinterpret_cast<PVOID>(n); }

const char* ArmName(ULONG type) {
  switch (type) {
    case NDK_CQ_NOTIFY_ANY:
      return "ANY";
    case NDK_CQ_NOTIFY_SOLICITED:
      return "SOLICITED";
    default:
      return "ERRORS";
  }
}

class CqTest : public DataPathTest {
 protected:
  // A connected pair whose local receive CQ is watched, with a peer buffer to send from.
  void SetUpPair() {
    ASSERT_NO_FATAL_FAILURE(Start());
    pair_ = MakePair();
    ASSERT_TRUE(pair_.ok());
    mine_ = &Region(PAGE_SIZE);
    theirs_ = peer().Register(PAGE_SIZE, kMrAll);
    ASSERT_TRUE(theirs_.ok());
  }
  NDK_CQ* rcq() { return pair_.q.rcq; }
  EventCounter& notified() { return *pair_.q.rnotify; }
  void Arm(ULONG type) { rcq()->Dispatch->NdkArmCq(rcq(), type); }
  // One successful receive completion (plain or solicited) in the receive CQ.
  void Receive(bool solicited) {
    ASSERT_EQ(PostReceive(pair_.q, Ctx(1), {mine_->Sge(0, 64)}), STATUS_SUCCESS);
    ASSERT_EQ(peer().Send(pair_.p.qp, 0, {{theirs_.id, 0, 8}},
                          solicited ? NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT : 0),
              STATUS_SUCCESS);
  }
  // One error completion (a flushed receive) in the receive CQ.
  void Cancelled() {
    ASSERT_EQ(PostReceive(pair_.q, Ctx(2), {mine_->Sge(0, 64)}), STATUS_SUCCESS);
    pair_.q.qp->Dispatch->NdkFlush(pair_.q.qp);
  }
  // Whether a notification came (waits `wait` if `expected`, else kSettle).
  bool Notified(int count, bool expected, Millis wait = kWait) {
    if (expected) return notified().WaitCount(count, wait);
    std::this_thread::sleep_for(kSettle);
    return notified().count.load() >= count;
  }

  Pair pair_;
  LocalRegion* mine_ = nullptr;
  PeerRegion theirs_;
};

// R108, R115: no notification without an arm; one per arm, with the CQ's context; the arm
// is consumed by the notification.
TEST_P(CqTest, R108_R115_OneNotificationPerArm) {
  ASSERT_NO_FATAL_FAILURE(SetUpPair());
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_FALSE(Notified(1, false)) << "notification without an arm (R108)";
  EXPECT_EQ(Drain(rcq()).size(), 1u);
  Arm(NDK_CQ_NOTIFY_ANY);
  EXPECT_FALSE(Notified(1, false)) << "armed over an empty CQ: nothing to notify";
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_TRUE(Notified(1, true)) << "(R108)";
  EXPECT_EQ(notified().last_status.load(), STATUS_SUCCESS);
  EXPECT_FALSE(pair_.q.inotify->count.load() > 0) << "another CQ's context (R115)";
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_FALSE(Notified(2, false)) << "the arm was consumed by the first notification (R108)";
  EXPECT_EQ(Drain(rcq()).size(), 3u);
  Arm(NDK_CQ_NOTIFY_ANY);
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_TRUE(Notified(2, true)) << "re-armed (R108)";
  EXPECT_FALSE(Notified(3, false)) << "(R108)";
  EXPECT_FALSE(notified().overlapped.load()) << "(R072)";
}

// R109: ANY is satisfied by a successful completion and by an error completion.
TEST_P(CqTest, R109_AnyIsSatisfiedBySuccessAndError) {
  ASSERT_NO_FATAL_FAILURE(SetUpPair());
  Arm(NDK_CQ_NOTIFY_ANY);
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_TRUE(Notified(1, true)) << "a successful completion (R109)";
  EXPECT_EQ(Drain(rcq()).size(), 1u);
  Arm(NDK_CQ_NOTIFY_ANY);
  ASSERT_NO_FATAL_FAILURE(Cancelled());
  EXPECT_TRUE(Notified(2, true)) << "an error completion (R109)";
}

// R110: ERRORS is satisfied by error completions, not by successful ones.
TEST_P(CqTest, R110_ErrorsIsSatisfiedOnlyByErrors) {
  ASSERT_NO_FATAL_FAILURE(SetUpPair());
  Arm(NDK_CQ_NOTIFY_ERRORS);
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  ASSERT_NO_FATAL_FAILURE(Receive(true));
  EXPECT_FALSE(Notified(1, false)) << "successful completions do not satisfy ERRORS (R110)";
  EXPECT_EQ(Drain(rcq()).size(), 2u);
  ASSERT_NO_FATAL_FAILURE(Cancelled());
  EXPECT_TRUE(Notified(1, true)) << "an error completion satisfies ERRORS (R110)";
  EXPECT_EQ(notified().last_status.load(), STATUS_SUCCESS) << "the CQ itself is fine";
}

// R111: SOLICITED is satisfied by a solicited receive and by an error completion, not by a
// plain successful one.
TEST_P(CqTest, R111_SolicitedIsSatisfiedBySolicitedReceivesAndErrors) {
  ASSERT_NO_FATAL_FAILURE(SetUpPair());
  Arm(NDK_CQ_NOTIFY_SOLICITED);
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_FALSE(Notified(1, false)) << "(R111)";
  ASSERT_NO_FATAL_FAILURE(Receive(true));
  EXPECT_TRUE(Notified(1, true)) << "a solicited receive (R111)";
  EXPECT_EQ(Drain(rcq()).size(), 2u);
  Arm(NDK_CQ_NOTIFY_SOLICITED);
  ASSERT_NO_FATAL_FAILURE(Cancelled());
  EXPECT_TRUE(Notified(2, true)) << "an error completion (R111)";
}

// R112: arming while the CQ holds a completion queued since the last notification fires at
// once — for every arm type, with a completion that satisfies that type (an error one).
TEST_P(CqTest, R112_ArmWithNewCompletionsQueuedFiresAtOnce) {
  ASSERT_NO_FATAL_FAILURE(SetUpPair());
  for (ULONG type : {NDK_CQ_NOTIFY_ANY, NDK_CQ_NOTIFY_ERRORS, NDK_CQ_NOTIFY_SOLICITED}) {
    SCOPED_TRACE(ArmName(type));
    int before = notified().count.load();
    ASSERT_NO_FATAL_FAILURE(Cancelled());  // queued, new since the last notification
    Arm(type);
    bool fired = Notified(before + 1, true, Millis(1000));
    EXPECT_TRUE(fired) << ArmName(type) << " armed over an error completion queued since the "
                       << "last notification must fire at once (R112, docs/DATAPATH.md)";
    if (!fired) {
      // Consume the arm before the next round: a new error completion satisfies it.
      ASSERT_NO_FATAL_FAILURE(Cancelled());
      EXPECT_TRUE(Notified(before + 1, true));
    }
    Drain(rcq());
  }
  // ANY over a successful completion.
  int before = notified().count.load();
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  Arm(NDK_CQ_NOTIFY_ANY);
  EXPECT_TRUE(Notified(before + 1, true)) << "(R112)";
}

// R113: arming when every queued completion was already there at the last notification may
// fire at once or wait for a new completion; either way one notification per arm.
TEST_P(CqTest, R113_ArmOverOldCompletionsMayWait) {
  ASSERT_NO_FATAL_FAILURE(SetUpPair());
  Arm(NDK_CQ_NOTIFY_ANY);
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  ASSERT_TRUE(Notified(1, true));
  Arm(NDK_CQ_NOTIFY_ANY);  // the completion is still queued, but not new
  std::this_thread::sleep_for(kSettle);
  int after_arm = notified().count.load();
  EXPECT_LE(after_arm, 2) << "(R113)";
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_TRUE(Notified(2, true))
      << "the arm is satisfied by the new completion at the latest (R113)";
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(notified().count.load(), 2) << "one notification for the one arm (R108, R113)";
  EXPECT_EQ(Drain(rcq()).size(), 2u);
}

// R114: a second arm before the first is satisfied merges to the wider type
// (ANY > SOLICITED > ERRORS): ANY fires on a plain success, SOLICITED on a solicited
// receive only, ERRORS on an error only.
TEST_P(CqTest, R114_SecondArmMergesToTheWiderType) {
  ASSERT_NO_FATAL_FAILURE(SetUpPair());
  const ULONG kTypes[] = {NDK_CQ_NOTIFY_ANY, NDK_CQ_NOTIFY_ERRORS, NDK_CQ_NOTIFY_SOLICITED};
  auto merged = [](ULONG a, ULONG b) {
    if (a == NDK_CQ_NOTIFY_ANY || b == NDK_CQ_NOTIFY_ANY) return ULONG{NDK_CQ_NOTIFY_ANY};
    if (a == NDK_CQ_NOTIFY_SOLICITED || b == NDK_CQ_NOTIFY_SOLICITED)
      return ULONG{NDK_CQ_NOTIFY_SOLICITED};
    return ULONG{NDK_CQ_NOTIFY_ERRORS};
  };
  for (ULONG first : kTypes) {
    for (ULONG second : kTypes) {
      SCOPED_TRACE(std::string(ArmName(first)) + " then " + ArmName(second));
      ULONG m = merged(first, second);
      int base = notified().count.load();
      Arm(first);
      Arm(second);
      ASSERT_NO_FATAL_FAILURE(Receive(false));
      bool fired = Notified(base + 1, m == NDK_CQ_NOTIFY_ANY);
      EXPECT_EQ(fired, m == NDK_CQ_NOTIFY_ANY) << "a plain successful receive (R114)";
      ASSERT_EQ(Poll(rcq(), 1).size(), 1u);
      if (!fired) {
        ASSERT_NO_FATAL_FAILURE(Receive(true));
        fired = Notified(base + 1, m == NDK_CQ_NOTIFY_SOLICITED);
        EXPECT_EQ(fired, m == NDK_CQ_NOTIFY_SOLICITED) << "a solicited receive (R114)";
        ASSERT_EQ(Poll(rcq(), 1).size(), 1u);
      }
      if (!fired) {
        ASSERT_NO_FATAL_FAILURE(Cancelled());
        EXPECT_TRUE(Notified(base + 1, true)) << "an error completion (R114)";
        ASSERT_EQ(Poll(rcq(), 1).size(), 1u);
      }
      EXPECT_EQ(notified().count.load(), base + 1) << "one notification for the merged arm (R114)";
    }
  }
}

// R116: more completions than the CQ holds put it in error: the armed notification reports
// STATUS_BUFFER_OVERFLOW, no result is returned any more, and its QPs refuse new requests.
TEST_P(CqTest, R116_OverrunPutsTheCqAndItsQpsInError) {
  ASSERT_NO_FATAL_FAILURE(Start());
  for (bool armed_first : {true, false}) {
    SCOPED_TRACE(armed_first ? "armed before the overrun" : "armed after the overrun");
    EventCounter& n = NewCounter();
    LocalQp q;
    q.rnotify = &n;
    q.rcq = local().CreateCq(4, &n);
    q.icq = local().CreateCq(16);
    q.qp = local().CreateQp(pd(), q.rcq, q.icq, QpShape{8, 8, 1, 1, 0});
    ASSERT_TRUE(q.ok());
    PeerQp p = peer().CreateQp();
    Link link = Connect(q, p);
    ASSERT_TRUE(link.ok());
    LocalRegion& mine = Region(PAGE_SIZE);
    PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
    for (int i = 0; i < 6; ++i)
      ASSERT_EQ(PostReceive(q, Ctx(i), {mine.Sge(0, 64)}), STATUS_SUCCESS);
    if (armed_first) q.rcq->Dispatch->NdkArmCq(q.rcq, NDK_CQ_NOTIFY_ERRORS);
    for (int i = 0; i < 5; ++i) peer().Send(p.qp, 0, {{theirs.id, 0, 8}});  // the fifth overruns
    if (!armed_first) q.rcq->Dispatch->NdkArmCq(q.rcq, NDK_CQ_NOTIFY_ERRORS);
    ASSERT_TRUE(n.WaitCount(1)) << "(R116)";
    EXPECT_EQ(n.last_status.load(), STATUS_BUFFER_OVERFLOW) << "(R116)";
    NDK_RESULT r[8];
    NDK_RESULT_EX rx[8];
    EXPECT_EQ(q.rcq->Dispatch->NdkGetCqResults(q.rcq, r, 8), 0u) << "no more results (R116)";
    EXPECT_EQ(q.rcq->Dispatch->NdkGetCqResultsEx(q.rcq, rx, 8), 0u) << "(R116)";
    EXPECT_EQ(PostReceive(q, nullptr, {mine.Sge(0, 8)}), STATUS_INVALID_DEVICE_STATE) << "(R116)";
    EXPECT_EQ(PostWrite(q, nullptr, {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
              STATUS_INVALID_DEVICE_STATE)
        << "the QP of an overrun CQ is unusable (R116)";
  }
}

// R117, R204: a fatal CQ fault (injected) is notified with STATUS_INTERNAL_ERROR, nothing
// more is reported and its QPs are unusable; a fatal SRQ fault likewise through the SRQ's
// notification, and the SRQ and its QPs refuse work.
TEST_P(CqTest, R117_R204_FatalCqAndSrqFaults) {
  ASSERT_NO_FATAL_FAILURE(SetUpPair());
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  Arm(NDK_CQ_NOTIFY_ERRORS);
  ASSERT_EQ(SoftNdkInjectFatalError(H(rcq())), STATUS_SUCCESS);
  ASSERT_TRUE(notified().WaitCount(1)) << "(R117)";
  EXPECT_EQ(notified().last_status.load(), STATUS_INTERNAL_ERROR) << "(R117)";
  EXPECT_TRUE(Drain(rcq()).empty()) << "no further completions are reported (R117)";
  EXPECT_EQ(PostReceive(pair_.q, nullptr, {mine_->Sge(0, 8)}), STATUS_INVALID_DEVICE_STATE)
      << "(R117)";
  EXPECT_EQ(PostWrite(pair_.q, nullptr, {mine_->Sge(0, 8)}, theirs_.address, theirs_.remote_token),
            STATUS_INVALID_DEVICE_STATE)
      << "(R117)";
  // The SRQ.
  EventCounter& n = NewCounter();
  NDK_SRQ* srq = local().CreateSrq(pd(), 8, 1, 0, &n);
  NDK_CQ* cq = local().CreateCq(16);
  NDK_QP* qp = local().CreateQpWithSrq(pd(), cq, cq, srq);
  ASSERT_NE(qp, nullptr);
  LocalQp q;
  q.rcq = q.icq = cq;
  q.qp = qp;
  PeerQp p = peer().CreateQp();
  ASSERT_TRUE(Connect(q, p).ok());
  ASSERT_EQ(SoftNdkInjectFatalError(H(srq)), STATUS_SUCCESS);
  ASSERT_TRUE(n.WaitCount(1)) << "(R204)";
  EXPECT_EQ(n.last_status.load(), STATUS_INTERNAL_ERROR) << "(R204)";
  NDK_SGE sge = mine_->Sge(0, 8);
  EXPECT_EQ(srq->Dispatch->NdkSrqReceive(srq, nullptr, &sge, 1), STATUS_INVALID_DEVICE_STATE)
      << "(R204)";
  EXPECT_EQ(PostWrite(q, nullptr, {mine_->Sge(0, 8)}, theirs_.address, theirs_.remote_token),
            STATUS_INVALID_DEVICE_STATE)
      << "its QPs are unusable (R204)";
}

// R118, R119: NdkGetCqResults[Ex](n) removes and returns min(n, queued) entries, 0 when
// empty; both forms report the same fields.
TEST_P(CqTest, R118_R119_ResultsReturnAtMostWhatIsQueued) {
  ASSERT_NO_FATAL_FAILURE(SetUpPair());
  for (int i = 0; i < 5; ++i) ASSERT_NO_FATAL_FAILURE(Receive(false));
  ASSERT_EQ(peer().Poll(pair_.p.icq, 5).size(), 5u);  // the peer's five sends completed
  NDK_RESULT plain[10];
  NDK_RESULT_EX ex[10];
  std::memset(plain, 0xAB, sizeof(plain));
  EXPECT_EQ(rcq()->Dispatch->NdkGetCqResults(rcq(), plain, 3), 3u) << "(R118)";
  EXPECT_EQ(rcq()->Dispatch->NdkGetCqResultsEx(rcq(), ex, 10), 2u) << "(R119)";
  EXPECT_EQ(rcq()->Dispatch->NdkGetCqResults(rcq(), plain + 3, 10), 0u) << "empty (R118)";
  EXPECT_EQ(rcq()->Dispatch->NdkGetCqResultsEx(rcq(), ex + 2, 10), 0u) << "empty (R119)";
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(plain[i].Status, STATUS_SUCCESS);
    EXPECT_EQ(plain[i].BytesTransferred, 8u);
    EXPECT_EQ(plain[i].QPContext, pair_.q.context);
    EXPECT_EQ(plain[i].RequestContext, Ctx(1));
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(ex[i].Status, STATUS_SUCCESS);
    EXPECT_EQ(ex[i].BytesTransferred, 8u);
    EXPECT_EQ(ex[i].QPContext, pair_.q.context);
    EXPECT_EQ(ex[i].RequestContext, Ctx(1));
    EXPECT_EQ(ex[i].Type, NdkOperationTypeReceive);
  }
  // n = 0 takes nothing.
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  ASSERT_EQ(peer().Poll(pair_.p.icq, 1).size(), 1u);  // the send landed: its receive is queued
  EXPECT_EQ(rcq()->Dispatch->NdkGetCqResults(rcq(), plain, 0), 0u) << "(R118)";
  EXPECT_EQ(rcq()->Dispatch->NdkGetCqResultsEx(rcq(), ex, 1), 1u) << "still queued";
}

// R121 (adapters advertising CQ_RESIZE_SUPPORTED): NdkResizeCq's new capacity takes effect —
// a full CQ grown takes more completions without an overrun, in order; shrinking below what
// is queued is refused (§7 item 24) and the CQ stays intact.
TEST_P(CqTest, R121_ResizeTakesEffect) {
  ASSERT_NO_FATAL_FAILURE(Start());
  if (!BothHave(NDK_ADAPTER_FLAG_CQ_RESIZE_SUPPORTED))
    GTEST_SKIP() << "needs NDK_ADAPTER_FLAG_CQ_RESIZE_SUPPORTED";
  EventCounter& n = NewCounter();
  LocalQp q;
  q.rnotify = &n;
  q.rcq = local().CreateCq(4, &n);
  q.icq = local().CreateCq(16);
  q.qp = local().CreateQp(pd(), q.rcq, q.icq, QpShape{16, 8, 1, 1, 0});
  ASSERT_TRUE(q.ok());
  PeerQp p = peer().CreateQp();
  ASSERT_TRUE(Connect(q, p).ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  for (int i = 0; i < 8; ++i) ASSERT_EQ(PostReceive(q, Ctx(i), {mine.Sge(0, 64)}), STATUS_SUCCESS);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(peer().Send(p.qp, 0, {{theirs.id, 0, 8}}), STATUS_SUCCESS);
  ASSERT_EQ(peer().Poll(p.icq, 4).size(), 4u);  // the sends landed: their receives are queued
  NDK_CQ* cq = q.rcq;
  Requested shrink =
      local().Request("NdkResizeCq(3)", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return cq->Dispatch->NdkResizeCq(cq, 3, cb, ctx);
      });
  EXPECT_EQ(shrink.status, STATUS_INVALID_PARAMETER) << "below the 4 queued (§7 item 24)";
  Requested grow = local().Request("NdkResizeCq(8)", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return cq->Dispatch->NdkResizeCq(cq, 8, cb, ctx);
  });
  ASSERT_EQ(grow.status, STATUS_SUCCESS) << "(R121)";
  for (int i = 0; i < 4; ++i) ASSERT_EQ(peer().Send(p.qp, 0, {{theirs.id, 0, 8}}), STATUS_SUCCESS);
  cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ERRORS);
  std::vector<NDK_RESULT_EX> r = Poll(cq, 8);
  ASSERT_EQ(r.size(), 8u) << "eight completions fit after the resize (R121)";
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(r[i].Status, STATUS_SUCCESS);
    EXPECT_EQ(r[i].RequestContext, Ctx(i)) << "(R120)";
  }
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(n.count.load(), 0) << "no overrun (R116, R121)";
}

// R123, R124, R125, R126, R127, R129 (adapters advertising CQ_INTERRUPT_MODERATION_SUPPORTED):
// moderation is off on a new CQ; by count it holds the notification until that many
// completions satisfied the arm; by interval it delays it; the newest settings win; the
// call returns STATUS_SUCCESS, never STATUS_PENDING or STATUS_NOT_SUPPORTED.
TEST_P(CqTest, R123_R124_R125_R127_R129_InterruptModeration) {
  ASSERT_NO_FATAL_FAILURE(SetUpPair());
  if (!BothHave(NDK_ADAPTER_FLAG_CQ_INTERRUPT_MODERATION_SUPPORTED))
    GTEST_SKIP() << "needs NDK_ADAPTER_FLAG_CQ_INTERRUPT_MODERATION_SUPPORTED";
  auto moderate = [&](ULONG interval, ULONG count) {
    return rcq()->Dispatch->NdkControlCqInterruptModeration(rcq(), interval, count);
  };
  Arm(NDK_CQ_NOTIFY_ANY);
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_TRUE(Notified(1, true)) << "no moderation on a new CQ (R123)";
  Drain(rcq());
  EXPECT_EQ(moderate(MAXULONG, 3), STATUS_SUCCESS) << "count alone (R125, R127)";
  Arm(NDK_CQ_NOTIFY_ANY);
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_FALSE(Notified(2, false)) << "two of three completions (R125)";
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_TRUE(Notified(2, true)) << "the third (R125)";
  Drain(rcq());
  EXPECT_EQ(moderate(0, 0), STATUS_SUCCESS) << "(R124, R127)";
  Arm(NDK_CQ_NOTIFY_ANY);
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_TRUE(Notified(3, true)) << "the newest settings: off (R124, R129)";
  Drain(rcq());
  EXPECT_EQ(moderate(30000, MAXULONG), STATUS_SUCCESS) << "interval alone (R124)";
  Arm(NDK_CQ_NOTIFY_ANY);
  auto start = Clock::now();
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_TRUE(Notified(4, true)) << "within the interval (R124)";
  EXPECT_GE(Clock::now() - start, Millis(20)) << "delayed by the interval (R124)";
  EXPECT_EQ(moderate(MAXULONG, MAXULONG), STATUS_INVALID_PARAMETER_MIX) << "(R126)";
}

// R128, R212: an adapter without CQ_INTERRUPT_MODERATION_SUPPORTED (SoftNDK: the
// withheld_capabilities tunable) does not advertise it, still implements the function and
// answers STATUS_NOT_SUPPORTED — whatever the arguments, also those an adapter with the
// capability refuses otherwise (R126) — while notifications go on unmoderated.
TEST_P(CqTest, R128_R212_ModerationWithoutTheCapability) {
  ASSERT_NO_FATAL_FAILURE(Start({{"withheld_capabilities", "cq_interrupt_moderation"}}));
  if (BothHave(NDK_ADAPTER_FLAG_CQ_INTERRUPT_MODERATION_SUPPORTED))
    GTEST_SKIP() << "this provider cannot withhold CQ_INTERRUPT_MODERATION_SUPPORTED "
                    "(R123_..._InterruptModeration checks it)";
  EXPECT_EQ(local().info().AdapterFlags & NDK_ADAPTER_FLAG_CQ_INTERRUPT_MODERATION_SUPPORTED, 0u)
      << "not advertised (R212)";
  pair_ = MakePair();
  ASSERT_TRUE(pair_.ok());
  mine_ = &Region(PAGE_SIZE);
  theirs_ = peer().Register(PAGE_SIZE, kMrAll);
  ASSERT_TRUE(theirs_.ok());
  NDK_CQ* cq = rcq();
  EXPECT_EQ(cq->Dispatch->NdkControlCqInterruptModeration(cq, 100000, 4), STATUS_NOT_SUPPORTED)
      << "(R128)";
  EXPECT_EQ(cq->Dispatch->NdkControlCqInterruptModeration(cq, 0, 0), STATUS_NOT_SUPPORTED)
      << "(R128)";
  EXPECT_EQ(cq->Dispatch->NdkControlCqInterruptModeration(cq, MAXULONG, MAXULONG),
            STATUS_NOT_SUPPORTED)
      << "(R128)";
  // The refused call changed nothing: the first completion notifies at once.
  Arm(NDK_CQ_NOTIFY_ANY);
  ASSERT_NO_FATAL_FAILURE(Receive(false));
  EXPECT_TRUE(Notified(1, true)) << "no moderation took effect (R128)";
}

// R072: notifications of one CQ never overlap: one that becomes due while another runs waits
// until it returns.
TEST_P(CqTest, R072_NotificationsOfOneCqNeverOverlap) {
  ASSERT_NO_FATAL_FAILURE(SetUpPair());
  auto gate = std::make_shared<Gate>();
  auto entered = std::make_shared<std::atomic<int>>(0);
  NDK_CQ* cq = rcq();
  notified().hook = [gate, entered, cq](NTSTATUS) {
    if (entered->fetch_add(1) == 0) {
      cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ANY);  // re-armed from inside the callback
      EXPECT_TRUE(gate->Wait()) << "the test never opened the gate";
    }
  };
  Arm(NDK_CQ_NOTIFY_ANY);
  ASSERT_NO_FATAL_FAILURE(Cancelled());
  ASSERT_TRUE(notified().WaitCount(1));
  ASSERT_TRUE(WaitUntil([&] { return entered->load() == 1; }));
  // A second notification is due now (the arm from inside the callback, a new completion).
  ASSERT_NO_FATAL_FAILURE(Cancelled());
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(notified().count.load(), 1) << "a second notification ran while the first did (R072)";
  gate->Open();
  EXPECT_TRUE(notified().WaitCount(2))
      << "the deferred notification after the first returned (R072)";
  EXPECT_FALSE(notified().overlapped.load()) << "(R072)";
}

// R041, R045: closing a CQ while its notification callback runs stays pending until the
// callback returns; no notification follows the close's completion.
TEST_P(CqTest, R041_R045_CqCloseWaitsForItsRunningNotification) {
  ASSERT_NO_FATAL_FAILURE(Start());
  EventCounter& n = NewCounter();
  NDK_CQ* cq = local().CreateCq(16, &n);
  NDK_QP* qp = local().CreateQp(pd(), cq, cq, QpShape{4, 4, 1, 1, 0});
  ASSERT_NE(qp, nullptr);
  auto gate = std::make_shared<Gate>();
  auto returned_stamp = std::make_shared<std::atomic<uint64_t>>(0);
  n.hook = [gate, returned_stamp](NTSTATUS) {
    EXPECT_TRUE(gate->Wait()) << "the test never opened the gate";
    returned_stamp->store(NextStamp());
  };
  LocalQp q;
  q.qp = qp;
  q.rcq = q.icq = cq;
  LocalRegion& mine = Region(PAGE_SIZE);
  ASSERT_EQ(PostReceive(q, nullptr, {mine.Sge(0, 8)}), STATUS_SUCCESS);
  cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ANY);
  qp->Dispatch->NdkFlush(qp);
  ASSERT_TRUE(WaitUntil([&] { return n.running.load() == 1; })) << "no notification";
  // While it runs: another notification becomes due (armed, then the QP's close flushes a
  // receive), the QP's close is requested (its completion may need the provider thread,
  // which the callback holds in the provider-thread mode), and the CQ's close.
  ASSERT_EQ(PostReceive(q, nullptr, {mine.Sge(0, 8)}), STATUS_SUCCESS);
  cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ANY);
  Completion* qp_close = local().StartClose(qp);
  ASSERT_NE(qp_close, nullptr);
  Completion* close = local().StartClose(cq);
  ASSERT_NE(close, nullptr);
  EXPECT_EQ(close->call_status(), STATUS_PENDING) << "a notification callback is running (R045)";
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(close->entered(), 0) << "the close completed while the notification ran (R041, R045)";
  gate->Open();
  ASSERT_TRUE(TestAdapter::WaitCloseDone(qp_close));
  ASSERT_TRUE(TestAdapter::WaitCloseDone(close));
  if (close->call_status() == STATUS_PENDING) {
    EXPECT_GT(close->enter_stamp(), returned_stamp->load())
        << "the close completed before the notification returned (R045)";
  }
  int count = n.count.load();
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(n.count.load(), count) << "a notification after the close completed (R043, R045)";
  EXPECT_LE(count, 2);
}

SOFTNDK_INSTANTIATE_DATAPATH(CqTest);

}  // namespace
}  // namespace conformance
