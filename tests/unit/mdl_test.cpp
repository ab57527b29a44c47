// Unit tests for the MDL shape and routines in ndk/mdl.h.

#include "ndk/mdl.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr std::uintptr_t kPage = 4096;

std::uintptr_t Addr(const void *p)
{
    return reinterpret_cast<std::uintptr_t>(p);
}

// Pages touched by [va, va + len), computed from first and last byte (len > 0).
std::size_t ExpectedSpan(std::uintptr_t va, std::size_t len)
{
    return (va + len - 1) / kPage - va / kPage + 1;
}

struct FreeDeleter {
    void operator()(void *p) const { std::free(p); }
};
using PageBuffer = std::unique_ptr<unsigned char, FreeDeleter>;

PageBuffer AllocPages(std::size_t pages)
{
    void *p = std::aligned_alloc(kPage, pages * kPage);
    return PageBuffer(static_cast<unsigned char *>(p));
}

struct MdlDeleter {
    void operator()(PMDL m) const { IoFreeMdl(m); }
};
using MdlPtr = std::unique_ptr<MDL, MdlDeleter>;

// Reads the bytes an MDL chain describes the way a provider does: page by page through
// the PFN array, never through the buffer pointer the consumer started from.
std::vector<unsigned char> ReadThroughChain(PMDL mdl)
{
    std::vector<unsigned char> out;
    for (; mdl != nullptr; mdl = mdl->Next) {
        const PPFN_NUMBER pfns = MmGetMdlPfnArray(mdl);
        std::size_t remaining = MmGetMdlByteCount(mdl);
        std::size_t offset = MmGetMdlByteOffset(mdl);
        for (std::size_t i = 0; remaining != 0; ++i) {
            const std::size_t chunk = std::min<std::size_t>(remaining, kPage - offset);
            const auto *page = reinterpret_cast<const unsigned char *>(pfns[i] << PAGE_SHIFT);
            out.insert(out.end(), page + offset, page + offset + chunk);
            remaining -= chunk;
            offset = 0;
        }
    }
    return out;
}

TEST(MdlLayout, MatchesX64Windows)
{
    if (sizeof(void *) != 8) {
        GTEST_SKIP() << "the x64 layout applies to 64-bit hosts";
    }
    EXPECT_EQ(sizeof(MDL), 48u);
    EXPECT_EQ(offsetof(MDL, Next), 0u);
    EXPECT_EQ(offsetof(MDL, Size), 8u);
    EXPECT_EQ(offsetof(MDL, MdlFlags), 10u);
    EXPECT_EQ(offsetof(MDL, Process), 16u);
    EXPECT_EQ(offsetof(MDL, MappedSystemVa), 24u);
    EXPECT_EQ(offsetof(MDL, StartVa), 32u);
    EXPECT_EQ(offsetof(MDL, ByteCount), 40u);
    EXPECT_EQ(offsetof(MDL, ByteOffset), 44u);
    EXPECT_EQ(sizeof(CSHORT), 2u);
    EXPECT_EQ(sizeof(PFN_NUMBER), 8u);
    EXPECT_EQ(PAGE_SIZE, kPage);
}

TEST(MdlConstants, WindowsValues)
{
    EXPECT_EQ(MDL_MAPPED_TO_SYSTEM_VA, 0x0001);
    EXPECT_EQ(MDL_PAGES_LOCKED, 0x0002);
    EXPECT_EQ(MDL_SOURCE_IS_NONPAGED_POOL, 0x0004);
    EXPECT_EQ(MDL_ALLOCATED_FIXED_SIZE, 0x0008);
    EXPECT_EQ(MDL_PARTIAL, 0x0010);
    EXPECT_EQ(MDL_PARTIAL_HAS_BEEN_MAPPED, 0x0020);
    EXPECT_EQ(MDL_IO_PAGE_READ, 0x0040);
    EXPECT_EQ(MDL_WRITE_OPERATION, 0x0080);
    EXPECT_EQ(MDL_LOCKED_PAGE_TABLES, 0x0100);
    EXPECT_EQ(MDL_FREE_EXTRA_PTES, 0x0200);
    EXPECT_EQ(MDL_DESCRIBES_AWE, 0x0400);
    EXPECT_EQ(MDL_IO_SPACE, 0x0800);
    EXPECT_EQ(MDL_NETWORK_HEADER, 0x1000);
    EXPECT_EQ(MDL_MAPPING_CAN_FAIL, 0x2000);
    EXPECT_EQ(MDL_PAGE_CONTENTS_INVARIANT, 0x4000);
    EXPECT_EQ(MDL_INTERNAL, 0x8000);
    EXPECT_EQ(LowPagePriority, 0);
    EXPECT_EQ(NormalPagePriority, 16);
    EXPECT_EQ(HighPagePriority, 32);
    EXPECT_EQ(MdlMappingNoWrite, 0x80000000u);
    EXPECT_EQ(MdlMappingNoExecute, 0x40000000u);
}

TEST(MdlMacros, PageArithmetic)
{
    EXPECT_EQ(PAGE_ALIGN(0x12345), reinterpret_cast<PVOID>(0x12000));
    EXPECT_EQ(PAGE_ALIGN(0x12000), reinterpret_cast<PVOID>(0x12000));
    EXPECT_EQ(BYTE_OFFSET(0x12345), 0x345u);
    EXPECT_EQ(BYTE_OFFSET(0x12000), 0u);

    // Exact page at offset 0, one byte more, crossings near the end of a page.
    EXPECT_EQ(ADDRESS_AND_SIZE_TO_SPAN_PAGES(0x1000, 0x1000), 1u);
    EXPECT_EQ(ADDRESS_AND_SIZE_TO_SPAN_PAGES(0x1000, 0x1001), 2u);
    EXPECT_EQ(ADDRESS_AND_SIZE_TO_SPAN_PAGES(0x1000, 0x3000), 3u);
    EXPECT_EQ(ADDRESS_AND_SIZE_TO_SPAN_PAGES(0x1FFF, 1), 1u);
    EXPECT_EQ(ADDRESS_AND_SIZE_TO_SPAN_PAGES(0x1FFF, 2), 2u);
    EXPECT_EQ(ADDRESS_AND_SIZE_TO_SPAN_PAGES(0x1001, 0x1000), 2u);
    EXPECT_EQ(ADDRESS_AND_SIZE_TO_SPAN_PAGES(0x1001, 0x0FFF), 1u);
    EXPECT_EQ(ADDRESS_AND_SIZE_TO_SPAN_PAGES(0x1000, 0), 0u);
    EXPECT_EQ(ADDRESS_AND_SIZE_TO_SPAN_PAGES(0x1001, 0), 1u); // Windows' formula

    EXPECT_EQ(BYTES_TO_PAGES(0u), 0u);
    EXPECT_EQ(BYTES_TO_PAGES(1u), 1u);
    EXPECT_EQ(BYTES_TO_PAGES(4096u), 1u);
    EXPECT_EQ(BYTES_TO_PAGES(4097u), 2u);
    EXPECT_EQ(ROUND_TO_PAGES(0u), 0u);
    EXPECT_EQ(ROUND_TO_PAGES(1u), 4096u);
    EXPECT_EQ(ROUND_TO_PAGES(4096u), 4096u);
    EXPECT_EQ(ROUND_TO_PAGES(4097u), 8192u);
}

TEST(MmSizeOfMdl, StructurePlusOnePfnPerPage)
{
    EXPECT_EQ(MmSizeOfMdl(reinterpret_cast<PVOID>(0x10000), 0), sizeof(MDL));
    EXPECT_EQ(MmSizeOfMdl(reinterpret_cast<PVOID>(0x10000), 1), sizeof(MDL) + sizeof(PFN_NUMBER));
    EXPECT_EQ(MmSizeOfMdl(reinterpret_cast<PVOID>(0x10000), 0x1000), sizeof(MDL) + sizeof(PFN_NUMBER));
    EXPECT_EQ(MmSizeOfMdl(reinterpret_cast<PVOID>(0x10FFF), 2), sizeof(MDL) + 2 * sizeof(PFN_NUMBER));
    EXPECT_EQ(MmSizeOfMdl(reinterpret_cast<PVOID>(0x10100), 0x2000), sizeof(MDL) + 3 * sizeof(PFN_NUMBER));
    // No wrap for absurd lengths.
    EXPECT_GT(MmSizeOfMdl(reinterpret_cast<PVOID>(0x10FFF), SIZE_MAX / 16), SIZE_MAX / 16 / kPage);
}

TEST(IoAllocateMdl, UnalignedBufferSpanningPages)
{
    PageBuffer buf = AllocPages(4);
    ASSERT_NE(buf, nullptr);
    unsigned char *va = buf.get() + 100;
    const ULONG len = 2 * kPage; // 100..8291 touches pages 0, 1 and 2

    MdlPtr mdl(IoAllocateMdl(va, len, FALSE, FALSE, nullptr));
    ASSERT_NE(mdl, nullptr);
    EXPECT_EQ(mdl->Next, nullptr);
    EXPECT_EQ(mdl->Process, nullptr);
    EXPECT_EQ(mdl->Size, static_cast<CSHORT>(sizeof(MDL) + 3 * sizeof(PFN_NUMBER)));
    EXPECT_EQ(static_cast<SIZE_T>(mdl->Size), MmSizeOfMdl(va, len));
    EXPECT_EQ(mdl->ByteOffset, 100u);
    EXPECT_EQ(mdl->ByteCount, len);
    EXPECT_EQ(mdl->StartVa, buf.get());
    EXPECT_EQ(mdl->MdlFlags, MDL_ALLOCATED_FIXED_SIZE);
    EXPECT_EQ(MmGetMdlVirtualAddress(mdl.get()), va);
    EXPECT_EQ(MmGetMdlBaseVa(mdl.get()), buf.get());
    EXPECT_EQ(MmGetMdlByteCount(mdl.get()), len);
    EXPECT_EQ(MmGetMdlByteOffset(mdl.get()), 100u);
    EXPECT_EQ(reinterpret_cast<unsigned char *>(MmGetMdlPfnArray(mdl.get())),
              reinterpret_cast<unsigned char *>(mdl.get()) + sizeof(MDL));
}

TEST(IoAllocateMdl, ArbitraryHeapBuffers)
{
    // Whatever alignment malloc gives, the MDL agrees with a first/last-byte count.
    for (std::size_t len : {1u, 7u, 4095u, 4096u, 4097u, 10000u, 65536u, 65537u}) {
        for (std::size_t skew : {0u, 1u, 13u, 4000u}) {
            std::vector<unsigned char> storage(len + skew);
            unsigned char *va = storage.data() + skew;
            MdlPtr mdl(IoAllocateMdl(va, static_cast<ULONG>(len), FALSE, FALSE, nullptr));
            ASSERT_NE(mdl, nullptr);
            const std::size_t span = ExpectedSpan(Addr(va), len);
            EXPECT_EQ(ADDRESS_AND_SIZE_TO_SPAN_PAGES(va, len), span) << len << "+" << skew;
            EXPECT_EQ(static_cast<SIZE_T>(mdl->Size), sizeof(MDL) + span * sizeof(PFN_NUMBER));
            EXPECT_EQ(MmSizeOfMdl(va, len), sizeof(MDL) + span * sizeof(PFN_NUMBER));
            EXPECT_EQ(Addr(mdl->StartVa), Addr(va) & ~(kPage - 1));
            EXPECT_EQ(mdl->ByteOffset, Addr(va) % kPage);
            EXPECT_EQ(MmGetMdlVirtualAddress(mdl.get()), va);
        }
    }
}

TEST(IoAllocateMdl, RejectsBadRanges)
{
    int dummy = 0;
    EXPECT_EQ(IoAllocateMdl(&dummy, 0, FALSE, FALSE, nullptr), nullptr);
    // Wraps the address space.
    EXPECT_EQ(IoAllocateMdl(reinterpret_cast<PVOID>(UINTPTR_MAX - 100), 4096, FALSE, FALSE, nullptr),
              nullptr);
    // Beyond 4 GiB - PAGE_SIZE.
    EXPECT_EQ(IoAllocateMdl(reinterpret_cast<PVOID>(0x10000000), 0xFFFFFFFFu, FALSE, FALSE, nullptr),
              nullptr);
    EXPECT_EQ(IoAllocateMdl(reinterpret_cast<PVOID>(0x10000000), 0xFFFFF001u, FALSE, FALSE, nullptr),
              nullptr);
}

TEST(IoAllocateMdl, LargestLengthDoesNotTouchTheBuffer)
{
    // The buffer is never dereferenced, so a made-up address is fine here.
    const ULONG len = 0xFFFFF000u;
    MdlPtr mdl(IoAllocateMdl(reinterpret_cast<PVOID>(0x10000800), len, FALSE, FALSE, nullptr));
    ASSERT_NE(mdl, nullptr);
    EXPECT_EQ(mdl->ByteCount, len);
    EXPECT_EQ(mdl->ByteOffset, 0x800u);
    EXPECT_EQ(mdl->StartVa, reinterpret_cast<PVOID>(0x10000000));
}

TEST(IoAllocateMdl, IrpHandling)
{
    int fake = 0;
    const PIRP irp = reinterpret_cast<PIRP>(&fake);
    unsigned char buf[64] = {};

    MdlPtr primary(IoAllocateMdl(buf, sizeof buf, FALSE, TRUE, irp));
    EXPECT_NE(primary, nullptr); // Irp ignored
    MdlPtr secondaryNoIrp(IoAllocateMdl(buf, sizeof buf, TRUE, FALSE, nullptr));
    EXPECT_NE(secondaryNoIrp, nullptr);
    EXPECT_EQ(IoAllocateMdl(buf, sizeof buf, TRUE, FALSE, irp), nullptr);
    EXPECT_EQ(fake, 0);
}

TEST(MmBuildMdlForNonPagedPool, FillsConsecutivePfns)
{
    PageBuffer buf = AllocPages(5);
    ASSERT_NE(buf, nullptr);
    unsigned char *va = buf.get() + kPage - 10; // 10 bytes of page 0, then 3 pages and 1 byte
    const ULONG len = 10 + 3 * kPage + 1;
    for (ULONG i = 0; i < len; ++i) {
        va[i] = static_cast<unsigned char>(i * 7 + 3);
    }

    MdlPtr mdl(IoAllocateMdl(va, len, FALSE, FALSE, nullptr));
    ASSERT_NE(mdl, nullptr);
    ASSERT_EQ(mdl->Size, static_cast<CSHORT>(sizeof(MDL) + 5 * sizeof(PFN_NUMBER)));
    PPFN_NUMBER pfns = MmGetMdlPfnArray(mdl.get());
    for (std::size_t i = 0; i < 5; ++i) {
        pfns[i] = 0xDEADBEEF;
    }

    MmBuildMdlForNonPagedPool(mdl.get());
    EXPECT_EQ(mdl->MdlFlags, MDL_ALLOCATED_FIXED_SIZE | MDL_SOURCE_IS_NONPAGED_POOL);
    EXPECT_EQ(mdl->MappedSystemVa, va);
    for (std::size_t i = 0; i < 5; ++i) {
        EXPECT_EQ(pfns[i], (Addr(buf.get()) + i * kPage) >> PAGE_SHIFT) << "page " << i;
        if (i > 0) {
            EXPECT_EQ(pfns[i], pfns[i - 1] + 1);
        }
    }

    const std::vector<unsigned char> seen = ReadThroughChain(mdl.get());
    ASSERT_EQ(seen.size(), len);
    EXPECT_EQ(std::memcmp(seen.data(), va, len), 0);
}

TEST(MmBuildMdlForNonPagedPool, ExactPageNeedsOnePfn)
{
    PageBuffer buf = AllocPages(2);
    ASSERT_NE(buf, nullptr);
    struct {
        MDL mdl;
        PFN_NUMBER pfn[2];
    } s;
    s.pfn[0] = 0;
    s.pfn[1] = 0x5A5A;
    MmInitializeMdl(&s.mdl, buf.get(), kPage);
    MmBuildMdlForNonPagedPool(&s.mdl);
    EXPECT_EQ(s.pfn[0], Addr(buf.get()) >> PAGE_SHIFT);
    EXPECT_EQ(s.pfn[1], 0x5A5Au); // beyond the span: untouched
}

TEST(MmInitializeMdl, CallerProvidedStorage)
{
    PageBuffer buf = AllocPages(3);
    ASSERT_NE(buf, nullptr);
    unsigned char *va = buf.get() + 0x234;
    const SIZE_T len = kPage + 0x100; // pages 0 and 1

    struct {
        MDL mdl;
        PFN_NUMBER pfn[4];
    } s;
    std::memset(&s, 0xCD, sizeof s); // every field must be written
    ASSERT_EQ(MmGetMdlPfnArray(&s.mdl), s.pfn);

    MmInitializeMdl(&s.mdl, va, len);
    EXPECT_EQ(s.mdl.Next, nullptr);
    EXPECT_EQ(s.mdl.Size, static_cast<CSHORT>(sizeof(MDL) + 2 * sizeof(PFN_NUMBER)));
    EXPECT_EQ(static_cast<SIZE_T>(s.mdl.Size), MmSizeOfMdl(va, len));
    EXPECT_EQ(s.mdl.MdlFlags, 0);
    EXPECT_EQ(s.mdl.StartVa, buf.get());
    EXPECT_EQ(s.mdl.ByteOffset, 0x234u);
    EXPECT_EQ(s.mdl.ByteCount, len);
    EXPECT_EQ(MmGetMdlVirtualAddress(&s.mdl), va);

    // Before a mapping exists the system address is the virtual address itself.
    EXPECT_EQ(MmGetSystemAddressForMdlSafe(&s.mdl, NormalPagePriority), va);

    MmBuildMdlForNonPagedPool(&s.mdl);
    EXPECT_EQ(s.mdl.MdlFlags, MDL_SOURCE_IS_NONPAGED_POOL);
    EXPECT_EQ(s.mdl.Process, nullptr);
    EXPECT_EQ(s.pfn[0], Addr(buf.get()) >> PAGE_SHIFT);
    EXPECT_EQ(s.pfn[1], (Addr(buf.get()) >> PAGE_SHIFT) + 1);
}

TEST(Mdl, ChainDescribesConcatenation)
{
    std::string a = "first buffer, long enough to be a real string: ";
    a.append(5000, 'x');
    std::string b = "second, after the chain link";
    b.append(3000, 'y');

    MdlPtr m1(IoAllocateMdl(a.data(), static_cast<ULONG>(a.size()), FALSE, FALSE, nullptr));
    MdlPtr m2(IoAllocateMdl(b.data(), static_cast<ULONG>(b.size()), FALSE, FALSE, nullptr));
    ASSERT_NE(m1, nullptr);
    ASSERT_NE(m2, nullptr);
    MmBuildMdlForNonPagedPool(m1.get());
    MmBuildMdlForNonPagedPool(m2.get());
    m1->Next = m2.get();

    std::size_t total = 0;
    for (PMDL m = m1.get(); m != nullptr; m = m->Next) {
        total += MmGetMdlByteCount(m);
    }
    EXPECT_EQ(total, a.size() + b.size());

    const std::vector<unsigned char> seen = ReadThroughChain(m1.get());
    EXPECT_EQ(std::string(seen.begin(), seen.end()), a + b);
    m1->Next = nullptr; // each MDL is freed on its own
}

TEST(MmGetSystemAddressForMdlSafe, ReturnsTheBuffer)
{
    unsigned char buf[300] = {};
    MdlPtr mdl(IoAllocateMdl(buf + 5, 200, FALSE, FALSE, nullptr));
    ASSERT_NE(mdl, nullptr);
    EXPECT_EQ(MmGetSystemAddressForMdlSafe(mdl.get(), NormalPagePriority), buf + 5);

    MmBuildMdlForNonPagedPool(mdl.get());
    EXPECT_EQ(MmGetSystemAddressForMdlSafe(mdl.get(), HighPagePriority | MdlMappingNoExecute), buf + 5);

    // The flags decide: a recorded mapping wins over the virtual address...
    unsigned char other[8];
    mdl->MappedSystemVa = other;
    EXPECT_EQ(MmGetSystemAddressForMdlSafe(mdl.get(), LowPagePriority), other);
    mdl->MdlFlags = MDL_ALLOCATED_FIXED_SIZE | MDL_MAPPED_TO_SYSTEM_VA;
    EXPECT_EQ(MmGetSystemAddressForMdlSafe(mdl.get(), LowPagePriority), other);
    // ...and without either flag MappedSystemVa is ignored.
    mdl->MdlFlags = MDL_ALLOCATED_FIXED_SIZE;
    EXPECT_EQ(MmGetSystemAddressForMdlSafe(mdl.get(), LowPagePriority), buf + 5);
}

TEST(IoFreeMdl, NullIsANoOp)
{
    IoFreeMdl(nullptr);
    SUCCEED();
}

TEST(IoFreeMdlDeathTest, RejectsCallerStorage)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    unsigned char buf[16] = {};
    struct {
        MDL mdl;
        PFN_NUMBER pfn[1];
    } s;
    MmInitializeMdl(&s.mdl, buf, sizeof buf);
    EXPECT_DEATH(IoFreeMdl(&s.mdl), "not allocated by IoAllocateMdl");
}

} // namespace
