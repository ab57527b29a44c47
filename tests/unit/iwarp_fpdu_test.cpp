// Unit tests for FPDU transmit and receive: every message type encoded and parsed back in
// every chunking, frames byte for byte, malformed streams and their Terminate codes, and a
// seeded mutation run for memory safety (the sanitizer build checks it).

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>

#include "fabric/tcp/iwarp_rx.hpp"
#include "fabric/tcp/iwarp_tx.hpp"
#include "iwarp_test_util.hpp"

namespace {

using namespace softndk::fabric::tcp;
using namespace iwarp_test;

constexpr Opcode kAll[] = {Opcode::kRdmaWrite, Opcode::kRdmaReadRequest, Opcode::kRdmaReadResponse,
                           Opcode::kSend, Opcode::kSendWithInvalidate, Opcode::kSendWithSe,
                           Opcode::kSendWithSeAndInvalidate, Opcode::kTerminate};

TxMessage message(Opcode op, std::span<const iovec> payload) {
  TxMessage m;
  m.opcode = op;
  m.stag = 0x11223344;
  m.to = 0x1000;
  m.msn = 1;
  m.invalidate_stag = 0xabcdef01;
  m.read_request = {0x01020304, 0x1111222233334444ull, 65536, 0x05060708, 0x5555666677778888ull};
  m.terminate.code = term::kDdpTaggedBaseOrBounds;
  m.payload = payload;
  return m;
}

// Parses `stream` in `pieces` and checks it rebuilds exactly message `m` with `data`.
void expect_round_trip(const Bytes& stream, const std::vector<size_t>& pieces, bool crc,
                       const TxMessage& m, const Bytes& data, const char* what) {
  SCOPED_TRACE(what);
  FpduParser p({.crc = crc});
  RecordingSink sink;
  EXPECT_EQ(feed(p, sink, stream, pieces), stream.size());
  ASSERT_FALSE(p.failed()) << p.error().reason << ": " << describe(p.error().terminate.code);
  EXPECT_TRUE(p.at_boundary());
  ASSERT_EQ(sink.messages.size(), 1u);
  const auto& got = sink.messages[0];
  const OpcodeInfo& info = opcode_info(m.opcode);
  EXPECT_TRUE(got.complete);
  EXPECT_EQ(got.opcode, m.opcode);
  EXPECT_EQ(got.data, data);
  if (info.tagged) {
    EXPECT_EQ(got.stag, m.stag);
    EXPECT_EQ(got.to, m.to);
  } else {
    EXPECT_EQ(got.qn, info.queue);
    EXPECT_EQ(got.msn, m.msn);
    EXPECT_EQ(got.invalidate_stag, info.invalidate ? m.invalidate_stag : 0u);
  }
  if (m.opcode == Opcode::kRdmaReadRequest) {
    EXPECT_EQ(got.read_request, m.read_request);
  }
  if (m.opcode == Opcode::kTerminate) {
    EXPECT_EQ(got.terminate.code, m.terminate.code);
  }
  // Segment boundaries: every segment but the last is full, first/last flags in order.
  for (size_t i = 0; i < sink.segments.size(); ++i) {
    EXPECT_EQ(sink.segments[i].first, i == 0);
    EXPECT_EQ(sink.segments[i].last, i + 1 == sink.segments.size());
  }
}

TEST(IwarpFpdu, EveryMessageRoundTripsInEveryChunking) {
  for (Opcode op : kAll) {
    const bool data = opcode_info(op).body == Body::kData;
    for (size_t size : {size_t{0}, size_t{1}, size_t{3}, size_t{1000}, size_t{70001}}) {
      if (!data && size > 0) continue;
      Bytes payload = pattern(size, static_cast<uint32_t>(size) + static_cast<uint32_t>(op));
      const auto iov = split_iov(payload, {1, 0, 700, 5000});
      for (uint32_t mss : {kMinFpdu, uint32_t{1460}, uint32_t{9000}}) {
        if (size > 10000 && mss == kMinFpdu) continue;  // thousands of FPDUs; covered below
        for (bool crc : {false, true}) {
          const TxOptions o{crc, mss};
          const TxMessage m = message(op, iov);
          const Bytes stream = encode(o, m);
          const std::string what = std::string(opcode_info(op).name) + " size " +
                                   std::to_string(size) + " mss " + std::to_string(mss) +
                                   (crc ? " crc" : "");
          expect_round_trip(stream, whole(stream.size()), crc, m, payload, (what + " whole").c_str());
          expect_round_trip(stream, random_splits(stream.size(), 42), crc, m, payload,
                            (what + " random").c_str());
          if (size <= 1000) {
            expect_round_trip(stream, bytewise(stream.size()), crc, m, payload,
                              (what + " bytewise").c_str());
          }
          // Each FPDU's CRC alone in its own chunk (as a TCP segment boundary would put it).
          std::vector<size_t> cuts;
          FpduEncoder e(o, m);
          std::array<iovec, 16> v;
          FpduFrame f;
          while (size_t n = e.next(f, v)) {
            (void)n;
            cuts.push_back(e.fpdu_size() - kMpaCrcSize);
            cuts.push_back(kMpaCrcSize);
          }
          expect_round_trip(stream, cuts, crc, m, payload, (what + " crc apart").c_str());
        }
      }
    }
  }
}

TEST(IwarpFpdu, SegmentationFollowsTheMss) {
  Bytes payload = pattern(1000, 1);
  const iovec one{payload.data(), payload.size()};
  const TxOptions o{true, kMinFpdu};
  // MULPDU = 128 - 6 = 122: 108 payload bytes per tagged FPDU, 104 per untagged.
  for (auto [op, per] : {std::pair{Opcode::kRdmaWrite, 108u}, std::pair{Opcode::kSend, 104u}}) {
    FpduEncoder e(o, message(op, {&one, 1}));
    ASSERT_TRUE(e.valid());
    std::array<iovec, 3> v;
    FpduFrame f;
    size_t fpdus = 0, sent = 0;
    while (size_t n = e.next(f, v)) {
      ASSERT_EQ(n, 3u);
      ++fpdus;
      sent += v[1].iov_len;
      // The payload is referenced, not copied.
      EXPECT_EQ(static_cast<uint8_t*>(v[1].iov_base), payload.data() + sent - v[1].iov_len);
      if (!e.done()) {
        EXPECT_EQ(e.fpdu_size(), 128u);
        EXPECT_EQ(v[1].iov_len, per);
        EXPECT_EQ(v[2].iov_len, kMpaCrcSize);  // no PAD in a full FPDU
      } else {
        EXPECT_LE(e.fpdu_size(), 128u);
      }
    }
    EXPECT_EQ(sent, payload.size());
    EXPECT_EQ(fpdus, (payload.size() + per - 1) / per);
  }
}

TEST(IwarpFpdu, FewIovecsShortenSegments) {
  Bytes payload = pattern(300, 2);
  const auto iov = split_iov(payload, {10, 20, 30, 40});
  const TxMessage m = message(Opcode::kSendWithSe, iov);
  const TxOptions o{true, 1460};
  FpduEncoder e(o, m);
  std::array<iovec, 4> v;  // at most 2 payload pieces per FPDU
  FpduFrame f;
  Bytes stream;
  size_t fpdus = 0;
  while (size_t n = e.next(f, v)) {
    ++fpdus;
    EXPECT_LE(n, 4u);
    for (size_t i = 0; i < n; ++i) {
      const auto* b = static_cast<const uint8_t*>(v[i].iov_base);
      stream.insert(stream.end(), b, b + v[i].iov_len);
    }
  }
  EXPECT_EQ(fpdus, 3u);  // 10+20, 30+40, 200
  std::array<iovec, 2> tiny;
  FpduEncoder none(o, m);
  EXPECT_EQ(none.next(f, tiny), 0u);  // a payload needs 3 slots
  expect_round_trip(stream, random_splits(stream.size(), 5, 7), true, m, payload, "few iovecs");
}

TEST(IwarpFpdu, InvalidMessagesAreRefused) {
  Bytes payload = pattern(10, 3);
  const iovec one{payload.data(), payload.size()};
  EXPECT_FALSE(FpduEncoder({false, 1460}, message(Opcode::kRdmaReadRequest, {&one, 1})).valid());
  EXPECT_FALSE(FpduEncoder({false, 1460}, message(Opcode::kTerminate, {&one, 1})).valid());
  EXPECT_FALSE(FpduEncoder({false, kMinFpdu - 1}, message(Opcode::kSend, {})).valid());
  TxMessage reserved = message(Opcode::kSend, {});
  reserved.opcode = static_cast<Opcode>(9);
  EXPECT_FALSE(FpduEncoder({false, 1460}, reserved).valid());
  EXPECT_EQ(encoded_size({false, 1460}, reserved), 0u);
  Bytes out(100);
  EXPECT_EQ(encode_message({false, 1460}, message(Opcode::kSend, {&one, 1}), std::span(out).first(10)), 0u);
}

TEST(IwarpFpdu, ZeroLengthSendBytes) {
  const Bytes wire = encode({false, 1460}, message(Opcode::kSend, {}));
  const Bytes expect = {
      0x00, 0x12,              // ULPDU_Length 18
      0x41, 0x43,              // untagged, last, DDP v1; RDMAP v1, Send
      0x00, 0x00, 0x00, 0x00,  // RsvdULP
      0x00, 0x00, 0x00, 0x00,  // QN 0
      0x00, 0x00, 0x00, 0x01,  // MSN 1
      0x00, 0x00, 0x00, 0x00,  // MO 0
      0x00, 0x00, 0x00, 0x00,  // no PAD (2 + 18 = 20); CRC field zero: not negotiated
  };
  EXPECT_EQ(wire, expect);
}

TEST(IwarpFpdu, WriteWithCrcBytes) {
  Bytes abc = {'a', 'b', 'c'};
  const iovec one{abc.data(), abc.size()};
  TxMessage m = message(Opcode::kRdmaWrite, {&one, 1});
  m.stag = 0x0a0b0c0d;
  m.to = 0x0102030405060708ull;
  const Bytes wire = encode({true, 1460}, m);
  Bytes expect = {
      0x00, 0x11,                                      // ULPDU_Length 14 + 3
      0xc1, 0x40,                                      // tagged, last; RDMA Write
      0x0a, 0x0b, 0x0c, 0x0d,                          // STag
      0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,  // TO
      'a',  'b',  'c',  0x00,                          // payload, 1 byte of PAD
  };
  const uint32_t crc = reference_crc32c(expect);
  for (int i = 0; i < 4; ++i) expect.push_back(static_cast<uint8_t>(crc >> (8 * i)));
  EXPECT_EQ(wire, expect);
}

TEST(IwarpFpdu, ReadRequestAndTerminateBytes) {
  const Bytes rr = encode({false, 1460}, message(Opcode::kRdmaReadRequest, {}));
  ASSERT_EQ(rr.size(), 2u + 46u + 0u + 4u);  // 2 + 46 = 48: no PAD
  EXPECT_EQ(rr[0], 0x00);
  EXPECT_EQ(rr[1], 46);
  EXPECT_EQ(rr[3], 0x41);
  EXPECT_EQ(rr[11], 1);  // QN 1
  EXPECT_EQ(Bytes(rr.begin() + 20, rr.begin() + 24), (Bytes{0x01, 0x02, 0x03, 0x04}));  // sink STag
  EXPECT_EQ(Bytes(rr.begin() + 32, rr.begin() + 36), (Bytes{0x00, 0x01, 0x00, 0x00}));  // size

  TxMessage t = message(Opcode::kTerminate, {});
  t.terminate.code = term::kRdmapInvalidStag;
  const Bytes term = encode({false, 1460}, t);
  ASSERT_EQ(term.size(), 2u + 22u + 0u + 4u);
  EXPECT_EQ(term[1], 22);
  EXPECT_EQ(term[3], 0x47);
  EXPECT_EQ(term[11], 2);  // QN 2
  EXPECT_EQ(Bytes(term.begin() + 20, term.begin() + 24), (Bytes{0x01, 0x00, 0x00, 0x00}));
}

TEST(IwarpFpdu, InterleavedMessages) {
  // A Write, a Send and a Read Request cut into FPDUs and interleaved, as a sender may
  // alternate tagged and untagged messages.
  Bytes w = pattern(5000, 11), s = pattern(3000, 12);
  const iovec wi{w.data(), w.size()}, si{s.data(), s.size()};
  const TxOptions o{true, 1000};
  TxMessage write = message(Opcode::kRdmaWrite, {&wi, 1});
  TxMessage send = message(Opcode::kSend, {&si, 1});
  TxMessage read = message(Opcode::kRdmaReadRequest, {});
  FpduEncoder ew(o, write), es(o, send), er(o, read);
  Bytes stream;
  auto take = [&](FpduEncoder& e) {
    std::array<iovec, 8> v;
    FpduFrame f;
    const size_t n = e.next(f, v);
    for (size_t i = 0; i < n; ++i) {
      const auto* b = static_cast<const uint8_t*>(v[i].iov_base);
      stream.insert(stream.end(), b, b + v[i].iov_len);
    }
  };
  take(ew);
  take(es);
  take(er);
  while (!ew.done() || !es.done()) {
    take(es);
    take(ew);
  }
  for (const auto& pieces : {whole(stream.size()), random_splits(stream.size(), 9)}) {
    FpduParser p({.crc = true});
    RecordingSink sink;
    EXPECT_EQ(feed(p, sink, stream, pieces), stream.size());
    ASSERT_FALSE(p.failed()) << p.error().reason;
    ASSERT_EQ(sink.messages.size(), 3u);
    EXPECT_EQ(sink.messages[0].data, w);
    EXPECT_EQ(sink.messages[1].data, s);
    EXPECT_EQ(sink.messages[2].read_request, read.read_request);
    for (const auto& m : sink.messages) EXPECT_TRUE(m.complete);
  }
}

// A connected pair of stream sockets, the sender's buffer small so that sends come short.
struct SocketPair {
  int fd[2] = {-1, -1};
  SocketPair() {
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
    const int small = 4096;
    setsockopt(fd[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  }
  ~SocketPair() {
    for (int f : fd) close(f);
  }
  // Everything readable now, appended to `out`.
  void drain(Bytes& out) const {
    uint8_t buffer[65536];
    for (ssize_t n; (n = recv(fd[1], buffer, sizeof buffer, 0)) > 0;) out.insert(out.end(), buffer, buffer + n);
  }
};

TEST(IwarpFpduBatch, ManyMessagesGoOutTogetherTheirTagsOnceTheirBytesLeft) {
  // Twenty sends and writes of different sizes, laid out in a batch while it has room;
  // sent through a socket that takes a few KiB at a time. A message's tag comes back only
  // once its last byte left, in order, and the stream parses back into every message.
  const TxOptions o{true, 1000};
  std::vector<Bytes> data;
  std::vector<iovec> iov;
  std::vector<TxMessage> messages;
  data.reserve(20);
  iov.reserve(20);
  for (uint32_t i = 0; i < 20; ++i) {
    data.push_back(pattern(1 + i * 613 % 5000, i));
    iov.push_back({data.back().data(), data.back().size()});
    TxMessage m = message(i % 2 ? Opcode::kRdmaWrite : Opcode::kSend, {&iov.back(), 1});
    m.msn = i / 2 + 1;
    m.stag = 0x100 + i;
    messages.push_back(m);
  }
  SocketPair pair;
  auto batch = std::make_unique<FpduBatch>();
  std::vector<uint8_t> tags;
  Bytes stream;
  size_t next = 0, sends = 0;
  std::optional<FpduEncoder> encoder;
  while (next < messages.size() || encoder || !batch->empty()) {
    while ((encoder || next < messages.size()) && batch->has_room(3)) {
      if (!encoder) encoder.emplace(o, messages[next++]);
      ASSERT_TRUE(batch->add(*encoder, static_cast<uint8_t>(next - 1)));
      if (encoder->done()) encoder.reset();
    }
    const ssize_t n = batch->send(pair.fd[0], MSG_DONTWAIT);
    ASSERT_TRUE(n >= 0 || errno == EAGAIN) << std::strerror(errno);
    ++sends;
    batch->take_sent([&](uint8_t tag) { tags.push_back(tag); });
    // Every message handed back has left whole: the stream so far holds it.
    pair.drain(stream);
    size_t ended = 0;
    for (size_t i = 0; i < tags.size(); ++i) ended += encoded_size(o, messages[i]);
    EXPECT_LE(ended, stream.size());
  }
  pair.drain(stream);
  ASSERT_EQ(tags.size(), messages.size());
  for (size_t i = 0; i < tags.size(); ++i) EXPECT_EQ(tags[i], i);
  size_t total = 0;
  for (const TxMessage& m : messages) total += encoded_size(o, m);
  EXPECT_EQ(stream.size(), total);
  EXPECT_LT(sends, total / 1000) << "one sendmsg per FPDU or worse";
  FpduParser p({.crc = true});
  RecordingSink sink;
  EXPECT_EQ(feed(p, sink, stream, whole(stream.size())), stream.size());
  ASSERT_FALSE(p.failed()) << p.error().reason;
  ASSERT_EQ(sink.messages.size(), messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    EXPECT_TRUE(sink.messages[i].complete);
    EXPECT_EQ(sink.messages[i].data, data[i]) << "message " << i;
  }
}

// A Read Response's source may change while it is sent (stable_copy): with CRC on, each
// FPDU's payload is copied as it is laid out, so what the socket takes is the bytes the
// CRC covers. Here the source is overwritten after one batch was laid out and before it
// was sent: the stream still parses with every CRC good, the FPDUs laid out before carry
// the old bytes and the rest the new. Without stable_copy the same run is a CRC error.
void lay_out_overwrite_send(bool stable_copy, Bytes& stream, Bytes& expected) {
  const TxOptions o{true, 9000};
  Bytes source = pattern(700 * 1024, 7);
  // Several pieces, as a region's extents come.
  const iovec pieces[] = {{source.data(), 100000}, {source.data() + 100000, 1}, {source.data() + 100001, 616799}};
  TxMessage m = message(Opcode::kRdmaReadResponse, pieces);
  m.stable_copy = stable_copy;
  SocketPair pair;
  auto batch = std::make_unique<FpduBatch>();
  FpduEncoder encoder(o, m);
  size_t laid = 0;
  bool overwritten = false;
  while (!encoder.done() || !batch->empty()) {
    while (!encoder.done() && batch->has_room(kMaxFpduPayload / 4096 + 3)) {
      ASSERT_TRUE(batch->add(encoder, 0));
      if (!overwritten) laid += encoder.fpdu_payload();
    }
    if (!overwritten) {  // the consumer writes its memory while the batch waits for the socket
      expected.assign(source.begin(), source.begin() + static_cast<std::ptrdiff_t>(laid));
      for (uint8_t& b : source) b = static_cast<uint8_t>(~b);
      expected.insert(expected.end(), source.begin() + static_cast<std::ptrdiff_t>(laid), source.end());
      overwritten = true;
    }
    const ssize_t n = batch->send(pair.fd[0], MSG_DONTWAIT);
    ASSERT_TRUE(n >= 0 || errno == EAGAIN) << std::strerror(errno);
    batch->take_sent([](uint8_t) {});
    pair.drain(stream);
  }
  pair.drain(stream);
  ASSERT_GT(laid, 0u);
  ASSERT_LT(laid, source.size()) << "the whole message fit one batch: nothing was laid out after the change";
}

TEST(IwarpFpduBatch, StableCopyPayloadIsSentAsLaidOutWithItsCrc) {
  Bytes stream, expected;
  ASSERT_NO_FATAL_FAILURE(lay_out_overwrite_send(true, stream, expected));
  FpduParser p({.crc = true});
  RecordingSink sink;
  EXPECT_EQ(feed(p, sink, stream, whole(stream.size())), stream.size());
  ASSERT_FALSE(p.failed()) << p.error().reason << ": " << describe(p.error().terminate.code);
  ASSERT_EQ(sink.messages.size(), 1u);
  EXPECT_TRUE(sink.messages[0].complete);
  EXPECT_TRUE(sink.messages[0].data == expected) << "the bytes sent are not the bytes laid out";

  // In place, the bytes the CRC was computed over are not those sent.
  Bytes in_place, unused;
  ASSERT_NO_FATAL_FAILURE(lay_out_overwrite_send(false, in_place, unused));
  FpduParser q({.crc = true});
  RecordingSink ignored;
  feed(q, ignored, in_place, whole(in_place.size()));
  EXPECT_TRUE(q.failed());
  EXPECT_EQ(q.error().terminate.code, term::kMpaCrcError);
}

TEST(IwarpFpduBatch, CutKeepsTheFpduInProgressAndDropsTheRest) {
  // Four messages laid out, the socket takes part of them. Cut (the connection ends): the
  // FPDU in progress still goes out whole, nothing after it does, the message ends dropped
  // come back last first, and the stream the peer gets parses to an FPDU boundary.
  const TxOptions o{true, 1000};
  Bytes a = pattern(300, 1), b = pattern(30000, 2), c = pattern(10, 3), d = pattern(10, 4);
  const iovec ai{a.data(), a.size()}, bi{b.data(), b.size()}, ci{c.data(), c.size()}, di{d.data(), d.size()};
  const TxMessage m[] = {message(Opcode::kSend, {&ai, 1}), message(Opcode::kRdmaWrite, {&bi, 1}),
                         message(Opcode::kRdmaWrite, {&ci, 1}), message(Opcode::kRdmaWrite, {&di, 1})};
  auto batch = std::make_unique<FpduBatch>();
  std::vector<size_t> fpdu_end;           // where each FPDU ends in the stream
  std::vector<size_t> message_end;        // where each message ends
  for (uint8_t tag = 0; tag < 4; ++tag) {
    FpduEncoder e(o, m[tag]);
    while (!e.done()) {
      ASSERT_TRUE(batch->add(e, tag));
      fpdu_end.push_back(batch->bytes_left());
    }
    message_end.push_back(batch->bytes_left());
  }
  SocketPair pair;
  const ssize_t n = batch->send(pair.fd[0], MSG_DONTWAIT);
  ASSERT_GT(n, 0);
  ASSERT_LT(static_cast<size_t>(n), message_end[1]) << "the socket took more than this test expects";
  size_t kept = static_cast<size_t>(n);
  for (size_t end : fpdu_end)
    if (end >= kept) {
      kept = end;
      break;
    }
  std::vector<uint8_t> dropped;
  batch->cut([&](uint8_t tag) { dropped.push_back(tag); });
  std::vector<uint8_t> expect_dropped;
  for (int tag = 3; tag >= 0; --tag)
    if (message_end[tag] > kept) expect_dropped.push_back(static_cast<uint8_t>(tag));
  EXPECT_EQ(dropped, expect_dropped);
  EXPECT_EQ(batch->bytes_left(), kept - static_cast<size_t>(n));
  Bytes stream;
  std::vector<uint8_t> sent;
  for (int round = 0; round < 1000 && !batch->empty(); ++round) {
    pair.drain(stream);
    (void)batch->send(pair.fd[0], MSG_DONTWAIT);
    batch->take_sent([&](uint8_t tag) { sent.push_back(tag); });
  }
  pair.drain(stream);
  EXPECT_TRUE(batch->empty());
  EXPECT_EQ(stream.size(), kept);
  EXPECT_EQ(sent.size() + dropped.size(), 4u);
  FpduParser p({.crc = true});
  RecordingSink sink;
  EXPECT_EQ(feed(p, sink, stream, whole(stream.size())), stream.size());
  EXPECT_FALSE(p.failed()) << p.error().reason;
  EXPECT_TRUE(p.at_boundary());
  ASSERT_FALSE(sink.messages.empty());
  EXPECT_EQ(sink.messages[0].data, a);
  EXPECT_FALSE(sink.messages.back().complete) << "the write was cut in the middle";
}

TEST(IwarpFpdu, MsnAdvancesPerMessage) {
  Bytes stream;
  for (uint32_t msn = 1; msn <= 3; ++msn) {
    TxMessage m = message(Opcode::kSend, {});
    m.msn = msn;
    const Bytes one = encode({false, 1460}, m);
    stream.insert(stream.end(), one.begin(), one.end());
  }
  FpduParser p;
  RecordingSink sink;
  EXPECT_EQ(feed(p, sink, stream, whole(stream.size())), stream.size());
  EXPECT_FALSE(p.failed());
  EXPECT_EQ(sink.messages.size(), 3u);
  EXPECT_EQ(p.fpdus(), 3u);
}

TEST(IwarpFpdu, AMessageStartsOnce) {
  // A zero-length segment without L, then the rest of the message: both at MO 0, and only
  // the first starts the message (a receiver takes one posted receive for it). Found by
  // fuzz_fpdu (tests/fuzz/regressions/fpdu/zero_length_segment_then_more.bin).
  const TxMessage m = message(Opcode::kSend, {});
  Bytes stream = encode({false, 1460}, m);
  stream[2] &= static_cast<uint8_t>(~ddp_flag::kLast);
  Bytes data = pattern(10, 7);
  const iovec one{data.data(), data.size()};
  const Bytes rest = encode({false, 1460}, message(Opcode::kSend, {&one, 1}));
  stream.insert(stream.end(), rest.begin(), rest.end());
  for (const auto& pieces : {whole(stream.size()), bytewise(stream.size())}) {
    FpduParser p;
    RecordingSink sink;
    EXPECT_EQ(feed(p, sink, stream, pieces), stream.size());
    ASSERT_FALSE(p.failed()) << p.error().reason;
    ASSERT_EQ(sink.segments.size(), 2u);
    EXPECT_TRUE(sink.segments[0].first);
    EXPECT_FALSE(sink.segments[1].first);
    ASSERT_EQ(sink.messages.size(), 1u);
    EXPECT_EQ(sink.messages[0].data, data);
  }
}

// ---- Malformed streams and their Terminate codes ----

struct Outcome {
  TerminateCode code;
  bool send_terminate;
  bool copied_ddp_header;
};

// Parses `stream` whole, byte by byte and in random pieces; every way must stop with the
// same error.
Outcome parse_error(const Bytes& stream, FpduParser::Options options = {}, RecordingSink sink_template = {}) {
  Outcome first{};
  int round = 0;
  for (const auto& pieces : {whole(stream.size()), bytewise(stream.size()), random_splits(stream.size(), 3, 5)}) {
    FpduParser p(options);
    RecordingSink sink;
    sink.on_begin = sink_template.on_begin;
    sink.on_payload = sink_template.on_payload;
    sink.on_end = sink_template.on_end;
    feed(p, sink, stream, pieces);
    EXPECT_TRUE(p.failed());
    const Outcome o{p.error().terminate.code, p.error().send_terminate, p.error().terminate.d};
    if (round++ == 0) first = o;
    EXPECT_EQ(o.code, first.code);
    EXPECT_EQ(o.send_terminate, first.send_terminate);
    // Nothing after the error reaches the sink.
    EXPECT_FALSE(p.feed(stream, sink) > 0);
  }
  return first;
}

Bytes send_fpdu(uint32_t msn = 1, size_t size = 8, bool crc = false) {
  static Bytes payload = pattern(4096, 4);
  const iovec one{payload.data(), size};
  TxMessage m = message(Opcode::kSend, {&one, size ? size_t{1} : size_t{0}});
  m.msn = msn;
  return encode({crc, 1460}, m);
}

TEST(IwarpFpdu, BadLengths) {
  // ULPDU_Length 4: not even a tagged DDP header.
  Bytes tiny = {0x00, 0x04, 0xc1, 0x40, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(parse_error(tiny).code, term::kRdmapCatastrophicStream);
  // An untagged Send whose ULPDU_Length (16) is below its 18-byte header.
  Bytes s = send_fpdu();
  s[1] = 16;
  EXPECT_EQ(parse_error(s).code, term::kRdmapCatastrophicStream);
  // A Read Request cut to its DDP header.
  Bytes rr = encode({false, 1460}, message(Opcode::kRdmaReadRequest, {}));
  rr[1] = 18;
  EXPECT_EQ(parse_error(rr).code, term::kRdmapCatastrophicStream);
}

TEST(IwarpFpdu, BadVersionsAndOpcodes) {
  Bytes s = send_fpdu();
  s[2] = 0x42;  // DDP version 2, untagged
  EXPECT_EQ(parse_error(s).code, term::kDdpUntaggedInvalidVersion);
  EXPECT_FALSE(parse_error(s).copied_ddp_header);
  Bytes w = encode({false, 1460}, message(Opcode::kRdmaWrite, {}));
  w[2] = 0xc0;  // DDP version 0, tagged
  EXPECT_EQ(parse_error(w).code, term::kDdpTaggedInvalidVersion);
  s = send_fpdu();
  s[3] = 0x83;  // RDMAP version 2
  EXPECT_EQ(parse_error(s).code, term::kRdmapInvalidVersion);
  s[3] = 0x49;  // reserved opcode 9
  EXPECT_EQ(parse_error(s).code, term::kRdmapUnexpectedOpcode);
  s[3] = 0x40;  // RDMA Write in an untagged segment
  EXPECT_EQ(parse_error(s).code, term::kRdmapUnexpectedOpcode);
  w = encode({false, 1460}, message(Opcode::kRdmaWrite, {}));
  w[3] = 0x43;  // a Send in a tagged segment
  EXPECT_EQ(parse_error(w).code, term::kRdmapUnexpectedOpcode);
}

TEST(IwarpFpdu, UntaggedQueueErrors) {
  Bytes s = send_fpdu();
  s[11] = 1;  // QN 1 for a Send
  const Outcome qn = parse_error(s);
  EXPECT_EQ(qn.code, term::kDdpUntaggedInvalidQn);
  EXPECT_TRUE(qn.send_terminate && qn.copied_ddp_header);
  // MSN 3 first, then an MSN 1 followed by MSN 1 again.
  EXPECT_EQ(parse_error(send_fpdu(3)).code, term::kDdpUntaggedMsnRange);
  Bytes two = send_fpdu(1);
  const Bytes again = send_fpdu(1);
  two.insert(two.end(), again.begin(), again.end());
  EXPECT_EQ(parse_error(two).code, term::kDdpUntaggedMsnRange);
  // MO 8 on a message's first segment.
  s = send_fpdu();
  s[19] = 8;
  EXPECT_EQ(parse_error(s).code, term::kDdpUntaggedInvalidMo);
  // MO + length beyond 2^32 (with the MSN checks off).
  s = send_fpdu();
  s[16] = s[17] = s[18] = s[19] = 0xff;
  EXPECT_EQ(parse_error(s, {.check_msn = false}).code, term::kDdpUntaggedInvalidMo);
  // Longer than the receiver's limit.
  EXPECT_EQ(parse_error(send_fpdu(1, 100), {.max_untagged_message = 64}).code,
            term::kDdpUntaggedMessageTooLong);
  // A Send that turns into a Send with SE halfway.
  Bytes big = pattern(3000, 6);
  const iovec one{big.data(), big.size()};
  Bytes stream = encode({false, 1460}, message(Opcode::kSend, {&one, 1}));
  const uint32_t first_ulpdu = uint32_t{stream[0]} << 8 | stream[1];
  stream[mpa_fpdu_size(first_ulpdu) + 3] = rdmap_control(Opcode::kSendWithSe);
  EXPECT_EQ(parse_error(stream).code, term::kRdmapUnexpectedOpcode);
}

TEST(IwarpFpdu, ReadRequestErrors) {
  const Bytes good = encode({false, 1460}, message(Opcode::kRdmaReadRequest, {}));
  Bytes rr = good;
  rr[2] = 0x01;  // L clear: a Read Request is a single segment
  const Outcome l = parse_error(rr);
  EXPECT_EQ(l.code, term::kDdpUntaggedMessageTooLong);
  rr = good;
  rr[19] = 4;  // MO 4
  EXPECT_EQ(parse_error(rr).code, term::kDdpUntaggedInvalidMo);
  rr = good;
  rr[11] = 0;  // QN 0
  EXPECT_EQ(parse_error(rr).code, term::kDdpUntaggedInvalidQn);
  // Four extra bytes after the RDMA header.
  rr = good;
  rr[1] = 50;
  rr.insert(rr.end() - 4, {1, 2, 3, 4});
  EXPECT_EQ(parse_error(rr).code, term::kDdpUntaggedMessageTooLong);
  // Data Source TO + size beyond 2^64: the Terminate copies both headers (M, D, R).
  TxMessage m = message(Opcode::kRdmaReadRequest, {});
  m.read_request.data_source_to = ~0ull - 10;
  const Bytes wrap = encode({false, 1460}, m);
  FpduParser p;
  RecordingSink sink;
  p.feed(wrap, sink);
  ASSERT_TRUE(p.failed());
  const TerminateInfo& t = p.error().terminate;
  EXPECT_EQ(t.code, term::kRdmapToWrap);
  EXPECT_TRUE(t.m && t.d && t.r && t.rdma_header_present);
  EXPECT_EQ(t.ddp_segment_length, 46);
  EXPECT_EQ(Bytes(t.ddp_header, t.ddp_header + 18), Bytes(wrap.begin() + 2, wrap.begin() + 20));
  EXPECT_EQ(Bytes(t.rdma_header, t.rdma_header + 28), Bytes(wrap.begin() + 20, wrap.begin() + 48));
}

TEST(IwarpFpdu, TaggedErrors) {
  Bytes data = pattern(100, 8);
  const iovec one{data.data(), data.size()};
  TxMessage m = message(Opcode::kRdmaWrite, {&one, 1});
  m.to = ~0ull - 50;
  EXPECT_EQ(parse_error(encode({false, 1460}, m)).code, term::kDdpTaggedToWrap);
  // A Write interrupted by a Read Response.
  Bytes big = pattern(3000, 6);
  const iovec bi{big.data(), big.size()};
  FpduEncoder ew({false, 1460}, message(Opcode::kRdmaWrite, {&bi, 1}));
  FpduEncoder er({false, 1460}, message(Opcode::kRdmaReadResponse, {&one, 1}));
  Bytes stream;
  for (FpduEncoder* e : {&ew, &er}) {
    std::array<iovec, 4> v;
    FpduFrame f;
    const size_t n = e->next(f, v);
    for (size_t i = 0; i < n; ++i) {
      const auto* b = static_cast<const uint8_t*>(v[i].iov_base);
      stream.insert(stream.end(), b, b + v[i].iov_len);
    }
  }
  EXPECT_EQ(parse_error(stream).code, term::kRdmapUnexpectedOpcode);
}

TEST(IwarpFpdu, CrcErrors) {
  for (size_t at : {size_t{5}, size_t{20}, size_t{25}, size_t{31}, size_t{33}}) {
    Bytes s = send_fpdu(1, 10, true);  // 2 + 28 + 2 PAD + 4 = 36 bytes
    ASSERT_EQ(s.size(), 36u);
    s[at] ^= 0x01;
    const Outcome o = parse_error(s, {.crc = true});
    EXPECT_EQ(o.code, term::kMpaCrcError) << at;
    EXPECT_FALSE(o.copied_ddp_header);
  }
  // The CRC in a chunk of its own, wrong.
  Bytes s = send_fpdu(1, 10, true);
  s.back() ^= 0x80;
  FpduParser p({.crc = true});
  RecordingSink sink;
  EXPECT_EQ(p.feed(std::span(s).first(s.size() - 4), sink), s.size() - 4);
  EXPECT_FALSE(p.failed());
  EXPECT_TRUE(sink.segments.empty());  // not ended before the CRC
  p.feed(std::span(s).last(4), sink);
  EXPECT_TRUE(p.failed());
  EXPECT_EQ(p.error().terminate.code, term::kMpaCrcError);
  EXPECT_TRUE(sink.segments.empty());
  // Without CRC negotiated the field is not checked.
  FpduParser lax;
  RecordingSink sink2;
  EXPECT_EQ(lax.feed(s, sink2), s.size());
  EXPECT_FALSE(lax.failed());
}

TEST(IwarpFpdu, SinkVerdictsStopTheStream) {
  Bytes data = pattern(100, 9);
  const iovec one{data.data(), data.size()};
  const Bytes w = encode({false, 1460}, message(Opcode::kRdmaWrite, {&one, 1}));
  RecordingSink refuse;
  refuse.on_begin = term::kDdpTaggedInvalidStag;
  Outcome o = parse_error(w, {}, refuse);
  EXPECT_EQ(o.code, term::kDdpTaggedInvalidStag);
  EXPECT_TRUE(o.copied_ddp_header);
  RecordingSink bounds;
  bounds.on_payload = term::kDdpTaggedBaseOrBounds;
  EXPECT_EQ(parse_error(w, {}, bounds).code, term::kDdpTaggedBaseOrBounds);
  RecordingSink invalidate;
  invalidate.on_end = term::kRdmapOperationCannotInvalidate;
  EXPECT_EQ(parse_error(send_fpdu(), {}, invalidate).code, term::kRdmapOperationCannotInvalidate);
  // A local catastrophic error copies no headers.
  RecordingSink local;
  local.on_begin = term::kDdpLocalCatastrophic;
  EXPECT_FALSE(parse_error(w, {}, local).copied_ddp_header);
}

TEST(IwarpFpdu, ErrorsOnATerminateAreNotAnswered) {
  TxMessage t = message(Opcode::kTerminate, {});
  Bytes term = encode({false, 1460}, t);
  term[11] = 0;  // QN 0
  const Outcome o = parse_error(term);
  EXPECT_EQ(o.code, term::kDdpUntaggedInvalidQn);
  EXPECT_FALSE(o.send_terminate);
}

TEST(IwarpFpdu, TerminateFromAnErrorRoundTrips) {
  // A Send on QN 1 fails; the Terminate built from the error carries its header back.
  Bytes bad = send_fpdu();
  bad[11] = 1;
  FpduParser p;
  RecordingSink sink;
  p.feed(bad, sink);
  ASSERT_TRUE(p.failed());
  TxMessage reply;
  reply.opcode = Opcode::kTerminate;
  reply.msn = 1;
  reply.terminate = p.error().terminate;
  for (bool crc : {false, true}) {
    const Bytes wire = encode({crc, 1460}, reply);
    EXPECT_EQ(wire.size(), 2u + 22u + 2u + 18u + 0u + 4u);  // 44: no PAD
    FpduParser q({.crc = crc});
    RecordingSink got;
    EXPECT_EQ(feed(q, got, wire, bytewise(wire.size())), wire.size());
    ASSERT_FALSE(q.failed()) << q.error().reason;
    ASSERT_EQ(got.messages.size(), 1u);
    const TerminateInfo& t = got.messages[0].terminate;
    EXPECT_EQ(t.code, term::kDdpUntaggedInvalidQn);
    EXPECT_TRUE(t.m && t.d && !t.r);
    EXPECT_EQ(t.ddp_segment_length, bad[1]);
    EXPECT_EQ(Bytes(t.ddp_header, t.ddp_header + 18), Bytes(bad.begin() + 2, bad.begin() + 20));
  }
}

TEST(IwarpFpdu, SiwTerminateFrame) {
  // The whole FPDU siw sends for RDMAP / Remote Protection / Invalid STag after a Send:
  // untagged header (QN 2, MSN 1, MO 0), the control word in siw's bit order, the DDP
  // Segment Length and the Send's header; R set without an RDMA header; CRC field zero.
  Bytes f = {0x00, 0x2a, 0x41, 0x47, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0};
  f.insert(f.end(), {0x10, 0x00, 0x07, 0x00, 0x00, 0x08});
  f.insert(f.end(), {0x41, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0});
  f.insert(f.end(), {0, 0, 0, 0});
  ASSERT_EQ(f.size(), 2u + 0x2au + 4u);
  for (const auto& pieces : {whole(f.size()), bytewise(f.size())}) {
    FpduParser p;
    RecordingSink sink;
    EXPECT_EQ(feed(p, sink, f, pieces), f.size());
    ASSERT_FALSE(p.failed()) << p.error().reason;
    ASSERT_EQ(sink.messages.size(), 1u);
    const TerminateInfo& t = sink.messages[0].terminate;
    EXPECT_TRUE(t.siw_bit_order);
    EXPECT_EQ(t.code, term::kRdmapInvalidStag);
    EXPECT_TRUE(t.r);
    EXPECT_FALSE(t.rdma_header_present);
    EXPECT_EQ(t.ddp_header_length, 18);
  }
  // A Terminate with more body than it can copy: the rest is read and ignored.
  Bytes longer = f;
  longer[1] = 0x2a + 100;
  longer.insert(longer.end() - 4, 100, 0xee);
  FpduParser p;
  RecordingSink sink;
  EXPECT_EQ(p.feed(longer, sink), longer.size());
  EXPECT_FALSE(p.failed());
}

TEST(IwarpFpdu, MutatedStreamsNeverMisbehave) {
  // Valid streams with a few bytes changed, fed in random pieces: the parser either goes
  // on or stops with an error; the sanitizer build checks that it stays in bounds.
  Bytes data = pattern(4000, 10);
  const auto iov = split_iov(data, {100, 900});
  Bytes stream;
  uint32_t send_msn = 1;
  for (Opcode op : kAll) {
    const OpcodeInfo& info = opcode_info(op);
    TxMessage m = message(op, info.body == Body::kData ? std::span<const iovec>(iov) : std::span<const iovec>());
    if (info.queue == kQnSend && !info.tagged) m.msn = send_msn++;
    const Bytes one = encode({true, 600}, m);
    stream.insert(stream.end(), one.begin(), one.end());
  }
  {
    FpduParser p({.crc = true});
    RecordingSink sink;
    EXPECT_EQ(feed(p, sink, stream, whole(stream.size())), stream.size());
    EXPECT_FALSE(p.failed()) << p.error().reason;
    EXPECT_EQ(sink.messages.size(), 8u);
  }
  std::mt19937 r(1234);
  size_t failures = 0;
  for (int round = 0; round < 400; ++round) {
    Bytes s = stream;
    const int flips = 1 + static_cast<int>(r() % 4);
    for (int i = 0; i < flips; ++i) s[r() % s.size()] = static_cast<uint8_t>(r());
    for (bool crc : {false, true}) {
      FpduParser p({.crc = crc, .max_untagged_message = (round & 1) ? 2048u : 0u});
      RecordingSink sink;
      sink.strict = false;
      const size_t used = feed(p, sink, s, random_splits(s.size(), static_cast<uint32_t>(round), 64));
      EXPECT_LE(used, s.size());
      failures += p.failed();
    }
  }
  EXPECT_GT(failures, 0u);
  // Pure noise too.
  for (int round = 0; round < 200; ++round) {
    const Bytes noise = pattern(1 + r() % 3000, static_cast<uint32_t>(round));
    FpduParser p;
    RecordingSink sink;
    sink.strict = false;
    feed(p, sink, noise, random_splits(noise.size(), static_cast<uint32_t>(round)));
  }
}

}  // namespace
