// §5.D and §5.E: request completions, closes from inside callbacks, re-entrancy and
// non-blocking calls (R012, R047, R058-R065; R206/R207/R209 as a by-product).
#include <arpa/inet.h>

#include <type_traits>

#include "harness.hpp"

namespace conformance {
namespace {

class RequestTest : public ConformanceTest {};

using Call = std::function<NTSTATUS(NDK_FN_REQUEST_COMPLETION, PVOID)>;

// R058, R059 for every function that takes a RequestCompletion (ResizeCq, RegisterMr,
// DeregisterMr, InitializeFastRegisterMr, ModifySrq, BuildLAM, Listen, Connect,
// ConnectWithSharedEndpoint, CompleteConnect(Ex), Accept(Ex), Disconnect): pending ⇒ exactly
// one callback with the caller's context; anything else ⇒ none (checked by the helpers, and
// again after the adapter is closed).
TEST_P(RequestTest, R058_R059_EveryRequestFunctionHonoursTheContract) {
  TestAdapter* a = adapter_;
  ObjectSet s = a->CreateAll();
  ASSERT_NE(s.connector, nullptr);
  ASSERT_NE(s.qp, nullptr);
  TestBuffer buffer;
  alignas(8) unsigned char lam_storage[256];
  auto* lam = reinterpret_cast<NDK_LOGICAL_ADDRESS_MAPPING*>(lam_storage);
  ULONG lam_size = sizeof(lam_storage);
  ULONG fbo = 0;
  SOCKADDR_INET listen_address = a->Address4(0);
  SOCKADDR_INET source = a->Address4(0);
  SOCKADDR_INET destination = a->Address4(445);
  const std::pair<const char*, Call> calls[] = {
      {"NdkResizeCq", [&](auto cb, PVOID ctx) { return s.cq->Dispatch->NdkResizeCq(s.cq, 33, cb, ctx); }},
      {"NdkRegisterMr",
       [&](auto cb, PVOID ctx) {
         return s.mr->Dispatch->NdkRegisterMr(s.mr, buffer.mdl(), buffer.length(),
                                              NDK_MR_FLAG_ALLOW_REMOTE_WRITE, cb, ctx);
       }},
      {"NdkDeregisterMr", [&](auto cb, PVOID ctx) { return s.mr->Dispatch->NdkDeregisterMr(s.mr, cb, ctx); }},
      {"NdkInitializeFastRegisterMr",
       [&](auto cb, PVOID ctx) {
         return s.mr_fast->Dispatch->NdkInitializeFastRegisterMr(s.mr_fast, 4, FALSE, cb, ctx);
       }},
      {"NdkModifySrq", [&](auto cb, PVOID ctx) { return s.srq->Dispatch->NdkModifySrq(s.srq, 12, 0, cb, ctx); }},
      {"NdkBuildLAM",
       [&](auto cb, PVOID ctx) {
         return a->dispatch()->NdkBuildLAM(a->get(), buffer.mdl(), buffer.length(), cb, ctx, lam,
                                           &lam_size, &fbo);
       }},
      {"NdkListen",
       [&](auto cb, PVOID ctx) {
         return s.listener->Dispatch->NdkListen(
             s.listener, reinterpret_cast<PSOCKADDR>(&listen_address), sizeof(SOCKADDR_IN), cb, ctx);
       }},
      {"NdkConnect",
       [&](auto cb, PVOID ctx) {
         return s.connector->Dispatch->NdkConnect(
             s.connector, s.qp, reinterpret_cast<PSOCKADDR>(&source), sizeof(SOCKADDR_IN),
             reinterpret_cast<PSOCKADDR>(&destination), sizeof(SOCKADDR_IN), 1, 1, nullptr, 0, cb,
             ctx);
       }},
      {"NdkCompleteConnect",
       [&](auto cb, PVOID ctx) {
         return s.connector->Dispatch->NdkCompleteConnect(s.connector, nullptr, nullptr, cb, ctx);
       }},
      {"NdkCompleteConnectEx",
       [&](auto cb, PVOID ctx) {
         return s.connector->Dispatch->NdkCompleteConnectEx(s.connector, nullptr, nullptr, cb, ctx);
       }},
      {"NdkAccept",
       [&](auto cb, PVOID ctx) {
         return s.connector->Dispatch->NdkAccept(s.connector, s.qp, 1, 1, nullptr, 0, nullptr,
                                                 nullptr, cb, ctx);
       }},
      {"NdkAcceptEx",
       [&](auto cb, PVOID ctx) {
         return s.connector->Dispatch->NdkAcceptEx(s.connector, s.qp, 1, 1, nullptr, 0, nullptr,
                                                   nullptr, cb, ctx);
       }},
      {"NdkDisconnect", [&](auto cb, PVOID ctx) { return s.connector->Dispatch->NdkDisconnect(s.connector, cb, ctx); }},
  };
  for (const auto& [what, call] : calls) {
    Requested r = a->Request(what, call);
    EXPECT_NE(r.status, STATUS_PENDING) << what << ": no final status (R058)";
    EXPECT_NE(SoftNdkStatusName(r.status), nullptr) << what << ": " << StatusText(r.status);
    EXPECT_FALSE(r.completion->wrong_context()) << what << " (R058)";
  }
  // The successful ones really succeeded (spot checks of R058's "final status").
  EXPECT_NE(s.mr_fast->Dispatch->NdkGetLocalTokenFromMr(s.mr_fast), 0u);
  a->dispatch()->NdkReleaseLAM(a->get(), lam);
  // A second connector for NdkConnectWithSharedEndpoint (the first may have been used).
  NDK_CONNECTOR* c2 = a->CreateConnector();
  ASSERT_NE(c2, nullptr);
  Requested r = a->Request("NdkConnectWithSharedEndpoint", [&](auto cb, PVOID ctx) {
    return c2->Dispatch->NdkConnectWithSharedEndpoint(c2, s.qp, s.endpoint,
                                                      reinterpret_cast<PSOCKADDR>(&destination),
                                                      sizeof(SOCKADDR_IN), 1, 1, nullptr, 0, cb, ctx);
  });
  EXPECT_NE(r.status, STATUS_PENDING);
}

// R058, R059, R060: an injected STATUS_INSUFFICIENT_RESOURCES (a code each of these pages
// lists) reaches the consumer inline in inline mode and through the callback otherwise; the
// failed request has no effect, so the same request then succeeds.
TEST_P(RequestTest, R058_R059_R060_InjectedRequestFailure) {
  TestAdapter* a = adapter_;
  NDK_CQ* cq = a->CreateCq(8);
  NDK_PD* pd = a->CreatePd();
  NDK_MR* mr = a->CreateMr(pd, false);
  NDK_MR* fast = a->CreateMr(pd, true);
  NDK_SRQ* srq = a->CreateSrq(pd, 8, 1, 0);
  NDK_LISTENER* listener = a->CreateListener();
  NDK_LISTENER* listener2 = a->CreateListener();
  ASSERT_NE(listener2, nullptr);
  ASSERT_NE(srq, nullptr);
  ASSERT_NE(fast, nullptr);
  TestBuffer buffer;
  alignas(8) unsigned char lam_storage[256];
  auto* lam = reinterpret_cast<NDK_LOGICAL_ADDRESS_MAPPING*>(lam_storage);
  ULONG lam_size = sizeof(lam_storage);
  ULONG fbo = 0;
  SOCKADDR_INET address = a->Address4(7000);
  struct Case {
    const char* what;
    Call call;
    Call retry;  // the same request again (on a fresh object where it is one-shot)
  };
  const Case cases[] = {
      {"NdkResizeCq", [&](auto cb, PVOID ctx) { return cq->Dispatch->NdkResizeCq(cq, 20, cb, ctx); },
       nullptr},
      {"NdkRegisterMr",
       [&](auto cb, PVOID ctx) {
         return mr->Dispatch->NdkRegisterMr(mr, buffer.mdl(), buffer.length(), 0, cb, ctx);
       },
       nullptr},
      {"NdkDeregisterMr", [&](auto cb, PVOID ctx) { return mr->Dispatch->NdkDeregisterMr(mr, cb, ctx); },
       nullptr},
      {"NdkInitializeFastRegisterMr",
       [&](auto cb, PVOID ctx) { return fast->Dispatch->NdkInitializeFastRegisterMr(fast, 2, TRUE, cb, ctx); },
       nullptr},
      {"NdkModifySrq", [&](auto cb, PVOID ctx) { return srq->Dispatch->NdkModifySrq(srq, 6, 0, cb, ctx); },
       nullptr},
      {"NdkBuildLAM",
       [&](auto cb, PVOID ctx) {
         lam_size = sizeof(lam_storage);
         return a->dispatch()->NdkBuildLAM(a->get(), buffer.mdl(), buffer.length(), cb, ctx, lam,
                                           &lam_size, &fbo);
       },
       nullptr},
      {"NdkListen",
       [&](auto cb, PVOID ctx) {
         return listener->Dispatch->NdkListen(listener, reinterpret_cast<PSOCKADDR>(&address),
                                              sizeof(SOCKADDR_IN), cb, ctx);
       },
       // The failed Listen must not hold the port: another listener can take it.
       [&](auto cb, PVOID ctx) {
         return listener2->Dispatch->NdkListen(listener2, reinterpret_cast<PSOCKADDR>(&address),
                                               sizeof(SOCKADDR_IN), cb, ctx);
       }},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.what);
    ASSERT_EQ(SoftNdkInjectFault(a->get(), SOFTNDK_FAULT_REQUEST, STATUS_INSUFFICIENT_RESOURCES, 1),
              STATUS_SUCCESS);
    Requested failed = a->Request(std::string(k.what) + " (fault)", k.call);
    EXPECT_EQ(failed.status, STATUS_INSUFFICIENT_RESOURCES) << StatusText(failed.status) << " (R060)";
    if (mode() == SOFTNDK_COMPLETION_INLINE) {
      EXPECT_EQ(failed.returned, STATUS_INSUFFICIENT_RESOURCES) << "(R059)";
    } else if (mode() != SOFTNDK_COMPLETION_MIXED) {
      EXPECT_EQ(failed.returned, STATUS_PENDING) << "(R058)";
    }
    Requested again = a->Request(std::string(k.what) + " (retry)", k.retry ? k.retry : k.call);
    EXPECT_EQ(again.status, STATUS_SUCCESS)
        << "the request that failed left an effect behind: retry got " << StatusText(again.status);
  }
  a->dispatch()->NdkReleaseLAM(a->get(), lam);
  // The first listener never listened.
  SOCKADDR_STORAGE local;
  ULONG length = sizeof(local);
  EXPECT_NE(listener->Dispatch->NdkGetLocalAddress(listener, reinterpret_cast<PSOCKADDR>(&local),
                                                   &length),
            STATUS_SUCCESS)
      << "a listener whose Listen failed reports an address";
}

// R047, R062, R063: the consumer closes the object from inside the completion callback of a
// request on it — before the request call has returned when the callback comes on the caller's
// thread, racing the caller when it comes from the provider thread. The close returns S or P,
// completes exactly once, and the provider never touches the object afterwards (ASan/TSan).
TEST_P(RequestTest, R047_R062_R063_CloseFromInsideRequestCallback) {
  TestAdapter* a = adapter_;
  NDK_PD* pd = a->CreatePd();
  ASSERT_NE(pd, nullptr);
  TestBuffer buffer;
  SOCKADDR_INET address = a->Address6(0);
  const int rounds = 24;
  std::vector<Completion*> requests;
  auto close_target = [a](NDK_OBJECT_HEADER* target) {
    return [a, target](Completion&) { a->StartClose(target); };
  };
  for (int i = 0; i < rounds; ++i) {
    NDK_CQ* cq = a->CreateCq(8);
    NDK_MR* mr = a->CreateMr(pd, false);
    NDK_MR* fast = a->CreateMr(pd, true);
    NDK_SRQ* srq = a->CreateSrq(pd, 8, 1, 0);
    NDK_LISTENER* listener = a->CreateListener();
    ASSERT_NE(listener, nullptr);
    ASSERT_NE(srq, nullptr);
    ASSERT_NE(fast, nullptr);
    std::vector<std::pair<NDK_OBJECT_HEADER*, Requested>> issued;
    issued.emplace_back(H(cq), a->Request("NdkResizeCq (closes CQ)",
                                          [&](auto cb, PVOID ctx) { return cq->Dispatch->NdkResizeCq(cq, 9, cb, ctx); },
                                          close_target(H(cq)), /*wait=*/false));
    issued.emplace_back(H(mr), a->Request("NdkRegisterMr (closes MR)",
                                          [&](auto cb, PVOID ctx) {
                                            return mr->Dispatch->NdkRegisterMr(mr, buffer.mdl(), buffer.length(),
                                                                               0, cb, ctx);
                                          },
                                          close_target(H(mr)), /*wait=*/false));
    issued.emplace_back(H(fast), a->Request("NdkInitializeFastRegisterMr (closes MR)",
                                            [&](auto cb, PVOID ctx) {
                                              return fast->Dispatch->NdkInitializeFastRegisterMr(
                                                  fast, 1, FALSE, cb, ctx);
                                            },
                                            close_target(H(fast)), /*wait=*/false));
    issued.emplace_back(H(srq), a->Request("NdkModifySrq (closes SRQ)",
                                           [&](auto cb, PVOID ctx) {
                                             return srq->Dispatch->NdkModifySrq(srq, 4, 0, cb, ctx);
                                           },
                                           close_target(H(srq)), /*wait=*/false));
    issued.emplace_back(H(listener), a->Request("NdkListen (closes listener)",
                                                [&](auto cb, PVOID ctx) {
                                                  return listener->Dispatch->NdkListen(
                                                      listener, reinterpret_cast<PSOCKADDR>(&address),
                                                      sizeof(SOCKADDR_IN6), cb, ctx);
                                                },
                                                close_target(H(listener)), /*wait=*/false));
    for (auto& [object, r] : issued) {
      requests.push_back(r.completion);
      // No callback (inline completion): the consumer closes after the return instead.
      if (r.returned != STATUS_PENDING) a->StartClose(object);
    }
  }
  for (Completion* c : requests) {
    if (c->call_status() == STATUS_PENDING) {
      EXPECT_TRUE(c->WaitReturned()) << c->what() << " (R058)";
      EXPECT_EQ(c->status(), STATUS_SUCCESS) << c->what();
    }
  }
  a->CloseEverything();
}

// R047, R062 with NdkBuildLAM: the LAM is released and another object closed from inside
// the BuildLAM completion.
TEST_P(RequestTest, R047_R062_ReleaseAndCloseInsideBuildLamCallback) {
  TestAdapter* a = adapter_;
  for (int i = 0; i < 16; ++i) {
    auto buffer = std::make_shared<TestBuffer>(3 * PAGE_SIZE, 100);
    auto storage = std::make_shared<std::vector<uint64_t>>(64);
    auto* lam = reinterpret_cast<NDK_LOGICAL_ADDRESS_MAPPING*>(storage->data());
    auto lam_size = std::make_shared<ULONG>(static_cast<ULONG>(storage->size() * sizeof(uint64_t)));
    auto fbo = std::make_shared<ULONG>(0);
    NDK_CQ* cq = a->CreateCq(4);
    ASSERT_NE(cq, nullptr);
    NDK_ADAPTER* raw = a->get();
    const NDK_ADAPTER_DISPATCH* d = a->dispatch();
    Requested r = a->Request(
        "NdkBuildLAM (releases and closes)",
        [&](auto cb, PVOID ctx) {
          return d->NdkBuildLAM(raw, buffer->mdl(), buffer->length(), cb, ctx, lam, lam_size.get(),
                                fbo.get());
        },
        [a, d, raw, lam, cq, buffer, storage, lam_size, fbo](Completion& c) {
          if (NT_SUCCESS(c.status())) {
            EXPECT_EQ(*fbo, 100u) << "(R151)";
            EXPECT_EQ(lam->AdapterPageCount, 4u);
            d->NdkReleaseLAM(raw, lam);
          }
          a->StartClose(cq);
        },
        /*wait=*/false);
    if (r.returned == STATUS_PENDING) {
      EXPECT_TRUE(r.completion->WaitReturned());
    } else {
      EXPECT_EQ(r.returned, STATUS_SUCCESS);
      d->NdkReleaseLAM(raw, lam);
      a->StartClose(cq);
    }
  }
  a->CloseEverything();
}

// R047, R062, R020: every kind of object is closed from inside its own create callback
// (and, when created inline, right after the create returned), many times over.
TEST_P(RequestTest, R047_R062_CloseFromInsideCreateCallback) {
  TestAdapter* a = adapter_;
  NDK_PD* pd = a->CreatePd();
  NDK_CQ* cq = a->CreateCq();
  NDK_SRQ* srq = a->CreateSrq(pd);
  ASSERT_NE(srq, nullptr);
  ASSERT_NE(cq, nullptr);
  auto close_self = [a](Completion& c) {
    if (NT_SUCCESS(c.status()) && c.object() != nullptr) a->StartClose(c.object());
  };
  std::vector<Completion*> creates;
  for (int i = 0; i < 12; ++i) {
    creates.push_back(a->TryCreateCq(4, nullptr, nullptr, close_self).completion);
    creates.push_back(a->TryCreatePd(close_self).completion);
    creates.push_back(a->TryCreateConnector(close_self).completion);
    creates.push_back(a->TryCreateListener(nullptr, close_self).completion);
    creates.push_back(a->TryCreateSharedEndpoint(a->Address4(0), close_self).completion);
    creates.push_back(a->TryCreateMr(pd, i % 2 == 0, close_self).completion);
    creates.push_back(a->TryCreateMw(pd, close_self).completion);
    creates.push_back(a->TryCreateSrq(pd, 4, 1, 0, nullptr, nullptr, close_self).completion);
    creates.push_back(a->TryCreateQp(pd, cq, cq, QpShape{}, nullptr, close_self).completion);
    creates.push_back(a->TryCreateQpWithSrq(pd, cq, cq, srq, QpShape{}, nullptr, close_self).completion);
  }
  for (Completion* c : creates) {
    ASSERT_NE(c, nullptr);
    if (c->call_status() == STATUS_PENDING) {
      EXPECT_TRUE(c->WaitReturned());
    }
  }
  a->CloseEverything();  // those created inline
}

// R012, R065: with the provider thread held inside a consumer callback, every non-blocking
// call — creates of every type, requests, closes, work requests — still returns at once.
TEST_P(RequestTest, R012_R065_CallsReturnInBoundedTimeWhileProviderThreadIsHeld) {
  TestAdapter* a = adapter_;
  ObjectSet s = a->CreateAll();
  ASSERT_NE(s.pd, nullptr);
  ProviderThreadBlocker blocker(*a);
  if (mode() == SOFTNDK_COMPLETION_PROVIDER_THREAD) {
    EXPECT_TRUE(blocker.Active()) << "the provider thread could not be held";
  }
  auto timed = [](const char* what, auto&& call) {
    auto start = Clock::now();
    auto result = call();
    EXPECT_LT(Clock::now() - start, kBoundedCall) << what << " blocked (R012/R065)";
    return result;
  };
  std::vector<Completion*> started;
  // Creates (not waited for: their callbacks are queued behind the held one).
  auto no_wait_create = [&](const char* what, auto type_tag, NDK_OBJECT_TYPE type, auto&& call) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    Created<T> c = timed(what, [&] { return a->RunCreate<T>(what, type, call, {}, false); });
    started.push_back(c.completion);
  };
  no_wait_create("NdkCreateCq", static_cast<NDK_CQ*>(nullptr), NdkObjectTypeCq,
                 [&](auto cb, PVOID ctx, NDK_CQ** out) {
                   static EventCounter events;
                   return a->dispatch()->NdkCreateCq(a->get(), 4, CountCqNotification, &events,
                                                     nullptr, cb, ctx, out);
                 });
  no_wait_create("NdkCreatePd", static_cast<NDK_PD*>(nullptr), NdkObjectTypePd,
                 [&](auto cb, PVOID ctx, NDK_PD** out) {
                   return a->dispatch()->NdkCreatePd(a->get(), cb, ctx, out);
                 });
  no_wait_create("NdkCreateConnector", static_cast<NDK_CONNECTOR*>(nullptr), NdkObjectTypeConnector,
                 [&](auto cb, PVOID ctx, NDK_CONNECTOR** out) {
                   return a->dispatch()->NdkCreateConnector(a->get(), cb, ctx, out);
                 });
  no_wait_create("NdkCreateMr", static_cast<NDK_MR*>(nullptr), NdkObjectTypeMr,
                 [&](auto cb, PVOID ctx, NDK_MR** out) {
                   return s.pd->Dispatch->NdkCreateMr(s.pd, TRUE, cb, ctx, out);
                 });
  no_wait_create("NdkCreateQp", static_cast<NDK_QP*>(nullptr), NdkObjectTypeQp,
                 [&](auto cb, PVOID ctx, NDK_QP** out) {
                   return s.pd->Dispatch->NdkCreateQp(s.pd, s.cq, s.cq2, nullptr, 4, 4, 1, 1, 0, cb,
                                                      ctx, out);
                 });
  // Requests and every other non-blocking entry point.
  Exercise(*a, s);
  TestBuffer buffer;
  Requested reg = timed("NdkRegisterMr", [&] {
    return a->Request("NdkRegisterMr", [&](auto cb, PVOID ctx) {
      return s.mr->Dispatch->NdkRegisterMr(s.mr, buffer.mdl(), buffer.length(), 0, cb, ctx);
    }, {}, false);
  });
  started.push_back(reg.completion);
  // Closes: a child, then a parent whose close must pend.
  Completion* mw_close = timed("NdkCloseMw", [&] { return a->StartClose(s.mw); });
  Completion* pd_close = timed("NdkClosePd", [&] { return a->StartClose(s.pd); });
  ASSERT_NE(pd_close, nullptr);
  EXPECT_EQ(pd_close->call_status(), STATUS_PENDING);
  blocker.Release();
  for (Completion* c : started) {
    if (c->call_status() == STATUS_PENDING) {
      EXPECT_TRUE(c->WaitReturned()) << c->what();
    }
  }
  EXPECT_TRUE(TestAdapter::WaitCloseDone(mw_close));
  a->CloseEverything();
  EXPECT_TRUE(TestAdapter::WaitCloseDone(pd_close));
}

// R064: every non-blocking function works from inside every kind of callback: a create
// callback, a request callback, a close callback and an event callback.
TEST_P(RequestTest, R064_NonBlockingCallsInsideEveryKindOfCallback) {
  TestAdapter* a = adapter_;
  ObjectSet s = a->CreateAll();
  ASSERT_NE(s.pd, nullptr);
  auto runs = std::make_shared<std::atomic<int>>(0);
  // One set is exercised by one callback at a time (a consumer serialises CQ polling and
  // the posts on each queue): each callback below is waited for before the next is issued.
  auto exercise = [a, s, runs](Completion&) {
    Exercise(*a, s);
    runs->fetch_add(1);
  };
  int expected = 0;
  Created<NDK_PD> pd = a->TryCreatePd(exercise);
  ASSERT_TRUE(pd.ok());
  expected += pd.returned == STATUS_PENDING;
  Requested r = a->Request("NdkResizeCq", [&](auto cb, PVOID ctx) {
    return s.cq->Dispatch->NdkResizeCq(s.cq, 40, cb, ctx);
  }, exercise);
  expected += r.returned == STATUS_PENDING;
  // A close callback: the PD made above has a child, so its close pends and calls back.
  NDK_MR* child = a->CreateMr(pd.object, false);
  ASSERT_NE(child, nullptr);
  Completion* close = a->StartClose(pd.object, exercise);
  ASSERT_NE(close, nullptr);
  EXPECT_EQ(close->call_status(), STATUS_PENDING);
  ++expected;
  a->CloseAndWait(child);
  EXPECT_TRUE(TestAdapter::WaitCloseDone(close));
  // An event callback: the SRQ notification.
  auto events = std::make_shared<EventCounter>();
  auto event_done = std::make_shared<Gate>();
  events->hook = [a, s, runs, event_done](NTSTATUS) {
    Exercise(*a, s);
    runs->fetch_add(1);
    event_done->Open();
  };
  NDK_SRQ* srq = a->CreateSrq(s.pd, 8, 1, 0, events.get());
  ASSERT_NE(srq, nullptr);
  Requested arm = a->Request("NdkModifySrq (arm)", [&](auto cb, PVOID ctx) {
    return srq->Dispatch->NdkModifySrq(srq, 0, 1, cb, ctx);
  });
  EXPECT_EQ(arm.status, STATUS_SUCCESS);
  EXPECT_TRUE(event_done->Wait()) << "the SRQ notification never came (R200)";
  ++expected;
  EXPECT_EQ(runs->load(), expected);
  a->CloseAndWait(srq);
  static std::vector<std::shared_ptr<EventCounter>> keep;  // outlives the adapter
  keep.push_back(events);
}

// R206, R207, R209: every object answers NdkQueryExtension; an unknown interface is
// STATUS_NOT_SUPPORTED and the output is left untouched.
TEST_P(RequestTest, R206_R207_R209_QueryExtensionOnEveryObject) {
  ObjectSet s = adapter_->CreateAll();
  ASSERT_NE(s.pd, nullptr);
  std::vector<NDK_OBJECT_HEADER*> all = s.ChildrenFirst();
  all.push_back(&adapter_->get()->Header);
  GUID id = {0xDEADBEEF, 1, 2, {3, 4, 5, 6, 7, 8, 9, 10}};
  for (NDK_OBJECT_HEADER* h : all) {
    NDK_FN_QUERY_EXTENSION_INTERFACE query;
    if (h->ObjectType == NdkObjectTypeAdapter) {
      query = adapter_->dispatch()->NdkQueryExtension;
    } else {
      const void* dispatch;
      std::memcpy(&dispatch, reinterpret_cast<unsigned char*>(h) + offsetof(NDK_CQ, Dispatch),
                  sizeof(dispatch));
      std::memcpy(&query, static_cast<const unsigned char*>(dispatch) + sizeof(void (*)()),
                  sizeof(query));  // second entry of every object table
    }
    ASSERT_NE(query, nullptr) << "(R206)";
    NDK_EXTENSION_INTERFACE out;
    out.Dispatch = &id;
    EXPECT_EQ(query(h, &id, NDK_VERSION{1, 0}, &out), STATUS_NOT_SUPPORTED)
        << SoftNdkObjectTypeName(h->ObjectType) << " (R207/R209)";
    EXPECT_EQ(out.Dispatch, &id) << "output written on failure (R207)";
  }
}

// R208: a supported (GUID, version) — SoftNDK's diagnostics extension, on an adapter —
// answers STATUS_SUCCESS with pExtensionInterface->Dispatch pointing at its dispatch table,
// and the table works: it reports the adapter's fabric, interface, completion mode and
// version, and counts the objects and LAMs live on it. Another version (a higher minor,
// another major), another GUID or another object type is STATUS_NOT_SUPPORTED with the
// output untouched (R207, R209).
TEST_P(RequestTest, R208_SupportedExtensionGivesItsDispatchTable) {
  NDK_ADAPTER* a = adapter_->get();
  GUID id = SoftNdkDiagnosticsInterfaceId;
  const NDK_VERSION version{SOFTNDK_DIAGNOSTICS_VERSION_MAJOR, SOFTNDK_DIAGNOSTICS_VERSION_MINOR};
  NDK_EXTENSION_INTERFACE ext{};
  ASSERT_EQ(adapter_->dispatch()->NdkQueryExtension(&a->Header, &id, version, &ext), STATUS_SUCCESS)
      << "(R208)";
  ASSERT_NE(ext.Dispatch, nullptr) << "(R208)";
  const auto* table = static_cast<const SOFTNDK_DIAGNOSTICS_DISPATCH*>(ext.Dispatch);
  ASSERT_NE(table->SoftNdkQueryDiagnostics, nullptr) << "(R208)";

  SOFTNDK_ADAPTER_DIAGNOSTICS d{};
  d.Size = sizeof(d);
  ASSERT_EQ(table->SoftNdkQueryDiagnostics(a, &d), STATUS_SUCCESS);
  SOFTNDK_COMPLETION_MODE mode_in_force;
  ULONG64 seed = 0;
  ASSERT_EQ(SoftNdkGetCompletionMode(a, &mode_in_force, &seed), STATUS_SUCCESS);
  EXPECT_EQ(d.Size, sizeof(d));
  EXPECT_EQ(d.Fabric, GetParam().fabric);
  EXPECT_EQ(d.IfIndex, host_.if_index);
  EXPECT_EQ(d.CompletionMode, mode_in_force);
  EXPECT_EQ(d.CompletionMode, mode());
  EXPECT_EQ(d.Seed, seed);
  EXPECT_EQ(d.Version.Major, 2);
  EXPECT_EQ(d.Version.Minor, 1);
  EXPECT_EQ(d.LiveObjects[NdkObjectTypeUndefined], 0u);
  EXPECT_EQ(d.LiveObjects[NdkObjectTypeAdapter], 0u);

  // Counting: one of every type (two CQs, two MRs, two QPs), and a LAM.
  const SOFTNDK_ADAPTER_DIAGNOSTICS empty = d;
  ObjectSet s = adapter_->CreateAll();
  ASSERT_NE(s.pd, nullptr);
  TestBuffer buffer(PAGE_SIZE, 0);
  std::vector<uint64_t> storage(4);
  auto* lam = reinterpret_cast<NDK_LOGICAL_ADDRESS_MAPPING*>(storage.data());
  ULONG size = static_cast<ULONG>(storage.size() * sizeof(uint64_t)), fbo = 0;
  ASSERT_EQ(adapter_->Request("NdkBuildLAM", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                      return a->Dispatch->NdkBuildLAM(a, buffer.mdl(), PAGE_SIZE, cb, ctx, lam, &size, &fbo);
                    }).status,
            STATUS_SUCCESS);
  ASSERT_EQ(table->SoftNdkQueryDiagnostics(a, &d), STATUS_SUCCESS);
  const std::pair<NDK_OBJECT_TYPE, ULONG> created[] = {
      {NdkObjectTypeQp, 2}, {NdkObjectTypeCq, 2}, {NdkObjectTypeMr, 2},
      {NdkObjectTypeMw, 1}, {NdkObjectTypePd, 1}, {NdkObjectTypeSharedEndpoint, 1},
      {NdkObjectTypeConnector, 1}, {NdkObjectTypeListener, 1}, {NdkObjectTypeSrq, 1}};
  for (const auto& [type, count] : created)
    EXPECT_EQ(d.LiveObjects[type], empty.LiveObjects[type] + count) << SoftNdkObjectTypeName(type);
  EXPECT_EQ(d.LiveLams, empty.LiveLams + 1);
  a->Dispatch->NdkReleaseLAM(a, lam);
  adapter_->CloseAll(s);
  // An object counts until its close has completed (the callback returned).
  EXPECT_TRUE(WaitUntil([&] {
    return table->SoftNdkQueryDiagnostics(a, &d) == STATUS_SUCCESS &&
           std::memcmp(d.LiveObjects, empty.LiveObjects, sizeof(d.LiveObjects)) == 0 &&
           d.LiveLams == empty.LiveLams;
  })) << "the counts went back";

  // The table's own argument checks.
  SOFTNDK_ADAPTER_DIAGNOSTICS small{};
  small.Size = sizeof(small) - 1;
  EXPECT_EQ(table->SoftNdkQueryDiagnostics(a, &small), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(table->SoftNdkQueryDiagnostics(a, nullptr), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(table->SoftNdkQueryDiagnostics(nullptr, &d), STATUS_INVALID_PARAMETER);

  // What is not supported leaves the output alone.
  GUID other = id;
  other.Data4[7] ^= 1;
  NDK_PD* pd = adapter_->CreatePd();
  ASSERT_NE(pd, nullptr);
  struct Case {
    const char* what;
    NDK_OBJECT_HEADER* object;
    NDK_FN_QUERY_EXTENSION_INTERFACE query;
    GUID* guid;
    NDK_VERSION version;
  } unsupported[] = {
      {"a higher minor", &a->Header, adapter_->dispatch()->NdkQueryExtension, &id,
       NDK_VERSION{SOFTNDK_DIAGNOSTICS_VERSION_MAJOR, SOFTNDK_DIAGNOSTICS_VERSION_MINOR + 1}},
      {"another major", &a->Header, adapter_->dispatch()->NdkQueryExtension, &id,
       NDK_VERSION{SOFTNDK_DIAGNOSTICS_VERSION_MAJOR + 1, 0}},
      {"major 0", &a->Header, adapter_->dispatch()->NdkQueryExtension, &id, NDK_VERSION{0, 0}},
      {"another GUID", &a->Header, adapter_->dispatch()->NdkQueryExtension, &other, version},
      {"a PD", &pd->Header, pd->Dispatch->NdkQueryExtension, &id, version},
  };
  for (const Case& c : unsupported) {
    NDK_EXTENSION_INTERFACE out;
    out.Dispatch = &other;
    EXPECT_EQ(c.query(c.object, c.guid, c.version, &out), STATUS_NOT_SUPPORTED) << c.what << " (R209)";
    EXPECT_EQ(out.Dispatch, &other) << c.what << ": output written on failure (R207)";
  }
  adapter_->CloseAndWait(pd);
}

SOFTNDK_INSTANTIATE_CONFORMANCE(RequestTest);

}  // namespace
}  // namespace conformance
