// Generates the fuzz targets' seed corpus with the project's own encoders: valid MPA
// Request (revision 1 and 2, with and without private data), Reply and Reject frames, and
// FPDUs of every RDMAP opcode, with and without CRC, in one and in several segments, each
// behind the control bytes that make its target take the path it was made for.
//
//   fuzz_corpus --write DIR   writes DIR/mpa/*.bin and DIR/fpdu/*.bin
//   fuzz_corpus --check DIR   fails unless DIR holds exactly those files, byte for byte
//
// The committed corpus is tests/fuzz/corpus (regenerate: README "Fuzzing"); ctest runs the
// check so it stays what this program makes.

#include <sys/uio.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fabric/tcp/iwarp_mpa.hpp"
#include "fabric/tcp/iwarp_tx.hpp"
#include "fuzz_inputs.hpp"

namespace {

using namespace softndk::fabric::tcp;
namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using Corpus = std::map<std::string, Bytes>;  // "target/name.bin" -> contents

Bytes text(std::string_view s) { return Bytes(s.begin(), s.end()); }

Bytes pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 7);
  return b;
}

void append(Bytes& to, const Bytes& more) { to.insert(to.end(), more.begin(), more.end()); }

Bytes control(uint8_t a, uint8_t b, uint8_t chunk_a = 0, uint8_t chunk_b = 0) {
  return {a, b, chunk_a, chunk_b};
}

// ---- MPA ----

Bytes frame(const MpaFrame& f) {
  Bytes out(mpa_frame_size(f));
  if (out.empty() || encode_mpa_frame(f, out) != out.size()) {
    std::fprintf(stderr, "fuzz_corpus: an MPA frame does not encode\n");
    std::exit(1);
  }
  return out;
}

MpaFrame request(uint8_t revision, bool crc, bool p2p, uint8_t rtr_bits, const Bytes& pd) {
  MpaFrame f;
  f.type = MpaFrameType::kRequest;
  f.revision = revision;
  f.enhanced = revision == kMpaRevision2;
  f.crc = crc;
  f.v2 = {16, 16, p2p, rtr_bits};
  f.private_data = pd;
  return f;
}

MpaFrame reply(uint8_t revision, bool crc, uint16_t ird, uint16_t ord, bool p2p, uint8_t rtr_bits,
               const Bytes& pd, bool reject = false) {
  MpaFrame f;
  f.type = MpaFrameType::kReply;
  f.revision = revision;
  f.enhanced = revision == kMpaRevision2;
  f.crc = crc;
  f.reject = reject;
  f.v2 = {ird, ord, p2p, rtr_bits};
  f.private_data = pd;
  return f;
}

// ---- FPDUs ----

struct Message {
  TxMessage m;
  Bytes payload;
};

Bytes fpdus(const Message& msg, bool crc, uint32_t max_fpdu = 1460) {
  TxMessage m = msg.m;
  iovec iov{const_cast<uint8_t*>(msg.payload.data()), msg.payload.size()};
  if (!msg.payload.empty()) m.payload = std::span(&iov, 1);
  const TxOptions options{.crc = crc, .max_fpdu = max_fpdu};
  Bytes out(encoded_size(options, m));
  if (out.empty() || encode_message(options, m, out) != out.size()) {
    std::fprintf(stderr, "fuzz_corpus: a message does not encode\n");
    std::exit(1);
  }
  return out;
}

Message send(Opcode op, uint32_t msn, size_t length, uint32_t invalidate = 0) {
  Message s;
  s.m.opcode = op;
  s.m.msn = msn;
  s.m.invalidate_stag = invalidate;
  s.payload = pattern(length, static_cast<uint8_t>(msn));
  return s;
}

// Write or Read Response.
Message tagged(Opcode op, uint32_t stag, uint64_t to, size_t length) {
  Message t;
  t.m.opcode = op;
  t.m.stag = stag;
  t.m.to = to;
  t.payload = pattern(length, static_cast<uint8_t>(op) << 4);
  return t;
}
Message write(uint32_t stag, uint64_t to, size_t length) {
  return tagged(Opcode::kRdmaWrite, stag, to, length);
}
Message read_response(uint32_t stag, size_t length, uint64_t to = 0) {
  return tagged(Opcode::kRdmaReadResponse, stag, to, length);
}

Message read_request(uint32_t msn, uint32_t size, uint32_t source_stag) {
  Message r;
  r.m.opcode = Opcode::kRdmaReadRequest;
  r.m.msn = msn;
  r.m.read_request = {0x77, 0, size, source_stag, 0};
  return r;
}

Message terminate(bool with_headers) {
  Message t;
  t.m.opcode = Opcode::kTerminate;
  t.m.msn = 1;
  TerminateInfo& info = t.m.terminate;
  if (!with_headers) {
    info.code = term::kMpaCrcError;
    return t;
  }
  // As our parser answers a Read Request for a region that is not there.
  info.code = term::kRdmapInvalidStag;
  info.m = info.d = info.r = true;
  info.ddp_segment_length = 46;
  info.ddp_header_length = sizeof(DdpUntaggedHeader);
  DdpUntaggedHeader d{};
  d.ddp_control = ddp_control(false, true);
  d.rdmap_control = rdmap_control(Opcode::kRdmaReadRequest);
  d.qn.set(kQnReadRequest);
  d.msn.set(1);
  store_layout(info.ddp_header, d);
  store_layout(info.rdma_header, encode_read_request({0x77, 0, 64, 0x9999, 0}));
  return t;
}

void add_mpa(Corpus& c) {
  namespace in = fuzz::mpa_input;
  const Bytes pd = text("SoftNDK private data");
  const auto add = [&](const char* name, Bytes control_bytes, const Bytes& stream) {
    append(control_bytes, stream);
    c[std::string("mpa/") + name + ".bin"] = control_bytes;
  };
  constexpr uint8_t kW = rtr::kZeroLengthWrite, kR = rtr::kZeroLengthRead, kS = rtr::kZeroLengthSend;
  // The passive side reads a Request.
  add("request_rev2_p2p_pd", control(in::kWantCrc, 0), frame(request(2, true, true, kW | kR, pd)));
  add("request_rev2_nopd", control(0, 0, 1, 7), frame(request(2, false, false, 0, {})));
  add("request_rev2_send_rtr", control(0, 0), frame(request(2, false, true, kS, pd)));
  add("request_rev2_answer_pd", control(in::kWantCrc, 3 << in::kAnswerPdShift | 2 << in::kOrdShift, 5, 0),
      frame(request(2, true, true, kR, pd)));
  add("request_rev1_pd", control(0, 0), frame(request(1, false, false, 0, text("revision 1"))));
  add("request_rev1_nopd", control(in::kWantCrc, 0, 3, 0), frame(request(1, true, false, 0, {})));
  MpaFrame markers = request(2, true, true, kW, pd);
  markers.markers = true;
  add("request_markers", control(0, 0), frame(markers));
  // The active side reads a Reply or a Reject; our Request asked for IRD = ORD = 16.
  const uint8_t active = in::kActive | in::kWantCrc;
  add("reply_rev2_write_rtr", control(active, 0), frame(reply(2, true, 8, 4, true, kW, text("ok"))));
  add("reply_rev2_read_rtr", control(active, 0, 2, 9), frame(reply(2, true, 8, 16, true, kR, {})));
  add("reply_rev2_no_p2p", control(active | in::kNoPeerToPeer, 0), frame(reply(2, false, 1, 1, false, 0, pd)));
  add("reply_rev1", control(in::kActive | in::kRevision1, 0), frame(reply(1, false, 0, 0, false, 0, text("v1"))));
  add("reply_insufficient_ird", control(active, 0), frame(reply(2, true, 8, 100, true, kW, {})));
  add("reject_rev2", control(active, 0), frame(reply(2, false, 0, 0, false, 0, text("no"), true)));
  add("reject_rev1", control(in::kActive | in::kRevision1, 0), frame(reply(1, false, 0, 0, false, 0, {}, true)));
  // A Reply, then the peer's first FPDUs in the same bytes.
  Bytes then = frame(reply(2, true, 8, 4, true, kW, {}));
  append(then, fpdus(send(Opcode::kSend, 1, 40), true));
  append(then, fpdus(write(0x1000, 0x10000, 0), true));
  add("reply_rev2_then_fpdus", control(active, 0, 7, 0), then);
}

void add_fpdu(Corpus& c) {
  namespace in = fuzz::fpdu_input;
  // Defaults of control byte 0 and 1: 16 receives of 4096 bytes, no message limit, one read
  // of ours in flight (sink STag 1) of 4096 bytes; setup_100 makes that read 100 bytes.
  const uint8_t setup_100 = 2 << in::kReadLengthShift;
  const auto add = [&](const std::string& name, uint8_t mode, uint8_t setup, const Bytes& stream,
                       uint8_t chunk_a = 0, uint8_t chunk_b = 0) {
    Bytes b = control(mode, setup, chunk_a, chunk_b);
    append(b, stream);
    c["fpdu/" + name + ".bin"] = b;
  };
  for (const bool crc : {false, true}) {
    const std::string suffix = crc ? "_crc" : "";
    const uint8_t mode = crc ? in::kCrcOn : in::kCrcOff;
    add("send" + suffix, mode, 0, fpdus(send(Opcode::kSend, 1, 100), crc));
    add("send_inv" + suffix, mode, 0, fpdus(send(Opcode::kSendWithInvalidate, 1, 33, 0x1000), crc));
    add("send_se" + suffix, mode, 0, fpdus(send(Opcode::kSendWithSe, 1, 1), crc));
    add("send_se_inv" + suffix, mode, 0, fpdus(send(Opcode::kSendWithSeAndInvalidate, 1, 0, 0x1000), crc));
    add("write" + suffix, mode, 0, fpdus(write(0x1000, 0x10100, 200), crc));
    add("write_top" + suffix, mode, 0, fpdus(write(0x3000, 0xffffffffffffffa0ull, 96), crc));
    add("read_request" + suffix, mode, 0, fpdus(read_request(1, 64, 0x2000), crc));
    add("read_response" + suffix, mode, setup_100, fpdus(read_response(1, 100), crc));
    // Ending at TO 2^64: no wrap, but far outside the read (TcpConnection's sum overflowed).
    add("read_response_top" + suffix, mode, 0, fpdus(read_response(1, 100, 0ull - 100), crc));
    add("terminate" + suffix, mode, 0, fpdus(terminate(false), crc));
    add("terminate_headers" + suffix, mode, 0, fpdus(terminate(true), crc));
    // Several segments: the smallest FPDUs.
    add("send_segments" + suffix, mode, 0, fpdus(send(Opcode::kSend, 1, 700), crc, kMinFpdu), 1, 0);
    add("write_segments" + suffix, mode, 0, fpdus(write(0x1000, 0x10000, 700), crc, kMinFpdu), 61, 17);
    add("read_response_segments" + suffix, mode, 0, fpdus(read_response(1, 700), crc, kMinFpdu), 0);
    // The RTR the passive side waits for, then a Send.
    Bytes rtr_write = fpdus(write(0, 0, 0), crc);
    append(rtr_write, fpdus(send(Opcode::kSend, 1, 10), crc));
    add("rtr_write" + suffix, mode | in::kAwaitingRtr, 0, rtr_write);
    Bytes rtr_read = fpdus(read_request(1, 0, 0), crc);
    append(rtr_read, fpdus(send(Opcode::kSend, 1, 10), crc));
    add("rtr_read" + suffix, mode | in::kAwaitingRtr, 0, rtr_read);
    // Every message type in one stream, in odd pieces, ending with a Terminate.
    Bytes all;
    append(all, fpdus(send(Opcode::kSend, 1, 50), crc));
    append(all, fpdus(write(0x1000, 0x10000, 300), crc, 256));
    append(all, fpdus(send(Opcode::kSendWithSe, 2, 300), crc, 256));
    append(all, fpdus(read_request(1, 200, 0x2000), crc));
    append(all, fpdus(read_response(1, 100), crc));
    append(all, fpdus(send(Opcode::kSendWithInvalidate, 3, 20, 0x1000), crc));
    append(all, fpdus(send(Opcode::kSendWithSeAndInvalidate, 4, 20, 0x3000), crc));
    append(all, fpdus(terminate(true), crc));
    add("all" + suffix, mode, setup_100, all, 5, 13);
    // CRC on, and the target writes every CRC (these are zero).
    if (!crc) add("all_crc_fixed", in::kCrcFixed, setup_100, all);
  }
}

Bytes read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view how = argc == 3 ? argv[1] : "";
  if (how != "--write" && how != "--check") {
    std::fprintf(stderr, "usage: %s --write|--check CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const fs::path dir = argv[2];
  Corpus corpus;
  add_mpa(corpus);
  add_fpdu(corpus);
  if (how == "--write") {
    for (const auto& [name, bytes] : corpus) {
      const fs::path p = dir / name;
      fs::create_directories(p.parent_path());
      std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                               static_cast<std::streamsize>(bytes.size()));
    }
    std::printf("wrote %zu inputs under %s\n", corpus.size(), dir.c_str());
    return 0;
  }
  int problems = 0;
  std::set<std::string> seen;
  for (const char* target : {"mpa", "fpdu"}) {
    if (!fs::is_directory(dir / target)) continue;
    for (const auto& entry : fs::directory_iterator(dir / target)) {
      const std::string name = std::string(target) + "/" + entry.path().filename().string();
      if (entry.path().filename().string().front() == '.') continue;
      seen.insert(name);
      if (corpus.count(name) == 0) {
        std::fprintf(stderr, "%s: not made by fuzz_corpus (remove it, or regenerate)\n", name.c_str());
        ++problems;
      }
    }
  }
  for (const auto& [name, bytes] : corpus) {
    if (seen.count(name) == 0) {
      std::fprintf(stderr, "%s: missing\n", name.c_str());
      ++problems;
    } else if (read_file(dir / name) != bytes) {
      std::fprintf(stderr, "%s: differs from what fuzz_corpus makes\n", name.c_str());
      ++problems;
    }
  }
  if (problems > 0) {
    std::fprintf(stderr, "the corpus is stale: regenerate it (README, \"Fuzzing\")\n");
    return 1;
  }
  std::printf("%zu inputs as generated\n", corpus.size());
  return 0;
}
