/* ndk/mdl.h must compile as strict C11 and every routine, type and macro must be usable
 * from C. softndk_mdl_c11_check() returns 0 when the C view of the MDL agrees with the
 * routines. */
#include "ndk/mdl.h"

_Static_assert(sizeof(CSHORT) == 2, "CSHORT is 16 bits");
_Static_assert(sizeof(PFN_NUMBER) == sizeof(void *), "PFN_NUMBER is pointer-sized");
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(MDL) == 48, "x64 MDL size");
_Static_assert(offsetof(MDL, MdlFlags) == 10, "x64 MDL layout");
_Static_assert(offsetof(MDL, ByteOffset) == 44, "x64 MDL layout");
#endif
_Static_assert(ADDRESS_AND_SIZE_TO_SPAN_PAGES(0x1FFF, 2) == 2, "span crossing a page");
_Static_assert(BYTES_TO_PAGES(4097u) == 2, "bytes to pages");
_Static_assert(ROUND_TO_PAGES(1u) == PAGE_SIZE, "round to pages");
_Static_assert(BYTE_OFFSET(0x1234) == 0x234, "byte offset");

int softndk_mdl_c11_check(void);

int softndk_mdl_c11_check(void)
{
    static unsigned char buffer[3 * 4096];
    PVOID va = buffer + 100;
    const ULONG length = 5000;
    int bad = 0;

    const CSHORT allFlags = (CSHORT)(MDL_MAPPED_TO_SYSTEM_VA | MDL_PAGES_LOCKED |
        MDL_SOURCE_IS_NONPAGED_POOL | MDL_ALLOCATED_FIXED_SIZE | MDL_PARTIAL |
        MDL_PARTIAL_HAS_BEEN_MAPPED | MDL_IO_PAGE_READ | MDL_WRITE_OPERATION |
        MDL_LOCKED_PAGE_TABLES | MDL_FREE_EXTRA_PTES | MDL_DESCRIBES_AWE | MDL_IO_SPACE |
        MDL_NETWORK_HEADER | MDL_MAPPING_CAN_FAIL | MDL_PAGE_CONTENTS_INVARIANT | MDL_INTERNAL);
    MM_PAGE_PRIORITY priority = NormalPagePriority;
    const ULONG mappingFlags = (ULONG)MdlMappingNoWrite | (ULONG)MdlMappingNoExecute;
    PIRP irp = NULL;
    struct _EPROCESS *process = NULL;

    PMDL mdl = IoAllocateMdl(va, length, FALSE, FALSE, irp);
    if (mdl == NULL) {
        return 1;
    }
    MmBuildMdlForNonPagedPool(mdl);
    bad |= mdl->Process != process;
    bad |= MmGetMdlVirtualAddress(mdl) != va;
    bad |= MmGetMdlBaseVa(mdl) != PAGE_ALIGN(va);
    bad |= MmGetMdlByteCount(mdl) != length;
    bad |= MmGetMdlByteOffset(mdl) != BYTE_OFFSET(va);
    bad |= (SIZE_T)mdl->Size != MmSizeOfMdl(va, length);
    bad |= MmGetMdlPfnArray(mdl)[0] != (PFN_NUMBER)((ULONG_PTR)va >> PAGE_SHIFT);
    bad |= MmGetSystemAddressForMdlSafe(mdl, (ULONG)priority | mappingFlags) != va;
    bad |= (mdl->MdlFlags & allFlags) != (MDL_ALLOCATED_FIXED_SIZE | MDL_SOURCE_IS_NONPAGED_POOL);
    bad |= (LowPagePriority != 0) | (HighPagePriority != 32);

    {
        struct {
            MDL header;
            PFN_NUMBER pfn[4];
        } local;
        MmInitializeMdl(&local.header, va, length);
        local.header.Next = mdl;
        bad |= local.header.StartVa != mdl->StartVa;
        bad |= (SIZE_T)local.header.Size !=
               sizeof(MDL) + sizeof(PFN_NUMBER) * ADDRESS_AND_SIZE_TO_SPAN_PAGES(va, length);
        bad |= BYTES_TO_PAGES((SIZE_T)length) > ROUND_TO_PAGES(length) / PAGE_SIZE;
        bad |= local.header.Next->ByteCount != length;
    }

    IoFreeMdl(mdl);
    IoFreeMdl(NULL);
    return bad;
}
