#include "fabric/tcp/iwarp_rx.hpp"

#include <algorithm>
#include <cstring>

namespace softndk::fabric::tcp {

namespace {

constexpr size_t kDdpOffset = sizeof(MpaFpduHeader);  // where the DDP header starts in hdr_
constexpr size_t kControlEnd = kDdpOffset + 2;        // DDP and RDMAP control fields
constexpr size_t kRdmapOffset = kDdpOffset + sizeof(DdpUntaggedHeader);

// Whether [start, start + length) runs past `max`.
constexpr bool wraps(uint64_t start, uint64_t length, uint64_t max) {
  return length > 0 && start > max - (length - 1);
}

}  // namespace

size_t FpduParser::feed(std::span<const uint8_t> bytes, FpduSink& sink) {
  size_t used = 0;
  while (used < bytes.size()) {
    const auto in = bytes.subspan(used);
    switch (state_) {
      case State::kMpaHeader:
        used += on_mpa_header(in);
        break;
      case State::kDdpHeader:
        used += on_ddp_header(in, sink);
        break;
      case State::kPayload:
        used += on_payload(in, sink);
        break;
      case State::kPad:
        used += on_pad(in);
        break;
      case State::kCrc:
        used += on_crc(in, sink);
        break;
      case State::kError:
        return used;
    }
  }
  return used;
}

size_t FpduParser::gather(std::span<const uint8_t> in, size_t need, bool& complete) {
  const size_t n = std::min(in.size(), need - have_);
  std::memcpy(hdr_ + have_, in.data(), n);
  add_to_crc(in.data(), n);
  have_ += n;
  complete = have_ == need;
  return n;
}

// kMpaHeader: ULPDU_Length (RFC 5044 FPDU format).
size_t FpduParser::on_mpa_header(std::span<const uint8_t> in) {
  bool complete;
  const size_t n = gather(in, sizeof(MpaFpduHeader), complete);
  if (!complete) return n;
  ulpdu_length_ = load_layout<MpaFpduHeader>(hdr_).ulpdu_length.get();
  state_ = State::kDdpHeader;
  // No ULPDU can be shorter than the smallest DDP header: the framing is lost.
  if (ulpdu_length_ < sizeof(DdpTaggedHeader))
    fail(term::kRdmapCatastrophicStream, "ULPDU_Length below the smallest DDP header", false);
  return n;
}

// kDdpHeader: the two control bytes (checked at once: they say how long the headers are),
// then the rest of the opcode's headers; then the sink learns of the segment.
size_t FpduParser::on_ddp_header(std::span<const uint8_t> in, FpduSink& sink) {
  bool complete;
  size_t n = 0;
  if (have_ < kControlEnd) {
    n = gather(in, kControlEnd, complete);
    if (!complete || !check_control()) return n;
    in = in.subspan(n);
  }
  n += gather(in, header_length_, complete);
  if (!complete || !check_headers()) return n;
  if (const Verdict v = sink.begin_segment(segment_)) {
    fail(*v, "segment refused by the receiver", true);
    return n;
  }
  start_body();
  return n;
}

// DDP Control and RDMAP control (RFC 5041/5040 header formats): versions first, as a wrong
// version makes the rest unreadable, then the opcode and its buffer model.
bool FpduParser::check_control() {
  const uint8_t ddp = hdr_[kDdpOffset], rdmap = hdr_[kDdpOffset + 1];
  const bool tagged = (ddp & ddp_flag::kTagged) != 0;
  segment_ = Segment{};
  segment_.tagged = tagged;
  segment_.last = (ddp & ddp_flag::kLast) != 0;
  segment_.ulpdu_length = ulpdu_length_;
  if ((ddp & ddp_flag::kVersionMask) != kDdpVersion) {
    fail(tagged ? term::kDdpTaggedInvalidVersion : term::kDdpUntaggedInvalidVersion,
         "DDP version is not 1", false);
    return false;
  }
  if ((rdmap & rdmap_ctrl::kVersionMask) >> rdmap_ctrl::kVersionShift != kRdmapVersion) {
    fail(term::kRdmapInvalidVersion, "RDMAP version is not 1", false);
    return false;
  }
  const OpcodeInfo& info = kOpcodes[rdmap & rdmap_ctrl::kOpcodeMask];
  if (!info.valid()) {
    fail(term::kRdmapUnexpectedOpcode, "reserved RDMAP opcode", false);
    return false;
  }
  segment_.opcode = static_cast<Opcode>(rdmap & rdmap_ctrl::kOpcodeMask);
  is_terminate_ = segment_.opcode == Opcode::kTerminate;
  if (info.tagged != tagged) {
    fail(term::kRdmapUnexpectedOpcode, "opcode in the wrong DDP buffer model", false);
    return false;
  }
  header_length_ = sizeof(MpaFpduHeader) + info.header_length();
  if (size_t{ulpdu_length_} + sizeof(MpaFpduHeader) < header_length_) {
    fail(term::kRdmapCatastrophicStream, "ULPDU_Length below the opcode's headers", false);
    return false;
  }
  segment_.payload_length =
      static_cast<uint32_t>(ulpdu_length_ + sizeof(MpaFpduHeader) - header_length_);
  return true;
}

// The full headers (RFC 5041 and 5040 error rules): queue numbers, single-segment messages,
// MSN and MO order, offsets that wrap, and a started message's opcode.
bool FpduParser::check_headers() {
  const OpcodeInfo& info = opcode_info(segment_.opcode);
  const uint32_t length = segment_.payload_length;
  if (segment_.tagged) {
    const auto d = load_layout<DdpTaggedHeader>(hdr_ + kDdpOffset);
    segment_.stag = d.stag.get();
    segment_.to = d.to.get();
    if (wraps(segment_.to, length, UINT64_MAX)) {
      fail(term::kDdpTaggedToWrap, "tagged offset wraps", true);
      return false;
    }
    if (tagged_.open && tagged_.opcode != segment_.opcode) {
      fail(term::kRdmapUnexpectedOpcode, "tagged message interrupted by another", true);
      return false;
    }
    segment_.first = !tagged_.open;
    return true;
  }

  const auto d = load_layout<DdpUntaggedHeader>(hdr_ + kDdpOffset);
  segment_.qn = d.qn.get();
  segment_.msn = d.msn.get();
  segment_.mo = d.mo.get();
  segment_.invalidate_stag = info.invalidate ? d.rsvd_ulp.get() : 0;
  // A message starts when none is open on its queue, not at MO 0: a zero-length segment
  // without L leaves the next one at MO 0 too, and a sink must not start the message twice.
  segment_.first = true;
  if (segment_.qn != info.queue) {
    fail(term::kDdpUntaggedInvalidQn, "queue number does not match the opcode", true);
    return false;
  }
  if (info.body != Body::kData) {
    // RFC 5040: a Read Request or a Terminate is one whole DDP segment.
    if (segment_.mo != 0) {
      fail(term::kDdpUntaggedInvalidMo, "single-segment message with MO not 0", true);
      return false;
    }
    if (!segment_.last || (info.body == Body::kReadRequest && length != 0)) {
      fail(term::kDdpUntaggedMessageTooLong, "single-segment message too long", true);
      return false;
    }
  }
  if (wraps(segment_.mo, length, UINT32_MAX)) {
    fail(term::kDdpUntaggedInvalidMo, "message offset wraps", true);
    return false;
  }
  if (info.body == Body::kData && options_.max_untagged_message != 0 &&
      uint64_t{segment_.mo} + length > options_.max_untagged_message) {
    fail(term::kDdpUntaggedMessageTooLong, "untagged message above the limit", true);
    return false;
  }
  if (segment_.qn == kQnSend || segment_.qn == kQnReadRequest) {
    const Queue& q = queues_[segment_.qn];
    if (options_.check_msn && segment_.msn != q.msn) {
      fail(term::kDdpUntaggedMsnRange, "MSN out of order", true);
      return false;
    }
    if (options_.check_msn && segment_.mo != q.mo) {
      fail(term::kDdpUntaggedInvalidMo, "MO does not continue the message", true);
      return false;
    }
    if (q.open && q.opcode != segment_.opcode) {
      fail(term::kRdmapUnexpectedOpcode, "untagged message changes opcode", true);
      return false;
    }
    segment_.first = !q.open;
  }
  if (info.body == Body::kReadRequest) {
    const ReadRequest& r = segment_.read_request =
        decode_read_request(load_layout<RdmaReadRequestHeader>(hdr_ + kRdmapOffset));
    if (wraps(r.data_sink_to, r.rdma_read_message_size, UINT64_MAX) ||
        wraps(r.data_source_to, r.rdma_read_message_size, UINT64_MAX)) {
      fail(term::kRdmapToWrap, "read request offsets wrap", true);
      return false;
    }
  }
  return true;
}

void FpduParser::start_body() {
  payload_have_ = 0;
  pad_ = mpa_pad(ulpdu_length_);
  have_ = 0;
  state_ = segment_.payload_length > 0 ? State::kPayload : pad_ > 0 ? State::kPad : State::kCrc;
}

// kPayload: data goes to the sink as it comes; a Terminate's body is kept (bounded).
size_t FpduParser::on_payload(std::span<const uint8_t> in, FpduSink& sink) {
  const size_t n = std::min<size_t>(in.size(), segment_.payload_length - payload_have_);
  add_to_crc(in.data(), n);
  if (opcode_info(segment_.opcode).body == Body::kData) {
    if (const Verdict v = sink.payload(segment_, payload_have_, in.first(n))) {
      fail(*v, "payload refused by the receiver", true);
      return n;
    }
  } else {
    // Copied headers beyond what a Terminate can hold are read and ignored.
    const size_t at = header_length_ + payload_have_;
    if (at < sizeof hdr_) std::memcpy(hdr_ + at, in.data(), std::min(n, sizeof hdr_ - at));
  }
  took_payload(n);
  return n;
}

void FpduParser::took_payload(size_t n) {
  payload_have_ += static_cast<uint32_t>(n);
  if (payload_have_ == segment_.payload_length) {
    have_ = 0;
    state_ = pad_ > 0 ? State::kPad : State::kCrc;
  }
}

void FpduParser::placed_directly(std::span<const uint8_t> bytes) {
  const size_t n = std::min<size_t>(bytes.size(), direct_pending());
  add_to_crc(bytes.data(), n);
  if (n > 0) took_payload(n);
}

// kPad: up to 3 bytes, ignored but for the CRC (RFC 5044 FPDU format).
size_t FpduParser::on_pad(std::span<const uint8_t> in) {
  const size_t n = std::min<size_t>(in.size(), pad_ - have_);
  add_to_crc(in.data(), n);
  have_ += n;
  if (have_ == pad_) {
    have_ = 0;
    state_ = State::kCrc;
  }
  return n;
}

// kCrc: the CRC field, checked when negotiated; then the segment ends.
size_t FpduParser::on_crc(std::span<const uint8_t> in, FpduSink& sink) {
  const size_t n = std::min(in.size(), kMpaCrcSize - have_);
  std::memcpy(crc_field_ + have_, in.data(), n);
  have_ += n;
  if (have_ < kMpaCrcSize) return n;
  if (options_.crc && load_mpa_crc(crc_field_) != crc_.value()) {
    fail(term::kMpaCrcError, "CRC mismatch", false);
    return n;
  }
  if (segment_.opcode == Opcode::kTerminate) {
    const size_t body = std::min<size_t>(sizeof(TerminateControl) + segment_.payload_length,
                                         kTerminateMaxBody);
    segment_.terminate = decode_terminate({hdr_ + kRdmapOffset, body});
  }
  if (const Verdict v = sink.end_segment(segment_)) {
    fail(*v, "segment refused by the receiver", true);
    return n;
  }
  end_fpdu();
  return n;
}

void FpduParser::end_fpdu() {
  Queue* q = segment_.tagged ? &tagged_
             : segment_.qn == kQnSend || segment_.qn == kQnReadRequest ? &queues_[segment_.qn]
                                                                        : nullptr;
  if (q != nullptr) {
    q->open = !segment_.last;
    q->opcode = segment_.opcode;
    if (!segment_.tagged) {
      q->mo = segment_.last ? 0 : segment_.mo + segment_.payload_length;
      if (segment_.last) ++q->msn;
    }
  }
  ++fpdus_;
  is_terminate_ = false;
  have_ = 0;
  crc_ = Crc32c{};
  state_ = State::kMpaHeader;
}

void FpduParser::fail(const TerminateCode& code, const char* reason, bool with_headers) {
  error_ = RxError{};
  error_.send_terminate = !is_terminate_;
  error_.reason = reason;
  TerminateInfo& t = error_.terminate;
  t.code = code;
  // Local catastrophic and LLP errors copy nothing (RFC 5040, as siw).
  const bool catastrophic = code.error_type == 0 && code.layer != term_layer::kLlp;
  if (with_headers && !catastrophic && code.layer != term_layer::kLlp) {
    const size_t len = segment_.tagged ? sizeof(DdpTaggedHeader) : sizeof(DdpUntaggedHeader);
    t.m = t.d = true;
    t.ddp_segment_length = ulpdu_length_;
    t.ddp_header_length = static_cast<uint8_t>(len);
    std::memcpy(t.ddp_header, hdr_ + kDdpOffset, len);
    if (segment_.opcode == Opcode::kRdmaReadRequest) {
      t.r = true;
      t.rdma_header_present = true;
      std::memcpy(t.rdma_header, hdr_ + kRdmapOffset, sizeof t.rdma_header);
    }
  }
  state_ = State::kError;
}

}  // namespace softndk::fabric::tcp
