#include "fabric/tcp/iwarp_wire.hpp"

#include <isa-l/crc.h>

#include <climits>

namespace softndk::fabric::tcp {

namespace {

constexpr std::string_view kRdmap = "RDMAP", kDdp = "DDP", kLlp = "LLP (MPA)";
constexpr std::string_view kRdmapCatastrophic = "Local Catastrophic Error";
constexpr std::string_view kProtection = "Remote Protection Error";
constexpr std::string_view kOperation = "Remote Operation Error";
constexpr std::string_view kDdpCatastrophic = "Local Catastrophic";
constexpr std::string_view kTagged = "Tagged Buffer Error";
constexpr std::string_view kUntagged = "Untagged Buffer Error";
constexpr std::string_view kMpa = "MPA Error";

constexpr NamedTerminateCode kNamed[] = {
    {term::kRdmapLocalCatastrophic, kRdmap, kRdmapCatastrophic, "(any code)"},
    {term::kRdmapInvalidStag, kRdmap, kProtection, "Invalid STag"},
    {term::kRdmapBaseOrBounds, kRdmap, kProtection, "Base or bounds violation"},
    {term::kRdmapAccessRights, kRdmap, kProtection, "Access rights violation"},
    {term::kRdmapStagNotAssociated, kRdmap, kProtection,
     "STag not associated with RDMAP Stream"},
    {term::kRdmapToWrap, kRdmap, kProtection, "TO wrap"},
    {term::kRdmapProtectionCannotInvalidate, kRdmap, kProtection, "STag cannot be invalidated"},
    {term::kRdmapProtectionUnspecified, kRdmap, kProtection, "Unspecified Error"},
    {term::kRdmapInvalidVersion, kRdmap, kOperation, "Invalid RDMAP version"},
    {term::kRdmapUnexpectedOpcode, kRdmap, kOperation, "Unexpected OpCode"},
    {term::kRdmapCatastrophicStream, kRdmap, kOperation,
     "Catastrophic error, localized to RDMAP Stream"},
    {term::kRdmapCatastrophicGlobal, kRdmap, kOperation, "Catastrophic error, global"},
    {term::kRdmapOperationCannotInvalidate, kRdmap, kOperation, "STag cannot be Invalidated"},
    {term::kRdmapOperationUnspecified, kRdmap, kOperation, "Unspecified Error"},
    {term::kDdpLocalCatastrophic, kDdp, kDdpCatastrophic, "(no code)"},
    {term::kDdpTaggedInvalidStag, kDdp, kTagged, "Invalid STag"},
    {term::kDdpTaggedBaseOrBounds, kDdp, kTagged, "Base or bounds violation"},
    {term::kDdpTaggedStagNotAssociated, kDdp, kTagged, "STag not associated with DDP Stream"},
    {term::kDdpTaggedToWrap, kDdp, kTagged, "TO wrap"},
    {term::kDdpTaggedInvalidVersion, kDdp, kTagged, "Invalid DDP version"},
    {term::kDdpUntaggedInvalidQn, kDdp, kUntagged, "Invalid QN"},
    {term::kDdpUntaggedNoBuffer, kDdp, kUntagged, "Invalid MSN - no buffer available"},
    {term::kDdpUntaggedMsnRange, kDdp, kUntagged, "Invalid MSN - MSN range is not valid"},
    {term::kDdpUntaggedInvalidMo, kDdp, kUntagged, "Invalid MO"},
    {term::kDdpUntaggedMessageTooLong, kDdp, kUntagged,
     "DDP Message too long for available buffer"},
    {term::kDdpUntaggedInvalidVersion, kDdp, kUntagged, "Invalid DDP version"},
    {term::kMpaConnectionLost, kLlp, kMpa, "TCP connection closed, terminated or lost"},
    {term::kMpaCrcError, kLlp, kMpa, "MPA CRC Error"},
    {term::kMpaMarkerMismatch, kLlp, kMpa, "MPA Marker and ULPDU Length field mismatch"},
    {term::kMpaInvalidFrame, kLlp, kMpa, "Invalid MPA Request Frame or MPA Response Frame"},
    {term::kMpaLocalCatastrophic, kLlp, kMpa, "Local Catastrophic Error"},
    {term::kMpaInsufficientIrd, kLlp, kMpa, "Insufficient IRD Resources"},
    {term::kMpaNoMatchingRtr, kLlp, kMpa, "No Matching RTR Option"},
};

}  // namespace

std::span<const NamedTerminateCode> terminate_codes() { return kNamed; }

std::string describe(const TerminateCode& code) {
  std::string_view layer = "unknown layer", type = "unknown type", name = "unknown code";
  for (const auto& n : kNamed) {
    if (n.code.layer != code.layer) continue;
    layer = n.layer;
    if (n.code.error_type != code.error_type) continue;
    type = n.error_type;
    // RFC 5040: a Local Catastrophic Error is one, whatever its code.
    const bool any_code = code.layer == term_layer::kRdmap &&
                          code.error_type == rdmap_etype::kLocalCatastrophic;
    if (n.code.error_code == code.error_code || any_code) {
      name = n.error_code;
      break;
    }
  }
  std::string s;
  s.append(layer).append(" / ").append(type).append(" / ").append(name);
  return s;
}

RdmaReadRequestHeader encode_read_request(const ReadRequest& r) {
  RdmaReadRequestHeader h;
  h.data_sink_stag.set(r.data_sink_stag);
  h.data_sink_to.set(r.data_sink_to);
  h.rdma_read_message_size.set(r.rdma_read_message_size);
  h.data_source_stag.set(r.data_source_stag);
  h.data_source_to.set(r.data_source_to);
  return h;
}

ReadRequest decode_read_request(const RdmaReadRequestHeader& h) {
  return {h.data_sink_stag.get(), h.data_sink_to.get(), h.rdma_read_message_size.get(),
          h.data_source_stag.get(), h.data_source_to.get()};
}

size_t encode_terminate(const TerminateInfo& t, uint8_t (&out)[kTerminateMaxBody]) {
  // The DDP Segment Length field travels with the DDP header (D); M says its value holds.
  const bool d = t.d && (t.ddp_header_length == sizeof(DdpTaggedHeader) ||
                         t.ddp_header_length == sizeof(DdpUntaggedHeader));
  const bool m = t.m && d;
  uint32_t word = uint32_t{t.code.layer & 0xfu} << term_ctrl::kLayerShift |
                  uint32_t{t.code.error_type & 0xfu} << term_ctrl::kErrorTypeShift |
                  uint32_t{t.code.error_code} << term_ctrl::kErrorCodeShift;
  if (m) word |= term_ctrl::kM;
  if (d) word |= term_ctrl::kD;
  if (t.r) word |= term_ctrl::kR;
  TerminateControl c;
  c.terminate_control.set(word);
  size_t n = 0;
  store_layout(out, c);
  n += sizeof c;
  if (d) {
    Be16 length;
    length.set(t.ddp_segment_length);
    store_layout(out + n, length);
    n += sizeof length;
    std::memcpy(out + n, t.ddp_header, t.ddp_header_length);
    n += t.ddp_header_length;
  }
  if (t.r) {
    std::memcpy(out + n, t.rdma_header, sizeof t.rdma_header);
    n += sizeof t.rdma_header;
  }
  return n;
}

TerminateInfo read_request_terminate(const TerminateCode& code, uint32_t msn, const ReadRequest& r) {
  TerminateInfo t;
  t.code = code;
  DdpUntaggedHeader d{};  // RsvdULP zero, as a Read Request carries it
  d.ddp_control = ddp_control(false, true);
  d.rdmap_control = rdmap_control(Opcode::kRdmaReadRequest);
  d.qn.set(kQnReadRequest);
  d.msn.set(msn);
  d.mo.set(0);
  t.m = t.d = t.r = true;
  t.ddp_segment_length = sizeof(DdpUntaggedHeader) + sizeof(RdmaReadRequestHeader);
  t.ddp_header_length = sizeof(DdpUntaggedHeader);
  store_layout(t.ddp_header, d);
  t.rdma_header_present = true;
  store_layout(t.rdma_header, encode_read_request(r));
  return t;
}

TerminateInfo decode_terminate(std::span<const uint8_t> body) {
  TerminateInfo t;
  if (body.size() < sizeof(TerminateControl)) return t;
  const uint8_t* b = body.data();
  const uint32_t word = load_layout<TerminateControl>(b).terminate_control.get();
  t.code = {static_cast<uint8_t>(word >> term_ctrl::kLayerShift),
            static_cast<uint8_t>((word >> term_ctrl::kErrorTypeShift) & 0xf),
            static_cast<uint8_t>(word >> term_ctrl::kErrorCodeShift)};
  t.m = word & term_ctrl::kM;
  t.d = word & term_ctrl::kD;
  t.r = word & term_ctrl::kR;
  // siw declares the word as little-endian bit fields: Layer in the low nibble of byte 0,
  // EType in its high nibble, M/D/R in the low bits of byte 2, Reserved above them.
  const bool rfc_reserved_set = (word & term_ctrl::kReservedMask) != 0;
  const bool siw_clean = (b[2] >> 3) == 0 && b[3] == 0 && (b[0] & 0xf) <= term_layer::kLlp;
  if (rfc_reserved_set && !t.m && !t.d && !t.r && siw_clean) {
    t.siw_bit_order = true;
    t.code = {static_cast<uint8_t>(b[0] & 0xf), static_cast<uint8_t>(b[0] >> 4), b[1]};
    t.m = b[2] & 0x1;
    t.d = b[2] & 0x2;
    t.r = b[2] & 0x4;
  }
  // Flags stay as received; the lengths say what was actually there.
  size_t at = sizeof(TerminateControl);
  if (t.d && body.size() >= at + 2) {
    t.ddp_segment_length = load_layout<Be16>(b + at).get();
    at += 2;
    const size_t len = at < body.size() && (b[at] & ddp_flag::kTagged) ? sizeof(DdpTaggedHeader)
                                                                       : sizeof(DdpUntaggedHeader);
    if (body.size() < at + len) return t;
    std::memcpy(t.ddp_header, b + at, len);
    t.ddp_header_length = static_cast<uint8_t>(len);
    at += len;
  }
  if (t.r && body.size() >= at + sizeof t.rdma_header) {
    std::memcpy(t.rdma_header, b + at, sizeof t.rdma_header);
    t.rdma_header_present = true;
  }
  return t;
}

void Crc32c::update(const uint8_t* data, size_t length) {
  // crc32_iscsi takes an int length and a non-const pointer (it only reads).
  constexpr size_t kChunk = size_t{1} << 30;
  static_assert(kChunk <= INT_MAX);
  auto* p = const_cast<uint8_t*>(data);
  while (length > 0) {
    const size_t n = length < kChunk ? length : kChunk;
    state_ = crc32_iscsi(p, static_cast<int>(n), state_);
    p += n;
    length -= n;
  }
}

void Crc32c::store(uint8_t out[4]) const {
  const uint32_t v = value();
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint32_t crc32c(std::span<const uint8_t> bytes) {
  Crc32c c;
  c.update(bytes);
  return c.value();
}

uint32_t load_mpa_crc(const uint8_t in[4]) {
  return uint32_t{in[0]} | uint32_t{in[1]} << 8 | uint32_t{in[2]} << 16 | uint32_t{in[3]} << 24;
}

}  // namespace softndk::fabric::tcp
