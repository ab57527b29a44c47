// What both fuzz targets do with a Terminate the connection would send.
#pragma once

#include <optional>
#include <vector>

#include "fabric/tcp/iwarp_rx.hpp"
#include "fabric/tcp/iwarp_tx.hpp"
#include "fuzz_common.hpp"

namespace fuzz {

// Encodes `terminate` as TcpConnection sends it (QN 2, MSN 1) and parses it back as the
// peer would: what the peer reads. Being encodable and parsable is checked.
inline softndk::fabric::tcp::TerminateInfo terminate_round_trip(
    const softndk::fabric::tcp::TerminateInfo& terminate, bool crc) {
  using namespace softndk::fabric::tcp;
  TxMessage m;
  m.opcode = Opcode::kTerminate;
  m.msn = 1;
  m.terminate = terminate;
  const TxOptions options{.crc = crc};
  std::vector<uint8_t> wire(encoded_size(options, m));
  FUZZ_CHECK(!wire.empty());
  FUZZ_CHECK(encode_message(options, m, wire) == wire.size());
  struct : FpduSink {
    std::optional<TerminateInfo> got;
    Verdict begin_segment(const Segment&) override { return kAccept; }
    Verdict payload(const Segment&, uint32_t, std::span<const uint8_t>) override { return kAccept; }
    Verdict end_segment(const Segment& s) override {
      FUZZ_CHECK(s.opcode == Opcode::kTerminate && !got);
      got = s.terminate;
      return kAccept;
    }
  } sink;
  FpduParser p({.crc = crc});
  FUZZ_CHECK(p.feed(wire, sink) == wire.size() && !p.failed() && p.at_boundary());
  FUZZ_CHECK(sink.got && sink.got->code == terminate.code);
  return *sink.got;
}

}  // namespace fuzz
