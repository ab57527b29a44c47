// The two kinds of interop end: SoftNDK's iWARP fabric (NDK) and the kernel's siw (verbs).
#pragma once

#include <memory>

#include "endpoint.hpp"
#include "ndk/wintypes.h"

namespace interop {

// The address both ends use, with `port`: that of the guest's interface which carries the
// siw device, IPv4 (SIW_INTEROP_ADDRESS) or IPv6 (SIW_INTEROP_ADDRESS6, when the running
// test asked for IPv6), both set by run-in-vm; si_family 0 when not set. (siw cannot serve
// the loopback interface itself: its GID there is zero, which the RDMA connection manager
// refuses.)
SOCKADDR_INET interop_address(uint16_t port);
inline socklen_t length_of(const SOCKADDR_INET& a) {
  return a.si_family == AF_INET6 ? sizeof(SOCKADDR_IN6) : sizeof(SOCKADDR_IN);
}

std::unique_ptr<Endpoint> make_siw_end();
std::unique_ptr<Endpoint> make_ndk_end();

}  // namespace interop
