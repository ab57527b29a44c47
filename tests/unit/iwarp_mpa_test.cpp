// Unit tests for MPA connection setup: frames byte for byte, the resumable parser in every
// chunking, revision 1 peers, refusals, and the negotiation rules siw expects.

#include "fabric/tcp/iwarp_mpa.hpp"

#include <gtest/gtest.h>

#include <string>

#include "iwarp_test_util.hpp"

namespace {

using namespace softndk::fabric::tcp;
using iwarp_test::Bytes;

Bytes text(std::string_view s) { return Bytes(s.begin(), s.end()); }

Bytes encode(const MpaFrame& f) {
  Bytes out(mpa_frame_size(f));
  EXPECT_NE(out.size(), 0u);
  EXPECT_EQ(encode_mpa_frame(f, out), out.size());
  return out;
}

MpaFrame siw_request(std::span<const uint8_t> pd = {}) {
  MpaFrame f;
  f.type = MpaFrameType::kRequest;
  f.v2 = {4, 4, false, 0};
  f.private_data = pd;
  return f;
}

// Parses `bytes` fed in pieces of `piece` bytes; returns the bytes consumed.
size_t parse(MpaFrameParser& p, const Bytes& bytes, size_t piece) {
  size_t used = 0;
  while (used < bytes.size() && !p.finished()) {
    const size_t k = std::min(piece, bytes.size() - used);
    used += p.feed(std::span(bytes).subspan(used, k));
  }
  return used;
}

TEST(IwarpMpa, RequestBytes) {
  const Bytes pd = text("hi");
  const Bytes wire = encode(siw_request(pd));
  Bytes expect = text("MPA ID Req Frame");
  // flags: only the enhanced bit (M=C=R=0); Rev 2; PD_Length 6; IRD 4, ORD 4; "hi".
  expect.insert(expect.end(), {0x10, 0x02, 0x00, 0x06, 0x00, 0x04, 0x00, 0x04, 'h', 'i'});
  EXPECT_EQ(wire, expect);
}

TEST(IwarpMpa, ReplyAndRejectBytes) {
  MpaFrame reply = mpa_reply_for(siw_request(), /*want_crc=*/true, 4, 4, {});
  Bytes expect = text("MPA ID Rep Frame");
  expect.insert(expect.end(), {0x50, 0x02, 0x00, 0x04, 0x00, 0x04, 0x00, 0x04});
  EXPECT_EQ(encode(reply), expect);

  MpaFrame v1;
  v1.revision = 1;
  v1.enhanced = false;
  const Bytes pd = text("no");
  MpaFrame reject = mpa_reject_for(v1, pd);
  expect = text("MPA ID Rep Frame");
  expect.insert(expect.end(), {0x20, 0x01, 0x00, 0x02, 'n', 'o'});
  EXPECT_EQ(encode(reject), expect);

  // Peer-to-peer with every RTR offered: IRD word 0xC000|ird, ORD word 0xC000|ord.
  MpaFrame p2p = siw_request();
  p2p.v2 = {1, 2, true, rtr::kZeroLengthSend | rtr::kZeroLengthWrite | rtr::kZeroLengthRead};
  const Bytes w = encode(p2p);
  EXPECT_EQ(Bytes(w.begin() + 20, w.end()), (Bytes{0xc0, 0x01, 0xc0, 0x02}));
}

TEST(IwarpMpa, EncodeRefusesWhatCannotBeSent) {
  MpaFrame f = siw_request();
  f.revision = 1;  // enhanced needs revision 2
  EXPECT_EQ(mpa_frame_size(f), 0u);
  f = siw_request();
  f.revision = 3;
  EXPECT_EQ(mpa_frame_size(f), 0u);
  f = siw_request();
  f.reject = true;  // R in a Request
  EXPECT_EQ(mpa_frame_size(f), 0u);
  f = siw_request();
  f.v2.ird = 0x4000;  // above 14 bits
  EXPECT_EQ(mpa_frame_size(f), 0u);
  const Bytes big(509, 0);
  f = siw_request(big);  // 4 + 509 > 512
  EXPECT_EQ(mpa_frame_size(f), 0u);
  const Bytes max(508, 0);
  f = siw_request(max);
  EXPECT_EQ(mpa_frame_size(f), 532u);
  Bytes small(531);
  EXPECT_EQ(encode_mpa_frame(f, small), 0u);
}

TEST(IwarpMpa, ParsesInEveryChunking) {
  const Bytes pd = text("consumer private data");
  MpaFrame sent = siw_request(pd);
  sent.crc = true;
  sent.v2 = {16, 8, true, rtr::kZeroLengthWrite};
  Bytes wire = encode(sent);
  const size_t frame_size = wire.size();
  wire.insert(wire.end(), {0xde, 0xad});  // the first bytes of the FPDU stream
  for (size_t piece : {size_t{1}, size_t{2}, size_t{7}, size_t{20}, size_t{21}, wire.size()}) {
    MpaFrameParser p(MpaFrameType::kRequest);
    EXPECT_EQ(parse(p, wire, piece), frame_size) << piece;
    ASSERT_EQ(p.state(), MpaFrameParser::State::kComplete) << piece;
    const MpaFrame& f = p.frame();
    EXPECT_EQ(f.revision, 2);
    EXPECT_TRUE(f.enhanced && f.crc && !f.markers && !f.reject);
    EXPECT_EQ(f.v2, sent.v2);
    EXPECT_EQ(Bytes(f.private_data.begin(), f.private_data.end()), pd);
    // Nothing more is taken once finished.
    EXPECT_EQ(p.feed(std::span(wire).subspan(frame_size)), 0u);
  }
}

TEST(IwarpMpa, EmptyPrivateData) {
  MpaFrame f;
  f.type = MpaFrameType::kReply;
  f.revision = 1;
  f.enhanced = false;
  const Bytes wire = encode(f);
  ASSERT_EQ(wire.size(), 20u);
  MpaFrameParser p(MpaFrameType::kReply);
  EXPECT_EQ(p.feed(wire), 20u);
  EXPECT_EQ(p.state(), MpaFrameParser::State::kComplete);
  EXPECT_TRUE(p.frame().private_data.empty());
}

TEST(IwarpMpa, RevisionOnePeer) {
  // A revision 1 Request: no RFC 6581 header, even with the 0x10 bit (Res in revision 1).
  Bytes wire = text("MPA ID Req Frame");
  wire.insert(wire.end(), {0x10, 0x01, 0x00, 0x03, 'a', 'b', 'c'});
  MpaFrameParser p(MpaFrameType::kRequest);
  EXPECT_EQ(p.feed(wire), wire.size());
  ASSERT_EQ(p.state(), MpaFrameParser::State::kComplete);
  EXPECT_EQ(p.frame().revision, 1);
  EXPECT_FALSE(p.frame().enhanced);
  EXPECT_EQ(p.frame().private_data.size(), 3u);
  // The responder answers in revision 1, without the header.
  const MpaFrame reply = mpa_reply_for(p.frame(), false, 4, 4, {});
  EXPECT_EQ(reply.revision, 1);
  EXPECT_FALSE(reply.enhanced);
  EXPECT_EQ(mpa_check_reply(p.frame(), reply), std::nullopt);
  // Revision 2 without the enhanced bit: plain private data (as siw reads it).
  wire[16] = 0x00;
  wire[17] = 0x02;
  MpaFrameParser p2(MpaFrameType::kRequest);
  p2.feed(wire);
  EXPECT_EQ(p2.state(), MpaFrameParser::State::kComplete);
  EXPECT_FALSE(p2.frame().enhanced);
}

TEST(IwarpMpa, MarkersAreRefused) {
  MpaFrame req = siw_request();
  req.markers = true;
  const Bytes wire = encode(req);
  MpaFrameParser p(MpaFrameType::kRequest);
  EXPECT_EQ(parse(p, wire, 3), wire.size());
  EXPECT_EQ(p.state(), MpaFrameParser::State::kRefused);
  EXPECT_EQ(p.problem(), MpaFrameParser::Problem::kMarkers);
  // The answer is a Reject in the Request's revision, enhanced as siw sends it.
  const MpaFrame reject = mpa_reject_for(p.frame(), {});
  const Bytes answer = encode(reject);
  MpaFrameParser q(MpaFrameType::kReply);
  q.feed(answer);
  ASSERT_EQ(q.state(), MpaFrameParser::State::kComplete);
  EXPECT_TRUE(q.frame().reject);
  EXPECT_EQ(answer[16], mpa_flag::kReject | mpa_flag::kEnhanced);

  MpaFrame rep = mpa_reply_for(siw_request(), false, 4, 4, {});
  rep.markers = true;
  MpaFrameParser r(MpaFrameType::kReply);
  r.feed(encode(rep));
  EXPECT_EQ(r.state(), MpaFrameParser::State::kRefused);
  EXPECT_EQ(mpa_check_reply(siw_request(), rep), term::kMpaInvalidFrame);
}

TEST(IwarpMpa, MalformedFrames) {
  struct Case {
    Bytes wire;
    MpaFrameType expect;
    MpaFrameParser::State state;
    MpaFrameParser::Problem problem;
    size_t consumed;
  };
  using S = MpaFrameParser::State;
  using P = MpaFrameParser::Problem;
  const Bytes request = encode(siw_request(text("x")));
  const Bytes reply = encode(mpa_reply_for(siw_request(), false, 4, 4, {}));
  auto with = [](Bytes b, size_t at, uint8_t v) {
    b[at] = v;
    return b;
  };
  const std::vector<Case> cases = {
      {request, MpaFrameType::kReply, S::kMalformed, P::kBadKey, 20},
      {reply, MpaFrameType::kRequest, S::kMalformed, P::kBadKey, 20},
      {with(request, 3, 'X'), MpaFrameType::kRequest, S::kMalformed, P::kBadKey, 20},
      {with(request, 17, 0), MpaFrameType::kRequest, S::kMalformed, P::kBadRevision, 20},
      {with(request, 17, 3), MpaFrameType::kRequest, S::kMalformed, P::kBadRevision, 20},
      {with(request, 18, 0x02), MpaFrameType::kRequest, S::kMalformed, P::kPrivateDataTooLong, 20},
      {with(request, 16, 0x30), MpaFrameType::kRequest, S::kMalformed, P::kRejectInRequest, 20},
      // Enhanced with 2 bytes of private data: a Request is refused (siw rejects it), a
      // Reply is malformed.
      {with(with(request, 19, 2), 18, 0), MpaFrameType::kRequest, S::kRefused,
       P::kMissingEnhancedHeader, 22},
      {with(with(reply, 19, 2), 18, 0), MpaFrameType::kReply, S::kMalformed,
       P::kMissingEnhancedHeader, 22},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    for (size_t piece : {size_t{1}, c.wire.size()}) {
      MpaFrameParser p(c.expect);
      EXPECT_EQ(parse(p, c.wire, piece), c.consumed) << i;
      EXPECT_EQ(p.state(), c.state) << i;
      EXPECT_EQ(p.problem(), c.problem) << i;
    }
  }
  // A Reject may omit the RFC 6581 header.
  MpaFrameParser p(MpaFrameType::kReply);
  Bytes reject = text("MPA ID Rep Frame");
  reject.insert(reject.end(), {0x30, 0x02, 0x00, 0x00});
  p.feed(reject);
  EXPECT_EQ(p.state(), MpaFrameParser::State::kComplete);
  EXPECT_TRUE(p.frame().reject);
  EXPECT_FALSE(p.frame().enhanced);
  // A lower private-data limit (siw's 256).
  MpaFrameParser small(MpaFrameType::kRequest, 256);
  const Bytes pd(300, 1);
  EXPECT_EQ(small.feed(encode(siw_request(pd))), 20u);
  EXPECT_EQ(small.problem(), MpaFrameParser::Problem::kPrivateDataTooLong);
}

TEST(IwarpMpa, Negotiation) {
  // siw's responder: Write if offered, else Read, else Write; nothing without peer-to-peer.
  EXPECT_EQ(mpa_select_rtr({4, 4, false, rtr::kZeroLengthWrite}), 0);
  EXPECT_EQ(mpa_select_rtr({4, 4, true, rtr::kZeroLengthRead | rtr::kZeroLengthWrite}),
            rtr::kZeroLengthWrite);
  EXPECT_EQ(mpa_select_rtr({4, 4, true, rtr::kZeroLengthRead}), rtr::kZeroLengthRead);
  EXPECT_EQ(mpa_select_rtr({4, 4, true, rtr::kZeroLengthSend}), rtr::kZeroLengthWrite);

  MpaFrame req = siw_request();
  req.v2 = {8, 2, true, rtr::kZeroLengthWrite | rtr::kZeroLengthRead};
  MpaFrame rep = mpa_reply_for(req, false, 2, 8, {});
  EXPECT_TRUE(rep.enhanced);
  EXPECT_FALSE(rep.crc);
  EXPECT_TRUE(rep.v2.peer_to_peer);
  EXPECT_EQ(rep.v2.rtr, rtr::kZeroLengthWrite);
  EXPECT_EQ(mpa_check_reply(req, rep), std::nullopt);
  EXPECT_FALSE(mpa_crc_negotiated(req, rep));
  req.crc = true;
  EXPECT_TRUE(mpa_reply_for(req, false, 2, 8, {}).crc);
  EXPECT_TRUE(mpa_crc_negotiated(req, rep));

  // The responder's ORD above our IRD.
  MpaFrame greedy = rep;
  greedy.v2.ord = 9;
  EXPECT_EQ(mpa_check_reply(req, greedy), term::kMpaInsufficientIrd);
  // RTR not among ours, or two of them, or none.
  MpaFrame odd = rep;
  odd.v2.rtr = rtr::kZeroLengthSend;
  EXPECT_EQ(mpa_check_reply(req, odd), term::kMpaNoMatchingRtr);
  odd.v2.rtr = rtr::kZeroLengthWrite | rtr::kZeroLengthRead;
  EXPECT_EQ(mpa_check_reply(req, odd), term::kMpaNoMatchingRtr);
  odd.v2.peer_to_peer = false;
  odd.v2.rtr = rtr::kZeroLengthWrite;
  EXPECT_EQ(mpa_check_reply(req, odd), term::kMpaNoMatchingRtr);
  // siw as initiator: an enhanced Request needs a revision 2 Reply with the enhanced bit.
  MpaFrame plain = rep;
  plain.enhanced = false;
  EXPECT_EQ(mpa_check_reply(req, plain), term::kMpaInvalidFrame);
  plain.revision = 1;
  EXPECT_EQ(mpa_check_reply(req, plain), term::kMpaInvalidFrame);
  // A revision 1 Request must not get a revision 2 Reply.
  MpaFrame v1 = req;
  v1.revision = 1;
  v1.enhanced = false;
  EXPECT_EQ(mpa_check_reply(v1, rep), term::kMpaInvalidFrame);
}

TEST(IwarpMpa, RoundTripThroughTheParser) {
  const Bytes pd = text("accept me");
  MpaFrame req = siw_request(pd);
  req.v2 = {0x3fff, 0, true, rtr::kZeroLengthRead};
  MpaFrameParser p(MpaFrameType::kRequest);
  p.feed(encode(req));
  ASSERT_EQ(p.state(), MpaFrameParser::State::kComplete);
  const MpaFrame reply = mpa_reply_for(p.frame(), false, 0, 0x3fff, pd);
  MpaFrameParser q(MpaFrameType::kReply);
  q.feed(encode(reply));
  ASSERT_EQ(q.state(), MpaFrameParser::State::kComplete);
  EXPECT_EQ(q.frame().v2, reply.v2);
  EXPECT_EQ(q.frame().v2.rtr, rtr::kZeroLengthRead);
  EXPECT_EQ(mpa_check_reply(req, q.frame()), std::nullopt);
  EXPECT_EQ(Bytes(q.frame().private_data.begin(), q.frame().private_data.end()), pd);
}

}  // namespace
