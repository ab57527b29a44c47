// MPA connection setup (RFC 5044 §7.1 with RFC 6581): building Request, Reply and Reject
// frames, a resumable parser for them, and the negotiation rules SoftNDK follows so that
// Linux siw accepts it in both roles (shared/spec/NOTES.md):
// - revision 2, the enhanced bit (mpa_flag::kEnhanced) and the RFC 6581 header lead the
//   Private Data; revision 1 peers get revision 1 frames without that header;
// - markers are never used: a Request asking for them is answered with a Reject, a Reply
//   asking for them ends the connection;
// - CRC is used when either side's frame sets C.
// Linux iw_cm carries at most 256 bytes of Private Data (the RFC 6581 header included):
// siw refuses a frame with more, although RFC 5044 allows 512.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "fabric/tcp/iwarp_wire.hpp"

namespace softndk::fabric::tcp {

enum class MpaFrameType : uint8_t { kRequest, kReply };  // a Reject is a Reply with R set

// RTR message types (RFC 6581 peer-to-peer mode), as bits: in a Request, those the
// initiator can send; in a Reply, the one the responder chose.
namespace rtr {
inline constexpr uint8_t kZeroLengthSend = 0x1;
inline constexpr uint8_t kZeroLengthWrite = 0x2;
inline constexpr uint8_t kZeroLengthRead = 0x4;
}  // namespace rtr

// The content of the RFC 6581 header.
struct MpaV2Params {
  uint16_t ird = 0;  // 14 bits: inbound RDMA Read Requests the sender can take
  uint16_t ord = 0;  // 14 bits: outbound RDMA Read Requests the sender will issue
  bool peer_to_peer = false;
  uint8_t rtr = 0;   // rtr:: bits
  friend bool operator==(const MpaV2Params&, const MpaV2Params&) = default;
};

struct MpaFrame {
  MpaFrameType type = MpaFrameType::kRequest;
  uint8_t revision = kMpaRevision2;
  bool markers = false;
  bool crc = false;
  bool reject = false;    // Reply only
  bool enhanced = true;   // revision 2 only: the enhanced bit and the RFC 6581 header
  MpaV2Params v2;         // when enhanced
  std::span<const uint8_t> private_data;  // the consumer's, after the RFC 6581 header
};

MpaV2Header encode_v2(const MpaV2Params& p);
MpaV2Params decode_v2(const MpaV2Header& h);

// The frame's size on the wire; 0 when it cannot be encoded (revision not 1 or 2, enhanced
// with revision 1, R in a Request, IRD/ORD above 14 bits, Private Data too long).
size_t mpa_frame_size(const MpaFrame& frame);
// Writes the frame into `out`; returns its size, or 0 (nothing written) when it cannot be
// encoded or `out` is too small.
size_t encode_mpa_frame(const MpaFrame& frame, std::span<uint8_t> out);

// Reads one Request, or one Reply/Reject, from a byte stream fed in any chunking, and never
// reads past the frame: the bytes after it belong to the FPDU stream.
class MpaFrameParser {
 public:
  enum class State : uint8_t {
    kHeader,       // reading the 20-byte header
    kPrivateData,  // reading PD_Length bytes
    kComplete,     // frame() is a usable frame
    kRefused,      // frame() is well formed but cannot be accepted (problem() says why): the
                   // responder answers a refused Request with a Reject; an initiator closes
    kMalformed,    // not an MPA frame we can read (problem()): close the connection
  };
  enum class Problem : uint8_t {
    kNone,
    kBadKey,                 // not the Key of the expected frame type
    kBadRevision,            // revision 0 or above 2: we cannot interoperate (RFC 5044 §7.1)
    kPrivateDataTooLong,     // PD_Length above the limit
    kRejectInRequest,        // R set in a Request
    kMarkers,                // M set: markers are not supported (as siw)
    kMissingEnhancedHeader,  // enhanced bit with fewer than 4 bytes of Private Data
  };

  explicit MpaFrameParser(MpaFrameType expected, size_t max_private_data = kMpaMaxPrivateData);
  MpaFrameParser(const MpaFrameParser&) = delete;  // frame() points into it
  MpaFrameParser& operator=(const MpaFrameParser&) = delete;

  // Consumes bytes up to the end of the frame; returns how many it took.
  size_t feed(std::span<const uint8_t> bytes);

  State state() const { return state_; }
  Problem problem() const { return problem_; }
  bool finished() const { return state_ >= State::kComplete; }
  // Complete or refused: the frame; its private_data points into this parser.
  const MpaFrame& frame() const { return frame_; }
  // What a Terminate for a malformed frame carries (RFC 5044 error semantics).
  static constexpr TerminateCode kTerminateCode = term::kMpaInvalidFrame;

 private:
  size_t on_header(std::span<const uint8_t> bytes);
  size_t on_private_data(std::span<const uint8_t> bytes);
  void finish();
  void fail(State state, Problem problem) { state_ = state, problem_ = problem; }

  const MpaFrameType expected_;
  const size_t max_private_data_;
  State state_ = State::kHeader;
  Problem problem_ = Problem::kNone;
  uint8_t header_[sizeof(MpaFrameHeader)] = {};
  size_t header_have_ = 0;
  uint8_t pd_[kMpaMaxPrivateData] = {};
  size_t pd_length_ = 0;
  size_t pd_have_ = 0;
  MpaFrame frame_;
};

// ---- Negotiation ----

// CRC is used in both directions when either frame sets C: a peer that asks for CRC must
// get it (RFC 5044 §7.1), and a responder may ask for it in its Reply.
inline bool mpa_crc_negotiated(const MpaFrame& request, const MpaFrame& reply) {
  return request.crc || reply.crc;
}
// The RTR a responder chooses for a peer-to-peer Request, as siw does: zero-length Write
// if offered, else zero-length Read if offered, else zero-length Write (never a Send, which
// would need a posted receive). 0 when the Request is not peer-to-peer.
uint8_t mpa_select_rtr(const MpaV2Params& request);
// The Reply a responder sends to an accepted `request`: the same revision (1 or 2), the
// enhanced header when the Request had one (IRD/ORD: the responder's, and the RTR choice),
// C when either side wants CRC.
MpaFrame mpa_reply_for(const MpaFrame& request, bool want_crc, uint16_t ird, uint16_t ord,
                       std::span<const uint8_t> private_data);
// The Reject answering `request` (a refused one too): same revision and enhanced header.
MpaFrame mpa_reject_for(const MpaFrame& request, std::span<const uint8_t> private_data);
// Initiator: whether a (non-reject) Reply answers the Request it sent. nullopt when usable;
// else the Terminate code that ends the connection:
// - markers asked, or an enhanced Request answered without revision 2 and the enhanced
//   bit (siw's rule), or a higher revision: kMpaInvalidFrame;
// - the responder's ORD above our IRD: kMpaInsufficientIrd (our ORD above its IRD is not
//   an error: lower our ORD to its IRD);
// - peer-to-peer asked and the Reply's RTR is not exactly one of ours: kMpaNoMatchingRtr.
std::optional<TerminateCode> mpa_check_reply(const MpaFrame& request, const MpaFrame& reply);

}  // namespace softndk::fabric::tcp
