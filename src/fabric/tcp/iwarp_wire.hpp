// The iWARP wire, as layouts and constants only: MPA framing (RFC 5044), the RFC 6581
// connection-setup header, DDP (RFC 5041) and RDMAP (RFC 5040) headers, the opcode table
// that drives both transmit (iwarp_tx.hpp) and receive (iwarp_rx.hpp), every Terminate
// layer/type/code, and CRC32c. No I/O, no state.
//
// Every layout is a struct of byte arrays (alignment 1, no padding) whose size is asserted;
// multi-byte fields are big-endian on the wire (RFC 5040/5041/5044 "network byte order")
// and read through get()/set(). Copy a layout in and out of a byte buffer with
// load_layout/store_layout (memcpy), never by casting the buffer.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace softndk::fabric::tcp {

// ---- Big-endian fields ----

template <class T>
struct BeField {
  static_assert(std::is_unsigned_v<T> && sizeof(T) >= 2);
  uint8_t bytes[sizeof(T)];
  constexpr T get() const {
    T v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>((v << 8) | bytes[i]);
    return v;
  }
  constexpr void set(T v) {
    for (size_t i = sizeof(T); i-- > 0;) {
      bytes[i] = static_cast<uint8_t>(v);
      v = static_cast<T>(v >> 8);
    }
  }
};
using Be16 = BeField<uint16_t>;
using Be32 = BeField<uint32_t>;
using Be64 = BeField<uint64_t>;
static_assert(sizeof(Be16) == 2 && sizeof(Be32) == 4 && sizeof(Be64) == 8 && alignof(Be64) == 1);

template <class Layout>
Layout load_layout(const uint8_t* bytes) {
  static_assert(std::is_trivially_copyable_v<Layout> && alignof(Layout) == 1);
  Layout l;
  std::memcpy(&l, bytes, sizeof l);
  return l;
}
template <class Layout>
void store_layout(uint8_t* bytes, const Layout& l) {
  static_assert(std::is_trivially_copyable_v<Layout> && alignof(Layout) == 1);
  std::memcpy(bytes, &l, sizeof l);
}

// ---- MPA connection setup (RFC 5044 §7.1, RFC 6581) ----

// The 16-byte Key that opens an MPA Request, and a Reply or Reject (no terminator).
inline constexpr std::string_view kMpaKeyRequest = "MPA ID Req Frame";
inline constexpr std::string_view kMpaKeyReply = "MPA ID Rep Frame";
static_assert(kMpaKeyRequest.size() == 16 && kMpaKeyReply.size() == 16);

// MPA Request/Reply Frame header: Key, |M|C|R| Res |, Rev, PD_Length; then PD_Length bytes
// of Private Data.
struct MpaFrameHeader {
  uint8_t key[16];
  uint8_t flags;  // M C R and the 5 Res bits (mpa_flag)
  uint8_t rev;
  Be16 pd_length;
};
static_assert(sizeof(MpaFrameHeader) == 20);

namespace mpa_flag {
inline constexpr uint8_t kMarkers = 0x80;  // M: the sender wants markers in the frames it receives
inline constexpr uint8_t kCrc = 0x40;      // C: CRC32c in both directions
inline constexpr uint8_t kReject = 0x20;   // R: a Reply that rejects the connection
// A Res bit that Linux siw (MPA_RR_FLAG_ENHANCED) and cxgb4 (MPA_ENHANCED_RDMA_CONN) set
// with revision 2 to say the Private Data starts with the RFC 6581 header. siw as an
// initiator refuses a Reply without it (shared/spec/NOTES.md). tshark flags it as a non-zero
// Res field; that warning is expected on Request/Reply frames.
inline constexpr uint8_t kEnhanced = 0x10;
inline constexpr uint8_t kResMask = 0x1f;
}  // namespace mpa_flag

inline constexpr uint8_t kMpaRevision1 = 1;  // RFC 5044
inline constexpr uint8_t kMpaRevision2 = 2;  // RFC 6581
// RFC 5044 §7.1: PD_Length is at most 512. (Linux's iw_cm passes at most 256: a Request
// with more is refused by siw.)
inline constexpr size_t kMpaMaxPrivateData = 512;
inline constexpr size_t kMpaMaxFrame = sizeof(MpaFrameHeader) + kMpaMaxPrivateData;

// RFC 6581: the first 4 bytes of the Private Data of an enhanced (revision 2) frame. Each
// word holds a 14-bit value and two control flags in its top bits.
struct MpaV2Header {
  Be16 ird;  // |peer-to-peer|zero-length Send RTR| IRD |
  Be16 ord;  // |zero-length Write RTR|zero-length Read RTR| ORD |
};
static_assert(sizeof(MpaV2Header) == 4);

namespace mpa_v2 {
inline constexpr uint16_t kIrdOrdMask = 0x3fff;
inline constexpr uint16_t kPeerToPeer = 0x8000;         // in IRD: peer-to-peer mode, an RTR follows
inline constexpr uint16_t kZeroLengthSendRtr = 0x4000;  // in IRD: RTR as a zero-length Send
inline constexpr uint16_t kZeroLengthWriteRtr = 0x8000; // in ORD: RTR as a zero-length RDMA Write
inline constexpr uint16_t kZeroLengthReadRtr = 0x4000;  // in ORD: RTR as a zero-length RDMA Read
}  // namespace mpa_v2

// ---- MPA FPDU (RFC 5044, FPDU format) ----
//
// | ULPDU_Length (16) | ULPDU (a DDP segment) | PAD (0-3 bytes) | CRC (32) |
// PAD makes ULPDU_Length + ULPDU + PAD a multiple of 4. The CRC field is always present; it
// carries CRC32c (over ULPDU_Length, ULPDU and PAD) only when C was negotiated, else it is
// sent as zero and not checked. No markers: SoftNDK never negotiates them.
struct MpaFpduHeader {
  Be16 ulpdu_length;
};
static_assert(sizeof(MpaFpduHeader) == 2);
inline constexpr size_t kMpaCrcSize = 4;

constexpr uint32_t mpa_pad(uint32_t ulpdu_length) { return (0u - (ulpdu_length + 2u)) & 3u; }
// The wire size of the FPDU that carries a ULPDU of `ulpdu_length` bytes.
constexpr size_t mpa_fpdu_size(uint32_t ulpdu_length) {
  return sizeof(MpaFpduHeader) + ulpdu_length + mpa_pad(ulpdu_length) + kMpaCrcSize;
}
// MULPDU for an FPDU of at most `emss` bytes without markers: EMSS - (6 + EMSS mod 4),
// so that full FPDUs need no PAD; capped by the 16-bit ULPDU_Length. 0 if emss < 8.
constexpr uint32_t mpa_mulpdu(size_t emss) {
  if (emss < 8) return 0;
  const size_t m = (emss & ~size_t{3}) - 6;
  return m > 0xffff ? 0xffff : static_cast<uint32_t>(m);
}

// ---- DDP (RFC 5041 header format) with the RDMAP control field (RFC 5040) ----
//
// The first 16 bits of every DDP segment: the DDP Control Field |T|L| Rsvd |DV| and the
// first 8 bits of RsvdULP, which RDMAP uses as its control field |RV|Rsv| OpCode |.

namespace ddp_flag {
inline constexpr uint8_t kTagged = 0x80;        // T: tagged buffer model
inline constexpr uint8_t kLast = 0x40;          // L: last segment of the DDP message
inline constexpr uint8_t kReservedMask = 0x3c;  // Rsvd: sent as zero, not checked
inline constexpr uint8_t kVersionMask = 0x03;   // DV
}  // namespace ddp_flag
inline constexpr uint8_t kDdpVersion = 1;

namespace rdmap_ctrl {
inline constexpr uint8_t kVersionMask = 0xc0;   // RV, in the top 2 bits
inline constexpr unsigned kVersionShift = 6;
inline constexpr uint8_t kReservedMask = 0x30;  // Rsv: sent as zero, not checked
inline constexpr uint8_t kOpcodeMask = 0x0f;
}  // namespace rdmap_ctrl
inline constexpr uint8_t kRdmapVersion = 1;

// Tagged Buffer Model header: Write and Read Response.
struct DdpTaggedHeader {
  uint8_t ddp_control;
  uint8_t rdmap_control;
  Be32 stag;  // Data Sink STag
  Be64 to;    // Data Sink Tagged Offset of this segment's first byte
};
static_assert(sizeof(DdpTaggedHeader) == 14);

// Untagged Buffer Model header: the Sends, Read Request, Terminate.
struct DdpUntaggedHeader {
  uint8_t ddp_control;
  uint8_t rdmap_control;
  Be32 rsvd_ulp;  // RsvdULP[8:39]: RDMAP's Invalidate STag (Send with Invalidate), else 0
  Be32 qn;        // Queue Number
  Be32 msn;       // Message Sequence Number, from 1 on each queue
  Be32 mo;        // Message Offset of this segment's first byte
};
static_assert(sizeof(DdpUntaggedHeader) == 18);

// RDMA Read Request header (RFC 5040), after the untagged DDP header.
struct RdmaReadRequestHeader {
  Be32 data_sink_stag;
  Be64 data_sink_to;
  Be32 rdma_read_message_size;
  Be32 data_source_stag;
  Be64 data_source_to;
};
static_assert(sizeof(RdmaReadRequestHeader) == 28);

// Terminate header (RFC 5040), after the untagged DDP header:
//   Terminate Control | Layer(4) | EType(4) | Error Code(8) | HdrCt M D R (3) | Reserved(13) |
//   then, per HdrCt: DDP Segment Length (16, with M or D), Terminated DDP Header (14 or 18,
//   with D), Terminated RDMA Header (28, with R: the Read Request header).
struct TerminateControl {
  Be32 terminate_control;
};
static_assert(sizeof(TerminateControl) == 4);

namespace term_ctrl {
inline constexpr unsigned kLayerShift = 28;
inline constexpr unsigned kErrorTypeShift = 24;
inline constexpr unsigned kErrorCodeShift = 16;
inline constexpr uint32_t kM = 0x8000;  // DDP Segment Length valid
inline constexpr uint32_t kD = 0x4000;  // Terminated DDP Header included
inline constexpr uint32_t kR = 0x2000;  // Terminated RDMA Header included
inline constexpr uint32_t kReservedMask = 0x1fff;
}  // namespace term_ctrl
inline constexpr size_t kTerminateMaxBody =
    sizeof(TerminateControl) + 2 + sizeof(DdpUntaggedHeader) + sizeof(RdmaReadRequestHeader);

// ---- RDMAP opcodes and the table that drives transmit and receive (RFC 5040) ----

enum class Opcode : uint8_t {
  kRdmaWrite = 0,
  kRdmaReadRequest = 1,
  kRdmaReadResponse = 2,
  kSend = 3,
  kSendWithInvalidate = 4,
  kSendWithSe = 5,
  kSendWithSeAndInvalidate = 6,
  kTerminate = 7,
};
inline constexpr size_t kOpcodeCount = 16;  // the 4-bit field; 8-15 are reserved

// Untagged queues (RFC 5040): each has its own MSN sequence.
inline constexpr uint32_t kQnSend = 0;
inline constexpr uint32_t kQnReadRequest = 1;
inline constexpr uint32_t kQnTerminate = 2;

// What follows the DDP header of a message.
enum class Body : uint8_t {
  kData,         // consumer data, placed as it arrives
  kReadRequest,  // exactly the 28-byte RDMA Read Request header
  kTerminate,    // Terminate Control and the copied headers (at most kTerminateMaxBody)
};

struct OpcodeInfo {
  std::string_view name;  // as RFC 5040 names it; empty for a reserved opcode
  bool tagged;            // DDP buffer model (T)
  uint32_t queue;         // untagged: the QN
  Body body;
  bool solicited;         // Send with Solicited Event
  bool invalidate;        // carries an Invalidate STag
  constexpr bool valid() const { return !name.empty(); }
  // DDP header plus the fixed RDMAP header (not counting ULPDU_Length).
  constexpr size_t header_length() const {
    return (tagged ? sizeof(DdpTaggedHeader) : sizeof(DdpUntaggedHeader)) +
           (body == Body::kReadRequest  ? sizeof(RdmaReadRequestHeader)
            : body == Body::kTerminate ? sizeof(TerminateControl)
                                       : 0);
  }
};

inline constexpr std::array<OpcodeInfo, kOpcodeCount> kOpcodes = {{
    {"RDMA Write", true, 0, Body::kData, false, false},
    {"RDMA Read Request", false, kQnReadRequest, Body::kReadRequest, false, false},
    {"RDMA Read Response", true, 0, Body::kData, false, false},
    {"Send", false, kQnSend, Body::kData, false, false},
    {"Send with Invalidate", false, kQnSend, Body::kData, false, true},
    {"Send with Solicited Event", false, kQnSend, Body::kData, true, false},
    {"Send with Solicited Event and Invalidate", false, kQnSend, Body::kData, true, true},
    {"Terminate", false, kQnTerminate, Body::kTerminate, false, false},
}};

constexpr const OpcodeInfo& opcode_info(Opcode op) { return kOpcodes[static_cast<uint8_t>(op)]; }
// The largest FPDU header (ULPDU_Length + DDP header + RDMAP header): a Terminate's.
inline constexpr size_t kMaxFpduHeader =
    sizeof(MpaFpduHeader) + sizeof(DdpUntaggedHeader) + kTerminateMaxBody;

constexpr uint8_t ddp_control(bool tagged, bool last) {
  return static_cast<uint8_t>((tagged ? ddp_flag::kTagged : 0) | (last ? ddp_flag::kLast : 0) |
                              kDdpVersion);
}
constexpr uint8_t rdmap_control(Opcode op) {
  return static_cast<uint8_t>((kRdmapVersion << rdmap_ctrl::kVersionShift) |
                              static_cast<uint8_t>(op));
}

// ---- Terminate layers, error types and codes (RFC 5040, 5041, 5044, 6581; IANA "RDDP") ----

struct TerminateCode {
  uint8_t layer;
  uint8_t error_type;
  uint8_t error_code;
  friend constexpr bool operator==(const TerminateCode&, const TerminateCode&) = default;
};

namespace term_layer {
inline constexpr uint8_t kRdmap = 0x0;
inline constexpr uint8_t kDdp = 0x1;
inline constexpr uint8_t kLlp = 0x2;  // MPA
}  // namespace term_layer

namespace rdmap_etype {
inline constexpr uint8_t kLocalCatastrophic = 0x0;
inline constexpr uint8_t kRemoteProtection = 0x1;
inline constexpr uint8_t kRemoteOperation = 0x2;
}  // namespace rdmap_etype
namespace ddp_etype {
inline constexpr uint8_t kLocalCatastrophic = 0x0;
inline constexpr uint8_t kTaggedBuffer = 0x1;
inline constexpr uint8_t kUntaggedBuffer = 0x2;
inline constexpr uint8_t kReservedForLlp = 0x3;
}  // namespace ddp_etype
namespace llp_etype {
inline constexpr uint8_t kMpa = 0x0;
}  // namespace llp_etype

namespace term {
using L = TerminateCode;
// RDMAP (RFC 5040). A Local Catastrophic Error carries no specific code.
inline constexpr L kRdmapLocalCatastrophic{0x0, 0x0, 0x00};
inline constexpr L kRdmapInvalidStag{0x0, 0x1, 0x00};
inline constexpr L kRdmapBaseOrBounds{0x0, 0x1, 0x01};
inline constexpr L kRdmapAccessRights{0x0, 0x1, 0x02};
inline constexpr L kRdmapStagNotAssociated{0x0, 0x1, 0x03};  // with this RDMAP Stream
inline constexpr L kRdmapToWrap{0x0, 0x1, 0x04};
inline constexpr L kRdmapProtectionCannotInvalidate{0x0, 0x1, 0x09};
inline constexpr L kRdmapProtectionUnspecified{0x0, 0x1, 0xff};
inline constexpr L kRdmapInvalidVersion{0x0, 0x2, 0x05};
inline constexpr L kRdmapUnexpectedOpcode{0x0, 0x2, 0x06};
inline constexpr L kRdmapCatastrophicStream{0x0, 0x2, 0x07};  // localized to the RDMAP Stream
inline constexpr L kRdmapCatastrophicGlobal{0x0, 0x2, 0x08};
inline constexpr L kRdmapOperationCannotInvalidate{0x0, 0x2, 0x09};
inline constexpr L kRdmapOperationUnspecified{0x0, 0x2, 0xff};
// DDP (RFC 5041)
inline constexpr L kDdpLocalCatastrophic{0x1, 0x0, 0x00};
inline constexpr L kDdpTaggedInvalidStag{0x1, 0x1, 0x00};
inline constexpr L kDdpTaggedBaseOrBounds{0x1, 0x1, 0x01};
inline constexpr L kDdpTaggedStagNotAssociated{0x1, 0x1, 0x02};  // with this DDP Stream
inline constexpr L kDdpTaggedToWrap{0x1, 0x1, 0x03};
inline constexpr L kDdpTaggedInvalidVersion{0x1, 0x1, 0x04};
inline constexpr L kDdpUntaggedInvalidQn{0x1, 0x2, 0x01};
inline constexpr L kDdpUntaggedNoBuffer{0x1, 0x2, 0x02};     // Invalid MSN - no buffer available
inline constexpr L kDdpUntaggedMsnRange{0x1, 0x2, 0x03};     // Invalid MSN - MSN range not valid
inline constexpr L kDdpUntaggedInvalidMo{0x1, 0x2, 0x04};
inline constexpr L kDdpUntaggedMessageTooLong{0x1, 0x2, 0x05};  // for the available buffer
inline constexpr L kDdpUntaggedInvalidVersion{0x1, 0x2, 0x06};
// LLP = MPA (RFC 5044; 0x05-0x07 from RFC 6581)
inline constexpr L kMpaConnectionLost{0x2, 0x0, 0x01};  // TCP connection closed, terminated or lost
inline constexpr L kMpaCrcError{0x2, 0x0, 0x02};
inline constexpr L kMpaMarkerMismatch{0x2, 0x0, 0x03};  // Marker and ULPDU Length field mismatch
inline constexpr L kMpaInvalidFrame{0x2, 0x0, 0x04};    // invalid MPA Request or Reply frame
inline constexpr L kMpaLocalCatastrophic{0x2, 0x0, 0x05};
inline constexpr L kMpaInsufficientIrd{0x2, 0x0, 0x06};
inline constexpr L kMpaNoMatchingRtr{0x2, 0x0, 0x07};
}  // namespace term

// Every named code, for describe() and the tests.
struct NamedTerminateCode {
  TerminateCode code;
  std::string_view layer, error_type, error_code;
};
std::span<const NamedTerminateCode> terminate_codes();
// "RDMAP / Remote Protection Error / Invalid STag"; "unknown" parts for unnamed values.
std::string describe(const TerminateCode& code);

// ---- Decoded Read Request and Terminate, shared by transmit and receive ----

struct ReadRequest {
  uint32_t data_sink_stag = 0;
  uint64_t data_sink_to = 0;
  uint32_t rdma_read_message_size = 0;
  uint32_t data_source_stag = 0;
  uint64_t data_source_to = 0;
  friend bool operator==(const ReadRequest&, const ReadRequest&) = default;
};
RdmaReadRequestHeader encode_read_request(const ReadRequest& r);
ReadRequest decode_read_request(const RdmaReadRequestHeader& h);

// A Terminate message's content (RFC 5040 Terminate header), sent or received.
struct TerminateInfo {
  TerminateCode code{};
  bool m = false;  // HdrCt M: ddp_segment_length is valid (the field is sent with D)
  bool d = false;  // HdrCt D: ddp_header holds the terminated segment's DDP header
  bool r = false;  // HdrCt R: rdma_header holds the terminated Read Request header
  uint16_t ddp_segment_length = 0;
  uint8_t ddp_header_length = 0;  // 0, 14 (tagged) or 18 (untagged)
  uint8_t ddp_header[sizeof(DdpUntaggedHeader)] = {};
  bool rdma_header_present = false;  // received: R set and the 28 bytes were there
  uint8_t rdma_header[sizeof(RdmaReadRequestHeader)] = {};
  // Received: the control word was in siw's bit order (see decode_terminate).
  bool siw_bit_order = false;
};
// The Terminate for Read Request `r` (MSN `msn`) that cannot be served, with its DDP and
// RDMAP headers as a parser copies them for one refused on arrival (RFC 5040), so that the
// peer fails that read.
TerminateInfo read_request_terminate(const TerminateCode& code, uint32_t msn, const ReadRequest& r);
// The Terminate body (Terminate Control and the copied headers) into `out`; returns its size.
size_t encode_terminate(const TerminateInfo& t, uint8_t (&out)[kTerminateMaxBody]);
// Reads a Terminate body, tolerating what peers send: flags without the bytes they announce
// (siw sets R on a Terminate for a Send), and the control word of Linux siw on little-endian
// hosts, whose bit fields come out swapped (bytes `10 00 07 00` for RDMAP / Remote
// Protection / Invalid STag with M, D, R): a word whose Reserved bits are set and HdrCt bits
// clear, and that reads cleanly the other way, is decoded the siw way (siw_bit_order).
TerminateInfo decode_terminate(std::span<const uint8_t> body);

// ---- CRC32c (RFC 3385, as iSCSI and MPA use it), computed by ISA-L ----

class Crc32c {
 public:
  void update(const uint8_t* data, size_t length);
  void update(std::span<const uint8_t> bytes) { update(bytes.data(), bytes.size()); }
  uint32_t value() const { return ~state_; }
  // The 4 bytes of the MPA CRC field: least significant byte first, as iSCSI sends its
  // digest (RFC 3720 B.4) and as Linux siw puts it on the wire.
  void store(uint8_t out[4]) const;

 private:
  uint32_t state_ = ~0u;
};
uint32_t crc32c(std::span<const uint8_t> bytes);
uint32_t load_mpa_crc(const uint8_t in[4]);

}  // namespace softndk::fabric::tcp
