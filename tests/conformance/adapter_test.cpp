// §5.A: adapter open, versioning and the mandatory entry points (R001-R005, R008-R011),
// plus a check that the fixture really runs each completion mode it claims (R061).
#include <set>

#include "harness.hpp"

namespace conformance {
namespace {

class AdapterTest : public ConformanceTest {
 protected:
  // Makes the NDIS open handler (which takes no options) use this test's completion mode.
  void UseModeForNdisOpen() {
    const char* mode = SoftNdkCompletionModeName(GetParam().mode);
    ASSERT_EQ(SoftNdkSetTunable("completion_mode", mode), STATUS_SUCCESS);
    if (GetParam().seed != 0) {
      std::string seed = std::to_string(GetParam().seed);
      ASSERT_EQ(SoftNdkSetTunable("completion_seed", seed.c_str()), STATUS_SUCCESS);
    }
  }

  void GetCharacteristics(NDIS_NDK_PROVIDER_CHARACTERISTICS* chars, NDIS_HANDLE* context) {
    std::memset(chars, 0, sizeof(*chars));
    *context = nullptr;
    ASSERT_EQ(SoftNdkGetProviderCharacteristics(GetParam().fabric, host_.if_index, chars, context),
              STATUS_SUCCESS);
    ASSERT_EQ(chars->Header.Type, NDIS_OBJECT_TYPE_NDK_PROVIDER_CHARACTERISTICS);
    ASSERT_EQ(chars->Header.Revision, NDIS_NDK_PROVIDER_CHARACTERISTICS_REVISION_1);
    ASSERT_EQ(chars->Header.Size, NDIS_SIZEOF_NDK_PROVIDER_CHARACTERISTICS_REVISION_1);
    ASSERT_EQ(chars->Flags, 0u);
    ASSERT_NE(chars->OpenNDKAdapterHandler, nullptr);
    ASSERT_NE(chars->CloseNDKAdapterHandler, nullptr);
  }

  // Opens through the NDIS handler; returns the status and leaves the out-parameter as the
  // handler left it (a guard value on entry).
  NDIS_STATUS NdisOpen(NDK_VERSION version, NDK_ADAPTER** out) {
    NDIS_NDK_PROVIDER_CHARACTERISTICS chars;
    NDIS_HANDLE context;
    GetCharacteristics(&chars, &context);
    NDIS_OPEN_NDK_ADAPTER_PARAMETERS parameters{};
    parameters.Version = version;
    return chars.OpenNDKAdapterHandler(context, &parameters, out);
  }

  NDK_ADAPTER* const kGuard = reinterpret_cast<NDK_ADAPTER*>(uintptr_t{0x5AFE0000ADA00000ULL});
};

// R001: a major version the provider lacks yields NDIS_STATUS_BAD_VERSION and no adapter.
TEST_P(AdapterTest, R001_UnsupportedMajorIsBadVersion) {
  for (NDK_VERSION v : {NDK_VERSION{0, 0}, NDK_VERSION{0, 1}, NDK_VERSION{3, 0}, NDK_VERSION{3, 1},
                        NDK_VERSION{0xFFFF, 0}}) {
    NDK_ADAPTER* out = kGuard;
    EXPECT_EQ(NdisOpen(v, &out), NDIS_STATUS_BAD_VERSION) << "NDIS open " << VersionText(v);
    EXPECT_TRUE(out == kGuard || out == nullptr) << "NDIS open " << VersionText(v)
                                                 << " yielded an adapter (R001)";
    NTSTATUS status;
    EXPECT_EQ(RawOpen(v, &status), nullptr) << VersionText(v);
    EXPECT_EQ(status, NDIS_STATUS_BAD_VERSION) << "SoftNdkOpenAdapter " << VersionText(v);
  }
}

// R004: a supported major with a minor above the provider's highest is NDIS_STATUS_BAD_VERSION.
TEST_P(AdapterTest, R004_MinorAboveHighestIsBadVersion) {
  for (NDK_VERSION v : {NDK_VERSION{1, 3}, NDK_VERSION{1, 0xFFFF}, NDK_VERSION{2, 2},
                        NDK_VERSION{2, 0xFFFF}}) {
    NDK_ADAPTER* out = kGuard;
    EXPECT_EQ(NdisOpen(v, &out), NDIS_STATUS_BAD_VERSION) << "NDIS open " << VersionText(v);
    EXPECT_TRUE(out == kGuard || out == nullptr) << VersionText(v) << " yielded an adapter";
    NTSTATUS status;
    EXPECT_EQ(RawOpen(v, &status), nullptr) << VersionText(v);
    EXPECT_EQ(status, NDIS_STATUS_BAD_VERSION) << "SoftNdkOpenAdapter " << VersionText(v);
  }
}

struct Negotiation {
  NDK_VERSION requested;
  NDK_VERSION negotiated;
};
const Negotiation kNegotiations[] = {
    {{1, 0}, {1, 2}}, {{1, 1}, {1, 2}}, {{1, 2}, {1, 2}}, {{2, 0}, {2, 1}}, {{2, 1}, {2, 1}},
};

// R002, R003, R010, R022: an accepted request (major, lowest minor) negotiates the highest
// minor of that major; NDK_ADAPTER_INFO.Version, the adapter header and every object header
// report it (1.2 = Major 1 Minor 2, 2.1 = Major 2 Minor 1).
TEST_P(AdapterTest, R002_R003_R010_R022_VersionNegotiationReportedEverywhere) {
  for (const Negotiation& n : kNegotiations) {
    SCOPED_TRACE("requested " + VersionText(n.requested));
    NTSTATUS status;
    NDK_ADAPTER* raw = RawOpen(n.requested, &status);
    ASSERT_EQ(status, NDIS_STATUS_SUCCESS) << StatusText(status) << " (R002)";
    ASSERT_NE(raw, nullptr);
    EXPECT_EQ(raw->Header.Version.Major, n.negotiated.Major) << "adapter header (R003/R010)";
    EXPECT_EQ(raw->Header.Version.Minor, n.negotiated.Minor) << "adapter header (R003/R010)";
    TestAdapter& a = Adopt(raw);
    EXPECT_EQ(a.info().Version.Major, n.negotiated.Major) << "NDK_ADAPTER_INFO (R003)";
    EXPECT_EQ(a.info().Version.Minor, n.negotiated.Minor) << "NDK_ADAPTER_INFO (R003)";
    ObjectSet set = a.CreateAll();
    for (NDK_OBJECT_HEADER* h : set.ChildrenFirst()) {
      EXPECT_EQ(h->Version.Major, n.negotiated.Major)
          << SoftNdkObjectTypeName(h->ObjectType) << " header (R003/R010/R022)";
      EXPECT_EQ(h->Version.Minor, n.negotiated.Minor)
          << SoftNdkObjectTypeName(h->ObjectType) << " header (R003/R010/R022)";
    }
    a.CloseAll(set);
    EXPECT_TRUE(a.CloseAdapter());
    a.VerifyCallbackCounts();
  }
}

// R002, R003 through the NDIS handlers themselves (OPEN/CLOSE_NDK_ADAPTER_HANDLER).
TEST_P(AdapterTest, R002_R003_NdisHandlersNegotiateAndClose) {
  UseModeForNdisOpen();
  NDIS_NDK_PROVIDER_CHARACTERISTICS chars;
  NDIS_HANDLE context;
  GetCharacteristics(&chars, &context);
  for (const Negotiation& n : kNegotiations) {
    SCOPED_TRACE("requested " + VersionText(n.requested));
    NDIS_OPEN_NDK_ADAPTER_PARAMETERS parameters{};
    parameters.Version = n.requested;
    NDK_ADAPTER* raw = kGuard;
    ASSERT_EQ(chars.OpenNDKAdapterHandler(context, &parameters, &raw), NDIS_STATUS_SUCCESS);
    ASSERT_NE(raw, kGuard);
    ASSERT_NE(raw, nullptr);
    EXPECT_EQ(raw->Header.ObjectType, NdkObjectTypeAdapter);
    EXPECT_EQ(raw->Header.Version.Major, n.negotiated.Major);
    EXPECT_EQ(raw->Header.Version.Minor, n.negotiated.Minor);
    SOFTNDK_COMPLETION_MODE in_force;
    ASSERT_EQ(SoftNdkGetCompletionMode(raw, &in_force, nullptr), STATUS_SUCCESS);
    EXPECT_EQ(in_force, GetParam().mode);
    {
      TestAdapter a(raw, GetParam(), host_.v4, host_.v6);
      EXPECT_EQ(a.info().Version.Major, n.negotiated.Major);
      EXPECT_EQ(a.info().Version.Minor, n.negotiated.Minor);
      ObjectSet set = a.CreateAll();
      a.CloseAll(set);
      chars.CloseNDKAdapterHandler(context, raw);
      a.VerifyCallbackCounts();
      a.MarkClosed();  // closed through the handler
    }
  }
}

// R005: behaviour available at a lower minor is unchanged at a higher one. The same script
// run on adapters opened at 1.1 and 1.2 (and at 2.0 and 2.1) sees the same tables, limits and
// statuses; the 1.2 entry points (GetCqResultsEx, SendAndInvalidate) and the 2.1 connector
// entries answer on every adapter.
TEST_P(AdapterTest, R005_HigherMinorIsASuperset) {
  struct Outcome {
    std::vector<const void*> tables;
    std::vector<NTSTATUS> statuses;
    NDK_ADAPTER_INFO info;
  };
  auto run = [&](NDK_VERSION version) {
    Outcome o{};
    TestAdapter* a = OpenAdapter(version);
    if (a == nullptr) return o;
    o.info = a->info();
    o.info.Version = NDK_VERSION{};
    ObjectSet s = a->CreateAll();
    if (s.cq == nullptr || s.pd == nullptr || s.qp == nullptr || s.connector == nullptr) return o;
    for (const void* e : EntriesOf(a->dispatch())) o.tables.push_back(e);
    for (const void* e : EntriesOf(s.cq->Dispatch)) o.tables.push_back(e);
    for (const void* e : EntriesOf(s.qp->Dispatch)) o.tables.push_back(e);
    for (const void* e : EntriesOf(s.connector->Dispatch)) o.tables.push_back(e);
    NDK_RESULT_EX ex[2];
    o.statuses.push_back(static_cast<NTSTATUS>(s.cq->Dispatch->NdkGetCqResultsEx(s.cq, ex, 2)));
    NDK_RESULT r[2];
    o.statuses.push_back(static_cast<NTSTATUS>(s.cq->Dispatch->NdkGetCqResults(s.cq, r, 2)));
    o.statuses.push_back(s.qp->Dispatch->NdkSendAndInvalidate(s.qp, nullptr, nullptr, 0, 0, 1));
    o.statuses.push_back(s.qp->Dispatch->NdkSend(s.qp, nullptr, nullptr, 0, 0));
    o.statuses.push_back(
        a->Request("NdkCompleteConnectEx",
                   [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                     return s.connector->Dispatch->NdkCompleteConnectEx(s.connector, nullptr,
                                                                        nullptr, cb, ctx);
                   })
            .status);
    o.statuses.push_back(
        a->Request("NdkCompleteConnect",
                   [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                     return s.connector->Dispatch->NdkCompleteConnect(s.connector, nullptr,
                                                                      nullptr, cb, ctx);
                   })
            .status);
    o.statuses.push_back(
        a->Request("NdkResizeCq",
                   [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                     return s.cq->Dispatch->NdkResizeCq(s.cq, 32, cb, ctx);
                   })
            .status);
    a->CloseAll(s);
    return o;
  };
  Outcome v11 = run({1, 1}), v12 = run({1, 2}), v20 = run({2, 0}), v21 = run({2, 1});
  ASSERT_FALSE(v11.tables.empty());
  for (const Outcome* o : {&v12, &v20, &v21}) {
    EXPECT_EQ(o->tables, v11.tables) << "dispatch tables differ between versions (R005)";
    EXPECT_EQ(o->statuses, v11.statuses) << "behaviour differs between versions (R005)";
    EXPECT_EQ(std::memcmp(&o->info, &v11.info, sizeof(NDK_ADAPTER_INFO)), 0)
        << "adapter limits differ between versions (R005)";
  }
}

// R008: two opens on one interface give two distinct adapters; closing one (with its
// objects) leaves the other's objects and callbacks working.
TEST_P(AdapterTest, R008_TwoOpensAreIndependent) {
  TestAdapter* second = OpenAdapter();
  ASSERT_NE(second, nullptr);
  ASSERT_NE(second->get(), adapter_->get());
  ObjectSet one = adapter_->CreateAll();
  ObjectSet two = second->CreateAll();
  ASSERT_NE(two.pd, nullptr);
  ASSERT_NE(two.cq, nullptr);

  // A callback of the second adapter that is still running (provider thread) must not keep
  // the first adapter's close from returning.
  auto gate = std::make_shared<Gate>();
  Requested blocked = second->Request(
      "NdkResizeCq (adapter 2, callback held)",
      [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return two.cq->Dispatch->NdkResizeCq(two.cq, 20, cb, ctx);
      },
      [gate](Completion& c) {
        if (std::this_thread::get_id() != c.caller_thread()) gate->Wait();
      },
      /*wait=*/false);

  adapter_->CloseAll(one);
  auto start = Clock::now();
  EXPECT_TRUE(adapter_->CloseAdapter()) << "closing adapter 1 waited for adapter 2 (R008)";
  EXPECT_LT(Clock::now() - start, kWait);
  adapter_->VerifyCallbackCounts();
  gate->Open();
  if (blocked.returned == STATUS_PENDING) {
    EXPECT_TRUE(blocked.completion->WaitReturned()) << "adapter 2's callback was lost (R008)";
  }

  // Adapter 2 is untouched: its objects still work and create children.
  NDK_MR* mr = second->CreateMr(two.pd, false);
  EXPECT_NE(mr, nullptr) << "adapter 2's PD stopped working when adapter 1 closed (R008)";
  Requested resize = second->Request("NdkResizeCq (adapter 2)",
                                     [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                                       return two.cq->Dispatch->NdkResizeCq(two.cq, 24, cb, ctx);
                                     });
  EXPECT_EQ(resize.status, STATUS_SUCCESS) << StatusText(resize.status) << " (R008)";
  NDK_CQ* cq = second->CreateCq();
  EXPECT_NE(cq, nullptr);
}

// R008: objects of one adapter are not objects of another (a QP cannot mix them).
TEST_P(AdapterTest, R008_ObjectsDoNotCrossAdapters) {
  TestAdapter* second = OpenAdapter();
  ASSERT_NE(second, nullptr);
  NDK_PD* pd = adapter_->CreatePd();
  NDK_CQ* own_cq = adapter_->CreateCq();
  NDK_CQ* other_cq = second->CreateCq();
  ASSERT_NE(pd, nullptr);
  ASSERT_NE(own_cq, nullptr);
  ASSERT_NE(other_cq, nullptr);
  Created<NDK_QP> qp = adapter_->TryCreateQp(pd, own_cq, other_cq);
  EXPECT_EQ(qp.returned, STATUS_INVALID_PARAMETER) << StatusText(qp.returned);
  qp = adapter_->TryCreateQp(pd, other_cq, own_cq);
  EXPECT_EQ(qp.returned, STATUS_INVALID_PARAMETER) << StatusText(qp.returned);
}

// R009: the adapter is an NdkObjectTypeAdapter with a 9-entry dispatch table, all set.
TEST_P(AdapterTest, R009_AdapterHeaderAndDispatch) {
  static_assert(sizeof(NDK_ADAPTER_DISPATCH) == 9 * sizeof(void (*)()), "9 entries (R009)");
  NDK_ADAPTER* a = adapter_->get();
  EXPECT_EQ(a->Header.ObjectType, NdkObjectTypeAdapter);
  ASSERT_NE(a->Dispatch, nullptr);
  std::vector<const void*> entries = EntriesOf(a->Dispatch);
  ASSERT_EQ(entries.size(), 9u);
  for (size_t i = 0; i < entries.size(); ++i)
    EXPECT_NE(entries[i], nullptr) << "NDK_ADAPTER_DISPATCH entry " << i << " is NULL (R009)";
  for (PVOID p : a->Header.NdkReserved.rf) EXPECT_EQ(p, nullptr) << "adapter NdkReserved";

  // The same through the NDIS open handler.
  UseModeForNdisOpen();
  NDK_ADAPTER* raw = kGuard;
  ASSERT_EQ(NdisOpen({2, 1}, &raw), NDIS_STATUS_SUCCESS);
  ASSERT_NE(raw, kGuard);
  EXPECT_EQ(raw->Header.ObjectType, NdkObjectTypeAdapter);
  ASSERT_NE(raw->Dispatch, nullptr);
  for (const void* e : EntriesOf(raw->Dispatch)) EXPECT_NE(e, nullptr);
  Adopt(raw);
}

// R011: every entry of every dispatch table of every object type is set (and the tables
// have the documented sizes: 9, 11, 7, 7, 3, 8, 3, 13, 5, 4 entries; INVENTORY §1.12).
TEST_P(AdapterTest, R011_EveryDispatchEntryIsSet) {
  ObjectSet s = adapter_->CreateAll();
  ASSERT_NE(s.connector, nullptr);
  ASSERT_NE(s.qp, nullptr);
  ASSERT_NE(s.mr, nullptr);
  ASSERT_NE(s.endpoint, nullptr);
  struct Table {
    const char* name;
    std::vector<const void*> entries;
    size_t size;
  };
  const Table tables[] = {
      {"adapter", EntriesOf(adapter_->dispatch()), 9},
      {"QP", EntriesOf(s.qp->Dispatch), 11},
      {"QP with SRQ", EntriesOf(s.qp_srq->Dispatch), 11},
      {"CQ", EntriesOf(s.cq->Dispatch), 7},
      {"MR", EntriesOf(s.mr->Dispatch), 7},
      {"MR (fast register)", EntriesOf(s.mr_fast->Dispatch), 7},
      {"MW", EntriesOf(s.mw->Dispatch), 3},
      {"PD", EntriesOf(s.pd->Dispatch), 8},
      {"shared endpoint", EntriesOf(s.endpoint->Dispatch), 3},
      {"connector", EntriesOf(s.connector->Dispatch), 13},
      {"listener", EntriesOf(s.listener->Dispatch), 5},
      {"SRQ", EntriesOf(s.srq->Dispatch), 4},
  };
  size_t total = 0;
  for (const Table& t : tables) {
    EXPECT_EQ(t.entries.size(), t.size) << t.name;
    for (size_t i = 0; i < t.entries.size(); ++i)
      EXPECT_NE(t.entries[i], nullptr) << t.name << " dispatch entry " << i << " is NULL (R011)";
    total += t.entries.size();
  }
  EXPECT_EQ(total, 70u + 11u + 7u) << "70 entries plus the repeated QP and MR tables";
}

// R061 and the harness itself: the adapter really runs the completion mode the test is
// named after (softndk.h): inline never pends; caller-thread calls back on the caller's
// thread before returning STATUS_PENDING; provider-thread calls back from another thread;
// mixed uses all three.
TEST_P(AdapterTest, R061_CompletionModeIsHonoured) {
  SOFTNDK_COMPLETION_MODE in_force;
  ULONG64 seed = 0;
  ASSERT_EQ(SoftNdkGetCompletionMode(adapter_->get(), &in_force, &seed), STATUS_SUCCESS);
  ASSERT_EQ(in_force, GetParam().mode);
  if (GetParam().seed != 0) {
    EXPECT_EQ(seed, GetParam().seed);
  }
  int inline_count = 0, caller = 0, provider = 0;
  for (int i = 0; i < 60; ++i) {
    Created<NDK_PD> pd = adapter_->TryCreatePd();
    ASSERT_TRUE(pd.ok());
    const Completion& c = *pd.completion;
    if (pd.returned == STATUS_SUCCESS) {
      ++inline_count;
    } else if (c.callback_thread() == c.caller_thread() && c.ran_before_return()) {
      ++caller;
    } else {
      EXPECT_NE(c.callback_thread(), c.caller_thread());
      ++provider;
    }
    adapter_->CloseAndWait(pd.object);
  }
  switch (GetParam().mode) {
    case SOFTNDK_COMPLETION_INLINE:
      EXPECT_EQ(inline_count, 60);
      break;
    case SOFTNDK_COMPLETION_CALLER_THREAD:
      EXPECT_EQ(caller, 60);
      break;
    case SOFTNDK_COMPLETION_PROVIDER_THREAD:
      EXPECT_EQ(provider, 60);
      break;
    default:
      EXPECT_GT(inline_count, 0);
      EXPECT_GT(caller, 0);
      EXPECT_GT(provider, 0);
      break;
  }
}

SOFTNDK_INSTANTIATE_CONFORMANCE(AdapterTest);

}  // namespace
}  // namespace conformance
