// The iWARP data path allocates nothing once a connection is warm: sends into posted
// receives, RDMA writes and reads, with every completion polled, over loopback TCP. This
// binary counts allocations (alloc_counter.hpp: from any thread, the consumer's posts and
// polls and the engine's progress) during a window of steady traffic.
#include <net/if.h>

#include "alloc_counter.hpp"
#include "e2e.hpp"

namespace {

using namespace e2e;

class IwarpAllocations : public LinkFixture<int> {
 protected:
  void SetUp() override {
    server_address_ = ipv4("127.0.0.1", 0);
    client_address_ = ipv4("127.0.0.1", 0);
    const ULONG lo = if_nametoindex("lo");
    ASSERT_NO_FATAL_FAILURE(server_.open(lo, SOFTNDK_COMPLETION_INLINE, kAccess, SOFTNDK_FABRIC_TCP));
    ASSERT_NO_FATAL_FAILURE(client_.open(lo, SOFTNDK_COMPLETION_INLINE, kAccess, SOFTNDK_FABRIC_TCP));
    ASSERT_NO_FATAL_FAILURE(connect());
  }
  void TearDown() override { close_link(); }

  // Waits (bounded) for `n` completions on `side`'s CQ, all successful; no allocation.
  static bool reap(Side& side, int n) {
    NDK_RESULT_EX results[16];
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (n > 0 && std::chrono::steady_clock::now() < end) {
      const ULONG got = side.cq->Dispatch->NdkGetCqResultsEx(side.cq, results, 16);
      for (ULONG i = 0; i < got; ++i)
        if (results[i].Status != STATUS_SUCCESS) return false;
      n -= static_cast<int>(got);
    }
    return n == 0;
  }

  // One round: a receive reposted and a send into it, a 16 KiB write and a 16 KiB read.
  bool round(int i) {
    NDK_SGE rx = server_.sge(0, 4096), tx = client_.sge(4096, 256);
    NDK_SGE w = client_.sge(65536, 16384), r = client_.sge(131072, 16384);
    const UINT64 remote = server_.address(262144);
    const UINT32 token = server_.remote_token();
    NDK_QP* q = client_.qp;
    return server_.qp->Dispatch->NdkReceive(server_.qp, nullptr, &rx, 1) == STATUS_SUCCESS &&
           q->Dispatch->NdkSend(q, nullptr, &tx, 1, 0) == STATUS_SUCCESS &&
           q->Dispatch->NdkWrite(q, nullptr, &w, 1, remote, token, 0) == STATUS_SUCCESS &&
           q->Dispatch->NdkRead(q, nullptr, &r, 1, remote + (i % 2) * 16384, token, 0) == STATUS_SUCCESS &&
           reap(client_, 3) && reap(server_, 1);
  }

  static constexpr ULONG kAccess =
      NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ | NDK_MR_FLAG_ALLOW_REMOTE_WRITE;
};

TEST_F(IwarpAllocations, SteadyTrafficAllocatesNothing) {
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(round(i)) << "warm-up round " << i;
  alloc_counter::allocations = 0;
  alloc_counter::counting = true;
  bool ok = true;
  for (int i = 0; i < 2000 && ok; ++i) ok = round(i);
  alloc_counter::counting = false;
  ASSERT_TRUE(ok);
  EXPECT_EQ(alloc_counter::allocations.load(), 0u) << "allocations during 2000 rounds of send, write and read";
}

}  // namespace
