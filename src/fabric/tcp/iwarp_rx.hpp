// Receive: a resumable parser of the FPDU stream that follows MPA connection setup. Fed TCP
// bytes in any chunking (an FPDU and its CRC may arrive in different segments, or one byte
// at a time), it checks every header against RFC 5040/5041/5044 and reports each DDP
// segment to a sink: its headers first, then its payload in place as it arrives (never
// staged: tagged payload can go straight into the target memory), then its end once the
// CRC holds. On the first error it stops for good with the exact Terminate code and the
// headers a Terminate copies (error()). It keeps no global state, allocates nothing and
// reads only the bytes it is given, so a fuzzer can drive it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "fabric/tcp/iwarp_wire.hpp"

namespace softndk::fabric::tcp {

// One DDP segment as received.
struct Segment {
  Opcode opcode = Opcode::kSend;
  bool tagged = false;
  bool last = false;            // L: the last segment of its message
  bool first = false;           // the first segment of its message (none was open on its queue)
  uint16_t ulpdu_length = 0;    // the DDP segment's length (MPA ULPDU_Length)
  uint32_t payload_length = 0;  // bytes after the headers (a Terminate's: decoded into terminate)
  // Tagged (Write, Read Response)
  uint32_t stag = 0;
  uint64_t to = 0;              // of the first payload byte
  // Untagged
  uint32_t qn = 0;
  uint32_t msn = 0;
  uint32_t mo = 0;              // of the first payload byte
  uint32_t invalidate_stag = 0; // the Sends with Invalidate
  ReadRequest read_request;     // Read Request
  TerminateInfo terminate;      // Terminate: valid in end_segment
};

// A sink's answer: nullopt to go on, or the Terminate code that stops the stream (an
// unknown STag, bounds, no receive posted, ...).
using Verdict = std::optional<TerminateCode>;
inline constexpr Verdict kAccept = std::nullopt;

class FpduSink {
 public:
  virtual ~FpduSink() = default;
  // A segment's headers have arrived and passed the wire checks: resolve where its payload
  // goes. Nothing of the segment is CRC-checked yet: act on a message only in end_segment.
  virtual Verdict begin_segment(const Segment& segment) = 0;
  // Payload bytes of a data segment (Write, Read Response, the Sends), at `offset` from
  // its first payload byte (tagged: TO = segment.to + offset; untagged: MO = segment.mo +
  // offset). Valid only during the call.
  virtual Verdict payload(const Segment& segment, uint32_t offset,
                          std::span<const uint8_t> bytes) = 0;
  // The segment ended and its CRC (when negotiated) holds. A message is complete at the end
  // of its last segment.
  virtual Verdict end_segment(const Segment& segment) = 0;
};

// Why the parser stopped, and the Terminate to answer with.
struct RxError {
  // Send `terminate` (as a Terminate message on QN 2) before closing; false when the
  // offending message was itself a Terminate (RFC 5040: none answers a Terminate).
  bool send_terminate = true;
  // The code and, per RFC 5040, the offending segment's headers: M and D with the DDP
  // Segment Length (its ULPDU_Length; siw sends the payload length there) and DDP header
  // for DDP and RDMAP remote errors, R and the RDMA header when it was a Read Request.
  TerminateInfo terminate;
  const char* reason = "";   // for logs
};

class FpduParser {
 public:
  // One function per state; see feed().
  enum class State : uint8_t {
    kMpaHeader,  // ULPDU_Length
    kDdpHeader,  // the DDP/RDMAP control bytes, then the rest of the opcode's headers
    kPayload,    // payload to the sink; a Terminate's body to the parser
    kPad,        // 0-3 bytes to a multiple of 4
    kCrc,        // the CRC field: checked when negotiated
    kError,      // stopped for good (error())
  };

  struct Options {
    bool crc = false;  // C negotiated: check every FPDU's CRC
    // Largest untagged message accepted (MO + segment length), 0 for no limit beyond 2^32:
    // beyond it, DDP Message too long for available buffer.
    uint32_t max_untagged_message = 0;
    // Check MSN order on the Send and Read Request queues (RFC 5041: from 1, one per
    // message) and MO continuity inside a message.
    bool check_msn = true;
  };

  FpduParser() : FpduParser(Options{}) {}
  explicit FpduParser(const Options& options) : options_(options) {}

  // Consumes bytes, calling the sink as segments go by. Returns the bytes consumed: all of
  // them, unless the parser stopped at an error (state() == kError), which a sink's verdict
  // also causes.
  size_t feed(std::span<const uint8_t> bytes, FpduSink& sink);

  State state() const { return state_; }
  bool failed() const { return state_ == State::kError; }
  const RxError& error() const { return error_; }
  // Between FPDUs (nothing of a frame buffered or half-delivered).
  bool at_boundary() const { return state_ == State::kMpaHeader && have_ == 0; }
  uint64_t fpdus() const { return fpdus_; }

  // Direct placement (what DDP is for): inside a data segment's payload (a Write, a Read
  // Response, a Send), the bytes of it still to come, else 0; the segment, and the offset
  // from its first payload byte where they start. A caller may receive them from the socket
  // straight into their target (tagged: the STag's memory; untagged: the posted receive)
  // and report them with placed_directly() instead of feed() (the sink's payload() is then
  // not called for them: the caller placed them).
  uint32_t direct_pending() const {
    return state_ == State::kPayload && opcode_info(segment_.opcode).body == Body::kData
               ? segment_.payload_length - payload_have_
               : 0;
  }
  const Segment& segment() const { return segment_; }
  uint32_t payload_offset() const { return payload_have_; }
  // `bytes` (at most direct_pending() in all) were placed by the caller, in order: they
  // count as fed, the CRC included.
  void placed_directly(std::span<const uint8_t> bytes);

 private:
  size_t on_mpa_header(std::span<const uint8_t> in);
  size_t on_ddp_header(std::span<const uint8_t> in, FpduSink& sink);
  size_t on_payload(std::span<const uint8_t> in, FpduSink& sink);
  size_t on_pad(std::span<const uint8_t> in);
  size_t on_crc(std::span<const uint8_t> in, FpduSink& sink);
  void took_payload(size_t n);  // n more payload bytes went by: on to PAD or CRC at the end

  bool check_control();          // the first two DDP bytes: versions, opcode, buffer model
  bool check_headers();          // the full headers: queues, sequence, bounds
  void start_body();             // after the headers: payload, PAD or CRC
  void end_fpdu();
  // Stops with `code`. With headers: the Terminate copies the segment's DDP header (and a
  // Read Request's RDMA header), as RFC 5040 asks for DDP and RDMAP remote errors.
  void fail(const TerminateCode& code, const char* reason, bool with_headers);
  // Copies bytes into hdr_ until it holds `need`; `complete` says whether it does.
  size_t gather(std::span<const uint8_t> in, size_t need, bool& complete);
  void add_to_crc(const uint8_t* p, size_t n) {
    if (options_.crc) crc_.update(p, n);
  }

  const Options options_;
  State state_ = State::kMpaHeader;
  RxError error_;
  Crc32c crc_;
  uint64_t fpdus_ = 0;

  // The FPDU in progress.
  uint8_t hdr_[kMaxFpduHeader] = {};  // ULPDU_Length and headers, then a Terminate's body
  size_t have_ = 0;                   // bytes in hdr_ (or of pad/CRC in their states)
  size_t header_length_ = 0;          // ULPDU_Length + DDP + RDMAP headers
  uint16_t ulpdu_length_ = 0;
  uint32_t payload_have_ = 0;
  uint32_t pad_ = 0;
  uint8_t crc_field_[kMpaCrcSize] = {};
  Segment segment_;
  bool is_terminate_ = false;  // the FPDU in progress is a Terminate

  // Messages in progress: per untagged queue (Send, Read Request) the next MSN and MO and
  // the opcode of a started message; for the tagged model the opcode of a started message.
  struct Queue {
    uint32_t msn = 1;
    uint32_t mo = 0;
    bool open = false;
    Opcode opcode = Opcode::kSend;
  };
  Queue queues_[2];
  Queue tagged_;
};

// To answer an error: send TxMessage{.opcode = Opcode::kTerminate, .msn = 1,
// .terminate = error().terminate} (iwarp_tx.hpp) when send_terminate, then close.

}  // namespace softndk::fabric::tcp
