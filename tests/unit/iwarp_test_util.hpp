// Helpers for the iWARP wire tests: a bitwise CRC32c to check ISA-L against, a sink that
// rebuilds messages from what the parser reports, and stream chunkings.
#pragma once

#include <gtest/gtest.h>
#include <sys/uio.h>

#include <cstdint>
#include <map>
#include <random>
#include <span>
#include <tuple>
#include <vector>

#include "fabric/tcp/iwarp_rx.hpp"
#include "fabric/tcp/iwarp_tx.hpp"
#include "fabric/tcp/iwarp_wire.hpp"

namespace iwarp_test {

using namespace softndk::fabric::tcp;
using Bytes = std::vector<uint8_t>;

// CRC32c bit by bit (reflected polynomial 0x82F63B78), independent of ISA-L.
inline uint32_t reference_crc32c(std::span<const uint8_t> bytes) {
  uint32_t crc = ~0u;
  for (uint8_t b : bytes) {
    crc ^= b;
    for (int i = 0; i < 8; ++i) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

inline Bytes pattern(size_t n, uint32_t seed) {
  Bytes b(n);
  std::mt19937 r(seed);
  for (auto& x : b) x = static_cast<uint8_t>(r());
  return b;
}

// `data` cut into iovecs of the given sizes (the last one takes the rest).
inline std::vector<iovec> split_iov(Bytes& data, std::initializer_list<size_t> sizes) {
  std::vector<iovec> v;
  size_t at = 0;
  for (size_t s : sizes) {
    if (at >= data.size()) break;
    const size_t n = std::min(s, data.size() - at);
    v.push_back({data.data() + at, n});
    at += n;
  }
  if (at < data.size()) v.push_back({data.data() + at, data.size() - at});
  return v;
}

inline Bytes encode(const TxOptions& o, const TxMessage& m) {
  Bytes out(encoded_size(o, m));
  EXPECT_NE(out.size(), 0u);
  EXPECT_EQ(encode_message(o, m, out), out.size());
  return out;
}

// What the parser reported, rebuilt into messages, with the protocol of the sink checked
// (begin, payload in order, end).
struct RecordingSink : FpduSink {
  struct Message {
    Opcode opcode;
    uint32_t stag = 0;
    uint64_t to = 0;
    uint32_t qn = 0, msn = 0, invalidate_stag = 0;
    ReadRequest read_request;
    TerminateInfo terminate;
    Bytes data;
    bool complete = false;
  };
  std::vector<Message> messages;  // in the order their first segment began
  std::vector<Segment> segments;  // every ended segment
  bool in_segment = false;
  uint32_t expect_offset = 0;
  std::map<std::tuple<bool, uint32_t, uint32_t>, size_t> open;  // (tagged, qn/stag, msn) -> index
  bool strict = true;  // check what a valid stream holds (message continuity)
  // Verdicts to inject
  Verdict on_begin = kAccept, on_payload = kAccept, on_end = kAccept;

  Message& message_of(const Segment& s) {
    const auto key = s.tagged ? std::make_tuple(true, s.stag, 0u) : std::make_tuple(false, s.qn, s.msn);
    auto it = open.find(key);
    if (it != open.end()) return messages[it->second];
    Message m;
    m.opcode = s.opcode;
    m.stag = s.stag;
    m.to = s.to;
    m.qn = s.qn;
    m.msn = s.msn;
    m.invalidate_stag = s.invalidate_stag;
    m.read_request = s.read_request;
    messages.push_back(m);
    open[key] = messages.size() - 1;
    return messages.back();
  }

  Verdict begin_segment(const Segment& s) override {
    EXPECT_FALSE(in_segment);
    in_segment = true;
    expect_offset = 0;
    Message& m = message_of(s);
    if (strict) {  // what a valid stream holds; the parser's calls are checked always
      EXPECT_EQ(m.opcode, s.opcode);
      if (s.tagged) {
        EXPECT_EQ(s.to, m.to + m.data.size());
      } else {
        EXPECT_EQ(s.mo, m.data.size());
      }
    }
    return on_begin;
  }
  Verdict payload(const Segment& s, uint32_t offset, std::span<const uint8_t> bytes) override {
    EXPECT_TRUE(in_segment);
    EXPECT_EQ(opcode_info(s.opcode).body, Body::kData);
    EXPECT_EQ(offset, expect_offset);
    EXPECT_FALSE(bytes.empty());
    expect_offset += static_cast<uint32_t>(bytes.size());
    EXPECT_LE(expect_offset, s.payload_length);
    Message& m = message_of(s);
    m.data.insert(m.data.end(), bytes.begin(), bytes.end());
    return on_payload;
  }
  Verdict end_segment(const Segment& s) override {
    EXPECT_TRUE(in_segment);
    // Only data reaches payload(); a Terminate's body is decoded by the parser.
    EXPECT_EQ(expect_offset, opcode_info(s.opcode).body == Body::kData ? s.payload_length : 0u);
    in_segment = false;
    segments.push_back(s);
    Message& m = message_of(s);
    if (s.opcode == Opcode::kTerminate) m.terminate = s.terminate;
    if (s.last) {
      m.complete = true;
      open.erase(s.tagged ? std::make_tuple(true, s.stag, 0u) : std::make_tuple(false, s.qn, s.msn));
    }
    return on_end;
  }
};

// Chunkings of a stream of `n` bytes, as the sizes of consecutive pieces.
inline std::vector<size_t> whole(size_t n) { return {n}; }
inline std::vector<size_t> bytewise(size_t n) { return std::vector<size_t>(n, 1); }
inline std::vector<size_t> random_splits(size_t n, uint32_t seed, size_t max_piece = 97) {
  std::mt19937 r(seed);
  std::vector<size_t> v;
  while (n > 0) {
    const size_t k = std::min(n, 1 + r() % max_piece);
    v.push_back(k);
    n -= k;
  }
  return v;
}

// Feeds `stream` in pieces; returns the bytes consumed.
inline size_t feed(FpduParser& p, FpduSink& sink, const Bytes& stream, const std::vector<size_t>& pieces) {
  size_t at = 0, consumed = 0;
  for (size_t k : pieces) {
    const size_t n = p.feed(std::span(stream).subspan(at, k), sink);
    consumed += n;
    if (n < k) {
      EXPECT_TRUE(p.failed());
      break;
    }
    at += k;
  }
  return consumed;
}

}  // namespace iwarp_test
