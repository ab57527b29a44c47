// R178 on the wire: SoftNDK never has more than ORD of its own reads in flight. The peer is
// a hand-made iWARP responder on a raw loopback socket (the project's own MPA and FPDU
// codecs), which counts the RDMA Read Requests it holds unanswered: five reads posted at
// once with an ORD of 2 put exactly two on the wire; each response lets exactly one more go,
// and the reads complete in order with the bytes the responder sent.
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <optional>

#include "e2e.hpp"
#include "fabric/tcp/iwarp_mpa.hpp"
#include "fabric/tcp/iwarp_rx.hpp"
#include "fabric/tcp/iwarp_tx.hpp"

namespace {

using namespace e2e;
using namespace softndk::fabric::tcp;

// The responder: accepts one connection, answers the MPA Request with IRD 2 (so the
// initiator's ORD is 2), and records the Read Requests that arrive.
class RawResponder : private FpduSink {
 public:
  RawResponder() {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(listener_, 1);
    socklen_t length = sizeof a;
    getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &length);
    port_ = ntohs(a.sin_port);
  }
  ~RawResponder() {
    if (fd_ >= 0) ::close(fd_);
    ::close(listener_);
  }
  uint16_t port() const { return port_; }

  // Accepts, reads the Request, sends the Reply (bounded waits).
  bool handshake() {
    pollfd p{listener_, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) return false;
    fd_ = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    MpaFrameParser request(MpaFrameType::kRequest);
    while (!request.finished()) {
      uint8_t byte;  // one at a time: nothing past the frame is consumed here
      if (!read_some(&byte, 1)) return false;
      request.feed({&byte, 1});
    }
    if (request.state() != MpaFrameParser::State::kComplete) return false;
    MpaFrame reply = mpa_reply_for(request.frame(), false, /*ird=*/2, /*ord=*/2, {});
    std::vector<uint8_t> bytes(mpa_frame_size(reply));
    encode_mpa_frame(reply, bytes);
    crc_ = mpa_crc_negotiated(request.frame(), reply);
    parser_.emplace(FpduParser::Options{.crc = crc_});
    return ::write(fd_, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  }

  // Reads FPDUs for `ms` (or until `count` Read Requests are held); the number held.
  size_t wait_requests(size_t count, int ms) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (held_.size() < count && std::chrono::steady_clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 10) != 1) continue;
      uint8_t buffer[4096];
      ssize_t n = ::read(fd_, buffer, sizeof buffer);
      if (n <= 0) break;
      parser_->feed({buffer, static_cast<size_t>(n)}, *this);
      if (parser_->failed()) break;
    }
    return held_.size();
  }

  // Answers the oldest Read Request held with `length` bytes of `fill`.
  bool answer(uint8_t fill) {
    const ReadRequest r = held_.front();
    held_.pop_front();
    std::vector<uint8_t> data(r.rdma_read_message_size, fill);
    iovec v{data.data(), data.size()};
    TxMessage m;
    m.opcode = Opcode::kRdmaReadResponse;
    m.stag = r.data_sink_stag;
    m.to = r.data_sink_to;
    m.payload = {&v, 1};
    TxOptions o{.crc = crc_, .max_fpdu = 1460};
    std::vector<uint8_t> bytes(encoded_size(o, m));
    encode_message(o, m, bytes);
    return ::write(fd_, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  }
  size_t total_requests() const { return total_; }

 private:
  bool read_some(uint8_t* p, size_t n) {
    pollfd pf{fd_, POLLIN, 0};
    return ::poll(&pf, 1, 5000) == 1 && ::read(fd_, p, n) == static_cast<ssize_t>(n);
  }
  Verdict begin_segment(const Segment&) override { return kAccept; }
  Verdict payload(const Segment&, uint32_t, std::span<const uint8_t>) override { return kAccept; }
  Verdict end_segment(const Segment& s) override {
    // The RTR (a zero-length write) and zero-length reads are not the consumer's.
    if (s.opcode == Opcode::kRdmaReadRequest && s.read_request.rdma_read_message_size > 0) {
      held_.push_back(s.read_request);
      ++total_;
    }
    return kAccept;
  }

  int listener_ = -1;
  int fd_ = -1;
  uint16_t port_ = 0;
  bool crc_ = false;
  std::optional<FpduParser> parser_;
  std::deque<ReadRequest> held_;
  size_t total_ = 0;
};

// One side of SoftNDK on loopback, connected to the raw responder (ORD 2).
class IwarpOrd : public ::testing::Test {
 protected:
  void SetUp() override {
    const ULONG flags =
        NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ | NDK_MR_FLAG_ALLOW_REMOTE_WRITE;
    ASSERT_NO_FATAL_FAILURE(side.open(if_nametoindex("lo"), SOFTNDK_COMPLETION_INLINE, flags, SOFTNDK_FABRIC_TCP));
    NDK_ADAPTER* a = side.adapter;
    connector = create<NDK_CONNECTOR>([&](auto cb, auto ctx, NDK_CONNECTOR** out) {
      return a->Dispatch->NdkCreateConnector(a, cb, ctx, out);
    });
    ASSERT_NE(connector, nullptr);
    SOCKADDR_INET source = ipv4("127.0.0.1", 0), destination = ipv4("127.0.0.1", responder.port());
    Waiter connected;
    NTSTATUS returned = connector->Dispatch->NdkConnect(
        connector, side.qp, reinterpret_cast<PSOCKADDR>(&source), length_of(source),
        reinterpret_cast<PSOCKADDR>(&destination), length_of(destination), 8, 8, nullptr, 0,
        &Waiter::on_request, &connected);
    ASSERT_TRUE(responder.handshake());
    ASSERT_EQ(connected.wait(returned), STATUS_SUCCESS);
    ULONG inbound = 0, outbound = 0, length = 0;
    ASSERT_EQ(connector->Dispatch->NdkGetConnectionData(connector, &inbound, &outbound, nullptr, &length),
              STATUS_SUCCESS);
    EXPECT_EQ(outbound, 2u) << "our ORD: min(8, the responder's IRD 2) (R177)";
    Waiter completed;
    ASSERT_EQ(completed.wait(connector->Dispatch->NdkCompleteConnect(connector, nullptr, nullptr,
                                                                     &Waiter::on_request, &completed)),
              STATUS_SUCCESS);
  }
  void TearDown() override {
    close(connector);  // reads still in flight complete, cancelled
    side.close_all();
  }
  NTSTATUS post_read(int i) {
    NDK_SGE sink = side.sge((i % 64) * 64, 16);
    return side.qp->Dispatch->NdkRead(side.qp, reinterpret_cast<PVOID>(uintptr_t(i + 1)), &sink, 1,
                                      0x10000 + i * 16, 0x1234, 0);
  }

  RawResponder responder;
  Side side;
  NDK_CONNECTOR* connector = nullptr;
};

TEST_F(IwarpOrd, R178_NoMoreThanOrdReadsInFlightAndTheRestWaitInOrder) {
  constexpr int kReads = 5;
  for (int i = 0; i < kReads; ++i) ASSERT_EQ(post_read(i), STATUS_SUCCESS);
  // Two on the wire, however long we wait; the other three wait in the queue (R178).
  EXPECT_EQ(responder.wait_requests(kReads, 300), 2u) << "(R178)";
  for (int answered = 0; answered < kReads; ++answered) {
    ASSERT_TRUE(responder.answer(static_cast<uint8_t>(0xA0 + answered)));
    auto done = side.poll(1);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].Status, STATUS_SUCCESS);
    EXPECT_EQ(done[0].RequestContext, reinterpret_cast<PVOID>(uintptr_t(answered + 1))) << "in order";
    EXPECT_EQ(side.buffer[answered * 64], 0xA0 + answered);
    EXPECT_EQ(side.buffer[answered * 64 + 15], 0xA0 + answered);
    const size_t expected_held = std::min<size_t>(2, kReads - answered - 1);
    EXPECT_EQ(responder.wait_requests(expected_held + 1, 100), expected_held)
        << "one more read per response, never more than ORD held (R178)";
  }
  EXPECT_EQ(responder.total_requests(), size_t{kReads});
}

// R091 on the initiator queue: with its reads held by the peer, a QP's initiator queue
// fills to its depth (64 here), the next post is refused inline, and an answer frees a slot.
TEST_F(IwarpOrd, R091_InitiatorQueueFullOfReadsInFlight) {
  for (int i = 0; i < 64; ++i) ASSERT_EQ(post_read(i), STATUS_SUCCESS) << i;
  EXPECT_EQ(post_read(64), STATUS_INSUFFICIENT_RESOURCES) << "(R091)";
  EXPECT_EQ(responder.wait_requests(2, 1000), 2u);
  ASSERT_TRUE(responder.answer(0x5A));
  auto done = side.poll(1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(post_read(64), STATUS_SUCCESS) << "a completed read frees its slot (R091)";
}

}  // namespace
