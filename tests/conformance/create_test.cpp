// §5.B: object creation and the create-completion callback (R014-R036).
#include <arpa/inet.h>

#include <set>

#include "harness.hpp"

namespace conformance {
namespace {

class CreateTest : public ConformanceTest {
 protected:
  // Sets tunables (limits) and opens an adapter that reports and enforces them.
  TestAdapter* OpenWith(std::initializer_list<std::pair<const char*, const char*>> tunables) {
    for (const auto& [name, value] : tunables) {
      NTSTATUS status = SoftNdkSetTunable(name, value);
      EXPECT_EQ(status, STATUS_SUCCESS) << name << "=" << value;
    }
    return OpenAdapter();
  }
};

// R014-R018, R021-R024 for every create (the helpers check the contract on each call): every
// object type is created in this mode; a pending create hands the object over only through
// its callback, with the caller's context, and never writes the out-parameter.
TEST_P(CreateTest, R014_R015_R016_R017_R018_EveryCreateHonoursTheContract) {
  int pending = 0, inline_done = 0;
  for (int round = 0; round < 4; ++round) {
    ObjectSet set = adapter_->CreateAll();
    ASSERT_EQ(set.ChildrenFirst().size(), 12u);
    adapter_->CloseAll(set);
  }
  // Count how this mode delivered them (from the recorders the helpers made).
  for (int i = 0; i < 10; ++i) {
    Created<NDK_CONNECTOR> c = adapter_->TryCreateConnector();
    ASSERT_TRUE(c.ok());
    EXPECT_FALSE(c.completion->wrong_context()) << "(R015)";
    if (c.returned == STATUS_PENDING) {
      ++pending;
      EXPECT_EQ(c.completion->entered(), 1) << "(R015)";
      EXPECT_EQ(H(c.object), c.completion->object()) << "(R018)";
    } else {
      ++inline_done;
      EXPECT_EQ(c.returned, STATUS_SUCCESS) << "(R014)";
    }
    adapter_->CloseAndWait(c.object);
  }
  if (mode() == SOFTNDK_COMPLETION_INLINE) {
    EXPECT_EQ(pending, 0);
  } else if (mode() != SOFTNDK_COMPLETION_MIXED) {
    EXPECT_EQ(inline_done, 0);
  }
}

// R019, R030: an injected STATUS_INSUFFICIENT_RESOURCES reaches the consumer for every create
// function — inline in inline mode, otherwise through the callback with pNdkObject NULL — and
// leaves nothing behind that would have to be closed.
TEST_P(CreateTest, R019_R030_InjectedCreateFailureForEveryCreate) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* cq = adapter_->CreateCq();
  NDK_SRQ* srq = adapter_->CreateSrq(pd);
  ASSERT_NE(srq, nullptr);
  ASSERT_NE(cq, nullptr);
  TestAdapter* a = adapter_;
  using Try = std::function<std::pair<NTSTATUS, NTSTATUS>()>;  // (returned, final)
  auto pack = [](auto created) { return std::make_pair(created.returned, created.status); };
  const std::pair<const char*, Try> creates[] = {
      {"NdkCreateCq", [&] { return pack(a->TryCreateCq(8)); }},
      {"NdkCreatePd", [&] { return pack(a->TryCreatePd()); }},
      {"NdkCreateSharedEndpoint", [&] { return pack(a->TryCreateSharedEndpoint(a->Address4(0))); }},
      {"NdkCreateConnector", [&] { return pack(a->TryCreateConnector()); }},
      {"NdkCreateListener", [&] { return pack(a->TryCreateListener()); }},
      {"NdkCreateMr", [&] { return pack(a->TryCreateMr(pd, false)); }},
      {"NdkCreateMr(fast)", [&] { return pack(a->TryCreateMr(pd, true)); }},
      {"NdkCreateMw", [&] { return pack(a->TryCreateMw(pd)); }},
      {"NdkCreateSrq", [&] { return pack(a->TryCreateSrq(pd, 4, 1, 0)); }},
      {"NdkCreateQp", [&] { return pack(a->TryCreateQp(pd, cq, cq)); }},
      {"NdkCreateQpWithSrq", [&] { return pack(a->TryCreateQpWithSrq(pd, cq, cq, srq)); }},
  };
  for (const auto& [what, create] : creates) {
    SCOPED_TRACE(what);
    size_t open_before = a->OpenObjects();
    ASSERT_EQ(SoftNdkInjectFault(a->get(), SOFTNDK_FAULT_CREATE, STATUS_INSUFFICIENT_RESOURCES, 1),
              STATUS_SUCCESS);
    auto [returned, final_status] = create();
    EXPECT_EQ(final_status, STATUS_INSUFFICIENT_RESOURCES) << StatusText(final_status) << " (R030)";
    if (mode() == SOFTNDK_COMPLETION_INLINE) {
      EXPECT_EQ(returned, STATUS_INSUFFICIENT_RESOURCES) << "inline mode (R030)";
    } else if (mode() != SOFTNDK_COMPLETION_MIXED) {
      EXPECT_EQ(returned, STATUS_PENDING) << "asynchronous mode (R019/R030)";
    }
    EXPECT_EQ(a->OpenObjects(), open_before) << "a failed create handed over an object (R019)";
    // The fault was one-shot: the same create now succeeds.
    auto [again, again_final] = create();
    EXPECT_EQ(again_final, STATUS_SUCCESS) << StatusText(again_final);
    (void)again;
  }
}

// R019: after a failed create nothing exists — the parent has no hidden child (its close
// completes), and an address the failed create would have taken is still free.
TEST_P(CreateTest, R019_FailedCreateLeavesNothingBehind) {
  NDK_PD* pd = adapter_->CreatePd();
  ASSERT_NE(pd, nullptr);
  for (bool fast : {false, true}) {
    ASSERT_EQ(SoftNdkInjectFault(adapter_->get(), SOFTNDK_FAULT_CREATE,
                                 STATUS_INSUFFICIENT_RESOURCES, 1),
              STATUS_SUCCESS);
    EXPECT_FALSE(adapter_->TryCreateMr(pd, fast).ok());
  }
  ASSERT_EQ(SoftNdkInjectFault(adapter_->get(), SOFTNDK_FAULT_CREATE,
                               STATUS_INSUFFICIENT_RESOURCES, 1),
            STATUS_SUCCESS);
  EXPECT_FALSE(adapter_->TryCreateMw(pd).ok());
  Completion* close = adapter_->StartClose(pd);
  EXPECT_TRUE(TestAdapter::WaitCloseDone(close))
      << "the PD's close waits for a child whose create failed (R019)";

  // A shared endpoint whose create failed does not hold its address.
  const SOCKADDR_INET address = adapter_->Address4(4791);
  ASSERT_EQ(SoftNdkInjectFault(adapter_->get(), SOFTNDK_FAULT_CREATE,
                               STATUS_INSUFFICIENT_RESOURCES, 1),
            STATUS_SUCCESS);
  Created<NDK_SHARED_ENDPOINT> failed = adapter_->TryCreateSharedEndpoint(address);
  EXPECT_EQ(failed.status, STATUS_INSUFFICIENT_RESOURCES);
  Created<NDK_SHARED_ENDPOINT> retry = adapter_->TryCreateSharedEndpoint(address);
  EXPECT_EQ(retry.status, STATUS_SUCCESS)
      << "a shared endpoint whose create failed still holds its address:port: retry got "
      << StatusText(retry.status) << " (R019)";
}

// R020: a handed-over object is ready at once, including inside its create callback: every
// function of its table (and of the objects it needs) may be called there.
TEST_P(CreateTest, R020_ObjectUsableInsideCreateCallback) {
  TestAdapter* a = adapter_;
  ObjectSet base = a->CreateAll();
  ASSERT_NE(base.pd, nullptr);
  auto used = std::make_shared<std::atomic<int>>(0);
  // Each hook exercises the new object alone (plus the base set's objects it needs).
  auto exercise = [a, base, used](auto build) {
    return [a, base, used, build](Completion& c) {
      if (!NT_SUCCESS(c.status()) || c.object() == nullptr) return;
      ObjectSet only = build(c.object(), base);
      Exercise(*a, only);
      used->fetch_add(1);
    };
  };
  auto as = [](NDK_OBJECT_HEADER* h, auto* type) { return reinterpret_cast<decltype(type)>(h); };
  std::vector<Created<NDK_CQ>> cqs;
  int expected_hooks = 0;
  auto count = [&](NTSTATUS returned) {
    if (returned == STATUS_PENDING) ++expected_hooks;
  };
  auto after_inline = [&](NDK_OBJECT_HEADER* h, ObjectSet only) {
    (void)h;
    Exercise(*a, only);
  };
  {
    auto build = [as](NDK_OBJECT_HEADER* h, const ObjectSet&) {
      ObjectSet s;
      s.cq = as(h, s.cq);
      return s;
    };
    Created<NDK_CQ> c = a->TryCreateCq(8, nullptr, nullptr, exercise(build));
    count(c.returned);
    if (c.returned == STATUS_SUCCESS) after_inline(H(c.object), build(H(c.object), base));
  }
  {
    auto build = [as](NDK_OBJECT_HEADER* h, const ObjectSet&) {
      ObjectSet s;
      s.pd = as(h, s.pd);
      return s;
    };
    Created<NDK_PD> c = a->TryCreatePd(exercise(build));
    count(c.returned);
    if (c.returned == STATUS_SUCCESS) after_inline(H(c.object), build(H(c.object), base));
  }
  {
    auto build = [as](NDK_OBJECT_HEADER* h, const ObjectSet&) {
      ObjectSet s;
      s.mr = as(h, s.mr);
      return s;
    };
    Created<NDK_MR> c = a->TryCreateMr(base.pd, false, exercise(build));
    count(c.returned);
    if (c.returned == STATUS_SUCCESS) after_inline(H(c.object), build(H(c.object), base));
  }
  {
    auto build = [as](NDK_OBJECT_HEADER* h, const ObjectSet& b) {
      ObjectSet s;
      s.mw = as(h, s.mw);
      s.mr = b.mr;
      return s;
    };
    Created<NDK_MW> c = a->TryCreateMw(base.pd, exercise(build));
    count(c.returned);
    if (c.returned == STATUS_SUCCESS) after_inline(H(c.object), build(H(c.object), base));
  }
  {
    auto build = [as](NDK_OBJECT_HEADER* h, const ObjectSet&) {
      ObjectSet s;
      s.srq = as(h, s.srq);
      return s;
    };
    Created<NDK_SRQ> c = a->TryCreateSrq(base.pd, 8, 2, 0, nullptr, nullptr, exercise(build));
    count(c.returned);
    if (c.returned == STATUS_SUCCESS) after_inline(H(c.object), build(H(c.object), base));
  }
  {
    auto build = [as](NDK_OBJECT_HEADER* h, const ObjectSet& b) {
      ObjectSet s;
      s.qp = as(h, s.qp);
      s.mr = b.mr;
      s.mw = b.mw;
      s.mr_fast = b.mr_fast;
      return s;
    };
    // The QP gets CQs of its own so that draining them does not race other hooks.
    NDK_CQ* cq = a->CreateCq(32);
    Created<NDK_QP> c = a->TryCreateQp(base.pd, cq, cq, QpShape{}, nullptr, exercise(build));
    count(c.returned);
    if (c.returned == STATUS_SUCCESS) after_inline(H(c.object), build(H(c.object), base));
  }
  {
    auto build = [as](NDK_OBJECT_HEADER* h, const ObjectSet&) {
      ObjectSet s;
      s.connector = as(h, s.connector);
      return s;
    };
    Created<NDK_CONNECTOR> c = a->TryCreateConnector(exercise(build));
    count(c.returned);
    if (c.returned == STATUS_SUCCESS) after_inline(H(c.object), build(H(c.object), base));
  }
  {
    auto build = [as](NDK_OBJECT_HEADER* h, const ObjectSet&) {
      ObjectSet s;
      s.listener = as(h, s.listener);
      return s;
    };
    Created<NDK_LISTENER> c = a->TryCreateListener(nullptr, exercise(build));
    count(c.returned);
    if (c.returned == STATUS_SUCCESS) after_inline(H(c.object), build(H(c.object), base));
  }
  {
    auto build = [as](NDK_OBJECT_HEADER* h, const ObjectSet&) {
      ObjectSet s;
      s.endpoint = as(h, s.endpoint);
      return s;
    };
    Created<NDK_SHARED_ENDPOINT> c =
        a->TryCreateSharedEndpoint(a->Address6(0), exercise(build));
    count(c.returned);
    if (c.returned == STATUS_SUCCESS) after_inline(H(c.object), build(H(c.object), base));
  }
  EXPECT_EQ(used->load(), expected_hooks);
  // Listen inside the listener's own create callback, and create children of a PD inside
  // the PD's create callback (nested creates complete on their own).
  auto nested = std::make_shared<std::atomic<int>>(0);
  Created<NDK_PD> pd = a->TryCreatePd([a, nested](Completion& c) {
    auto* pd = reinterpret_cast<NDK_PD*>(c.object());
    Created<NDK_MR> mr = a->TryCreateMr(pd, false);
    Created<NDK_MW> mw = a->TryCreateMw(pd);
    EXPECT_TRUE(mr.returned == STATUS_SUCCESS || mr.returned == STATUS_PENDING)
        << StatusText(mr.returned) << " (R020)";
    EXPECT_TRUE(mw.returned == STATUS_SUCCESS || mw.returned == STATUS_PENDING)
        << StatusText(mw.returned) << " (R020)";
    nested->fetch_add(1);
  });
  ASSERT_TRUE(pd.ok());
  SOCKADDR_INET address = a->Address4(0);
  Created<NDK_LISTENER> listener = a->TryCreateListener(nullptr, [a, address](Completion& c) {
    auto* l = reinterpret_cast<NDK_LISTENER*>(c.object());
    SOCKADDR_INET copy = address;
    Requested r = a->Request("NdkListen (in create callback)",
                             [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                               return l->Dispatch->NdkListen(l, reinterpret_cast<PSOCKADDR>(&copy),
                                                             sizeof(SOCKADDR_IN), cb, ctx);
                             });
    EXPECT_TRUE(r.returned == STATUS_SUCCESS || r.returned == STATUS_PENDING)
        << StatusText(r.returned) << " (R020)";
  });
  ASSERT_TRUE(listener.ok());
}

// R023: NdkReserved is the consumer's: zero at hand-over (checked on every create) and never
// written by the provider afterwards, whatever the object goes through, until its close has
// completed — also on the adapter itself.
TEST_P(CreateTest, R023_NdkReservedIsPreserved) {
  TestAdapter* a = adapter_;
  ObjectSet set = a->CreateAll();
  ASSERT_NE(set.pd, nullptr);
  std::vector<NDK_OBJECT_HEADER*> all = set.ChildrenFirst();
  all.push_back(&a->get()->Header);
  auto pattern = [](NDK_OBJECT_HEADER* h, int i) {
    return reinterpret_cast<PVOID>(reinterpret_cast<uintptr_t>(h) ^ (0xA5A5A5A500000000ULL + i));
  };
  for (NDK_OBJECT_HEADER* h : all)
    for (int i = 0; i < 4; ++i) h->NdkReserved.rf[i] = pattern(h, i);
  auto check = [&](NDK_OBJECT_HEADER* h, const char* when) {
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ(h->NdkReserved.rf[i], pattern(h, i))
          << SoftNdkObjectTypeName(h->ObjectType) << " NdkReserved[" << i << "] changed " << when
          << " (R023)";
  };
  // Everything a consumer does with the objects.
  Exercise(*a, set);
  TestBuffer buffer;
  Requested reg = a->Request("NdkRegisterMr", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return set.mr->Dispatch->NdkRegisterMr(set.mr, buffer.mdl(), buffer.length(),
                                           NDK_MR_FLAG_ALLOW_LOCAL_WRITE, cb, ctx);
  });
  EXPECT_EQ(reg.status, STATUS_SUCCESS);
  Requested init = a->Request("NdkInitializeFastRegisterMr",
                              [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                                return set.mr_fast->Dispatch->NdkInitializeFastRegisterMr(
                                    set.mr_fast, 2, TRUE, cb, ctx);
                              });
  EXPECT_EQ(init.status, STATUS_SUCCESS);
  SOCKADDR_INET address = a->Address4(0);
  Requested listen = a->Request("NdkListen", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return set.listener->Dispatch->NdkListen(set.listener, reinterpret_cast<PSOCKADDR>(&address),
                                             sizeof(SOCKADDR_IN), cb, ctx);
  });
  EXPECT_EQ(listen.status, STATUS_SUCCESS);
  NDK_MR* child = a->CreateMr(set.pd, false);  // the PD gets a child
  Exercise(*a, set);
  for (NDK_OBJECT_HEADER* h : all) check(h, "while in use");
  // A PD whose close pends (children open) still has the consumer's data.
  Completion* pd_close = a->StartClose(set.pd);
  ASSERT_NE(pd_close, nullptr);
  EXPECT_EQ(pd_close->call_status(), STATUS_PENDING);
  check(H(set.pd), "after its close was requested");
  a->CloseAndWait(child);
  for (NDK_OBJECT_HEADER* h : set.ChildrenFirst()) {
    if (h == H(set.pd)) continue;
    check(h, "before its close");
    a->CloseAndWait(h);
  }
  EXPECT_TRUE(TestAdapter::WaitCloseDone(pd_close));
  check(&a->get()->Header, "after every child closed");
}

// A table whose every entry aborts with a message: what R025 installs in place of Dispatch.
[[noreturn]] void DispatchTrap() {
  std::fprintf(stderr, "conformance: the provider called through an overwritten Dispatch (R025)\n");
  std::abort();
}
using AnyFn = void (*)();
const AnyFn kTrapTable[16] = {DispatchTrap, DispatchTrap, DispatchTrap, DispatchTrap,
                              DispatchTrap, DispatchTrap, DispatchTrap, DispatchTrap,
                              DispatchTrap, DispatchTrap, DispatchTrap, DispatchTrap,
                              DispatchTrap, DispatchTrap, DispatchTrap, DispatchTrap};

// R025: the provider never reads Dispatch after hand-over. With every object's Dispatch
// (and the adapter's) overwritten, calls through function pointers fetched earlier, the
// callbacks and the closes all work.
TEST_P(CreateTest, R025_OverwrittenDispatchIsNeverRead) {
  TestAdapter* a = adapter_;
  ObjectSet set = a->CreateAll();
  ASSERT_NE(set.pd, nullptr);
  ASSERT_NE(set.qp, nullptr);
  // The tables, saved before the overwrite.
  const NDK_ADAPTER_DISPATCH adapter_table = *a->dispatch();
  const NDK_CQ_DISPATCH cq_table = *set.cq->Dispatch;
  const NDK_PD_DISPATCH pd_table = *set.pd->Dispatch;
  const NDK_MR_DISPATCH mr_table = *set.mr->Dispatch;
  const NDK_SRQ_DISPATCH srq_table = *set.srq->Dispatch;
  const NDK_QP_DISPATCH qp_table = *set.qp->Dispatch;
  const NDK_LISTENER_DISPATCH listener_table = *set.listener->Dispatch;
  const NDK_SHARED_ENDPOINT_DISPATCH endpoint_table = *set.endpoint->Dispatch;
  NDK_ADAPTER* adapter = a->get();
  const NDK_ADAPTER_DISPATCH* original_adapter_dispatch = adapter->Dispatch;
  for (NDK_OBJECT_HEADER* h : set.ChildrenFirst()) {
    const void* trap = kTrapTable;
    std::memcpy(reinterpret_cast<unsigned char*>(h) + offsetof(NDK_CQ, Dispatch), &trap,
                sizeof(trap));
  }
  adapter->Dispatch = reinterpret_cast<const NDK_ADAPTER_DISPATCH*>(kTrapTable);

  // Requests, creates and plain calls through the saved pointers.
  Requested resize = a->Request("NdkResizeCq", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return cq_table.NdkResizeCq(set.cq, 64, cb, ctx);
  });
  EXPECT_EQ(resize.status, STATUS_SUCCESS) << "(R025)";
  TestBuffer buffer;
  Requested reg = a->Request("NdkRegisterMr", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return mr_table.NdkRegisterMr(set.mr, buffer.mdl(), buffer.length(), 0, cb, ctx);
  });
  EXPECT_EQ(reg.status, STATUS_SUCCESS) << "(R025)";
  EXPECT_NE(mr_table.NdkGetLocalTokenFromMr(set.mr), 0u);
  Requested modify = a->Request("NdkModifySrq", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return srq_table.NdkModifySrq(set.srq, 16, 0, cb, ctx);
  });
  EXPECT_EQ(modify.status, STATUS_SUCCESS) << "(R025)";
  EXPECT_EQ(qp_table.NdkReceive(set.qp, nullptr, nullptr, 0), STATUS_SUCCESS) << "(R025)";
  qp_table.NdkFlush(set.qp);
  NDK_RESULT results[4];
  EXPECT_EQ(cq_table.NdkGetCqResults(set.cq2, results, 4), 0u);
  EXPECT_EQ(cq_table.NdkGetCqResults(set.cq, results, 4), 1u) << "flushed receive (R025)";
  SOCKADDR_INET address = a->Address6(0);
  Requested listen = a->Request("NdkListen", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return listener_table.NdkListen(set.listener, reinterpret_cast<PSOCKADDR>(&address),
                                    sizeof(SOCKADDR_IN6), cb, ctx);
  });
  EXPECT_EQ(listen.status, STATUS_SUCCESS) << "(R025)";
  SOCKADDR_STORAGE local;
  ULONG length = sizeof(local);
  EXPECT_EQ(endpoint_table.NdkGetLocalAddress(set.endpoint, reinterpret_cast<PSOCKADDR>(&local),
                                              &length),
            STATUS_SUCCESS);
  Created<NDK_MR> child = a->RunCreate<NDK_MR>(
      "NdkCreateMr (saved table)", NdkObjectTypeMr,
      [&](NDK_FN_CREATE_COMPLETION cb, PVOID ctx, NDK_MR** out) {
        return pd_table.NdkCreateMr(set.pd, FALSE, cb, ctx, out);
      });
  EXPECT_TRUE(child.ok()) << "(R025)";
  Created<NDK_CQ> cq = a->RunCreate<NDK_CQ>(
      "NdkCreateCq (saved table)", NdkObjectTypeCq,
      [&](NDK_FN_CREATE_COMPLETION cb, PVOID ctx, NDK_CQ** out) {
        static EventCounter events;
        return adapter_table.NdkCreateCq(adapter, 8, CountCqNotification, &events, nullptr, cb,
                                         ctx, out);
      });
  EXPECT_TRUE(cq.ok()) << "(R025)";
  // Closes use the close pointers saved at hand-over (TestAdapter tracks them), with the
  // PD closed first so that its completion arrives asynchronously.
  Completion* pd_close = a->StartClose(set.pd);
  for (NDK_OBJECT_HEADER* h : set.ChildrenFirst())
    if (h != H(set.pd)) a->CloseAndWait(h);
  a->CloseEverything();
  EXPECT_TRUE(TestAdapter::WaitCloseDone(pd_close)) << "(R025)";
  // The adapter closes with its Dispatch still overwritten (TearDown), then is restored for
  // nothing: the consumer owns that field.
  (void)original_adapter_dispatch;
}

// R026: CqDepth 1..MaxCqDepth is accepted; 0 and anything above MaxCqDepth fail with
// STATUS_INVALID_PARAMETER.
TEST_P(CreateTest, R026_CqDepthLimits) {
  TestAdapter* a = OpenWith({{"max_cq_depth", "64"}});
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->info().MaxCqDepth, 64u);
  EXPECT_TRUE(a->TryCreateCq(64).ok()) << "CqDepth == MaxCqDepth must succeed (R026)";
  EXPECT_TRUE(a->TryCreateCq(1).ok());
  for (ULONG depth : {ULONG{65}, ULONG{1000}, ULONG{MAXULONG}, ULONG{0}}) {
    Created<NDK_CQ> c = a->TryCreateCq(depth);
    EXPECT_EQ(c.status, STATUS_INVALID_PARAMETER) << "CqDepth " << depth << " (R026)";
    EXPECT_EQ(c.object, nullptr);
  }
  // The default adapter reports its own maximum and enforces it too.
  ULONG max = adapter_->info().MaxCqDepth;
  ASSERT_GT(max, 0u);
  EXPECT_EQ(adapter_->TryCreateCq(max + 1).status, STATUS_INVALID_PARAMETER) << "(R026)";
}

// R027: NdkCreateQp limits: each value equal to its maximum succeeds, each value above it
// fails with STATUS_INVALID_PARAMETER (and zero depths/SGE counts fail too).
TEST_P(CreateTest, R027_QpLimits) {
  TestAdapter* a = OpenWith({{"max_receive_queue_depth", "32"},
                             {"max_initiator_queue_depth", "24"},
                             {"max_receive_sge", "4"},
                             {"max_initiator_sge", "3"},
                             {"max_inline_data", "64"}});
  ASSERT_NE(a, nullptr);
  const NDK_ADAPTER_INFO& info = a->info();
  ASSERT_EQ(info.MaxReceiveQueueDepth, 32u);
  ASSERT_EQ(info.MaxInitiatorQueueDepth, 24u);
  ASSERT_EQ(info.MaxReceiveRequestSge, 4u);
  ASSERT_EQ(info.MaxInitiatorRequestSge, 3u);
  ASSERT_EQ(info.MaxInlineDataSize, 64u);
  NDK_PD* pd = a->CreatePd();
  NDK_CQ* cq = a->CreateCq();
  ASSERT_NE(cq, nullptr);
  const QpShape max{32, 24, 4, 3, 64};
  Created<NDK_QP> at_max = a->TryCreateQp(pd, cq, cq, max);
  EXPECT_TRUE(at_max.ok()) << "values equal to the maxima must succeed: "
                           << StatusText(at_max.status) << " (R027)";
  struct Bad {
    const char* what;
    QpShape shape;
  };
  const Bad bad[] = {
      {"ReceiveQueueDepth > max", {33, 24, 4, 3, 64}},
      {"InitiatorQueueDepth > max", {32, 25, 4, 3, 64}},
      {"MaxReceiveRequestSge > max", {32, 24, 5, 3, 64}},
      {"MaxInitiatorRequestSge > max", {32, 24, 4, 4, 64}},
      {"InlineDataSize > max", {32, 24, 4, 3, 65}},
      {"ReceiveQueueDepth 0", {0, 24, 4, 3, 0}},
      {"InitiatorQueueDepth 0", {32, 0, 4, 3, 0}},
      {"ReceiveQueueDepth MAXULONG", {MAXULONG, 24, 4, 3, 0}},
  };
  for (const Bad& b : bad) {
    Created<NDK_QP> qp = a->TryCreateQp(pd, cq, cq, b.shape);
    EXPECT_EQ(qp.returned, STATUS_INVALID_PARAMETER) << b.what << " (R027)";
    EXPECT_EQ(qp.object, nullptr) << b.what;
  }
}

// R028: NdkCreateQpWithSrq limits (initiator depth, initiator SGEs, inline size).
TEST_P(CreateTest, R028_QpWithSrqLimits) {
  TestAdapter* a = OpenWith({{"max_initiator_queue_depth", "24"},
                             {"max_initiator_sge", "3"},
                             {"max_inline_data", "64"}});
  ASSERT_NE(a, nullptr);
  NDK_PD* pd = a->CreatePd();
  NDK_CQ* cq = a->CreateCq();
  NDK_SRQ* srq = a->CreateSrq(pd);
  ASSERT_NE(srq, nullptr);
  QpShape max;
  max.initiator_depth = 24;
  max.initiator_sge = 3;
  max.inline_data = 64;
  EXPECT_TRUE(a->TryCreateQpWithSrq(pd, cq, cq, srq, max).ok()) << "(R028)";
  for (int field = 0; field < 3; ++field) {
    QpShape bad = max;
    if (field == 0) bad.initiator_depth = 25;
    if (field == 1) bad.initiator_sge = 4;
    if (field == 2) bad.inline_data = 65;
    Created<NDK_QP> qp = a->TryCreateQpWithSrq(pd, cq, cq, srq, bad);
    EXPECT_EQ(qp.returned, STATUS_INVALID_PARAMETER) << "field " << field << " (R028)";
  }
}

// R029: NdkCreateSrq limits (depth and SGE count; equal to the maxima succeeds).
TEST_P(CreateTest, R029_SrqLimits) {
  TestAdapter* a = OpenWith({{"max_srq_depth", "40"}, {"max_receive_sge", "5"}});
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->info().MaxSrqDepth, 40u);
  ASSERT_EQ(a->info().MaxReceiveRequestSge, 5u);
  NDK_PD* pd = a->CreatePd();
  ASSERT_NE(pd, nullptr);
  EXPECT_TRUE(a->TryCreateSrq(pd, 40, 5, 0).ok()) << "(R029)";
  EXPECT_TRUE(a->TryCreateSrq(pd, 1, 1, 0).ok()) << "(R029)";
  EXPECT_EQ(a->TryCreateSrq(pd, 41, 5, 0).returned, STATUS_INVALID_PARAMETER) << "(R029)";
  EXPECT_EQ(a->TryCreateSrq(pd, 40, 6, 0).returned, STATUS_INVALID_PARAMETER) << "(R029)";
  EXPECT_EQ(a->TryCreateSrq(pd, 0, 5, 0).returned, STATUS_INVALID_PARAMETER) << "depth 0";
  EXPECT_EQ(a->TryCreateSrq(pd, 40, 0, 0).returned, STATUS_INVALID_PARAMETER) << "0 SGEs";
}

// R031: a shared endpoint on an address:port in use fails with STATUS_SHARING_VIOLATION;
// on an address the adapter does not own with STATUS_INVALID_ADDRESS (inline or async).
TEST_P(CreateTest, R031_SharedEndpointAddressErrors) {
  for (bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
    SOCKADDR_INET address = v6 ? adapter_->Address6(TestPort(5001)) : adapter_->Address4(5001);
    Created<NDK_SHARED_ENDPOINT> first = adapter_->TryCreateSharedEndpoint(address);
    ASSERT_TRUE(first.ok()) << StatusText(first.status);
    Created<NDK_SHARED_ENDPOINT> second = adapter_->TryCreateSharedEndpoint(address);
    EXPECT_EQ(second.status, STATUS_SHARING_VIOLATION) << StatusText(second.status) << " (R031)";
    // A listener on the same address:port collides too.
    NDK_LISTENER* listener = adapter_->CreateListener();
    ASSERT_NE(listener, nullptr);
    Requested listen = adapter_->Request("NdkListen", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
      return listener->Dispatch->NdkListen(listener, reinterpret_cast<PSOCKADDR>(&address),
                                           v6 ? sizeof(SOCKADDR_IN6) : sizeof(SOCKADDR_IN), cb,
                                           ctx);
    });
    EXPECT_EQ(listen.status, STATUS_SHARING_VIOLATION) << StatusText(listen.status);
    // Once the endpoint has closed, the address:port is free again.
    adapter_->CloseAndWait(first.object);
    Created<NDK_SHARED_ENDPOINT> third = adapter_->TryCreateSharedEndpoint(address);
    EXPECT_TRUE(third.ok()) << StatusText(third.status);
  }
  // Not an address of this adapter: another documentation address, and the loopback host's.
  SOCKADDR_INET foreign{};
  foreign.Ipv4.sin_family = AF_INET;
  foreign.Ipv4.sin_addr.s_addr = htonl(0xCB007101);  // 203.0.113.1
  Created<NDK_SHARED_ENDPOINT> f = adapter_->TryCreateSharedEndpoint(foreign);
  EXPECT_EQ(f.status, STATUS_INVALID_ADDRESS) << StatusText(f.status) << " (R031)";
  if (HostsShareAnInterface()) return;  // there the loopback address is the adapter's own
  SOCKADDR_INET loopback{};
  loopback.Ipv4.sin_family = AF_INET;
  loopback.Ipv4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  Created<NDK_SHARED_ENDPOINT> l = adapter_->TryCreateSharedEndpoint(loopback);
  EXPECT_EQ(l.status, STATUS_INVALID_ADDRESS) << StatusText(l.status) << " (R031)";
}

// R031, R038, R039: once an endpoint's close has completed (STATUS_SUCCESS returned, or the
// close callback called) its address:port is free: a shared endpoint or a listener created on
// it from inside the close callback (or right after an inline close) succeeds.
TEST_P(CreateTest, R031_R039_AddressIsFreeWhenCloseCompletes) {
  TestAdapter* a = adapter_;
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE(round);
    const uint16_t port = TestPort(static_cast<uint16_t>(6100 + round));
    SOCKADDR_INET address = (round % 2 == 0) ? a->Address4(port) : a->Address6(port);
    // A shared endpoint re-created on the address of one being closed.
    Created<NDK_SHARED_ENDPOINT> first = a->TryCreateSharedEndpoint(address);
    ASSERT_TRUE(first.ok());
    auto again = std::make_shared<Created<NDK_SHARED_ENDPOINT>>();
    Completion* close = a->StartClose(first.object, [a, address, again](Completion&) {
      *again = a->TryCreateSharedEndpoint(address);  // inside the close callback
    });
    ASSERT_TRUE(TestAdapter::WaitCloseDone(close));
    if (close->call_status() == STATUS_SUCCESS) *again = a->TryCreateSharedEndpoint(address);
    if (again->returned == STATUS_PENDING) {
      ASSERT_TRUE(again->completion->WaitReturned());
      again->status = again->completion->status();
    }
    EXPECT_EQ(again->status, STATUS_SUCCESS)
        << "address:port still taken after the shared endpoint's close completed ("
        << (close->call_status() == STATUS_PENDING ? "inside the close callback" : "after S")
        << "): " << StatusText(again->status) << " (R039/R195)";
    a->WaitForPendingCallbacks();
    a->CloseEverything();

    // The same for a listener.
    NDK_LISTENER* l1 = a->CreateListener();
    NDK_LISTENER* l2 = a->CreateListener();
    ASSERT_NE(l2, nullptr);
    ASSERT_NE(l1, nullptr);
    const ULONG length = address.si_family == AF_INET ? sizeof(SOCKADDR_IN) : sizeof(SOCKADDR_IN6);
    auto listen = [a, address, length](NDK_LISTENER* l, bool wait) {
      SOCKADDR_INET copy = address;
      return a->Request(
          "NdkListen",
          [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
            return l->Dispatch->NdkListen(l, reinterpret_cast<PSOCKADDR>(&copy), length, cb, ctx);
          },
          {}, wait);
    };
    ASSERT_EQ(listen(l1, true).status, STATUS_SUCCESS);
    auto relisten = std::make_shared<Requested>();
    Completion* lclose = a->StartClose(l1, [relisten, listen, l2](Completion&) {
      *relisten = listen(l2, false);
    });
    ASSERT_TRUE(TestAdapter::WaitCloseDone(lclose));
    if (lclose->call_status() == STATUS_SUCCESS) *relisten = listen(l2, false);
    if (relisten->returned == STATUS_PENDING) {
      ASSERT_TRUE(relisten->completion->WaitReturned());
      relisten->status = relisten->completion->status();
    } else {
      relisten->status = relisten->returned;
    }
    EXPECT_EQ(relisten->status, STATUS_SUCCESS)
        << "address:port still taken after the listener's close completed: "
        << StatusText(relisten->status) << " (R039/R191)";
    a->CloseEverything();
  }
}

// R031, R032: port 0 gets an ephemeral port (49152-65535) that NdkGetLocalAddress reports;
// when every ephemeral port of the address is taken, STATUS_TOO_MANY_ADDRESSES.
TEST_P(CreateTest, R031_R032_EphemeralPorts) {
  const bool exhaust = mode() == SOFTNDK_COMPLETION_INLINE ||
                       mode() == SOFTNDK_COMPLETION_PROVIDER_THREAD;
  std::set<uint16_t> ports;
  std::vector<NDK_SHARED_ENDPOINT*> endpoints;
  for (int i = 0; i < (exhaust ? 16384 : 64); ++i) {
    Created<NDK_SHARED_ENDPOINT> e = adapter_->TryCreateSharedEndpoint(adapter_->Address6(0));
    ASSERT_TRUE(e.ok()) << "endpoint " << i << ": " << StatusText(e.status);
    SOCKADDR_IN6 local{};
    ULONG length = sizeof(local);
    ASSERT_EQ(e.object->Dispatch->NdkGetLocalAddress(e.object, reinterpret_cast<PSOCKADDR>(&local),
                                                     &length),
              STATUS_SUCCESS);
    ASSERT_EQ(length, sizeof(SOCKADDR_IN6));
    EXPECT_EQ(local.sin6_family, AF_INET6);
    uint16_t port = ntohs(local.sin6_port);
    ASSERT_GE(port, 49152) << "(R032)";
    EXPECT_TRUE(ports.insert(port).second) << "port " << port << " handed out twice";
    endpoints.push_back(e.object);
  }
  if (exhaust) {
    // R031: no ephemeral port left.
    Created<NDK_SHARED_ENDPOINT> none = adapter_->TryCreateSharedEndpoint(adapter_->Address6(0));
    EXPECT_EQ(none.status, STATUS_TOO_MANY_ADDRESSES) << StatusText(none.status) << " (R031)";
    // The IPv4 address has its own ports.
    EXPECT_TRUE(adapter_->TryCreateSharedEndpoint(adapter_->Address4(0)).ok());
  }
  // Closing one makes its port available again.
  adapter_->CloseAndWait(endpoints.back());
  EXPECT_TRUE(adapter_->TryCreateSharedEndpoint(adapter_->Address6(0)).ok());
  // R032 also for a small buffer: STATUS_BUFFER_TOO_SMALL with the size needed (R175).
  SOCKADDR_IN6 local{};
  ULONG length = 4;
  EXPECT_EQ(endpoints[0]->Dispatch->NdkGetLocalAddress(
                endpoints[0], reinterpret_cast<PSOCKADDR>(&local), &length),
            STATUS_BUFFER_TOO_SMALL);
  EXPECT_EQ(length, sizeof(SOCKADDR_IN6));
}

// R033: a non-NULL Affinity is accepted by NdkCreateCq and NdkCreateSrq (a hint only).
TEST_P(CreateTest, R033_AffinityIsAccepted) {
  GROUP_AFFINITY affinity{};
  affinity.Mask = 1;
  affinity.Group = 0;
  EXPECT_TRUE(adapter_->TryCreateCq(8, nullptr, &affinity).ok()) << "(R033)";
  GROUP_AFFINITY odd{};
  odd.Mask = ~KAFFINITY{0};
  odd.Group = 7;
  EXPECT_TRUE(adapter_->TryCreateCq(8, nullptr, &odd).ok()) << "(R033)";
  NDK_PD* pd = adapter_->CreatePd();
  ASSERT_NE(pd, nullptr);
  EXPECT_TRUE(adapter_->TryCreateSrq(pd, 8, 1, 0, nullptr, &affinity).ok()) << "(R033)";
  EXPECT_TRUE(adapter_->TryCreateSrq(pd, 8, 1, 0, nullptr, nullptr).ok()) << "(R033)";
}

// R034: an SRQ may be created without a notification callback; CqNotification and
// ConnectEvent are mandatory (NULL is rejected).
TEST_P(CreateTest, R034_MandatoryAndOptionalCallbacks) {
  NDK_PD* pd = adapter_->CreatePd();
  ASSERT_NE(pd, nullptr);
  Created<NDK_SRQ> srq = adapter_->TryCreateSrq(pd, 8, 1, 4, nullptr);
  EXPECT_TRUE(srq.ok()) << "(R034)";
  if (srq.ok()) {
    // No callback exists, so arming a threshold must not call anything.
    Requested modify = adapter_->Request("NdkModifySrq", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
      return srq.object->Dispatch->NdkModifySrq(srq.object, 0, 2, cb, ctx);
    });
    EXPECT_EQ(modify.status, STATUS_SUCCESS);
  }
  Created<NDK_CQ> cq = adapter_->TryCreateCq(8, nullptr, nullptr, {}, /*null_notification=*/true);
  EXPECT_FALSE(NT_SUCCESS(cq.status)) << "NdkCreateCq accepted a NULL CqNotification (R034)";
  EXPECT_EQ(cq.object, nullptr);
  Created<NDK_LISTENER> l = adapter_->TryCreateListener(nullptr, {}, /*null_event=*/true);
  EXPECT_FALSE(NT_SUCCESS(l.status)) << "NdkCreateListener accepted a NULL ConnectEvent (R034)";
  EXPECT_EQ(l.object, nullptr);
}

// R035: a fast-register MR is used only with NdkInitializeFastRegisterMr, a register-only MR
// only with NdkRegisterMr/NdkDeregisterMr; the wrong path fails.
TEST_P(CreateTest, R035_MrKindsTakeOnlyTheirOwnPath) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_MR* mr = adapter_->CreateMr(pd, false);
  NDK_MR* fast = adapter_->CreateMr(pd, true);
  ASSERT_NE(mr, nullptr);
  ASSERT_NE(fast, nullptr);
  TestBuffer buffer;
  Requested wrong_register = adapter_->Request(
      "NdkRegisterMr on a fast-register MR", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return fast->Dispatch->NdkRegisterMr(fast, buffer.mdl(), buffer.length(), 0, cb, ctx);
      });
  EXPECT_FALSE(NT_SUCCESS(wrong_register.status)) << "(R035)";
  Requested wrong_init = adapter_->Request(
      "NdkInitializeFastRegisterMr on a register MR", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return mr->Dispatch->NdkInitializeFastRegisterMr(mr, 1, FALSE, cb, ctx);
      });
  EXPECT_FALSE(NT_SUCCESS(wrong_init.status)) << "(R035)";
  Requested wrong_dereg = adapter_->Request(
      "NdkDeregisterMr on a fast-register MR", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return fast->Dispatch->NdkDeregisterMr(fast, cb, ctx);
      });
  EXPECT_FALSE(NT_SUCCESS(wrong_dereg.status)) << "(R035)";
  // The right paths work.
  Requested reg = adapter_->Request("NdkRegisterMr", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return mr->Dispatch->NdkRegisterMr(mr, buffer.mdl(), buffer.length(), 0, cb, ctx);
  });
  EXPECT_EQ(reg.status, STATUS_SUCCESS) << "(R035)";
  Requested dereg = adapter_->Request("NdkDeregisterMr", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return mr->Dispatch->NdkDeregisterMr(mr, cb, ctx);
  });
  EXPECT_EQ(dereg.status, STATUS_SUCCESS) << "(R035)";
  Requested init = adapter_->Request("NdkInitializeFastRegisterMr",
                                     [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                                       return fast->Dispatch->NdkInitializeFastRegisterMr(
                                           fast, 1, TRUE, cb, ctx);
                                     });
  EXPECT_EQ(init.status, STATUS_SUCCESS) << "(R035)";
}

// R036: the consumer may issue further calls on an object without waiting for earlier
// callbacks; every one of several overlapping requests completes exactly once.
TEST_P(CreateTest, R036_OverlappingRequestsOnOneObject) {
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* cq = adapter_->CreateCq(16);
  NDK_SRQ* srq = adapter_->CreateSrq(pd, 16, 1, 0);
  NDK_MR* fast = adapter_->CreateMr(pd, true);
  ASSERT_NE(fast, nullptr);
  ASSERT_NE(srq, nullptr);
  ProviderThreadBlocker blocker(*adapter_);  // keeps callbacks queued where possible
  std::vector<Requested> requests;
  for (int i = 0; i < 8; ++i) {
    requests.push_back(adapter_->Request(
        "NdkResizeCq #" + std::to_string(i),
        [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
          return cq->Dispatch->NdkResizeCq(cq, 16 + static_cast<ULONG>(i), cb, ctx);
        },
        {}, /*wait=*/false));
    requests.push_back(adapter_->Request(
        "NdkModifySrq #" + std::to_string(i),
        [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
          return srq->Dispatch->NdkModifySrq(srq, 16 + static_cast<ULONG>(i), 0, cb, ctx);
        },
        {}, /*wait=*/false));
    // R071 too: NdkInitializeFastRegisterMr may be called again before the last completed.
    requests.push_back(adapter_->Request(
        "NdkInitializeFastRegisterMr #" + std::to_string(i),
        [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
          return fast->Dispatch->NdkInitializeFastRegisterMr(fast, 1 + i, TRUE, cb, ctx);
        },
        {}, /*wait=*/false));
  }
  blocker.Release();
  for (const Requested& r : requests) {
    NTSTATUS final_status = r.returned;
    if (r.returned == STATUS_PENDING) {
      ASSERT_TRUE(r.completion->WaitReturned()) << r.completion->what() << " (R036)";
      final_status = r.completion->status();
    }
    EXPECT_EQ(final_status, STATUS_SUCCESS) << r.completion->what() << " (R036)";
    EXPECT_EQ(r.completion->entered(), r.returned == STATUS_PENDING ? 1 : 0);
  }
}

SOFTNDK_INSTANTIATE_CONFORMANCE(CreateTest);

}  // namespace
}  // namespace conformance
