/*
 * header_usage.c -- ndkpi.h as a C11 consumer sees it.
 *
 * Compiled with -std=c11 -Wall -Wextra -Wpedantic -Werror. Everything it expects comes
 * from expected_layout.inc, which derive_expectations.py generated from the
 * specification (never from the header), so the header cannot agree with itself by
 * accident:
 *   - at compile time, every size, alignment, member offset, member type, constant value
 *     and function-pointer type is a _Static_assert;
 *   - at run time, softndk_header_usage_c() uses every name: it declares a variable of
 *     every type, stores into every member and reads the bytes back at the expected
 *     offset, fills every dispatch table with stub functions whose parameter lists come
 *     from the specification, and then calls all 70 dispatch entries, both NDIS handlers
 *     and all 8 consumer callbacks through those tables (header_usage_calls.inc).
 *
 * It returns the number of expectation lines it exercised (one per EXPECT_* line of
 * the .inc), or a negative number when a run-time check failed.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "ndk/ndkpi.h"

#if !defined(__STDC_VERSION__) || __STDC_VERSION__ < 201112L
#error "header_usage.c must be compiled as C11"
#endif

int softndk_header_usage_c(void);

/* ======================================================== compile-time checks == */

#define SNDK_IS_TYPE(expr, T) _Generic((expr), T: 1, default: 0)

#define EXPECT_STRUCT_SIZE(T, N) \
    _Static_assert(sizeof(T) == (N), "sizeof(" #T ") != " #N);
#define EXPECT_STRUCT_ALIGN(T, N) \
    _Static_assert(_Alignof(T) == (N), "_Alignof(" #T ") != " #N);
#define EXPECT_TYPE_SIZE(T, N) \
    _Static_assert(sizeof(T) == (N), "sizeof(" #T ") != " #N);
#define EXPECT_MEMBER(T, M, OFF, TYPE)                                                   \
    _Static_assert(offsetof(T, M) == (OFF), "offsetof(" #T ", " #M ") != " #OFF);      \
    _Static_assert(SNDK_IS_TYPE(&((T *)0)->M, TYPE *), #T "." #M " is not " #TYPE);   \
    _Static_assert(sizeof(((T *)0)->M) == sizeof(TYPE), "sizeof " #T "." #M);
#define EXPECT_ARRAY_MEMBER(T, M, OFF, ELEM, N)                                          \
    _Static_assert(offsetof(T, M) == (OFF), "offsetof(" #T ", " #M ") != " #OFF);      \
    _Static_assert(SNDK_IS_TYPE(&((T *)0)->M, ELEM(*)[N]), #T "." #M " is not " #ELEM "[" #N "]");
#define EXPECT_FN_MEMBER(T, M, OFF, FN)                                                  \
    _Static_assert(offsetof(T, M) == (OFF), "offsetof(" #T ", " #M ") != " #OFF);      \
    _Static_assert(SNDK_IS_TYPE(&((T *)0)->M, FN *), #T "." #M " is not " #FN);
#define EXPECT_TYPEDEF(T, SAME) \
    _Static_assert(SNDK_IS_TYPE((T *)0, SAME *), #T " is not " #SAME);
/* Enumeration constants have type int in C; C++ (header_usage.cpp) checks the enum type. */
#define EXPECT_ENUM(E, NAME, V) \
    _Static_assert((long long)(NAME) == (V), #NAME " != " #V);
#define EXPECT_STATUS(NAME, V)                                                           \
    _Static_assert(SNDK_IS_TYPE((NAME), NTSTATUS), #NAME " is not an NTSTATUS");        \
    _Static_assert((NAME) == (NTSTATUS)(UINT32)(V##U), #NAME " != " #V);
#define EXPECT_NDIS_STATUS(NAME, V)                                                      \
    _Static_assert(SNDK_IS_TYPE((NAME), NDIS_STATUS), #NAME " is not an NDIS_STATUS");  \
    _Static_assert((NAME) == (NDIS_STATUS)(UINT32)(V##U), #NAME " != " #V);
#define EXPECT_VALUE(NAME, V) \
    _Static_assert((unsigned long long)(NAME) == (V##ULL), #NAME " != " #V);
#define EXPECT_SIZE_MACRO(MACRO, T, LAST)                                                \
    _Static_assert((size_t)(MACRO) == offsetof(T, LAST) + sizeof(((T *)0)->LAST),      \
                   #MACRO " does not cover " #T " through " #LAST);
#define EXPECT_SIZE_MACRO_N(MACRO, T, ARR)                                               \
    _Static_assert((size_t)MACRO(1) == offsetof(T, ARR) + sizeof(((T *)0)->ARR[0]),    \
                   #MACRO "(1)");                                                        \
    _Static_assert((size_t)MACRO(5) == offsetof(T, ARR) + 5 * sizeof(((T *)0)->ARR[0]), \
                   #MACRO "(5)");
/* An integer constant expression: a file-scope array bound must be one. */
#define EXPECT_DEFINED(NAME) typedef char sndk_defined_##NAME[1 + 0 * (NAME)];
/* The type the specification gives must be compatible with the header's typedef. */
#define EXPECT_FN(FN, RET, TYPES, DECLS) \
    _Static_assert(SNDK_IS_TYPE((FN)0, RET(*) TYPES), #FN " is not " #RET " (*)" #TYPES);
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

/* =============================================== stubs and one object of each type == */

static int g_stub_calls;

#define STUB_BODY_VOID        ++g_stub_calls;
#define STUB_BODY_NTSTATUS    ++g_stub_calls; return STATUS_SUCCESS;
#define STUB_BODY_NDIS_STATUS ++g_stub_calls; return NDIS_STATUS_SUCCESS;
#define STUB_BODY_ULONG       ++g_stub_calls; return 0;
#define STUB_BODY_UINT32      ++g_stub_calls; return 0;

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif
/* One stub per function type, defined with the specification's parameter list. */
#define EXPECT_FN(FN, RET, TYPES, DECLS) \
    static RET stub_##FN DECLS { STUB_BODY_##RET }
#include "expected_layout.inc"
#undef EXPECT_FN
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/* One variable of every structure type. */
#define EXPECT_STRUCT_SIZE(T, N) static T g_##T;
#include "expected_layout.inc"
#undef EXPECT_STRUCT_SIZE

#include "header_usage_calls.inc"

/* ============================================================= run-time checks == */

static int g_lines;    /* EXPECT_* lines exercised */
static int g_failures; /* run-time checks that failed */

static void sndk_check(int ok, const char *what, int line)
{
    ++g_lines;
    if (!ok) {
        ++g_failures;
        fprintf(stderr, "header_usage.c: run-time check failed: %s (expected_layout.inc:%d)\n",
                what, line);
    }
}

#define SNDK_CHECK(ok, what) sndk_check((ok), (what), __LINE__)

int softndk_header_usage_c(void)
{
    g_lines = 0;
    g_failures = 0;

#define EXPECT_STRUCT_SIZE(T, N)                                                        \
    {                                                                                   \
        memset(&g_##T, 0xA5, sizeof g_##T);                                             \
        SNDK_CHECK(sizeof g_##T == (N) && ((unsigned char *)&g_##T)[(N) - 1] == 0xA5,   \
                   "sizeof " #T);                                                       \
        memset(&g_##T, 0, sizeof g_##T);                                                \
    }
#define EXPECT_STRUCT_ALIGN(T, N) \
    SNDK_CHECK(_Alignof(T) == (N) && ((size_t)(void *)&g_##T % (N)) == 0, "_Alignof " #T);
#define EXPECT_TYPE_SIZE(T, N)                             \
    {                                                      \
        T v_;                                              \
        memset(&v_, 0x3C, sizeof v_);                      \
        SNDK_CHECK(sizeof v_ == (N) && ((unsigned char *)&v_)[(N) - 1] == 0x3C, "sizeof " #T); \
    }
    /* Store a recognisable value into the member, read it back at the expected offset. */
#define EXPECT_MEMBER(T, M, OFF, TYPE)                                                  \
    {                                                                                   \
        TYPE val_;                                                                      \
        memset(&g_##T, 0, sizeof g_##T);                                                \
        memset(&val_, 0x5A, sizeof val_);                                               \
        g_##T.M = val_;                                                                 \
        SNDK_CHECK(memcmp((unsigned char *)&g_##T + (OFF), &val_, sizeof val_) == 0,    \
                   #T "." #M);                                                          \
    }
#define EXPECT_ARRAY_MEMBER(T, M, OFF, ELEM, N)                                         \
    {                                                                                   \
        ELEM val_;                                                                      \
        memset(&g_##T, 0, sizeof g_##T);                                                \
        memset(&val_, 0x5A, sizeof val_);                                               \
        g_##T.M[(N) - 1] = val_;                                                        \
        SNDK_CHECK(sizeof g_##T.M == (N) * sizeof(ELEM) &&                              \
                       memcmp((unsigned char *)&g_##T + (OFF) + ((N) - 1) * sizeof(ELEM), \
                              &val_, sizeof val_) == 0,                                 \
                   #T "." #M "[]");                                                     \
    }
    /* Fill the table entry with the stub and read the pointer back through the offset. */
#define EXPECT_FN_MEMBER(T, M, OFF, FN)                                                 \
    {                                                                                   \
        FN back_;                                                                       \
        g_##T.M = stub_##FN;                                                            \
        memcpy(&back_, (unsigned char *)&g_##T + (OFF), sizeof back_);                  \
        SNDK_CHECK(back_ == stub_##FN && g_##T.M == stub_##FN, #T "." #M);              \
    }
#define EXPECT_TYPEDEF(T, SAME)                            \
    {                                                      \
        T a_;                                              \
        SAME *p_ = &a_;                                    \
        memset(p_, 0, sizeof *p_);                         \
        SNDK_CHECK((void *)p_ == (void *)&a_, #T " is " #SAME); \
    }
#define EXPECT_ENUM(E, NAME, V)                                        \
    {                                                                  \
        volatile E e_ = NAME;                                          \
        SNDK_CHECK((long long)e_ == (V) && sizeof e_ == 4, #E "::" #NAME); \
    }
    /* NT_SUCCESS(s) is s >= 0: success and informational codes have the top bit clear. */
#define EXPECT_STATUS(NAME, V)                                                          \
    {                                                                                   \
        volatile NTSTATUS s_ = NAME;                                                    \
        SNDK_CHECK((UINT32)s_ == (V##U) && NT_SUCCESS(s_) == (((V##U) & 0x80000000U) == 0), \
                   #NAME);                                                              \
    }
#define EXPECT_NDIS_STATUS(NAME, V)                                                     \
    {                                                                                   \
        volatile NDIS_STATUS s_ = NAME;                                                 \
        SNDK_CHECK((UINT32)s_ == (V##U) && NT_SUCCESS(s_) == (((V##U) & 0x80000000U) == 0), \
                   #NAME);                                                              \
    }
#define EXPECT_VALUE(NAME, V)                                              \
    {                                                                      \
        volatile unsigned long long v_ = (unsigned long long)(NAME);       \
        SNDK_CHECK(v_ == (V##ULL), #NAME);                                 \
    }
#define EXPECT_SIZE_MACRO(MACRO, T, LAST) \
    SNDK_CHECK((size_t)(MACRO) == offsetof(T, LAST) + sizeof g_##T.LAST, #MACRO);
#define EXPECT_SIZE_MACRO_N(MACRO, T, ARR)                                              \
    {                                                                                   \
        volatile size_t n_ = 3;                                                         \
        SNDK_CHECK((size_t)MACRO(n_) == offsetof(T, ARR) + n_ * sizeof g_##T.ARR[0], #MACRO "(n)"); \
    }
#define EXPECT_DEFINED(NAME)                                   \
    {                                                          \
        volatile long long d_ = (long long)(NAME);             \
        SNDK_CHECK(d_ == (long long)(NAME), #NAME);            \
    }
    /* The specification's function-pointer type converts to the header's typedef
     * without a cast (an incompatible one would be a -Werror diagnostic). */
#define EXPECT_FN(FN, RET, TYPES, DECLS)                                                \
    {                                                                                   \
        RET(*spec_) TYPES = stub_##FN;                                                  \
        FN hdr_ = spec_;                                                                \
        SNDK_CHECK(hdr_ == stub_##FN && hdr_ != NULL, #FN);                             \
    }
#include "expected_layout.inc"

    {
        int calls = sndk_call_every_entry();
        if (calls != SNDK_CALLS_EXPECTED) {
            ++g_failures;
            fprintf(stderr, "header_usage.c: %d calls reached a stub, expected %d\n", calls,
                    SNDK_CALLS_EXPECTED);
        }
    }
    return g_failures ? -g_failures : g_lines;
}
