#include "core/sockaddr.hpp"

#include <arpa/inet.h>

#include <cstring>

#include <fmt/format.h>

namespace softndk {

std::optional<SockAddr> SockAddr::parse(const SOCKADDR* address, ULONG length) {
  if (address == nullptr || length < sizeof(sa_family_t)) return std::nullopt;
  SockAddr result;
  if (address->sa_family == AF_INET && length >= sizeof(SOCKADDR_IN)) {
    std::memcpy(&result.inet_.Ipv4, address, sizeof(SOCKADDR_IN));
    std::memset(result.inet_.Ipv4.sin_zero, 0, sizeof(result.inet_.Ipv4.sin_zero));
    return result;
  }
  if (address->sa_family == AF_INET6 && length >= sizeof(SOCKADDR_IN6)) {
    std::memcpy(&result.inet_.Ipv6, address, sizeof(SOCKADDR_IN6));
    return result;
  }
  return std::nullopt;
}

SockAddr SockAddr::from_inet(const SOCKADDR_INET& address) {
  SockAddr result;
  result.inet_ = address;
  return result;
}

ULONG SockAddr::length() const {
  return family() == AF_INET ? sizeof(SOCKADDR_IN) : sizeof(SOCKADDR_IN6);
}

uint16_t SockAddr::port() const {
  return ntohs(family() == AF_INET ? inet_.Ipv4.sin_port : inet_.Ipv6.sin6_port);
}

void SockAddr::set_port(uint16_t port) {
  if (family() == AF_INET)
    inet_.Ipv4.sin_port = htons(port);
  else
    inet_.Ipv6.sin6_port = htons(port);
}

bool SockAddr::is_unspecified() const {
  if (family() == AF_INET) return inet_.Ipv4.sin_addr.s_addr == htonl(INADDR_ANY);
  return IN6_IS_ADDR_UNSPECIFIED(&inet_.Ipv6.sin6_addr);
}

bool SockAddr::same_ip(const SockAddr& other) const {
  if (family() != other.family()) return false;
  if (family() == AF_INET) return inet_.Ipv4.sin_addr.s_addr == other.inet_.Ipv4.sin_addr.s_addr;
  return std::memcmp(&inet_.Ipv6.sin6_addr, &other.inet_.Ipv6.sin6_addr, sizeof(in6_addr)) == 0;
}

std::string SockAddr::str() const {
  char text[INET6_ADDRSTRLEN] = {};
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &inet_.Ipv4.sin_addr, text, sizeof(text));
    return fmt::format("{}:{}", text, port());
  }
  inet_ntop(AF_INET6, &inet_.Ipv6.sin6_addr, text, sizeof(text));
  return fmt::format("[{}]:{}", text, port());
}

NTSTATUS SockAddr::copy_out(PSOCKADDR out, ULONG* length) const {
  if (length == nullptr) return STATUS_INVALID_PARAMETER;
  ULONG needed = this->length();
  if (out == nullptr || *length < needed) {
    *length = needed;
    return STATUS_BUFFER_TOO_SMALL;
  }
  std::memcpy(out, &inet_, needed);
  *length = needed;
  return STATUS_SUCCESS;
}

SockAddr::Key SockAddr::key() const {
  Key key{family(), {}, port()};
  if (family() == AF_INET)
    std::memcpy(key.ip.data(), &inet_.Ipv4.sin_addr, 4);
  else
    std::memcpy(key.ip.data(), &inet_.Ipv6.sin6_addr, 16);
  return key;
}

}  // namespace softndk
