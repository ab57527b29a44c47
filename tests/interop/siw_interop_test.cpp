// SoftNDK's iWARP fabric against the Linux kernel's software iWARP driver (siw), in both
// roles and over each wire SoftNDK can be asked for (MPA revision 1 and 2, CRC on and off,
// with and without the RFC 6581 RTR). Every scenario is written once over two Endpoints and
// runs with SoftNDK as the initiator and as the responder; what each side receives is checked
// byte for byte where it landed.
//
// It needs an siw device, so it runs inside a virtual machine of Debian's kernel with siw
// loaded (tests/interop/run-in-vm, the ctest `siw_interop`).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <thread>
#include <tuple>

#include "ends.hpp"
#include "ndk/softndk.h"

namespace interop {

namespace {
bool use_ipv6 = false;  // the running test's choice
}  // namespace

SOCKADDR_INET interop_address(uint16_t port) {
  SOCKADDR_INET a{};
  const char* text = std::getenv(use_ipv6 ? "SIW_INTEROP_ADDRESS6" : "SIW_INTEROP_ADDRESS");
  if (text == nullptr) return a;
  if (use_ipv6 && inet_pton(AF_INET6, text, &a.Ipv6.sin6_addr) == 1) {
    a.Ipv6.sin6_family = AF_INET6;
    a.Ipv6.sin6_port = htons(port);
  } else if (!use_ipv6 && inet_pton(AF_INET, text, &a.Ipv4.sin_addr) == 1) {
    a.Ipv4.sin_family = AF_INET;
    a.Ipv4.sin_port = htons(port);
  }
  return a;
}

namespace {

struct Wire {
  const char* name;
  const char* revision;
  const char* crc;
  const char* peer_to_peer;
};

constexpr Wire kWires[] = {
    {"Rev2CrcRtr", "2", "1", "1"},   {"Rev2Crc", "2", "1", "0"}, {"Rev2NoCrcRtr", "2", "0", "1"},
    {"Rev2NoCrc", "2", "0", "0"},    {"Rev1Crc", "1", "1", "0"}, {"Rev1NoCrc", "1", "0", "0"},
};

enum class Initiator { SoftNdk, Siw };
enum class Family { Ipv4, Ipv6 };

void PrintTo(const Wire& wire, std::ostream* os) { *os << wire.name; }
void PrintTo(Initiator who, std::ostream* os) { *os << (who == Initiator::SoftNdk ? "SoftNDK initiates" : "siw initiates"); }
void PrintTo(Family family, std::ostream* os) { *os << (family == Family::Ipv6 ? "IPv6" : "IPv4"); }

// Where things go in each end's 8 MiB buffer.
constexpr size_t kWriteTarget = 0;        // what the peer writes
constexpr size_t kReadSource = 2 << 20;   // what the peer reads
constexpr size_t kMessages = 4 << 20;     // sends and their receives
constexpr size_t kReadSink = 6 << 20;     // where reads land
constexpr size_t kControlOut = kBufferSize - (8 << 10);  // a descriptor sent
constexpr size_t kControlIn = kBufferSize - (4 << 10);   // a descriptor received
constexpr uint32_t kControlSize = 64;
constexpr uint32_t kMagic = 0x5157494e;  // marks a descriptor message

// A deterministic pattern per (seed, position), different for every transfer.
void fill(unsigned char* p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<unsigned char>((i * 131 + seed * 7919 + (i >> 8)) ^ (seed >> 3));
}
::testing::AssertionResult holds(const unsigned char* p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; ++i) {
    const auto want = static_cast<unsigned char>((i * 131 + seed * 7919 + (i >> 8)) ^ (seed >> 3));
    if (p[i] != want) {
      return ::testing::AssertionFailure() << "byte " << i << " of " << n << " is " << int{p[i]} << ", not "
                                           << int{want};
    }
  }
  return ::testing::AssertionSuccess();
}

class SiwInterop : public ::testing::TestWithParam<std::tuple<Initiator, Wire, Family>> {
 protected:
  void SetUp() override {
    use_ipv6 = std::get<2>(GetParam()) == Family::Ipv6;
    ASSERT_NE(interop_address(0).si_family, 0)
        << "SIW_INTEROP_ADDRESS" << (use_ipv6 ? "6" : "") << " is not set: run through tests/interop/run-in-vm";
    const Wire& wire = std::get<1>(GetParam());
    ASSERT_EQ(SoftNdkSetTunable("iwarp_mpa_revision", wire.revision), STATUS_SUCCESS);
    ASSERT_EQ(SoftNdkSetTunable("iwarp_crc", wire.crc), STATUS_SUCCESS);
    ASSERT_EQ(SoftNdkSetTunable("iwarp_peer_to_peer", wire.peer_to_peer), STATUS_SUCCESS);
    ndk_ = make_ndk_end();
    siw_ = make_siw_end();
    const bool ndk_initiates = std::get<0>(GetParam()) == Initiator::SoftNdk;
    a_ = ndk_initiates ? ndk_.get() : siw_.get();
    b_ = ndk_initiates ? siw_.get() : ndk_.get();
  }
  void TearDown() override {
    siw_.reset();
    ndk_.reset();
    SoftNdkResetTunables();
  }

  // a_ connects to b_ with private data both ways, which each checks.
  void connect() {
    const std::string hello = "hello from " + a_->name(), welcome = "welcome from " + b_->name();
    const uint16_t port = b_->listen();
    ASSERT_NE(port, 0) << b_->last_error();
    ASSERT_TRUE(a_->start_connect(port, hello)) << a_->last_error();
    std::optional<std::string> request = b_->incoming();
    ASSERT_TRUE(request.has_value()) << b_->last_error();
    EXPECT_EQ(*request, hello);
    ASSERT_TRUE(b_->accept(welcome)) << b_->last_error();
    ConnectOutcome outcome = a_->finish_connect();
    ASSERT_TRUE(outcome.accepted) << outcome.error << a_->last_error();
    EXPECT_EQ(outcome.private_data, welcome);
    EXPECT_GE(outcome.outbound_reads, 1u) << "the responder's IRD";
    EXPECT_LE(outcome.outbound_reads, kReadLimit);
    EXPECT_GE(outcome.inbound_reads, 1u) << "the responder's ORD";
    EXPECT_LE(outcome.inbound_reads, kReadLimit);
    ASSERT_TRUE(b_->established()) << b_->last_error();
    // Without an RTR (siw never asks for one) the responder may send nothing before the
    // initiator's first FPDU (RFC 5044 7.1.2): the initiator speaks first, as upper layers
    // of iWARP do.
    ASSERT_TRUE(b_->receive(1, kMessages, 64)) << b_->last_error();
    ASSERT_TRUE(a_->send(2, kControlOut, 8)) << a_->last_error();
    ASSERT_NO_FATAL_FAILURE(expect_ok(*a_, Op::Send, 2));
    ASSERT_NO_FATAL_FAILURE(expect_ok(*b_, Op::Receive, 1));
  }

  // The next completion of `end`, which must be a success of `op` for request `id` (a
  // fatal failure otherwise: what follows would only repeat it).
  static void expect_ok(Endpoint& end, Op op, uint64_t id, Completion* out = nullptr) {
    std::optional<Completion> c = end.poll();
    ASSERT_TRUE(c.has_value()) << end.name() << ": " << end.last_error();
    ASSERT_TRUE(c->ok) << end.name() << ": request " << c->id << " completed with " << c->status;
    ASSERT_EQ(c->id, id) << end.name();
    ASSERT_EQ(c->op, op) << end.name() << ": request " << c->id;
    if (out != nullptr) *out = *c;
  }

  // `from` tells `to` about a buffer of its own, in a Send that `to` receives.
  static void tell(Endpoint& from, Endpoint& to, RemoteBuffer what, RemoteBuffer& told) {
    ASSERT_TRUE(to.receive(100, kControlIn, kControlSize)) << to.last_error();
    unsigned char* out = from.buffer() + kControlOut;
    std::memcpy(out, &what.address, 8);
    std::memcpy(out + 8, &what.stag, 4);
    std::memcpy(out + 12, &kMagic, 4);
    ASSERT_TRUE(from.send(101, kControlOut, 16)) << from.last_error();
    ASSERT_NO_FATAL_FAILURE(expect_ok(from, Op::Send, 101));
    Completion got;
    ASSERT_NO_FATAL_FAILURE(expect_ok(to, Op::Receive, 100, &got));
    EXPECT_EQ(got.bytes, 16u);
    uint32_t magic = 0;
    const unsigned char* in = to.buffer() + kControlIn;
    std::memcpy(&told.address, in, 8);
    std::memcpy(&told.stag, in + 8, 4);
    std::memcpy(&magic, in + 12, 4);
    EXPECT_EQ(magic, kMagic);
    EXPECT_EQ(told.address, what.address);
    EXPECT_EQ(told.stag, what.stag);
  }

  // `from` writes `length` bytes of pattern `seed` into `to`'s write target, then sends a
  // notice; once `to` receives it the bytes must be there (RDMAP orders the two).
  static void write_then_notify(Endpoint& from, Endpoint& to, RemoteBuffer target, uint32_t length, uint32_t seed) {
    SCOPED_TRACE(from.name() + " writes " + std::to_string(length) + " bytes into " + to.name());
    fill(from.buffer() + kWriteTarget, length, seed);
    std::memset(to.buffer() + kWriteTarget, 0, length);
    ASSERT_TRUE(to.receive(200, kMessages, 64)) << to.last_error();
    ASSERT_TRUE(from.write(201, kWriteTarget, length, target)) << from.last_error();
    ASSERT_TRUE(from.send(202, kControlOut, 4)) << from.last_error();
    ASSERT_NO_FATAL_FAILURE(expect_ok(from, Op::Write, 201));
    ASSERT_NO_FATAL_FAILURE(expect_ok(from, Op::Send, 202));
    ASSERT_NO_FATAL_FAILURE(expect_ok(to, Op::Receive, 200));
    EXPECT_TRUE(holds(to.buffer() + kWriteTarget, length, seed));
  }

  // `reader` reads `length` bytes of pattern `seed` from `source`'s read source.
  static void read_from(Endpoint& reader, Endpoint& source, RemoteBuffer at, uint32_t length, uint32_t seed) {
    SCOPED_TRACE(reader.name() + " reads " + std::to_string(length) + " bytes of " + source.name());
    fill(source.buffer() + kReadSource, length, seed);
    std::memset(reader.buffer() + kReadSink, 0, length);
    ASSERT_TRUE(reader.read(300, kReadSink, length, at)) << reader.last_error();
    ASSERT_NO_FATAL_FAILURE(expect_ok(reader, Op::Read, 300));
    EXPECT_TRUE(holds(reader.buffer() + kReadSink, length, seed));
  }

  // `from` sends `length` bytes of pattern `seed`; `to` receives them whole.
  static void send_to(Endpoint& from, Endpoint& to, uint32_t length, uint32_t seed) {
    SCOPED_TRACE(from.name() + " sends " + std::to_string(length) + " bytes to " + to.name());
    fill(from.buffer() + kMessages, length, seed);
    std::memset(to.buffer() + kMessages, 0, 2 << 20);
    ASSERT_TRUE(to.receive(400, kMessages, 2 << 20)) << to.last_error();
    ASSERT_TRUE(from.send(401, kMessages, length)) << from.last_error();
    ASSERT_NO_FATAL_FAILURE(expect_ok(from, Op::Send, 401));
    Completion got;
    ASSERT_NO_FATAL_FAILURE(expect_ok(to, Op::Receive, 400, &got));
    EXPECT_EQ(got.bytes, length);
    EXPECT_TRUE(holds(to.buffer() + kMessages, length, seed));
  }

  std::unique_ptr<Endpoint> ndk_, siw_;
  Endpoint* a_ = nullptr;  // the initiator
  Endpoint* b_ = nullptr;  // the responder
};

// Connect with private data both ways; sends of 0 bytes to 1.5 MB, writes and reads of 1 byte
// to 2 MB, each way; eight reads at once against read limits of four.
TEST_P(SiwInterop, DataMovesEveryWayAndLandsWhole) {
  ASSERT_NO_FATAL_FAILURE(connect());
  // Each way: who moves the bytes, to whom, and the buffers of the other end it was told of.
  struct Way {
    Endpoint *from, *to;
    RemoteBuffer target, source;
  };
  Way ways[] = {{a_, b_, {}, {}}, {b_, a_, {}, {}}};
  for (Way& w : ways) {
    ASSERT_NO_FATAL_FAILURE(tell(*w.to, *w.from, w.to->exported(kWriteTarget), w.target));
    ASSERT_NO_FATAL_FAILURE(tell(*w.to, *w.from, w.to->exported(kReadSource), w.source));
  }

  uint32_t seed = 1;
  for (uint32_t length : {1u, 200000u, 2000000u}) {
    for (const Way& w : ways) {
      ASSERT_NO_FATAL_FAILURE(write_then_notify(*w.from, *w.to, w.target, length, seed++));
      ASSERT_NO_FATAL_FAILURE(read_from(*w.from, *w.to, w.source, length, seed++));
    }
  }
  for (uint32_t length : {0u, 1u, 150000u, 1500000u}) {
    for (const Way& w : ways) ASSERT_NO_FATAL_FAILURE(send_to(*w.from, *w.to, length, seed++));
  }

  for (const Way& w : ways) {
    Endpoint &reader = *w.from, &source = *w.to;
    SCOPED_TRACE(reader.name() + " has eight reads outstanding");
    constexpr uint32_t kSlice = 16 << 10;
    fill(source.buffer() + kReadSource, 8 * kSlice, seed);
    std::memset(reader.buffer() + kReadSink, 0, 8 * kSlice);
    for (uint32_t i = 0; i < 8; ++i) {
      ASSERT_TRUE(reader.read(500 + i, kReadSink + i * kSlice, kSlice, {w.source.address + i * kSlice, w.source.stag}))
          << reader.last_error();
    }
    for (uint32_t i = 0; i < 8; ++i) ASSERT_NO_FATAL_FAILURE(expect_ok(reader, Op::Read, 500 + i));
    EXPECT_TRUE(holds(reader.buffer() + kReadSink, 8 * kSlice, seed++));
  }
}

// A solicited send raises the receiver's armed notification; an unsolicited one does not.
// (Where the receiver is siw, its consumer cannot tell: see sees_solicited_events().)
TEST_P(SiwInterop, OnlyASolicitedSendRaisesASolicitedNotification) {
  ASSERT_NO_FATAL_FAILURE(connect());
  Endpoint& receiver = *ndk_;
  Endpoint& sender = *siw_;
  ASSERT_TRUE(receiver.sees_solicited_events());
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const int before = receiver.notifications();
    receiver.arm_solicited();
    ASSERT_TRUE(receiver.receive(600, kMessages, 64)) << receiver.last_error();
    ASSERT_TRUE(receiver.receive(601, kMessages + 64, 64)) << receiver.last_error();
    ASSERT_TRUE(sender.send(602, kControlOut, 8, false)) << sender.last_error();
    ASSERT_NO_FATAL_FAILURE(expect_ok(sender, Op::Send, 602));
    ASSERT_NO_FATAL_FAILURE(expect_ok(receiver, Op::Receive, 600));
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(receiver.notifications(), before) << "an unsolicited send raised the notification";
    ASSERT_TRUE(sender.send(603, kControlOut, 8, true)) << sender.last_error();
    ASSERT_NO_FATAL_FAILURE(expect_ok(sender, Op::Send, 603));
    ASSERT_NO_FATAL_FAILURE(expect_ok(receiver, Op::Receive, 601));
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (receiver.notifications() == before && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(1ms);
    }
    EXPECT_EQ(receiver.notifications(), before + 1) << "the solicited send raised no notification";
  }
}

// A send with invalidate lands and invalidates the STag it names (a window of SoftNDK, a
// region of siw); a write through that STag afterwards is a remote access violation: the
// target sends a Terminate and both ends' connection ends, its posted receive flushed.
// (That write is also how the test knows siw invalidated: see sees_invalidated_stags().)
TEST_P(SiwInterop, SendWithInvalidateRevokesTheStagAndALaterWriteTerminates) {
  ASSERT_NO_FATAL_FAILURE(connect());
  std::optional<RemoteBuffer> window = b_->invalidatable(kWriteTarget, 64 << 10);
  ASSERT_TRUE(window.has_value()) << b_->last_error();
  RemoteBuffer target;
  ASSERT_NO_FATAL_FAILURE(tell(*b_, *a_, *window, target));

  fill(a_->buffer() + kWriteTarget, 16 << 10, 20);
  std::memset(b_->buffer() + kWriteTarget, 0, 16 << 10);
  ASSERT_TRUE(b_->receive(700, kMessages, 64)) << b_->last_error();
  ASSERT_TRUE(a_->write(701, kWriteTarget, 16 << 10, target)) << a_->last_error();
  ASSERT_TRUE(a_->send_invalidate(702, kControlOut, 8, target.stag)) << a_->last_error();
  ASSERT_NO_FATAL_FAILURE(expect_ok(*a_, Op::Write, 701));
  ASSERT_NO_FATAL_FAILURE(expect_ok(*a_, Op::Send, 702));
  Completion got;
    ASSERT_NO_FATAL_FAILURE(expect_ok(*b_, Op::Receive, 700, &got));
  if (b_->sees_invalidated_stags()) {
    ASSERT_TRUE(got.invalidated.has_value()) << "the receive did not report the invalidation";
    EXPECT_EQ(*got.invalidated, target.stag);
  }
  EXPECT_TRUE(holds(b_->buffer() + kWriteTarget, 16 << 10, 20));

  // The STag is gone: the write is a remote access violation.
  ASSERT_TRUE(b_->receive(703, kMessages, 64)) << b_->last_error();
  std::memset(b_->buffer() + kWriteTarget, 0, 16 << 10);
  ASSERT_TRUE(a_->write(704, kWriteTarget, 16 << 10, target)) << a_->last_error();
  EXPECT_TRUE(b_->wait_disconnected(10s)) << b_->name() << " (the target) did not end the connection";
  EXPECT_TRUE(a_->wait_disconnected(10s)) << a_->name() << " (the writer) did not learn of the Terminate";
  std::optional<Completion> flushed = b_->poll(5s);
  ASSERT_TRUE(flushed.has_value()) << b_->name() << ": the posted receive vanished";
  EXPECT_FALSE(flushed->ok) << b_->name() << ": the receive completed with " << flushed->status;
  EXPECT_EQ(flushed->id, 703u);
  std::optional<Completion> write = a_->poll(5s);
  ASSERT_TRUE(write.has_value()) << a_->name() << ": the write vanished";
  EXPECT_EQ(write->id, 704u);
  if (a_ == ndk_.get()) {
    // SoftNDK completes a write once the target placed it (iwarp_completion=placed): the
    // Terminate fails it with the remote access violation.
    EXPECT_EQ(write->status, "0xc0000005") << "STATUS_ACCESS_VIOLATION";
  }
  std::vector<unsigned char> zero(16 << 10, 0);
  EXPECT_EQ(std::memcmp(b_->buffer() + kWriteTarget, zero.data(), zero.size()), 0)
      << "a write through an invalidated STag placed data";
}

// A read of an STag the responder does not have: the responder answers with a Terminate,
// the read fails at the reader (SoftNDK: a remote access violation) and both ends'
// connection ends.
TEST_P(SiwInterop, ReadOfAnUnknownStagFailsAtTheReader) {
  ASSERT_NO_FATAL_FAILURE(connect());
  Endpoint &reader = *a_, &responder = *b_;
  RemoteBuffer bad;
  ASSERT_NO_FATAL_FAILURE(tell(responder, reader, responder.exported(kReadSource), bad));
  bad.stag ^= 0x5a00;  // another STag index, the same key
  ASSERT_TRUE(responder.receive(800, kMessages, 64)) << responder.last_error();
  ASSERT_TRUE(reader.read(801, kReadSink, 4096, bad)) << reader.last_error();
  std::optional<Completion> read = reader.poll(10s);
  ASSERT_TRUE(read.has_value()) << reader.name() << ": the read vanished";
  EXPECT_EQ(read->id, 801u);
  EXPECT_FALSE(read->ok);
  if (&reader == ndk_.get()) {
    EXPECT_EQ(read->status, "0xc0000005") << "STATUS_ACCESS_VIOLATION";
  } else {
    // siw ends the stream on any Terminate and flushes what it had outstanding, whatever
    // the Terminate says (siw_proc_terminate).
    EXPECT_EQ(read->status, "Work Request Flushed Error");
  }
  EXPECT_TRUE(reader.wait_disconnected(10s)) << reader.name();
  EXPECT_TRUE(responder.wait_disconnected(10s)) << responder.name();
  std::optional<Completion> flushed = responder.poll(5s);
  ASSERT_TRUE(flushed.has_value()) << responder.name() << ": the posted receive vanished";
  EXPECT_FALSE(flushed->ok);
  EXPECT_EQ(flushed->id, 800u);
}

// The responder rejects with private data, which the initiator reads.
TEST_P(SiwInterop, ARejectCarriesItsPrivateData) {
  const uint16_t port = b_->listen();
  ASSERT_NE(port, 0) << b_->last_error();
  ASSERT_TRUE(a_->start_connect(port, "may I")) << a_->last_error();
  std::optional<std::string> request = b_->incoming();
  ASSERT_TRUE(request.has_value()) << b_->last_error();
  EXPECT_EQ(*request, "may I");
  ASSERT_TRUE(b_->reject("no, " + b_->name() + " is busy")) << b_->last_error();
  ConnectOutcome outcome = a_->finish_connect();
  EXPECT_FALSE(outcome.accepted);
  EXPECT_EQ(outcome.error, "");
  EXPECT_EQ(outcome.private_data, "no, " + b_->name() + " is busy");
}

// A graceful disconnect from either end: the other learns of it, and every receive still
// posted on either end completes, flushed.
TEST_P(SiwInterop, ADisconnectFlushesThePostedReceivesOfBothEnds) {
  ASSERT_NO_FATAL_FAILURE(connect());
  ASSERT_NO_FATAL_FAILURE(send_to(*a_, *b_, 100, 30));  // the connection carries data before it ends
  ASSERT_TRUE(a_->receive(900, kMessages, 64)) << a_->last_error();
  ASSERT_TRUE(b_->receive(901, kMessages, 64)) << b_->last_error();
  ASSERT_TRUE(b_->receive(902, kMessages, 64)) << b_->last_error();
  a_->disconnect();
  EXPECT_TRUE(b_->wait_disconnected(10s)) << b_->name() << " did not learn of the disconnect";
  for (auto [end, ids] : {std::pair{a_, std::vector<uint64_t>{900}}, std::pair{b_, std::vector<uint64_t>{901, 902}}}) {
    for (uint64_t id : ids) {
      std::optional<Completion> c = end->poll(5s);
      ASSERT_TRUE(c.has_value()) << end->name() << ": receive " << id << " vanished";
      EXPECT_FALSE(c->ok) << end->name();
      EXPECT_EQ(c->id, id) << end->name();
    }
  }
}

std::string name_of(const ::testing::TestParamInfo<std::tuple<Initiator, Wire, Family>>& info) {
  return std::string(std::get<0>(info.param) == Initiator::SoftNdk ? "SoftNdkInitiates_" : "SiwInitiates_") +
         std::get<1>(info.param).name;
}

// Every wire over IPv4; over IPv6 the default wire and the plainest one.
INSTANTIATE_TEST_SUITE_P(Wires, SiwInterop,
                         ::testing::Combine(::testing::Values(Initiator::SoftNdk, Initiator::Siw),
                                            ::testing::ValuesIn(kWires), ::testing::Values(Family::Ipv4)),
                         name_of);
INSTANTIATE_TEST_SUITE_P(Ipv6, SiwInterop,
                         ::testing::Combine(::testing::Values(Initiator::SoftNdk, Initiator::Siw),
                                            ::testing::Values(kWires[0], kWires[5]),
                                            ::testing::Values(Family::Ipv6)),
                         name_of);

}  // namespace
}  // namespace interop
