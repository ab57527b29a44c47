// Fuzz target: MPA connection setup (RFC 5044 §7.1, RFC 6581) as TcpConnection runs it.
//
// Input: [mode][limits][chunk a][chunk b] then the bytes the peer sent (fuzz_inputs.hpp).
// The passive side parses a Request, the active side a Reply or Reject, in the input's
// chunking and whole; then the side does what TcpConnection does with the frame: the
// passive side answers with a Reply (accept) and a Reject, the active side checks the Reply
// against the Request it sent and negotiates, or answers with a Terminate. What the
// connection would send is parsed back as the peer would. The bytes after a frame the
// active side accepted are the peer's first FPDUs: they go to an FpduParser.
//
// Invariants: the result does not depend on the chunking; the parser never takes a byte
// past its frame; a frame it reports is consistent (and encodes back to one that parses the
// same); every answer is encodable, parses back, and an accepted Request's Reply passes the
// initiator's own check.

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "fabric/tcp/iwarp_mpa.hpp"
#include "fabric/tcp/iwarp_rx.hpp"
#include "fabric/tcp/iwarp_tx.hpp"
#include "fuzz_common.hpp"
#include "fuzz_inputs.hpp"
#include "fuzz_wire.hpp"

namespace {

using namespace softndk::fabric::tcp;
namespace in = fuzz::mpa_input;

using Bytes = std::vector<uint8_t>;

bool same_frame(const MpaFrame& a, const MpaFrame& b) {
  return a.type == b.type && a.revision == b.revision && a.markers == b.markers &&
         a.crc == b.crc && a.reject == b.reject && a.enhanced == b.enhanced &&
         (!a.enhanced || a.v2 == b.v2) && a.private_data.size() == b.private_data.size() &&
         std::equal(a.private_data.begin(), a.private_data.end(), b.private_data.begin());
}

Bytes encode(const MpaFrame& f) {
  Bytes out(mpa_frame_size(f));
  FUZZ_CHECK(!out.empty());
  FUZZ_CHECK(encode_mpa_frame(f, out) == out.size());
  return out;
}

// Parses a frame we built, as the peer (a SoftNDK) would: it must come back whole and equal.
void expect_parses_back(const MpaFrame& f) {
  const Bytes wire = encode(f);
  MpaFrameParser p(f.type);
  FUZZ_CHECK(p.feed(wire) == wire.size());
  FUZZ_CHECK(p.state() == MpaFrameParser::State::kComplete || (f.markers && !f.reject));
  FUZZ_CHECK(same_frame(p.frame(), f));
}

// The Terminate the connection sends on a failed negotiation: encodable, and read back.
void expect_terminate_parses_back(const TerminateCode& code, bool crc) {
  TerminateInfo t;
  t.code = code;
  const TerminateInfo got = fuzz::terminate_round_trip(t, crc);
  FUZZ_CHECK(!got.m && !got.d && !got.r);
}

// The peer's first FPDUs, after the Reply (TcpConnection keeps them until
// NdkCompleteConnect, then feeds its parser): the parser keeps to its contract.
void feed_fpdus(std::span<const uint8_t> bytes, bool crc) {
  struct : FpduSink {
    bool open = false;
    uint32_t delivered = 0;
    Verdict begin_segment(const Segment&) override {
      FUZZ_CHECK(!open);
      open = true;
      delivered = 0;
      return kAccept;
    }
    Verdict payload(const Segment& s, uint32_t offset, std::span<const uint8_t> b) override {
      FUZZ_CHECK(open && offset == delivered && !b.empty());
      delivered += static_cast<uint32_t>(b.size());
      FUZZ_CHECK(delivered <= s.payload_length);
      return kAccept;
    }
    Verdict end_segment(const Segment&) override {
      FUZZ_CHECK(open);
      open = false;
      return kAccept;
    }
  } sink;
  FpduParser p({.crc = crc});
  const size_t used = p.feed(bytes, sink);
  FUZZ_CHECK(used == bytes.size() || p.failed());
}

struct Parsed {
  MpaFrameParser::State state;
  MpaFrameParser::Problem problem;
  size_t consumed;
};

// The frame's own length as its header says: where the FPDU stream starts.
size_t frame_length(std::span<const uint8_t> stream) {
  if (stream.size() < sizeof(MpaFrameHeader)) return SIZE_MAX;
  return sizeof(MpaFrameHeader) + (size_t{stream[18]} << 8 | stream[19]);
}

void check_parse(const MpaFrameParser& p, const Parsed& r, std::span<const uint8_t> stream,
                 MpaFrameType expected, size_t max_pd) {
  using State = MpaFrameParser::State;
  FUZZ_CHECK(r.consumed <= stream.size());
  const size_t length = frame_length(stream);
  switch (r.state) {
    case State::kHeader:
    case State::kPrivateData:
      // Waiting for more: it took everything, and the frame is not all there.
      FUZZ_CHECK(r.consumed == stream.size());
      FUZZ_CHECK(length == SIZE_MAX || stream.size() < length);
      FUZZ_CHECK((r.state == State::kHeader) == (length == SIZE_MAX));
      return;
    case State::kMalformed:
      // Stopped at the header, or (a Reply without its RFC 6581 header) at the frame's end.
      FUZZ_CHECK(r.consumed == sizeof(MpaFrameHeader) ||
                 (r.problem == MpaFrameParser::Problem::kMissingEnhancedHeader && r.consumed == length));
      FUZZ_CHECK(r.problem != MpaFrameParser::Problem::kNone);
      return;
    case State::kComplete:
    case State::kRefused:
      break;
  }
  // A frame: exactly its bytes were taken, and what it says matches them.
  FUZZ_CHECK(r.consumed == length);
  FUZZ_CHECK(length - sizeof(MpaFrameHeader) <= max_pd);
  FUZZ_CHECK((r.state == State::kComplete) == (r.problem == MpaFrameParser::Problem::kNone));
  const MpaFrame& f = p.frame();
  FUZZ_CHECK(f.type == expected);
  FUZZ_CHECK(f.revision == kMpaRevision1 || f.revision == kMpaRevision2);
  FUZZ_CHECK(f.revision == stream[17]);
  FUZZ_CHECK(!f.enhanced || f.revision == kMpaRevision2);
  FUZZ_CHECK(!f.reject || expected == MpaFrameType::kReply);
  FUZZ_CHECK(f.markers == ((stream[16] & mpa_flag::kMarkers) != 0));
  FUZZ_CHECK(f.crc == ((stream[16] & mpa_flag::kCrc) != 0));
  FUZZ_CHECK(f.reject == ((stream[16] & mpa_flag::kReject) != 0));
  FUZZ_CHECK(f.v2.ird <= mpa_v2::kIrdOrdMask && f.v2.ord <= mpa_v2::kIrdOrdMask);
  // The private data is the frame's last bytes (after the RFC 6581 header when enhanced).
  // (A Request refused for a missing header keeps all of it as private data.)
  const size_t pd = length - sizeof(MpaFrameHeader);
  const bool missing_header = r.problem == MpaFrameParser::Problem::kMissingEnhancedHeader;
  FUZZ_CHECK(!missing_header || (f.enhanced && pd < sizeof(MpaV2Header)));
  FUZZ_CHECK(f.private_data.size() == pd - (f.enhanced && !missing_header ? sizeof(MpaV2Header) : 0));
  FUZZ_CHECK(std::equal(f.private_data.begin(), f.private_data.end(),
                        stream.begin() + static_cast<ptrdiff_t>(length - f.private_data.size())));
  if (r.state == State::kComplete) FUZZ_CHECK(!f.markers || f.reject);
  // It encodes back into a frame that parses the same (the Res bits but the enhanced one
  // are not kept).
  if (!missing_header) expect_parses_back(f);
}

// The passive side, as TcpConnection::on_mpa_frame and accept/reject answer a Request.
void passive(const MpaFrameParser& p, uint8_t mode, uint8_t limits, std::span<const uint8_t> answer_pd) {
  const bool want_crc = mode & in::kWantCrc;
  const MpaFrame& request = p.frame();
  if (p.state() == MpaFrameParser::State::kRefused) {  // answered with a Reject, then closed
    const MpaFrame reject = mpa_reject_for(request, {});
    FUZZ_CHECK(reject.reject && reject.type == MpaFrameType::kReply);
    expect_parses_back(reject);
    return;
  }
  if (p.state() != MpaFrameParser::State::kComplete) return;  // closed
  // NdkReject: a Reject with the consumer's private data.
  const MpaFrame reject = mpa_reject_for(request, answer_pd);
  FUZZ_CHECK(reject.revision == request.revision);
  expect_parses_back(reject);
  // NdkAccept, with the limits TcpConnection::accept computes.
  const uint32_t inbound = in::kLimits[limits & 3], outbound = in::kLimits[(limits >> in::kOrdShift) & 3];
  const uint16_t ird = static_cast<uint16_t>(std::min<uint32_t>(inbound, 0x3fff));
  const uint32_t lowered = request.enhanced ? std::min<uint32_t>(outbound, request.v2.ird) : outbound;
  const uint16_t ord = static_cast<uint16_t>(std::min<uint32_t>(lowered, 0x3fff));
  const MpaFrame reply = mpa_reply_for(request, want_crc, ird, ord, answer_pd);
  FUZZ_CHECK(!reply.reject && reply.revision == request.revision);
  FUZZ_CHECK(reply.crc == mpa_crc_negotiated(request, reply) && reply.crc == (request.crc || want_crc));
  FUZZ_CHECK(reply.enhanced == request.enhanced);
  expect_parses_back(reply);
  // The initiator (a SoftNDK) accepts our Reply to its Request, but when it asked for
  // peer-to-peer with only a zero-length Send as RTR: we never choose that one (as siw).
  const bool only_send_rtr = request.enhanced && request.v2.peer_to_peer &&
                             (request.v2.rtr & (rtr::kZeroLengthWrite | rtr::kZeroLengthRead)) == 0;
  const std::optional<TerminateCode> verdict = mpa_check_reply(request, reply);
  FUZZ_CHECK(!verdict || (only_send_rtr && *verdict == term::kMpaNoMatchingRtr));
  if (reply.enhanced) {
    FUZZ_CHECK(reply.v2.ord <= request.v2.ird);
    FUZZ_CHECK(reply.v2.peer_to_peer == request.v2.peer_to_peer);
    // The RTR TcpConnection then waits for: exactly one type, Write or Read.
    if (reply.v2.peer_to_peer)
      FUZZ_CHECK(reply.v2.rtr == rtr::kZeroLengthWrite || reply.v2.rtr == rtr::kZeroLengthRead);
  }
}

// The Request TcpConnection::request sends with these settings.
MpaFrame our_request(uint8_t mode, uint8_t limits) {
  MpaFrame f;
  f.type = MpaFrameType::kRequest;
  f.revision = (mode & in::kRevision1) ? kMpaRevision1 : kMpaRevision2;
  f.enhanced = f.revision == kMpaRevision2;
  f.crc = mode & in::kWantCrc;
  f.v2.ird = static_cast<uint16_t>(std::min<uint32_t>(in::kLimits[limits & 3], 0x3fff));
  f.v2.ord = static_cast<uint16_t>(std::min<uint32_t>(in::kLimits[(limits >> in::kOrdShift) & 3], 0x3fff));
  f.v2.peer_to_peer = f.enhanced && !(mode & in::kNoPeerToPeer);
  f.v2.rtr = f.v2.peer_to_peer ? rtr::kZeroLengthWrite | rtr::kZeroLengthRead : 0;
  return f;
}

// The active side, as TcpConnection::on_mpa_frame takes a Reply. Returns whether the
// connection goes on (then the bytes after the Reply are FPDUs), and its CRC setting.
bool active(const MpaFrameParser& p, const MpaFrame& request, bool& crc) {
  if (p.state() != MpaFrameParser::State::kComplete) return false;  // refused: closed
  const MpaFrame& reply = p.frame();
  if (reply.reject) return false;  // the consumer learns of the Reject
  crc = mpa_crc_negotiated(request, reply);
  if (const std::optional<TerminateCode> bad = mpa_check_reply(request, reply)) {
    FUZZ_CHECK(bad->layer == term_layer::kLlp);
    expect_terminate_parses_back(*bad, crc);
    return false;
  }
  // Accepted: what the connection then relies on.
  FUZZ_CHECK(!reply.markers && reply.revision <= request.revision);
  if (request.enhanced) {
    FUZZ_CHECK(reply.enhanced && reply.v2.ord <= request.v2.ird);
    if (request.v2.peer_to_peer) {
      // NdkCompleteConnect sends exactly one RTR, of a type we offered.
      const uint8_t rtr = reply.v2.rtr;
      FUZZ_CHECK(rtr == rtr::kZeroLengthWrite || rtr == rtr::kZeroLengthRead);
      FUZZ_CHECK((rtr & request.v2.rtr) != 0);
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input input(data, size);
  const uint8_t mode = input.byte(), limits = input.byte();
  const fuzz::Chunking chunking = fuzz::read_chunking(input);
  const std::span<const uint8_t> stream = input.rest();
  const bool is_active = mode & in::kActive;
  const MpaFrameType expected = is_active ? MpaFrameType::kReply : MpaFrameType::kRequest;
  const size_t max_pd = in::kMaxPrivateData[(mode >> in::kMaxPdShift) & 3];

  MpaFrameParser whole(expected, max_pd), pieces(expected, max_pd);
  const size_t whole_consumed = whole.feed(stream);
  const Parsed w{whole.state(), whole.problem(), whole_consumed};
  const size_t consumed = chunking.run(stream, [&](std::span<const uint8_t> piece) {
    const size_t n = pieces.feed(piece);
    FUZZ_CHECK(n == piece.size() || pieces.finished());
    return n;
  });
  const Parsed c{pieces.state(), pieces.problem(), consumed};
  // The chunking changes nothing.
  FUZZ_CHECK(w.state == c.state && w.problem == c.problem && w.consumed == c.consumed);
  if (whole.finished()) FUZZ_CHECK(same_frame(whole.frame(), pieces.frame()));
  // A finished parser takes nothing more.
  if (pieces.finished()) FUZZ_CHECK(pieces.feed(stream) == 0);
  check_parse(pieces, c, stream, expected, max_pd);

  // The consumer's private data for our answer: bytes of the input's own stream.
  const size_t answer_length = std::min<size_t>(static_cast<size_t>(limits >> in::kAnswerPdShift) * 16, stream.size());
  const std::span<const uint8_t> answer_pd = stream.first(answer_length);
  if (fuzz::verbose())
    std::fprintf(stderr, "  state %d, problem %d, %zu of %zu bytes\n", static_cast<int>(pieces.state()),
                 static_cast<int>(pieces.problem()), consumed, stream.size());
  if (!is_active) {
    passive(pieces, mode, limits, answer_pd);
    return 0;  // FPDUs before our Reply are dropped (nothing is expected then)
  }
  const MpaFrame request = our_request(mode, limits);
  FUZZ_CHECK(mpa_frame_size(request) != 0);
  bool crc = false;
  const bool accepted = active(pieces, request, crc);
  if (fuzz::verbose()) std::fprintf(stderr, "  %s\n", accepted ? "accepted" : "not accepted");
  if (accepted) feed_fpdus(stream.subspan(consumed), crc);
  return 0;
}
