// The provider's entry points of ndk/softndk.h: enumeration, the NDIS open/close handlers
// and the consumer's open/close, in-process hosts, tunables, faults and names.
#include <cstring>
#include <mutex>
#include <string>

#include "core/adapter.hpp"
#include "core/cq.hpp"
#include "core/qp.hpp"
#include "core/tunables.hpp"
#include "fabric/fabric.hpp"
#include "fabric/inproc/inproc_fabric.hpp"
#include "ndk/softndk.h"

using softndk::Adapter;
using softndk::AdapterOptions;
using softndk::SockAddr;
namespace fabric = softndk::fabric;
namespace tunables = softndk::tunables;

namespace {

// The integer a C caller stored in an enum argument, which may be outside the enum's
// values: compared as an integer, never loaded as the enum (undefined behaviour in C++).
template <class Enum>
int32_t raw(const Enum& value) {
  static_assert(sizeof(Enum) == sizeof(int32_t));
  int32_t result;
  std::memcpy(&result, &value, sizeof(result));
  return result;
}

std::shared_ptr<fabric::Interface> find_interface(SOFTNDK_FABRIC kind, ULONG ifindex) {
  fabric::Fabric* f = fabric::find(kind);
  if (f == nullptr) return nullptr;
  for (auto& iface : f->interfaces())
    if (iface->ifindex() == ifindex) return iface;
  return nullptr;
}

SOFTNDK_COMPLETION_MODE mode_from_text(const std::string& text) {
  if (text == "caller-thread") return SOFTNDK_COMPLETION_CALLER_THREAD;
  if (text == "provider-thread") return SOFTNDK_COMPLETION_PROVIDER_THREAD;
  if (text == "mixed") return SOFTNDK_COMPLETION_MIXED;
  return SOFTNDK_COMPLETION_INLINE;
}

// Options given by the consumer, completed from the tunables.
bool resolve_options(const SOFTNDK_OPEN_OPTIONS* given, SOFTNDK_FABRIC* kind,
                     AdapterOptions* options) {
  *kind = SOFTNDK_FABRIC_INPROC;
  options->mode = mode_from_text(*tunables::get("completion_mode"));
  options->seed = tunables::number("completion_seed");
  if (given == nullptr) return true;
  if (given->Size != 0 && given->Size < sizeof(SOFTNDK_OPEN_OPTIONS)) return false;
  // A C consumer may store any integer in these enum fields: read them as integers, so
  // that an out-of-range value is refused rather than loaded as an enum.
  int32_t fabric = raw(given->Fabric);
  int32_t mode = raw(given->CompletionMode);
  if (fabric < 0 || fabric > SOFTNDK_FABRIC_SHM) return false;
  if (fabric != 0) *kind = static_cast<SOFTNDK_FABRIC>(fabric);
  if (mode < SOFTNDK_COMPLETION_DEFAULT || mode > SOFTNDK_COMPLETION_MIXED) return false;
  if (mode != SOFTNDK_COMPLETION_DEFAULT) options->mode = static_cast<SOFTNDK_COMPLETION_MODE>(mode);
  if (given->Seed != 0) options->seed = given->Seed;
  return true;
}

// SOFTNDK_FAULT_OPEN: the next opens fail (R007 is otherwise unreachable in user space).
std::mutex g_open_fault_mutex;
NTSTATUS g_open_fault_status = STATUS_SUCCESS;
ULONG g_open_fault_count = 0;

NTSTATUS take_open_fault() {
  std::lock_guard lock(g_open_fault_mutex);
  if (g_open_fault_count == 0) return STATUS_SUCCESS;
  --g_open_fault_count;
  return g_open_fault_status;
}

NTSTATUS open_on(std::shared_ptr<fabric::Interface> iface, NDK_VERSION version,
                 const AdapterOptions& options, NDK_ADAPTER** out) {
  NTSTATUS fault = take_open_fault();
  if (!NT_SUCCESS(fault)) return fault;
  Adapter* adapter = nullptr;
  NTSTATUS status = Adapter::open(std::move(iface), version, options, &adapter);
  if (NT_SUCCESS(status)) *out = adapter->ndk<NDK_ADAPTER>();
  return status;
}

// ---- the NDIS handlers: MiniportAdapterContext is the fabric interface ----

NDIS_STATUS open_handler(NDIS_HANDLE context, PNDIS_OPEN_NDK_ADAPTER_PARAMETERS parameters,
                         NDK_ADAPTER** out) {
  if (context == nullptr || parameters == nullptr || out == nullptr)
    return STATUS_INVALID_PARAMETER;
  auto* raw = static_cast<fabric::Interface*>(context);
  std::shared_ptr<fabric::Interface> iface = find_interface(raw->fabric(), raw->ifindex());
  if (iface.get() != raw) return NDIS_STATUS_ADAPTER_NOT_READY;  // the interface went away
  SOFTNDK_FABRIC kind;
  AdapterOptions options;
  resolve_options(nullptr, &kind, &options);
  return open_on(std::move(iface), parameters->Version, options, out);
}

VOID close_handler(NDIS_HANDLE context, NDK_ADAPTER* ndk) {
  (void)context;
  if (Adapter* adapter = Adapter::from(ndk)) adapter->close_blocking();
}

}  // namespace

extern "C" {

const GUID SoftNdkDiagnosticsInterfaceId = {
    0x8c5c3a1e, 0x4f0b, 0x4d7e, {0x9a, 0x51, 0x5d, 0x2f, 0x1e, 0x0b, 0x6a, 0x31}};

SOFTNDK_API NTSTATUS SoftNdkEnumerateAdapters(SOFTNDK_ADAPTER_DESCRIPTION* out, ULONG* count) {
  if (count == nullptr || (out == nullptr && *count > 0)) return STATUS_INVALID_PARAMETER;
  ULONG capacity = *count;
  ULONG n = 0;
  for (fabric::Fabric* f : fabric::all()) {
    for (auto& iface : f->interfaces()) {
      if (n < capacity) {
        SOFTNDK_ADAPTER_DESCRIPTION& d = out[n];
        std::memset(&d, 0, sizeof(d));
        d.Fabric = iface->fabric();
        d.IfIndex = iface->ifindex();
        std::strncpy(d.Name, iface->name().c_str(), sizeof(d.Name) - 1);
        for (const SockAddr& a : iface->addresses()) {
          if (d.AddressCount == SOFTNDK_MAX_INTERFACE_ADDRESSES) break;
          d.Addresses[d.AddressCount++] = a.inet();
        }
      }
      ++n;
    }
  }
  *count = n;
  return n > capacity ? STATUS_BUFFER_TOO_SMALL : STATUS_SUCCESS;
}

SOFTNDK_API NTSTATUS SoftNdkOpenAdapter(ULONG ifindex, NDK_VERSION version,
                                        const SOFTNDK_OPEN_OPTIONS* given, NDK_ADAPTER** out) {
  if (out == nullptr) return STATUS_INVALID_PARAMETER;
  SOFTNDK_FABRIC kind;
  AdapterOptions options;
  if (!resolve_options(given, &kind, &options)) return STATUS_INVALID_PARAMETER;
  std::shared_ptr<fabric::Interface> iface = find_interface(kind, ifindex);
  if (!iface) return STATUS_NOT_FOUND;
  return open_on(std::move(iface), version, options, out);
}

SOFTNDK_API NTSTATUS SoftNdkOpenAdapterByAddress(const SOCKADDR* address, ULONG length,
                                                 NDK_VERSION version,
                                                 const SOFTNDK_OPEN_OPTIONS* given,
                                                 NDK_ADAPTER** out) {
  std::optional<SockAddr> parsed = SockAddr::parse(address, length);
  if (!parsed || out == nullptr) return STATUS_INVALID_PARAMETER;
  SOFTNDK_FABRIC kind;
  AdapterOptions options;
  if (!resolve_options(given, &kind, &options)) return STATUS_INVALID_PARAMETER;
  fabric::Fabric* f = fabric::find(kind);
  if (f == nullptr) return STATUS_NOT_FOUND;
  for (auto& iface : f->interfaces())
    if (iface->owns(*parsed)) return open_on(iface, version, options, out);
  return STATUS_NOT_FOUND;
}

SOFTNDK_API VOID SoftNdkCloseAdapter(NDK_ADAPTER* ndk) { close_handler(nullptr, ndk); }

SOFTNDK_API NTSTATUS SoftNdkGetProviderCharacteristics(SOFTNDK_FABRIC kind, ULONG ifindex,
                                                       NDIS_NDK_PROVIDER_CHARACTERISTICS* chars,
                                                       NDIS_HANDLE* context) {
  if (chars == nullptr || context == nullptr) return STATUS_INVALID_PARAMETER;
  std::shared_ptr<fabric::Interface> iface =
      raw(kind) >= SOFTNDK_FABRIC_INPROC && raw(kind) <= SOFTNDK_FABRIC_SHM ? find_interface(kind, ifindex) : nullptr;
  if (!iface) return STATUS_NOT_FOUND;
  std::memset(chars, 0, sizeof(*chars));
  chars->Header.Type = NDIS_OBJECT_TYPE_NDK_PROVIDER_CHARACTERISTICS;  // §7 item 18
  chars->Header.Revision = NDIS_NDK_PROVIDER_CHARACTERISTICS_REVISION_1;
  chars->Header.Size = NDIS_SIZEOF_NDK_PROVIDER_CHARACTERISTICS_REVISION_1;
  chars->Flags = 0;
  chars->OpenNDKAdapterHandler = open_handler;
  chars->CloseNDKAdapterHandler = close_handler;
  *context = iface.get();
  return STATUS_SUCCESS;
}

SOFTNDK_API NTSTATUS SoftNdkCreateInprocHost(const CHAR* name, const SOCKADDR_INET* addresses,
                                             ULONG count, ULONG* ifindex) {
  if (name == nullptr || ifindex == nullptr || (count > 0 && addresses == nullptr) ||
      count > SOFTNDK_MAX_INTERFACE_ADDRESSES || std::strlen(name) >= SOFTNDK_MAX_NAME)
    return STATUS_INVALID_PARAMETER;
  std::vector<SockAddr> list;
  for (ULONG i = 0; i < count; ++i) {
    std::optional<SockAddr> a =
        SockAddr::parse(reinterpret_cast<const SOCKADDR*>(&addresses[i]), sizeof(SOCKADDR_INET));
    if (!a) return STATUS_INVALID_PARAMETER;
    list.push_back(*a);
  }
  return fabric::inproc::InprocFabric::instance().create_host(name, list, ifindex);
}

SOFTNDK_API NTSTATUS SoftNdkDestroyInprocHost(ULONG ifindex) {
  return fabric::inproc::InprocFabric::instance().destroy_host(ifindex);
}

SOFTNDK_API ULONG SoftNdkTunableCount(VOID) {
  return static_cast<ULONG>(tunables::end() - tunables::begin());
}

SOFTNDK_API NTSTATUS SoftNdkDescribeTunable(ULONG index, SOFTNDK_TUNABLE_INFO* info) {
  if (info == nullptr || index >= SoftNdkTunableCount()) return STATUS_INVALID_PARAMETER;
  const tunables::Tunable& t = tunables::begin()[index];
  *info = SOFTNDK_TUNABLE_INFO{t.name, t.default_value, t.help};
  return STATUS_SUCCESS;
}

SOFTNDK_API NTSTATUS SoftNdkSetTunable(const CHAR* name, const CHAR* value) {
  if (name == nullptr || value == nullptr) return STATUS_INVALID_PARAMETER;
  if (tunables::find(name) == nullptr) return STATUS_NOT_FOUND;
  return tunables::set(name, value) ? STATUS_SUCCESS : STATUS_INVALID_PARAMETER;
}

SOFTNDK_API NTSTATUS SoftNdkGetTunable(const CHAR* name, CHAR* buffer, ULONG* length) {
  if (name == nullptr || length == nullptr) return STATUS_INVALID_PARAMETER;
  std::optional<std::string> value = tunables::get(name);
  if (!value) return STATUS_NOT_FOUND;
  ULONG needed = static_cast<ULONG>(value->size() + 1);
  if (buffer == nullptr || *length < needed) {
    *length = needed;
    return STATUS_BUFFER_TOO_SMALL;
  }
  std::memcpy(buffer, value->c_str(), needed);
  *length = needed;
  return STATUS_SUCCESS;
}

SOFTNDK_API VOID SoftNdkResetTunables(VOID) { tunables::reset(); }

SOFTNDK_API NTSTATUS SoftNdkInjectFault(NDK_ADAPTER* ndk, SOFTNDK_FAULT_POINT point,
                                        NTSTATUS status, ULONG count) {
  Adapter* adapter = Adapter::from(ndk);
  int32_t where = raw(point);
  if (NT_SUCCESS(status)) return STATUS_INVALID_PARAMETER;
  if (where == SOFTNDK_FAULT_OPEN) {
    if (ndk != nullptr) return STATUS_INVALID_PARAMETER;
    std::lock_guard lock(g_open_fault_mutex);
    g_open_fault_status = status;
    g_open_fault_count = count;
    return STATUS_SUCCESS;
  }
  if (adapter == nullptr || (where != SOFTNDK_FAULT_CREATE && where != SOFTNDK_FAULT_REQUEST &&
                             where != SOFTNDK_FAULT_CONNECT))
    return STATUS_INVALID_PARAMETER;
  adapter->inject_fault(static_cast<SOFTNDK_FAULT_POINT>(where), status, count);
  return STATUS_SUCCESS;
}

SOFTNDK_API NTSTATUS SoftNdkInjectFatalError(NDK_OBJECT_HEADER* object) {
  if (auto* cq = static_cast<softndk::Cq*>(softndk::Object::from_header(object, NdkObjectTypeCq))) {
    cq->fail(STATUS_INTERNAL_ERROR);  // R117
    return STATUS_SUCCESS;
  }
  if (auto* srq = static_cast<softndk::Srq*>(softndk::Object::from_header(object, NdkObjectTypeSrq))) {
    srq->fail();  // R204
    return STATUS_SUCCESS;
  }
  return STATUS_INVALID_PARAMETER;
}

SOFTNDK_API NTSTATUS SoftNdkGetCompletionMode(NDK_ADAPTER* ndk, SOFTNDK_COMPLETION_MODE* mode,
                                              ULONG64* seed) {
  Adapter* adapter = Adapter::from(ndk);
  if (adapter == nullptr || mode == nullptr) return STATUS_INVALID_PARAMETER;
  *mode = adapter->policy().mode();
  if (seed != nullptr) *seed = adapter->policy().seed();
  return STATUS_SUCCESS;
}

SOFTNDK_API const CHAR* SoftNdkCompletionModeName(SOFTNDK_COMPLETION_MODE mode) {
  switch (raw(mode)) {
    case SOFTNDK_COMPLETION_INLINE: return "inline";
    case SOFTNDK_COMPLETION_CALLER_THREAD: return "caller-thread";
    case SOFTNDK_COMPLETION_PROVIDER_THREAD: return "provider-thread";
    case SOFTNDK_COMPLETION_MIXED: return "mixed";
    case SOFTNDK_COMPLETION_DEFAULT: return "default";
  }
  return "unknown";
}

SOFTNDK_API const CHAR* SoftNdkObjectTypeName(NDK_OBJECT_TYPE type) {
  switch (raw(type)) {
    case NdkObjectTypeAdapter: return "adapter";
    case NdkObjectTypeQp: return "QP";
    case NdkObjectTypeCq: return "CQ";
    case NdkObjectTypeMr: return "MR";
    case NdkObjectTypeMw: return "MW";
    case NdkObjectTypePd: return "PD";
    case NdkObjectTypeSharedEndpoint: return "shared endpoint";
    case NdkObjectTypeConnector: return "connector";
    case NdkObjectTypeListener: return "listener";
    case NdkObjectTypeSrq: return "SRQ";
    default: return "unknown";
  }
}

SOFTNDK_API const CHAR* SoftNdkStatusName(NTSTATUS status) {
#define SOFTNDK_NAME(s) \
  case s:               \
    return #s;
  switch (status) {
    SOFTNDK_NAME(STATUS_SUCCESS)
    SOFTNDK_NAME(STATUS_PENDING)
    SOFTNDK_NAME(STATUS_BUFFER_OVERFLOW)
    SOFTNDK_NAME(STATUS_ACCESS_VIOLATION)
    SOFTNDK_NAME(STATUS_INVALID_HANDLE)
    SOFTNDK_NAME(STATUS_INVALID_PARAMETER)
    SOFTNDK_NAME(STATUS_INVALID_DEVICE_REQUEST)
    SOFTNDK_NAME(STATUS_BUFFER_TOO_SMALL)
    SOFTNDK_NAME(STATUS_INVALID_PARAMETER_MIX)
    SOFTNDK_NAME(STATUS_DATA_ERROR)
    SOFTNDK_NAME(STATUS_SHARING_VIOLATION)
    SOFTNDK_NAME(STATUS_INSUFFICIENT_RESOURCES)
    SOFTNDK_NAME(STATUS_IO_TIMEOUT)
    SOFTNDK_NAME(STATUS_NOT_SUPPORTED)
    SOFTNDK_NAME(STATUS_INTERNAL_ERROR)
    SOFTNDK_NAME(STATUS_CANCELLED)
    SOFTNDK_NAME(STATUS_REMOTE_RESOURCES)
    SOFTNDK_NAME(STATUS_INVALID_ADDRESS)
    SOFTNDK_NAME(STATUS_INVALID_DEVICE_STATE)
    SOFTNDK_NAME(STATUS_INVALID_BUFFER_SIZE)
    SOFTNDK_NAME(STATUS_TOO_MANY_ADDRESSES)
    SOFTNDK_NAME(STATUS_ADDRESS_ALREADY_EXISTS)
    SOFTNDK_NAME(STATUS_CONNECTION_DISCONNECTED)
    SOFTNDK_NAME(STATUS_CONNECTION_RESET)
    SOFTNDK_NAME(STATUS_NOT_FOUND)
    SOFTNDK_NAME(STATUS_CONNECTION_REFUSED)
    SOFTNDK_NAME(STATUS_CONNECTION_INVALID)
    SOFTNDK_NAME(STATUS_NETWORK_UNREACHABLE)
    SOFTNDK_NAME(STATUS_HOST_UNREACHABLE)
    SOFTNDK_NAME(STATUS_CONNECTION_ABORTED)
    SOFTNDK_NAME(STATUS_IMPLEMENTATION_LIMIT)
    SOFTNDK_NAME(NDIS_STATUS_BAD_VERSION)
    SOFTNDK_NAME(NDIS_STATUS_ADAPTER_NOT_READY)
    default:
      return nullptr;
  }
#undef SOFTNDK_NAME
}

}  // extern "C"
