// Building and closing one endpoint: shared by Pair (both in one process) and Session (one
// per process).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "perf/ndk_call.hpp"

namespace softndk::perf {

std::string status_text(NTSTATUS status) {
  if (const char* name = SoftNdkStatusName(status)) return name;
  char text[16];
  std::snprintf(text, sizeof(text), "0x%08X", static_cast<unsigned>(status));
  return text;
}

Error::Error(const std::string& what, NTSTATUS status)
    : std::runtime_error(what + ": " + status_text(status)), status_(status) {}

namespace detail {
namespace {

constexpr size_t kPage = 4096;

void no_cq_event(PVOID, NTSTATUS) {}

}  // namespace

std::vector<uint8_t> connection_data(NDK_CONNECTOR* connector, const char* who) {
  ULONG length = 0;
  NTSTATUS status = connector->Dispatch->NdkGetConnectionData(connector, nullptr, nullptr, nullptr, &length);
  std::vector<uint8_t> data(length);
  if (status == STATUS_SUCCESS && length > 0)
    status = connector->Dispatch->NdkGetConnectionData(connector, nullptr, nullptr, data.data(), &length);
  if (status != STATUS_SUCCESS) throw Error(std::string("reading the connection data (") + who + ")", status);
  data.resize(length);
  return data;
}

void open_adapter(Endpoint& e, const EndpointOptions& options, ULONG ifindex) {
  const std::string who = std::string(" (") + e.name + ")";
  SOFTNDK_OPEN_OPTIONS open{sizeof(open), options.fabric, options.completion_mode, 0};
  NTSTATUS status = ifindex != 0 ? SoftNdkOpenAdapter(ifindex, NDK_VERSION{2, 0}, &open, &e.adapter)
                                 : SoftNdkOpenAdapterByAddress(as_sockaddr(e.address), length_of(e.address),
                                                               NDK_VERSION{2, 0}, &open, &e.adapter);
  if (status != STATUS_SUCCESS) {
    e.adapter = nullptr;
    throw Error("opening the adapter" + who, status);
  }
  ULONG info_size = sizeof(e.info);
  status = e.adapter->Dispatch->NdkQueryAdapterInfo(e.adapter, &e.info, &info_size);
  if (status != STATUS_SUCCESS) throw Error("querying the adapter" + who, status);
}

void create_queues(Endpoint& e, const EndpointOptions& options) {
  NDK_ADAPTER* adapter = e.adapter;
  // Room for every request and receive, and for the control messages of a Session.
  ULONG cq_depth = 2 * options.queue_depth + 2;
  e.send_cq = create<NDK_CQ>("creating the send CQ", [&](auto cb, auto ctx, NDK_CQ** out) {
    return adapter->Dispatch->NdkCreateCq(adapter, cq_depth, no_cq_event, nullptr, nullptr, cb, ctx, out);
  });
  e.recv_cq = create<NDK_CQ>("creating the receive CQ", [&](auto cb, auto ctx, NDK_CQ** out) {
    return adapter->Dispatch->NdkCreateCq(adapter, cq_depth, no_cq_event, nullptr, nullptr, cb, ctx, out);
  });
  e.pd = create<NDK_PD>("creating the PD", [&](auto cb, auto ctx, NDK_PD** out) {
    return adapter->Dispatch->NdkCreatePd(adapter, cb, ctx, out);
  });
  NDK_PD* pd = e.pd;
  e.inline_data = std::min(options.inline_data, e.info.MaxInlineDataSize);
  e.max_sge = std::max<ULONG>(1, std::min({options.max_sge, e.info.MaxReceiveRequestSge,
                                           e.info.MaxInitiatorRequestSge}));
  // One receive more than the depth: a Session's control receive waits behind the data.
  e.qp = create<NDK_QP>("creating the QP", [&](auto cb, auto ctx, NDK_QP** out) {
    return pd->Dispatch->NdkCreateQp(pd, e.recv_cq, e.send_cq, &e, options.queue_depth + 1, options.queue_depth,
                                     e.max_sge, e.max_sge, e.inline_data, cb, ctx, out);
  });

  // Two areas, each rounded up to whole pages, and the control page.
  e.area = (options.area_size + kPage - 1) / kPage * kPage;
  size_t bytes = 2 * e.area + kControlPage;
  if (bytes > 0xFFFFFFFFull) throw Error("area_size too large for one MDL", STATUS_INVALID_PARAMETER);
  e.buffer = static_cast<uint8_t*>(std::aligned_alloc(kPage, bytes));
  if (e.buffer == nullptr) throw Error("allocating the buffer", STATUS_INSUFFICIENT_RESOURCES);
  std::memset(e.buffer, 0, bytes);  // touch every page before any measurement
  e.mdl = IoAllocateMdl(e.buffer, static_cast<ULONG>(bytes), FALSE, FALSE, nullptr);
  if (e.mdl == nullptr) throw Error("allocating the MDL", STATUS_INSUFFICIENT_RESOURCES);
  MmBuildMdlForNonPagedPool(e.mdl);
  e.mr = create<NDK_MR>("creating the MR", [&](auto cb, auto ctx, NDK_MR** out) {
    return pd->Dispatch->NdkCreateMr(pd, FALSE, cb, ctx, out);
  });
  NDK_MR* mr = e.mr;
  constexpr ULONG kFlags =
      NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ | NDK_MR_FLAG_ALLOW_REMOTE_WRITE;
  request("registering the MR", [&](auto cb, auto ctx) {
    return mr->Dispatch->NdkRegisterMr(mr, e.mdl, bytes, kFlags, cb, ctx);
  });
  e.local_token = mr->Dispatch->NdkGetLocalTokenFromMr(mr);
  e.remote_token = mr->Dispatch->NdkGetRemoteTokenFromMr(mr);
}

NDK_LISTENER* listen(Endpoint& e, Incoming* incoming) {
  NDK_ADAPTER* a = e.adapter;
  NDK_LISTENER* listener = create<NDK_LISTENER>("creating the listener", [&](auto cb, auto ctx, NDK_LISTENER** out) {
    return a->Dispatch->NdkCreateListener(a, &Incoming::on_connect, incoming, cb, ctx, out);
  });
  try {
    request("listening", [&](auto cb, auto ctx) {
      return listener->Dispatch->NdkListen(listener, as_sockaddr(e.address), length_of(e.address), cb, ctx);
    });
    ULONG length = sizeof(e.address);
    NTSTATUS got = listener->Dispatch->NdkGetLocalAddress(listener, as_sockaddr(e.address), &length);
    if (got != STATUS_SUCCESS) throw Error("reading the listener's address", got);
  } catch (...) {
    close(listener, "listener");
    throw;
  }
  return listener;
}

NTSTATUS start_connect(Endpoint& e, SOCKADDR_INET to, ULONG ird, ULONG ord, const std::vector<uint8_t>& data,
                       Waiter& connected) {
  NDK_ADAPTER* a = e.adapter;
  e.connector = create<NDK_CONNECTOR>("creating the connector", [&](auto cb, auto ctx, NDK_CONNECTOR** out) {
    return a->Dispatch->NdkCreateConnector(a, cb, ctx, out);
  });
  NTSTATUS returned = e.connector->Dispatch->NdkConnect(
      e.connector, e.qp, as_sockaddr(e.address), length_of(e.address), as_sockaddr(to), length_of(to), ird, ord,
      data_of(data), size_of(data), &Waiter::on_request, &connected);
  if (returned != STATUS_PENDING && returned != STATUS_SUCCESS) throw Error("connecting", returned);
  return returned;
}

void finish_connect(Endpoint& e, Waiter& connected, NTSTATUS returned, NDK_FN_DISCONNECT_EVENT_CALLBACK on_disconnect,
                    PVOID context, std::chrono::milliseconds timeout) {
  NTSTATUS status = connected.settle(returned, timeout);
  if (status != STATUS_SUCCESS) throw Error("connecting", status);
  e.peer_data = connection_data(e.connector, "the client");
  request("completing the connection", [&](auto cb, auto ctx) {
    return e.connector->Dispatch->NdkCompleteConnect(e.connector, on_disconnect, context, cb, ctx);
  });
}

NTSTATUS start_accept(Endpoint& e, ULONG ird, ULONG ord, const std::vector<uint8_t>& data,
                      NDK_FN_DISCONNECT_EVENT_CALLBACK on_disconnect, PVOID context, Waiter& accepted) {
  NTSTATUS returned = e.connector->Dispatch->NdkAccept(e.connector, e.qp, ird, ord, data_of(data), size_of(data),
                                                       on_disconnect, context, &Waiter::on_request, &accepted);
  if (returned != STATUS_PENDING && returned != STATUS_SUCCESS) throw Error("accepting", returned);
  return returned;
}

void close_endpoint(Endpoint& e) noexcept {
  close(e.qp, "QP");
  close(e.mr, "MR");
  if (e.mdl != nullptr) IoFreeMdl(e.mdl);
  e.mdl = nullptr;
  close(e.pd, "PD");
  close(e.send_cq, "send CQ");
  close(e.recv_cq, "receive CQ");
  if (e.adapter != nullptr) SoftNdkCloseAdapter(e.adapter);
  e.adapter = nullptr;
  std::free(e.buffer);
  e.buffer = nullptr;
}

}  // namespace detail
}  // namespace softndk::perf
