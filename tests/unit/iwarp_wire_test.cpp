// Unit tests for the iWARP wire vocabulary: layouts, the opcode table, Terminate codes and
// their encoding (siw's bit order included), CRC32c.

#include "fabric/tcp/iwarp_wire.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <set>

#include "iwarp_test_util.hpp"

namespace {

using namespace softndk::fabric::tcp;
using iwarp_test::Bytes;

TEST(IwarpWire, BigEndianFields) {
  Be32 v;
  v.set(0x01020304);
  EXPECT_EQ(v.bytes[0], 0x01);
  EXPECT_EQ(v.bytes[3], 0x04);
  EXPECT_EQ(v.get(), 0x01020304u);
  Be64 w;
  w.set(0x0102030405060708ull);
  EXPECT_EQ(w.bytes[0], 0x01);
  EXPECT_EQ(w.bytes[7], 0x08);
  EXPECT_EQ(w.get(), 0x0102030405060708ull);
  Be16 s;
  s.set(0xabcd);
  EXPECT_EQ(s.bytes[0], 0xab);
  EXPECT_EQ(s.get(), 0xabcd);
}

TEST(IwarpWire, LayoutOffsets) {
  EXPECT_EQ(offsetof(MpaFrameHeader, flags), 16u);
  EXPECT_EQ(offsetof(MpaFrameHeader, rev), 17u);
  EXPECT_EQ(offsetof(MpaFrameHeader, pd_length), 18u);
  EXPECT_EQ(offsetof(DdpTaggedHeader, stag), 2u);
  EXPECT_EQ(offsetof(DdpTaggedHeader, to), 6u);
  EXPECT_EQ(offsetof(DdpUntaggedHeader, rsvd_ulp), 2u);
  EXPECT_EQ(offsetof(DdpUntaggedHeader, qn), 6u);
  EXPECT_EQ(offsetof(DdpUntaggedHeader, msn), 10u);
  EXPECT_EQ(offsetof(DdpUntaggedHeader, mo), 14u);
  EXPECT_EQ(offsetof(RdmaReadRequestHeader, rdma_read_message_size), 12u);
  EXPECT_EQ(offsetof(RdmaReadRequestHeader, data_source_to), 20u);
  EXPECT_EQ(kMaxFpduHeader, 2u + 18u + 52u);
}

TEST(IwarpWire, OpcodeTable) {
  EXPECT_EQ(kOpcodes[0].name, "RDMA Write");
  EXPECT_EQ(kOpcodes[7].name, "Terminate");
  for (size_t op = 8; op < kOpcodeCount; ++op) EXPECT_FALSE(kOpcodes[op].valid()) << op;
  EXPECT_EQ(opcode_info(Opcode::kRdmaWrite).header_length(), 14u);
  EXPECT_EQ(opcode_info(Opcode::kRdmaReadResponse).header_length(), 14u);
  EXPECT_EQ(opcode_info(Opcode::kRdmaReadRequest).header_length(), 18u + 28u);
  EXPECT_EQ(opcode_info(Opcode::kSendWithSeAndInvalidate).header_length(), 18u);
  EXPECT_EQ(opcode_info(Opcode::kTerminate).header_length(), 18u + 4u);
  EXPECT_EQ(opcode_info(Opcode::kRdmaReadRequest).queue, 1u);
  EXPECT_EQ(opcode_info(Opcode::kTerminate).queue, 2u);
  for (Opcode op : {Opcode::kSend, Opcode::kSendWithInvalidate, Opcode::kSendWithSe,
                    Opcode::kSendWithSeAndInvalidate}) {
    EXPECT_EQ(opcode_info(op).queue, 0u);
    EXPECT_FALSE(opcode_info(op).tagged);
  }
  EXPECT_TRUE(opcode_info(Opcode::kSendWithSe).solicited);
  EXPECT_TRUE(opcode_info(Opcode::kSendWithSeAndInvalidate).invalidate);
  // Control bytes as siw and tshark see them.
  EXPECT_EQ(ddp_control(false, true), 0x41);
  EXPECT_EQ(ddp_control(true, true), 0xc1);
  EXPECT_EQ(ddp_control(true, false), 0x81);
  EXPECT_EQ(rdmap_control(Opcode::kSend), 0x43);
  EXPECT_EQ(rdmap_control(Opcode::kTerminate), 0x47);
}

TEST(IwarpWire, MpaPadAndMulpdu) {
  EXPECT_EQ(mpa_pad(18), 0u);  // 2 + 18 = 20
  EXPECT_EQ(mpa_pad(17), 1u);
  EXPECT_EQ(mpa_pad(16), 2u);
  EXPECT_EQ(mpa_pad(15), 3u);
  EXPECT_EQ(mpa_fpdu_size(18), 24u);
  EXPECT_EQ(mpa_fpdu_size(17), 24u);
  EXPECT_EQ(mpa_mulpdu(1460), 1454u);  // a full FPDU is exactly the MSS
  EXPECT_EQ(mpa_fpdu_size(1454), 1460u);
  EXPECT_EQ(mpa_mulpdu(1461), 1454u);
  EXPECT_EQ(mpa_mulpdu(1 << 20), 0xffffu);
  EXPECT_EQ(mpa_mulpdu(7), 0u);
}

TEST(IwarpWire, TerminateCodesMatchTheRfcRegistry) {
  // IANA "RDDP" registry (RFC 6580): layer/type/code.
  EXPECT_EQ(term::kRdmapInvalidStag, (TerminateCode{0x0, 0x1, 0x00}));
  EXPECT_EQ(term::kRdmapProtectionCannotInvalidate, (TerminateCode{0x0, 0x1, 0x09}));
  EXPECT_EQ(term::kRdmapUnexpectedOpcode, (TerminateCode{0x0, 0x2, 0x06}));
  EXPECT_EQ(term::kRdmapOperationUnspecified, (TerminateCode{0x0, 0x2, 0xff}));
  EXPECT_EQ(term::kDdpTaggedInvalidVersion, (TerminateCode{0x1, 0x1, 0x04}));
  EXPECT_EQ(term::kDdpUntaggedInvalidVersion, (TerminateCode{0x1, 0x2, 0x06}));
  EXPECT_EQ(term::kMpaCrcError, (TerminateCode{0x2, 0x0, 0x02}));
  EXPECT_EQ(term::kMpaNoMatchingRtr, (TerminateCode{0x2, 0x0, 0x07}));
  std::set<std::tuple<int, int, int>> seen;
  for (const auto& n : terminate_codes()) {
    EXPECT_TRUE(seen.insert({n.code.layer, n.code.error_type, n.code.error_code}).second);
    EXPECT_FALSE(n.error_code.empty());
  }
  EXPECT_EQ(seen.size(), 33u);
  EXPECT_EQ(describe(term::kRdmapInvalidStag), "RDMAP / Remote Protection Error / Invalid STag");
  EXPECT_EQ(describe(term::kDdpUntaggedMsnRange),
            "DDP / Untagged Buffer Error / Invalid MSN - MSN range is not valid");
  EXPECT_EQ(describe(term::kMpaInsufficientIrd), "LLP (MPA) / MPA Error / Insufficient IRD Resources");
  EXPECT_EQ(describe({0x0, 0x0, 0x42}), "RDMAP / Local Catastrophic Error / (any code)");
  EXPECT_EQ(describe({0x5, 0x0, 0x00}), "unknown layer / unknown type / unknown code");
  EXPECT_EQ(describe({0x1, 0x1, 0x77}), "DDP / Tagged Buffer Error / unknown code");
}

TEST(IwarpWire, TerminateControlBytes) {
  TerminateInfo t;
  t.code = term::kRdmapInvalidStag;
  uint8_t body[kTerminateMaxBody];
  ASSERT_EQ(encode_terminate(t, body), 4u);
  EXPECT_EQ(Bytes(body, body + 4), (Bytes{0x01, 0x00, 0x00, 0x00}));

  t.code = term::kDdpUntaggedInvalidQn;
  t.m = t.d = true;
  t.ddp_segment_length = 0x0123;
  t.ddp_header_length = 18;
  for (int i = 0; i < 18; ++i) t.ddp_header[i] = static_cast<uint8_t>(0x40 + i);
  ASSERT_EQ(encode_terminate(t, body), 4u + 2u + 18u);
  EXPECT_EQ(Bytes(body, body + 6), (Bytes{0x12, 0x01, 0xc0, 0x00, 0x01, 0x23}));
  const TerminateInfo back = decode_terminate({body, 24});
  EXPECT_EQ(back.code, term::kDdpUntaggedInvalidQn);
  EXPECT_TRUE(back.m && back.d && !back.r && !back.siw_bit_order);
  EXPECT_EQ(back.ddp_segment_length, 0x0123);
  EXPECT_EQ(back.ddp_header_length, 18);
  EXPECT_EQ(Bytes(back.ddp_header, back.ddp_header + 18), Bytes(t.ddp_header, t.ddp_header + 18));

  // A Read Request's headers: tagged bit clear, untagged header, then the RDMA header.
  t.code = term::kRdmapBaseOrBounds;
  t.r = true;
  for (int i = 0; i < 28; ++i) t.rdma_header[i] = static_cast<uint8_t>(i);
  ASSERT_EQ(encode_terminate(t, body), 4u + 2u + 18u + 28u);
  EXPECT_EQ(body[2], 0xe0);
  const TerminateInfo rr = decode_terminate({body, sizeof body});
  EXPECT_TRUE(rr.r && rr.rdma_header_present);
  EXPECT_EQ(rr.rdma_header[27], 27);

  // A DDP header without D is not sent, nor M without D.
  TerminateInfo m_only;
  m_only.code = term::kDdpLocalCatastrophic;
  m_only.m = true;
  ASSERT_EQ(encode_terminate(m_only, body), 4u);
  EXPECT_EQ(body[2], 0x00);
}

TEST(IwarpWire, TerminateInSiwBitOrder) {
  // NOTES.md: siw on x86 sends RDMAP / Remote Protection / Invalid STag with M, D, R as
  // `10 00 07 00`, then the DDP Segment Length and the Send's untagged header (no RDMA
  // header, although R is set).
  Bytes body = {0x10, 0x00, 0x07, 0x00, 0x00, 0x08};
  const uint8_t send_header[18] = {0x41, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0};
  body.insert(body.end(), send_header, send_header + 18);
  const TerminateInfo t = decode_terminate(body);
  EXPECT_TRUE(t.siw_bit_order);
  EXPECT_EQ(t.code, term::kRdmapInvalidStag);
  EXPECT_TRUE(t.m && t.d && t.r);
  EXPECT_EQ(t.ddp_segment_length, 8);
  EXPECT_EQ(t.ddp_header_length, 18);
  EXPECT_FALSE(t.rdma_header_present);

  // Only the control word: still decoded, nothing read past the end.
  const TerminateInfo bare = decode_terminate(std::span(body).first(4));
  EXPECT_TRUE(bare.siw_bit_order);
  EXPECT_EQ(bare.ddp_header_length, 0);
  // siw's DDP / Untagged / Invalid QN (`21 01 03 00`) and a clean RFC word.
  const Bytes qn = {0x21, 0x01, 0x03, 0x00};
  EXPECT_EQ(decode_terminate(qn).code, term::kDdpUntaggedInvalidQn);
  const Bytes rfc = {0x12, 0x01, 0xc0, 0x00};
  EXPECT_FALSE(decode_terminate(rfc).siw_bit_order);
  EXPECT_EQ(decode_terminate(rfc).code, term::kDdpUntaggedInvalidQn);
  // Short or empty bodies.
  EXPECT_EQ(decode_terminate({}).code, (TerminateCode{}));
  const Bytes three = {0x01, 0x00, 0x00};
  EXPECT_EQ(decode_terminate(three).code, (TerminateCode{}));
}

TEST(IwarpWire, Crc32cKnownValues) {
  const std::string_view check = "123456789";
  const std::span<const uint8_t> check_bytes(reinterpret_cast<const uint8_t*>(check.data()), check.size());
  EXPECT_EQ(crc32c(check_bytes), 0xe3069283u);
  EXPECT_EQ(iwarp_test::reference_crc32c(check_bytes), 0xe3069283u);

  // RFC 3720 B.4, with the bytes as iSCSI (and MPA) send them.
  Bytes zeros(32, 0), ones(32, 0xff), up(32), down(32);
  for (int i = 0; i < 32; ++i) up[i] = static_cast<uint8_t>(i), down[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(crc32c(zeros), 0x8a9136aau);
  EXPECT_EQ(crc32c(ones), 0x62a8ab43u);
  EXPECT_EQ(crc32c(up), 0x46dd794eu);
  EXPECT_EQ(crc32c(down), 0x113fdb5cu);
  Crc32c c;
  c.update(zeros);
  uint8_t field[4];
  c.store(field);
  EXPECT_EQ(Bytes(field, field + 4), (Bytes{0xaa, 0x36, 0x91, 0x8a}));
  EXPECT_EQ(load_mpa_crc(field), 0x8a9136aau);
}

TEST(IwarpWire, Crc32cChainedMatchesReference) {
  const Bytes data = iwarp_test::pattern(10007, 7);
  EXPECT_EQ(crc32c(data), iwarp_test::reference_crc32c(data));
  for (size_t cut : {size_t{0}, size_t{1}, size_t{3}, size_t{4096}, size_t{10006}}) {
    Crc32c c;
    c.update(std::span(data).first(cut));
    c.update(std::span(data).subspan(cut));
    EXPECT_EQ(c.value(), crc32c(data)) << cut;
  }
  EXPECT_EQ(crc32c({}), 0u);
}

}  // namespace
