// Concurrency on the data path: a connector closed while work requests are posted on its
// QP (R057), polling while the provider produces completions (R066), different queues of
// one QP used at once (R067), flush racing posts (R069), prompt calls while the peer is
// stalled (R065); and the consumer's side of the threading rules done right from several
// threads: close after every call returned (R048), serialised posting paths (R068),
// moderation calls taking turns (R070), concurrent fast-register initialisations (R071).
#include <sys/resource.h>

#include <condition_variable>
#include <map>
#include <mutex>

#include "datapath.hpp"

namespace conformance {
namespace {

class ConcurrencyTest : public DataPathTest {};

PVOID Ctx(uintptr_t n) { return reinterpret_cast<PVOID>(n); }

// R057: NdkCloseConnector running while a thread posts writes on the connector's QP: every
// post returns success or an inline failure, nothing crashes, and each successful post
// completes exactly once (successfully, or cancelled by the connection's end).
TEST_P(ConcurrencyTest, R057_CloseConnectorWhileWorkRequestsArePosted) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair({}, kDefaultShape);
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  std::atomic<int> posted{0};
  std::atomic<bool> closed{false};
  int successes = 0, completed = 0, inline_failures = 0;
  std::map<NTSTATUS, int> inline_statuses, completion_statuses;
  NDK_QP* qp = pair.q.qp;
  NDK_CQ* icq = pair.q.icq;
  std::thread writer([&] {
    // This thread alone polls the initiator CQ (R066).
    for (int i = 0; i < 4000; ++i) {
      NDK_SGE sge = mine.Sge(0, 8);
      NTSTATUS s =
          qp->Dispatch->NdkWrite(qp, Ctx(i + 1), &sge, 1, theirs.address, theirs.remote_token, 0);
      if (s == STATUS_SUCCESS) {
        ++successes;
      } else if (s == STATUS_INSUFFICIENT_RESOURCES) {
        // Every slot holds a write in flight (R091, a fabric whose writes stay
        // outstanding): reap below and post again.
      } else {
        ++inline_failures;
        ++inline_statuses[s];
      }
      posted.fetch_add(1);
      NDK_RESULT_EX r[16];
      ULONG n;
      while ((n = icq->Dispatch->NdkGetCqResultsEx(icq, r, 16)) > 0) {
        completed += static_cast<int>(n);
        for (ULONG k = 0; k < n; ++k) ++completion_statuses[r[k].Status];
      }
      if (closed.load() && inline_failures > 20) break;
    }
    auto deadline = Clock::now() + kWait;
    while (completed < successes && Clock::now() < deadline) {
      NDK_RESULT_EX r[16];
      ULONG n = icq->Dispatch->NdkGetCqResultsEx(icq, r, 16);
      completed += static_cast<int>(n);
      for (ULONG k = 0; k < n; ++k) ++completion_statuses[r[k].Status];
      if (n == 0) std::this_thread::sleep_for(Millis(1));
    }
  });
  ASSERT_TRUE(WaitUntil([&] { return posted.load() >= 20; }));
  Completion* close = local().StartClose(pair.link.local);
  EXPECT_TRUE(TestAdapter::WaitCloseDone(close)) << "(R057)";
  closed = true;
  writer.join();
  EXPECT_GT(successes, 0);
  EXPECT_EQ(completed, successes) << "each successful post completes exactly once (R057, R075)";
  for (const auto& [status, count] : inline_statuses)
    EXPECT_EQ(status, STATUS_CONNECTION_INVALID)
        << count << " posts returned " << StatusText(status) << " (R057)";
  for (const auto& [status, count] : completion_statuses)
    EXPECT_TRUE(status == STATUS_SUCCESS || status == STATUS_CANCELLED)
        << count << " completions with " << StatusText(status) << " (R057)";
}

// R066, R120: the consumer polls one CQ while the provider fills it from the peer's sends
// and from this side's writes on another thread: every completion arrives once, in order
// per queue.
TEST_P(ConcurrencyTest, R066_R120_PollingWhileCompletionsArrive) {
  ASSERT_NO_FATAL_FAILURE(Start());
  constexpr int kN = 200;
  LocalQp q = MakeQp(QpShape{kN, kN, 1, 1, 0}, 4 * kN, /*shared_cq=*/true);
  PeerQp p = peer().CreateQp(kN, 1, 0, 4 * kN, false);
  Link link = Connect(q, p);
  ASSERT_TRUE(link.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  for (int i = 0; i < kN; ++i) ASSERT_EQ(PostReceive(q, Ctx(i), {mine.Sge(0, 64)}), STATUS_SUCCESS);
  // Only the sender thread talks to the peer while it runs; only the writer posts writes;
  // only this thread polls.
  std::thread sender([&] {
    for (int i = 0; i < kN; ++i)
      EXPECT_EQ(peer().Send(p.qp, 0, {{theirs.id, 0, 4}}), STATUS_SUCCESS);
  });
  std::thread writer([&] {
    for (int i = 0; i < kN; ++i) {
      NDK_SGE sge = mine.Sge(256, 8);
      // Into bytes the peer's sends do not read from.
      EXPECT_EQ(q.qp->Dispatch->NdkWrite(q.qp, Ctx(10000 + i), &sge, 1, theirs.address + 2048,
                                         theirs.remote_token, 0),
                STATUS_SUCCESS);
    }
  });
  std::vector<NDK_RESULT_EX> all = Poll(q.rcq, 2 * kN);
  sender.join();
  writer.join();
  ASSERT_EQ(all.size(), static_cast<size_t>(2 * kN)) << "(R066)";
  std::vector<uintptr_t> receives, writes;
  for (const NDK_RESULT_EX& x : all) {
    EXPECT_EQ(x.Status, STATUS_SUCCESS);
    (x.Type == NdkOperationTypeReceive ? receives : writes)
        .push_back(reinterpret_cast<uintptr_t>(x.RequestContext));
  }
  ASSERT_EQ(receives.size(), static_cast<size_t>(kN));
  ASSERT_EQ(writes.size(), static_cast<size_t>(kN));
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(receives[i], static_cast<uintptr_t>(i)) << "(R120)";
    EXPECT_EQ(writes[i], static_cast<uintptr_t>(10000 + i)) << "(R120)";
  }
  ExpectNoResults(q.rcq, "each completion once (R066)");
}

// R067: the receive queue and the initiator queue of one QP used by two threads at once.
TEST_P(ConcurrencyTest, R067_ReceiveAndInitiatorQueuesConcurrently) {
  ASSERT_NO_FATAL_FAILURE(Start());
  constexpr int kN = 100;
  LocalQp q = MakeQp(QpShape{kN, kN, 1, 1, 0}, 2 * kN);
  PeerQp p = peer().CreateQp(kN, 1, 0, 2 * kN, false);
  ASSERT_TRUE(Connect(q, p).ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  Gate start;
  std::thread receiver([&] {
    start.Wait();
    for (int i = 0; i < kN; ++i) {
      NDK_SGE sge = mine.Sge(0, 64);
      EXPECT_EQ(q.qp->Dispatch->NdkReceive(q.qp, Ctx(i), &sge, 1), STATUS_SUCCESS) << "(R067)";
    }
  });
  std::thread initiator([&] {
    start.Wait();
    for (int i = 0; i < kN; ++i) {
      // Writes read mine[512, 528), reads fill mine[1024, 1040); both at theirs + 256, away
      // from the bytes the peer's sends read below (a concurrent fabric would race there).
      NDK_SGE sge = mine.Sge(i % 2 == 0 ? 512 : 1024, 16);
      NTSTATUS s = i % 2 == 0 ? q.qp->Dispatch->NdkWrite(q.qp, Ctx(1000 + i), &sge, 1,
                                                         theirs.address + 256, theirs.remote_token, 0)
                              : q.qp->Dispatch->NdkRead(q.qp, Ctx(1000 + i), &sge, 1,
                                                        theirs.address + 256, theirs.remote_token, 0);
      EXPECT_EQ(s, STATUS_SUCCESS) << "(R067)";
    }
  });
  start.Open();
  receiver.join();
  initiator.join();
  for (int i = 0; i < kN; ++i) ASSERT_EQ(peer().Send(p.qp, 0, {{theirs.id, 0, 4}}), STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> received = Poll(q.rcq, kN);
  std::vector<NDK_RESULT_EX> initiated = Poll(q.icq, kN);
  ASSERT_EQ(received.size(), static_cast<size_t>(kN));
  ASSERT_EQ(initiated.size(), static_cast<size_t>(kN));
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(received[i].Status, STATUS_SUCCESS);
    EXPECT_EQ(received[i].RequestContext, Ctx(i)) << "(R067, R120)";
    EXPECT_EQ(initiated[i].Status, STATUS_SUCCESS);
    EXPECT_EQ(initiated[i].RequestContext, Ctx(1000 + i)) << "(R067, R120)";
  }
}

// R069: NdkFlush concurrent with receives and writes posted on the same QP: every receive
// posted successfully completes exactly once, none is lost; the writes are unaffected.
TEST_P(ConcurrencyTest, R069_FlushConcurrentWithPosting) {
  ASSERT_NO_FATAL_FAILURE(Start());
  constexpr int kN = 400;
  LocalQp q = MakeQp(QpShape{64, 64, 1, 1, 0}, 2 * kN);
  PeerQp p = peer().CreateQp();
  ASSERT_TRUE(Connect(q, p).ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  std::atomic<bool> done{false};
  std::vector<uintptr_t> accepted;
  int writes = 0;
  std::thread receiver([&] {
    for (int i = 1; i <= kN; ++i) {
      NDK_SGE sge = mine.Sge(0, 64);
      NTSTATUS s = q.qp->Dispatch->NdkReceive(q.qp, Ctx(i), &sge, 1);
      if (s == STATUS_SUCCESS) {
        accepted.push_back(static_cast<uintptr_t>(i));
      } else {
        EXPECT_EQ(s, STATUS_INSUFFICIENT_RESOURCES) << "only a full queue may refuse (R091)";
      }
    }
    done = true;
  });
  std::thread initiator([&] {
    while (!done.load() && writes < kN / 2) {
      NDK_SGE sge = mine.Sge(512, 8);
      NTSTATUS s = q.qp->Dispatch->NdkWrite(q.qp, Ctx(100000 + writes), &sge, 1, theirs.address,
                                            theirs.remote_token, 0);
      // Every slot holding a write in flight (R091, a fabric whose writes stay
      // outstanding) is as far as this thread goes: nobody reaps them here.
      if (s == STATUS_INSUFFICIENT_RESOURCES) break;
      EXPECT_EQ(s, STATUS_SUCCESS) << "(R069)";
      ++writes;
    }
  });
  while (!done.load()) q.qp->Dispatch->NdkFlush(q.qp);  // R069
  receiver.join();
  initiator.join();
  q.qp->Dispatch->NdkFlush(q.qp);
  std::vector<NDK_RESULT_EX> flushed = Poll(q.rcq, accepted.size());
  ASSERT_EQ(flushed.size(), accepted.size()) << "every receive completes (R069, R101)";
  std::map<uintptr_t, int> seen;
  for (const NDK_RESULT_EX& x : flushed) {
    EXPECT_EQ(x.Status, STATUS_CANCELLED);
    ++seen[reinterpret_cast<uintptr_t>(x.RequestContext)];
  }
  for (uintptr_t context : accepted)
    EXPECT_EQ(seen[context], 1) << "receive " << context << " (R069)";
  ExpectNoResults(q.rcq, "none twice (R101)");
  std::vector<NDK_RESULT_EX> written = Poll(q.icq, static_cast<size_t>(writes));
  ASSERT_EQ(written.size(), static_cast<size_t>(writes));
  for (const NDK_RESULT_EX& x : written) EXPECT_EQ(x.Status, STATUS_SUCCESS);
}

// R065: with the peer's provider thread held, this side's work requests and connection
// calls still return promptly (the Post* and Start* helpers time each call); the
// connection proceeds once the peer runs again.
TEST_P(ConcurrencyTest, R065_CallsReturnPromptlyWhileThePeerIsStalled) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  ASSERT_EQ(peer().Receive(pair.p.qp, 1, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
  SOCKADDR_INET destination = peer().Address(AF_INET, NextPort());
  PeerId listener = PeerListen(destination);
  ASSERT_NE(listener, 0u);
  const Millis stall(kBoundedCall + Millis(200));
  peer().StallProvider(stall);
  auto start = Clock::now();
  EXPECT_EQ(PostWrite(pair.q, nullptr, {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
            STATUS_SUCCESS);
  EXPECT_EQ(PostRead(pair.q, nullptr, {mine.Sge(8, 8)}, theirs.address, theirs.remote_token),
            STATUS_SUCCESS);
  EXPECT_EQ(PostSend(pair.q, nullptr, {mine.Sge(0, 8)}), STATUS_SUCCESS);
  LocalQp q = MakeQp();
  NDK_CONNECTOR* c = local().CreateConnector();
  auto before_connect = Clock::now();
  Requested r = StartConnect(c, q.qp, LocalAddress(AF_INET), destination);
  EXPECT_LT(Clock::now() - before_connect, kBoundedCall) << "NdkConnect waited for the peer (R065)";
  EXPECT_LT(Clock::now() - start, stall) << "the calls took as long as the stall (R065)";
  EXPECT_EQ(Poll(pair.q.icq, 3).size(), 3u);
  PeerId passive = peer().NextConnectEvent(listener, stall + kWait);
  ASSERT_NE(passive, 0u) << "the connect event came once the peer ran again";
  EXPECT_EQ(peer().Reject(passive), STATUS_SUCCESS);
  EXPECT_EQ(Finish(r), STATUS_CONNECTION_REFUSED);
}

// R071: NdkInitializeFastRegisterMr on one MR from several threads at once, again and again:
// every call completes exactly once with success (inline or through its callback), and the
// MR is usable afterwards: it has tokens (R138) and takes a fast registration of as many
// pages as the smallest count any call asked for.
TEST_P(ConcurrencyTest, R071_InitializeFastRegisterMrFromSeveralThreads) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalFast lf = MakeFast(1, true, 2);  // its LAM's two pages serve the MR below
  ASSERT_TRUE(lf.ok());
  NDK_MR* mr = local().CreateMr(pd(), true);
  ASSERT_NE(mr, nullptr);
  constexpr int kThreads = 4, kCalls = 25;
  std::vector<std::vector<Requested>> requests(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();  // all start together
      for (int i = 0; i < kCalls; ++i) {
        ULONG pages = 2 + static_cast<ULONG>((t + i) % 3);
        requests[t].push_back(local().Request(
            "NdkInitializeFastRegisterMr",
            [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
              return mr->Dispatch->NdkInitializeFastRegisterMr(mr, pages, TRUE, cb, ctx);
            },
            {}, /*wait=*/false));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const std::vector<Requested>& per_thread : requests)
    for (const Requested& r : per_thread) EXPECT_EQ(Finish(r), STATUS_SUCCESS) << "(R071)";
  EXPECT_NE(mr->Dispatch->NdkGetLocalTokenFromMr(mr), 0u) << "(R071, R138)";
  ASSERT_EQ(PostFastRegister(pair.q, Ctx(71), mr, {lf.pages[0], lf.pages[1]}, 0, 2 * PAGE_SIZE,
                             lf.pages[0].QuadPart,
                             NDK_OP_FLAG_ALLOW_LOCAL_WRITE | NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_SUCCESS)
      << "(R071)";
  std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].Status, STATUS_SUCCESS) << "(R071)";
}

// R048: the rule-abiding close. Several threads call into one CQ — polls, arms, resizes
// that may stay pending — and the close is issued from yet another thread once every one of
// those calls has returned. The close completes exactly once, and only after the last
// resize's callback has returned (R040): a consumer that follows R048 never sees a callback
// after the close; no notification comes (nothing was queued).
TEST_P(ConcurrencyTest, R048_CloseAfterEveryCallReturnedAcrossThreads) {
  ASSERT_NO_FATAL_FAILURE(Start());
  EventCounter& notified = NewCounter();
  NDK_CQ* cq = local().CreateCq(64, &notified);
  ASSERT_NE(cq, nullptr);
  auto blocker = std::make_unique<ProviderThreadBlocker>(local());  // keeps callbacks queued
  constexpr int kThreads = 3, kCalls = 20;
  std::vector<std::vector<Requested>> resizes(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        NDK_RESULT r[4];
        EXPECT_EQ(cq->Dispatch->NdkGetCqResults(cq, r, 4), 0u);
        cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ANY);
        ULONG depth = 32 + static_cast<ULONG>(t * kCalls + i);
        resizes[t].push_back(local().Request(
            "NdkResizeCq",
            [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
              return cq->Dispatch->NdkResizeCq(cq, depth, cb, ctx);
            },
            {}, /*wait=*/false));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();  // every call has returned (R048)
  Completion* close = nullptr;
  std::thread closer([&] { close = local().StartClose(cq); });
  closer.join();
  blocker.reset();
  ASSERT_NE(close, nullptr);
  ASSERT_TRUE(TestAdapter::WaitCloseDone(close)) << "(R048)";
  for (const std::vector<Requested>& per_thread : resizes) {
    for (const Requested& r : per_thread) {
      EXPECT_EQ(Finish(r), STATUS_SUCCESS);
      if (r.returned != STATUS_PENDING || close->call_status() != STATUS_PENDING) continue;
      EXPECT_LT(r.completion->return_stamp(), close->enter_stamp())
          << "a resize callback after the close completed (R040, R048)";
    }
  }
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(close->entered(), close->call_status() == STATUS_PENDING ? 1 : 0) << "once (R039)";
  EXPECT_EQ(notified.count.load(), 0) << "(R108)";
}

// R068 (a performance guideline: no redundant locking in the serialised work-request
// paths). Locking as such cannot be seen from outside; what can is a lock the posting path
// would share with the adapter's other activity: the poster would block while that activity
// runs. One thread posts writes on a QP and polls its CQ (the serialised paths) while another
// keeps the same adapter busy with requests on another CQ (resizes, whose callbacks the
// provider thread delivers in the asynchronous modes). The posting thread practically never
// blocks: fewer voluntary context switches than one per 200 operations.
TEST_P(ConcurrencyTest, R068_SerialisedPostingPathsDoNotBlock) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  NDK_CQ* other = local().CreateCq(64);
  ASSERT_NE(other, nullptr);
  static std::atomic<int> callbacks;
  callbacks = 0;
  std::atomic<int> pending{0};
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    for (ULONG i = 0; !stop.load(); ++i) {
      NTSTATUS s = other->Dispatch->NdkResizeCq(
          other, 32 + i % 32, [](PVOID, NTSTATUS) { callbacks.fetch_add(1); }, nullptr);
      if (s == STATUS_PENDING) pending.fetch_add(1);
    }
  });
  constexpr int kOps = 4000;
  NDK_QP* qp = pair.q.qp;
  NDK_CQ* icq = pair.q.icq;
  rusage before{}, after{};
  getrusage(RUSAGE_THREAD, &before);
  int completed = 0;
  for (int i = 0; i < kOps; ++i) {
    NDK_SGE sge = mine.Sge(0, 8);
    ASSERT_EQ(qp->Dispatch->NdkWrite(qp, Ctx(i), &sge, 1, theirs.address, theirs.remote_token, 0),
              STATUS_SUCCESS);
    NDK_RESULT_EX r[4];
    auto deadline = Clock::now() + kWait;
    while (completed <= i && Clock::now() < deadline)
      completed += static_cast<int>(icq->Dispatch->NdkGetCqResultsEx(icq, r, 4));
  }
  getrusage(RUSAGE_THREAD, &after);
  stop = true;
  busy.join();
  EXPECT_EQ(completed, kOps);
  EXPECT_TRUE(WaitUntil([&] { return callbacks.load() == pending.load(); }));
  long blocked = after.ru_nvcsw - before.ru_nvcsw;
  EXPECT_LT(blocked, kOps / 200) << "the posting thread blocked " << blocked << " times in "
                                 << kOps << " posts and polls (R068)";
}

// R070: NdkControlCqInterruptModeration calls never overlap on one CQ, but a consumer may
// make them from different threads one after the other (here two threads take turns). Each
// answers STATUS_SUCCESS (R127), and the settings of the last call, wherever it was made,
// are those in force (R129): a count of 3 holds the notification until the third completion.
TEST_P(ConcurrencyTest, R070_ModerationCallsTakingTurnsAcrossThreads) {
  ASSERT_NO_FATAL_FAILURE(Start());
  if (!BothHave(NDK_ADAPTER_FLAG_CQ_INTERRUPT_MODERATION_SUPPORTED))
    GTEST_SKIP() << "needs NDK_ADAPTER_FLAG_CQ_INTERRUPT_MODERATION_SUPPORTED";
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  NDK_CQ* cq = pair.q.icq;
  constexpr int kTurns = 200;
  std::mutex mutex;
  std::condition_variable cv;
  int turn = 0;
  std::map<NTSTATUS, int> statuses;
  auto player = [&](int me) {
    for (;;) {
      std::unique_lock lock(mutex);
      cv.wait(lock, [&] { return turn >= kTurns || turn % 2 == me; });
      if (turn >= kTurns) return;
      const bool last = turn == kTurns - 1;
      ULONG interval = last ? MAXULONG : 1000 + static_cast<ULONG>(turn);
      ULONG count = last ? 3 : 2 + static_cast<ULONG>(turn % 5);
      ++statuses[cq->Dispatch->NdkControlCqInterruptModeration(cq, interval, count)];
      ++turn;
      cv.notify_all();
    }
  };
  std::thread a(player, 0), b(player, 1);
  a.join();
  b.join();
  EXPECT_EQ(statuses[STATUS_SUCCESS], kTurns) << "(R070, R127)";
  cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ANY);
  for (int i = 0; i < 2; ++i)
    ASSERT_EQ(PostWrite(pair.q, Ctx(i + 1), {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
              STATUS_SUCCESS);
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(pair.q.inotify->count.load(), 0) << "the last call's count of 3 is in force (R129)";
  ASSERT_EQ(PostWrite(pair.q, Ctx(3), {mine.Sge(0, 8)}, theirs.address, theirs.remote_token),
            STATUS_SUCCESS);
  EXPECT_TRUE(pair.q.inotify->WaitCount(1)) << "the third completion notifies (R070, R129)";
  EXPECT_EQ(Drain(cq).size(), 3u);
}

SOFTNDK_INSTANTIATE_DATAPATH(ConcurrencyTest);

}  // namespace
}  // namespace conformance
