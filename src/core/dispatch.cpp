// The dispatch tables. Every entry: convert and validate the objects (a null or foreign
// pointer, or an object of the wrong type, is STATUS_INVALID_PARAMETER; an object whose
// close was requested is STATUS_INVALID_DEVICE_STATE), validate the arguments against
// the adapter's limits, then act. Validation failures are always returned inline.
#include "core/dispatch.hpp"

#include <cstring>
#include <new>
#include <span>
#include <type_traits>

#include "core/adapter.hpp"
#include "core/connection.hpp"
#include "core/cq.hpp"
#include "core/pd.hpp"
#include "core/qp.hpp"
#include "ndk/softndk.h"

namespace softndk::dispatch {
namespace {

// ---- helpers ------------------------------------------------------------------------

// Validates `object` for an operation: present, of the right type, not closing.
template <class T, class NdkStruct>
NTSTATUS resolve(NdkStruct* ndk, T** out) {
  T* object = T::from(ndk);
  if (object == nullptr) return STATUS_INVALID_PARAMETER;
  if (object->close_requested()) return STATUS_INVALID_DEVICE_STATE;
  *out = object;
  return STATUS_SUCCESS;
}

// Creates a child object and completes the create as the adapter's policy says. The
// factory runs only when no fault is injected; it returns the object, or null with the
// failure in `status`.
template <class Factory>
NTSTATUS create(Object& parent, NDK_FN_CREATE_COMPLETION completion, PVOID context, PVOID* out,
                Factory&& factory) {
  if (completion == nullptr || out == nullptr) return STATUS_INVALID_PARAMETER;
  Adapter& adapter = parent.adapter();
  NTSTATUS status = adapter.take_fault(SOFTNDK_FAULT_CREATE);
  Object* created = nullptr;
  if (NT_SUCCESS(status)) {
    try {
      if constexpr (std::is_invocable_v<Factory, NTSTATUS&>)
        created = factory(status);
      else
        created = factory();
    } catch (const std::bad_alloc&) {
      status = STATUS_INSUFFICIENT_RESOURCES;  // R030
    }
  }
  return adapter.complete_create(&parent, completion, context, status, created, out);
}

NTSTATUS close_object(NDK_OBJECT_HEADER* header, NDK_FN_CLOSE_COMPLETION completion,
                      PVOID context) {
  Object* object = Object::from_header(header, NdkObjectTypeUndefined);
  if (object == nullptr || object->type() == NdkObjectTypeAdapter)
    return STATUS_INVALID_PARAMETER;  // adapters close through CLOSE_NDK_ADAPTER_HANDLER
  return object->close(completion, context);
}

// The SoftNDK diagnostics extension (ndk/softndk.h): what an adapter is, what lives on it.
NTSTATUS query_diagnostics(NDK_ADAPTER* ndk, SOFTNDK_ADAPTER_DIAGNOSTICS* out) {
  Adapter* adapter;
  NTSTATUS status = resolve(ndk, &adapter);
  if (!NT_SUCCESS(status)) return STATUS_INVALID_PARAMETER;
  if (out == nullptr || out->Size < sizeof(SOFTNDK_ADAPTER_DIAGNOSTICS)) return STATUS_INVALID_PARAMETER;
  SOFTNDK_ADAPTER_DIAGNOSTICS d{};
  d.Size = sizeof(d);
  d.Fabric = adapter->iface().fabric();
  d.IfIndex = adapter->iface().ifindex();
  d.CompletionMode = adapter->policy().mode();
  d.Seed = adapter->policy().seed();
  d.Version = adapter->version();
  for (int type = NdkObjectTypeQp; type < NdkObjectTypeMax; ++type)
    d.LiveObjects[type] = adapter->live_objects(static_cast<NDK_OBJECT_TYPE>(type));
  d.LiveLams = adapter->live_lams();
  *out = d;
  return STATUS_SUCCESS;
}

const SOFTNDK_DIAGNOSTICS_DISPATCH kDiagnostics = {query_diagnostics};

bool same_guid(const GUID& a, const GUID& b) {
  return a.Data1 == b.Data1 && a.Data2 == b.Data2 && a.Data3 == b.Data3 &&
         std::memcmp(a.Data4, b.Data4, sizeof(a.Data4)) == 0;
}

NTSTATUS query_extension(NDK_OBJECT_HEADER* header, GUID* id, NDK_VERSION version,
                         NDK_EXTENSION_INTERFACE* out) {
  Object* object = Object::from_header(header, NdkObjectTypeUndefined);
  if (object == nullptr || id == nullptr || out == nullptr) return STATUS_INVALID_PARAMETER;
  // One extension, on adapters, at 1.0 (a consumer asking for 1.0 accepts any 1.x with
  // x >= 0). Anything else is not supported and *out is left untouched (R207, R209).
  if (object->type() != NdkObjectTypeAdapter || !same_guid(*id, SoftNdkDiagnosticsInterfaceId) ||
      version.Major != SOFTNDK_DIAGNOSTICS_VERSION_MAJOR ||
      version.Minor > SOFTNDK_DIAGNOSTICS_VERSION_MINOR)
    return STATUS_NOT_SUPPORTED;
  out->Dispatch = &kDiagnostics;  // R208
  return STATUS_SUCCESS;
}

// Runs `action` on a validated object and completes it as a request (R058-R061).
template <class T, class NdkStruct, class Action>
NTSTATUS run_request(NdkStruct* ndk, NDK_FN_REQUEST_COMPLETION completion, PVOID context,
                     Action&& action) {
  T* object;
  NTSTATUS status = resolve(ndk, &object);
  if (!NT_SUCCESS(status)) return status;
  if (completion == nullptr) return STATUS_INVALID_PARAMETER;
  // An injected fault stands for a resource failure: the request then has no effect.
  status = object->adapter().take_fault(SOFTNDK_FAULT_REQUEST);
  if (NT_SUCCESS(status)) {
    status = action(*object);
    if (status == STATUS_INVALID_PARAMETER) return status;  // argument errors stay inline
  }
  return object->adapter().complete_request(object, completion, context, status);
}

// ---- adapter ------------------------------------------------------------------------

NTSTATUS query_adapter_info(NDK_ADAPTER* ndk, NDK_ADAPTER_INFO* info, ULONG* size) {
  Adapter* adapter = Adapter::from(ndk);
  if (adapter == nullptr) return STATUS_INVALID_PARAMETER;
  return adapter->query_info(info, size);
}

NTSTATUS create_cq(NDK_ADAPTER* ndk, ULONG depth, NDK_FN_CQ_NOTIFICATION_CALLBACK notification,
                   PVOID notification_context, GROUP_AFFINITY* affinity,
                   NDK_FN_CREATE_COMPLETION completion, PVOID context, NDK_CQ** out) {
  (void)affinity;  // a hint only (R033): the provider thread serves every CQ
  Adapter* adapter;
  NTSTATUS status = resolve(ndk, &adapter);
  if (!NT_SUCCESS(status)) return status;
  if (notification == nullptr || depth == 0 || depth > adapter->info().MaxCqDepth)
    return STATUS_INVALID_PARAMETER;  // R026, R034
  return create(*adapter, completion, context, reinterpret_cast<PVOID*>(out),
                [&] {
                  auto* cq = new Cq(*adapter, depth, notification, notification_context);
                  cq->add_antecedent(adapter);
                  return cq;
                });
}

NTSTATUS create_pd(NDK_ADAPTER* ndk, NDK_FN_CREATE_COMPLETION completion, PVOID context,
                   NDK_PD** out) {
  Adapter* adapter;
  NTSTATUS status = resolve(ndk, &adapter);
  if (!NT_SUCCESS(status)) return status;
  return create(*adapter, completion, context, reinterpret_cast<PVOID*>(out),
                [&] {
                  auto* pd = new Pd(*adapter);
                  pd->add_antecedent(adapter);
                  return pd;
                });
}

NTSTATUS create_shared_endpoint(NDK_ADAPTER* ndk, const PSOCKADDR address, ULONG length,
                                NDK_FN_CREATE_COMPLETION completion, PVOID context,
                                NDK_SHARED_ENDPOINT** out) {
  Adapter* adapter;
  NTSTATUS status = resolve(ndk, &adapter);
  if (!NT_SUCCESS(status)) return status;
  std::optional<SockAddr> parsed = SockAddr::parse(address, length);
  if (!parsed) return STATUS_INVALID_PARAMETER;
  if (completion == nullptr || out == nullptr) return STATUS_INVALID_PARAMETER;
  // Reserving the address is the create's outcome (R031, R032): its failures are
  // delivered like any other create result.
  return create(*adapter, completion, context, reinterpret_cast<PVOID*>(out),
                [&](NTSTATUS& result) -> Object* {
                  SockAddr reserved = *parsed;
                  result = adapter->iface().reserve(reserved);
                  if (!NT_SUCCESS(result)) return nullptr;
                  try {
                    auto* endpoint = new SharedEndpoint(*adapter, reserved);
                    endpoint->add_antecedent(adapter);
                    return endpoint;
                  } catch (...) {
                    adapter->iface().unreserve(reserved);
                    throw;
                  }
                });
}

NTSTATUS create_connector(NDK_ADAPTER* ndk, NDK_FN_CREATE_COMPLETION completion, PVOID context,
                          NDK_CONNECTOR** out) {
  Adapter* adapter;
  NTSTATUS status = resolve(ndk, &adapter);
  if (!NT_SUCCESS(status)) return status;
  return create(*adapter, completion, context, reinterpret_cast<PVOID*>(out),
                [&] {
                  auto* connector = new Connector(*adapter);
                  connector->add_antecedent(adapter);
                  return connector;
                });
}

NTSTATUS create_listener(NDK_ADAPTER* ndk, NDK_FN_CONNECT_EVENT_CALLBACK connect_event,
                         PVOID connect_context, NDK_FN_CREATE_COMPLETION completion,
                         PVOID context, NDK_LISTENER** out) {
  Adapter* adapter;
  NTSTATUS status = resolve(ndk, &adapter);
  if (!NT_SUCCESS(status)) return status;
  if (connect_event == nullptr) return STATUS_INVALID_PARAMETER;  // R034
  return create(*adapter, completion, context, reinterpret_cast<PVOID*>(out),
                [&] {
                  auto* listener = new Listener(*adapter, connect_event, connect_context);
                  listener->add_antecedent(adapter);
                  return listener;
                });
}

NTSTATUS build_lam(NDK_ADAPTER* ndk, MDL* mdl, SIZE_T length, NDK_FN_REQUEST_COMPLETION completion,
                   PVOID context, NDK_LOGICAL_ADDRESS_MAPPING* lam, ULONG* lam_size, ULONG* fbo) {
  Adapter* adapter;
  NTSTATUS status = resolve(ndk, &adapter);
  if (!NT_SUCCESS(status)) return status;
  return adapter->build_lam(mdl, length, completion, context, lam, lam_size, fbo);
}

VOID release_lam(NDK_ADAPTER* ndk, NDK_LOGICAL_ADDRESS_MAPPING* lam) {
  if (Adapter* adapter = Adapter::from(ndk)) adapter->release_lam(lam);
}

// ---- CQ -----------------------------------------------------------------------------

NTSTATUS resize_cq(NDK_CQ* ndk, ULONG depth, NDK_FN_REQUEST_COMPLETION completion,
                   PVOID context) {
  Cq* cq = Cq::from(ndk);
  if (cq != nullptr && (depth == 0 || depth > cq->adapter().info().MaxCqDepth))
    return STATUS_INVALID_PARAMETER;  // R121
  return run_request<Cq>(ndk, completion, context, [&](Cq& c) { return c.resize(depth); });
}

VOID arm_cq(NDK_CQ* ndk, ULONG type) {
  Cq* cq = Cq::from(ndk);
  if (cq == nullptr || type > NDK_CQ_NOTIFY_SOLICITED || cq->close_requested()) return;
  cq->arm(type);
}

ULONG get_cq_results(NDK_CQ* ndk, NDK_RESULT results[], ULONG count) {
  Cq* cq = Cq::from(ndk);
  if (cq == nullptr || results == nullptr) return 0;
  return cq->get_results(results, count);
}

ULONG get_cq_results_ex(NDK_CQ* ndk, NDK_RESULT_EX results[], ULONG count) {
  Cq* cq = Cq::from(ndk);
  if (cq == nullptr || results == nullptr) return 0;
  return cq->get_results_ex(results, count);
}

NTSTATUS control_cq_moderation(NDK_CQ* ndk, ULONG interval, ULONG count) {
  Cq* cq;
  NTSTATUS status = resolve(ndk, &cq);
  if (!NT_SUCCESS(status)) return status;
  // Implemented, but refused on an adapter that does not advertise it (R128, R212).
  if ((cq->adapter().info().AdapterFlags & NDK_ADAPTER_FLAG_CQ_INTERRUPT_MODERATION_SUPPORTED) == 0)
    return STATUS_NOT_SUPPORTED;
  return cq->moderate(interval, count);
}

// ---- PD -----------------------------------------------------------------------------

NTSTATUS create_mr(NDK_PD* ndk, BOOLEAN fast_register, NDK_FN_CREATE_COMPLETION completion,
                   PVOID context, NDK_MR** out) {
  Pd* pd;
  NTSTATUS status = resolve(ndk, &pd);
  if (!NT_SUCCESS(status)) return status;
  return create(*pd, completion, context, reinterpret_cast<PVOID*>(out), [&] {
    auto* mr = new Mr(*pd, fast_register != FALSE);
    mr->add_antecedent(pd);
    return mr;
  });
}

NTSTATUS create_mw(NDK_PD* ndk, NDK_FN_CREATE_COMPLETION completion, PVOID context,
                   NDK_MW** out) {
  Pd* pd;
  NTSTATUS status = resolve(ndk, &pd);
  if (!NT_SUCCESS(status)) return status;
  return create(*pd, completion, context, reinterpret_cast<PVOID*>(out), [&] {
    auto* mw = new Mw(*pd);
    mw->add_antecedent(pd);
    return mw;
  });
}

NTSTATUS create_srq(NDK_PD* ndk, ULONG depth, ULONG max_sge, ULONG threshold,
                    NDK_FN_SRQ_NOTIFICATION_CALLBACK notification, PVOID notification_context,
                    GROUP_AFFINITY* affinity, NDK_FN_CREATE_COMPLETION completion, PVOID context,
                    NDK_SRQ** out) {
  (void)affinity;
  Pd* pd;
  NTSTATUS status = resolve(ndk, &pd);
  if (!NT_SUCCESS(status)) return status;
  const NDK_ADAPTER_INFO& info = pd->adapter().info();
  if (depth == 0 || depth > info.MaxSrqDepth || max_sge == 0 ||
      max_sge > info.MaxReceiveRequestSge || threshold > depth)
    return STATUS_INVALID_PARAMETER;  // R029
  return create(*pd, completion, context, reinterpret_cast<PVOID*>(out), [&] {
    auto* srq = new Srq(*pd, depth, max_sge, threshold, notification, notification_context);
    srq->add_antecedent(pd);
    return srq;
  });
}

NTSTATUS check_qp_cqs(Pd& pd, NDK_CQ* receive, NDK_CQ* initiator, Cq** rcq, Cq** icq) {
  NTSTATUS status = resolve(receive, rcq);
  if (NT_SUCCESS(status)) status = resolve(initiator, icq);
  if (!NT_SUCCESS(status)) return status;
  // A QP's CQs must come from the PD's adapter.
  if (&(*rcq)->adapter() != &pd.adapter() || &(*icq)->adapter() != &pd.adapter())
    return STATUS_INVALID_PARAMETER;
  return STATUS_SUCCESS;
}

Qp* make_qp(Pd& pd, Cq& rcq, Cq& icq, Srq* srq, PVOID qp_context, const Qp::Limits& limits) {
  auto* qp = new Qp(pd, rcq, icq, srq, qp_context, limits);
  qp->add_antecedent(&pd);
  qp->add_antecedent(&rcq);
  qp->add_antecedent(&icq);
  if (srq != nullptr) qp->add_antecedent(srq);
  return qp;
}

NTSTATUS create_qp(NDK_PD* ndk, NDK_CQ* receive_cq, NDK_CQ* initiator_cq, PVOID qp_context,
                   ULONG receive_depth, ULONG initiator_depth, ULONG receive_sge,
                   ULONG initiator_sge, ULONG inline_data, NDK_FN_CREATE_COMPLETION completion,
                   PVOID context, NDK_QP** out) {
  Pd* pd;
  NTSTATUS status = resolve(ndk, &pd);
  if (!NT_SUCCESS(status)) return status;
  Cq *rcq, *icq;
  status = check_qp_cqs(*pd, receive_cq, initiator_cq, &rcq, &icq);
  if (!NT_SUCCESS(status)) return status;
  const NDK_ADAPTER_INFO& info = pd->adapter().info();
  if (receive_depth == 0 || receive_depth > info.MaxReceiveQueueDepth || initiator_depth == 0 ||
      initiator_depth > info.MaxInitiatorQueueDepth || receive_sge == 0 ||
      receive_sge > info.MaxReceiveRequestSge || initiator_sge == 0 ||
      initiator_sge > info.MaxInitiatorRequestSge || inline_data > info.MaxInlineDataSize)
    return STATUS_INVALID_PARAMETER;  // R027
  Qp::Limits limits{receive_depth, initiator_depth, receive_sge, initiator_sge, inline_data};
  return create(*pd, completion, context, reinterpret_cast<PVOID*>(out),
                [&] { return make_qp(*pd, *rcq, *icq, nullptr, qp_context, limits); });
}

NTSTATUS create_qp_with_srq(NDK_PD* ndk, NDK_CQ* receive_cq, NDK_CQ* initiator_cq, NDK_SRQ* ndk_srq,
                            PVOID qp_context, ULONG initiator_depth, ULONG initiator_sge,
                            ULONG inline_data, NDK_FN_CREATE_COMPLETION completion,
                            PVOID context, NDK_QP** out) {
  Pd* pd;
  NTSTATUS status = resolve(ndk, &pd);
  if (!NT_SUCCESS(status)) return status;
  Cq *rcq, *icq;
  status = check_qp_cqs(*pd, receive_cq, initiator_cq, &rcq, &icq);
  if (!NT_SUCCESS(status)) return status;
  Srq* srq;
  status = resolve(ndk_srq, &srq);
  if (!NT_SUCCESS(status)) return status;
  const NDK_ADAPTER_INFO& info = pd->adapter().info();
  if (&srq->adapter() != &pd->adapter() || initiator_depth == 0 ||
      initiator_depth > info.MaxInitiatorQueueDepth || initiator_sge == 0 ||
      initiator_sge > info.MaxInitiatorRequestSge || inline_data > info.MaxInlineDataSize)
    return STATUS_INVALID_PARAMETER;  // R028
  Qp::Limits limits{0, initiator_depth, srq->max_sge(), initiator_sge, inline_data};
  return create(*pd, completion, context, reinterpret_cast<PVOID*>(out),
                [&] { return make_qp(*pd, *rcq, *icq, srq, qp_context, limits); });
}

VOID get_privileged_token(NDK_PD* ndk, UINT32* token) {
  Pd* pd = Pd::from(ndk);
  if (pd != nullptr && token != nullptr) *token = pd->privileged_token();
}

// ---- MR / MW ------------------------------------------------------------------------

NTSTATUS register_mr(NDK_MR* ndk, MDL* mdl, SIZE_T length, ULONG flags,
                     NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  return run_request<Mr>(ndk, completion, context,
                         [&](Mr& mr) { return mr.register_mdl(mdl, length, flags); });
}

NTSTATUS deregister_mr(NDK_MR* ndk, NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  return run_request<Mr>(ndk, completion, context, [](Mr& mr) { return mr.deregister(); });
}

NTSTATUS initialize_fast_register_mr(NDK_MR* ndk, ULONG page_count, BOOLEAN remote_access,
                                     NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  return run_request<Mr>(ndk, completion, context, [&](Mr& mr) {
    return mr.initialize_fast_register(page_count, remote_access != FALSE);
  });
}

UINT32 remote_token_from_mr(NDK_MR* ndk) {
  Mr* mr = Mr::from(ndk);
  return mr != nullptr ? mr->remote_token() : 0;
}

UINT32 local_token_from_mr(NDK_MR* ndk) {
  Mr* mr = Mr::from(ndk);
  return mr != nullptr ? mr->local_token() : 0;
}

UINT32 remote_token_from_mw(NDK_MW* ndk) {
  Mw* mw = Mw::from(ndk);
  return mw != nullptr ? mw->remote_token() : 0;
}

// ---- SRQ ----------------------------------------------------------------------------

NTSTATUS modify_srq(NDK_SRQ* ndk, ULONG depth, ULONG threshold,
                    NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  return run_request<Srq>(ndk, completion, context,
                          [&](Srq& srq) { return srq.modify(depth, threshold); });
}

NTSTATUS srq_receive(NDK_SRQ* ndk, PVOID context, const NDK_SGE* sgl, ULONG count) {
  Srq* srq;
  NTSTATUS status = resolve(ndk, &srq);
  if (!NT_SUCCESS(status)) return status;
  return srq->post(context, sgl, count);
}

// ---- QP -----------------------------------------------------------------------------

VOID flush(NDK_QP* ndk) {
  if (Qp* qp = Qp::from(ndk)) qp->flush();
}

// What an initiator request returns: a request refused inline first hands the DEFER
// requests posted before it to processing (R083).
NTSTATUS initiator_status(Qp& qp, NTSTATUS status) {
  if (!NT_SUCCESS(status)) qp.start_deferred();
  return status;
}

NTSTATUS send(NDK_QP* ndk, PVOID context, const NDK_SGE* sgl, ULONG count, ULONG flags) {
  Qp* qp;
  NTSTATUS status = resolve(ndk, &qp);
  if (!NT_SUCCESS(status)) return status;
  return initiator_status(*qp, qp->post_send(context, sgl, count, flags, /*invalidate=*/false, 0));
}

NTSTATUS receive(NDK_QP* ndk, PVOID context, const NDK_SGE* sgl, ULONG count) {
  Qp* qp;
  NTSTATUS status = resolve(ndk, &qp);
  if (!NT_SUCCESS(status)) return status;
  return qp->post_receive(context, sgl, count);
}

NTSTATUS bind(NDK_QP* ndk, PVOID context, NDK_MR* ndk_mr, NDK_MW* ndk_mw, PVOID address,
              SIZE_T length, ULONG flags) {
  Qp* qp;
  Mr* mr;
  Mw* mw;
  NTSTATUS status = resolve(ndk, &qp);
  if (!NT_SUCCESS(status)) return status;
  status = resolve(ndk_mr, &mr);
  if (NT_SUCCESS(status)) status = resolve(ndk_mw, &mw);
  if (!NT_SUCCESS(status)) return initiator_status(*qp, status);
  return initiator_status(*qp, qp->post_bind(context, *mr, *mw, reinterpret_cast<uintptr_t>(address), length, flags));
}

NTSTATUS fast_register(NDK_QP* ndk, PVOID context, NDK_MR* ndk_mr, ULONG page_count,
                       const NDK_LOGICAL_ADDRESS* pages, ULONG fbo, SIZE_T length, PVOID base,
                       ULONG flags) {
  Qp* qp;
  Mr* mr;
  NTSTATUS status = resolve(ndk, &qp);
  if (!NT_SUCCESS(status)) return status;
  status = resolve(ndk_mr, &mr);
  if (!NT_SUCCESS(status)) return initiator_status(*qp, status);
  if (page_count == 0 || pages == nullptr || fbo >= PAGE_SIZE || length == 0 ||
      length > static_cast<SIZE_T>(page_count) * PAGE_SIZE - fbo)
    return initiator_status(*qp, STATUS_INVALID_PARAMETER);  // R142
  return initiator_status(*qp, qp->post_fast_register(context, *mr, page_count, pages, fbo, length,
                                                      reinterpret_cast<uintptr_t>(base), flags));
}

NTSTATUS invalidate(NDK_QP* ndk, PVOID context, NDK_OBJECT_HEADER* target, ULONG flags) {
  Qp* qp;
  NTSTATUS status = resolve(ndk, &qp);
  if (!NT_SUCCESS(status)) return status;
  Object* object = Object::from_header(target, NdkObjectTypeUndefined);
  if (object == nullptr || (object->type() != NdkObjectTypeMr && object->type() != NdkObjectTypeMw))
    return initiator_status(*qp, STATUS_INVALID_PARAMETER);
  if (object->close_requested()) return initiator_status(*qp, STATUS_INVALID_DEVICE_STATE);
  return initiator_status(*qp, qp->post_invalidate(context, *object, flags));
}

NTSTATUS read(NDK_QP* ndk, PVOID context, const NDK_SGE* sgl, ULONG count, UINT64 address,
              UINT32 token, ULONG flags) {
  Qp* qp;
  NTSTATUS status = resolve(ndk, &qp);
  if (!NT_SUCCESS(status)) return status;
  // An adapter that does not advertise read with local invalidate ignores the flag (R094).
  if ((qp->adapter().info().AdapterFlags & NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED) == 0)
    flags &= ~static_cast<ULONG>(NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE);
  return initiator_status(*qp, qp->post_read(context, sgl, count, address, token, flags));
}

NTSTATUS write(NDK_QP* ndk, PVOID context, const NDK_SGE* sgl, ULONG count, UINT64 address,
               UINT32 token, ULONG flags) {
  Qp* qp;
  NTSTATUS status = resolve(ndk, &qp);
  if (!NT_SUCCESS(status)) return status;
  return initiator_status(*qp, qp->post_write(context, sgl, count, address, token, flags));
}

NTSTATUS send_and_invalidate(NDK_QP* ndk, PVOID context, const NDK_SGE* sgl, ULONG count,
                             ULONG flags, UINT32 token) {
  Qp* qp;
  NTSTATUS status = resolve(ndk, &qp);
  if (!NT_SUCCESS(status)) return status;
  return initiator_status(*qp, qp->post_send(context, sgl, count, flags, /*invalidate=*/true, token));
}

// ---- connector ----------------------------------------------------------------------

// Shared checks of the connect family: objects valid, private data within the limit.
NTSTATUS check_connect(Connector* connector, NDK_QP* ndk_qp, const PVOID data, ULONG length,
                       ULONG limit, Qp** qp) {
  NTSTATUS status = resolve(ndk_qp, qp);
  if (!NT_SUCCESS(status)) return status;
  if (&(*qp)->adapter() != &connector->adapter()) return STATUS_INVALID_PARAMETER;
  if ((length > 0 && data == nullptr) || length > limit) return STATUS_INVALID_PARAMETER;  // R186
  return STATUS_SUCCESS;
}

// Starts a connect unless a failure is injected (SOFTNDK_FAULT_CONNECT): that one is
// delivered like the connect's own outcome (inline or through the callback) and leaves the
// connector untouched, so it may connect again (R160, STATUS_INSUFFICIENT_RESOURCES).
template <class Start>
NTSTATUS start_connect(Connector& connector, NDK_FN_REQUEST_COMPLETION completion, PVOID context,
                       Start&& start) {
  NTSTATUS fault = connector.adapter().take_fault(SOFTNDK_FAULT_CONNECT);
  if (!NT_SUCCESS(fault))
    return connector.adapter().complete_request(&connector, completion, context, fault);
  return start();
}

std::span<const uint8_t> bytes(const PVOID data, ULONG length) {
  return {static_cast<const uint8_t*>(data), length};
}

NTSTATUS connect(NDK_CONNECTOR* ndk, NDK_QP* ndk_qp, const PSOCKADDR source, ULONG source_length,
                 const PSOCKADDR destination, ULONG destination_length, ULONG inbound_limit,
                 ULONG outbound_limit, const PVOID data, ULONG data_length,
                 NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  Connector* connector;
  Qp* qp;
  NTSTATUS status = resolve(ndk, &connector);
  if (!NT_SUCCESS(status)) return status;
  status = check_connect(connector, ndk_qp, data, data_length,
                         connector->adapter().info().MaxCallerData, &qp);
  if (!NT_SUCCESS(status)) return status;
  std::optional<SockAddr> from = SockAddr::parse(source, source_length);
  std::optional<SockAddr> to = SockAddr::parse(destination, destination_length);
  if (!from || !to || completion == nullptr) return STATUS_INVALID_PARAMETER;
  return start_connect(*connector, completion, context, [&] {
    return connector->connect(*qp, *from, nullptr, *to, inbound_limit, outbound_limit,
                              bytes(data, data_length), completion, context);
  });
}

NTSTATUS connect_with_shared_endpoint(NDK_CONNECTOR* ndk, NDK_QP* ndk_qp,
                                      NDK_SHARED_ENDPOINT* ndk_endpoint,
                                      const PSOCKADDR destination, ULONG destination_length,
                                      ULONG inbound_limit, ULONG outbound_limit, const PVOID data,
                                      ULONG data_length, NDK_FN_REQUEST_COMPLETION completion,
                                      PVOID context) {
  Connector* connector;
  SharedEndpoint* endpoint;
  Qp* qp;
  NTSTATUS status = resolve(ndk, &connector);
  if (NT_SUCCESS(status)) status = resolve(ndk_endpoint, &endpoint);
  if (!NT_SUCCESS(status)) return status;
  status = check_connect(connector, ndk_qp, data, data_length,
                         connector->adapter().info().MaxCallerData, &qp);
  if (!NT_SUCCESS(status)) return status;
  std::optional<SockAddr> to = SockAddr::parse(destination, destination_length);
  if (!to || completion == nullptr || &endpoint->adapter() != &connector->adapter())
    return STATUS_INVALID_PARAMETER;
  return start_connect(*connector, completion, context, [&] {
    return connector->connect(*qp, endpoint->address(), endpoint, *to, inbound_limit,
                              outbound_limit, bytes(data, data_length), completion, context);
  });
}

NTSTATUS complete_connect_common(NDK_CONNECTOR* ndk, const Connector::DisconnectHandler& handler,
                                 NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  Connector* connector;
  NTSTATUS status = resolve(ndk, &connector);
  if (!NT_SUCCESS(status)) return status;
  if (completion == nullptr) return STATUS_INVALID_PARAMETER;
  return connector->complete_connect(handler, completion, context);
}

NTSTATUS complete_connect(NDK_CONNECTOR* ndk, NDK_FN_DISCONNECT_EVENT_CALLBACK event,
                          PVOID event_context, NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  return complete_connect_common(ndk, {event, nullptr, event_context}, completion, context);
}

NTSTATUS complete_connect_ex(NDK_CONNECTOR* ndk, NDK_FN_DISCONNECT_EVENT_CALLBACK_EX event,
                             PVOID event_context, NDK_FN_REQUEST_COMPLETION completion,
                             PVOID context) {
  return complete_connect_common(ndk, {nullptr, event, event_context}, completion, context);
}

NTSTATUS accept_common(NDK_CONNECTOR* ndk, NDK_QP* ndk_qp, ULONG inbound_limit,
                       ULONG outbound_limit, const PVOID data, ULONG data_length,
                       const Connector::DisconnectHandler& handler,
                       NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  Connector* connector;
  Qp* qp;
  NTSTATUS status = resolve(ndk, &connector);
  if (!NT_SUCCESS(status)) return status;
  status = check_connect(connector, ndk_qp, data, data_length,
                         connector->adapter().info().MaxCalleeData, &qp);
  if (!NT_SUCCESS(status)) return status;
  if (completion == nullptr) return STATUS_INVALID_PARAMETER;
  return connector->accept(*qp, inbound_limit, outbound_limit, bytes(data, data_length), handler,
                           completion, context);
}

NTSTATUS accept(NDK_CONNECTOR* ndk, NDK_QP* qp, ULONG inbound_limit, ULONG outbound_limit,
                const PVOID data, ULONG data_length, NDK_FN_DISCONNECT_EVENT_CALLBACK event,
                PVOID event_context, NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  return accept_common(ndk, qp, inbound_limit, outbound_limit, data, data_length,
                       {event, nullptr, event_context}, completion, context);
}

NTSTATUS accept_ex(NDK_CONNECTOR* ndk, NDK_QP* qp, ULONG inbound_limit, ULONG outbound_limit,
                   const PVOID data, ULONG data_length, NDK_FN_DISCONNECT_EVENT_CALLBACK_EX event,
                   PVOID event_context, NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  return accept_common(ndk, qp, inbound_limit, outbound_limit, data, data_length,
                       {nullptr, event, event_context}, completion, context);
}

NTSTATUS reject(NDK_CONNECTOR* ndk, const PVOID data, ULONG data_length) {
  Connector* connector;
  NTSTATUS status = resolve(ndk, &connector);
  if (!NT_SUCCESS(status)) return status;
  if ((data_length > 0 && data == nullptr) || data_length > connector->adapter().info().MaxCalleeData)
    return STATUS_INVALID_PARAMETER;
  return connector->reject(bytes(data, data_length));
}

NTSTATUS get_connection_data(NDK_CONNECTOR* ndk, ULONG* inbound, ULONG* outbound, PVOID data,
                             ULONG* data_length) {
  Connector* connector;
  NTSTATUS status = resolve(ndk, &connector);
  if (!NT_SUCCESS(status)) return status;
  if (data_length == nullptr || (data == nullptr && *data_length > 0))
    return STATUS_INVALID_PARAMETER;  // R182
  return connector->connection_data(inbound, outbound, data, data_length);
}

NTSTATUS connector_local_address(NDK_CONNECTOR* ndk, PSOCKADDR address, ULONG* length) {
  Connector* connector;
  NTSTATUS status = resolve(ndk, &connector);
  if (!NT_SUCCESS(status)) return status;
  if (length == nullptr) return STATUS_INVALID_PARAMETER;
  return connector->local_address(address, length);
}

NTSTATUS connector_peer_address(NDK_CONNECTOR* ndk, PSOCKADDR address, ULONG* length) {
  Connector* connector;
  NTSTATUS status = resolve(ndk, &connector);
  if (!NT_SUCCESS(status)) return status;
  if (length == nullptr) return STATUS_INVALID_PARAMETER;
  return connector->peer_address(address, length);
}

NTSTATUS disconnect(NDK_CONNECTOR* ndk, NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  Connector* connector;
  NTSTATUS status = resolve(ndk, &connector);
  if (!NT_SUCCESS(status)) return status;
  if (completion == nullptr) return STATUS_INVALID_PARAMETER;
  return connector->disconnect(completion, context);
}

// ---- listener -----------------------------------------------------------------------

NTSTATUS listen(NDK_LISTENER* ndk, const PSOCKADDR address, ULONG length,
                NDK_FN_REQUEST_COMPLETION completion, PVOID context) {
  std::optional<SockAddr> parsed = SockAddr::parse(address, length);
  if (!parsed) return STATUS_INVALID_PARAMETER;
  return run_request<Listener>(ndk, completion, context,
                               [&](Listener& listener) { return listener.listen(*parsed); });
}

NTSTATUS listener_address(NDK_LISTENER* ndk, PSOCKADDR address, ULONG* length) {
  Listener* listener;
  NTSTATUS status = resolve(ndk, &listener);
  if (!NT_SUCCESS(status)) return status;
  return listener->local_address(address, length);
}

VOID control_connect_events(NDK_LISTENER* ndk, BOOLEAN pause) {
  if (Listener* listener = Listener::from(ndk)) listener->pause(pause != FALSE);
}

// ---- shared endpoint ----------------------------------------------------------------

NTSTATUS shared_endpoint_address(NDK_SHARED_ENDPOINT* ndk, PSOCKADDR address, ULONG* length) {
  SharedEndpoint* endpoint;
  NTSTATUS status = resolve(ndk, &endpoint);
  if (!NT_SUCCESS(status)) return status;
  return endpoint->address().copy_out(address, length);
}

}  // namespace

const NDK_ADAPTER_DISPATCH kAdapter = {
    query_extension, query_adapter_info, create_cq, create_pd, create_shared_endpoint,
    create_connector, create_listener, build_lam, release_lam,
};
const NDK_CQ_DISPATCH kCq = {
    close_object, query_extension, resize_cq, arm_cq, get_cq_results, control_cq_moderation,
    get_cq_results_ex,
};
const NDK_PD_DISPATCH kPd = {
    close_object, query_extension, create_mr, create_mw, create_srq, create_qp,
    create_qp_with_srq, get_privileged_token,
};
const NDK_MR_DISPATCH kMr = {
    close_object, query_extension, register_mr, deregister_mr, initialize_fast_register_mr,
    remote_token_from_mr, local_token_from_mr,
};
const NDK_MW_DISPATCH kMw = {close_object, query_extension, remote_token_from_mw};
const NDK_SRQ_DISPATCH kSrq = {close_object, query_extension, modify_srq, srq_receive};
const NDK_QP_DISPATCH kQp = {
    close_object, query_extension, flush, send, receive, bind, fast_register, invalidate, read,
    write, send_and_invalidate,
};
const NDK_CONNECTOR_DISPATCH kConnector = {
    close_object,
    query_extension,
    connect,
    connect_with_shared_endpoint,
    complete_connect,
    accept,
    reject,
    get_connection_data,
    connector_local_address,
    connector_peer_address,
    disconnect,
    complete_connect_ex,
    accept_ex,
};
const NDK_LISTENER_DISPATCH kListener = {
    close_object, query_extension, listen, listener_address, control_connect_events,
};
const NDK_SHARED_ENDPOINT_DISPATCH kSharedEndpoint = {
    close_object, query_extension, shared_endpoint_address,
};

}  // namespace softndk::dispatch
