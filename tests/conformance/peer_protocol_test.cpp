// The peer protocol's records (peer.hpp): fixed 80-byte little-endian records, variable
// data after them, malformed records refused. The data-path suites run every test through
// it in their ChannelPeer instances; this checks the encoding itself.
#include <arpa/inet.h>

#include "harness.hpp"
#include "peer.hpp"

namespace conformance {
namespace {

TEST(PeerProtocol, CommandRecordIsLittleEndianAndFixedSize) {
  PeerCommand c;
  c.op = PeerOp::kWrite;
  for (int i = 0; i < 8; ++i) c.arg[i] = 0x0102030405060708ull + static_cast<uint64_t>(i);
  c.data = {0xAA, 0xBB, 0xCC};
  std::vector<uint8_t> bytes = EncodePeerCommand(c, 0x11223344u);
  ASSERT_EQ(bytes.size(), kPeerRecordSize + 3);
  EXPECT_EQ(bytes[0], 0x53);  // "SNPQ", least significant byte first
  EXPECT_EQ(bytes[3], 0x51);
  EXPECT_EQ(bytes[4], static_cast<uint8_t>(PeerOp::kWrite));
  EXPECT_EQ(bytes[8], 0x44);  // sequence, little-endian
  EXPECT_EQ(bytes[11], 0x11);
  EXPECT_EQ(bytes[12], 3);     // data length
  EXPECT_EQ(bytes[16], 0x08);  // arg[0], little-endian
  EXPECT_EQ(bytes[23], 0x01);
  EXPECT_EQ(bytes[kPeerRecordSize], 0xAA);
  PeerCommand back;
  uint32_t sequence = 0, length = 0;
  ASSERT_TRUE(DecodePeerCommand(bytes.data(), &back, &sequence, &length));
  EXPECT_EQ(back.op, PeerOp::kWrite);
  EXPECT_EQ(sequence, 0x11223344u);
  EXPECT_EQ(length, 3u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(back.arg[i], c.arg[i]);
}

TEST(PeerProtocol, ReplyRecordCarriesTheStatus) {
  PeerReply r;
  r.status = STATUS_CONNECTION_REFUSED;
  r.value[7] = ~0ull;
  std::vector<uint8_t> bytes = EncodePeerReply(r, 9);
  ASSERT_EQ(bytes.size(), kPeerRecordSize);
  PeerReply back;
  uint32_t sequence = 0, length = 1;
  ASSERT_TRUE(DecodePeerReply(bytes.data(), &back, &sequence, &length));
  EXPECT_EQ(back.status, STATUS_CONNECTION_REFUSED);
  EXPECT_EQ(back.value[7], ~0ull);
  EXPECT_EQ(sequence, 9u);
  EXPECT_EQ(length, 0u);
}

TEST(PeerProtocol, MalformedRecordsAreRefused) {
  std::vector<uint8_t> bytes = EncodePeerCommand(PeerCommand{PeerOp::kOpen, {}, {}}, 1);
  PeerCommand c;
  PeerReply r;
  uint32_t sequence, length;
  EXPECT_FALSE(DecodePeerReply(bytes.data(), &r, &sequence, &length)) << "a command is not a reply";
  bytes[1] ^= 0xFF;
  EXPECT_FALSE(DecodePeerCommand(bytes.data(), &c, &sequence, &length)) << "bad magic";
  bytes = EncodePeerCommand(PeerCommand{PeerOp::kOpen, {}, {}}, 1);
  bytes[15] = 0x7F;  // data length far above kPeerMaxData
  EXPECT_FALSE(DecodePeerCommand(bytes.data(), &c, &sequence, &length)) << "oversized data";
}

TEST(PeerProtocol, AddressesRoundTrip) {
  SOCKADDR_INET v4{}, v6{};
  v4.Ipv4.sin_family = AF_INET;
  v4.Ipv4.sin_port = htons(445);
  v4.Ipv4.sin_addr.s_addr = htonl(0xC0000201u);
  v6.Ipv6.sin6_family = AF_INET6;
  v6.Ipv6.sin6_port = htons(50000);
  inet_pton(AF_INET6, "2001:db8::7", &v6.Ipv6.sin6_addr);
  std::vector<uint8_t> bytes;
  PutPeerAddress(bytes, v4);
  PutPeerAddress(bytes, v6);
  ASSERT_EQ(bytes.size(), 40u);
  EXPECT_EQ(bytes[2], 445 & 0xFF) << "the port in host order, little-endian";
  EXPECT_EQ(bytes[4], 192) << "the address in network order";
  SOCKADDR_INET a = ReadPeerAddress(bytes.data()), b = ReadPeerAddress(bytes.data() + 20);
  EXPECT_EQ(std::memcmp(&a.Ipv4, &v4.Ipv4, sizeof(SOCKADDR_IN)), 0);
  EXPECT_EQ(std::memcmp(&b.Ipv6, &v6.Ipv6, sizeof(SOCKADDR_IN6)), 0);
}

// Per-fabric exclusions (harness.cpp): each names its reason; the in-process fabric runs
// every test.
TEST(FabricExclusions, ReasonsArePerFabric) {
  const char* tcp =
      ExclusionFor(SOFTNDK_FABRIC_TCP, "ConnectionTest", "R159_R189_EphemeralPortsExhausted");
  ASSERT_NE(tcp, nullptr);
  EXPECT_GT(std::strlen(tcp), 20u) << "an exclusion states its reason";
  EXPECT_EQ(
      ExclusionFor(SOFTNDK_FABRIC_INPROC, "ConnectionTest", "R159_R189_EphemeralPortsExhausted"),
      nullptr);
  EXPECT_EQ(ExclusionFor(SOFTNDK_FABRIC_TCP, "ConnectionTest",
                         "R013_R158_R159_R175_R197_AddressesAndTransferOverIPv4AndIPv6"),
            nullptr);
}

}  // namespace
}  // namespace conformance
