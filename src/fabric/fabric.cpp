#include "fabric/fabric.hpp"

#include "fabric/inproc/inproc_fabric.hpp"
#include "fabric/tcp/tcp_fabric.hpp"

namespace softndk::fabric {

bool Interface::owns(const SockAddr& address) const {
  for (const SockAddr& mine : addresses())
    if (mine.same_ip(address)) return true;
  return false;
}

Fabric* find(SOFTNDK_FABRIC kind) {
  for (Fabric* f : all())
    if (f->kind() == kind) return f;
  return nullptr;
}

std::vector<Fabric*> all() {
  return {&inproc::InprocFabric::instance(), &tcp::TcpFabric::instance()};
}

}  // namespace softndk::fabric
