// The ten NDK dispatch tables, defined once (dispatch.cpp). Each entry validates its
// arguments, converts the NDK structures back to SoftNDK objects and calls the object.
#pragma once

#include "ndk/ndkpi.h"

namespace softndk::dispatch {

extern const NDK_ADAPTER_DISPATCH kAdapter;
extern const NDK_CQ_DISPATCH kCq;
extern const NDK_PD_DISPATCH kPd;
extern const NDK_MR_DISPATCH kMr;
extern const NDK_MW_DISPATCH kMw;
extern const NDK_SRQ_DISPATCH kSrq;
extern const NDK_QP_DISPATCH kQp;
extern const NDK_CONNECTOR_DISPATCH kConnector;
extern const NDK_LISTENER_DISPATCH kListener;
extern const NDK_SHARED_ENDPOINT_DISPATCH kSharedEndpoint;

}  // namespace softndk::dispatch
