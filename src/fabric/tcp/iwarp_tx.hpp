// Transmit: one RDMAP message as a run of FPDUs no larger than the path's MSS, each laid
// out as an iovec list for sendmsg: the FPDU's own bytes (ULPDU_Length and headers, then
// PAD and CRC) live in a caller-provided FpduFrame; payload bytes are referenced in place,
// never copied, except where memory may change while it is sent and a CRC must match the
// bytes on the wire (TxMessage::stable_copy).
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "fabric/tcp/iwarp_wire.hpp"

namespace softndk::fabric::tcp {

struct TxOptions {
  bool crc = false;         // negotiated CRC: else the CRC field is sent as zero
  uint32_t max_fpdu = 1460; // the largest FPDU on the wire (the path MSS), at least kMinFpdu
};
inline constexpr uint32_t kMinFpdu = 128;

// One RDMAP message to send.
struct TxMessage {
  Opcode opcode = Opcode::kSend;
  uint32_t stag = 0;             // tagged: Data Sink STag
  uint64_t to = 0;               // tagged: Data Sink TO of the first payload byte
  uint32_t msn = 0;              // untagged: MSN on the opcode's queue (from 1)
  uint32_t invalidate_stag = 0;  // the Sends with Invalidate
  ReadRequest read_request;      // Read Request
  TerminateInfo terminate;       // Terminate
  std::span<const iovec> payload;  // Write, Read Response, the Sends; not copied
  // The payload is memory that may legitimately change while it is sent (a Read
  // Response's source: the responder's consumer and other writers go on using it). With
  // CRC on, each FPDU's payload is then copied and its CRC computed over the copy, which
  // is what the socket takes: the peer sees some state of the bytes, never a false CRC
  // error. Sends and Writes are not: their memory is the consumer's, untouched until they
  // complete.
  bool stable_copy = false;
};

// The most payload one FPDU carries (ULPDU_Length is 16 bits).
inline constexpr size_t kMaxFpduPayload = 65535;
// A stage (FpduEncoder::next) starts on a cache line; its copy then starts at the source's
// offset in one, so a stage needs kStageRoom bytes.
inline constexpr size_t kStageAlign = 64;
inline constexpr size_t kStageRoom = kMaxFpduPayload + 2 * kStageAlign;

// The bytes of one FPDU that are not payload; must live until the FPDU is sent.
struct FpduFrame {
  uint8_t header[kMaxFpduHeader];
  uint8_t trailer[3 + kMpaCrcSize];  // PAD and CRC
};

// Cuts one message into FPDUs of at most max_fpdu bytes: full ones carry MULPDU bytes of
// ULPDU (RFC 5044, no PAD), the last one the rest; a message without payload is one FPDU.
// Read Request and Terminate are single segments (RFC 5040).
class FpduEncoder {
 public:
  FpduEncoder(const TxOptions& options, const TxMessage& message);

  // False when the message cannot be sent: reserved opcode, payload on a Read Request or
  // Terminate, max_fpdu below kMinFpdu, or more than 4 GiB of payload.
  bool valid() const { return valid_; }
  bool done() const { return done_; }
  // Lays out the next FPDU: returns the number of iovecs written to `out` (the header, the
  // payload pieces, the trailer), or 0 when done, invalid, or `out` has fewer than 3
  // entries (2 once no payload is left). With fewer entries than payload pieces, the FPDU
  // ends early (a shorter DDP segment is valid). The message's payload iovecs must stay
  // valid until the encoder is done.
  // When copies_payload(), `stage` (kStageRoom bytes from a cache line, living as long as
  // the frame) receives the FPDU's payload and the one payload iovec points at it; null
  // lays the payload out in place.
  size_t next(FpduFrame& frame, std::span<iovec> out, uint8_t* stage = nullptr);
  // Whether next() wants a stage: a stable_copy message with CRC on and payload left.
  bool copies_payload() const { return message_.stable_copy && options_.crc && remaining_ > 0; }
  // Wire size of the FPDU last laid out, and its payload bytes.
  size_t fpdu_size() const { return fpdu_size_; }
  size_t fpdu_payload() const { return fpdu_payload_; }
  // Bytes of the stage the FPDU last laid out used (0 when laid out in place).
  size_t stage_used() const { return stage_used_; }
  // Payload bytes still to send.
  uint64_t remaining() const { return remaining_; }

 private:
  // The next `length` payload bytes into `stage`, added to `crc` from the copy.
  void copy_payload(uint8_t* stage, size_t length, Crc32c& crc);

  const TxOptions options_;
  const TxMessage message_;
  const OpcodeInfo& info_;
  size_t header_length_ = 0;  // ULPDU_Length, DDP and RDMAP headers (a Terminate's body too)
  bool valid_ = false;
  bool done_ = false;
  uint64_t remaining_ = 0;
  uint64_t offset_ = 0;    // payload bytes sent
  size_t iov_index_ = 0;   // payload cursor
  size_t iov_offset_ = 0;
  size_t fpdu_size_ = 0;
  size_t fpdu_payload_ = 0;
  size_t stage_used_ = 0;
  size_t max_chunk_ = 0;   // payload bytes in a full FPDU
};

// Whole FPDUs, of one message or several, laid out for as few sendmsg calls as the socket
// allows: at MSS-sized FPDUs one syscall per FPDU would cost more than the bytes, and small
// messages posted together go out together. The batch owns the FPDUs' frames; payload is
// referenced in place. A message whose last FPDU is added carries a tag (which queue it
// came from), handed back once all of its bytes have left.
class FpduBatch {
 public:
  static constexpr size_t kMaxFpdus = 64;
  static constexpr size_t kMaxIov = 256;
  static constexpr size_t kMaxBytes = 256 * 1024;  // no more is laid out ahead of the socket
  static constexpr size_t kMaxStaged = kMaxBytes;  // stable copies, a batch of them

  // Nothing left to send.
  bool empty() const { return sent_ == size_; }
  // Room for one more FPDU of up to `iov` iovecs (the encoder's worst case).
  bool has_room(size_t iov) const {
    return fpdus_ < kMaxFpdus && iov_count_ + iov <= kMaxIov && size_ < kMaxBytes && staged_ < kMaxStaged;
  }
  // Lays out the encoder's next FPDU (has_room(2 + payload iovecs) checked by the caller);
  // when it ends the message, `tag` is returned by take_sent() once its bytes left.
  // False when the encoder had nothing more.
  bool add(FpduEncoder& encoder, uint8_t tag);
  // One sendmsg of what is left (`flags` as for sendmsg): its result. An error other than
  // EAGAIN loses the rest (the socket is gone), as the caller then ends the connection.
  ssize_t send(int fd, int flags);
  // Calls f(tag) for every message whose bytes have all left since the last call, in order.
  template <class F>
  void take_sent(F&& f) {
    while (taken_ < fpdus_ && fpdu_[taken_].end <= sent_) {
      if (fpdu_[taken_].ends_message) f(fpdu_[taken_].tag);
      ++taken_;
    }
    if (taken_ == fpdus_ && sent_ == size_) clear();
  }
  // Keeps only what the peer must get for the stream to stay framed: the FPDU in progress.
  // Calls f(tag) for every message end dropped, the last first.
  template <class F>
  void cut(F&& f) {
    size_t keep = taken_;
    while (keep < fpdus_ && start_of(keep) < sent_) ++keep;  // begun: finishes
    for (size_t i = fpdus_; i > keep; --i)
      if (fpdu_[i - 1].ends_message) f(fpdu_[i - 1].tag);
    fpdus_ = keep;
    size_ = keep == 0 ? 0 : fpdu_[keep - 1].end;
    iov_count_ = keep == 0 ? 0 : fpdu_[keep - 1].iov_end;
  }
  size_t bytes_left() const { return size_ - sent_; }

 private:
  struct Fpdu {
    size_t end = 0;      // byte offset in the batch just past it
    size_t iov_end = 0;  // iovec index just past it
    bool ends_message = false;
    uint8_t tag = 0;
  };
  size_t start_of(size_t i) const { return i == 0 ? 0 : fpdu_[i - 1].end; }
  void clear() { fpdus_ = taken_ = iov_count_ = iov_at_ = 0, size_ = sent_ = staged_ = 0; }

  FpduFrame frame_[kMaxFpdus];
  Fpdu fpdu_[kMaxFpdus];
  iovec iov_[kMaxIov];
  size_t fpdus_ = 0;
  size_t taken_ = 0;     // FPDUs handed to take_sent
  size_t iov_count_ = 0;
  size_t iov_at_ = 0;    // the first iovec not wholly sent (trimmed in place)
  size_t size_ = 0;
  size_t sent_ = 0;
  // Copies of stable_copy payloads, until the batch is sent: allocated at the first one
  // (a connection that never answers a read with CRC on never pays for it).
  std::unique_ptr<uint8_t[]> stage_;
  uint8_t* stage_base_ = nullptr;  // its first cache line
  size_t staged_ = 0;
};

// The wire size of the whole message; 0 when it is not valid.
size_t encoded_size(const TxOptions& options, const TxMessage& message);
// The whole message into one buffer, payload copied (for small messages and tests);
// returns its size, or 0 when invalid or `out` is too small.
size_t encode_message(const TxOptions& options, const TxMessage& message, std::span<uint8_t> out);

}  // namespace softndk::fabric::tcp
