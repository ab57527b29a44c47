// Several consumer threads creating, using and closing objects on one adapter at once,
// closing from inside callbacks, in every completion mode: every create, request and close
// completes exactly once (R015, R016, R036, R039, R047, R049, R058, R059, R062, R064), and
// the adapter closes cleanly afterwards (R052).
#include <random>

#include "harness.hpp"

namespace conformance {
namespace {

class StressTest : public ConformanceTest {};

constexpr int kThreads = 4;
constexpr int kMaxRounds = 150;           // per thread (bounds memory)
constexpr Millis kBudget{700};            // per thread (bounds time under sanitizers)

// One round of one worker: a small object graph, with most closes issued from callbacks.
void Round(TestAdapter& a, std::mt19937& random, int round) {
  auto close_self = [&a](Completion& c) {
    if (NT_SUCCESS(c.status()) && c.object() != nullptr) a.StartClose(c.object());
  };
  // Objects closed by their own create callback when it is made (else closed here).
  auto closed_by_callback = [&a](auto created) {
    if (created.returned != STATUS_PENDING && created.ok()) a.StartClose(created.object);
  };
  Created<NDK_PD> pd = a.TryCreatePd();
  Created<NDK_CQ> cq = a.TryCreateCq(8);
  if (!pd.ok() || !cq.ok()) {
    ADD_FAILURE() << "round " << round << ": PD/CQ create failed";
    return;
  }
  closed_by_callback(a.TryCreateConnector(close_self));
  closed_by_callback(a.TryCreateSharedEndpoint(a.Address4(0), close_self));
  closed_by_callback(a.TryCreateMw(pd.object, close_self));

  // An MR registered, closed from inside the registration's callback.
  Created<NDK_MR> mr = a.TryCreateMr(pd.object, random() % 2 == 0);
  if (mr.ok()) {
    NDK_MR* m = mr.object;
    const bool fast = m != nullptr && random() % 2 == 0;
    Requested r = a.Request(
        "MR request (closes MR)",
        [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
          return fast ? m->Dispatch->NdkInitializeFastRegisterMr(m, 1, TRUE, cb, ctx)
                      : m->Dispatch->NdkDeregisterMr(m, cb, ctx);
        },
        [&a, m](Completion&) { a.StartClose(m); }, /*wait=*/false);
    if (r.returned != STATUS_PENDING) a.StartClose(m);
  }
  // A QP on the PD and CQ; the PD and the CQ are closed first (their closes pend), then the
  // QP from inside a listener's Listen callback, so that its close races the caller.
  Created<NDK_QP> qp = a.TryCreateQp(pd.object, cq.object, cq.object);
  Completion* pd_close = a.StartClose(pd.object);
  Completion* cq_close = a.StartClose(cq.object);
  if (qp.ok()) {
    EXPECT_EQ(pd_close->call_status(), STATUS_PENDING) << "(R049)";
    EXPECT_EQ(cq_close->call_status(), STATUS_PENDING) << "(R049)";
    NDK_QP* q = qp.object;
    EXPECT_EQ(q->Dispatch->NdkReceive(q, nullptr, nullptr, 0), STATUS_SUCCESS) << "(R051)";
    Created<NDK_LISTENER> listener = a.TryCreateListener();
    if (listener.ok()) {
      NDK_LISTENER* l = listener.object;
      SOCKADDR_INET address = a.Address6(0);
      Requested r = a.Request(
          "NdkListen (closes listener and QP)",
          [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
            return l->Dispatch->NdkListen(l, reinterpret_cast<PSOCKADDR>(&address),
                                          sizeof(SOCKADDR_IN6), cb, ctx);
          },
          [&a, l, q](Completion&) {
            a.StartClose(l);
            a.StartClose(q);
          },
          /*wait=*/false);
      if (r.returned != STATUS_PENDING) {
        a.StartClose(l);
        a.StartClose(q);
      }
    } else {
      a.StartClose(q);
    }
  }
  // Now and then, wait for this round's PD (R049 over the whole graph).
  if (round % 8 == 0) {
    EXPECT_TRUE(TestAdapter::WaitCloseDone(pd_close)) << "(R049)";
    EXPECT_TRUE(TestAdapter::WaitCloseDone(cq_close)) << "(R049)";
  }
}

TEST_P(StressTest, R015_R039_R058_ConcurrentCreateUseCloseFromManyThreads) {
  TestAdapter* a = adapter_;
  std::atomic<int> rounds{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([a, t, &rounds] {
      std::mt19937 random(1234 + t);
      auto deadline = Clock::now() + kBudget;
      for (int i = 0; i < kMaxRounds && Clock::now() < deadline; ++i) {
        Round(*a, random, i);
        rounds.fetch_add(1);
      }
    });
  }
  for (std::thread& w : workers) w.join();
  EXPECT_GT(rounds.load(), kThreads);
  a->CloseEverything();
  EXPECT_EQ(a->OpenObjects(), 0u);
  // Every recorder is checked for exactly-once when the adapter closes (TearDown, R052).
}

// Two adapters on one host stressed at once, closed while the other is busy (R008).
TEST_P(StressTest, R008_TwoAdaptersStressedTogether) {
  TestAdapter* b = OpenAdapter();
  ASSERT_NE(b, nullptr);
  std::atomic<bool> stop{false};
  std::thread busy([b, &stop] {
    std::mt19937 random(99);
    for (int i = 0; i < kMaxRounds && !stop.load(); ++i) Round(*b, random, i);
  });
  std::mt19937 random(7);
  auto deadline = Clock::now() + kBudget / 2;
  for (int i = 0; i < kMaxRounds / 2 && Clock::now() < deadline; ++i) Round(*adapter_, random, i);
  adapter_->CloseEverything();
  EXPECT_TRUE(adapter_->CloseAdapter()) << "(R008/R052)";
  adapter_->VerifyCallbackCounts();
  stop = true;
  busy.join();
  b->CloseEverything();
}

SOFTNDK_INSTANTIATE_CONFORMANCE(StressTest);

}  // namespace
}  // namespace conformance
