// Bad input: NULL pointers, objects of the wrong type or of no type at all, depths and SGE
// counts outside the limits, unknown flags, private data over the limit and malformed
// addresses. Each is refused inline (never STATUS_PENDING, never a callback) and never
// crashes (R014, R016, R026-R029, R059; R090, R186, R210 where named).
#include <arpa/inet.h>
#include <sys/un.h>

#include "harness.hpp"

namespace conformance {
namespace {

class BadInputTest : public ConformanceTest {
 protected:
  // Runs `call` (given a create callback and context) and expects an inline refusal.
  void ExpectCreateRejected(const std::string& what,
                            const std::function<NTSTATUS(NDK_FN_CREATE_COMPLETION, PVOID)>& call,
                            NTSTATUS expected = STATUS_INVALID_PARAMETER) {
    Completion& c = adapter_->NewCompletion(Completion::Kind::kCreate, what);
    c.BeginCall();
    NTSTATUS status = call(&Completion::OnCreate, c.context());
    c.EndCall(status);
    c.set_expected(0);
    EXPECT_EQ(status, expected) << what << ": " << StatusText(status);
    EXPECT_EQ(c.entered(), 0) << what << " called its create callback (R016)";
  }
  void ExpectRequestRejected(const std::string& what,
                             const std::function<NTSTATUS(NDK_FN_REQUEST_COMPLETION, PVOID)>& call,
                             NTSTATUS expected = STATUS_INVALID_PARAMETER) {
    Requested r = adapter_->Request(what, call, {}, /*wait=*/false);
    EXPECT_EQ(r.returned, expected) << what << ": " << StatusText(r.returned);
  }
  static void ExpectStatus(NTSTATUS status, NTSTATUS expected, const std::string& what) {
    EXPECT_EQ(status, expected) << what << ": " << StatusText(status);
  }
};

// NULL out-parameters, callbacks and objects are refused by every create.
TEST_P(BadInputTest, R014_R016_CreatesRejectNullArguments) {
  TestAdapter* a = adapter_;
  NDK_ADAPTER* ad = a->get();
  const NDK_ADAPTER_DISPATCH* d = a->dispatch();
  NDK_PD* pd = a->CreatePd();
  NDK_CQ* cq = a->CreateCq();
  NDK_SRQ* srq = a->CreateSrq(pd);
  ASSERT_NE(srq, nullptr);
  ASSERT_NE(cq, nullptr);
  const NDK_PD_DISPATCH* pdd = pd->Dispatch;
  static EventCounter events;
  SOCKADDR_INET address = a->Address4(0);
  auto sa = reinterpret_cast<PSOCKADDR>(&address);
  const ULONG sl = sizeof(SOCKADDR_IN);
  // NULL out-parameter.
  ExpectCreateRejected("NdkCreateCq(ppNdkCq NULL)", [&](auto cb, PVOID ctx) {
    return d->NdkCreateCq(ad, 8, CountCqNotification, &events, nullptr, cb, ctx, nullptr);
  });
  ExpectCreateRejected("NdkCreatePd(NULL out)", [&](auto cb, PVOID ctx) { return d->NdkCreatePd(ad, cb, ctx, nullptr); });
  ExpectCreateRejected("NdkCreateSharedEndpoint(NULL out)", [&](auto cb, PVOID ctx) {
    return d->NdkCreateSharedEndpoint(ad, sa, sl, cb, ctx, nullptr);
  });
  ExpectCreateRejected("NdkCreateConnector(NULL out)", [&](auto cb, PVOID ctx) { return d->NdkCreateConnector(ad, cb, ctx, nullptr); });
  ExpectCreateRejected("NdkCreateListener(NULL out)", [&](auto cb, PVOID ctx) {
    return d->NdkCreateListener(ad, CountConnectEvent, &events, cb, ctx, nullptr);
  });
  ExpectCreateRejected("NdkCreateMr(NULL out)", [&](auto cb, PVOID ctx) { return pdd->NdkCreateMr(pd, FALSE, cb, ctx, nullptr); });
  ExpectCreateRejected("NdkCreateMw(NULL out)", [&](auto cb, PVOID ctx) { return pdd->NdkCreateMw(pd, cb, ctx, nullptr); });
  ExpectCreateRejected("NdkCreateSrq(NULL out)", [&](auto cb, PVOID ctx) {
    return pdd->NdkCreateSrq(pd, 4, 1, 0, nullptr, nullptr, nullptr, cb, ctx, nullptr);
  });
  ExpectCreateRejected("NdkCreateQp(NULL out)", [&](auto cb, PVOID ctx) {
    return pdd->NdkCreateQp(pd, cq, cq, nullptr, 4, 4, 1, 1, 0, cb, ctx, nullptr);
  });
  ExpectCreateRejected("NdkCreateQpWithSrq(NULL out)", [&](auto cb, PVOID ctx) {
    return pdd->NdkCreateQpWithSrq(pd, cq, cq, srq, nullptr, 4, 1, 0, cb, ctx, nullptr);
  });
  // NULL create callback (out-parameter given).
  NDK_CQ* out_cq = nullptr;
  NDK_PD* out_pd = nullptr;
  NDK_MR* out_mr = nullptr;
  NDK_QP* out_qp = nullptr;
  NDK_CONNECTOR* out_connector = nullptr;
  NDK_LISTENER* out_listener = nullptr;
  NDK_SHARED_ENDPOINT* out_endpoint = nullptr;
  NDK_MW* out_mw = nullptr;
  NDK_SRQ* out_srq = nullptr;
  ExpectStatus(d->NdkCreateCq(ad, 8, CountCqNotification, &events, nullptr, nullptr, nullptr, &out_cq),
               STATUS_INVALID_PARAMETER, "NdkCreateCq(NULL completion)");
  ExpectStatus(d->NdkCreatePd(ad, nullptr, nullptr, &out_pd), STATUS_INVALID_PARAMETER,
               "NdkCreatePd(NULL completion)");
  ExpectStatus(d->NdkCreateSharedEndpoint(ad, sa, sl, nullptr, nullptr, &out_endpoint),
               STATUS_INVALID_PARAMETER, "NdkCreateSharedEndpoint(NULL completion)");
  ExpectStatus(d->NdkCreateConnector(ad, nullptr, nullptr, &out_connector), STATUS_INVALID_PARAMETER,
               "NdkCreateConnector(NULL completion)");
  ExpectStatus(d->NdkCreateListener(ad, CountConnectEvent, &events, nullptr, nullptr, &out_listener),
               STATUS_INVALID_PARAMETER, "NdkCreateListener(NULL completion)");
  ExpectStatus(pdd->NdkCreateMr(pd, FALSE, nullptr, nullptr, &out_mr), STATUS_INVALID_PARAMETER,
               "NdkCreateMr(NULL completion)");
  ExpectStatus(pdd->NdkCreateMw(pd, nullptr, nullptr, &out_mw), STATUS_INVALID_PARAMETER,
               "NdkCreateMw(NULL completion)");
  ExpectStatus(pdd->NdkCreateSrq(pd, 4, 1, 0, nullptr, nullptr, nullptr, nullptr, nullptr, &out_srq),
               STATUS_INVALID_PARAMETER, "NdkCreateSrq(NULL completion)");
  ExpectStatus(pdd->NdkCreateQp(pd, cq, cq, nullptr, 4, 4, 1, 1, 0, nullptr, nullptr, &out_qp),
               STATUS_INVALID_PARAMETER, "NdkCreateQp(NULL completion)");
  // NULL parent / antecedent objects.
  ExpectCreateRejected("NdkCreateCq(NULL adapter)", [&](auto cb, PVOID ctx) {
    NDK_CQ* out = nullptr;
    return d->NdkCreateCq(nullptr, 8, CountCqNotification, &events, nullptr, cb, ctx, &out);
  });
  ExpectCreateRejected("NdkCreatePd(NULL adapter)", [&](auto cb, PVOID ctx) {
    NDK_PD* out = nullptr;
    return d->NdkCreatePd(nullptr, cb, ctx, &out);
  });
  ExpectCreateRejected("NdkCreateMr(NULL PD)", [&](auto cb, PVOID ctx) {
    NDK_MR* out = nullptr;
    return pdd->NdkCreateMr(nullptr, FALSE, cb, ctx, &out);
  });
  ExpectCreateRejected("NdkCreateQp(NULL receive CQ)", [&](auto cb, PVOID ctx) {
    NDK_QP* out = nullptr;
    return pdd->NdkCreateQp(pd, nullptr, cq, nullptr, 4, 4, 1, 1, 0, cb, ctx, &out);
  });
  ExpectCreateRejected("NdkCreateQp(NULL initiator CQ)", [&](auto cb, PVOID ctx) {
    NDK_QP* out = nullptr;
    return pdd->NdkCreateQp(pd, cq, nullptr, nullptr, 4, 4, 1, 1, 0, cb, ctx, &out);
  });
  ExpectCreateRejected("NdkCreateQpWithSrq(NULL SRQ)", [&](auto cb, PVOID ctx) {
    NDK_QP* out = nullptr;
    return pdd->NdkCreateQpWithSrq(pd, cq, cq, nullptr, nullptr, 4, 1, 0, cb, ctx, &out);
  });
  ExpectCreateRejected("NdkCreateSharedEndpoint(NULL address)", [&](auto cb, PVOID ctx) {
    NDK_SHARED_ENDPOINT* out = nullptr;
    return d->NdkCreateSharedEndpoint(ad, nullptr, sl, cb, ctx, &out);
  });
  EXPECT_EQ(a->OpenObjects(), 3u) << "a rejected create handed over an object";
}

// Objects of the wrong type (a CQ passed as a PD, ...) and memory that is no object at all.
TEST_P(BadInputTest, R014_WrongObjectTypesAreRejected) {
  TestAdapter* a = adapter_;
  ObjectSet s = a->CreateAll();
  ASSERT_NE(s.pd, nullptr);
  ASSERT_NE(s.qp, nullptr);
  const NDK_PD_DISPATCH* pdd = s.pd->Dispatch;
  // Zeroed memory, large enough for any object, stands for a foreign object.
  alignas(64) static unsigned char foreign[512] = {};
  auto as_pd = [](auto* p) { return reinterpret_cast<NDK_PD*>(p); };
  auto as_cq = [](auto* p) { return reinterpret_cast<NDK_CQ*>(p); };
  auto as_srq = [](auto* p) { return reinterpret_cast<NDK_SRQ*>(p); };
  ExpectCreateRejected("NdkCreateMr on a CQ passed as PD", [&](auto cb, PVOID ctx) {
    NDK_MR* out = nullptr;
    return pdd->NdkCreateMr(as_pd(s.cq), FALSE, cb, ctx, &out);
  });
  ExpectCreateRejected("NdkCreateMw on a QP passed as PD", [&](auto cb, PVOID ctx) {
    NDK_MW* out = nullptr;
    return pdd->NdkCreateMw(as_pd(s.qp), cb, ctx, &out);
  });
  ExpectCreateRejected("NdkCreateMr on foreign memory", [&](auto cb, PVOID ctx) {
    NDK_MR* out = nullptr;
    return pdd->NdkCreateMr(as_pd(foreign), FALSE, cb, ctx, &out);
  });
  ExpectCreateRejected("NdkCreateQp with a PD passed as CQ", [&](auto cb, PVOID ctx) {
    NDK_QP* out = nullptr;
    return pdd->NdkCreateQp(s.pd, as_cq(s.pd), s.cq, nullptr, 4, 4, 1, 1, 0, cb, ctx, &out);
  });
  ExpectCreateRejected("NdkCreateQp with an SRQ passed as CQ", [&](auto cb, PVOID ctx) {
    NDK_QP* out = nullptr;
    return pdd->NdkCreateQp(s.pd, s.cq, as_cq(s.srq), nullptr, 4, 4, 1, 1, 0, cb, ctx, &out);
  });
  ExpectCreateRejected("NdkCreateQpWithSrq with a CQ passed as SRQ", [&](auto cb, PVOID ctx) {
    NDK_QP* out = nullptr;
    return pdd->NdkCreateQpWithSrq(s.pd, s.cq, s.cq, as_srq(s.cq), nullptr, 4, 1, 0, cb, ctx, &out);
  });
  ExpectCreateRejected("NdkCreateCq on a PD passed as adapter", [&](auto cb, PVOID ctx) {
    NDK_CQ* out = nullptr;
    static EventCounter events;
    return a->dispatch()->NdkCreateCq(reinterpret_cast<NDK_ADAPTER*>(s.pd), 8, CountCqNotification,
                                      &events, nullptr, cb, ctx, &out);
  });
  // Requests through the right table with the wrong object.
  TestBuffer buffer;
  ExpectRequestRejected("NdkRegisterMr on an MW passed as MR", [&](auto cb, PVOID ctx) {
    return s.mr->Dispatch->NdkRegisterMr(reinterpret_cast<NDK_MR*>(s.mw), buffer.mdl(),
                                         buffer.length(), 0, cb, ctx);
  });
  ExpectRequestRejected("NdkResizeCq on a QP passed as CQ", [&](auto cb, PVOID ctx) {
    return s.cq->Dispatch->NdkResizeCq(as_cq(s.qp), 8, cb, ctx);
  });
  ExpectRequestRejected("NdkModifySrq on a PD passed as SRQ", [&](auto cb, PVOID ctx) {
    return s.srq->Dispatch->NdkModifySrq(as_srq(s.pd), 8, 0, cb, ctx);
  });
  ExpectRequestRejected("NdkListen on a connector passed as listener", [&](auto cb, PVOID ctx) {
    SOCKADDR_INET address = a->Address4(0);
    return s.listener->Dispatch->NdkListen(reinterpret_cast<NDK_LISTENER*>(s.connector),
                                           reinterpret_cast<PSOCKADDR>(&address),
                                           sizeof(SOCKADDR_IN), cb, ctx);
  });
  ExpectRequestRejected("NdkConnect with a CQ passed as QP", [&](auto cb, PVOID ctx) {
    SOCKADDR_INET src = a->Address4(0), dst = a->Address4(445);
    return s.connector->Dispatch->NdkConnect(
        s.connector, reinterpret_cast<NDK_QP*>(s.cq), reinterpret_cast<PSOCKADDR>(&src),
        sizeof(SOCKADDR_IN), reinterpret_cast<PSOCKADDR>(&dst), sizeof(SOCKADDR_IN), 1, 1, nullptr,
        0, cb, ctx);
  });
  // Work requests and plain calls.
  NDK_SGE sge{};
  ExpectStatus(s.qp->Dispatch->NdkSend(reinterpret_cast<NDK_QP*>(s.cq), nullptr, &sge, 1, 0),
               STATUS_INVALID_PARAMETER, "NdkSend on a CQ passed as QP");
  ExpectStatus(s.qp->Dispatch->NdkReceive(reinterpret_cast<NDK_QP*>(foreign), nullptr, &sge, 1),
               STATUS_INVALID_PARAMETER, "NdkReceive on foreign memory");
  ExpectStatus(s.qp->Dispatch->NdkBind(s.qp, nullptr, reinterpret_cast<NDK_MR*>(s.mw),
                                       reinterpret_cast<NDK_MW*>(s.mr), nullptr, PAGE_SIZE, 0),
               STATUS_INVALID_PARAMETER, "NdkBind with MR and MW swapped");
  ExpectStatus(s.qp->Dispatch->NdkInvalidate(s.qp, nullptr, &s.cq->Header, 0),
               STATUS_INVALID_PARAMETER, "NdkInvalidate of a CQ");
  ExpectStatus(s.srq->Dispatch->NdkSrqReceive(as_srq(s.qp), nullptr, &sge, 1),
               STATUS_INVALID_PARAMETER, "NdkSrqReceive on a QP passed as SRQ");
  // Void and token functions: no crash, nothing returned.
  s.cq->Dispatch->NdkArmCq(as_cq(s.pd), NDK_CQ_NOTIFY_ANY);
  s.qp->Dispatch->NdkFlush(reinterpret_cast<NDK_QP*>(s.cq));
  s.listener->Dispatch->NdkControlConnectEvents(reinterpret_cast<NDK_LISTENER*>(foreign), TRUE);
  NDK_RESULT results[2];
  EXPECT_EQ(s.cq->Dispatch->NdkGetCqResults(as_cq(s.qp), results, 2), 0u);
  EXPECT_EQ(s.mr->Dispatch->NdkGetLocalTokenFromMr(reinterpret_cast<NDK_MR*>(s.mw)), 0u);
  UINT32 token = 0x1234;
  pdd->NdkGetPrivilegedMemoryRegionToken(as_pd(s.cq), &token);
  EXPECT_EQ(token, 0x1234u);
  // Closing an adapter through an object close function is refused (adapters close through
  // CLOSE_NDK_ADAPTER_HANDLER), as is closing foreign memory.
  Completion& c = a->NewCompletion(Completion::Kind::kClose, "close of the adapter header");
  NDK_FN_CLOSE_OBJECT close = CloseFunctionOf(&s.pd->Header);
  c.BeginCall();
  NTSTATUS status = close(&a->get()->Header, &Completion::OnClose, c.context());
  c.EndCall(status);
  c.set_expected(0);
  EXPECT_EQ(status, STATUS_INVALID_PARAMETER) << StatusText(status);
  Completion& f = a->NewCompletion(Completion::Kind::kClose, "close of foreign memory");
  f.BeginCall();
  status = close(reinterpret_cast<NDK_OBJECT_HEADER*>(foreign), &Completion::OnClose, f.context());
  f.EndCall(status);
  f.set_expected(0);
  EXPECT_EQ(status, STATUS_INVALID_PARAMETER) << StatusText(status);
}

// Depths 0 or above the maximum on resize/modify; NULL or bad buffers for the queries
// (R210, R152).
TEST_P(BadInputTest, R152_R210_DepthsAndBuffers) {
  ASSERT_EQ(SoftNdkSetTunable("max_cq_depth", "32"), STATUS_SUCCESS);
  ASSERT_EQ(SoftNdkSetTunable("max_srq_depth", "16"), STATUS_SUCCESS);
  TestAdapter* a = OpenAdapter();
  ASSERT_NE(a, nullptr);
  NDK_CQ* cq = a->CreateCq(8);
  NDK_PD* pd = a->CreatePd();
  NDK_SRQ* srq = a->CreateSrq(pd, 8, 1, 0);
  ASSERT_NE(srq, nullptr);
  ASSERT_NE(cq, nullptr);
  auto resize = [&](ULONG depth) {
    return a->Request("NdkResizeCq(" + std::to_string(depth) + ")",
                      [&](auto cb, PVOID ctx) { return cq->Dispatch->NdkResizeCq(cq, depth, cb, ctx); });
  };
  EXPECT_EQ(resize(33).returned, STATUS_INVALID_PARAMETER) << "(R121)";
  EXPECT_EQ(resize(0).returned, STATUS_INVALID_PARAMETER);
  EXPECT_EQ(resize(MAXULONG).returned, STATUS_INVALID_PARAMETER);
  EXPECT_EQ(resize(32).status, STATUS_SUCCESS) << "MaxCqDepth itself (R121)";
  auto modify = [&](ULONG depth) {
    return a->Request("NdkModifySrq(" + std::to_string(depth) + ")",
                      [&](auto cb, PVOID ctx) { return srq->Dispatch->NdkModifySrq(srq, depth, 0, cb, ctx); });
  };
  EXPECT_EQ(modify(17).returned, STATUS_INVALID_PARAMETER) << "(R203)";
  EXPECT_EQ(modify(16).status, STATUS_SUCCESS) << "(R203)";
  // NdkQueryAdapterInfo: NULL size, too small a buffer (R210).
  NDK_ADAPTER_INFO info;
  EXPECT_EQ(a->dispatch()->NdkQueryAdapterInfo(a->get(), &info, nullptr), STATUS_INVALID_PARAMETER);
  ULONG size = 8;
  EXPECT_EQ(a->dispatch()->NdkQueryAdapterInfo(a->get(), &info, &size), STATUS_BUFFER_TOO_SMALL)
      << "(R210)";
  EXPECT_EQ(size, sizeof(NDK_ADAPTER_INFO)) << "(R210)";
  size = 0;
  EXPECT_EQ(a->dispatch()->NdkQueryAdapterInfo(a->get(), nullptr, &size), STATUS_BUFFER_TOO_SMALL);
  EXPECT_EQ(size, sizeof(NDK_ADAPTER_INFO));
  size = sizeof(info) + 16;
  EXPECT_EQ(a->dispatch()->NdkQueryAdapterInfo(a->get(), &info, &size), STATUS_SUCCESS);
  EXPECT_EQ(size, sizeof(NDK_ADAPTER_INFO)) << "bytes written (R210)";
  EXPECT_EQ(info.MaxCqDepth, 32u);
  EXPECT_EQ(a->dispatch()->NdkQueryAdapterInfo(nullptr, &info, &size), STATUS_INVALID_PARAMETER);
  // NdkBuildLAM: NULL MDL, size or FBO; too small a buffer reports the size needed.
  TestBuffer buffer(2 * PAGE_SIZE, 8);
  ULONG lam_size = 0, fbo = 0;
  EXPECT_EQ(a->dispatch()->NdkBuildLAM(a->get(), nullptr, PAGE_SIZE, nullptr, nullptr, nullptr,
                                       &lam_size, &fbo),
            STATUS_INVALID_PARAMETER);
  EXPECT_EQ(a->dispatch()->NdkBuildLAM(a->get(), buffer.mdl(), buffer.length(), nullptr, nullptr,
                                       nullptr, nullptr, &fbo),
            STATUS_INVALID_PARAMETER);
  EXPECT_EQ(a->dispatch()->NdkBuildLAM(a->get(), buffer.mdl(), buffer.length(), nullptr, nullptr,
                                       nullptr, &lam_size, &fbo),
            STATUS_BUFFER_TOO_SMALL)
      << "(R152)";
  // 8 KiB starting 8 bytes into a page span 3 pages.
  EXPECT_EQ(lam_size, FIELD_OFFSET(NDK_LOGICAL_ADDRESS_MAPPING, AdapterPageArray) +
                          3 * sizeof(NDK_LOGICAL_ADDRESS))
      << "the size needed (R152)";
  lam_size = 16;
  EXPECT_EQ(a->dispatch()->NdkBuildLAM(a->get(), buffer.mdl(), buffer.length(), nullptr, nullptr,
                                       reinterpret_cast<NDK_LOGICAL_ADDRESS_MAPPING*>(&info),
                                       &lam_size, &fbo),
            STATUS_BUFFER_TOO_SMALL)
      << "(R152)";
  EXPECT_EQ(lam_size, FIELD_OFFSET(NDK_LOGICAL_ADDRESS_MAPPING, AdapterPageArray) +
                          3 * sizeof(NDK_LOGICAL_ADDRESS))
      << "(R152)";
  // Address queries with a NULL length.
  NDK_LISTENER* listener = a->CreateListener();
  NDK_SHARED_ENDPOINT* endpoint = a->CreateSharedEndpoint(a->Address4(0));
  ASSERT_NE(endpoint, nullptr);
  ASSERT_NE(listener, nullptr);
  SOCKADDR_STORAGE out;
  EXPECT_EQ(endpoint->Dispatch->NdkGetLocalAddress(endpoint, reinterpret_cast<PSOCKADDR>(&out), nullptr),
            STATUS_INVALID_PARAMETER);
  ULONG length = sizeof(out);
  EXPECT_NE(listener->Dispatch->NdkGetLocalAddress(listener, reinterpret_cast<PSOCKADDR>(&out), &length),
            STATUS_SUCCESS)
      << "a listener that is not listening has no address";
}

// R090: SGE counts above the queue's maximum fail inline (as do NULL lists with a count).
TEST_P(BadInputTest, R090_SgeCountsAboveTheMaximum) {
  TestAdapter* a = adapter_;
  NDK_PD* pd = a->CreatePd();
  NDK_CQ* cq = a->CreateCq();
  QpShape shape;
  shape.receive_sge = 2;
  shape.initiator_sge = 3;
  NDK_QP* qp = a->CreateQp(pd, cq, cq, shape);
  NDK_SRQ* srq = a->CreateSrq(pd, 8, 2, 0);
  ASSERT_NE(qp, nullptr);
  ASSERT_NE(srq, nullptr);
  NDK_SGE sges[8] = {};
  const NDK_QP_DISPATCH* d = qp->Dispatch;
  ExpectStatus(d->NdkReceive(qp, nullptr, sges, 3), STATUS_INVALID_PARAMETER, "NdkReceive 3 > 2");
  ExpectStatus(srq->Dispatch->NdkSrqReceive(srq, nullptr, sges, 3), STATUS_INVALID_PARAMETER,
               "NdkSrqReceive 3 > 2");
  ExpectStatus(d->NdkSend(qp, nullptr, sges, 4, 0), STATUS_INVALID_PARAMETER, "NdkSend 4 > 3");
  ExpectStatus(d->NdkSendAndInvalidate(qp, nullptr, sges, 4, 0, 1), STATUS_INVALID_PARAMETER,
               "NdkSendAndInvalidate 4 > 3");
  ExpectStatus(d->NdkWrite(qp, nullptr, sges, 4, 0x1000, 1, 0), STATUS_INVALID_PARAMETER,
               "NdkWrite 4 > 3");
  ExpectStatus(d->NdkRead(qp, nullptr, sges, 4, 0x1000, 1, 0), STATUS_INVALID_PARAMETER,
               "NdkRead 4 > 3");
  ExpectStatus(d->NdkReceive(qp, nullptr, nullptr, 1), STATUS_INVALID_PARAMETER,
               "NdkReceive with a NULL list");
  ExpectStatus(d->NdkSend(qp, nullptr, nullptr, 1, 0), STATUS_INVALID_PARAMETER,
               "NdkSend with a NULL list");
  ExpectStatus(srq->Dispatch->NdkSrqReceive(srq, nullptr, nullptr, 1), STATUS_INVALID_PARAMETER,
               "NdkSrqReceive with a NULL list");
  // At the maximum: the receives are accepted (kept until a connection, R078); the initiator
  // requests get past the SGE check and fail only for want of a connection (R077).
  ExpectStatus(d->NdkReceive(qp, nullptr, sges, 2), STATUS_SUCCESS, "NdkReceive 2");
  ExpectStatus(srq->Dispatch->NdkSrqReceive(srq, nullptr, sges, 2), STATUS_SUCCESS,
               "NdkSrqReceive 2");
  ExpectStatus(d->NdkSend(qp, nullptr, sges, 3, 0), STATUS_CONNECTION_INVALID, "NdkSend 3");
  // Receives on a QP that has an SRQ are refused.
  NDK_QP* qp_srq = a->CreateQpWithSrq(pd, cq, cq, srq);
  ASSERT_NE(qp_srq, nullptr);
  EXPECT_FALSE(NT_SUCCESS(qp_srq->Dispatch->NdkReceive(qp_srq, nullptr, sges, 1)));
}

// Unknown flag bits are refused.
TEST_P(BadInputTest, UnknownFlagsAreRejected) {
  TestAdapter* a = adapter_;
  ObjectSet s = a->CreateAll();
  ASSERT_NE(s.qp, nullptr);
  TestBuffer buffer;
  ExpectRequestRejected("NdkRegisterMr(flags 0x80000000)", [&](auto cb, PVOID ctx) {
    return s.mr->Dispatch->NdkRegisterMr(s.mr, buffer.mdl(), buffer.length(), 0x80000000u, cb, ctx);
  });
  ExpectRequestRejected("NdkRegisterMr(flags 0x100)", [&](auto cb, PVOID ctx) {
    return s.mr->Dispatch->NdkRegisterMr(s.mr, buffer.mdl(), buffer.length(), 0x100u, cb, ctx);
  });
  NDK_SGE sge{};
  const NDK_QP_DISPATCH* d = s.qp->Dispatch;
  const ULONG unknown = 0x40000000u;
  ExpectStatus(d->NdkSend(s.qp, nullptr, &sge, 1, unknown), STATUS_INVALID_PARAMETER, "NdkSend");
  ExpectStatus(d->NdkSendAndInvalidate(s.qp, nullptr, &sge, 1, unknown, 1),
               STATUS_INVALID_PARAMETER, "NdkSendAndInvalidate");
  ExpectStatus(d->NdkWrite(s.qp, nullptr, &sge, 1, 0x1000, 1, unknown), STATUS_INVALID_PARAMETER,
               "NdkWrite");
  ExpectStatus(d->NdkRead(s.qp, nullptr, &sge, 1, 0x1000, 1, unknown), STATUS_INVALID_PARAMETER,
               "NdkRead");
  ExpectStatus(d->NdkBind(s.qp, nullptr, s.mr, s.mw, reinterpret_cast<PVOID>(uintptr_t{0x1000}),
                          PAGE_SIZE, unknown),
               STATUS_INVALID_PARAMETER, "NdkBind");
  NDK_LOGICAL_ADDRESS page;
  page.QuadPart = 0x10000;
  ExpectStatus(d->NdkFastRegister(s.qp, nullptr, s.mr_fast, 1, &page, 0, PAGE_SIZE,
                                  reinterpret_cast<PVOID>(uintptr_t{0x10000}), unknown),
               STATUS_INVALID_PARAMETER, "NdkFastRegister");
  ExpectStatus(d->NdkInvalidate(s.qp, nullptr, &s.mw->Header, unknown), STATUS_INVALID_PARAMETER,
               "NdkInvalidate");
  // A flag that belongs to another operation is just as unknown here.
  ExpectStatus(d->NdkSend(s.qp, nullptr, &sge, 1, NDK_OP_FLAG_ALLOW_REMOTE_READ),
               STATUS_INVALID_PARAMETER, "NdkSend(ALLOW_REMOTE_READ)");
  // An unknown arm type: no crash, no notification.
  EventCounter events;
  s.cq->Dispatch->NdkArmCq(s.cq, 77);
  EXPECT_EQ(events.count.load(), 0);
}

// R186: private data above MaxCallerData (connect) or MaxCalleeData (accept, reject) fails;
// so does a length with a NULL buffer. At the limit the call gets past the check.
TEST_P(BadInputTest, R186_PrivateDataOverTheLimit) {
  TestAdapter* a = adapter_;
  ObjectSet s = a->CreateAll();
  ASSERT_NE(s.connector, nullptr);
  const ULONG caller = a->info().MaxCallerData;
  const ULONG callee = a->info().MaxCalleeData;
  std::vector<unsigned char> data(std::max(caller, callee) + 16, 0xAB);
  SOCKADDR_INET src = a->Address4(0), dst = a->Address4(445);
  auto connect = [&](ULONG length, PVOID buffer) {
    return a->Request("NdkConnect(" + std::to_string(length) + " bytes)",
                      [&](auto cb, PVOID ctx) {
                        return s.connector->Dispatch->NdkConnect(
                            s.connector, s.qp, reinterpret_cast<PSOCKADDR>(&src), sizeof(SOCKADDR_IN),
                            reinterpret_cast<PSOCKADDR>(&dst), sizeof(SOCKADDR_IN), 1, 1, buffer,
                            length, cb, ctx);
                      },
                      {}, /*wait=*/false);
  };
  EXPECT_EQ(connect(caller + 1, data.data()).returned, STATUS_INVALID_PARAMETER) << "(R186)";
  EXPECT_EQ(connect(4, nullptr).returned, STATUS_INVALID_PARAMETER);
  ExpectRequestRejected("NdkConnectWithSharedEndpoint(too much data)", [&](auto cb, PVOID ctx) {
    return s.connector->Dispatch->NdkConnectWithSharedEndpoint(
        s.connector, s.qp, s.endpoint, reinterpret_cast<PSOCKADDR>(&dst), sizeof(SOCKADDR_IN), 1, 1,
        data.data(), caller + 1, cb, ctx);
  });
  ExpectRequestRejected("NdkAccept(too much data)", [&](auto cb, PVOID ctx) {
    return s.connector->Dispatch->NdkAccept(s.connector, s.qp, 1, 1, data.data(), callee + 1,
                                            nullptr, nullptr, cb, ctx);
  });
  ExpectRequestRejected("NdkAcceptEx(too much data)", [&](auto cb, PVOID ctx) {
    return s.connector->Dispatch->NdkAcceptEx(s.connector, s.qp, 1, 1, data.data(), callee + 1,
                                              nullptr, nullptr, cb, ctx);
  });
  ExpectStatus(s.connector->Dispatch->NdkReject(s.connector, data.data(), callee + 1),
               STATUS_INVALID_PARAMETER, "NdkReject(too much data) (R186)");
  ExpectStatus(s.connector->Dispatch->NdkReject(s.connector, nullptr, 1), STATUS_INVALID_PARAMETER,
               "NdkReject(NULL data, length 1)");
  // At the limit (and with no data at all, R185) the private data is not what fails.
  Requested at_limit = connect(caller, data.data());
  EXPECT_NE(at_limit.returned, STATUS_INVALID_PARAMETER) << "MaxCallerData itself (R186)";
  NDK_CONNECTOR* c2 = a->CreateConnector();
  ASSERT_NE(c2, nullptr);
  Requested none = a->Request("NdkConnect(no data)", [&](auto cb, PVOID ctx) {
    return c2->Dispatch->NdkConnect(c2, s.qp, reinterpret_cast<PSOCKADDR>(&src), sizeof(SOCKADDR_IN),
                                    reinterpret_cast<PSOCKADDR>(&dst), sizeof(SOCKADDR_IN), 1, 1,
                                    nullptr, 0, cb, ctx);
  }, {}, false);
  EXPECT_NE(none.returned, STATUS_INVALID_PARAMETER) << "(R185)";
  EXPECT_NE(s.connector->Dispatch->NdkReject(s.connector, data.data(), callee),
            STATUS_INVALID_PARAMETER)
      << "MaxCalleeData itself (R186)";
  for (Requested* r : {&at_limit, &none}) {
    if (r->returned == STATUS_PENDING) {
      EXPECT_TRUE(r->completion->WaitReturned());
    }
  }
}

// Malformed addresses: NULL, too short, an unknown family.
TEST_P(BadInputTest, MalformedAddressesAreRejected) {
  TestAdapter* a = adapter_;
  NDK_LISTENER* listener = a->CreateListener();
  NDK_CONNECTOR* connector = a->CreateConnector();
  NDK_PD* pd = a->CreatePd();
  NDK_CQ* cq = a->CreateCq();
  NDK_QP* qp = a->CreateQp(pd, cq, cq);
  ASSERT_NE(qp, nullptr);
  ASSERT_NE(listener, nullptr);
  ASSERT_NE(connector, nullptr);
  SOCKADDR_INET v4 = a->Address4(0), v6 = a->Address6(0);
  sockaddr_un unix_address{};
  unix_address.sun_family = AF_UNIX;
  struct Bad {
    const char* what;
    PSOCKADDR address;
    ULONG length;
  };
  const Bad bad[] = {
      {"NULL", nullptr, sizeof(SOCKADDR_IN)},
      {"IPv4, length 0", reinterpret_cast<PSOCKADDR>(&v4), 0},
      {"IPv4, length 8", reinterpret_cast<PSOCKADDR>(&v4), 8},
      {"IPv6, IPv4 length", reinterpret_cast<PSOCKADDR>(&v6), sizeof(SOCKADDR_IN)},
      {"AF_UNIX", reinterpret_cast<PSOCKADDR>(&unix_address), sizeof(unix_address)},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    ExpectCreateRejected(std::string("NdkCreateSharedEndpoint ") + b.what, [&](auto cb, PVOID ctx) {
      NDK_SHARED_ENDPOINT* out = nullptr;
      return a->dispatch()->NdkCreateSharedEndpoint(a->get(), b.address, b.length, cb, ctx, &out);
    });
    ExpectRequestRejected(std::string("NdkListen ") + b.what, [&](auto cb, PVOID ctx) {
      return listener->Dispatch->NdkListen(listener, b.address, b.length, cb, ctx);
    });
    ExpectRequestRejected(std::string("NdkConnect (destination) ") + b.what, [&](auto cb, PVOID ctx) {
      return connector->Dispatch->NdkConnect(connector, qp, reinterpret_cast<PSOCKADDR>(&v4),
                                             sizeof(SOCKADDR_IN), b.address, b.length, 1, 1, nullptr,
                                             0, cb, ctx);
    });
    ExpectRequestRejected(std::string("NdkConnect (source) ") + b.what, [&](auto cb, PVOID ctx) {
      return connector->Dispatch->NdkConnect(connector, qp, b.address, b.length,
                                             reinterpret_cast<PSOCKADDR>(&v4), sizeof(SOCKADDR_IN), 1,
                                             1, nullptr, 0, cb, ctx);
    });
  }
}

// The SoftNDK open API itself refuses bad options, unknown interfaces and NULL outputs.
TEST_P(BadInputTest, OpenAdapterRejectsBadArguments) {
  SOFTNDK_OPEN_OPTIONS options = Options();
  NDK_ADAPTER* out = nullptr;
  SOFTNDK_OPEN_OPTIONS small = options;
  small.Size = sizeof(options) - 1;
  EXPECT_EQ(SoftNdkOpenAdapter(host_.if_index, {2, 1}, &small, &out), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(SoftNdkOpenAdapter(0xFFFFFF, {2, 1}, &options, &out), STATUS_NOT_FOUND);
  EXPECT_EQ(SoftNdkOpenAdapter(host_.if_index, {2, 1}, &options, nullptr), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(out, nullptr);
  // An in-process host cannot be destroyed while an adapter is open on it (the TCP
  // fabric's hosts are the machine's own interfaces: nothing to destroy).
  if (GetParam().fabric == SOFTNDK_FABRIC_INPROC) {
    EXPECT_EQ(DestroyTestHost(host_), STATUS_INVALID_DEVICE_STATE);
  }
}

// An out-of-range completion mode (as a C consumer may store in the enum field) is refused
// — and reading it must not be undefined behaviour in the provider (UBSan).
TEST_P(BadInputTest, OpenAdapterRejectsUnknownCompletionMode) {
  SOFTNDK_OPEN_OPTIONS bad_mode = Options();
  const int32_t unknown = 42;
  static_assert(sizeof(bad_mode.CompletionMode) == sizeof(unknown));
  std::memcpy(&bad_mode.CompletionMode, &unknown, sizeof(unknown));
  NDK_ADAPTER* out = nullptr;
  EXPECT_EQ(SoftNdkOpenAdapter(host_.if_index, {2, 1}, &bad_mode, &out), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(out, nullptr);
}

SOFTNDK_INSTANTIATE_CONFORMANCE(BadInputTest);

}  // namespace
}  // namespace conformance
