/*
 * header_usage.cpp -- ndkpi.h as a C++20 consumer sees it.
 *
 * The same expectations as header_usage.c (expected_layout.inc, generated from the
 * specification), checked the C++ way and more strictly where C cannot tell types apart:
 * member types, enumerator types and function-pointer typedefs must be exactly the
 * specification's (std::is_same_v), not merely compatible.
 *
 * softndk_header_usage_cpp() repeats the run-time use of every name (a variable of every
 * type, a store into every member, every dispatch table filled with stubs and every
 * entry called) and returns the number of expectation lines exercised, or a negative
 * number when a run-time check failed.
 */
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>

#include "ndk/ndkpi.h"

int softndk_header_usage_cpp();

namespace {

// ========================================================== compile-time checks ==

#define EXPECT_STRUCT_SIZE(T, N) \
    static_assert(sizeof(T) == (N), "sizeof(" #T ") != " #N); \
    static_assert(std::is_standard_layout_v<T> && std::is_trivially_copyable_v<T>, #T " is not a C struct");
#define EXPECT_STRUCT_ALIGN(T, N) static_assert(alignof(T) == (N), "alignof(" #T ") != " #N);
#define EXPECT_TYPE_SIZE(T, N) static_assert(sizeof(T) == (N), "sizeof(" #T ") != " #N);
#define EXPECT_MEMBER(T, M, OFF, TYPE)                                                       \
    static_assert(offsetof(T, M) == (OFF), "offsetof(" #T ", " #M ") != " #OFF);          \
    static_assert(std::is_same_v<decltype(T::M), TYPE>, #T "::" #M " is not " #TYPE);
#define EXPECT_ARRAY_MEMBER(T, M, OFF, ELEM, N)                                              \
    static_assert(offsetof(T, M) == (OFF), "offsetof(" #T ", " #M ") != " #OFF);          \
    static_assert(std::is_same_v<decltype(T::M), ELEM[N]>, #T "::" #M " is not " #ELEM "[" #N "]");
#define EXPECT_FN_MEMBER(T, M, OFF, FN)                                                      \
    static_assert(offsetof(T, M) == (OFF), "offsetof(" #T ", " #M ") != " #OFF);          \
    static_assert(std::is_same_v<decltype(T::M), FN>, #T "::" #M " is not " #FN);
#define EXPECT_TYPEDEF(T, SAME) static_assert(std::is_same_v<T, SAME>, #T " is not " #SAME);
#define EXPECT_ENUM(E, NAME, V)                                                              \
    static_assert(std::is_enum_v<E>, #E " is not an enumeration");                         \
    static_assert(std::is_same_v<decltype(NAME), E>, #NAME " is not an enumerator of " #E); \
    static_assert(static_cast<long long>(NAME) == (V), #NAME " != " #V);
#define EXPECT_STATUS(NAME, V)                                                               \
    static_assert(std::is_same_v<std::remove_cv_t<decltype(NAME)>, NTSTATUS>, #NAME " is not an NTSTATUS"); \
    static_assert((NAME) == static_cast<NTSTATUS>(V##U), #NAME " != " #V);
#define EXPECT_NDIS_STATUS(NAME, V)                                                          \
    static_assert(std::is_same_v<std::remove_cv_t<decltype(NAME)>, NDIS_STATUS>,            \
                  #NAME " is not an NDIS_STATUS");                                          \
    static_assert((NAME) == static_cast<NDIS_STATUS>(V##U), #NAME " != " #V);
#define EXPECT_VALUE(NAME, V) \
    static_assert(static_cast<unsigned long long>(NAME) == (V##ULL), #NAME " != " #V);
#define EXPECT_SIZE_MACRO(MACRO, T, LAST)                                                    \
    static_assert(static_cast<size_t>(MACRO) == offsetof(T, LAST) + sizeof(T::LAST),       \
                  #MACRO " does not cover " #T " through " #LAST);
#define EXPECT_SIZE_MACRO_N(MACRO, T, ARR)                                                   \
    static_assert(static_cast<size_t>(MACRO(1)) == offsetof(T, ARR) + sizeof(T::ARR[0]), #MACRO "(1)"); \
    static_assert(static_cast<size_t>(MACRO(5)) == offsetof(T, ARR) + 5 * sizeof(T::ARR[0]), #MACRO "(5)");
#define EXPECT_DEFINED(NAME)                                                                  \
    static_assert(std::is_integral_v<decltype(NAME)> || std::is_enum_v<decltype(NAME)>,     \
                  #NAME " is not an integer constant");                                      \
    [[maybe_unused]] constexpr long long sndk_defined_##NAME = static_cast<long long>(NAME);
#define EXPECT_FN(FN, RET, TYPES, DECLS) \
    static_assert(std::is_same_v<FN, RET(*) TYPES>, #FN " is not " #RET " (*)" #TYPES);
#include "expected_layout.inc"
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

// ============================================== stubs and one object of each type ==

int g_stub_calls;

// Parameters are unnamed (C++ allows it), so the stubs take exactly the specification's
// parameter types; "return static_cast<void>(0)" is valid in a void function.
#define EXPECT_FN(FN, RET, TYPES, DECLS)            \
    RET stub_##FN TYPES                             \
    {                                               \
        ++g_stub_calls;                             \
        return static_cast<RET>(0);                 \
    }
#include "expected_layout.inc"
#undef EXPECT_FN

#define EXPECT_STRUCT_SIZE(T, N) T g_##T;
#include "expected_layout.inc"
#undef EXPECT_STRUCT_SIZE

#include "header_usage_calls.inc"

// ============================================================= run-time checks ==

int g_lines;
int g_failures;

void sndk_check(bool ok, const char *what, int line)
{
    ++g_lines;
    if (!ok) {
        ++g_failures;
        std::fprintf(stderr, "header_usage.cpp: run-time check failed: %s (line %d)\n", what, line);
    }
}

#define SNDK_CHECK(ok, what) sndk_check((ok), (what), __LINE__)

unsigned char *bytes_of(void *p)
{
    return static_cast<unsigned char *>(p);
}

// A recognisable value of type T. An enumeration gets a value inside its range (C++ gives
// out-of-range enumeration values no meaning); anything else a byte pattern.
template <typename T>
T sample_value()
{
    T v;
    if constexpr (std::is_enum_v<T>) {
        v = static_cast<T>(1);
    } else {
        std::memset(&v, 0x5A, sizeof v);
    }
    return v;
}

} // namespace

int softndk_header_usage_cpp()
{
    g_lines = 0;
    g_failures = 0;

#define EXPECT_STRUCT_SIZE(T, N)                                                       \
    {                                                                                  \
        std::memset(&g_##T, 0xA5, sizeof g_##T);                                       \
        SNDK_CHECK(sizeof g_##T == (N) && bytes_of(&g_##T)[(N) - 1] == 0xA5, "sizeof " #T); \
        std::memset(&g_##T, 0, sizeof g_##T);                                          \
    }
#define EXPECT_STRUCT_ALIGN(T, N) \
    SNDK_CHECK(alignof(T) == (N) && reinterpret_cast<std::uintptr_t>(&g_##T) % (N) == 0, "alignof " #T);
#define EXPECT_TYPE_SIZE(T, N)                                                   \
    {                                                                            \
        T v_;                                                                    \
        std::memset(&v_, 0x3C, sizeof v_);                                       \
        SNDK_CHECK(sizeof v_ == (N) && bytes_of(&v_)[(N) - 1] == 0x3C, "sizeof " #T); \
    }
#define EXPECT_MEMBER(T, M, OFF, TYPE)                                                  \
    {                                                                                   \
        TYPE const val_ = sample_value<TYPE>();                                         \
        std::memset(&g_##T, 0, sizeof g_##T);                                           \
        g_##T.M = val_;                                                                 \
        SNDK_CHECK(std::memcmp(bytes_of(&g_##T) + (OFF), &val_, sizeof val_) == 0, #T "::" #M); \
    }
#define EXPECT_ARRAY_MEMBER(T, M, OFF, ELEM, N)                                         \
    {                                                                                   \
        ELEM const val_ = sample_value<ELEM>();                                         \
        std::memset(&g_##T, 0, sizeof g_##T);                                           \
        g_##T.M[(N) - 1] = val_;                                                        \
        SNDK_CHECK(sizeof g_##T.M == (N) * sizeof(ELEM) &&                              \
                       std::memcmp(bytes_of(&g_##T) + (OFF) + ((N) - 1) * sizeof(ELEM), &val_, \
                                   sizeof val_) == 0,                                   \
                   #T "::" #M "[]");                                                    \
    }
#define EXPECT_FN_MEMBER(T, M, OFF, FN)                                                 \
    {                                                                                   \
        FN back_;                                                                       \
        g_##T.M = stub_##FN;                                                            \
        std::memcpy(&back_, bytes_of(&g_##T) + (OFF), sizeof back_);                    \
        SNDK_CHECK(back_ == stub_##FN && g_##T.M == stub_##FN, #T "::" #M);             \
    }
#define EXPECT_TYPEDEF(T, SAME)                                       \
    {                                                                 \
        T a_;                                                         \
        SAME *p_ = &a_;                                               \
        std::memset(p_, 0, sizeof *p_);                               \
        SNDK_CHECK(static_cast<void *>(p_) == static_cast<void *>(&a_), #T " is " #SAME); \
    }
#define EXPECT_ENUM(E, NAME, V)                                                  \
    {                                                                            \
        volatile E e_ = NAME;                                                    \
        SNDK_CHECK(static_cast<long long>(e_) == (V) && sizeof e_ == 4, #E "::" #NAME); \
    }
#define EXPECT_STATUS(NAME, V)                                                          \
    {                                                                                   \
        volatile NTSTATUS s_ = NAME;                                                    \
        SNDK_CHECK(static_cast<UINT32>(s_) == (V##U) &&                                 \
                       NT_SUCCESS(s_) == (((V##U) & 0x80000000U) == 0),                 \
                   #NAME);                                                              \
    }
#define EXPECT_NDIS_STATUS(NAME, V)                                                     \
    {                                                                                   \
        volatile NDIS_STATUS s_ = NAME;                                                 \
        SNDK_CHECK(static_cast<UINT32>(s_) == (V##U) &&                                 \
                       NT_SUCCESS(s_) == (((V##U) & 0x80000000U) == 0),                 \
                   #NAME);                                                              \
    }
#define EXPECT_VALUE(NAME, V)                                                      \
    {                                                                              \
        volatile unsigned long long v_ = static_cast<unsigned long long>(NAME);    \
        SNDK_CHECK(v_ == (V##ULL), #NAME);                                         \
    }
#define EXPECT_SIZE_MACRO(MACRO, T, LAST) \
    SNDK_CHECK(static_cast<size_t>(MACRO) == offsetof(T, LAST) + sizeof g_##T.LAST, #MACRO);
#define EXPECT_SIZE_MACRO_N(MACRO, T, ARR)                                              \
    {                                                                                   \
        volatile size_t n_ = 3;                                                         \
        SNDK_CHECK(static_cast<size_t>(MACRO(n_)) == offsetof(T, ARR) + n_ * sizeof g_##T.ARR[0], \
                   #MACRO "(n)");                                                       \
    }
#define EXPECT_DEFINED(NAME)                                              \
    {                                                                     \
        volatile long long d_ = static_cast<long long>(NAME);             \
        SNDK_CHECK(d_ == static_cast<long long>(NAME), #NAME);            \
    }
#define EXPECT_FN(FN, RET, TYPES, DECLS)                                 \
    {                                                                    \
        RET(*spec_) TYPES = stub_##FN;                                   \
        FN hdr_ = spec_;                                                 \
        SNDK_CHECK(hdr_ == stub_##FN && hdr_ != nullptr, #FN);           \
    }
#include "expected_layout.inc"

    const int calls = sndk_call_every_entry();
    if (calls != SNDK_CALLS_EXPECTED) {
        ++g_failures;
        std::fprintf(stderr, "header_usage.cpp: %d calls reached a stub, expected %d\n", calls,
                     SNDK_CALLS_EXPECTED);
    }
    return g_failures ? -g_failures : g_lines;
}
