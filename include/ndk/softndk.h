/*
 * SoftNDK — what ndkpi.h leaves open: finding and opening an adapter, the fabrics that
 * carry its traffic, in-process "hosts", tunables and fault injection.
 *
 * On Windows a kernel consumer opens an NDK adapter by interface index through WSK, and
 * NDIS calls the provider's OPEN_NDK_ADAPTER_HANDLER. SoftNDK offers both sides:
 *   - consumers call SoftNdkOpenAdapter (by interface index or address) and
 *     SoftNdkCloseAdapter;
 *   - SoftNdkGetProviderCharacteristics hands out the provider's
 *     NDIS_NDK_PROVIDER_CHARACTERISTICS and the MiniportAdapterContext of an interface,
 *     so a test harness can call the open/close handlers exactly as NDIS would.
 */
#ifndef SOFTNDK_SOFTNDK_H
#define SOFTNDK_SOFTNDK_H

#include "ndk/ndkpi.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef SOFTNDK_API
#define SOFTNDK_API __attribute__((visibility("default")))
#endif

/* The fabric that carries an adapter's traffic. */
typedef enum _SOFTNDK_FABRIC {
    SOFTNDK_FABRIC_INPROC = 1, /* adapters of one process, memory to memory (the default) */
    SOFTNDK_FABRIC_TCP = 2,    /* iWARP (RDMAP/DDP/MPA) over the kernel's TCP: the host's interfaces */
    SOFTNDK_FABRIC_SHM = 3     /* shared memory between processes (not yet available) */
} SOFTNDK_FABRIC;

/* How creates, requests and closes complete (the four paths the NDK contract allows).
 * A zeroed SOFTNDK_OPEN_OPTIONS asks for every default. */
typedef enum _SOFTNDK_COMPLETION_MODE {
    SOFTNDK_COMPLETION_DEFAULT = 0,         /* the completion_mode tunable (default: inline) */
    SOFTNDK_COMPLETION_INLINE = 1,          /* return the final status */
    SOFTNDK_COMPLETION_CALLER_THREAD = 2,   /* STATUS_PENDING, callback before the return */
    SOFTNDK_COMPLETION_PROVIDER_THREAD = 3, /* STATUS_PENDING, callback from a provider thread */
    SOFTNDK_COMPLETION_MIXED = 4            /* each call picks one, from a seeded sequence */
} SOFTNDK_COMPLETION_MODE;

typedef struct _SOFTNDK_OPEN_OPTIONS {
    ULONG Size;                             /* sizeof(SOFTNDK_OPEN_OPTIONS) */
    SOFTNDK_FABRIC Fabric;                  /* 0: SOFTNDK_FABRIC_INPROC */
    SOFTNDK_COMPLETION_MODE CompletionMode; /* SOFTNDK_COMPLETION_DEFAULT: the tunable */
    ULONG64 Seed;                           /* mixed mode; 0: the completion_seed tunable */
} SOFTNDK_OPEN_OPTIONS;

#define SOFTNDK_MAX_INTERFACE_ADDRESSES 8
#define SOFTNDK_MAX_NAME 32

/* One interface an adapter can be opened on. */
typedef struct _SOFTNDK_ADAPTER_DESCRIPTION {
    SOFTNDK_FABRIC Fabric;
    ULONG IfIndex;
    CHAR Name[SOFTNDK_MAX_NAME];
    ULONG AddressCount;
    SOCKADDR_INET Addresses[SOFTNDK_MAX_INTERFACE_ADDRESSES];
} SOFTNDK_ADAPTER_DESCRIPTION;

/* Lists the interfaces of every available fabric. On entry *pCount is the capacity of
 * pDescriptions; on return it is the number of interfaces. STATUS_BUFFER_TOO_SMALL when
 * they did not all fit (the first *pCount-on-entry are filled). */
SOFTNDK_API NTSTATUS SoftNdkEnumerateAdapters(
    _Out_writes_opt_(*pCount) SOFTNDK_ADAPTER_DESCRIPTION *pDescriptions,
    _Inout_ ULONG *pCount);

/* Opens an adapter on the interface with this index (of Options->Fabric). Version is the
 * NDK version the consumer asks for (major, lowest acceptable minor); Options may be NULL.
 * Returns the OPEN_NDK_ADAPTER_HANDLER statuses: NDIS_STATUS_SUCCESS,
 * NDIS_STATUS_BAD_VERSION, NDIS_STATUS_RESOURCES; STATUS_NOT_FOUND for no such interface. */
SOFTNDK_API NTSTATUS SoftNdkOpenAdapter(
    _In_ ULONG IfIndex,
    _In_ NDK_VERSION Version,
    _In_opt_ CONST SOFTNDK_OPEN_OPTIONS *Options,
    _Outptr_ NDK_ADAPTER **ppNdkAdapter);

/* Opens an adapter on the interface that owns this IPv4 or IPv6 address. */
SOFTNDK_API NTSTATUS SoftNdkOpenAdapterByAddress(
    _In_reads_bytes_(AddressLength) CONST SOCKADDR *pAddress,
    _In_ ULONG AddressLength,
    _In_ NDK_VERSION Version,
    _In_opt_ CONST SOFTNDK_OPEN_OPTIONS *Options,
    _Outptr_ NDK_ADAPTER **ppNdkAdapter);

/* Closes an adapter (blocking, like CLOSE_NDK_ADAPTER_HANDLER): waits until the consumer
 * has closed every object of the adapter and every callback has returned. Must not be
 * called from inside an NDK callback. */
SOFTNDK_API VOID SoftNdkCloseAdapter(_In_ NDK_ADAPTER *pNdkAdapter);

/* The provider side, as NDIS sees it: the characteristics (header, open and close
 * handlers) and the MiniportAdapterContext to pass to them for one interface. */
SOFTNDK_API NTSTATUS SoftNdkGetProviderCharacteristics(
    _In_ SOFTNDK_FABRIC Fabric,
    _In_ ULONG IfIndex,
    _Out_ NDIS_NDK_PROVIDER_CHARACTERISTICS *pCharacteristics,
    _Out_ NDIS_HANDLE *pMiniportAdapterContext);

/* ---- in-process hosts: each stands for one machine with the addresses it is given ---- */

/* Creates an in-process interface owning the given IPv4/IPv6 addresses (ports ignored).
 * STATUS_ADDRESS_ALREADY_EXISTS when another in-process host owns one of them. */
SOFTNDK_API NTSTATUS SoftNdkCreateInprocHost(
    _In_ CONST CHAR *Name,
    _In_reads_(AddressCount) CONST SOCKADDR_INET *Addresses,
    _In_ ULONG AddressCount,
    _Out_ ULONG *pIfIndex);

/* Removes an in-process host; STATUS_INVALID_DEVICE_STATE while adapters are open on it. */
SOFTNDK_API NTSTATUS SoftNdkDestroyInprocHost(_In_ ULONG IfIndex);

/* ---- tunables: declared once with a default and a help text; also SOFTNDK_<NAME> ---- */

typedef struct _SOFTNDK_TUNABLE_INFO {
    CONST CHAR *Name;         /* e.g. "max_cq_depth"; its variable is SOFTNDK_MAX_CQ_DEPTH */
    CONST CHAR *DefaultValue;
    CONST CHAR *Help;
} SOFTNDK_TUNABLE_INFO;

SOFTNDK_API ULONG SoftNdkTunableCount(VOID);
SOFTNDK_API NTSTATUS SoftNdkDescribeTunable(_In_ ULONG Index, _Out_ SOFTNDK_TUNABLE_INFO *pInfo);
/* Sets a tunable for adapters opened afterwards. STATUS_NOT_FOUND for an unknown name,
 * STATUS_INVALID_PARAMETER for a value it does not accept. */
SOFTNDK_API NTSTATUS SoftNdkSetTunable(_In_ CONST CHAR *Name, _In_ CONST CHAR *Value);
/* Current value as text (API setting, else environment, else default). */
SOFTNDK_API NTSTATUS SoftNdkGetTunable(
    _In_ CONST CHAR *Name,
    _Out_writes_bytes_opt_(*pLength) CHAR *Buffer,
    _Inout_ ULONG *pLength);
/* Forgets every value set through SoftNdkSetTunable. */
SOFTNDK_API VOID SoftNdkResetTunables(VOID);

/* ---- fault injection: lets a consumer exercise its failure paths ---- */

typedef enum _SOFTNDK_FAULT_POINT {
    SOFTNDK_FAULT_CREATE = 1,  /* the next object creations on the adapter */
    SOFTNDK_FAULT_REQUEST = 2, /* the next requests that take a RequestCompletion */
    SOFTNDK_FAULT_OPEN = 3,    /* the next adapter opens (pNdkAdapter NULL: no adapter yet) */
    SOFTNDK_FAULT_CONNECT = 4  /* the next NdkConnect / NdkConnectWithSharedEndpoint on the
                                  adapter's connectors: the connector stays unconnected and
                                  may connect again (STATUS_INSUFFICIENT_RESOURCES: R160) */
} SOFTNDK_FAULT_POINT;

/* The next Count operations of that kind on this adapter (and its objects) fail with
 * Status, delivered as the completion mode says (inline or through the callback). For
 * SOFTNDK_FAULT_OPEN, pNdkAdapter is NULL and the next Count opens fail with Status. */
SOFTNDK_API NTSTATUS SoftNdkInjectFault(
    _In_ NDK_ADAPTER *pNdkAdapter,
    _In_ SOFTNDK_FAULT_POINT Point,
    _In_ NTSTATUS Status,
    _In_ ULONG Count);

/* Puts a CQ or an SRQ in the fatal error state a hardware fault would cause: its
 * notification callback reports STATUS_INTERNAL_ERROR (a CQ's when armed, at once if it
 * is), and it and the QPs using it become unusable. */
SOFTNDK_API NTSTATUS SoftNdkInjectFatalError(_In_ NDK_OBJECT_HEADER *pCqOrSrq);

/* The adapter's completion mode and seed (the mode actually in force). */
SOFTNDK_API NTSTATUS SoftNdkGetCompletionMode(
    _In_ NDK_ADAPTER *pNdkAdapter,
    _Out_ SOFTNDK_COMPLETION_MODE *pMode,
    _Out_opt_ ULONG64 *pSeed);

/* ---- the SoftNDK diagnostics extension (NdkQueryExtensionInterface on an adapter) ----
 *
 * The one NDK extension interface SoftNDK defines. Query it on an adapter object:
 *
 *   NDK_EXTENSION_INTERFACE ext;
 *   adapter->Dispatch->NdkQueryExtension(&adapter->Header,
 *       (GUID *)&SoftNdkDiagnosticsInterfaceId, SOFTNDK_DIAGNOSTICS_VERSION, &ext);
 *   const SOFTNDK_DIAGNOSTICS_DISPATCH *d = ext.Dispatch;
 *   SOFTNDK_ADAPTER_DIAGNOSTICS diag = { sizeof(diag) };
 *   d->SoftNdkQueryDiagnostics(adapter, &diag);
 *
 * Version 1.0 is served (a request for major 1 with minor 0). Another GUID, another major,
 * a higher minor, or any object other than an adapter: STATUS_NOT_SUPPORTED with the
 * output untouched. */
extern SOFTNDK_API CONST GUID SoftNdkDiagnosticsInterfaceId; /* 8c5c3a1e-4f0b-4d7e-9a51-5d2f1e0b6a31 */
#define SOFTNDK_DIAGNOSTICS_VERSION_MAJOR 1
#define SOFTNDK_DIAGNOSTICS_VERSION_MINOR 0

/* What an adapter is, and what is alive on it right now. */
typedef struct _SOFTNDK_ADAPTER_DIAGNOSTICS {
    ULONG Size;                             /* in: sizeof(SOFTNDK_ADAPTER_DIAGNOSTICS) */
    SOFTNDK_FABRIC Fabric;
    ULONG IfIndex;                          /* the interface it was opened on */
    SOFTNDK_COMPLETION_MODE CompletionMode; /* the mode in force (never DEFAULT) */
    ULONG64 Seed;                           /* of the mixed mode */
    NDK_VERSION Version;                    /* negotiated */
    /* Objects created on the adapter and not yet fully closed (their close callback has
     * not returned), indexed by NDK_OBJECT_TYPE; [NdkObjectTypeUndefined] and
     * [NdkObjectTypeAdapter] are 0. */
    ULONG LiveObjects[NdkObjectTypeMax];
    ULONG LiveLams;                         /* built with NdkBuildLam, not yet released */
} SOFTNDK_ADAPTER_DIAGNOSTICS;

/* STATUS_SUCCESS; STATUS_INVALID_PARAMETER for something that is not an open adapter, a
 * null output or Size below sizeof(SOFTNDK_ADAPTER_DIAGNOSTICS). Non-blocking. */
typedef NTSTATUS (*SOFTNDK_FN_QUERY_DIAGNOSTICS)(
    _In_ NDK_ADAPTER *pNdkAdapter,
    _Inout_ SOFTNDK_ADAPTER_DIAGNOSTICS *pDiagnostics);

/* The extension's dispatch table (NDK_EXTENSION_INTERFACE.Dispatch points at it). */
typedef struct _SOFTNDK_DIAGNOSTICS_DISPATCH {
    SOFTNDK_FN_QUERY_DIAGNOSTICS SoftNdkQueryDiagnostics;
} SOFTNDK_DIAGNOSTICS_DISPATCH;

/* ---- diagnostics ---- */

/* The symbolic name of an NTSTATUS ("STATUS_PENDING"), or NULL for an unknown value. */
SOFTNDK_API CONST CHAR *SoftNdkStatusName(_In_ NTSTATUS Status);
/* "inline", "caller-thread", "provider-thread", "mixed". */
SOFTNDK_API CONST CHAR *SoftNdkCompletionModeName(_In_ SOFTNDK_COMPLETION_MODE Mode);
SOFTNDK_API CONST CHAR *SoftNdkObjectTypeName(_In_ NDK_OBJECT_TYPE Type);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SOFTNDK_SOFTNDK_H */
