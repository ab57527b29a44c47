/* A C11 consumer built against an installed SoftNDK: it opens the in-process loopback
 * adapter, creates a PD and closes both, the way a kernel NDK consumer would. */
#include <ndk/softndk.h>
#include <stdio.h>

static void on_create(PVOID context, NTSTATUS status, NDK_OBJECT_HEADER *object) {
    (void)context; (void)status; (void)object;
}

int main(void) {
    SOFTNDK_OPEN_OPTIONS options = {sizeof(options), SOFTNDK_FABRIC_INPROC, SOFTNDK_COMPLETION_INLINE, 0};
    NDK_VERSION version = {1, 1};
    NDK_ADAPTER *adapter = NULL;
    NDK_PD *pd = NULL;
    if (SoftNdkOpenAdapter(1, version, &options, &adapter) != STATUS_SUCCESS) return 1;
    if (adapter->Dispatch->NdkCreatePd(adapter, on_create, NULL, &pd) != STATUS_SUCCESS) return 2;
    if (pd->Header.Version.Major != 1 || pd->Header.Version.Minor != 2) return 3;
    if (pd->Dispatch->NdkClosePd(&pd->Header, NULL, NULL) != STATUS_SUCCESS) return 4;
    SoftNdkCloseAdapter(adapter);
    puts("consumer: ok");
    return 0;
}
