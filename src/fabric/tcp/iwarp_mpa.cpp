#include "fabric/tcp/iwarp_mpa.hpp"

#include <algorithm>

namespace softndk::fabric::tcp {

MpaV2Header encode_v2(const MpaV2Params& p) {
  uint16_t ird = p.ird & mpa_v2::kIrdOrdMask, ord = p.ord & mpa_v2::kIrdOrdMask;
  if (p.peer_to_peer) ird |= mpa_v2::kPeerToPeer;
  if (p.rtr & rtr::kZeroLengthSend) ird |= mpa_v2::kZeroLengthSendRtr;
  if (p.rtr & rtr::kZeroLengthWrite) ord |= mpa_v2::kZeroLengthWriteRtr;
  if (p.rtr & rtr::kZeroLengthRead) ord |= mpa_v2::kZeroLengthReadRtr;
  MpaV2Header h;
  h.ird.set(ird);
  h.ord.set(ord);
  return h;
}

MpaV2Params decode_v2(const MpaV2Header& h) {
  const uint16_t ird = h.ird.get(), ord = h.ord.get();
  MpaV2Params p;
  p.ird = ird & mpa_v2::kIrdOrdMask;
  p.ord = ord & mpa_v2::kIrdOrdMask;
  p.peer_to_peer = (ird & mpa_v2::kPeerToPeer) != 0;
  p.rtr = static_cast<uint8_t>(((ird & mpa_v2::kZeroLengthSendRtr) ? rtr::kZeroLengthSend : 0) |
                               ((ord & mpa_v2::kZeroLengthWriteRtr) ? rtr::kZeroLengthWrite : 0) |
                               ((ord & mpa_v2::kZeroLengthReadRtr) ? rtr::kZeroLengthRead : 0));
  return p;
}

size_t mpa_frame_size(const MpaFrame& f) {
  if (f.revision != kMpaRevision1 && f.revision != kMpaRevision2) return 0;
  if (f.enhanced && f.revision != kMpaRevision2) return 0;
  if (f.reject && f.type == MpaFrameType::kRequest) return 0;
  if (f.enhanced && (f.v2.ird > mpa_v2::kIrdOrdMask || f.v2.ord > mpa_v2::kIrdOrdMask)) return 0;
  const size_t pd = (f.enhanced ? sizeof(MpaV2Header) : 0) + f.private_data.size();
  if (pd > kMpaMaxPrivateData) return 0;
  return sizeof(MpaFrameHeader) + pd;
}

size_t encode_mpa_frame(const MpaFrame& f, std::span<uint8_t> out) {
  const size_t size = mpa_frame_size(f);
  if (size == 0 || out.size() < size) return 0;
  MpaFrameHeader h;
  const auto key = f.type == MpaFrameType::kRequest ? kMpaKeyRequest : kMpaKeyReply;
  std::copy(key.begin(), key.end(), h.key);
  h.flags = static_cast<uint8_t>((f.markers ? mpa_flag::kMarkers : 0) |
                                 (f.crc ? mpa_flag::kCrc : 0) |
                                 (f.reject ? mpa_flag::kReject : 0) |
                                 (f.enhanced ? mpa_flag::kEnhanced : 0));
  h.rev = f.revision;
  h.pd_length.set(static_cast<uint16_t>(size - sizeof(MpaFrameHeader)));
  uint8_t* p = out.data();
  store_layout(p, h);
  p += sizeof h;
  if (f.enhanced) {
    store_layout(p, encode_v2(f.v2));
    p += sizeof(MpaV2Header);
  }
  if (!f.private_data.empty()) std::memcpy(p, f.private_data.data(), f.private_data.size());
  return size;
}

MpaFrameParser::MpaFrameParser(MpaFrameType expected, size_t max_private_data)
    : expected_(expected), max_private_data_(std::min(max_private_data, kMpaMaxPrivateData)) {
  frame_.type = expected;
}

size_t MpaFrameParser::feed(std::span<const uint8_t> bytes) {
  size_t used = 0;
  while (used < bytes.size() || state_ == State::kPrivateData) {
    const auto rest = bytes.subspan(used);
    switch (state_) {
      case State::kHeader:
        used += on_header(rest);
        break;
      case State::kPrivateData:
        if (pd_have_ == pd_length_) {
          finish();
          break;
        }
        if (rest.empty()) return used;
        used += on_private_data(rest);
        break;
      default:
        return used;
    }
    if (finished()) break;
  }
  return used;
}

// kHeader: the Key, flags, Rev and PD_Length (RFC 5044 §7.1). Checked as soon as they are
// all here: PD_Length cannot be trusted past a bad Key or revision.
size_t MpaFrameParser::on_header(std::span<const uint8_t> bytes) {
  const size_t n = std::min(bytes.size(), sizeof header_ - header_have_);
  std::memcpy(header_ + header_have_, bytes.data(), n);
  header_have_ += n;
  if (header_have_ < sizeof header_) return n;

  const auto h = load_layout<MpaFrameHeader>(header_);
  const auto key = expected_ == MpaFrameType::kRequest ? kMpaKeyRequest : kMpaKeyReply;
  if (!std::equal(key.begin(), key.end(), h.key)) {
    fail(State::kMalformed, Problem::kBadKey);
    return n;
  }
  if (h.rev != kMpaRevision1 && h.rev != kMpaRevision2) {
    fail(State::kMalformed, Problem::kBadRevision);
    return n;
  }
  pd_length_ = h.pd_length.get();
  if (pd_length_ > max_private_data_) {
    fail(State::kMalformed, Problem::kPrivateDataTooLong);
    return n;
  }
  frame_.revision = h.rev;
  frame_.markers = (h.flags & mpa_flag::kMarkers) != 0;
  frame_.crc = (h.flags & mpa_flag::kCrc) != 0;
  frame_.reject = (h.flags & mpa_flag::kReject) != 0;
  // Only revision 2 gives the bit its siw meaning; in revision 1 it is Res, ignored.
  frame_.enhanced = h.rev == kMpaRevision2 && (h.flags & mpa_flag::kEnhanced) != 0;
  if (frame_.reject && expected_ == MpaFrameType::kRequest) {
    fail(State::kMalformed, Problem::kRejectInRequest);
    return n;
  }
  state_ = State::kPrivateData;
  return n;
}

// kPrivateData: PD_Length bytes, kept for frame().
size_t MpaFrameParser::on_private_data(std::span<const uint8_t> bytes) {
  const size_t n = std::min(bytes.size(), pd_length_ - pd_have_);
  std::memcpy(pd_ + pd_have_, bytes.data(), n);
  pd_have_ += n;
  return n;
}

void MpaFrameParser::finish() {
  std::span<const uint8_t> pd(pd_, pd_length_);
  if (frame_.enhanced) {
    if (pd.size() >= sizeof(MpaV2Header)) {
      frame_.v2 = decode_v2(load_layout<MpaV2Header>(pd.data()));
      pd = pd.subspan(sizeof(MpaV2Header));
    } else if (frame_.reject) {
      frame_.enhanced = false;  // a Reject need not carry the header: take what is there
    } else {
      frame_.private_data = pd;
      fail(State::kRefused, Problem::kMissingEnhancedHeader);
      if (expected_ == MpaFrameType::kReply) state_ = State::kMalformed;
      return;
    }
  }
  frame_.private_data = pd;
  if (frame_.markers && !frame_.reject) {
    fail(State::kRefused, Problem::kMarkers);
    return;
  }
  state_ = State::kComplete;
}

uint8_t mpa_select_rtr(const MpaV2Params& request) {
  if (!request.peer_to_peer) return 0;
  if (request.rtr & rtr::kZeroLengthWrite) return rtr::kZeroLengthWrite;
  if (request.rtr & rtr::kZeroLengthRead) return rtr::kZeroLengthRead;
  return rtr::kZeroLengthWrite;
}

MpaFrame mpa_reply_for(const MpaFrame& request, bool want_crc, uint16_t ird, uint16_t ord,
                       std::span<const uint8_t> private_data) {
  MpaFrame reply;
  reply.type = MpaFrameType::kReply;
  reply.revision = request.revision == kMpaRevision1 ? kMpaRevision1 : kMpaRevision2;
  reply.enhanced = request.enhanced && reply.revision == kMpaRevision2;
  reply.crc = request.crc || want_crc;
  if (reply.enhanced) {
    reply.v2.ird = std::min<uint16_t>(ird, mpa_v2::kIrdOrdMask);
    reply.v2.ord = std::min<uint16_t>(ord, mpa_v2::kIrdOrdMask);
    reply.v2.peer_to_peer = request.v2.peer_to_peer;
    reply.v2.rtr = mpa_select_rtr(request.v2);
  }
  reply.private_data = private_data;
  return reply;
}

MpaFrame mpa_reject_for(const MpaFrame& request, std::span<const uint8_t> private_data) {
  MpaFrame reject;
  reject.type = MpaFrameType::kReply;
  reject.reject = true;
  reject.revision = request.revision == kMpaRevision1 ? kMpaRevision1 : kMpaRevision2;
  reject.enhanced = request.enhanced && reject.revision == kMpaRevision2;
  reject.private_data = private_data;
  return reject;
}

std::optional<TerminateCode> mpa_check_reply(const MpaFrame& request, const MpaFrame& reply) {
  if (reply.markers || reply.revision > request.revision) return term::kMpaInvalidFrame;
  if (!request.enhanced) return std::nullopt;
  if (reply.revision != kMpaRevision2 || !reply.enhanced) return term::kMpaInvalidFrame;
  if (reply.v2.ord > request.v2.ird) return term::kMpaInsufficientIrd;
  if (request.v2.peer_to_peer) {
    const uint8_t chosen = reply.v2.rtr;
    const bool exactly_one = chosen != 0 && (chosen & (chosen - 1)) == 0;
    if (!reply.v2.peer_to_peer || !exactly_one || (chosen & request.v2.rtr) == 0)
      return term::kMpaNoMatchingRtr;
  }
  return std::nullopt;
}

}  // namespace softndk::fabric::tcp
