// Fuzz target: the FPDU receive path (MPA framing and CRC, DDP and RDMAP headers) with a
// sink that receives as TcpConnection does.
//
// Input: [mode][setup][chunk a][chunk b] then the FPDU stream the peer sent
// (fuzz_inputs.hpp). The stream goes to an FpduParser (CRC off, on, or on with every FPDU's
// CRC written by the target first so that mutations reach past it) whole and in the
// input's chunking. The sink is TcpConnection's FpduSink half on a fake QP: tagged
// segments resolved against fake regions (STag, bounds, rights) and placed; Sends into
// posted receives of a fixed capacity, completed at their last segment, the Sends with
// Invalidate invalidating a region; Read Responses matched to our reads in flight; Read
// Requests checked at their end and answered; the RTR awaited; a Terminate ends the
// connection, after which input is let go as the connection does.
//
// TcpConnection itself is not driven: its receive half is private and runs on the engine
// thread behind a socket; this model follows tcp_connection.cpp's begin_segment, payload
// and end_segment line by line (keep it so when they change).
//
// Invariants: the parser's calls keep the sink contract (begin, payload in order within
// the segment's length, end); every segment is what the wire checks allow (opcode and
// buffer model, queue, lengths, MSN and MO order when checked, no offset wrap, a message
// starts once); placement stays inside the fake memory; the events and the final error do
// not depend on the chunking; the Terminate an error answers with encodes and parses back.

#include <algorithm>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "fabric/tcp/iwarp_rx.hpp"
#include "fabric/tcp/iwarp_tx.hpp"
#include "fuzz_common.hpp"
#include "fuzz_inputs.hpp"
#include "fuzz_wire.hpp"

namespace {

using namespace softndk::fabric::tcp;
namespace in = fuzz::fpdu_input;
using Bytes = std::vector<uint8_t>;

// Whether [start, start + length) runs past `max` (as the parser defines a wrap).
bool wraps(uint64_t start, uint64_t length, uint64_t max) {
  return length > 0 && start > max - (length - 1);
}

void put(std::string& log, uint64_t v) { log.append(reinterpret_cast<const char*>(&v), sizeof v); }

void put_segment(std::string& log, char what, const Segment& s) {
  log += what;
  put(log, static_cast<uint64_t>(s.opcode) | uint64_t{s.tagged} << 8 | uint64_t{s.last} << 9 |
               uint64_t{s.first} << 10 | uint64_t{s.ulpdu_length} << 16 |
               uint64_t{s.payload_length} << 32);
  put(log, s.stag);
  put(log, s.to);
  put(log, uint64_t{s.qn} << 32 | s.msn);
  put(log, uint64_t{s.mo} << 32 | s.invalidate_stag);
  const ReadRequest& r = s.read_request;
  put(log, uint64_t{r.data_sink_stag} << 32 | r.data_source_stag);
  put(log, r.data_sink_to);
  put(log, r.data_source_to);
  put(log, r.rdma_read_message_size);
}

void put_terminate(std::string& log, const TerminateInfo& t) {
  put(log, uint64_t{t.code.layer} | uint64_t{t.code.error_type} << 8 | uint64_t{t.code.error_code} << 16 |
               uint64_t{t.m} << 24 | uint64_t{t.d} << 25 | uint64_t{t.r} << 26 |
               uint64_t{t.rdma_header_present} << 27 | uint64_t{t.siw_bit_order} << 28 |
               uint64_t{t.ddp_segment_length} << 32 | uint64_t{t.ddp_header_length} << 48);
  log.append(reinterpret_cast<const char*>(t.ddp_header), sizeof t.ddp_header);
  log.append(reinterpret_cast<const char*>(t.rdma_header), sizeof t.rdma_header);
}

struct Settings {
  FpduParser::Options options;
  bool awaiting_rtr = false;
  bool draining = false;
  unsigned receives = 0;
  uint64_t capacity = 0;
  std::vector<uint32_t> reads;  // lengths of our reads in flight, sink STags 1, 2, ...
};

// TcpConnection's receive half on a fake QP, plus the checks of the parser's contract.
class Receiver final : public FpduSink {
 public:
  explicit Receiver(const Settings& settings)
      : settings_(settings), awaiting_rtr_(settings.awaiting_rtr), draining_(settings.draining),
        receives_(settings.receives) {
    for (const in::Region& r : in::kRegions) regions_.push_back({r, true, Bytes(r.length)});
    uint32_t stag = 1;
    for (uint32_t length : settings.reads)
      reads_.push_back({stag++, length, 0, Bytes(std::min<uint32_t>(length, kKeep))});
  }

  std::string log;  // what the parser reported: the same in every chunking
  uint64_t ended = 0;  // segments ended and accepted

  Verdict begin_segment(const Segment& s) override {
    check_begin(s);
    put_segment(log, 'B', s);
    segment_payload_.clear();
    return begin(s);
  }
  Verdict payload(const Segment& s, uint32_t offset, std::span<const uint8_t> bytes) override {
    FUZZ_CHECK(open_);
    FUZZ_CHECK(opcode_info(s.opcode).body == Body::kData);
    FUZZ_CHECK(offset == delivered_ && !bytes.empty());
    FUZZ_CHECK(uint64_t{offset} + bytes.size() <= s.payload_length);
    delivered_ += static_cast<uint32_t>(bytes.size());
    segment_payload_.insert(segment_payload_.end(), bytes.begin(), bytes.end());
    return place(s, offset, bytes);
  }
  Verdict end_segment(const Segment& s) override {
    check_end(s);
    put_segment(log, 'E', s);
    log.append(segment_payload_.begin(), segment_payload_.end());
    if (s.opcode == Opcode::kTerminate) put_terminate(log, s.terminate);
    const Verdict v = end(s);
    if (!v) ++ended;
    return v;
  }

 private:
  static constexpr uint32_t kKeep = 65536;  // bytes of a receive or read kept (the rest is counted)

  struct RegionState {
    in::Region region;
    bool valid;
    Bytes memory;
  };
  struct Read {
    uint32_t sink_stag;
    uint32_t length;
    uint64_t received;
    Bytes memory;
  };
  // The parser's view of a message in progress, rebuilt here from the segments it reported.
  struct Queue {
    uint32_t msn = 1;
    uint32_t mo = 0;
    bool open = false;
    Opcode opcode = Opcode::kSend;
  };

  // ---- the parser's contract ----

  void check_begin(const Segment& s) {
    FUZZ_CHECK(!open_);
    open_ = true;
    delivered_ = 0;
    const OpcodeInfo& info = opcode_info(s.opcode);
    FUZZ_CHECK(info.valid() && s.tagged == info.tagged);
    FUZZ_CHECK(s.ulpdu_length >= info.header_length());
    FUZZ_CHECK(s.payload_length == s.ulpdu_length - info.header_length());
    FUZZ_CHECK(info.invalidate || s.invalidate_stag == 0);
    if (s.tagged) {
      FUZZ_CHECK(!wraps(s.to, s.payload_length, UINT64_MAX));
      FUZZ_CHECK(s.first == !tagged_.open);
      FUZZ_CHECK(!tagged_.open || tagged_.opcode == s.opcode);
      return;
    }
    FUZZ_CHECK(s.qn == info.queue);
    FUZZ_CHECK(!wraps(s.mo, s.payload_length, UINT32_MAX));
    if (info.body != Body::kData) FUZZ_CHECK(s.last && s.mo == 0 && s.first);
    if (info.body == Body::kReadRequest) {
      FUZZ_CHECK(s.payload_length == 0);
      const ReadRequest& r = s.read_request;
      FUZZ_CHECK(!wraps(r.data_sink_to, r.rdma_read_message_size, UINT64_MAX));
      FUZZ_CHECK(!wraps(r.data_source_to, r.rdma_read_message_size, UINT64_MAX));
    }
    const uint32_t max = settings_.options.max_untagged_message;
    if (info.body == Body::kData && max != 0) FUZZ_CHECK(uint64_t{s.mo} + s.payload_length <= max);
    if (s.qn == kQnTerminate) return;
    const Queue& q = queues_[s.qn];
    // A message begins once: its first segment is the one no message is open for.
    FUZZ_CHECK(s.first == !q.open);
    FUZZ_CHECK(!q.open || q.opcode == s.opcode);
    if (settings_.options.check_msn) FUZZ_CHECK(s.msn == q.msn && s.mo == q.mo);
  }

  void check_end(const Segment& s) {
    FUZZ_CHECK(open_);
    open_ = false;
    FUZZ_CHECK(delivered_ == (opcode_info(s.opcode).body == Body::kData ? s.payload_length : 0u));
    if (s.opcode == Opcode::kTerminate) {
      const TerminateInfo& t = s.terminate;
      FUZZ_CHECK(t.ddp_header_length == 0 || t.ddp_header_length == sizeof(DdpTaggedHeader) ||
                 t.ddp_header_length == sizeof(DdpUntaggedHeader));
      FUZZ_CHECK(!t.rdma_header_present || t.r);
    }
    Queue* q = s.tagged ? &tagged_ : s.qn != kQnTerminate ? &queues_[s.qn] : nullptr;
    if (q == nullptr) return;
    q->open = !s.last;
    q->opcode = s.opcode;
    if (!s.tagged) {
      q->mo = s.last ? 0 : s.mo + s.payload_length;
      if (s.last) ++q->msn;
    }
  }

  // ---- TcpConnection::begin_segment, payload, end_segment ----

  // QpEndpoint::resolve_tagged: unknown or invalidated STag or missing right: Invalid STag;
  // outside the region: base or bounds (code_of_tagged).
  std::optional<TerminateCode> resolve(uint32_t stag, uint64_t to, uint64_t length, bool write,
                                       RegionState** out = nullptr) {
    for (RegionState& r : regions_) {
      if (r.region.stag != stag) continue;
      if (!r.valid || !(write ? r.region.remote_write : r.region.remote_read)) return term::kRdmapInvalidStag;
      if (to < r.region.base || length > r.region.length || to - r.region.base > r.region.length - length)
        return term::kRdmapBaseOrBounds;
      if (out != nullptr) *out = &r;
      return std::nullopt;
    }
    return term::kRdmapInvalidStag;
  }

  Verdict begin(const Segment& s) {
    discard_ = draining_;
    if (discard_ && s.opcode != Opcode::kRdmaReadResponse && s.opcode != Opcode::kTerminate) return kAccept;
    switch (s.opcode) {
      case Opcode::kRdmaWrite:
        if (s.payload_length == 0) return kAccept;  // the RTR, or an empty write
        if (awaiting_rtr_) return term::kRdmapUnexpectedOpcode;
        return resolve(s.stag, s.to, s.payload_length, /*write=*/true);
      case Opcode::kRdmaReadResponse:
        if (reads_.empty() || reads_.front().sink_stag != s.stag) return term::kDdpTaggedInvalidStag;
        // TcpConnection checks s.to + s.payload_length > length, which overflows for a
        // segment that ends at TO 2^64 (seed read_response_top): it then accepts a response
        // that places nothing and completes the read. Here as it should be, so that the
        // place() check below holds the model to the fix.
        if (s.to > reads_.front().length || s.payload_length > reads_.front().length - s.to)
          return term::kDdpTaggedBaseOrBounds;
        return kAccept;
      case Opcode::kRdmaReadRequest:
        if (s.read_request.rdma_read_message_size == 0) return kAccept;
        if (awaiting_rtr_) return term::kRdmapUnexpectedOpcode;
        return kAccept;
      case Opcode::kTerminate:
        return kAccept;
      default:  // the Sends
        if (awaiting_rtr_) return term::kRdmapUnexpectedOpcode;
        if (s.first) {
          if (receives_ == 0) return term::kDdpUntaggedNoBuffer;
          --receives_;
          have_receive_ = true;
          receive_bytes_ = 0;
          receive_.assign(std::min<uint64_t>(settings_.capacity, kKeep), 0);
        }
        return kAccept;
    }
  }

  Verdict place(const Segment& s, uint32_t offset, std::span<const uint8_t> bytes) {
    if (discard_ && s.opcode != Opcode::kRdmaReadResponse) return kAccept;
    switch (s.opcode) {
      case Opcode::kRdmaWrite: {
        RegionState* r = nullptr;
        if (auto bad = resolve(s.stag, s.to + offset, bytes.size(), true, &r)) return bad;
        std::memcpy(r->memory.data() + (s.to + offset - r->region.base), bytes.data(), bytes.size());
        return kAccept;
      }
      case Opcode::kRdmaReadResponse: {
        if (reads_.empty()) return term::kDdpTaggedInvalidStag;
        Read& read = reads_.front();
        // copy_to_iov: what lies inside the read's buffers.
        const uint64_t at = s.to + offset;
        FUZZ_CHECK(at <= read.length && bytes.size() <= read.length - at);  // begin_segment checked it
        const size_t kept = at < read.memory.size() ? std::min<size_t>(bytes.size(), read.memory.size() - at) : 0;
        if (kept > 0) std::memcpy(read.memory.data() + at, bytes.data(), kept);
        read.received += bytes.size();
        return kAccept;
      }
      default: {  // the Sends: QpEndpoint::place_receive
        // A continuation without a receive would place into a stale one: the parser's
        // order checks (on in TcpConnection) must make that impossible.
        if (!have_receive_) {
          FUZZ_CHECK(!settings_.options.check_msn);
          return kAccept;
        }
        const uint64_t at = uint64_t{s.mo} + offset;
        const uint64_t end = at + bytes.size();
        if (at < receive_.size())
          std::memcpy(receive_.data() + at, bytes.data(), std::min<uint64_t>(bytes.size(), receive_.size() - at));
        receive_bytes_ = std::max(receive_bytes_, std::min(end, settings_.capacity));
        if (end <= settings_.capacity) return kAccept;
        have_receive_ = false;  // completes with STATUS_BUFFER_OVERFLOW
        ++receives_done_;
        return term::kDdpUntaggedMessageTooLong;
      }
    }
  }

  Verdict end(const Segment& s) {
    if (discard_ && s.opcode != Opcode::kRdmaReadResponse && s.opcode != Opcode::kTerminate) return kAccept;
    switch (s.opcode) {
      case Opcode::kRdmaWrite:
        if (s.payload_length == 0 && awaiting_rtr_) awaiting_rtr_ = false;  // the RTR
        return kAccept;
      case Opcode::kRdmaReadResponse:
        if (s.last) {
          // TcpConnection takes reads_.front() unchecked here: begin_segment saw it.
          FUZZ_CHECK(!reads_.empty());
          FUZZ_CHECK(reads_.front().received <= reads_.front().length);
          reads_.pop_front();
        }
        return kAccept;
      case Opcode::kRdmaReadRequest: {
        const ReadRequest& r = s.read_request;
        if (r.rdma_read_message_size > 0) {
          if (auto bad = resolve(r.data_source_stag, r.data_source_to, r.rdma_read_message_size, false))
            return bad;
        }
        awaiting_rtr_ = false;
        if (!draining_) ++responses_;  // a Read Response queued (no IRD limit today)
        return kAccept;
      }
      case Opcode::kTerminate:
        // fail_named_locked, end_locked: our reads are flushed, input let go from now on.
        draining_ = true;
        reads_.clear();
        return kAccept;
      default: {  // the Sends: QpEndpoint::finish_receive
        if (!s.last || !have_receive_) return kAccept;
        have_receive_ = false;
        ++receives_done_;
        FUZZ_CHECK(receive_bytes_ <= settings_.capacity);
        if (!opcode_info(s.opcode).invalidate) return kAccept;
        for (RegionState& r : regions_) {
          if (r.region.stag == s.invalidate_stag && r.valid && r.region.invalidatable) {
            r.valid = false;
            return kAccept;
          }
        }
        return term::kRdmapProtectionCannotInvalidate;
      }
    }
  }

  const Settings settings_;
  bool open_ = false;
  uint32_t delivered_ = 0;
  Bytes segment_payload_;
  Queue queues_[2];
  Queue tagged_;

  // The connection's state.
  bool awaiting_rtr_;
  bool draining_;
  bool discard_ = false;
  std::vector<RegionState> regions_;
  std::deque<Read> reads_;
  unsigned receives_;
  unsigned receives_done_ = 0;
  bool have_receive_ = false;
  uint64_t receive_bytes_ = 0;
  Bytes receive_;
  unsigned responses_ = 0;
};

// Writes the CRC of every whole FPDU in `stream` (kCrcFixed).
void fix_crcs(Bytes& stream) {
  size_t at = 0;
  while (stream.size() - at >= sizeof(MpaFpduHeader)) {
    const uint32_t ulpdu = uint32_t{stream[at]} << 8 | stream[at + 1];
    const size_t covered = sizeof(MpaFpduHeader) + ulpdu + mpa_pad(ulpdu);
    if (stream.size() - at < covered + kMpaCrcSize) return;
    Crc32c crc;
    crc.update(stream.data() + at, covered);
    crc.store(stream.data() + at + covered);
    at += covered + kMpaCrcSize;
  }
}

struct Run {
  std::string log;
  size_t consumed;
  bool failed;
  RxError error;
  uint64_t segments;
};

template <class Feed>
Run run(const Settings& settings, Feed&& feed) {
  FpduParser parser(settings.options);
  Receiver sink(settings);
  Run r;
  r.consumed = feed(parser, sink);
  FUZZ_CHECK(parser.fpdus() == sink.ended);
  r.log = std::move(sink.log);
  r.segments = sink.ended;
  r.failed = parser.failed();
  r.error = parser.error();
  return r;
}

// The Terminate TcpConnection answers an error with: encodable, and our own parser reads
// back the code and the copied headers.
void check_terminate(const RxError& e, bool crc) {
  const TerminateInfo& t = e.terminate;
  if (t.d) {
    FUZZ_CHECK(t.ddp_header_length == sizeof(DdpTaggedHeader) || t.ddp_header_length == sizeof(DdpUntaggedHeader));
    FUZZ_CHECK(((t.ddp_header[0] & ddp_flag::kTagged) != 0) == (t.ddp_header_length == sizeof(DdpTaggedHeader)));
  }
  FUZZ_CHECK(!t.r || t.d);
  if (!e.send_terminate) return;
  const TerminateInfo got = fuzz::terminate_round_trip(t, crc);
  FUZZ_CHECK(got.d == t.d && got.r == t.r);
  if (t.d) {
    FUZZ_CHECK(got.ddp_header_length == t.ddp_header_length);
    FUZZ_CHECK(std::memcmp(got.ddp_header, t.ddp_header, t.ddp_header_length) == 0);
    FUZZ_CHECK(got.m == t.m && got.ddp_segment_length == t.ddp_segment_length);
  }
  if (t.r) FUZZ_CHECK(got.rdma_header_present && std::memcmp(got.rdma_header, t.rdma_header, sizeof t.rdma_header) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input input(data, size);
  const uint8_t mode = input.byte(), setup = input.byte();
  const fuzz::Chunking chunking = fuzz::read_chunking(input);
  Bytes stream(input.rest().begin(), input.rest().end());

  Settings settings;
  const uint8_t crc = mode & in::kCrcMask;
  settings.options.crc = crc == in::kCrcOn || crc == in::kCrcFixed;
  if (crc == in::kCrcFixed) fix_crcs(stream);
  settings.options.check_msn = !(mode & in::kNoMsnCheck);
  settings.options.max_untagged_message = in::kMaxUntagged[(mode >> in::kMaxUntaggedShift) & 3];
  settings.awaiting_rtr = mode & in::kAwaitingRtr;
  settings.receives = in::kReceives[(mode >> in::kReceivesShift) & 3];
  settings.capacity = in::kCapacity[setup & in::kCapacityMask];
  const unsigned reads = in::kReads[(setup >> in::kReadsShift) & 3];
  for (unsigned i = 0; i < reads; ++i) settings.reads.push_back(in::kReadLength[((setup >> in::kReadLengthShift) + i) & 3]);
  settings.draining = setup & in::kDraining;

  const Run whole = run(settings, [&](FpduParser& p, Receiver& sink) { return p.feed(stream, sink); });
  const Run pieces = run(settings, [&](FpduParser& p, Receiver& sink) {
    return chunking.run(stream, [&](std::span<const uint8_t> piece) {
      const size_t n = p.feed(piece, sink);
      FUZZ_CHECK(n == piece.size() || p.failed());
      return n;
    });
  });
  for (const Run* r : {&whole, &pieces}) {
    FUZZ_CHECK(r->consumed <= stream.size());
    FUZZ_CHECK(r->failed || r->consumed == stream.size());
  }
  // The chunking changes nothing: the same segments, the same payload, the same end. (A
  // payload refused mid-segment is refused after more or fewer of its bytes.)
  FUZZ_CHECK(whole.log == pieces.log);
  FUZZ_CHECK(whole.failed == pieces.failed);
  if (whole.failed) {
    FUZZ_CHECK(whole.error.terminate.code == pieces.error.terminate.code);
    FUZZ_CHECK(std::strcmp(whole.error.reason, pieces.error.reason) == 0);
    FUZZ_CHECK(whole.error.send_terminate == pieces.error.send_terminate);
    const bool in_payload = std::strcmp(whole.error.reason, "payload refused by the receiver") == 0;
    if (!in_payload) FUZZ_CHECK(whole.consumed == pieces.consumed);
    check_terminate(pieces.error, settings.options.crc);
  }
  if (fuzz::verbose())
    std::fprintf(stderr, "  %llu segments, %zu of %zu bytes, %s%s%s\n",
                 static_cast<unsigned long long>(pieces.segments), pieces.consumed, stream.size(),
                 pieces.failed ? "stopped: " : "no error", pieces.failed ? pieces.error.reason : "",
                 pieces.failed ? (" (" + describe(pieces.error.terminate.code) + ")").c_str() : "");
  return 0;
}
