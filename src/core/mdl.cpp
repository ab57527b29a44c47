// SoftNDK — MDL allocation and description (see include/ndk/mdl.h).
//
// The page frame number of a user-space page is its virtual address >> PAGE_SHIFT, so
// building an MDL needs no page-table walk: the PFN array is the run of consecutive
// numbers from StartVa's page.

#include "ndk/mdl.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

static_assert(PAGE_SIZE == (ULONG_PTR{1} << PAGE_SHIFT));
static_assert(sizeof(PFN_NUMBER) == sizeof(void *));
#if UINTPTR_MAX == UINT64_MAX
// x64 Windows layout; the PFN array that follows the structure is naturally aligned.
static_assert(sizeof(MDL) == 48);
static_assert(offsetof(MDL, Next) == 0);
static_assert(offsetof(MDL, Size) == 8);
static_assert(offsetof(MDL, MdlFlags) == 10);
static_assert(offsetof(MDL, Process) == 16);
static_assert(offsetof(MDL, MappedSystemVa) == 24);
static_assert(offsetof(MDL, StartVa) == 32);
static_assert(offsetof(MDL, ByteCount) == 40);
static_assert(offsetof(MDL, ByteOffset) == 44);
#endif
static_assert(sizeof(MDL) % alignof(PFN_NUMBER) == 0);

namespace {

constexpr ULONG_PTR kPageMask = PAGE_SIZE - 1;

// Largest buffer one MDL from IoAllocateMdl may describe (the Windows 7+ limit).
constexpr ULONG kMaxMdlLength = static_cast<ULONG>(0x100000000ULL - PAGE_SIZE);

// ADDRESS_AND_SIZE_TO_SPAN_PAGES without the overflow of Length near SIZE_MAX.
constexpr SIZE_T SpanPages(ULONG_PTR va, SIZE_T length)
{
    const SIZE_T offset = va & kPageMask;
    return (length >> PAGE_SHIFT) + (((length & kPageMask) + offset + kPageMask) >> PAGE_SHIFT);
}

static_assert(SpanPages(0x1000, 0) == 0);
static_assert(SpanPages(0x1001, 0) == 1);
static_assert(SpanPages(0x1000, 0x1000) == 1);
static_assert(SpanPages(0x1FFF, 2) == 2);
static_assert(SpanPages(0x1FFF, SIZE_MAX) == (SIZE_MAX >> PAGE_SHIFT) + 2);

} // namespace

extern "C" {

SOFTNDK_API SIZE_T MmSizeOfMdl(PVOID Base, SIZE_T Length)
{
    return sizeof(MDL) + sizeof(PFN_NUMBER) * SpanPages(reinterpret_cast<ULONG_PTR>(Base), Length);
}

SOFTNDK_API PMDL IoAllocateMdl(PVOID VirtualAddress, ULONG Length, BOOLEAN SecondaryBuffer,
                               BOOLEAN ChargeQuota, PIRP Irp)
{
    (void)ChargeQuota;
    if (Length == 0 || Length > kMaxMdlLength) {
        return nullptr;
    }
    const auto va = reinterpret_cast<ULONG_PTR>(VirtualAddress);
    if (va > UINTPTR_MAX - Length) {
        return nullptr; // the range would wrap the address space
    }
    if (SecondaryBuffer && Irp != nullptr) {
        return nullptr; // no IRP whose MDL chain could be extended
    }

    auto *mdl = static_cast<PMDL>(std::calloc(1, MmSizeOfMdl(VirtualAddress, Length)));
    if (mdl == nullptr) {
        return nullptr;
    }
    MmInitializeMdl(mdl, VirtualAddress, Length);
    mdl->MdlFlags = MDL_ALLOCATED_FIXED_SIZE;
    return mdl;
}

SOFTNDK_API VOID IoFreeMdl(PMDL Mdl)
{
    if (Mdl == nullptr) {
        return;
    }
    if ((Mdl->MdlFlags & MDL_ALLOCATED_FIXED_SIZE) == 0) {
        // Freeing caller storage would corrupt the heap; fail loudly, as Windows would.
        std::fprintf(stderr,
                     "softndk: IoFreeMdl(%p): MDL was not allocated by IoAllocateMdl "
                     "(MdlFlags 0x%04x)\n",
                     static_cast<void *>(Mdl), static_cast<unsigned>(static_cast<USHORT>(Mdl->MdlFlags)));
        std::abort();
    }
    Mdl->MdlFlags = 0;
    std::free(Mdl);
}

SOFTNDK_API VOID MmBuildMdlForNonPagedPool(PMDL MemoryDescriptorList)
{
    PMDL mdl = MemoryDescriptorList;
    if (mdl == nullptr) {
        return;
    }
    const ULONG_PTR va = reinterpret_cast<ULONG_PTR>(mdl->StartVa) + mdl->ByteOffset;
    const SIZE_T pages = SpanPages(va, mdl->ByteCount);
    const PFN_NUMBER first = va >> PAGE_SHIFT;
    PPFN_NUMBER pfn = MmGetMdlPfnArray(mdl);
    for (SIZE_T i = 0; i < pages; ++i) {
        pfn[i] = first + i;
    }
    mdl->Process = nullptr;
    mdl->MappedSystemVa = MmGetMdlVirtualAddress(mdl);
    mdl->MdlFlags = static_cast<CSHORT>(mdl->MdlFlags | MDL_SOURCE_IS_NONPAGED_POOL);
}

} // extern "C"
