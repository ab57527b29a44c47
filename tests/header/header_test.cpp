// header_test.cpp -- runs the C11 and C++20 header-usage translation units and a few
// run-time checks of ndkpi.h semantics.
//
// The expectations live in expected_layout.inc, generated from the specification by
// derive_expectations.py; the compile-time checks already passed if this file links. The
// tests below make sure both translation units really ran every expectation line.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ndk/ndkpi.h"

extern "C" int softndk_header_usage_c(void);
int softndk_header_usage_cpp();
#if defined(SOFTNDK_HAVE_MDL_C11)
extern "C" int softndk_mdl_c11_check(void);  // mdl_c11.c: ndk/mdl.h used from C11
#endif

namespace {

// The number of EXPECT_* lines in expected_layout.inc, counted by the preprocessor.
#define SNDK_ONE(...) +1
#define EXPECT_STRUCT_SIZE SNDK_ONE
#define EXPECT_STRUCT_ALIGN SNDK_ONE
#define EXPECT_TYPE_SIZE SNDK_ONE
#define EXPECT_MEMBER SNDK_ONE
#define EXPECT_ARRAY_MEMBER SNDK_ONE
#define EXPECT_FN_MEMBER SNDK_ONE
#define EXPECT_TYPEDEF SNDK_ONE
#define EXPECT_ENUM SNDK_ONE
#define EXPECT_STATUS SNDK_ONE
#define EXPECT_NDIS_STATUS SNDK_ONE
#define EXPECT_VALUE SNDK_ONE
#define EXPECT_SIZE_MACRO SNDK_ONE
#define EXPECT_SIZE_MACRO_N SNDK_ONE
#define EXPECT_DEFINED SNDK_ONE
#define EXPECT_FN SNDK_ONE
constexpr int kExpectLines = 0
#include "expected_layout.inc"
    ;
#undef EXPECT_STRUCT_SIZE
#undef EXPECT_STRUCT_ALIGN
#undef EXPECT_TYPE_SIZE
#undef EXPECT_MEMBER
#undef EXPECT_ARRAY_MEMBER
#undef EXPECT_FN_MEMBER
#undef EXPECT_TYPEDEF
#undef EXPECT_ENUM
#undef EXPECT_STATUS
#undef EXPECT_NDIS_STATUS
#undef EXPECT_VALUE
#undef EXPECT_SIZE_MACRO
#undef EXPECT_SIZE_MACRO_N
#undef EXPECT_DEFINED
#undef EXPECT_FN

// Per-kind counts that the specification fixes (INVENTORY §1.12, §2, §8).
#define EXPECT_FN SNDK_ONE
constexpr int kFunctionTypes = 0
#include "expected_layout.inc"
    ;
#undef EXPECT_FN
#define EXPECT_FN_MEMBER SNDK_ONE
constexpr int kFunctionMembers = 0
#include "expected_layout.inc"
    ;
#undef EXPECT_FN_MEMBER
#undef SNDK_ONE

static_assert(kFunctionTypes == 63, "INVENTORY §2 lists 63 function types");
// 70 dispatch entries + the two handlers of NDIS_NDK_PROVIDER_CHARACTERISTICS.
static_assert(kFunctionMembers == 72, "INVENTORY §1.12: 70 dispatch entries (+2 NDIS handlers)");
static_assert(kExpectLines > 400, "expected_layout.inc looks truncated");

TEST(HeaderLayout, CTranslationUnitRanEveryExpectation)
{
    EXPECT_EQ(softndk_header_usage_c(), kExpectLines);
}

TEST(HeaderLayout, CppTranslationUnitRanEveryExpectation)
{
    EXPECT_EQ(softndk_header_usage_cpp(), kExpectLines);
}

#if defined(SOFTNDK_HAVE_MDL_C11)
TEST(HeaderLayout, MdlHeaderWorksFromC11)
{
    EXPECT_EQ(softndk_mdl_c11_check(), 0);
}
#endif

TEST(HeaderSemantics, NtSuccessIsSignBased)
{
    // NOTES.md: NT_SUCCESS(s) is ((NTSTATUS)(s) >= 0).
    EXPECT_TRUE(NT_SUCCESS(STATUS_SUCCESS));
    EXPECT_TRUE(NT_SUCCESS(STATUS_PENDING));  // informational, still a success
    EXPECT_FALSE(NT_SUCCESS(STATUS_BUFFER_OVERFLOW));  // warning severity: not a success
    EXPECT_FALSE(NT_SUCCESS(STATUS_INSUFFICIENT_RESOURCES));
    EXPECT_FALSE(NT_SUCCESS(STATUS_CANCELLED));
    EXPECT_FALSE(NT_SUCCESS(NDIS_STATUS_BAD_VERSION));
    EXPECT_TRUE(NT_SUCCESS(NDIS_STATUS_SUCCESS));
    EXPECT_LT(STATUS_INVALID_PARAMETER, 0);
    EXPECT_GT(STATUS_PENDING, 0);
    // Works on a value of any integer type holding the 32-bit pattern.
    const std::uint32_t raw = 0xC000009Au;
    EXPECT_FALSE(NT_SUCCESS(raw));
    EXPECT_EQ(static_cast<NTSTATUS>(raw), STATUS_INSUFFICIENT_RESOURCES);
    EXPECT_EQ(NDIS_STATUS_RESOURCES, STATUS_INSUFFICIENT_RESOURCES);
    EXPECT_EQ(NDIS_STATUS_PENDING, STATUS_PENDING);
}

TEST(HeaderSemantics, SgeAddressesShareStorage)
{
    NDK_SGE sge;
    std::memset(&sge, 0, sizeof sge);
    int target = 0;
    sge.VirtualAddress = &target;
    EXPECT_EQ(static_cast<std::uintptr_t>(sge.LogicalAddress.QuadPart),
              reinterpret_cast<std::uintptr_t>(&target));
    sge.LogicalAddress.QuadPart = 0x123456789000LL;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(sge.VirtualAddress), std::uintptr_t{0x123456789000});
    EXPECT_EQ(static_cast<const void *>(&sge.VirtualAddress),
              static_cast<const void *>(&sge.LogicalAddress));
    sge.Length = 4096;
    sge.MemoryRegionToken = 0xDEADBEEFu;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(sge.VirtualAddress), std::uintptr_t{0x123456789000});
}

TEST(HeaderSemantics, LogicalAddressMappingIsVariableSize)
{
    // INVENTORY S07: size = offsetof(AdapterPageArray) + AdapterPageCount * sizeof(entry).
    constexpr ULONG kPages = 5;
    const std::size_t bytes =
        FIELD_OFFSET(NDK_LOGICAL_ADDRESS_MAPPING, AdapterPageArray) + kPages * sizeof(NDK_LOGICAL_ADDRESS);
    EXPECT_EQ(bytes, 16u + kPages * 8u);
    EXPECT_GE(sizeof(NDK_LOGICAL_ADDRESS_MAPPING),
              FIELD_OFFSET(NDK_LOGICAL_ADDRESS_MAPPING, AdapterPageArray) + sizeof(NDK_LOGICAL_ADDRESS));

    std::vector<std::uint64_t> storage((bytes + 7) / 8);  // 8-byte aligned
    auto *lam = reinterpret_cast<NDK_LOGICAL_ADDRESS_MAPPING *>(storage.data());
    lam->AdapterContext = nullptr;
    lam->AdapterPageCount = kPages;
    NDK_LOGICAL_ADDRESS *pages = lam->AdapterPageArray;  // index past [1] through the decayed pointer
    for (ULONG i = 0; i < kPages; ++i) {
        pages[i].QuadPart = static_cast<LONGLONG>((i + 1) * PAGE_SIZE);
    }
    const auto *raw = reinterpret_cast<const unsigned char *>(storage.data());
    for (ULONG i = 0; i < kPages; ++i) {
        LONGLONG got;
        std::memcpy(&got, raw + FIELD_OFFSET(NDK_LOGICAL_ADDRESS_MAPPING, AdapterPageArray) + i * 8, sizeof got);
        EXPECT_EQ(got, static_cast<LONGLONG>((i + 1) * PAGE_SIZE)) << "page " << i;
    }
    // The last entry ends exactly at the computed size.
    EXPECT_EQ(reinterpret_cast<const unsigned char *>(&pages[kPages - 1] + 1), raw + bytes);
}

TEST(HeaderSemantics, NdisVariableSizeMacrosScaleWithEntries)
{
    // Header.Size = (USHORT)min(MAXUSHORT, NDIS_SIZEOF_NDK_CONNECTIONS_REVISION_1(n)).
    const std::size_t one = NDIS_SIZEOF_NDK_CONNECTIONS_REVISION_1(1);
    const std::size_t three = NDIS_SIZEOF_NDK_CONNECTIONS_REVISION_1(3);
    EXPECT_EQ(three - one, 2 * sizeof(NDIS_NDK_CONNECTION_ENTRY));
    EXPECT_EQ(one, sizeof(NDIS_NDK_CONNECTIONS));
    const std::size_t e1 = NDIS_SIZEOF_NDK_ENDPOINTS_REVISION_1(1);
    const std::size_t e4 = NDIS_SIZEOF_NDK_ENDPOINTS_REVISION_1(4);
    EXPECT_EQ(e4 - e1, 3 * sizeof(NDIS_NDK_LOCAL_ENDPOINT_ENTRY));
    EXPECT_EQ(e1, sizeof(NDIS_NDK_LOCAL_ENDPOINTS));
}

TEST(HeaderSemantics, FlagsThatContainOtherFlags)
{
    // INVENTORY E3/E4: the remote-write rights include the local-write bit.
    EXPECT_EQ(NDK_OP_FLAG_ALLOW_REMOTE_WRITE & NDK_OP_FLAG_ALLOW_LOCAL_WRITE, NDK_OP_FLAG_ALLOW_LOCAL_WRITE);
    EXPECT_EQ(NDK_MR_FLAG_ALLOW_REMOTE_WRITE & NDK_MR_FLAG_ALLOW_LOCAL_WRITE, NDK_MR_FLAG_ALLOW_LOCAL_WRITE);
    // §7 item 1: RDMA_READ_LOCAL_INVALIDATE and DEFER are distinct bits.
    EXPECT_EQ(NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE & NDK_OP_FLAG_DEFER, 0);
}

}  // namespace
