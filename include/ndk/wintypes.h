/*
 * SoftNDK — Windows base types, NTSTATUS codes and the few kernel shapes that the
 * NDK interface uses, with Windows (LLP64) widths on an LP64 Linux host.
 *
 * A consumer written for the Windows kernel uses these names unchanged; the values
 * are the Windows ones (see docs/DECISIONS.md for where each came from).
 */
#ifndef SOFTNDK_WINTYPES_H
#define SOFTNDK_WINTYPES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "ndk/sal.h"

/* Windows' headers use anonymous structs and unions, which ISO C++ lacks; GCC and
 * Clang accept them silently when marked as an extension. */
#if defined(__GNUC__)
#define SOFTNDK_EXTENSION __extension__
#else
#define SOFTNDK_EXTENSION
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Integer and pointer types (Windows widths: ULONG is 32 bits, as on Win64) ---- */
#ifndef VOID
#define VOID void
#endif
#ifndef CONST
#define CONST const
#endif
typedef char CHAR;
typedef unsigned char UCHAR;
typedef int16_t SHORT;
typedef uint16_t USHORT;
typedef int32_t LONG;
typedef uint32_t ULONG;
typedef int64_t LONGLONG;
typedef uint64_t ULONGLONG;
typedef int64_t LONG64;
typedef uint64_t ULONG64;
typedef int32_t INT32;
typedef uint32_t UINT32;
typedef int64_t INT64;
typedef uint64_t UINT64;
typedef uintptr_t ULONG_PTR;
typedef intptr_t LONG_PTR;
typedef size_t SIZE_T;
typedef UCHAR BOOLEAN;
typedef void *PVOID;
typedef ULONG *PULONG;
typedef UCHAR *PUCHAR;
typedef ULONG_PTR KAFFINITY;
typedef LONG NTSTATUS;
typedef NTSTATUS *PNTSTATUS;
typedef PVOID NDIS_HANDLE;
typedef NTSTATUS NDIS_STATUS;

#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif
#define MAXULONG 0xFFFFFFFFUL
#define MAXUSHORT 0xFFFF
#define MAXULONG64 (~(ULONG64)0)

#ifndef FIELD_OFFSET
#define FIELD_OFFSET(type, field) offsetof(type, field)
#endif
#ifndef UNREFERENCED_PARAMETER
#define UNREFERENCED_PARAMETER(P) ((void)(P))
#endif

/* In user space the logical address of a page is its virtual address, and a page is
 * the host page: 4 KiB on every Linux target SoftNDK supports. */
#ifndef PAGE_SHIFT
#define PAGE_SHIFT 12
#endif
#ifndef PAGE_SIZE
#define PAGE_SIZE (1UL << PAGE_SHIFT)
#endif

typedef union _LARGE_INTEGER {
    SOFTNDK_EXTENSION struct {
        ULONG LowPart;
        LONG HighPart;
    };
    struct {
        ULONG LowPart;
        LONG HighPart;
    } u;
    LONGLONG QuadPart;
} LARGE_INTEGER, *PLARGE_INTEGER;

typedef LARGE_INTEGER PHYSICAL_ADDRESS, *PPHYSICAL_ADDRESS;

typedef struct _GUID {
    ULONG Data1;
    USHORT Data2;
    USHORT Data3;
    UCHAR Data4[8];
} GUID;

typedef struct _GROUP_AFFINITY {
    KAFFINITY Mask;
    USHORT Group;
    USHORT Reserved[3];
} GROUP_AFFINITY, *PGROUP_AFFINITY;

/* ---- Socket addresses: the host's own, which match Windows' byte layout ---- */
typedef USHORT ADDRESS_FAMILY;
typedef struct sockaddr SOCKADDR, *PSOCKADDR;
typedef struct sockaddr_in SOCKADDR_IN, *PSOCKADDR_IN;
typedef struct sockaddr_in6 SOCKADDR_IN6, *PSOCKADDR_IN6;
typedef struct sockaddr_storage SOCKADDR_STORAGE, *PSOCKADDR_STORAGE;
typedef union _SOCKADDR_INET {
    SOCKADDR_IN Ipv4;
    SOCKADDR_IN6 Ipv6;
    ADDRESS_FAMILY si_family;
} SOCKADDR_INET, *PSOCKADDR_INET;

/* ---- NTSTATUS ---- */
#define NT_SUCCESS(Status) (((NTSTATUS)(Status)) >= 0)
#define SOFTNDK_NTSTATUS(v) ((NTSTATUS)(UINT32)(v))

#define STATUS_SUCCESS                  SOFTNDK_NTSTATUS(0x00000000)
#define STATUS_PENDING                  SOFTNDK_NTSTATUS(0x00000103)
#define STATUS_BUFFER_OVERFLOW          SOFTNDK_NTSTATUS(0x80000005)
#define STATUS_ACCESS_VIOLATION         SOFTNDK_NTSTATUS(0xC0000005)
#define STATUS_INVALID_HANDLE           SOFTNDK_NTSTATUS(0xC0000008)
#define STATUS_INVALID_PARAMETER        SOFTNDK_NTSTATUS(0xC000000D)
#define STATUS_INVALID_DEVICE_REQUEST   SOFTNDK_NTSTATUS(0xC0000010)
#define STATUS_BUFFER_TOO_SMALL         SOFTNDK_NTSTATUS(0xC0000023)
#define STATUS_INVALID_PARAMETER_MIX    SOFTNDK_NTSTATUS(0xC0000030)
#define STATUS_DATA_ERROR               SOFTNDK_NTSTATUS(0xC000003E)
#define STATUS_SHARING_VIOLATION        SOFTNDK_NTSTATUS(0xC0000043)
#define STATUS_INSUFFICIENT_RESOURCES   SOFTNDK_NTSTATUS(0xC000009A)
#define STATUS_IO_TIMEOUT               SOFTNDK_NTSTATUS(0xC00000B5)
#define STATUS_NOT_SUPPORTED            SOFTNDK_NTSTATUS(0xC00000BB)
#define STATUS_INTERNAL_ERROR           SOFTNDK_NTSTATUS(0xC00000E5)
#define STATUS_CANCELLED                SOFTNDK_NTSTATUS(0xC0000120)
#define STATUS_REMOTE_RESOURCES         SOFTNDK_NTSTATUS(0xC000013D)
#define STATUS_INVALID_ADDRESS          SOFTNDK_NTSTATUS(0xC0000141)
#define STATUS_INVALID_DEVICE_STATE     SOFTNDK_NTSTATUS(0xC0000184)
#define STATUS_INVALID_BUFFER_SIZE      SOFTNDK_NTSTATUS(0xC0000206)
#define STATUS_TOO_MANY_ADDRESSES       SOFTNDK_NTSTATUS(0xC0000209)
#define STATUS_ADDRESS_ALREADY_EXISTS   SOFTNDK_NTSTATUS(0xC000020A)
#define STATUS_CONNECTION_DISCONNECTED  SOFTNDK_NTSTATUS(0xC000020C)
#define STATUS_CONNECTION_RESET         SOFTNDK_NTSTATUS(0xC000020D)
#define STATUS_NOT_FOUND                SOFTNDK_NTSTATUS(0xC0000225)
#define STATUS_CONNECTION_REFUSED       SOFTNDK_NTSTATUS(0xC0000236)
#define STATUS_CONNECTION_INVALID       SOFTNDK_NTSTATUS(0xC000023A)
#define STATUS_NETWORK_UNREACHABLE      SOFTNDK_NTSTATUS(0xC000023C)
#define STATUS_HOST_UNREACHABLE         SOFTNDK_NTSTATUS(0xC000023D)
#define STATUS_CONNECTION_ABORTED       SOFTNDK_NTSTATUS(0xC0000241)
#define STATUS_IMPLEMENTATION_LIMIT     SOFTNDK_NTSTATUS(0xC000042B)

#define NDIS_STATUS_SUCCESS             STATUS_SUCCESS
#define NDIS_STATUS_PENDING             STATUS_PENDING
#define NDIS_STATUS_RESOURCES           STATUS_INSUFFICIENT_RESOURCES
#define NDIS_STATUS_BAD_VERSION         SOFTNDK_NTSTATUS(0xC0010004)
#define NDIS_STATUS_ADAPTER_NOT_READY   SOFTNDK_NTSTATUS(0xC0010011)

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SOFTNDK_WINTYPES_H */
