#include "fabric/tcp/iwarp_tx.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace softndk::fabric::tcp {

namespace {

const OpcodeInfo& info_of(Opcode op) {
  return kOpcodes[static_cast<uint8_t>(op) & rdmap_ctrl::kOpcodeMask];
}

size_t terminate_body_size(const TerminateInfo& t) {
  uint8_t body[kTerminateMaxBody];
  return encode_terminate(t, body);
}

}  // namespace

FpduEncoder::FpduEncoder(const TxOptions& options, const TxMessage& message)
    : options_(options), message_(message), info_(info_of(message.opcode)) {
  uint64_t total = 0;
  for (const iovec& v : message.payload) total += v.iov_len;
  header_length_ = sizeof(MpaFpduHeader) + info_.header_length();
  if (info_.body == Body::kTerminate)
    header_length_ += terminate_body_size(message.terminate) - sizeof(TerminateControl);
  valid_ = info_.valid() && options.max_fpdu >= kMinFpdu && total <= UINT32_MAX &&
           (info_.body == Body::kData || total == 0);
  if (valid_) {
    // RFC 5044: a DDP segment is at most MULPDU bytes.
    max_chunk_ = mpa_mulpdu(options.max_fpdu) - (header_length_ - sizeof(MpaFpduHeader));
  }
  remaining_ = total;
  done_ = !valid_;
}

void FpduEncoder::copy_payload(uint8_t* stage, size_t length, Crc32c& crc) {
  // In slices that stay in L1 between the copy and the CRC: the source is read once.
  constexpr size_t kSlice = 16 * 1024;
  const auto payload = message_.payload;
  for (size_t done = 0; done < length && iov_index_ < payload.size();) {
    const iovec& v = payload[iov_index_];
    const size_t take = std::min({v.iov_len - iov_offset_, length - done, kSlice});
    std::memcpy(stage + done, static_cast<const uint8_t*>(v.iov_base) + iov_offset_, take);
    crc.update(stage + done, take);
    done += take;
    iov_offset_ += take;
    if (iov_offset_ == v.iov_len) ++iov_index_, iov_offset_ = 0;
  }
}

size_t FpduEncoder::next(FpduFrame& frame, std::span<iovec> out, uint8_t* stage) {
  if (done_ || out.size() < (remaining_ > 0 ? 3u : 2u)) return 0;
  if (!copies_payload()) stage = nullptr;
  uint8_t* const stage_start = stage;

  // Payload pieces first (slots 1..), so the header knows the segment's length and L; a
  // staged payload is always a full chunk (one iovec), copied below with its CRC.
  const uint64_t cap = std::min<uint64_t>(remaining_, max_chunk_);
  size_t used = 1, chunk = 0;
  const auto payload = message_.payload;
  if (stage != nullptr) chunk = cap;
  while (stage == nullptr && chunk < cap && used + 1 < out.size() && iov_index_ < payload.size()) {
    const iovec& v = payload[iov_index_];
    const size_t take = std::min<uint64_t>(v.iov_len - iov_offset_, cap - chunk);
    if (take > 0) out[used++] = {static_cast<uint8_t*>(v.iov_base) + iov_offset_, take};
    chunk += take;
    iov_offset_ += take;
    if (iov_offset_ == v.iov_len) ++iov_index_, iov_offset_ = 0;
  }
  const bool last = chunk == remaining_;

  uint8_t* h = frame.header;
  size_t at = sizeof(MpaFpduHeader);
  if (info_.tagged) {
    DdpTaggedHeader d;
    d.ddp_control = ddp_control(true, last);
    d.rdmap_control = rdmap_control(message_.opcode);
    d.stag.set(message_.stag);
    d.to.set(message_.to + offset_);
    store_layout(h + at, d);
    at += sizeof d;
  } else {
    DdpUntaggedHeader d;
    d.ddp_control = ddp_control(false, last);
    d.rdmap_control = rdmap_control(message_.opcode);
    d.rsvd_ulp.set(info_.invalidate ? message_.invalidate_stag : 0);
    d.qn.set(info_.queue);
    d.msn.set(message_.msn);
    d.mo.set(static_cast<uint32_t>(offset_));
    store_layout(h + at, d);
    at += sizeof d;
  }
  if (info_.body == Body::kReadRequest) {
    store_layout(h + at, encode_read_request(message_.read_request));
    at += sizeof(RdmaReadRequestHeader);
  } else if (info_.body == Body::kTerminate) {
    uint8_t body[kTerminateMaxBody];
    const size_t n = encode_terminate(message_.terminate, body);
    std::memcpy(h + at, body, n);
    at += n;
  }
  const uint32_t ulpdu = static_cast<uint32_t>(at - sizeof(MpaFpduHeader) + chunk);
  MpaFpduHeader m;
  m.ulpdu_length.set(static_cast<uint16_t>(ulpdu));
  store_layout(h, m);
  out[0] = {h, at};

  const uint32_t pad = mpa_pad(ulpdu);
  uint8_t* t = frame.trailer;
  std::memset(t, 0, sizeof frame.trailer);
  if (options_.crc) {
    Crc32c crc;
    crc.update(h, at);
    if (stage != nullptr) {
      // The copy starts at the source's offset in a cache line: the two stay mutually
      // aligned, which the string copy needs to run at full speed.
      const iovec& from = message_.payload[iov_index_];
      stage += reinterpret_cast<uintptr_t>(static_cast<uint8_t*>(from.iov_base) + iov_offset_) % kStageAlign;
      copy_payload(stage, chunk, crc);
      out[used++] = {stage, chunk};
    }
    for (size_t i = 1; i < used; ++i)
      if (out[i].iov_base != stage) crc.update(static_cast<const uint8_t*>(out[i].iov_base), out[i].iov_len);
    crc.update(t, pad);  // PAD is zero
    crc.store(t + pad);
  }
  out[used++] = {t, pad + kMpaCrcSize};

  offset_ += chunk;
  remaining_ -= chunk;
  done_ = last;
  fpdu_size_ = at + chunk + pad + kMpaCrcSize;
  fpdu_payload_ = chunk;
  stage_used_ = stage != nullptr ? static_cast<size_t>(stage - stage_start) + chunk : 0;
  return used;
}

bool FpduBatch::add(FpduEncoder& encoder, uint8_t tag) {
  uint8_t* stage = nullptr;
  if (encoder.copies_payload()) {
    if (!stage_) {
      stage_ = std::make_unique_for_overwrite<uint8_t[]>(kMaxStaged + kStageRoom + kStageAlign);
      stage_base_ = stage_.get() + (kStageAlign - reinterpret_cast<uintptr_t>(stage_.get()) % kStageAlign);
    }
    staged_ = (staged_ + kStageAlign - 1) / kStageAlign * kStageAlign;
    stage = stage_base_ + staged_;  // has_room: staged_ < kMaxStaged before rounding up
  }
  const size_t n = encoder.next(frame_[fpdus_], {iov_ + iov_count_, kMaxIov - iov_count_}, stage);
  if (n == 0) return false;
  staged_ += encoder.stage_used();
  iov_count_ += n;
  size_ += encoder.fpdu_size();
  fpdu_[fpdus_++] = Fpdu{size_, iov_count_, encoder.done(), tag};
  return true;
}

ssize_t FpduBatch::send(int fd, int flags) {
  msghdr msg{};
  msg.msg_iov = iov_ + iov_at_;
  msg.msg_iovlen = iov_count_ - iov_at_;
  const ssize_t n = sendmsg(fd, &msg, flags);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) sent_ = size_;  // lost with the socket
    return n;
  }
  sent_ += static_cast<size_t>(n);
  for (size_t left = static_cast<size_t>(n); left > 0 && iov_at_ < iov_count_;) {
    iovec& v = iov_[iov_at_];
    const size_t piece = std::min(left, v.iov_len);
    v.iov_base = static_cast<uint8_t*>(v.iov_base) + piece;
    v.iov_len -= piece;
    left -= piece;
    if (v.iov_len == 0) ++iov_at_;
  }
  return n;
}

size_t encoded_size(const TxOptions& options, const TxMessage& message) {
  FpduEncoder e(options, message);
  if (!e.valid()) return 0;
  const OpcodeInfo& info = info_of(message.opcode);
  size_t header = info.header_length();
  if (info.body == Body::kTerminate)
    header += terminate_body_size(message.terminate) - sizeof(TerminateControl);
  const uint64_t total = e.remaining();
  if (total == 0) return mpa_fpdu_size(static_cast<uint32_t>(header));
  const uint64_t chunk = mpa_mulpdu(options.max_fpdu) - header;
  const uint64_t full = total / chunk, rest = total % chunk;
  return full * mpa_fpdu_size(static_cast<uint32_t>(header + chunk)) +
         (rest ? mpa_fpdu_size(static_cast<uint32_t>(header + rest)) : 0);
}

size_t encode_message(const TxOptions& options, const TxMessage& message, std::span<uint8_t> out) {
  const size_t size = encoded_size(options, message);
  if (size == 0 || out.size() < size) return 0;
  FpduEncoder e(options, message);
  std::vector<iovec> iov(message.payload.size() + 2);
  FpduFrame frame;
  size_t at = 0;
  while (!e.done()) {
    const size_t n = e.next(frame, iov);
    for (size_t i = 0; i < n; ++i) {
      std::memcpy(out.data() + at, iov[i].iov_base, iov[i].iov_len);
      at += iov[i].iov_len;
    }
  }
  return at;
}

}  // namespace softndk::fabric::tcp
