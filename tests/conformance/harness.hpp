// The conformance harness: "written once, run over every fabric".
//
// Every conformance test is a value-parameterised GoogleTest case whose parameter is a
// (fabric, completion mode[, seed]) pair. SOFTNDK_INSTANTIATE_CONFORMANCE(Suite) below
// instantiates a suite over every fabric the project has and every completion mode; the
// fabric list lives only here and in harness.cpp (kFabrics), so adding the TCP fabric means
// adding one line to each.
//
// The helpers check the asynchronous contract on every call they make, so that every test
// checks it for free:
//   - a create/request/close that returns anything but STATUS_PENDING never calls its
//     callback (checked at once and again after the adapter is closed, R016, R038, R059);
//   - one that returns STATUS_PENDING calls it exactly once with the caller's context
//     (R015, R039, R058), and a pending create never writes its out-parameter (R017);
//   - a callback that runs before the call returns implies STATUS_PENDING (R061).
// The data-path suites build on this fixture (datapath.hpp): each test there also drives a
// remote peer (peer.hpp), and is instantiated per fabric x mode x peer form
// (SOFTNDK_INSTANTIATE_DATAPATH; on TCP also with the peer in another process), with
// per-fabric and per-form exclusions (ExclusionFor) stating why.
// Every wait is bounded (kWait); a provider that never calls back fails the test instead of
// hanging it. Inside a callback the helpers never wait (use the Try* creates there: a nested
// create or request completes later, and is checked when the adapter closes). Only the
// public API (ndk/ndkpi.h, ndk/softndk.h) is used.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ndk/mdl.h"
#include "ndk/ndkpi.h"
#include "ndk/softndk.h"

namespace conformance {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

// The longest any single wait may take (generous for ThreadSanitizer builds).
inline constexpr Millis kWait{5000};
// How long a negative check ("has not completed yet") gives the provider to misbehave.
inline constexpr Millis kSettle{30};
// Bound on the duration of one non-blocking (T1) call (R012, R065): far above what a
// non-blocking call needs even under sanitizers, far below what a blocked one takes.
inline constexpr Millis kBoundedCall{500};

// ---------------------------------------------------------------------------- params --

// How a data-path test reaches its remote peer (peer.hpp): by direct calls in this thread;
// only through a command channel to a thread that owns the peer's adapter; or through the
// same channel to a child process (this test binary re-executed) that owns it — the fabrics
// that cross processes (TCP) run there as between two programs.
enum class PeerForm { kNone, kDirect, kChannel, kProcess };

struct Param {
  SOFTNDK_FABRIC fabric;
  const char* fabric_name;
  SOFTNDK_COMPLETION_MODE mode;
  ULONG64 seed;  // mixed mode only
  std::string name;
  PeerForm peer = PeerForm::kNone;  // data-path suites only
};

// Every (mode, seed) combination for one fabric.
std::vector<Param> ParamsFor(SOFTNDK_FABRIC fabric);
// The same, each once with the direct peer and once with the channel peer; on a fabric
// that crosses processes, also with the peer in another process in the modes of
// kProcessPeerModes (harness.cpp).
std::vector<Param> DataPathParamsFor(SOFTNDK_FABRIC fabric);

// Per-fabric exclusions: the reason a test ("Suite.Test", a prefix of its name) cannot run
// on `fabric`, or null. The table is in harness.cpp, next to kFabrics.
const char* ExclusionFor(SOFTNDK_FABRIC fabric, const std::string& suite, const std::string& test);
// The same for one instance of a data-path test: the fabric's exclusions, then those of its
// peer form (kProcessExclusions: tests that need the peer in the test's own process, or
// that meet a provider bug only when the peer is in another process).
const char* ExclusionFor(const Param& param, const std::string& suite, const std::string& test);
std::string ParamName(const testing::TestParamInfo<Param>& info);
void PrintTo(const Param& param, std::ostream* os);

// The one place that lists the fabrics (with kFabrics in harness.cpp): in-process, and
// iWARP over the machine's loopback (both sides in this process, every byte through the
// kernel's TCP).
#define SOFTNDK_INSTANTIATE_CONFORMANCE(suite)                                               \
  INSTANTIATE_TEST_SUITE_P(Inproc, suite,                                                    \
                           ::testing::ValuesIn(::conformance::ParamsFor(SOFTNDK_FABRIC_INPROC)), \
                           ::conformance::ParamName);                                        \
  INSTANTIATE_TEST_SUITE_P(Tcp, suite,                                                       \
                           ::testing::ValuesIn(::conformance::ParamsFor(SOFTNDK_FABRIC_TCP)), \
                           ::conformance::ParamName)
// The data-path suites (datapath.hpp): every fabric x every mode x the direct and channel
// peer forms, and on TCP the process form in the modes of kProcessPeerModes.
#define SOFTNDK_INSTANTIATE_DATAPATH(suite)                                                  \
  INSTANTIATE_TEST_SUITE_P(                                                                  \
      Inproc, suite, ::testing::ValuesIn(::conformance::DataPathParamsFor(SOFTNDK_FABRIC_INPROC)), \
      ::conformance::ParamName);                                                             \
  INSTANTIATE_TEST_SUITE_P(                                                                  \
      Tcp, suite, ::testing::ValuesIn(::conformance::DataPathParamsFor(SOFTNDK_FABRIC_TCP)), \
      ::conformance::ParamName)

// ----------------------------------------------------------------------- status text --

std::string StatusText(NTSTATUS status);
std::string VersionText(NDK_VERSION version);

// A monotonically increasing stamp shared by every recorder, to check callback order.
uint64_t NextStamp();

// The SoftNDK diagnostics extension of an adapter (NdkQueryExtension, R208): what it says
// about `adapter` now, or a failure (and false) when the extension or the query fails.
bool QueryDiagnostics(NDK_ADAPTER* adapter, SOFTNDK_ADAPTER_DIAGNOSTICS* out);

// R107 (decision, docs/DATAPATH.md): TypeSpecificCompletionOutput means something only for
// NdkOperationTypeReceiveAndInvalidate (the invalidated token, R096); SoftNDK sets it to 0
// for every other type. Every NDK_RESULT_EX the data-path helpers poll is checked with this.
void ExpectTypeSpecificOutput(ULONG type, uint64_t output);

// Polls `done` every millisecond until it holds; false after `timeout`.
bool WaitUntil(const std::function<bool()>& done, Millis timeout = kWait);

// True on a thread that is running one of the harness's callbacks. The helpers never wait
// there (a provider thread waiting for its own queue would deadlock).
bool InsideCallback();

// ------------------------------------------------------------------------ completion --

// Records the callbacks of one create, request or close. The context passed to the
// provider is the recorder itself; the callback checks that it comes back unchanged.
class Completion {
 public:
  enum class Kind { kCreate, kRequest, kClose };

  Completion(Kind kind, std::string what);
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;

  // The provider-side callbacks (pass these with `context()`).
  static VOID OnCreate(PVOID context, NTSTATUS status, NDK_OBJECT_HEADER* object);
  static VOID OnRequest(PVOID context, NTSTATUS status);
  static VOID OnClose(PVOID context);
  PVOID context() { return this; }

  // Runs inside the callback, after the arguments are recorded and before `returned()`
  // counts it. Set it before the call.
  std::function<void(Completion&)> hook;

  // Bracket the provider call that takes this recorder (records the caller's thread).
  void BeginCall();
  void EndCall(NTSTATUS returned);

  Kind kind() const { return kind_; }
  const std::string& what() const { return what_; }
  int entered() const { return entered_.load(); }
  int returned() const { return returned_.load(); }
  // Waits (bounded) until `n` callbacks have returned. False on timeout.
  bool WaitReturned(int n = 1, Millis timeout = kWait) const;
  // Waits (bounded) until `n` callbacks have been entered.
  bool WaitEntered(int n = 1, Millis timeout = kWait) const;

  NTSTATUS call_status() const { return call_status_.load(); }
  bool call_returned() const { return call_done_.load(); }
  NTSTATUS status() const;              // status passed to the (first) callback
  NDK_OBJECT_HEADER* object() const;    // pNdkObject passed to the (first) callback
  std::thread::id callback_thread() const;
  std::thread::id caller_thread() const;
  bool ran_before_return() const { return before_return_.load(); }
  bool wrong_context() const { return wrong_context_.load(); }
  uint64_t enter_stamp() const { return enter_stamp_.load(); }
  uint64_t return_stamp() const { return return_stamp_.load(); }

  // Callbacks this call must produce in total: 0 (non-pending) or 1 (pending); -1 unknown.
  void set_expected(int n) { expected_.store(n); }
  int expected() const { return expected_.load(); }

 private:
  void Enter(NTSTATUS status, NDK_OBJECT_HEADER* object, PVOID context);
  void Leave();

  const Kind kind_;
  const std::string what_;
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::atomic<int> entered_{0};
  std::atomic<int> returned_{0};
  std::atomic<int> expected_{-1};
  std::atomic<bool> in_call_{false};
  std::atomic<bool> call_done_{false};
  std::atomic<NTSTATUS> call_status_{STATUS_PENDING};
  std::atomic<bool> before_return_{false};
  std::atomic<bool> wrong_context_{false};
  std::atomic<uint64_t> enter_stamp_{0};
  std::atomic<uint64_t> return_stamp_{0};
  NTSTATUS status_ = STATUS_PENDING;
  NDK_OBJECT_HEADER* object_ = nullptr;
  std::thread::id caller_;
  std::thread::id callback_thread_;
};

// A one-shot gate a callback can block on (bounded) until the test opens it.
class Gate {
 public:
  void Open();
  bool IsOpen() const;
  // Waits until opened; false after `timeout`.
  bool Wait(Millis timeout = kWait) const;

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  bool open_ = false;
};

// ------------------------------------------------------------------- event callbacks --

// Counts event callbacks (CQ/SRQ notification, connect event) per context.
struct EventCounter {
  std::atomic<int> count{0};
  std::atomic<bool> wrong_context{false};
  std::atomic<uint64_t> last_stamp{0};
  std::atomic<NTSTATUS> last_status{STATUS_PENDING};
  std::atomic<int> running{0};          // callbacks executing right now
  std::atomic<bool> overlapped{false};  // two ran at once (R072)
  std::function<void(NTSTATUS)> hook;  // runs inside the callback
  // Waits (bounded) until `n` callbacks have been counted.
  bool WaitCount(int n, Millis timeout = kWait) const;
};
VOID CountCqNotification(PVOID context, NTSTATUS status);
VOID CountSrqNotification(PVOID context, NTSTATUS status);
VOID CountConnectEvent(PVOID context, NDK_CONNECTOR* connector);

class TestAdapter;

// The connect events of one listener: every connector handed over is checked (R021-R024)
// and tracked by its adapter (closed at teardown), then queued for the test (R173).
class ConnectEvents {
 public:
  explicit ConnectEvents(TestAdapter& adapter) : adapter_(adapter) {}
  static VOID OnConnect(PVOID context, NDK_CONNECTOR* connector);
  // The next connector not yet taken; null after `timeout`.
  NDK_CONNECTOR* Next(Millis timeout = kWait);
  int count() const { return count_.load(); }
  uint64_t last_stamp() const { return last_stamp_.load(); }
  // Runs inside the callback, after the connector is tracked.
  std::function<void(NDK_CONNECTOR*)> hook;

 private:
  TestAdapter& adapter_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<NDK_CONNECTOR*> queue_;
  std::atomic<int> count_{0};
  std::atomic<uint64_t> last_stamp_{0};
};

// The disconnect events of one connection (plain or Ex form, R169, R170).
struct DisconnectEvents {
  std::atomic<int> count{0};
  std::atomic<ULONG> reason{0xFFFFFFFFu};  // the Ex form's ProviderDisconnectReason
  std::atomic<bool> wrong_context{false};
  std::atomic<uint64_t> last_stamp{0};
  std::function<void()> hook;  // runs inside the callback
  static VOID On(PVOID context);
  static VOID OnEx(PVOID context, ULONG reason);
  bool WaitCount(int n, Millis timeout = kWait) const;
};

// ------------------------------------------------------------------------ memory --

// A page-aligned buffer with an MDL describing `length` bytes at `offset` into it.
class TestBuffer {
 public:
  explicit TestBuffer(size_t length = 2 * PAGE_SIZE, size_t offset = 0);
  ~TestBuffer();
  TestBuffer(const TestBuffer&) = delete;
  TestBuffer& operator=(const TestBuffer&) = delete;
  MDL* mdl() const { return mdl_; }
  size_t length() const { return length_; }
  // The first byte the MDL describes.
  unsigned char* data() const { return memory_ == nullptr ? nullptr : memory_ + offset_; }

 private:
  size_t offset_ = 0;
  unsigned char* memory_ = nullptr;
  MDL* mdl_ = nullptr;
  size_t length_;
};

// ------------------------------------------------------------------------ objects --

// The close function and type of a handed-over object, fetched once at hand-over (the
// consumer may overwrite Dispatch afterwards, R025).
struct LiveObject {
  NDK_OBJECT_HEADER* header;
  NDK_OBJECT_TYPE type;
  NDK_FN_CLOSE_OBJECT close;
  bool closing = false;
};

// The close entry of any object (every non-adapter table starts with it).
NDK_FN_CLOSE_OBJECT CloseFunctionOf(NDK_OBJECT_HEADER* header);

// The entries of a dispatch table as raw pointers (every member is a function pointer).
template <class Table>
std::vector<const void*> EntriesOf(const Table* table) {
  using Fn = void (*)();
  static_assert(sizeof(Table) % sizeof(Fn) == 0, "a dispatch table holds only pointers");
  std::vector<const void*> entries;
  const auto* raw = reinterpret_cast<const unsigned char*>(table);
  for (size_t i = 0; i < sizeof(Table) / sizeof(Fn); ++i) {
    Fn fn;
    std::memcpy(&fn, raw + i * sizeof(Fn), sizeof(Fn));
    entries.push_back(reinterpret_cast<const void*>(fn));
  }
  return entries;
}

template <class T>
NDK_OBJECT_HEADER* H(T* object) {
  return object == nullptr ? nullptr : &object->Header;
}

// What a create produced. `object` is null unless the create succeeded.
template <class T>
struct Created {
  NTSTATUS returned = STATUS_PENDING;  // what the create function returned
  NTSTATUS status = STATUS_PENDING;    // the final status (inline or from the callback)
  T* object = nullptr;
  Completion* completion = nullptr;
  bool ok() const { return NT_SUCCESS(status) && object != nullptr; }
};

// What a request produced.
struct Requested {
  NTSTATUS returned = STATUS_PENDING;
  NTSTATUS status = STATUS_PENDING;  // final (inline, or from the callback once it came)
  Completion* completion = nullptr;
};

// The default arguments of the creates.
struct QpShape {
  ULONG receive_depth = 8;
  ULONG initiator_depth = 8;
  ULONG receive_sge = 2;
  ULONG initiator_sge = 2;
  ULONG inline_data = 0;
};

// One of every object type on one adapter (R049 relations: PD parent of MRs, MW, SRQ, QPs;
// CQs antecedents of both QPs; SRQ antecedent of qp_srq).
struct ObjectSet {
  NDK_CQ* cq = nullptr;
  NDK_CQ* cq2 = nullptr;
  NDK_PD* pd = nullptr;
  NDK_MR* mr = nullptr;       // FastRegister = FALSE
  NDK_MR* mr_fast = nullptr;  // FastRegister = TRUE
  NDK_MW* mw = nullptr;
  NDK_SRQ* srq = nullptr;
  NDK_QP* qp = nullptr;
  NDK_QP* qp_srq = nullptr;
  NDK_CONNECTOR* connector = nullptr;
  NDK_LISTENER* listener = nullptr;
  NDK_SHARED_ENDPOINT* endpoint = nullptr;
  // Every object, children first (a valid close order).
  std::vector<NDK_OBJECT_HEADER*> ChildrenFirst() const;
};

// One open adapter and everything the test created on it. Thread-safe: the helpers may be
// called from several threads and from inside callbacks (they never wait there unless the
// caller asks to).
class TestAdapter {
 public:
  TestAdapter(NDK_ADAPTER* adapter, const Param& param, const SOCKADDR_INET& v4,
              const SOCKADDR_INET& v6);
  ~TestAdapter();
  TestAdapter(const TestAdapter&) = delete;
  TestAdapter& operator=(const TestAdapter&) = delete;

  NDK_ADAPTER* get() const { return adapter_; }
  const NDK_ADAPTER_DISPATCH* dispatch() const { return dispatch_; }
  const NDK_ADAPTER_INFO& info() const { return info_; }
  const Param& param() const { return param_; }
  bool closed() const { return closed_; }
  // An address of the adapter's host with this port.
  SOCKADDR_INET Address4(uint16_t port = 0) const;
  SOCKADDR_INET Address6(uint16_t port = 0) const;

  Completion& NewCompletion(Completion::Kind kind, std::string what);

  // ---- creates: Try* report what happened; the plain ones require success ----
  // `hook` runs inside the create callback (if the create pends).
  using Hook = std::function<void(Completion&)>;
  Created<NDK_CQ> TryCreateCq(ULONG depth, EventCounter* notify = nullptr,
                              GROUP_AFFINITY* affinity = nullptr, Hook hook = {},
                              bool null_notification = false);
  Created<NDK_PD> TryCreatePd(Hook hook = {});
  Created<NDK_SHARED_ENDPOINT> TryCreateSharedEndpoint(const SOCKADDR_INET& address,
                                                       Hook hook = {});
  Created<NDK_CONNECTOR> TryCreateConnector(Hook hook = {});
  Created<NDK_LISTENER> TryCreateListener(EventCounter* events = nullptr, Hook hook = {},
                                          bool null_event = false);
  // A listener whose connect events hand their connectors to `events`.
  Created<NDK_LISTENER> TryCreateListenerWith(ConnectEvents* events, Hook hook = {});
  Created<NDK_MR> TryCreateMr(NDK_PD* pd, bool fast_register, Hook hook = {});
  Created<NDK_MW> TryCreateMw(NDK_PD* pd, Hook hook = {});
  Created<NDK_SRQ> TryCreateSrq(NDK_PD* pd, ULONG depth, ULONG max_sge, ULONG threshold,
                                EventCounter* notify = nullptr,
                                GROUP_AFFINITY* affinity = nullptr, Hook hook = {});
  Created<NDK_QP> TryCreateQp(NDK_PD* pd, NDK_CQ* receive_cq, NDK_CQ* initiator_cq,
                              const QpShape& shape = {}, PVOID qp_context = nullptr,
                              Hook hook = {});
  Created<NDK_QP> TryCreateQpWithSrq(NDK_PD* pd, NDK_CQ* receive_cq, NDK_CQ* initiator_cq,
                                     NDK_SRQ* srq, const QpShape& shape = {},
                                     PVOID qp_context = nullptr, Hook hook = {});

  NDK_CQ* CreateCq(ULONG depth = 16, EventCounter* notify = nullptr);
  NDK_PD* CreatePd();
  NDK_SHARED_ENDPOINT* CreateSharedEndpoint(const SOCKADDR_INET& address);
  NDK_CONNECTOR* CreateConnector();
  NDK_LISTENER* CreateListener(EventCounter* events = nullptr);
  NDK_MR* CreateMr(NDK_PD* pd, bool fast_register);
  NDK_MW* CreateMw(NDK_PD* pd);
  NDK_SRQ* CreateSrq(NDK_PD* pd, ULONG depth = 8, ULONG max_sge = 2, ULONG threshold = 0,
                     EventCounter* notify = nullptr);
  NDK_QP* CreateQp(NDK_PD* pd, NDK_CQ* receive_cq, NDK_CQ* initiator_cq,
                   const QpShape& shape = {}, PVOID qp_context = nullptr);
  NDK_QP* CreateQpWithSrq(NDK_PD* pd, NDK_CQ* receive_cq, NDK_CQ* initiator_cq, NDK_SRQ* srq,
                          const QpShape& shape = {}, PVOID qp_context = nullptr);
  // One object of every type (see ObjectSet).
  ObjectSet CreateAll();

  // Runs a create through the contract checks: `call` issues the create with the given
  // callback, context and out-parameter (a guard value is placed in it first).
  template <class T>
  Created<T> RunCreate(const std::string& what, NDK_OBJECT_TYPE type,
                       const std::function<NTSTATUS(NDK_FN_CREATE_COMPLETION, PVOID, T**)>& call,
                       Hook hook = {}, bool wait = true);

  // ---- requests ----
  // Issues a request that takes a RequestCompletion. With `wait`, waits (bounded) for the
  // callback of a pending request; `status` is then the final status.
  Requested Request(const std::string& what,
                    const std::function<NTSTATUS(NDK_FN_REQUEST_COMPLETION, PVOID)>& call,
                    Hook hook = {}, bool wait = true);

  // ---- close ----
  // Starts the close of a tracked object through the close function saved at hand-over and
  // checks R037 (S or P). Never waits: callable from inside callbacks. `hook` runs inside
  // the close callback.
  Completion* StartClose(NDK_OBJECT_HEADER* object, Hook hook = {});
  template <class T>
  Completion* StartClose(T* object, Hook hook = {}) {
    return StartClose(H(object), std::move(hook));
  }
  // Starts the close and waits (bounded) for it to complete (R038, R039).
  void CloseAndWait(NDK_OBJECT_HEADER* object, Hook hook = {});
  template <class T>
  void CloseAndWait(T* object, Hook hook = {}) {
    CloseAndWait(H(object), std::move(hook));
  }
  // True when the close of `c` has completed (returned S, or its callback returned).
  static bool CloseDone(const Completion* c);
  static bool WaitCloseDone(const Completion* c, Millis timeout = kWait);
  // Closes a set (children first) and waits for every close.
  void CloseAll(const ObjectSet& set);

  // Whether the object is tracked and its close has not been started.
  bool IsOpen(NDK_OBJECT_HEADER* header) const;
  // Registers an object handed over outside the helpers.
  void Track(NDK_OBJECT_HEADER* header);
  // Checks an object handed over by an event (R021-R024) and tracks it.
  void TrackHandedOver(NDK_OBJECT_HEADER* header, NDK_OBJECT_TYPE type, const std::string& what);
  // Objects tracked and not yet being closed.
  size_t OpenObjects() const;

  // ---- teardown ----
  // Waits (bounded) until every pending create and request has called back (their
  // callbacks may close objects themselves).
  void WaitForPendingCallbacks();
  // Closes every tracked object that is still open and waits for all closes. Call it only
  // when no other thread is still issuing calls on the adapter.
  void CloseEverything();
  // SoftNdkCloseAdapter on another thread, bounded by `timeout`. Returns false (and leaks
  // the adapter) when it did not return in time.
  bool CloseAdapter(Millis timeout = kWait);
  // After the adapter is closed: every recorder got exactly the callbacks it should have.
  void VerifyCallbackCounts() const;
  // Whether the adapter was leaked because its close hung.
  bool leaked() const { return leaked_; }
  // The test closed the adapter itself (SoftNdkCloseAdapter or the NDIS handler returned):
  // TearDown skips it, and its recorders may be freed (no callback can follow, R052).
  void MarkClosed() { closed_ = true; }
  // The adapter is in an unknown state (its close hung or returned too early): TearDown
  // leaves it and its recorders alone and leaks them.
  void Abandon();

 private:
  void CheckHandedOver(NDK_OBJECT_HEADER* header, NDK_OBJECT_TYPE type,
                       const std::string& what) const;

  NDK_ADAPTER* adapter_;
  const NDK_ADAPTER_DISPATCH* dispatch_;
  NDK_ADAPTER_INFO info_{};
  Param param_;
  SOCKADDR_INET v4_;
  SOCKADDR_INET v6_;
  bool closed_ = false;
  bool leaked_ = false;
  EventCounter default_events_;  // context of event callbacks the test did not ask about

  mutable std::mutex mutex_;
  std::deque<std::unique_ptr<Completion>> completions_;
  std::vector<LiveObject> objects_;
  std::unordered_map<NDK_OBJECT_HEADER*, size_t> latest_;  // header -> its newest record
  std::vector<Completion*> closes_;  // every close started by the helpers
};

// A hook that blocks on `gate` (bounded) unless it runs on the thread that made the call
// (blocking there would block the test itself).
std::function<void(Completion&)> BlockOffCallerThread(std::shared_ptr<Gate> gate);

// Holds an adapter's provider thread inside a request callback until Release(), so that
// everything the provider queues meanwhile stays queued. Active() says whether that
// worked (it cannot in inline and caller-thread modes; in mixed mode it retries).
class ProviderThreadBlocker {
 public:
  explicit ProviderThreadBlocker(TestAdapter& adapter);
  ~ProviderThreadBlocker() { Release(); }
  ProviderThreadBlocker(const ProviderThreadBlocker&) = delete;
  ProviderThreadBlocker& operator=(const ProviderThreadBlocker&) = delete;
  bool Active() const { return active_; }
  void Release();

 private:
  std::shared_ptr<Gate> gate_ = std::make_shared<Gate>();
  Completion* held_ = nullptr;
  bool active_ = false;
};

// Calls every non-blocking, non-close entry point of every object in `set` (and of the
// adapter) once with valid arguments, checking that each returns promptly (R012, R065) with
// a status that makes sense. Request functions go through TestAdapter::Request. Safe inside
// callbacks. Must not run concurrently with itself on the same set (a consumer serialises
// CQ polling and the posts on each queue).
void Exercise(TestAdapter& adapter, const ObjectSet& set);

// ------------------------------------------------------------------------- fixture --

// A host of the fabric under test with addresses unique to this test.
struct TestHost {
  SOFTNDK_FABRIC fabric;
  ULONG if_index = 0;
  SOCKADDR_INET v4{};
  SOCKADDR_INET v6{};
};
// Creates a host for `fabric` (in-process: a fresh host with documentation addresses).
bool CreateTestHost(SOFTNDK_FABRIC fabric, TestHost* host);
NTSTATUS DestroyTestHost(const TestHost& host);

class ConformanceTest : public testing::TestWithParam<Param> {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Opens one more adapter on the test's host (tunables set before apply to it); null (and
  // a failure) when the open fails.
  TestAdapter* OpenAdapter(NDK_VERSION version = NDK_VERSION{2, 1});
  // Opens with explicit options (may fail; returns null and the status).
  NDK_ADAPTER* RawOpen(NDK_VERSION version, NTSTATUS* status);
  // Adopts an adapter opened by the test (closed and checked in TearDown).
  TestAdapter& Adopt(NDK_ADAPTER* adapter);

  SOFTNDK_COMPLETION_MODE mode() const { return GetParam().mode; }
  bool AsyncMode() const { return mode() != SOFTNDK_COMPLETION_INLINE; }
  // The TCP fabric's test hosts are addresses of one interface (the machine's loopback,
  // which owns all of 127.0.0.0/8): there the peer's addresses are this adapter's too.
  bool HostsShareAnInterface() const { return GetParam().fabric == SOFTNDK_FABRIC_TCP; }
  // A fixed port for a test to listen or bind on. Every TCP test host shares ::1, so there
  // the port moves by process (the same within one): tests running in parallel processes
  // do not meet on it.
  uint16_t TestPort(uint16_t base) const {
    if (GetParam().fabric != SOFTNDK_FABRIC_TCP) return base;
    return static_cast<uint16_t>(20000 + (base + static_cast<uint32_t>(getpid()) * 97u) % 12000u);
  }
  SOFTNDK_OPEN_OPTIONS Options() const;

  TestHost host_{};
  TestAdapter* adapter_ = nullptr;  // the primary adapter (opened at NDK 2.1)
  std::vector<std::unique_ptr<TestAdapter>> adapters_;
};

// --------------------------------------------------------------------- templates --

template <class T>
Created<T> TestAdapter::RunCreate(
    const std::string& what, NDK_OBJECT_TYPE type,
    const std::function<NTSTATUS(NDK_FN_CREATE_COMPLETION, PVOID, T**)>& call, Hook hook,
    bool wait) {
  Created<T> result;
  if (InsideCallback()) wait = false;
  Completion& c = NewCompletion(Completion::Kind::kCreate, what);
  c.hook = [this, type, what, hook = std::move(hook)](Completion& self) {
    // The object arrives only here (R018); track it before the test's hook can close it.
    if (NT_SUCCESS(self.status()) && self.object() != nullptr) {
      CheckHandedOver(self.object(), type, what);
      Track(self.object());
    }
    if (hook) hook(self);
  };
  T* const guard = reinterpret_cast<T*>(uintptr_t{0x5AFE0000DEAD0000ULL});
  T* out = guard;
  c.BeginCall();
  NTSTATUS status = call(&Completion::OnCreate, c.context(), &out);
  c.EndCall(status);
  result.returned = status;
  result.completion = &c;
  if (status == STATUS_PENDING) {
    c.set_expected(1);
    // R017: a pending create never writes the out-parameter.
    EXPECT_EQ(out, guard) << what << ": pending create wrote its out-parameter (R017)";
    if (!wait) return result;
    if (!c.WaitReturned(1)) {
      ADD_FAILURE() << what << ": STATUS_PENDING but no create callback within "
                    << kWait.count() << " ms (R015)";
      return result;
    }
    EXPECT_EQ(out, guard) << what << ": pending create wrote its out-parameter (R017)";
    result.status = c.status();
    if (NT_SUCCESS(c.status())) {
      EXPECT_NE(c.object(), nullptr) << what << ": async success without an object (R018)";
      result.object = reinterpret_cast<T*>(c.object());
    } else {
      // R019: an asynchronous failure hands over no object.
      EXPECT_EQ(c.object(), nullptr) << what << ": async failure " << StatusText(c.status())
                                     << " handed over an object (R019)";
    }
  } else {
    c.set_expected(0);
    // R016: a non-pending create never calls its callback.
    EXPECT_EQ(c.entered(), 0) << what << ": returned " << StatusText(status)
                              << " yet called its create callback (R016)";
    result.status = status;
    if (NT_SUCCESS(status)) {
      // R014: STATUS_SUCCESS hands the object over through the out-parameter.
      EXPECT_EQ(status, STATUS_SUCCESS) << what;
      EXPECT_NE(out, guard) << what << ": STATUS_SUCCESS left the out-parameter unset (R014)";
      EXPECT_NE(out, nullptr) << what << ": STATUS_SUCCESS with a null object (R014)";
      if (out != guard && out != nullptr) {
        CheckHandedOver(&out->Header, type, what);
        Track(&out->Header);
        result.object = out;
      }
    }
  }
  return result;
}

}  // namespace conformance
