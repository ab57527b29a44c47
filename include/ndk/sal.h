/*
 * SoftNDK — the source-annotation (SAL) and IRQL macros that kernel NDK code is written
 * with. GCC and Clang do not check them; they expand to nothing so that a consumer's
 * annotated declarations compile unchanged. A platform header that already defines
 * them wins.
 */
#ifndef SOFTNDK_SAL_H
#define SOFTNDK_SAL_H

#define SOFTNDK_SAL_EMPTY(...)

#ifndef _In_
#define _In_
#endif
#ifndef _In_opt_
#define _In_opt_
#endif
#ifndef _Out_
#define _Out_
#endif
#ifndef _Out_opt_
#define _Out_opt_
#endif
#ifndef _Inout_
#define _Inout_
#endif
#ifndef _Inout_opt_
#define _Inout_opt_
#endif
#ifndef _Outptr_
#define _Outptr_
#endif
#ifndef _Outptr_opt_
#define _Outptr_opt_
#endif
#ifndef _In_reads_
#define _In_reads_(n)
#endif
#ifndef _In_reads_opt_
#define _In_reads_opt_(n)
#endif
#ifndef _In_reads_bytes_
#define _In_reads_bytes_(n)
#endif
#ifndef _In_reads_bytes_opt_
#define _In_reads_bytes_opt_(n)
#endif
#ifndef _Out_writes_
#define _Out_writes_(n)
#endif
#ifndef _Out_writes_opt_
#define _Out_writes_opt_(n)
#endif
#ifndef _Out_writes_to_
#define _Out_writes_to_(n, c)
#endif
#ifndef _Out_writes_bytes_
#define _Out_writes_bytes_(n)
#endif
#ifndef _Out_writes_bytes_to_opt_
#define _Out_writes_bytes_to_opt_(n, c)
#endif
#ifndef _Out_writes_bytes_opt_
#define _Out_writes_bytes_opt_(n)
#endif
#ifndef _Field_size_
#define _Field_size_(n)
#endif
#ifndef _Struct_size_bytes_
#define _Struct_size_bytes_(n)
#endif
#ifndef _Must_inspect_result_
#define _Must_inspect_result_
#endif
#ifndef _Success_
#define _Success_(e)
#endif
#ifndef _When_
#define _When_(e, a)
#endif
#ifndef _IRQL_requires_
#define _IRQL_requires_(l)
#endif
#ifndef _IRQL_requires_max_
#define _IRQL_requires_max_(l)
#endif
#ifndef _IRQL_requires_min_
#define _IRQL_requires_min_(l)
#endif
#ifndef _Function_class_
#define _Function_class_(c)
#endif

#ifndef PASSIVE_LEVEL
#define PASSIVE_LEVEL 0
#endif
#ifndef APC_LEVEL
#define APC_LEVEL 1
#endif
#ifndef DISPATCH_LEVEL
#define DISPATCH_LEVEL 2
#endif

#endif /* SOFTNDK_SAL_H */
