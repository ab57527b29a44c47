// ndkdemo: the quick-start job on the in-process fabric. Two in-process hosts each open
// an adapter; on each, in every completion mode, every NDK object type is created and
// closed through its dispatch table, and the path each completion took is printed. Then
// two hosts connect and move data (send, RDMA write, RDMA read), every byte checked.
#include <arpa/inet.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "ndk/softndk.h"
#include "perf/engine.hpp"
#include "perf/pair.hpp"

namespace {

// Waits for one completion callback of any kind; remembers what it delivered.
struct Waiter {
  std::mutex mutex;
  std::condition_variable done;
  bool called = false;
  NTSTATUS status = STATUS_PENDING;
  NDK_OBJECT_HEADER* object = nullptr;
  std::thread::id thread;

  void signal(NTSTATUS s, NDK_OBJECT_HEADER* o) {
    std::lock_guard lock(mutex);
    called = true;
    status = s;
    object = o;
    thread = std::this_thread::get_id();
    done.notify_all();
  }
  bool wait() {
    std::unique_lock lock(mutex);
    return done.wait_for(lock, std::chrono::seconds(10), [this] { return called; });
  }
  static void on_create(PVOID c, NTSTATUS s, NDK_OBJECT_HEADER* o) { static_cast<Waiter*>(c)->signal(s, o); }
  static void on_request(PVOID c, NTSTATUS s) { static_cast<Waiter*>(c)->signal(s, nullptr); }
  static void on_close(PVOID c) { static_cast<Waiter*>(c)->signal(STATUS_SUCCESS, nullptr); }
};

std::string status_text(NTSTATUS s) {
  const char* name = SoftNdkStatusName(s);
  return name != nullptr ? name : fmt::format("0x{:08X}", static_cast<uint32_t>(s));
}

struct Outcome {
  NTSTATUS status;
  std::string path;
};

// Turns a returned status plus a possible callback into "what happened".
Outcome settle(NTSTATUS returned, Waiter& w) {
  if (returned != STATUS_PENDING) return {returned, "inline"};
  if (!w.wait()) return {STATUS_IO_TIMEOUT, "pending, no callback"};
  return {w.status, w.thread == std::this_thread::get_id() ? "pending, callback on caller's thread"
                                                           : "pending, callback on provider thread"};
}

class Demo {
 public:
  Demo(NDK_ADAPTER* adapter, bool verbose) : adapter_(adapter), verbose_(verbose) {}
  int failures() const { return failures_; }

  template <class T, class Create>
  T* create(const char* what, Create&& call) {
    Waiter w;
    T* out = nullptr;
    Outcome o = settle(call(&Waiter::on_create, &w, &out), w);
    if (o.path != "inline") out = reinterpret_cast<T*>(w.object);
    report(fmt::format("create {}", what), o);
    return NT_SUCCESS(o.status) ? out : nullptr;
  }

  template <class Call>
  void request(const char* what, Call&& call) {
    Waiter w;
    report(what, settle(call(&Waiter::on_request, &w), w));
  }

  template <class T>
  void close(const char* what, T* object) {
    if (object == nullptr) return;
    Waiter w;
    // Every table's first member is its NDK_FN_CLOSE_OBJECT.
    NDK_FN_CLOSE_OBJECT close = *reinterpret_cast<const NDK_FN_CLOSE_OBJECT*>(object->Dispatch);
    report(fmt::format("close {}", what), settle(close(&object->Header, &Waiter::on_close, &w), w));
  }

  NDK_ADAPTER* adapter() const { return adapter_; }

 private:
  void report(const std::string& what, const Outcome& o) {
    bool ok = NT_SUCCESS(o.status);
    if (!ok) ++failures_;
    if (verbose_ || !ok)
      fmt::print("    {:<34} {:<28} {}\n", what, status_text(o.status), o.path);
  }

  NDK_ADAPTER* adapter_;
  bool verbose_;
  int failures_ = 0;
};

void cq_event(PVOID, NTSTATUS) {}
void connect_event(PVOID, NDK_CONNECTOR*) {}

// Creates and closes one of every object type, children before parents.
int tour(NDK_ADAPTER* adapter, const SOCKADDR_INET& local, bool verbose) {
  Demo d(adapter, verbose);
  const NDK_ADAPTER_DISPATCH* a = adapter->Dispatch;

  NDK_CQ* cq = d.create<NDK_CQ>("CQ (depth 64)", [&](auto cb, auto ctx, NDK_CQ** out) {
    return a->NdkCreateCq(adapter, 64, cq_event, nullptr, nullptr, cb, ctx, out);
  });
  NDK_PD* pd = d.create<NDK_PD>("PD", [&](auto cb, auto ctx, NDK_PD** out) {
    return a->NdkCreatePd(adapter, cb, ctx, out);
  });
  if (cq == nullptr || pd == nullptr) return d.failures() + 1;

  std::vector<unsigned char> buffer(3 * PAGE_SIZE);
  PMDL mdl = IoAllocateMdl(buffer.data() + 100, static_cast<ULONG>(2 * PAGE_SIZE), FALSE, FALSE, nullptr);
  MmBuildMdlForNonPagedPool(mdl);

  NDK_MR* mr = d.create<NDK_MR>("MR (registered)", [&](auto cb, auto ctx, NDK_MR** out) {
    return pd->Dispatch->NdkCreateMr(pd, FALSE, cb, ctx, out);
  });
  if (mr != nullptr)
    d.request("register MR (2 pages)", [&](auto cb, auto ctx) {
      return mr->Dispatch->NdkRegisterMr(mr, mdl, 2 * PAGE_SIZE,
                                         NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ, cb, ctx);
    });
  NDK_MR* frmr = d.create<NDK_MR>("MR (fast register)", [&](auto cb, auto ctx, NDK_MR** out) {
    return pd->Dispatch->NdkCreateMr(pd, TRUE, cb, ctx, out);
  });
  if (frmr != nullptr)
    d.request("initialize fast-register MR", [&](auto cb, auto ctx) {
      return frmr->Dispatch->NdkInitializeFastRegisterMr(frmr, 16, TRUE, cb, ctx);
    });
  NDK_MW* mw = d.create<NDK_MW>("MW", [&](auto cb, auto ctx, NDK_MW** out) {
    return pd->Dispatch->NdkCreateMw(pd, cb, ctx, out);
  });
  NDK_SRQ* srq = d.create<NDK_SRQ>("SRQ (depth 32)", [&](auto cb, auto ctx, NDK_SRQ** out) {
    return pd->Dispatch->NdkCreateSrq(pd, 32, 4, 0, nullptr, nullptr, nullptr, cb, ctx, out);
  });
  NDK_QP* qp = d.create<NDK_QP>("QP", [&](auto cb, auto ctx, NDK_QP** out) {
    return pd->Dispatch->NdkCreateQp(pd, cq, cq, nullptr, 32, 32, 4, 4, 64, cb, ctx, out);
  });
  NDK_QP* srq_qp = nullptr;
  if (srq != nullptr)
    srq_qp = d.create<NDK_QP>("QP with SRQ", [&](auto cb, auto ctx, NDK_QP** out) {
      return pd->Dispatch->NdkCreateQpWithSrq(pd, cq, cq, srq, nullptr, 32, 4, 64, cb, ctx, out);
    });
  NDK_CONNECTOR* connector = d.create<NDK_CONNECTOR>("connector", [&](auto cb, auto ctx, NDK_CONNECTOR** out) {
    return a->NdkCreateConnector(adapter, cb, ctx, out);
  });
  NDK_LISTENER* listener = d.create<NDK_LISTENER>("listener", [&](auto cb, auto ctx, NDK_LISTENER** out) {
    return a->NdkCreateListener(adapter, connect_event, nullptr, cb, ctx, out);
  });
  SOCKADDR_INET at = local;
  at.Ipv4.sin_port = htons(445);
  if (listener != nullptr)
    d.request("listen on port 445", [&](auto cb, auto ctx) {
      return listener->Dispatch->NdkListen(listener, reinterpret_cast<PSOCKADDR>(&at), sizeof(SOCKADDR_IN), cb, ctx);
    });
  SOCKADDR_INET any_port = local;
  NDK_SHARED_ENDPOINT* endpoint =
      d.create<NDK_SHARED_ENDPOINT>("shared endpoint (port 0)", [&](auto cb, auto ctx, NDK_SHARED_ENDPOINT** out) {
        return a->NdkCreateSharedEndpoint(adapter, reinterpret_cast<PSOCKADDR>(&any_port), sizeof(SOCKADDR_IN), cb,
                                          ctx, out);
      });

  // The lifetime rule users trip over: a parent closed while a child lives stays pending
  // until the child has closed, whatever the completion mode (R049).
  if (qp != nullptr && verbose) {
    Waiter pd_closed;
    NTSTATUS early = pd->Dispatch->NdkClosePd(&pd->Header, &Waiter::on_close, &pd_closed);
    fmt::print("    {:<34} {:<28} {}\n", "close PD while a QP is open", status_text(early),
               pd_closed.called ? "ERROR: completed early" : "waits for the QP");
    if (early != STATUS_PENDING) return d.failures() + 1;
    pd = nullptr;  // closing already; its callback comes after the children below
    d.close("QP (lets the PD close)", qp);
    qp = nullptr;
    d.close("QP with SRQ", srq_qp);
    srq_qp = nullptr;
    d.close("SRQ", srq);
    srq = nullptr;
    d.close("MW", mw);
    mw = nullptr;
    d.close("fast-register MR", frmr);
    frmr = nullptr;
    d.close("MR", mr);
    mr = nullptr;
    fmt::print("    {:<34} {:<28} {}\n", "PD close callback", pd_closed.wait() ? "called" : "MISSING",
               "after its last child closed");
    if (!pd_closed.called) return d.failures() + 1;
  }
  d.close("shared endpoint", endpoint);
  d.close("listener", listener);
  d.close("connector", connector);
  d.close("QP with SRQ", srq_qp);
  d.close("QP", qp);
  d.close("SRQ", srq);
  d.close("MW", mw);
  d.close("fast-register MR", frmr);
  d.close("MR", mr);
  d.close("PD", pd);
  d.close("CQ", cq);
  IoFreeMdl(mdl);
  return d.failures();
}

// A connection between two in-process hosts moving data: sends, RDMA writes and reads of
// patterns checked byte for byte where they land (the perf engine's verify mode).
int transfer(SOFTNDK_COMPLETION_MODE mode, bool ipv6) {
  namespace perf = softndk::perf;
  int failures = 0;
  try {
    perf::PairOptions options;
    options.area_size = 1 << 20;
    options.completion_mode = mode;
    options.ipv6 = ipv6;
    perf::Pair pair(options);
    for (perf::Operation op : {perf::Operation::kSend, perf::Operation::kWrite, perf::Operation::kRead}) {
      for (size_t size : {size_t{8}, size_t{4096}, size_t{1} << 20}) {
        perf::Params params;
        params.operation = op;
        params.mode = perf::Mode::kLatency;
        params.size = size;
        params.iterations = size > 65536 ? 20 : 200;
        params.warmup = 0;
        params.verify = true;
        perf::Result r = perf::run(pair, params);
        if (!r.ok()) ++failures;
        fmt::print("    {:<5} {:>8} B x {:<4} {}\n", perf::to_string(op), size, r.messages,
                   r.ok() ? fmt::format("{} bytes placed, every one verified", r.bytes)
                          : fmt::format("{}: {}", status_text(r.status), r.error));
      }
    }
    fmt::print("    connected {} over {}, then disconnected\n", ipv6 ? "2001:db8::/32 hosts" : "192.0.2.x to 198.51.100.x",
               ipv6 ? "IPv6" : "IPv4");
  } catch (const perf::Error& e) {
    fmt::print("    transfer set-up failed: {} ({})\n", e.what(), status_text(e.status()));
    ++failures;
  }
  return failures;
}

SOCKADDR_INET ipv4(const char* text) {
  SOCKADDR_INET a{};
  a.Ipv4.sin_family = AF_INET;
  inet_pton(AF_INET, text, &a.Ipv4.sin_addr);
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ndkdemo: create and close every NDK object on two in-process adapters, then move data between them, in every completion mode"};
  std::vector<std::string> modes{"inline", "caller-thread", "provider-thread", "mixed"};
  uint64_t seed = 1;
  bool quiet = false;
  app.add_option("-m,--mode", modes, "Completion modes to run")
      ->check(CLI::IsMember({"inline", "caller-thread", "provider-thread", "mixed"}));
  app.add_option("-s,--seed", seed, "Seed of the mixed mode");
  app.add_flag("-q,--quiet", quiet, "Print only failures and the summary");
  CLI11_PARSE(app, argc, argv);

  const SOCKADDR_INET host_addresses[2] = {ipv4("192.0.2.1"), ipv4("192.0.2.2")};
  ULONG ifindex[2];
  for (int h = 0; h < 2; ++h) {
    std::string name = fmt::format("demo-host-{}", h + 1);
    NTSTATUS s = SoftNdkCreateInprocHost(name.c_str(), &host_addresses[h], 1, &ifindex[h]);
    if (!NT_SUCCESS(s)) {
      fmt::print(stderr, "ndkdemo: cannot create in-process host {}: {}\n", name, status_text(s));
      return 1;
    }
  }

  int failures = 0;
  for (const std::string& mode_name : modes) {
    SOFTNDK_OPEN_OPTIONS options{sizeof(options), SOFTNDK_FABRIC_INPROC, SOFTNDK_COMPLETION_INLINE, seed};
    for (int m = SOFTNDK_COMPLETION_INLINE; m <= SOFTNDK_COMPLETION_MIXED; ++m)
      if (mode_name == SoftNdkCompletionModeName(static_cast<SOFTNDK_COMPLETION_MODE>(m)))
        options.CompletionMode = static_cast<SOFTNDK_COMPLETION_MODE>(m);
    fmt::print("== completion mode: {}{}\n", mode_name, mode_name == "mixed" ? fmt::format(" (seed {})", seed) : "");
    for (int h = 0; h < 2; ++h) {
      NDK_ADAPTER* adapter = nullptr;
      NTSTATUS s = SoftNdkOpenAdapter(ifindex[h], NDK_VERSION{2, 0}, &options, &adapter);
      if (!NT_SUCCESS(s)) {
        fmt::print(stderr, "ndkdemo: cannot open adapter on interface {}: {}\n", ifindex[h], status_text(s));
        return 1;
      }
      NDK_ADAPTER_INFO info{};
      ULONG size = sizeof(info);
      adapter->Dispatch->NdkQueryAdapterInfo(adapter, &info, &size);
      char text[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &host_addresses[h].Ipv4.sin_addr, text, sizeof(text));
      fmt::print("  adapter on demo-host-{} ({}, interface {}), NDK {}.{}, max CQ depth {}, max QP depth {}\n", h + 1,
                 text, ifindex[h], info.Version.Major, info.Version.Minor, info.MaxCqDepth,
                 info.MaxInitiatorQueueDepth);
      int f = tour(adapter, host_addresses[h], !quiet);
      failures += f;
      SoftNdkCloseAdapter(adapter);
      fmt::print("  adapter closed: {}\n", f == 0 ? "every object created and closed" : fmt::format("{} failures", f));
    }
    fmt::print("  transfer between two in-process hosts:\n");
    failures += transfer(options.CompletionMode, /*ipv6=*/mode_name == "mixed");
  }
  for (ULONG i : ifindex) SoftNdkDestroyInprocHost(i);
  fmt::print("ndkdemo: {}\n", failures == 0 ? "every object type created and closed, and data moved and verified, in every mode" : fmt::format("{} FAILURES", failures));
  return failures == 0 ? 0 : 1;
}
