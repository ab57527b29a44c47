// §5.C: close and close completion — every object type in every mode, antecedents and
// successors, the blocking adapter close, and use after a close was requested
// (R037-R040, R042-R044, R046, R049-R056).
#include <functional>

#include "harness.hpp"

namespace conformance {
namespace {

class CloseTest : public ConformanceTest {
 protected:
  // Closes `antecedent` while `successors` are open and checks R049/R050: the close pends,
  // does not complete while any successor is open, and completes (after the last
  // successor's close callback has returned) once they are all closed. Successors are
  // closed in the given order; each successor's close callback lingers a little so that an
  // early antecedent completion would be seen.
  void CheckAntecedentClose(TestAdapter& a, NDK_OBJECT_HEADER* antecedent,
                            const std::vector<NDK_OBJECT_HEADER*>& successors) {
    const std::string name = SoftNdkObjectTypeName(antecedent->ObjectType);
    Completion* close = a.StartClose(antecedent);
    ASSERT_NE(close, nullptr);
    if (!successors.empty()) {
      EXPECT_EQ(close->call_status(), STATUS_PENDING)
          << "closing a " << name << " with open successors must pend (R049)";
      std::this_thread::sleep_for(kSettle);
      EXPECT_EQ(close->entered(), 0) << name << " close completed with successors open (R049)";
    }
    std::vector<Completion*> closes;
    for (size_t i = 0; i < successors.size(); ++i) {
      // Each successor's close callback lingers, so that an antecedent close completing
      // while it runs would be seen (R050).
      Completion* c = a.StartClose(successors[i], [](Completion&) {
        std::this_thread::sleep_for(Millis(5));
      });
      ASSERT_NE(c, nullptr);
      closes.push_back(c);
      if (i + 1 < successors.size()) {
        EXPECT_TRUE(TestAdapter::WaitCloseDone(c)) << c->what() << " never completed";
        std::this_thread::sleep_for(Millis(2));
        EXPECT_EQ(close->entered(), 0)
            << name << " close completed while a successor was still open (R049)";
      }
    }
    ASSERT_TRUE(TestAdapter::WaitCloseDone(close))
        << name << " close never completed after its last successor closed (R049)";
    for (Completion* c : closes) {
      ASSERT_TRUE(TestAdapter::WaitCloseDone(c)) << c->what();
      // R050: the antecedent's close callback starts only after every successor's close
      // callback has returned.
      if (c->call_status() == STATUS_PENDING && close->call_status() == STATUS_PENDING) {
        EXPECT_GT(close->enter_stamp(), c->return_stamp())
            << name << " close completed while the close callback of '" << c->what()
            << "' was still running (R050)";
      }
    }
  }
};

// R037, R038, R039 (+ R014-R016 through the helpers): every object type is created and
// closed, alone and all together, in every completion mode.
TEST_P(CloseTest, R037_R038_R039_EveryTypeCreatedAndClosed) {
  // Alone: each object closed before the next is created (parents stay open meanwhile).
  NDK_CQ* cq = adapter_->CreateCq();
  NDK_CQ* cq2 = adapter_->CreateCq();
  NDK_PD* pd = adapter_->CreatePd();
  ASSERT_NE(cq, nullptr);
  ASSERT_NE(cq2, nullptr);
  ASSERT_NE(pd, nullptr);
  adapter_->CloseAndWait(adapter_->CreateMr(pd, false));
  adapter_->CloseAndWait(adapter_->CreateMr(pd, true));
  adapter_->CloseAndWait(adapter_->CreateMw(pd));
  adapter_->CloseAndWait(adapter_->CreateSrq(pd));
  adapter_->CloseAndWait(adapter_->CreateQp(pd, cq, cq2));
  NDK_SRQ* srq = adapter_->CreateSrq(pd);
  adapter_->CloseAndWait(adapter_->CreateQpWithSrq(pd, cq, cq2, srq));
  adapter_->CloseAndWait(srq);
  adapter_->CloseAndWait(adapter_->CreateConnector());
  adapter_->CloseAndWait(adapter_->CreateListener());
  adapter_->CloseAndWait(adapter_->CreateSharedEndpoint(adapter_->Address4(0)));
  adapter_->CloseAndWait(adapter_->CreateSharedEndpoint(adapter_->Address6(0)));
  adapter_->CloseAndWait(pd);
  adapter_->CloseAndWait(cq2);
  adapter_->CloseAndWait(cq);
  EXPECT_EQ(adapter_->OpenObjects(), 0u);

  // All together, closed children first.
  for (int round = 0; round < 3; ++round) {
    ObjectSet set = adapter_->CreateAll();
    EXPECT_EQ(set.ChildrenFirst().size(), 12u);
    for (NDK_OBJECT_HEADER* h : set.ChildrenFirst()) adapter_->CloseAndWait(h);
  }
  EXPECT_EQ(adapter_->OpenObjects(), 0u);
}

// R037, R039: the close callback receives the close's own context; closes started together
// each complete exactly once (checked again after the adapter close).
TEST_P(CloseTest, R039_ConcurrentClosesEachCompleteOnce) {
  ObjectSet set = adapter_->CreateAll();
  std::vector<Completion*> closes;
  for (NDK_OBJECT_HEADER* h : set.ChildrenFirst()) closes.push_back(adapter_->StartClose(h));
  for (Completion* c : closes) {
    ASSERT_NE(c, nullptr);
    EXPECT_TRUE(TestAdapter::WaitCloseDone(c)) << c->what();
    EXPECT_FALSE(c->wrong_context()) << c->what() << " (R039)";
  }
}

// R049, R050: PD with a live QP (and every other kind of PD child).
TEST_P(CloseTest, R049_R050_PdCloseWaitsForQp) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* rcq = adapter_->CreateCq();
  NDK_CQ* icq = adapter_->CreateCq();
  NDK_QP* qp = adapter_->CreateQp(pd, rcq, icq);
  ASSERT_NE(qp, nullptr);
  CheckAntecedentClose(*adapter_, H(pd), {H(qp)});
}

TEST_P(CloseTest, R049_R050_PdCloseWaitsForEveryChildType) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* cq = adapter_->CreateCq();
  ASSERT_NE(pd, nullptr);
  ASSERT_NE(cq, nullptr);
  NDK_MR* mr = adapter_->CreateMr(pd, false);
  NDK_MR* fast = adapter_->CreateMr(pd, true);
  NDK_MW* mw = adapter_->CreateMw(pd);
  NDK_SRQ* srq = adapter_->CreateSrq(pd);
  NDK_QP* qp = adapter_->CreateQp(pd, cq, cq);
  NDK_QP* qp_srq = adapter_->CreateQpWithSrq(pd, cq, cq, srq);
  ASSERT_NE(qp_srq, nullptr);
  CheckAntecedentClose(*adapter_, H(pd), {H(mw), H(qp), H(fast), H(qp_srq), H(mr), H(srq)});
}

TEST_P(CloseTest, R049_R050_PdCloseWaitsForEachChildAlone) {
  NDK_CQ* cq = adapter_->CreateCq();
  ASSERT_NE(cq, nullptr);
  using Make = std::function<std::vector<NDK_OBJECT_HEADER*>(NDK_PD*)>;
  const std::pair<const char*, Make> kinds[] = {
      {"MR", [&](NDK_PD* pd) { return std::vector{H(adapter_->CreateMr(pd, false))}; }},
      {"fast MR", [&](NDK_PD* pd) { return std::vector{H(adapter_->CreateMr(pd, true))}; }},
      {"MW", [&](NDK_PD* pd) { return std::vector{H(adapter_->CreateMw(pd))}; }},
      {"SRQ", [&](NDK_PD* pd) { return std::vector{H(adapter_->CreateSrq(pd))}; }},
      {"QP", [&](NDK_PD* pd) { return std::vector{H(adapter_->CreateQp(pd, cq, cq))}; }},
  };
  for (const auto& [what, make] : kinds) {
    SCOPED_TRACE(what);
    NDK_PD* pd = adapter_->CreatePd();
    ASSERT_NE(pd, nullptr);
    std::vector<NDK_OBJECT_HEADER*> children = make(pd);
    ASSERT_NE(children[0], nullptr);
    CheckAntecedentClose(*adapter_, H(pd), children);
  }
}

// R049, R050: a CQ used by QPs (as receive CQ, as initiator CQ, as both) stays pending.
TEST_P(CloseTest, R049_R050_CqCloseWaitsForQps) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* rcq = adapter_->CreateCq();
  NDK_CQ* icq = adapter_->CreateCq();
  NDK_CQ* both = adapter_->CreateCq();
  ASSERT_NE(both, nullptr);
  NDK_QP* qp1 = adapter_->CreateQp(pd, rcq, icq);
  NDK_QP* qp2 = adapter_->CreateQp(pd, both, both);
  NDK_QP* qp3 = adapter_->CreateQp(pd, both, rcq);
  ASSERT_NE(qp3, nullptr);
  CheckAntecedentClose(*adapter_, H(icq), {H(qp1)});  // initiator CQ
  CheckAntecedentClose(*adapter_, H(both), {H(qp2), H(qp3)});
  CheckAntecedentClose(*adapter_, H(rcq), {});         // no successor left: completes
}

// R049, R050, R205: an SRQ used by QPs stays pending; so does the CQ of a QP with an SRQ.
TEST_P(CloseTest, R049_R050_R205_SrqCloseWaitsForQps) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* cq = adapter_->CreateCq();
  NDK_SRQ* srq = adapter_->CreateSrq(pd);
  NDK_QP* a = adapter_->CreateQpWithSrq(pd, cq, cq, srq);
  NDK_QP* b = adapter_->CreateQpWithSrq(pd, cq, cq, srq);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(a, nullptr);
  CheckAntecedentClose(*adapter_, H(srq), {H(b), H(a)});
  NDK_SRQ* srq2 = adapter_->CreateSrq(pd);
  NDK_QP* c = adapter_->CreateQpWithSrq(pd, cq, cq, srq2);
  ASSERT_NE(c, nullptr);
  CheckAntecedentClose(*adapter_, H(cq), {H(c)});
}

// R049, R050 over two levels: PD -> SRQ -> QP, all closed antecedents first.
TEST_P(CloseTest, R049_R050_ChainClosedAntecedentsFirst) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* cq = adapter_->CreateCq();
  NDK_SRQ* srq = adapter_->CreateSrq(pd);
  NDK_QP* qp = adapter_->CreateQpWithSrq(pd, cq, cq, srq);
  ASSERT_NE(qp, nullptr);
  auto order = std::make_shared<std::vector<std::string>>();
  auto mutex = std::make_shared<std::mutex>();
  auto note = [order, mutex](const char* what) {
    return [order, mutex, what](Completion&) {
      std::lock_guard lock(*mutex);
      order->push_back(what);
    };
  };
  Completion* pd_close = adapter_->StartClose(pd, note("PD"));
  Completion* cq_close = adapter_->StartClose(cq, note("CQ"));
  Completion* srq_close = adapter_->StartClose(srq, note("SRQ"));
  ASSERT_NE(srq_close, nullptr);
  EXPECT_EQ(pd_close->call_status(), STATUS_PENDING) << "(R049)";
  EXPECT_EQ(cq_close->call_status(), STATUS_PENDING) << "(R049)";
  EXPECT_EQ(srq_close->call_status(), STATUS_PENDING) << "(R049)";
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(pd_close->entered() + cq_close->entered() + srq_close->entered(), 0) << "(R049)";
  adapter_->CloseAndWait(qp);
  for (Completion* c : {pd_close, cq_close, srq_close}) EXPECT_TRUE(c->WaitReturned()) << c->what();
  // The PD is the SRQ's antecedent: its close completes only after the SRQ's (R049, R050).
  EXPECT_GT(pd_close->enter_stamp(), srq_close->return_stamp()) << "(R050)";
  std::lock_guard lock(*mutex);
  ASSERT_EQ(order->size(), 3u);
  EXPECT_EQ(order->back(), "PD");
}

// R051: a pending antecedent close is a plain dereference: its successors keep working.
TEST_P(CloseTest, R051_PendingAntecedentCloseLeavesSuccessorsWorking) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* cq = adapter_->CreateCq();
  NDK_QP* qp = adapter_->CreateQp(pd, cq, cq);
  NDK_MR* mr = adapter_->CreateMr(pd, false);
  ASSERT_NE(qp, nullptr);
  ASSERT_NE(mr, nullptr);
  Completion* pd_close = adapter_->StartClose(pd);
  Completion* cq_close = adapter_->StartClose(cq);
  ASSERT_NE(cq_close, nullptr);
  EXPECT_EQ(pd_close->call_status(), STATUS_PENDING);
  EXPECT_EQ(cq_close->call_status(), STATUS_PENDING);

  EXPECT_EQ(qp->Dispatch->NdkReceive(qp, nullptr, nullptr, 0), STATUS_SUCCESS)
      << "QP of a closing PD/CQ stopped accepting receives (R051)";
  TestBuffer buffer;
  Requested reg = adapter_->Request("NdkRegisterMr (PD closing)",
                                    [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                                      return mr->Dispatch->NdkRegisterMr(
                                          mr, buffer.mdl(), buffer.length(),
                                          NDK_MR_FLAG_ALLOW_LOCAL_WRITE, cb, ctx);
                                    });
  EXPECT_EQ(reg.status, STATUS_SUCCESS) << StatusText(reg.status) << " (R051)";
  EXPECT_NE(mr->Dispatch->NdkGetLocalTokenFromMr(mr), 0u);
  adapter_->CloseAndWait(mr);
  adapter_->CloseAndWait(qp);  // flushes the receive into the closing CQ
  EXPECT_TRUE(pd_close->WaitReturned()) << "(R049)";
  EXPECT_TRUE(cq_close->WaitReturned()) << "(R049)";
}

// R052, R053, R054: SoftNdkCloseAdapter from another thread blocks while children are open,
// and returns only after the last close callback of a descendant has returned; afterwards
// no callback occurs.
TEST_P(CloseTest, R052_R053_R054_AdapterCloseBlocksUntilChildrenClosed) {
  ObjectSet set = adapter_->CreateAll();
  ASSERT_NE(set.pd, nullptr);
  ASSERT_NE(set.qp, nullptr);

  std::atomic<bool> adapter_closed{false};
  auto slow_done = std::make_shared<std::atomic<bool>>(false);
  std::atomic<bool> slow_done_at_return{false};
  NDK_ADAPTER* raw = adapter_->get();
  std::thread closer([&] {
    SoftNdkCloseAdapter(raw);
    slow_done_at_return = slow_done->load();
    adapter_closed = true;
  });
  std::this_thread::sleep_for(3 * kSettle);
  if (adapter_closed.load()) {
    closer.join();
    ADD_FAILURE() << "SoftNdkCloseAdapter returned while " << set.ChildrenFirst().size()
                  << " child objects were open (R054); the objects are leaked, not touched";
    adapter_->Abandon();
    return;
  }
  // Close the PD first: its close pends on its children and completes on its own later;
  // its close callback lingers so that an early adapter close would be seen (R053).
  Completion* pd_close = adapter_->StartClose(set.pd, [slow_done](Completion&) {
    std::this_thread::sleep_for(Millis(50));
    slow_done->store(true);
  });
  ASSERT_NE(pd_close, nullptr);
  EXPECT_EQ(pd_close->call_status(), STATUS_PENDING) << "(R049)";
  std::vector<Completion*> closes;
  for (NDK_OBJECT_HEADER* h : set.ChildrenFirst()) {
    if (h == H(set.pd)) continue;
    closes.push_back(adapter_->StartClose(h));
    std::this_thread::sleep_for(Millis(1));
    EXPECT_FALSE(adapter_closed.load() && !slow_done->load())
        << "SoftNdkCloseAdapter returned with children open (R054)";
  }
  auto deadline = Clock::now() + kWait;
  while (!adapter_closed.load() && Clock::now() < deadline) std::this_thread::sleep_for(Millis(1));
  if (!adapter_closed.load()) {
    closer.detach();
    ADD_FAILURE() << "SoftNdkCloseAdapter never returned after every child closed (R054)";
    adapter_->Abandon();
    return;
  }
  closer.join();
  EXPECT_TRUE(slow_done_at_return.load())
      << "SoftNdkCloseAdapter returned while a descendant's close callback was running (R053)";
  // R052: every callback has returned and none comes later.
  for (Completion* c : closes) EXPECT_TRUE(TestAdapter::CloseDone(c)) << c->what();
  EXPECT_TRUE(TestAdapter::CloseDone(pd_close));
  adapter_->MarkClosed();
  adapter_->VerifyCallbackCounts();
  std::this_thread::sleep_for(kSettle);
  adapter_->VerifyCallbackCounts();
}

// R052, R054: the adapter close also waits for a create callback that is still running.
TEST_P(CloseTest, R052_AdapterCloseWaitsForRunningCreateCallback) {
  TestAdapter* a = OpenAdapter();
  ASSERT_NE(a, nullptr);
  auto gate = std::make_shared<Gate>();
  auto finished = std::make_shared<std::atomic<bool>>(false);
  Created<NDK_PD> pd = a->RunCreate<NDK_PD>(
      "NdkCreatePd (callback held)", NdkObjectTypePd,
      [a](NDK_FN_CREATE_COMPLETION cb, PVOID ctx, NDK_PD** out) {
        return a->dispatch()->NdkCreatePd(a->get(), cb, ctx, out);
      },
      [gate, finished, a](Completion& c) {
        if (std::this_thread::get_id() != c.caller_thread()) {
          EXPECT_TRUE(gate->Wait());
          std::this_thread::sleep_for(Millis(20));
        }
        // Close the new PD right here, so that the adapter close has nothing to wait for
        // but this callback (R047, R056).
        a->StartClose(c.object());
        finished->store(true);
      },
      /*wait=*/false);
  if (pd.returned != STATUS_PENDING) {
    // Inline: nothing runs asynchronously; the adapter close returns once the PD is closed.
    if (pd.ok()) a->CloseAndWait(pd.object);
    EXPECT_TRUE(a->CloseAdapter());
    a->VerifyCallbackCounts();
    gate->Open();
    return;
  }
  std::atomic<bool> closed{false};
  std::atomic<bool> finished_at_return{false};
  NDK_ADAPTER* raw = a->get();
  std::thread closer([&] {
    SoftNdkCloseAdapter(raw);
    finished_at_return = finished->load();
    closed = true;
  });
  std::this_thread::sleep_for(kSettle);
  gate->Open();
  auto deadline = Clock::now() + kWait;
  while (!closed.load() && Clock::now() < deadline) std::this_thread::sleep_for(Millis(1));
  if (!closed.load()) {
    closer.detach();
    ADD_FAILURE() << "SoftNdkCloseAdapter never returned (R052)";
    a->Abandon();
    return;
  }
  closer.join();
  EXPECT_TRUE(finished_at_return.load())
      << "SoftNdkCloseAdapter returned while a create callback was running (R052)";
  a->MarkClosed();
  a->VerifyCallbackCounts();
}

// R040, R043, R044: a close does not complete while a request on the object is pending or its
// callback runs, and no request callback follows the close completion.
TEST_P(CloseTest, R040_R043_R044_CloseWaitsForRequestCallbacks) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* cq = adapter_->CreateCq();
  NDK_MR* mr = adapter_->CreateMr(pd, false);
  NDK_SRQ* srq = adapter_->CreateSrq(pd, 8, 2, 0);
  NDK_LISTENER* listener = adapter_->CreateListener();
  ASSERT_NE(listener, nullptr);
  ASSERT_NE(srq, nullptr);
  ASSERT_NE(mr, nullptr);
  TestBuffer buffer;
  SOCKADDR_INET address = adapter_->Address4(0);
  struct Case {
    NDK_OBJECT_HEADER* object;
    std::function<NTSTATUS(NDK_FN_REQUEST_COMPLETION, PVOID)> call;
  };
  const Case cases[] = {
      {H(cq), [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
         return cq->Dispatch->NdkResizeCq(cq, 40, cb, ctx);
       }},
      {H(mr), [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
         return mr->Dispatch->NdkRegisterMr(mr, buffer.mdl(), buffer.length(), 0, cb, ctx);
       }},
      {H(srq), [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
         return srq->Dispatch->NdkModifySrq(srq, 16, 0, cb, ctx);
       }},
      {H(listener), [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
         return listener->Dispatch->NdkListen(listener, reinterpret_cast<PSOCKADDR>(&address),
                                              sizeof(SOCKADDR_IN), cb, ctx);
       }},
  };
  for (const Case& k : cases) {
    const std::string name = SoftNdkObjectTypeName(k.object->ObjectType);
    SCOPED_TRACE(name);
    auto gate = std::make_shared<Gate>();
    Requested r = adapter_->Request("request on " + name, k.call, BlockOffCallerThread(gate),
                                    /*wait=*/false);
    Completion* close = adapter_->StartClose(k.object);
    ASSERT_NE(close, nullptr);
    if (r.returned == STATUS_PENDING && r.completion->returned() == 0) {
      // The request's callback has not returned yet: the close must pend (R040).
      EXPECT_EQ(close->call_status(), STATUS_PENDING)
          << "close of a " << name << " with a pending request completed at once (R040)";
      std::this_thread::sleep_for(kSettle);
      EXPECT_EQ(close->entered(), 0) << "(R040)";
    }
    gate->Open();
    if (r.returned == STATUS_PENDING) {
      EXPECT_TRUE(r.completion->WaitReturned()) << "(R058)";
    }
    EXPECT_TRUE(TestAdapter::WaitCloseDone(close)) << "(R039)";
    if (r.returned == STATUS_PENDING && close->call_status() == STATUS_PENDING) {
      // R043, R044: the close callback is the last one.
      EXPECT_GT(close->enter_stamp(), r.completion->return_stamp())
          << "close completion of a " << name << " before its request callback returned (R043/R040)";
    }
  }
}

// R041, R043, R044 with the one event callback the provider makes today without a
// connection (the SRQ notification of NdkModifySrq): the close waits for it, and nothing
// follows the close completion.
TEST_P(CloseTest, R043_R044_NoEventAfterCloseCompleted) {
  NDK_PD* pd = adapter_->CreatePd();
  ASSERT_NE(pd, nullptr);
  for (int round = 0; round < 8; ++round) {
    auto events = std::make_shared<EventCounter>();
    auto gate = std::make_shared<Gate>();
    if (round % 2 == 1) events->hook = [gate](NTSTATUS) { gate->Wait(); };
    NDK_SRQ* srq = adapter_->CreateSrq(pd, 8, 1, 0, events.get());
    ASSERT_NE(srq, nullptr);
    // Threshold 1 with nothing posted: the notification is due at once (R200).
    // Not waited for: its callback may be queued behind the (held) notification.
    Requested modify = adapter_->Request(
        "NdkModifySrq (arm)",
        [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
          return srq->Dispatch->NdkModifySrq(srq, 0, 1, cb, ctx);
        },
        {}, /*wait=*/false);
    Completion* close = adapter_->StartClose(srq);
    ASSERT_NE(close, nullptr);
    if (round % 2 == 1) {
      std::this_thread::sleep_for(Millis(5));
      if (events->count.load() == 1) {
        // The notification is running and blocked: the close cannot complete (R041).
        EXPECT_EQ(close->call_status(), STATUS_PENDING) << "(R041)";
        EXPECT_EQ(close->entered(), 0) << "(R041)";
      }
      gate->Open();
    }
    if (modify.returned == STATUS_PENDING) {
      ASSERT_TRUE(modify.completion->WaitReturned()) << "(R058)";
      modify.status = modify.completion->status();
    }
    EXPECT_EQ(modify.status, STATUS_SUCCESS) << StatusText(modify.status);
    ASSERT_TRUE(TestAdapter::WaitCloseDone(close));
    int at_close = events->count.load();
    EXPECT_LE(at_close, 1) << "one notification per arm (R201)";
    if (at_close == 1 && close->call_status() == STATUS_PENDING) {
      EXPECT_LT(events->last_stamp.load(), close->enter_stamp())
          << "SRQ notification after its close completion (R043/R044)";
    }
    std::this_thread::sleep_for(Millis(5));
    EXPECT_EQ(events->count.load(), at_close)
        << "SRQ notification after the SRQ's close completed (R043)";
    // Keep the counter alive until the adapter is closed (the provider might still call).
    static std::mutex keep_mutex;
    static std::vector<std::shared_ptr<EventCounter>> keep;
    std::lock_guard lock(keep_mutex);
    keep.push_back(events);
  }
}

// R042: a close starts the flush of the object's pending requests and finishes without
// further consumer action: receives posted on a QP complete with STATUS_CANCELLED.
TEST_P(CloseTest, R042_QpCloseFlushesPostedReceives) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* rcq = adapter_->CreateCq(16);
  NDK_CQ* icq = adapter_->CreateCq(16);
  int qp_context = 0;
  NDK_QP* qp = adapter_->CreateQp(pd, rcq, icq, QpShape{}, &qp_context);
  ASSERT_NE(qp, nullptr);
  int contexts[3];
  for (int& c : contexts)
    EXPECT_EQ(qp->Dispatch->NdkReceive(qp, &c, nullptr, 0), STATUS_SUCCESS) << "(R078)";
  adapter_->CloseAndWait(qp);
  NDK_RESULT results[8];
  ULONG n = rcq->Dispatch->NdkGetCqResults(rcq, results, 8);
  ASSERT_EQ(n, 3u) << "closing the QP did not flush its posted receives (R042)";
  for (ULONG i = 0; i < n; ++i) {
    EXPECT_EQ(results[i].Status, STATUS_CANCELLED) << "(R042)";
    EXPECT_EQ(results[i].RequestContext, &contexts[i]);
    EXPECT_EQ(results[i].QPContext, &qp_context);
  }
  EXPECT_EQ(icq->Dispatch->NdkGetCqResults(icq, results, 8), 0u);
}

// R046: using an object after its close was requested (and before it completed) returns an
// error and never crashes; so does a second close.
TEST_P(CloseTest, R046_UseAfterCloseRequestedFailsCleanly) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* cq = adapter_->CreateCq();
  NDK_SRQ* srq = adapter_->CreateSrq(pd);
  NDK_QP* qp = adapter_->CreateQpWithSrq(pd, cq, cq, srq);
  NDK_CQ* other_cq = adapter_->CreateCq();
  ASSERT_NE(qp, nullptr);
  ASSERT_NE(other_cq, nullptr);
  // Every one of these stays pending because the QP is open (R049).
  Completion* pd_close = adapter_->StartClose(pd);
  Completion* cq_close = adapter_->StartClose(cq);
  Completion* srq_close = adapter_->StartClose(srq);
  ASSERT_NE(srq_close, nullptr);
  ASSERT_EQ(pd_close->call_status(), STATUS_PENDING);
  ASSERT_EQ(cq_close->call_status(), STATUS_PENDING);
  ASSERT_EQ(srq_close->call_status(), STATUS_PENDING);

  auto expect_failed = [](NTSTATUS returned, NTSTATUS final_status, const char* what) {
    EXPECT_FALSE(NT_SUCCESS(final_status))
        << what << " on a closing object returned " << StatusText(returned) << " / final "
        << StatusText(final_status) << " (R046)";
  };
  // PD: every create fails.
  Created<NDK_MR> mr = adapter_->TryCreateMr(pd, false);
  expect_failed(mr.returned, mr.status, "NdkCreateMr");
  Created<NDK_MW> mw = adapter_->TryCreateMw(pd);
  expect_failed(mw.returned, mw.status, "NdkCreateMw");
  Created<NDK_SRQ> srq2 = adapter_->TryCreateSrq(pd, 4, 1, 0);
  expect_failed(srq2.returned, srq2.status, "NdkCreateSrq");
  Created<NDK_QP> qp2 = adapter_->TryCreateQp(pd, other_cq, other_cq);
  expect_failed(qp2.returned, qp2.status, "NdkCreateQp on a closing PD");
  // CQ: a QP cannot be created on it; resize and moderation fail; arm/poll do not crash.
  NDK_PD* pd2 = adapter_->CreatePd();
  ASSERT_NE(pd2, nullptr);
  Created<NDK_QP> qp3 = adapter_->TryCreateQp(pd2, cq, other_cq);
  expect_failed(qp3.returned, qp3.status, "NdkCreateQp on a closing CQ");
  Requested resize = adapter_->Request("NdkResizeCq (closing)",
                                       [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                                         return cq->Dispatch->NdkResizeCq(cq, 32, cb, ctx);
                                       });
  expect_failed(resize.returned, resize.status, "NdkResizeCq");
  NTSTATUS moderation = cq->Dispatch->NdkControlCqInterruptModeration(cq, 10, 2);
  expect_failed(moderation, moderation, "NdkControlCqInterruptModeration");
  cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ANY);
  NDK_RESULT results[2];
  EXPECT_EQ(cq->Dispatch->NdkGetCqResults(cq, results, 2), 0u);
  // SRQ: modify and receive fail; a QP cannot be created on it.
  Requested modify = adapter_->Request("NdkModifySrq (closing)",
                                       [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                                         return srq->Dispatch->NdkModifySrq(srq, 16, 0, cb, ctx);
                                       });
  expect_failed(modify.returned, modify.status, "NdkModifySrq");
  NTSTATUS receive = srq->Dispatch->NdkSrqReceive(srq, nullptr, nullptr, 0);
  expect_failed(receive, receive, "NdkSrqReceive");
  Created<NDK_QP> qp4 = adapter_->TryCreateQpWithSrq(pd2, other_cq, other_cq, srq);
  expect_failed(qp4.returned, qp4.status, "NdkCreateQpWithSrq on a closing SRQ");
  // A second close of a closing object fails and never calls back.
  for (NDK_OBJECT_HEADER* h : {H(pd), H(cq), H(srq)}) {
    Completion& c = adapter_->NewCompletion(Completion::Kind::kClose, "second close");
    c.BeginCall();
    NTSTATUS again = CloseFunctionOf(h)(h, &Completion::OnClose, c.context());
    c.EndCall(again);
    c.set_expected(0);
    EXPECT_FALSE(again == STATUS_SUCCESS || again == STATUS_PENDING)
        << "second close of a closing " << SoftNdkObjectTypeName(h->ObjectType) << " returned "
        << StatusText(again) << " (R046)";
  }
  adapter_->CloseAndWait(qp);
  for (Completion* c : {pd_close, cq_close, srq_close}) EXPECT_TRUE(c->WaitReturned()) << c->what();
}

// R046 for objects whose close pends only while a request callback is outstanding (MR,
// listener): needs the provider thread to hold that callback.
TEST_P(CloseTest, R046_UseWhileCloseWaitsForRequest) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_MR* mr = adapter_->CreateMr(pd, false);
  NDK_LISTENER* listener = adapter_->CreateListener();
  ASSERT_NE(mr, nullptr);
  ASSERT_NE(listener, nullptr);
  TestBuffer buffer;
  SOCKADDR_INET address = adapter_->Address4(0);
  ProviderThreadBlocker blocker(*adapter_);
  Requested reg = adapter_->Request(
      "NdkRegisterMr", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return mr->Dispatch->NdkRegisterMr(mr, buffer.mdl(), buffer.length(), 0, cb, ctx);
      }, {}, /*wait=*/false);
  Requested listen = adapter_->Request(
      "NdkListen", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return listener->Dispatch->NdkListen(listener, reinterpret_cast<PSOCKADDR>(&address),
                                             sizeof(SOCKADDR_IN), cb, ctx);
      }, {}, /*wait=*/false);
  // With the provider thread held, a pending request's callback is queued and keeps its
  // object's close pending; then the object may be used (wrongly) while closing.
  const bool reg_held = blocker.Active() && reg.returned == STATUS_PENDING &&
                        reg.completion->entered() == 0;
  const bool listen_held = blocker.Active() && listen.returned == STATUS_PENDING &&
                           listen.completion->entered() == 0;
  Completion* mr_close = adapter_->StartClose(mr);
  Completion* listener_close = adapter_->StartClose(listener);
  ASSERT_NE(mr_close, nullptr);
  ASSERT_NE(listener_close, nullptr);
  if (reg_held) {
    EXPECT_EQ(mr_close->call_status(), STATUS_PENDING) << "(R040)";
    Requested again = adapter_->Request(
        "NdkRegisterMr (closing)", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
          return mr->Dispatch->NdkRegisterMr(mr, buffer.mdl(), buffer.length(), 0, cb, ctx);
        }, {}, /*wait=*/false);
    EXPECT_FALSE(NT_SUCCESS(again.returned)) << StatusText(again.returned) << " (R046)";
    Requested dereg = adapter_->Request(
        "NdkDeregisterMr (closing)", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
          return mr->Dispatch->NdkDeregisterMr(mr, cb, ctx);
        }, {}, /*wait=*/false);
    EXPECT_FALSE(NT_SUCCESS(dereg.returned)) << StatusText(dereg.returned) << " (R046)";
    (void)mr->Dispatch->NdkGetLocalTokenFromMr(mr);
    (void)mr->Dispatch->NdkGetRemoteTokenFromMr(mr);
  }
  if (listen_held) {
    EXPECT_EQ(listener_close->call_status(), STATUS_PENDING) << "(R040)";
    SOCKADDR_INET other = adapter_->Address6(0);
    Requested again = adapter_->Request(
        "NdkListen (closing)", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
          return listener->Dispatch->NdkListen(listener, reinterpret_cast<PSOCKADDR>(&other),
                                               sizeof(SOCKADDR_IN6), cb, ctx);
        }, {}, /*wait=*/false);
    EXPECT_FALSE(NT_SUCCESS(again.returned)) << StatusText(again.returned) << " (R046)";
    listener->Dispatch->NdkControlConnectEvents(listener, TRUE);
  }
  blocker.Release();
  EXPECT_TRUE(TestAdapter::WaitCloseDone(mr_close));
  EXPECT_TRUE(TestAdapter::WaitCloseDone(listener_close));
}

// R055: the provider may assert when a consumer closes an adapter from inside a callback;
// SoftNDK does (it would otherwise wait for that very callback).
TEST_P(CloseTest, R055_AdapterCloseInsideCallbackIsFatal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto scenario = [&] {
    NDK_PD* pd = adapter_->CreatePd();
    NDK_MR* mr = adapter_->CreateMr(pd, false);
    NDK_ADAPTER* raw = adapter_->get();
    // The PD's close pends on the MR, so its callback runs when the MR closes.
    adapter_->StartClose(pd, [raw](Completion&) { SoftNdkCloseAdapter(raw); });
    adapter_->StartClose(mr);
    std::this_thread::sleep_for(kWait);
  };
  // The provider's diagnostic names the misuse ("... from inside an NDK callback ...").
  EXPECT_DEATH(scenario(), "callback");
}

// R056: closes of every type are non-blocking and may be issued from inside callbacks (a
// create callback, a request callback, another object's close callback).
TEST_P(CloseTest, R056_ClosesFromInsideCallbacks) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* cq = adapter_->CreateCq();
  ASSERT_NE(pd, nullptr);
  ASSERT_NE(cq, nullptr);
  TestAdapter* a = adapter_;
  auto close_self = [a](Completion& c) {
    if (NT_SUCCESS(c.status()) && c.object() != nullptr) {
      auto start = Clock::now();
      a->StartClose(c.object());
      EXPECT_LT(Clock::now() - start, kBoundedCall) << "close inside a callback blocked (R056)";
    }
  };
  // Created objects closed from their own create callback (when one is made).
  std::vector<Completion*> creates;
  creates.push_back(a->TryCreateCq(8, nullptr, nullptr, close_self).completion);
  creates.push_back(a->TryCreatePd(close_self).completion);
  creates.push_back(a->TryCreateConnector(close_self).completion);
  creates.push_back(a->TryCreateListener(nullptr, close_self).completion);
  creates.push_back(a->TryCreateSharedEndpoint(a->Address6(0), close_self).completion);
  creates.push_back(a->TryCreateMr(pd, false, close_self).completion);
  creates.push_back(a->TryCreateMr(pd, true, close_self).completion);
  creates.push_back(a->TryCreateMw(pd, close_self).completion);
  creates.push_back(a->TryCreateSrq(pd, 4, 1, 0, nullptr, nullptr, close_self).completion);
  creates.push_back(a->TryCreateQp(pd, cq, cq, QpShape{}, nullptr, close_self).completion);
  // Objects closed from another object's close callback: the QP's close callback closes
  // the CQ it used, then the SRQ.
  NDK_CQ* cq2 = a->CreateCq();
  NDK_SRQ* srq = a->CreateSrq(pd);
  NDK_QP* qp = a->CreateQpWithSrq(pd, cq2, cq2, srq);
  ASSERT_NE(qp, nullptr);
  Completion* qp_close = a->StartClose(qp, [a, cq2, srq](Completion&) {
    a->StartClose(cq2);
    a->StartClose(srq);
  });
  ASSERT_TRUE(TestAdapter::WaitCloseDone(qp_close));
  if (qp_close->call_status() == STATUS_SUCCESS) {  // no callback: close them here
    a->StartClose(cq2);
    a->StartClose(srq);
  }
  // Whatever was created inline is still open: close it now.
  for (Completion* c : creates) {
    ASSERT_NE(c, nullptr);
    if (c->call_status() == STATUS_PENDING) {
      EXPECT_TRUE(c->WaitReturned());
    }
  }
  a->CloseEverything();
  EXPECT_EQ(a->OpenObjects(), 0u);
}

SOFTNDK_INSTANTIATE_CONFORMANCE(CloseTest);

}  // namespace
}  // namespace conformance
