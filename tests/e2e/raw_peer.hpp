// A hand-made iWARP peer on a raw loopback socket, speaking the wire through the project's
// own codecs (MpaFrameParser and encode_mpa_frame for connection setup, FpduParser and
// encode_message for FPDUs): what the tests that play a peer SoftNDK cannot be share it
// (iwarp_ord_test: a responder that holds reads; iwarp_hostile_test: an attacker that sends
// what no honest peer would). Every wait is bounded; every socket is closed by its owner.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <span>
#include <vector>

#include "fabric/tcp/iwarp_mpa.hpp"
#include "fabric/tcp/iwarp_rx.hpp"
#include "fabric/tcp/iwarp_tx.hpp"

namespace raw_peer {

using namespace softndk::fabric::tcp;
using Bytes = std::vector<uint8_t>;

// A socket that closes itself.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept {
    reset(o.fd_);
    o.fd_ = -1;
    return *this;
  }
  ~Socket() { reset(); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

inline sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

// A listening socket on 127.0.0.1 and an ephemeral port.
inline Socket listen_loopback(uint16_t& port) {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a = loopback(0);
  if (!s.valid() || ::bind(s.fd(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s.fd(), 4) != 0)
    return Socket{};
  socklen_t length = sizeof a;
  getsockname(s.fd(), reinterpret_cast<sockaddr*>(&a), &length);
  port = ntohs(a.sin_port);
  return s;
}

// Accepts one connection within `ms`.
inline Socket accept_within(const Socket& listener, int ms) {
  pollfd p{listener.fd(), POLLIN, 0};
  if (::poll(&p, 1, ms) != 1) return Socket{};
  Socket s(accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
  if (s.valid()) {
    int one = 1;
    setsockopt(s.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return s;
}

// Connects to 127.0.0.1:port (loopback: at once or refused).
// `receive_buffer` (SO_RCVBUF, set before connecting) when not 0: a small one keeps what
// the other side sends queued there, as a peer that does not read.
inline Socket connect_loopback(uint16_t port, int receive_buffer = 0) {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a = loopback(port);
  if (s.valid() && receive_buffer > 0)
    setsockopt(s.fd(), SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  if (!s.valid() || ::connect(s.fd(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return Socket{};
  int one = 1;
  setsockopt(s.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

inline bool write_all(int fd, std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
  return true;
}

// Reads one MPA frame of `parser`'s type, a byte at a time (nothing past the frame is
// consumed), within `ms`. False on timeout, EOF or error.
inline bool read_mpa_frame(int fd, MpaFrameParser& parser, int ms = 5000) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!parser.finished()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    uint8_t byte;
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1 || ::read(fd, &byte, 1) != 1)
      return false;
    parser.feed({&byte, 1});
  }
  return true;
}

inline Bytes encode_frame(const MpaFrame& frame) {
  Bytes bytes(mpa_frame_size(frame));
  encode_mpa_frame(frame, bytes);
  return bytes;
}

// One whole message as FPDUs of at most `max_fpdu` bytes.
inline Bytes encode(bool crc, const TxMessage& message, uint32_t max_fpdu = 1460) {
  const TxOptions o{.crc = crc, .max_fpdu = max_fpdu};
  Bytes bytes(encoded_size(o, message));
  encode_message(o, message, bytes);
  return bytes;
}

// A tagged message (RDMA Write or Read Response) of `length` bytes of `fill` for `stag` at
// `to`, as FPDUs of at most `max_fpdu` bytes.
inline Bytes encode_tagged(bool crc, Opcode opcode, uint32_t stag, uint64_t to, size_t length, uint8_t fill,
                           uint32_t max_fpdu = 1460) {
  Bytes data(length, fill);
  iovec v{data.data(), data.size()};
  TxMessage m;
  m.opcode = opcode;
  m.stag = stag;
  m.to = to;
  m.payload = {&v, 1};
  return encode(crc, m, max_fpdu);
}

// Recomputes the CRC field of the one FPDU in `fpdu` (after its bytes were changed).
inline void reseal(Bytes& fpdu) {
  Crc32c c;
  c.update(fpdu.data(), fpdu.size() - kMpaCrcSize);
  c.store(fpdu.data() + fpdu.size() - kMpaCrcSize);
}

// What the other side sent after MPA setup, read through an FpduParser: the Read Requests
// it made, the Terminate it sent, and whether it closed.
class FpduReader : private FpduSink {
 public:
  void start(int fd, bool crc) {
    fd_ = fd;
    parser_.emplace(FpduParser::Options{.crc = crc});
  }

  // Reads for at most `ms`, returning early once `done()` holds (or at EOF, an error, or
  // the reader's own parse failure).
  template <class Done>
  void read_until(int ms, Done&& done) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (!done() && !eof_ && !parser_->failed() && std::chrono::steady_clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 10) != 1) continue;
      uint8_t buffer[4096];
      ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) {
        eof_ = true;  // FIN or reset
        break;
      }
      parser_->feed({buffer, static_cast<size_t>(n)}, *this);
    }
  }
  // Reads until a Terminate arrived and the peer closed (or `ms` passed).
  void read_to_end(int ms) {
    read_until(ms, [] { return false; });
  }

  std::deque<ReadRequest>& held() { return held_; }
  size_t total_requests() const { return total_; }
  const std::vector<TerminateInfo>& terminates() const { return terminates_; }
  size_t data_segments() const { return data_segments_; }
  // Zero-length RDMA Writes (an RTR, or an initiator's opening FPDU), and whether the first
  // FPDU of all was one.
  size_t empty_writes() const { return empty_writes_; }
  bool first_was_empty_write() const { return first_was_empty_write_; }
  bool eof() const { return eof_; }
  bool parse_failed() const { return parser_ && parser_->failed(); }

 private:
  Verdict begin_segment(const Segment&) override { return kAccept; }
  Verdict payload(const Segment&, uint32_t, std::span<const uint8_t>) override { return kAccept; }
  Verdict end_segment(const Segment& s) override {
    const bool empty_write = s.opcode == Opcode::kRdmaWrite && s.payload_length == 0;
    if (segments_++ == 0) first_was_empty_write_ = empty_write;
    empty_writes_ += empty_write;
    if (s.opcode == Opcode::kTerminate) {
      terminates_.push_back(s.terminate);
    } else if (s.opcode == Opcode::kRdmaReadRequest) {
      // The RTR and zero-length reads are not the consumer's.
      if (s.read_request.rdma_read_message_size > 0) {
        held_.push_back(s.read_request);
        ++total_;
      }
    } else if (s.payload_length > 0) {
      ++data_segments_;
    }
    return kAccept;
  }

  int fd_ = -1;
  std::optional<FpduParser> parser_;
  std::deque<ReadRequest> held_;
  size_t total_ = 0;
  std::vector<TerminateInfo> terminates_;
  size_t data_segments_ = 0;
  size_t segments_ = 0;
  size_t empty_writes_ = 0;
  bool first_was_empty_write_ = false;
  bool eof_ = false;
};

// The responder: listens on 127.0.0.1, accepts one connection, answers the MPA Request
// with a Reply of the given IRD/ORD (or whatever a test sends instead), then reads FPDUs.
class RawResponder {
 public:
  RawResponder() : listener_(listen_loopback(port_)) {}
  uint16_t port() const { return port_; }
  int fd() const { return fd_.fd(); }
  const MpaFrameParser& request() const { return *request_; }

  // Accepts and reads the Request (bounded waits).
  bool accept_request() {
    fd_ = accept_within(listener_, 5000);
    if (!fd_.valid()) return false;
    request_.emplace(MpaFrameType::kRequest);
    return read_mpa_frame(fd_.fd(), *request_) && request_->state() == MpaFrameParser::State::kComplete;
  }
  bool send(std::span<const uint8_t> bytes) { return write_all(fd_.fd(), bytes); }

  // Accepts, reads the Request, sends the Reply: our IRD and ORD, no private data.
  bool handshake(uint16_t ird = 2, uint16_t ord = 2) {
    if (!accept_request()) return false;
    MpaFrame reply = mpa_reply_for(request_->frame(), false, ird, ord, {});
    crc_ = mpa_crc_negotiated(request_->frame(), reply);
    reader_.start(fd_.fd(), crc_);
    return send(encode_frame(reply));
  }

  // Reads FPDUs for `ms` (or until `count` Read Requests are held); the number held.
  size_t wait_requests(size_t count, int ms) {
    reader_.read_until(ms, [&] { return reader_.held().size() >= count; });
    return reader_.held().size();
  }

  // Answers the oldest Read Request held with its length of `fill`.
  bool answer(uint8_t fill) {
    const ReadRequest r = reader_.held().front();
    reader_.held().pop_front();
    return send(encode_tagged(crc_, Opcode::kRdmaReadResponse, r.data_sink_stag, r.data_sink_to,
                              r.rdma_read_message_size, fill));
  }
  size_t total_requests() const { return reader_.total_requests(); }
  FpduReader& reader() { return reader_; }
  bool crc() const { return crc_; }

 private:
  uint16_t port_ = 0;
  Socket listener_;
  Socket fd_;
  std::optional<MpaFrameParser> request_;
  bool crc_ = false;
  FpduReader reader_;
};

}  // namespace raw_peer
