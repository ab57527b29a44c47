// End to end on the iWARP fabric over loopback TCP, through the public headers only: two
// adapters of this process on the host's loopback interface connect through the kernel's
// TCP (MPA, DDP, RDMAP on the wire), then move data with every byte checked, pipeline
// requests, fail the documented ways and tear down. Every completion mode, IPv4 and IPv6,
// and the wire's variants (MPA revision 1 and 2, CRC on and off).
#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <tuple>

#include "core/kernel_sync.hpp"
#include "e2e.hpp"
#include "netns.hpp"
#include "process.hpp"
#include "remote.hpp"

namespace {

using namespace e2e;

struct Wire {
  const char* name;
  const char* revision;
  const char* crc;
};
constexpr Wire kWires[] = {{"Rev2Crc", "2", "1"}, {"Rev2NoCrc", "2", "0"}, {"Rev1Crc", "1", "1"}};

using Param = std::tuple<SOFTNDK_COMPLETION_MODE, bool, Wire>;

class Iwarp : public LinkFixture<Param> {
 protected:
  void SetUp() override {
    const Wire& wire = std::get<2>(GetParam());
    ASSERT_EQ(SoftNdkSetTunable("iwarp_mpa_revision", wire.revision), STATUS_SUCCESS);
    ASSERT_EQ(SoftNdkSetTunable("iwarp_crc", wire.crc), STATUS_SUCCESS);
    v6_ = std::get<1>(GetParam());
    // An ephemeral loopback port, or SOFTNDK_TEST_LISTEN_PORT so that a capture can filter
    // on it.
    const char* port = std::getenv("SOFTNDK_TEST_LISTEN_PORT");
    const uint16_t listen_port = port != nullptr ? static_cast<uint16_t>(std::atoi(port)) : 0;
    server_address_ = v6_ ? ipv6("::1", listen_port) : ipv4("127.0.0.1", listen_port);
    client_address_ = v6_ ? ipv6("::1", 0) : ipv4("127.0.0.1", 0);
    const ULONG lo = if_nametoindex("lo");
    ASSERT_NE(lo, 0u);
    const auto mode = std::get<0>(GetParam());
    const ULONG flags = NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ |
                        NDK_MR_FLAG_ALLOW_REMOTE_WRITE;
    ASSERT_NO_FATAL_FAILURE(server_.open(lo, mode, flags, SOFTNDK_FABRIC_TCP));
    ASSERT_NO_FATAL_FAILURE(client_.open(lo, mode, flags, SOFTNDK_FABRIC_TCP));
  }
  void TearDown() override {
    close_link();
    SoftNdkResetTunables();
  }

  // IRD/ORD travel in the RFC 6581 header (R176, R177); revision 1 carries none, so the
  // client's own outbound offer stands.
  void connect() {
    const bool enhanced = std::string(std::get<2>(GetParam()).revision) == "2";
    LinkFixture::connect(enhanced ? 2 : 4, /*complete_ex=*/true);
  }

  static bool wait_for(const std::atomic<int>& count, int n) {
    for (int i = 0; i < 5000 && count < n; ++i) std::this_thread::sleep_for(1ms);
    return count >= n;
  }

  bool v6_ = false;
};

TEST_P(Iwarp, ConnectsSendsWritesReadsWithEveryByteInPlace) {
  ASSERT_NO_FATAL_FAILURE(connect());
  SOCKADDR_STORAGE a{};
  ULONG a_length = sizeof(a);
  ASSERT_EQ(client_connector_->Dispatch->NdkGetPeerAddress(client_connector_, reinterpret_cast<PSOCKADDR>(&a),
                                                           &a_length),
            STATUS_SUCCESS);
  EXPECT_EQ(std::memcmp(&a, &server_address_, a_length), 0);

  // Send / receive, 3 SGEs into 2, solicited.
  for (size_t i = 0; i < 3000; ++i) client_.buffer[i] = static_cast<unsigned char>(i * 7 + 1);
  NDK_SGE into[2] = {server_.sge(0, 1000), server_.sge(5000, 4000)};
  ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, &into, into, 2), STATUS_SUCCESS);
  NDK_SGE from[3] = {client_.sge(0, 1000), client_.sge(1000, 1000), client_.sge(2000, 1000)};
  ASSERT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, &from, from, 3, NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT),
            STATUS_SUCCESS);
  auto sent = client_.poll(1);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(sent[0].Type, NdkOperationTypeSend);
  EXPECT_EQ(sent[0].RequestContext, &from);
  auto received = server_.poll(1);
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(received[0].Type, NdkOperationTypeReceive);
  EXPECT_EQ(received[0].BytesTransferred, 3000u);
  EXPECT_EQ(std::memcmp(server_.buffer.data(), client_.buffer.data(), 1000), 0);
  EXPECT_EQ(std::memcmp(server_.buffer.data() + 5000, client_.buffer.data() + 1000, 2000), 0);

  // RDMA write of 256 KiB (many FPDUs), placed while the server makes no call at all.
  const size_t kSize = 256 * 1024;
  for (size_t i = 0; i < kSize; ++i) client_.buffer[100000 + i] = static_cast<unsigned char>(i % 251);
  NDK_SGE w = client_.sge(100000, kSize);
  ASSERT_EQ(client_.qp->Dispatch->NdkWrite(client_.qp, &w, &w, 1, server_.address(300000),
                                           server_.remote_token(), 0),
            STATUS_SUCCESS);
  // A fenced read of the same range, posted at once: it starts only after the write.
  NDK_SGE r = client_.sge(600000, kSize);
  ASSERT_EQ(client_.qp->Dispatch->NdkRead(client_.qp, &r, &r, 1, server_.address(300000),
                                          server_.remote_token(), NDK_OP_FLAG_READ_FENCE),
            STATUS_SUCCESS);
  auto done = client_.poll(2);
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].Type, NdkOperationTypeWrite);  // in posting order
  EXPECT_EQ(done[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(done[1].Type, NdkOperationTypeRead);
  EXPECT_EQ(done[1].Status, STATUS_SUCCESS);
  EXPECT_EQ(std::memcmp(server_.buffer.data() + 300000, client_.buffer.data() + 100000, kSize), 0);
  EXPECT_EQ(std::memcmp(client_.buffer.data() + 600000, client_.buffer.data() + 100000, kSize), 0);

  // Inline send: the buffer may change right after the call.
  char text[] = "inline bytes";
  NDK_SGE in_line{};
  in_line.VirtualAddress = text;
  in_line.Length = sizeof(text);
  NDK_SGE one = server_.sge(9000, 64);
  ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, nullptr, &one, 1), STATUS_SUCCESS);
  ASSERT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, nullptr, &in_line, 1, NDK_OP_FLAG_INLINE), STATUS_SUCCESS);
  std::memset(text, 'x', sizeof(text));
  ASSERT_EQ(server_.poll(1).size(), 1u);
  EXPECT_STREQ(reinterpret_cast<char*>(server_.buffer.data() + 9000), "inline bytes");
  ASSERT_EQ(client_.poll(1).size(), 1u);

  // Graceful disconnect: the server is told (reason 0), the client's QP is flushed.
  Waiter disconnected;
  ASSERT_EQ(disconnected.wait(client_connector_->Dispatch->NdkDisconnect(client_connector_, &Waiter::on_request,
                                                                         &disconnected)),
            STATUS_SUCCESS);
  ASSERT_TRUE(wait_for(server_disconnects_.count, 1));
  EXPECT_EQ(server_disconnects_.reason, 0u);
  EXPECT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, nullptr, from, 1, 0), STATUS_CONNECTION_INVALID);
}

TEST_P(Iwarp, PipelinedRequestsCompleteInPostingOrderWithTheirBytes) {
  ASSERT_NO_FATAL_FAILURE(connect());
  // 48 requests in flight at once: sends into posted receives, writes and reads mixed.
  constexpr int kCount = 48;
  constexpr ULONG kChunk = 4096;
  for (int i = 0; i < kCount; ++i) {
    NDK_SGE rx = server_.sge(200000 + i * kChunk, kChunk);
    ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, reinterpret_cast<PVOID>(uintptr_t(1000 + i)), &rx, 1),
              STATUS_SUCCESS);
  }
  std::iota(client_.buffer.begin(), client_.buffer.begin() + kCount * kChunk, static_cast<unsigned char>(3));
  int sends = 0;
  for (int i = 0; i < kCount; ++i) {
    NDK_SGE s = client_.sge(i * kChunk, kChunk);
    PVOID context = reinterpret_cast<PVOID>(uintptr_t(i + 1));
    NTSTATUS status;
    switch (i % 3) {
      case 0:
        status = client_.qp->Dispatch->NdkSend(client_.qp, context, &s, 1, 0);
        ++sends;
        break;
      case 1:
        status = client_.qp->Dispatch->NdkWrite(client_.qp, context, &s, 1, server_.address(500000 + i * kChunk),
                                                server_.remote_token(), 0);
        break;
      default: {
        NDK_SGE sink = client_.sge(700000 + i * kChunk, kChunk);
        status = client_.qp->Dispatch->NdkRead(client_.qp, context, &sink, 1, server_.address(200000),
                                               server_.remote_token(), 0);
        break;
      }
    }
    ASSERT_EQ(status, STATUS_SUCCESS) << i;
  }
  auto done = client_.poll(kCount);
  ASSERT_EQ(done.size(), size_t{kCount});
  for (int i = 0; i < kCount; ++i) {
    EXPECT_EQ(done[i].Status, STATUS_SUCCESS) << i;
    EXPECT_EQ(done[i].RequestContext, reinterpret_cast<PVOID>(uintptr_t(i + 1))) << "posting order";
  }
  auto received = server_.poll(sends);
  ASSERT_EQ(received.size(), size_t(sends));
  for (int i = 0, k = 0; i < kCount; ++i) {
    if (i % 3 == 1) {
      EXPECT_EQ(std::memcmp(server_.buffer.data() + 500000 + i * kChunk, client_.buffer.data() + i * kChunk, kChunk), 0);
    }
    if (i % 3 != 0) continue;
    EXPECT_EQ(received[k].RequestContext, reinterpret_cast<PVOID>(uintptr_t(1000 + k)));
    EXPECT_EQ(std::memcmp(server_.buffer.data() + 200000 + k * kChunk, client_.buffer.data() + i * kChunk, kChunk), 0);
    ++k;
  }
}

// NDK_OP_FLAG_DEFER (R082, R084): this fabric holds a deferred chain until the request
// that ends it, so that the chain leaves in one sendmsg. Here a bind (a request with
// nothing to send) ends it, and the held write and read then go out. A chain bigger than
// one batch is not held.
TEST_P(Iwarp, DeferredChainLeavesOnlyWithItsEnd) {
  ASSERT_NO_FATAL_FAILURE(connect());
  for (size_t i = 0; i < 8192; ++i) client_.buffer[i] = static_cast<unsigned char>(i % 253 + 1);
  std::fill(server_.buffer.begin() + 400000, server_.buffer.begin() + 400000 + 4096, 0x5A);
  NDK_MW* mw = create<NDK_MW>([&](auto cb, auto ctx, NDK_MW** out) {
    return client_.pd->Dispatch->NdkCreateMw(client_.pd, cb, ctx, out);
  });
  ASSERT_NE(mw, nullptr);
  NDK_SGE w = client_.sge(0, 8192);
  ASSERT_EQ(client_.qp->Dispatch->NdkWrite(client_.qp, &w, &w, 1, server_.address(300000), server_.remote_token(),
                                           NDK_OP_FLAG_DEFER),
            STATUS_SUCCESS);
  NDK_SGE r = client_.sge(20000, 4096);
  ASSERT_EQ(client_.qp->Dispatch->NdkRead(client_.qp, &r, &r, 1, server_.address(400000), server_.remote_token(),
                                          NDK_OP_FLAG_DEFER),
            STATUS_SUCCESS);
  // Held: nothing reaches the server (whose engine thread would place it), nothing
  // completes, however long we wait and poll.
  const auto until = std::chrono::steady_clock::now() + 150ms;
  while (std::chrono::steady_clock::now() < until) {
    NDK_RESULT_EX none[4];
    ASSERT_EQ(client_.cq->Dispatch->NdkGetCqResultsEx(client_.cq, none, 4), 0u) << "a deferred request completed";
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(std::all_of(server_.buffer.begin() + 300000, server_.buffer.begin() + 308192,
                          [](unsigned char b) { return b == 0; }))
      << "a deferred write reached the target before its chain ended";
  ASSERT_EQ(client_.qp->Dispatch->NdkBind(client_.qp, mw, client_.mr, mw, client_.buffer.data(), 4096,
                                          NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_SUCCESS);
  auto done = client_.poll(3);
  ASSERT_EQ(done.size(), 3u);
  EXPECT_EQ(done[0].RequestContext, &w);
  EXPECT_EQ(done[1].RequestContext, &r);
  EXPECT_EQ(done[2].RequestContext, mw);
  for (const auto& d : done) EXPECT_EQ(d.Status, STATUS_SUCCESS);
  EXPECT_EQ(std::memcmp(server_.buffer.data() + 300000, client_.buffer.data(), 8192), 0);
  EXPECT_TRUE(std::all_of(client_.buffer.begin() + 20000, client_.buffer.begin() + 24096,
                          [](unsigned char b) { return b == 0x5A; }));
  close(mw);

  // A chain is held only while it fits one sendmsg's batch: a bigger one starts at once.
  const size_t kBig = 512 * 1024;
  NDK_SGE big = client_.sge(0, kBig);
  ASSERT_EQ(client_.qp->Dispatch->NdkWrite(client_.qp, &big, &big, 1, server_.address(400000), server_.remote_token(),
                                           NDK_OP_FLAG_DEFER),
            STATUS_SUCCESS);
  auto landed = client_.poll(1);
  ASSERT_EQ(landed.size(), 1u) << "a deferred write bigger than a batch was held";
  EXPECT_EQ(landed[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(std::memcmp(server_.buffer.data() + 400000, client_.buffer.data(), kBig), 0);
}

// A region the responder's consumer keeps writing while the peer reads it, as a peer
// polling a counter or a flag does: each Read Response carries whatever bytes it found,
// with a CRC that matches them (it is computed over the bytes sent, not over memory that
// may change before the socket takes them). A false CRC error would end the connection.
TEST_P(Iwarp, ReadOfMemoryTheResponderKeepsWritingCompletesWithoutCrcError) {
  ASSERT_NO_FATAL_FAILURE(connect());
  constexpr size_t kAt = 600000;
  constexpr ULONG kSpan = 64 * 1024;
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (unsigned char round = 1; !stop.load(std::memory_order_relaxed); ++round)
      softndk::write_exposed([&] { std::memset(server_.buffer.data() + kAt, round, kSpan); });
  });
  constexpr int kReads = 600, kDepth = 8;
  int posted = 0, completed = 0, failed = 0;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (completed < kReads && std::chrono::steady_clock::now() < deadline && failed == 0) {
    while (posted < kReads && posted - completed < kDepth) {
      // Whole spans and single bytes in turn.
      const ULONG length = posted % 2 == 0 ? kSpan : 1;
      NDK_SGE sink = client_.sge(static_cast<size_t>(posted % kDepth) * kSpan, length);
      ASSERT_EQ(client_.qp->Dispatch->NdkRead(client_.qp, nullptr, &sink, 1, server_.address(kAt + kSpan - length),
                                              server_.remote_token(), 0),
                STATUS_SUCCESS)
          << "read " << posted;
      ++posted;
    }
    NDK_RESULT_EX results[kDepth];
    const ULONG got = client_.cq->Dispatch->NdkGetCqResultsEx(client_.cq, results, kDepth);
    for (ULONG i = 0; i < got; ++i) failed += results[i].Status != STATUS_SUCCESS;
    completed += static_cast<int>(got);
  }
  stop = true;
  writer.join();
  EXPECT_EQ(completed, kReads);
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(client_disconnects_.count.load(), 0) << "reason 0x" << std::hex << client_disconnects_.reason.load();
  EXPECT_EQ(server_disconnects_.count.load(), 0) << "reason 0x" << std::hex << server_disconnects_.reason.load();
}

TEST_P(Iwarp, ReadOfAnUnknownTokenFailsWithAccessViolationAndTerminates) {
  ASSERT_NO_FATAL_FAILURE(connect());
  NDK_SGE into = server_.sge(0, 64);
  ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, &into, &into, 1), STATUS_SUCCESS);
  NDK_SGE r = client_.sge(0, 8);
  ASSERT_EQ(client_.qp->Dispatch->NdkRead(client_.qp, &r, &r, 1, server_.address(0),
                                          server_.remote_token() ^ 0x5a5a, 0),
            STATUS_SUCCESS);
  auto results = client_.poll(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].Status, STATUS_ACCESS_VIOLATION);  // the Terminate names the read
  // Both sides hear of it; the server's receive is flushed.
  ASSERT_TRUE(wait_for(server_disconnects_.count, 1));
  EXPECT_EQ(server_disconnects_.reason, static_cast<ULONG>(STATUS_ACCESS_VIOLATION));
  ASSERT_TRUE(wait_for(client_disconnects_.count, 1));
  EXPECT_EQ(client_disconnects_.reason, static_cast<ULONG>(STATUS_ACCESS_VIOLATION));
  auto flushed = server_.poll(1);
  ASSERT_EQ(flushed.size(), 1u);
  EXPECT_EQ(flushed[0].Status, STATUS_CANCELLED);
  EXPECT_EQ(client_.qp->Dispatch->NdkRead(client_.qp, nullptr, &r, 1, server_.address(0), server_.remote_token(), 0),
            STATUS_CONNECTION_INVALID);
}

// A region deregistered while a read of it waits behind a long Read Response: the read
// fails as it would have on arrival (a Terminate naming it, invalid STag), the one in
// progress is flushed, and neither hangs.
TEST_P(Iwarp, ReadOfARegionDeregisteredAfterItsRequestFailsAndTerminates) {
  ASSERT_NO_FATAL_FAILURE(connect());
  // A big region whose Read Response keeps the socket busy, and a small one.
  std::vector<unsigned char> big(64u << 20, 0x11), small(4096, 0x22);
  PMDL big_mdl = nullptr, small_mdl = nullptr, sink_mdl = nullptr;
  NDK_MR* big_mr = register_region(server_.pd, big.data(), big.size(), NDK_MR_FLAG_ALLOW_REMOTE_READ, big_mdl);
  NDK_MR* small_mr = register_region(server_.pd, small.data(), small.size(), NDK_MR_FLAG_ALLOW_REMOTE_READ, small_mdl);
  std::vector<unsigned char> sink(64u << 20);
  NDK_MR* sink_mr = register_region(client_.pd, sink.data(), sink.size(), NDK_MR_FLAG_ALLOW_LOCAL_WRITE, sink_mdl);
  ASSERT_TRUE(big_mr != nullptr && small_mr != nullptr && sink_mr != nullptr);
  NDK_SGE a{};
  a.VirtualAddress = sink.data();
  a.Length = static_cast<ULONG>(big.size());
  a.MemoryRegionToken = sink_mr->Dispatch->NdkGetLocalTokenFromMr(sink_mr);
  NDK_SGE b = client_.sge(0, 4096);
  ASSERT_EQ(client_.qp->Dispatch->NdkRead(client_.qp, &a, &a, 1, reinterpret_cast<uintptr_t>(big.data()),
                                          big_mr->Dispatch->NdkGetRemoteTokenFromMr(big_mr), NDK_OP_FLAG_DEFER),
            STATUS_SUCCESS);
  ASSERT_EQ(client_.qp->Dispatch->NdkRead(client_.qp, &b, &b, 1, reinterpret_cast<uintptr_t>(small.data()),
                                          small_mr->Dispatch->NdkGetRemoteTokenFromMr(small_mr), 0),
            STATUS_SUCCESS);
  // Both requests arrive together and are checked then; the big response takes far longer
  // than this before the small one's turn comes.
  std::this_thread::sleep_for(3ms);
  Waiter deregistered;
  ASSERT_EQ(deregistered.wait(small_mr->Dispatch->NdkDeregisterMr(small_mr, &Waiter::on_request, &deregistered)),
            STATUS_SUCCESS);
  auto done = client_.poll(2);
  ASSERT_EQ(done.size(), 2u) << "a read never completed";
  EXPECT_EQ(done[0].RequestContext, &a);
  EXPECT_TRUE(done[0].Status == STATUS_SUCCESS || done[0].Status == STATUS_CANCELLED) << done[0].Status;
  EXPECT_EQ(done[1].RequestContext, &b);
  EXPECT_EQ(done[1].Status, STATUS_ACCESS_VIOLATION);  // the Terminate names it
  ASSERT_TRUE(wait_for(server_disconnects_.count, 1));
  EXPECT_EQ(server_disconnects_.reason, static_cast<ULONG>(STATUS_ACCESS_VIOLATION));
  ASSERT_TRUE(wait_for(client_disconnects_.count, 1));
  EXPECT_EQ(client_disconnects_.reason, static_cast<ULONG>(STATUS_ACCESS_VIOLATION));
  // The connection is over: nothing accesses the regions any more (they go before their
  // PDs, which close_link closes).
  close(sink_mr);
  close(big_mr);
  close(small_mr);
  IoFreeMdl(sink_mdl);
  IoFreeMdl(big_mdl);
  IoFreeMdl(small_mdl);
}

TEST_P(Iwarp, WritePastTheRegionTerminatesWithRemoteResources) {
  ASSERT_NO_FATAL_FAILURE(connect());
  NDK_SGE w = client_.sge(0, 64);
  ASSERT_EQ(client_.qp->Dispatch->NdkWrite(client_.qp, nullptr, &w, 1,
                                           server_.address(server_.buffer.size() - 32), server_.remote_token(), 0),
            STATUS_SUCCESS);
  // The write completes once the target placed it or refused it (iwarp_completion=placed):
  // here the target's Terminate names it, and ends the connection on both sides.
  auto results = client_.poll(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].Status, STATUS_REMOTE_RESOURCES);
  ASSERT_TRUE(wait_for(client_disconnects_.count, 1));
  EXPECT_EQ(client_disconnects_.reason, static_cast<ULONG>(STATUS_REMOTE_RESOURCES));
  ASSERT_TRUE(wait_for(server_disconnects_.count, 1));
  EXPECT_EQ(server_disconnects_.reason, static_cast<ULONG>(STATUS_REMOTE_RESOURCES));
  // Nothing landed outside the region, and nothing inside it either.
  EXPECT_EQ(std::count(server_.buffer.end() - 32, server_.buffer.end(), 0), 32);
}

TEST_P(Iwarp, WithCompletionOnSendAWriteCompletesBeforeTheTargetRefusesIt) {
  // iwarp_completion=sent: a write completes once its bytes left; the Terminate that
  // follows ends the connection (raw iWARP semantics, for consumers that want them).
  ASSERT_EQ(SoftNdkSetTunable("iwarp_completion", "sent"), STATUS_SUCCESS);
  ASSERT_NO_FATAL_FAILURE(connect());
  NDK_SGE w = client_.sge(0, 64);
  ASSERT_EQ(client_.qp->Dispatch->NdkWrite(client_.qp, nullptr, &w, 1, server_.address(server_.buffer.size() - 32),
                                           server_.remote_token(), 0),
            STATUS_SUCCESS);
  auto results = client_.poll(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].Status, STATUS_SUCCESS);
  ASSERT_TRUE(wait_for(client_disconnects_.count, 1));
  EXPECT_EQ(client_disconnects_.reason, static_cast<ULONG>(STATUS_REMOTE_RESOURCES));
}

TEST_P(Iwarp, SendWithoutPostedReceiveTerminates) {
  ASSERT_NO_FATAL_FAILURE(connect());
  NDK_SGE s = client_.sge(0, 8);
  ASSERT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, nullptr, &s, 1, 0), STATUS_SUCCESS);
  auto results = client_.poll(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].Status, STATUS_REMOTE_RESOURCES);  // the Terminate names this send
  ASSERT_TRUE(wait_for(client_disconnects_.count, 1));
  EXPECT_EQ(client_disconnects_.reason, static_cast<ULONG>(STATUS_REMOTE_RESOURCES));
  ASSERT_TRUE(wait_for(server_disconnects_.count, 1));
  EXPECT_EQ(server_disconnects_.reason, static_cast<ULONG>(STATUS_REMOTE_RESOURCES));
}

// Sends of 16 KiB and more go from the socket straight into their receive's buffers (as
// tagged payloads do): across several FPDUs and SGEs, every byte where it belongs and none
// between the SGEs. (One larger than its receive takes the byte-wise path, which places
// what fits: ReceiveTooSmallFailsWithBufferOverflow, and 60 KB into 256 bytes in
// iwarp_hostile_test.)
TEST_P(Iwarp, BigSendsLandInTheirReceivesByteForByte) {
  ASSERT_NO_FATAL_FAILURE(connect());
  constexpr unsigned char kGuard = 0xEE;
  std::fill(server_.buffer.begin(), server_.buffer.begin() + 400000, kGuard);
  for (size_t i = 0; i < 400000; ++i) client_.buffer[i] = static_cast<unsigned char>(i * 13 + 5);
  // Receive: 70000 + 50000 + 80000 bytes, with gaps between them.
  const NDK_SGE into[3] = {server_.sge(0, 70000), server_.sge(80000, 50000), server_.sge(140000, 80000)};
  const size_t kSizes[] = {200000, 150000, 20000};  // the whole receive, less, just above the threshold
  for (size_t size : kSizes) {
    SCOPED_TRACE(size);
    std::fill(server_.buffer.begin(), server_.buffer.begin() + 400000, kGuard);
    ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, nullptr, into, 3), STATUS_SUCCESS);
    // From four uneven SGEs.
    const ULONG a = static_cast<ULONG>(size / 3), b = static_cast<ULONG>(size / 4), c = 1000;
    const NDK_SGE from[4] = {client_.sge(0, a), client_.sge(a, b), client_.sge(a + b, c),
                             client_.sge(a + b + c, static_cast<ULONG>(size - a - b - c))};
    ASSERT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, nullptr, from, 4, 0), STATUS_SUCCESS);
    auto received = server_.poll(1);
    ASSERT_EQ(received.size(), 1u);
    EXPECT_EQ(received[0].Status, STATUS_SUCCESS);
    EXPECT_EQ(received[0].BytesTransferred, size);
    ASSERT_EQ(client_.poll(1).size(), 1u);
    size_t at = 0;  // message offset
    for (const NDK_SGE& sge : into) {
      const size_t base = static_cast<size_t>(static_cast<unsigned char*>(sge.VirtualAddress) - server_.buffer.data());
      for (size_t i = 0; i < sge.Length; ++i, ++at) {
        const unsigned char want = at < size ? client_.buffer[at] : kGuard;
        if (server_.buffer[base + i] != want) {
          ADD_FAILURE() << "byte " << at << " of the message (buffer offset " << base + i << ")";
          break;
        }
      }
    }
    for (size_t gap : {size_t{70000}, size_t{130000}, size_t{220000}})
      EXPECT_EQ(server_.buffer[gap], kGuard) << "a byte landed outside the receive at " << gap;
  }
}

TEST_P(Iwarp, ReceiveTooSmallFailsWithBufferOverflow) {
  ASSERT_NO_FATAL_FAILURE(connect());
  NDK_SGE small = server_.sge(0, 16);
  ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, nullptr, &small, 1), STATUS_SUCCESS);
  NDK_SGE big = client_.sge(0, 64);
  ASSERT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, nullptr, &big, 1, 0), STATUS_SUCCESS);
  auto received = server_.poll(1);
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].Status, STATUS_BUFFER_OVERFLOW);
  EXPECT_EQ(received[0].BytesTransferred, 16u);  // what fitted
  auto sent = client_.poll(1);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].Status, STATUS_BUFFER_OVERFLOW);
  ASSERT_TRUE(wait_for(client_disconnects_.count, 1));
  EXPECT_EQ(client_disconnects_.reason, static_cast<ULONG>(STATUS_BUFFER_OVERFLOW));
}

TEST_P(Iwarp, RejectCarriesPrivateDataAndNobodyListeningIsRefused) {
  ASSERT_NO_FATAL_FAILURE(listen());
  Waiter connected;
  ASSERT_NO_FATAL_FAILURE(start_connect("x", 1, connected));
  server_connector_ = incoming_.next();
  ASSERT_NE(server_connector_, nullptr);
  const char no[] = "not today";
  ASSERT_EQ(server_connector_->Dispatch->NdkReject(server_connector_, const_cast<char*>(no), sizeof(no)),
            STATUS_SUCCESS);
  ASSERT_EQ(connected.wait(STATUS_PENDING), STATUS_CONNECTION_REFUSED);
  char got[32] = {};
  ULONG length = sizeof(got);
  ASSERT_EQ(client_connector_->Dispatch->NdkGetConnectionData(client_connector_, nullptr, nullptr, got, &length),
            STATUS_SUCCESS);  // R166: the reject's private data, from the MPA Reject
  EXPECT_STREQ(got, no);
  close(client_connector_);

  // The listener goes: a new connect to its port is refused by the kernel.
  close(server_connector_);
  close(listener_);
  Waiter refused;
  ASSERT_NO_FATAL_FAILURE(start_connect("y", 1, refused));
  EXPECT_EQ(refused.wait(STATUS_PENDING), STATUS_CONNECTION_REFUSED);
}

// One session with every message type the fabric sends, for tests/e2e/check_wire.py to
// capture and hand to Wireshark's dissectors: an MPA Request with private data answered
// by a Reject, then one answered by a Reply (and the RTR), Send, Send with Solicited Event,
// Send with Invalidate, RDMA Write, RDMA Read Request and Response, and a Terminate.
TEST_P(Iwarp, EveryMessageTypeOnTheWire) {
  ASSERT_NO_FATAL_FAILURE(listen());
  {
    Waiter refused;
    const char please[] = "reject me, with data";
    ASSERT_NO_FATAL_FAILURE(start_connect(please, sizeof(please), refused));
    NDK_CONNECTOR* rejected = incoming_.next();
    ASSERT_NE(rejected, nullptr);
    const char no[] = "rejected, with data";
    ASSERT_EQ(rejected->Dispatch->NdkReject(rejected, const_cast<char*>(no), sizeof(no)), STATUS_SUCCESS);
    ASSERT_EQ(refused.wait(STATUS_PENDING), STATUS_CONNECTION_REFUSED);
    close(rejected);
    close(client_connector_);
  }
  // connect() listens again: keep the listener, connect through it.
  const char hello[] = "hello over iWARP";
  Waiter connected;
  ASSERT_NO_FATAL_FAILURE(start_connect(hello, sizeof(hello), connected));
  server_connector_ = incoming_.next();
  ASSERT_NE(server_connector_, nullptr);
  Waiter accepted;
  ASSERT_EQ(server_connector_->Dispatch->NdkAcceptEx(server_connector_, server_.qp, 4, 4, nullptr, 0,
                                                     &Disconnects::on_ex, &server_disconnects_,
                                                     &Waiter::on_request, &accepted),
            STATUS_PENDING);
  ASSERT_EQ(connected.wait(STATUS_PENDING), STATUS_SUCCESS);
  Waiter completed;
  ASSERT_EQ(completed.wait(client_connector_->Dispatch->NdkCompleteConnectEx(
                client_connector_, &Disconnects::on_ex, &client_disconnects_, &Waiter::on_request, &completed)),
            STATUS_SUCCESS);
  ASSERT_EQ(accepted.wait(STATUS_PENDING), STATUS_SUCCESS);

  // A window on the server for the Send with Invalidate to name.
  NDK_PD* pd = server_.pd;
  NDK_MW* mw = create<NDK_MW>([&](auto cb, auto ctx, NDK_MW** out) { return pd->Dispatch->NdkCreateMw(pd, cb, ctx, out); });
  ASSERT_NE(mw, nullptr);
  ASSERT_EQ(server_.qp->Dispatch->NdkBind(server_.qp, nullptr, server_.mr, mw, server_.buffer.data() + 4096, 4096,
                                          NDK_OP_FLAG_ALLOW_REMOTE_WRITE),
            STATUS_SUCCESS);
  ASSERT_EQ(server_.poll(1).size(), 1u);
  for (int i = 0; i < 3; ++i) {
    NDK_SGE rx = server_.sge(100000 + i * 1000, 1000);
    ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, nullptr, &rx, 1), STATUS_SUCCESS);
  }
  NDK_SGE s = client_.sge(0, 600);
  ASSERT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, nullptr, &s, 1, 0), STATUS_SUCCESS);
  ASSERT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, nullptr, &s, 1, NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT), STATUS_SUCCESS);
  ASSERT_EQ(client_.qp->Dispatch->NdkSendAndInvalidate(client_.qp, nullptr, &s, 1, 0, mw->Dispatch->NdkGetRemoteTokenFromMw(mw)),
            STATUS_SUCCESS);
  auto received = server_.poll(3);
  ASSERT_EQ(received.size(), 3u);
  EXPECT_EQ(received[2].Type, NdkOperationTypeReceiveAndInvalidate);
  NDK_SGE w = client_.sge(200000, 100000);
  ASSERT_EQ(client_.qp->Dispatch->NdkWrite(client_.qp, nullptr, &w, 1, server_.address(200000), server_.remote_token(), 0),
            STATUS_SUCCESS);
  NDK_SGE r = client_.sge(400000, 100000);
  ASSERT_EQ(client_.qp->Dispatch->NdkRead(client_.qp, nullptr, &r, 1, server_.address(200000), server_.remote_token(), 0),
            STATUS_SUCCESS);
  auto done = client_.poll(5);
  ASSERT_EQ(done.size(), 5u);
  for (const auto& d : done) EXPECT_EQ(d.Status, STATUS_SUCCESS);
  // A write through the invalidated window: the server answers with a Terminate.
  ASSERT_EQ(client_.qp->Dispatch->NdkWrite(client_.qp, nullptr, &s, 1, server_.address(4096),
                                           mw->Dispatch->NdkGetRemoteTokenFromMw(mw), 0),
            STATUS_SUCCESS);
  ASSERT_TRUE(wait_for(client_disconnects_.count, 1));
  EXPECT_EQ(client_disconnects_.reason, static_cast<ULONG>(STATUS_ACCESS_VIOLATION));
  close(server_connector_);
  close(mw);
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  std::string name = SoftNdkCompletionModeName(std::get<0>(info.param));
  name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
  return name + (std::get<1>(info.param) ? "_IPv6_" : "_IPv4_") + std::get<2>(info.param).name;
}

INSTANTIATE_TEST_SUITE_P(
    Tcp, Iwarp,
    ::testing::Combine(::testing::Values(SOFTNDK_COMPLETION_INLINE, SOFTNDK_COMPLETION_CALLER_THREAD,
                                         SOFTNDK_COMPLETION_PROVIDER_THREAD, SOFTNDK_COMPLETION_MIXED),
                       ::testing::Bool(), ::testing::ValuesIn(kWires)),
    param_name);

}  // namespace

// ---------------------------------------------------------------- two processes --

using namespace e2e;
//
// A client in this process and a server in another (this binary again, running only
// IwarpProcesses.ServerRole): the server accepts with private data that carries its
// region's token, address and size (as a consumer protocol would), echoes every message
// back and serves RDMA writes and reads while its consumer only waits.

namespace {

constexpr int kEchoes = 8;
constexpr ULONG kMessage = 3000;

}  // namespace

TEST(IwarpProcesses, ServerRole) {
  if (role_report_fd() < 0) GTEST_SKIP() << "the server half of the IwarpProcesses tests";
  const Host host = role_host();
  Side server;
  Incoming incoming;
  NDK_LISTENER* listener = nullptr;
  NDK_CONNECTOR* connector = nullptr;
  ASSERT_NO_FATAL_FAILURE(listen_and_take_request(server, host, SOFTNDK_COMPLETION_PROVIDER_THREAD, listener, incoming,
                                                  connector));
  for (size_t i = 0; i < server.buffer.size(); ++i) server.buffer[i] = static_cast<unsigned char>(i * 13 + 5);
  for (int i = 0; i < kEchoes; ++i) {
    NDK_SGE rx = server.sge(i * 4096, 4096);
    ASSERT_EQ(server.qp->Dispatch->NdkReceive(server.qp, nullptr, &rx, 1), STATUS_SUCCESS);
  }
  Disconnects disconnects;
  ASSERT_NO_FATAL_FAILURE(accept_with_offer(server, connector, disconnects));
  // Echo each message back from where it landed (receives and the echoes' completions
  // share the CQ, in whatever order they come).
  for (int received = 0, echoed = 0; echoed < kEchoes;) {
    auto got = server.poll(1);
    ASSERT_FALSE(got.empty());
    for (const NDK_RESULT_EX& r : got) {
      ASSERT_EQ(r.Status, STATUS_SUCCESS);
      if (r.Type != NdkOperationTypeReceive) {
        ++echoed;
        continue;
      }
      NDK_SGE back = server.sge(received++ * 4096, r.BytesTransferred);
      ASSERT_EQ(server.qp->Dispatch->NdkSend(server.qp, nullptr, &back, 1, 0), STATUS_SUCCESS);
    }
  }
  // The client writes and reads on its own; the server only waits for its disconnect.
  for (int i = 0; i < 10000 && disconnects.count == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(disconnects.count, 1);
  close(connector);
  close(listener);
  server.close_all();
}

// The client's half: connects from `host` to the server at `destination`:`port`, then
// moves data by every operation, every byte checked, and disconnects.
void client_moves_verified_data(const Host& host, const std::string& destination_text, uint16_t port) {
  Side client;
  ASSERT_NO_FATAL_FAILURE(client.open(if_nametoindex(host.ifname.c_str()), SOFTNDK_COMPLETION_INLINE, kRemoteAccess,
                                     SOFTNDK_FABRIC_TCP));
  NDK_CONNECTOR* connector = nullptr;
  Offer offer{};
  ASSERT_NO_FATAL_FAILURE(connect_to_server(client, host, destination_text, port, connector, offer));

  // Messages and their echoes, every byte.
  for (int i = 0; i < kEchoes; ++i) {
    for (ULONG k = 0; k < kMessage; ++k) client.buffer[k] = static_cast<unsigned char>(k * 3 + i);
    NDK_SGE back = client.sge(100000 + i * 4096, 4096);
    ASSERT_EQ(client.qp->Dispatch->NdkReceive(client.qp, nullptr, &back, 1), STATUS_SUCCESS);
    NDK_SGE s = client.sge(0, kMessage);
    ASSERT_EQ(client.qp->Dispatch->NdkSend(client.qp, nullptr, &s, 1, 0), STATUS_SUCCESS);
    auto done = client.poll(2);  // the send, and the echo's receive
    ASSERT_EQ(done.size(), 2u);
    for (const auto& d : done) ASSERT_EQ(d.Status, STATUS_SUCCESS);
    EXPECT_EQ(std::memcmp(client.buffer.data() + 100000 + i * 4096, client.buffer.data(), kMessage), 0) << i;
  }
  // RDMA read of the server's pattern, RDMA write of ours, read back: every byte.
  const size_t kSize = 300 * 1024;
  ASSERT_LE(kSize + 500000, offer.size);
  NDK_SGE r = client.sge(200000, kSize);
  ASSERT_EQ(client.qp->Dispatch->NdkRead(client.qp, nullptr, &r, 1, offer.address + 500000, offer.token, 0), STATUS_SUCCESS);
  ASSERT_EQ(client.poll(1).size(), 1u);
  for (size_t k = 0; k < kSize; ++k)
    ASSERT_EQ(client.buffer[200000 + k], static_cast<unsigned char>((500000 + k) * 13 + 5)) << k;
  for (size_t k = 0; k < kSize; ++k) client.buffer[600000 + k] = static_cast<unsigned char>(k % 241);
  NDK_SGE w = client.sge(600000, kSize);
  ASSERT_EQ(client.qp->Dispatch->NdkWrite(client.qp, nullptr, &w, 1, offer.address + 500000, offer.token, 0), STATUS_SUCCESS);
  NDK_SGE again = client.sge(200000, kSize);
  ASSERT_EQ(client.qp->Dispatch->NdkRead(client.qp, nullptr, &again, 1, offer.address + 500000, offer.token, 0),
            STATUS_SUCCESS);
  auto done = client.poll(2);
  ASSERT_EQ(done.size(), 2u);
  for (const auto& d : done) ASSERT_EQ(d.Status, STATUS_SUCCESS);
  EXPECT_EQ(std::memcmp(client.buffer.data() + 200000, client.buffer.data() + 600000, kSize), 0);

  Waiter disconnected;
  ASSERT_EQ(disconnected.wait(connector->Dispatch->NdkDisconnect(connector, &Waiter::on_request, &disconnected)),
            STATUS_SUCCESS);
  close(connector);
  client.close_all();
}

TEST(IwarpProcesses, ClientRole) {
  if (role_report_fd() < 0) GTEST_SKIP() << "the client half of IwarpProcesses.BetweenTwoHosts";
  const char* destination = std::getenv("SOFTNDK_TEST_DESTINATION");
  const char* port = std::getenv("SOFTNDK_TEST_PORT");
  ASSERT_TRUE(destination != nullptr && port != nullptr);
  client_moves_verified_data(role_host(), destination, static_cast<uint16_t>(std::atoi(port)));
}

TEST(IwarpProcesses, ClientMovesVerifiedDataThroughAServerProcess) {
  // The server: this binary, running the server role; it reports its port on a pipe.
  Child server("IwarpProcesses.ServerRole", {});
  ASSERT_TRUE(server.started());
  const uint16_t port = static_cast<uint16_t>(std::atoi(server.read_line(10s).c_str()));
  ASSERT_NE(port, 0) << "the server process did not report its port";
  client_moves_verified_data(Host{}, "127.0.0.1", port);
  ASSERT_TRUE(server.wait(10s)) << "the server process did not finish";
  EXPECT_EQ(server.exit_status(), 0);
}

// Two hosts: the server in one network namespace, the client in another, joined by a veth
// pair; the data crosses real interfaces (their addresses exist only in the namespaces).
TEST(IwarpProcesses, BetweenTwoHostsInNetworkNamespaces) {
  NetnsPair hosts;
  if (!hosts.available()) GTEST_SKIP() << hosts.why();
  Child server("IwarpProcesses.ServerRole",
               {std::string("SOFTNDK_TEST_IFNAME=") + NetnsPair::kVeth[0],
                std::string("SOFTNDK_TEST_ADDRESS=") + NetnsPair::kAddress[0]},
               hosts.name(0));
  ASSERT_TRUE(server.started());
  const std::string port = server.read_line(10s);
  ASSERT_NE(std::atoi(port.c_str()), 0) << "the server process did not report its port";
  Child client("IwarpProcesses.ClientRole",
               {std::string("SOFTNDK_TEST_IFNAME=") + NetnsPair::kVeth[1],
                std::string("SOFTNDK_TEST_ADDRESS=") + NetnsPair::kAddress[1],
                std::string("SOFTNDK_TEST_DESTINATION=") + NetnsPair::kAddress[0], "SOFTNDK_TEST_PORT=" + port},
               hosts.name(1));
  ASSERT_TRUE(client.started());
  ASSERT_TRUE(client.wait(30s)) << "the client process did not finish";
  EXPECT_EQ(client.exit_status(), 0) << "the client process failed (its output is above)";
  ASSERT_TRUE(server.wait(10s)) << "the server process did not finish";
  EXPECT_EQ(server.exit_status(), 0);
}
