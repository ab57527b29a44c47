// The two kinds of interop end: SoftNDK's iWARP fabric (NDK) and the kernel's siw (verbs).
#pragma once

#include <memory>

#include "endpoint.hpp"

namespace interop {

// The IPv4 address both ends use: that of the guest's interface which carries the siw
// device (SIW_INTEROP_ADDRESS, set by run-in-vm). siw cannot serve the loopback interface
// itself: its GID there is zero, which the RDMA connection manager refuses.
const char* interop_address();

std::unique_ptr<Endpoint> make_siw_end();
std::unique_ptr<Endpoint> make_ndk_end();

}  // namespace interop
