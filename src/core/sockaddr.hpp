// A validated IPv4 or IPv6 socket address, as the NDK functions take them.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>

#include "ndk/wintypes.h"

namespace softndk {

class SockAddr {
 public:
  // (family, ip bytes, port): a value type for ordered maps of addresses, so that
  // lookups allocate nothing.
  struct Key {
    int family;
    std::array<unsigned char, 16> ip;
    uint16_t port;
    auto operator<=>(const Key&) const = default;
  };

  SockAddr() = default;
  // Null, too short for its family, or neither AF_INET nor AF_INET6: nullopt.
  static std::optional<SockAddr> parse(const SOCKADDR* address, ULONG length);
  static SockAddr from_inet(const SOCKADDR_INET& address);

  int family() const { return inet_.si_family; }
  ULONG length() const;
  uint16_t port() const;  // host order
  void set_port(uint16_t port);
  bool is_unspecified() const;
  bool same_ip(const SockAddr& other) const;
  bool operator==(const SockAddr& other) const { return same_ip(other) && port() == other.port(); }
  const SOCKADDR* sockaddr() const { return reinterpret_cast<const SOCKADDR*>(&inet_); }
  const SOCKADDR_INET& inet() const { return inet_; }
  std::string str() const;
  Key key() const;  // "192.0.2.1:445", "[2001:db8::1]:445"

  // NdkGet*Address: copies into a consumer buffer, *length in = capacity, out = bytes;
  // STATUS_BUFFER_TOO_SMALL with the required size when it does not fit.
  NTSTATUS copy_out(PSOCKADDR out, ULONG* length) const;

 private:
  SOCKADDR_INET inet_{};
};

}  // namespace softndk
