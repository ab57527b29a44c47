/*
 * SoftNDK — mdl.h: the memory descriptor list (MDL) in the layout of the x64 Windows
 * kernel, and the routines that NDK consumers use to build and read one.
 *
 * An MDL describes the pages behind one virtually contiguous buffer: StartVa is the
 * page that holds the first byte, ByteOffset the first byte's offset in that page,
 * ByteCount the length, and an array of page frame numbers (one per spanned page)
 * follows the structure in memory. MDLs are chained through Next. A provider reaches
 * registered data through the MDL chain, never by treating a registered base address
 * as a pointer.
 *
 * In user space there are no physical pages to name: the page frame number of a page is
 * its virtual address shifted right by PAGE_SHIFT, and the system address of a buffer is
 * the process's own virtual address.
 */
#ifndef SOFTNDK_MDL_H
#define SOFTNDK_MDL_H

#include "ndk/wintypes.h"

#ifndef SOFTNDK_API
#define SOFTNDK_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef SHORT CSHORT;
typedef ULONG_PTR PFN_NUMBER, *PPFN_NUMBER;

struct _EPROCESS;
typedef struct _IRP IRP, *PIRP;

/* 48 bytes on an LP64 host, as on x64 Windows; the PFN array starts at (PMDL)Mdl + 1. */
typedef struct _MDL {
    struct _MDL *Next;
    CSHORT Size;                /* bytes of MDL plus PFN array (truncated to 16 bits) */
    CSHORT MdlFlags;
    struct _EPROCESS *Process;  /* always NULL in SoftNDK */
    PVOID MappedSystemVa;
    PVOID StartVa;              /* page-aligned */
    ULONG ByteCount;
    ULONG ByteOffset;
} MDL, *PMDL;

/* ---- MdlFlags ---- */
#define MDL_MAPPED_TO_SYSTEM_VA     0x0001
#define MDL_PAGES_LOCKED            0x0002
#define MDL_SOURCE_IS_NONPAGED_POOL 0x0004
#define MDL_ALLOCATED_FIXED_SIZE    0x0008 /* SoftNDK: set on every MDL from IoAllocateMdl */
#define MDL_PARTIAL                 0x0010
#define MDL_PARTIAL_HAS_BEEN_MAPPED 0x0020
#define MDL_IO_PAGE_READ            0x0040
#define MDL_WRITE_OPERATION         0x0080
#define MDL_LOCKED_PAGE_TABLES      0x0100
#define MDL_FREE_EXTRA_PTES         0x0200
#define MDL_DESCRIBES_AWE           0x0400
#define MDL_IO_SPACE                0x0800
#define MDL_NETWORK_HEADER          0x1000
#define MDL_MAPPING_CAN_FAIL        0x2000
#define MDL_PAGE_CONTENTS_INVARIANT 0x4000
#define MDL_INTERNAL                0x8000

/* ---- Mapping priority; the Mdl* bits may be OR-ed into it ---- */
typedef enum _MM_PAGE_PRIORITY {
    LowPagePriority = 0,
    NormalPagePriority = 16,
    HighPagePriority = 32
} MM_PAGE_PRIORITY;

#define MdlMappingNoWrite   0x80000000
#define MdlMappingNoExecute 0x40000000

/* ---- Page arithmetic ---- */
#ifndef PAGE_ALIGN
#define PAGE_ALIGN(Va) ((PVOID)((ULONG_PTR)(Va) & ~(ULONG_PTR)(PAGE_SIZE - 1)))
#endif
#ifndef BYTE_OFFSET
#define BYTE_OFFSET(Va) ((ULONG)((ULONG_PTR)(Va) & (ULONG_PTR)(PAGE_SIZE - 1)))
#endif
/* Pages touched by Size bytes starting at Va (0 when Size is 0 and Va is page-aligned). */
#ifndef ADDRESS_AND_SIZE_TO_SPAN_PAGES
#define ADDRESS_AND_SIZE_TO_SPAN_PAGES(Va, Size) \
    ((BYTE_OFFSET(Va) + (SIZE_T)(Size) + (PAGE_SIZE - 1)) >> PAGE_SHIFT)
#endif
#ifndef BYTES_TO_PAGES
#define BYTES_TO_PAGES(Size) (((Size) >> PAGE_SHIFT) + (((Size) & (PAGE_SIZE - 1)) != 0))
#endif
#ifndef ROUND_TO_PAGES
#define ROUND_TO_PAGES(Size) \
    (((ULONG_PTR)(Size) + (PAGE_SIZE - 1)) & ~(ULONG_PTR)(PAGE_SIZE - 1))
#endif

/* ---- Exported routines ---- */

/* Allocates an MDL (with its PFN array) for Length bytes at VirtualAddress; the buffer
 * itself is not touched. Returns NULL when Length is 0, exceeds 4 GiB - PAGE_SIZE, or
 * the range wraps the address space. There are no IRPs in user space: Irp is ignored
 * when SecondaryBuffer is FALSE, and a non-NULL Irp with SecondaryBuffer TRUE yields
 * NULL. ChargeQuota is ignored. */
SOFTNDK_API PMDL IoAllocateMdl(
    _In_opt_ PVOID VirtualAddress,
    _In_ ULONG Length,
    _In_ BOOLEAN SecondaryBuffer,
    _In_ BOOLEAN ChargeQuota,
    _Inout_opt_ PIRP Irp);

/* Frees an MDL from IoAllocateMdl (NULL is a no-op). Any other MDL, including one that
 * MmInitializeMdl has re-initialised, lacks MDL_ALLOCATED_FIXED_SIZE and aborts the
 * process with a diagnostic. */
SOFTNDK_API VOID IoFreeMdl(_In_opt_ PMDL Mdl);

/* Fills the PFN array for the pages the MDL spans, sets MDL_SOURCE_IS_NONPAGED_POOL and
 * points MappedSystemVa at the buffer. */
SOFTNDK_API VOID MmBuildMdlForNonPagedPool(_Inout_ PMDL MemoryDescriptorList);

/* Bytes needed for an MDL (structure plus PFN array) describing Length bytes at Base. */
SOFTNDK_API SIZE_T MmSizeOfMdl(_In_opt_ PVOID Base, _In_ SIZE_T Length);

/* ---- Accessors (macros on Windows; inline functions here) ---- */

/* Initialises caller-provided storage of at least MmSizeOfMdl(BaseVa, Length) bytes. */
static inline VOID MmInitializeMdl(_Out_ PMDL MemoryDescriptorList, _In_opt_ PVOID BaseVa,
                                   _In_ SIZE_T Length)
{
    MemoryDescriptorList->Next = (PMDL)NULL;
    MemoryDescriptorList->Size = (CSHORT)(sizeof(MDL) + sizeof(PFN_NUMBER) *
                                          ADDRESS_AND_SIZE_TO_SPAN_PAGES(BaseVa, Length));
    MemoryDescriptorList->MdlFlags = 0;
    MemoryDescriptorList->StartVa = PAGE_ALIGN(BaseVa);
    MemoryDescriptorList->ByteOffset = BYTE_OFFSET(BaseVa);
    MemoryDescriptorList->ByteCount = (ULONG)Length;
}

static inline PVOID MmGetMdlBaseVa(_In_ const MDL *Mdl)
{
    return Mdl->StartVa;
}

static inline PVOID MmGetMdlVirtualAddress(_In_ const MDL *Mdl)
{
    return (PVOID)((ULONG_PTR)Mdl->StartVa + Mdl->ByteOffset);
}

static inline ULONG MmGetMdlByteCount(_In_ const MDL *Mdl)
{
    return Mdl->ByteCount;
}

static inline ULONG MmGetMdlByteOffset(_In_ const MDL *Mdl)
{
    return Mdl->ByteOffset;
}

static inline PPFN_NUMBER MmGetMdlPfnArray(_In_ PMDL Mdl)
{
    return (PPFN_NUMBER)(Mdl + 1);
}

/* Priority (an MM_PAGE_PRIORITY, optionally with MdlMapping* bits) does not matter in
 * user space, and the mapping never fails. */
static inline PVOID MmGetSystemAddressForMdlSafe(_Inout_ PMDL Mdl, _In_ ULONG Priority)
{
    (void)Priority;
    if (Mdl->MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL)) {
        return Mdl->MappedSystemVa;
    }
    return MmGetMdlVirtualAddress(Mdl);
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SOFTNDK_MDL_H */
