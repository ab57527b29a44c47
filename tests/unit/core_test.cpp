// Unit tests of the provider core's building blocks (no NDK objects involved).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <thread>
#include <vector>

#include "core/completion.hpp"
#include "core/memory.hpp"
#include "core/sockaddr.hpp"
#include "core/tokens.hpp"
#include "core/tunables.hpp"
#include "ndk/mdl.h"
#include "fabric/inproc/inproc_fabric.hpp"

namespace softndk {
namespace {

std::vector<Delivery> draw(DeliveryPolicy& policy, int n) {
  std::vector<Delivery> result;
  for (int i = 0; i < n; ++i) result.push_back(policy.next());
  return result;
}

TEST(DeliveryPolicy, FixedModesAlwaysPickTheirPath) {
  DeliveryPolicy inline_policy(SOFTNDK_COMPLETION_INLINE, 7);
  DeliveryPolicy caller(SOFTNDK_COMPLETION_CALLER_THREAD, 7);
  DeliveryPolicy provider(SOFTNDK_COMPLETION_PROVIDER_THREAD, 7);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(inline_policy.next(), Delivery::kInline);
    EXPECT_EQ(caller.next(), Delivery::kCallerThread);
    EXPECT_EQ(provider.next(), Delivery::kProviderThread);
  }
}

TEST(DeliveryPolicy, MixedIsReproducibleBySeedAndUsesEveryPath) {
  DeliveryPolicy a(SOFTNDK_COMPLETION_MIXED, 42), b(SOFTNDK_COMPLETION_MIXED, 42),
      c(SOFTNDK_COMPLETION_MIXED, 43);
  std::vector<Delivery> da = draw(a, 300), db = draw(b, 300), dc = draw(c, 300);
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
  std::set<Delivery> seen(da.begin(), da.end());
  EXPECT_EQ(seen.size(), 3u);
}

TEST(ProviderThread, RunsTasksInOrderOnAnotherThreadAndDrainsOnDestruction) {
  static std::vector<int> order;
  static std::thread::id where;
  order.clear();
  {
    ProviderThread thread;
    for (int i = 0; i < 50; ++i) {
      Task task;
      task.status = i;
      task.run = [](const Task& t) {
        order.push_back(t.status);
        where = std::this_thread::get_id();
      };
      thread.post(task);
    }
  }  // the destructor runs what is queued before it joins
  ASSERT_EQ(order.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(order[i], i);
  EXPECT_NE(where, std::this_thread::get_id());
}

TEST(TokenTable, TokensAreNonZeroUniqueAndForgottenWhenFreed) {
  TokenTable table;
  std::set<uint32_t> tokens;
  auto* owner = reinterpret_cast<Object*>(0x1000);
  for (int i = 0; i < 10000; ++i) {
    uint32_t t = table.allocate(owner);
    EXPECT_NE(t, 0u);
    EXPECT_TRUE(tokens.insert(t).second);
  }
  EXPECT_EQ(table.live(), 10000u);
  uint32_t first = *tokens.begin();
  EXPECT_EQ(table.lookup(first), owner);
  table.free(first);
  EXPECT_EQ(table.lookup(first), nullptr);
  EXPECT_EQ(table.live(), 9999u);
}

TEST(TokenTable, TwoTablesDoNotProduceTheSameSequence) {
  TokenTable a, b;
  auto* owner = reinterpret_cast<Object*>(0x1000);
  int same = 0;
  for (int i = 0; i < 16; ++i) same += a.allocate(owner) == b.allocate(owner);
  EXPECT_LT(same, 16);  // seeded from the system's entropy, not a constant
}

class Tunables : public ::testing::Test {
 protected:
  void TearDown() override {
    tunables::reset();
    unsetenv("SOFTNDK_MAX_CQ_DEPTH");
  }
};

TEST_F(Tunables, EveryTunableHasADefaultThatIsValidAndAHelpText) {
  for (const tunables::Tunable* t = tunables::begin(); t != tunables::end(); ++t) {
    EXPECT_TRUE(t->valid(t->default_value)) << t->name;
    EXPECT_GT(std::string(t->help).size(), 10u) << t->name;
  }
}

TEST_F(Tunables, ApiBeatsEnvironmentBeatsDefault) {
  EXPECT_EQ(*tunables::get("max_cq_depth"), tunables::find("max_cq_depth")->default_value);
  setenv("SOFTNDK_MAX_CQ_DEPTH", "1000", 1);
  EXPECT_EQ(tunables::number("max_cq_depth"), 1000u);
  EXPECT_TRUE(tunables::set("max_cq_depth", "77"));
  EXPECT_EQ(tunables::number("max_cq_depth"), 77u);
  tunables::reset();
  EXPECT_EQ(tunables::number("max_cq_depth"), 1000u);
}

TEST_F(Tunables, BadValuesAndNamesAreRefused) {
  EXPECT_FALSE(tunables::set("max_cq_depth", "0"));
  EXPECT_FALSE(tunables::set("max_cq_depth", "ten"));
  EXPECT_FALSE(tunables::set("completion_mode", "sometimes"));
  EXPECT_FALSE(tunables::set("no_such_tunable", "1"));
  EXPECT_TRUE(tunables::set("completion_mode", "mixed"));
  setenv("SOFTNDK_MAX_CQ_DEPTH", "-5", 1);  // an invalid environment value is ignored
  EXPECT_EQ(*tunables::get("max_cq_depth"), tunables::find("max_cq_depth")->default_value);
}

TEST_F(Tunables, WithheldCapabilitiesAreAListOfKnownNames) {
  EXPECT_EQ(tunables::withheld_capabilities(), 0u);  // default: none
  EXPECT_TRUE(tunables::set("withheld_capabilities", "cq_interrupt_moderation,rdma_read_local_invalidate"));
  EXPECT_EQ(tunables::withheld_capabilities(), 0x4u | 0x10u);
  EXPECT_FALSE(tunables::set("withheld_capabilities", "cq_resize"));  // not withholdable
  EXPECT_FALSE(tunables::set("withheld_capabilities", "in_order_dma,"));
  EXPECT_FALSE(tunables::set("withheld_capabilities", ",in_order_dma"));
  EXPECT_TRUE(tunables::set("withheld_capabilities", ""));
  EXPECT_EQ(tunables::withheld_capabilities(), 0u);
}

// R130, R131: the pages behind a chain come from its PFN arrays; two MDLs that meet inside a
// page name that page once; a chain whose pages were never described is refused.
TEST(DescribeChain, PagesComeFromThePfnArrays) {
  alignas(PAGE_SIZE) static unsigned char buffer[3 * PAGE_SIZE];
  unsigned char* va = buffer + 100;
  MDL* first = IoAllocateMdl(va, PAGE_SIZE, FALSE, FALSE, nullptr);  // ends inside page 1
  MDL* second = IoAllocateMdl(va + PAGE_SIZE, PAGE_SIZE, FALSE, FALSE, nullptr);
  ASSERT_TRUE(first != nullptr && second != nullptr);
  first->Next = second;
  softndk::ChainPages pages;
  EXPECT_EQ(softndk::describe_chain(first, 2 * PAGE_SIZE, pages), STATUS_INVALID_PARAMETER)
      << "page frames never described";
  MmBuildMdlForNonPagedPool(first);
  MmBuildMdlForNonPagedPool(second);
  ASSERT_EQ(softndk::describe_chain(first, 2 * PAGE_SIZE, pages), STATUS_SUCCESS);
  EXPECT_EQ(pages.base, reinterpret_cast<uintptr_t>(va));
  EXPECT_EQ(pages.first_byte_offset, 100u);
  ASSERT_EQ(pages.pages.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(pages.pages[i], reinterpret_cast<uintptr_t>(buffer) + i * PAGE_SIZE);
  EXPECT_TRUE(pages.adjacent());
  // The second MDL's last frame names the region's last page: pointed elsewhere, the page
  // moves with it (the virtual address is never used to find memory).
  MmGetMdlPfnArray(second)[1] = reinterpret_cast<uintptr_t>(buffer) >> PAGE_SHIFT;
  ASSERT_EQ(softndk::describe_chain(first, 2 * PAGE_SIZE, pages), STATUS_SUCCESS);
  EXPECT_EQ(pages.pages[2], reinterpret_cast<uintptr_t>(buffer));
  EXPECT_FALSE(pages.adjacent());
  EXPECT_EQ(softndk::describe_chain(first, 2 * PAGE_SIZE + 1, pages), STATUS_INVALID_PARAMETER)
      << "longer than the chain";
  first->Next = nullptr;
  IoFreeMdl(first);
  IoFreeMdl(second);
}

SockAddr v4(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return *SockAddr::parse(reinterpret_cast<const SOCKADDR*>(&a), sizeof(a));
}

TEST(SockAddr, ParsesOnlyCompleteIpv4AndIpv6Addresses) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  EXPECT_TRUE(SockAddr::parse(reinterpret_cast<const SOCKADDR*>(&a), sizeof(a)));
  EXPECT_FALSE(SockAddr::parse(reinterpret_cast<const SOCKADDR*>(&a), sizeof(a) - 1));
  EXPECT_FALSE(SockAddr::parse(nullptr, sizeof(a)));
  sockaddr_in6 b{};
  b.sin6_family = AF_INET6;
  b.sin6_port = htons(445);
  auto parsed = SockAddr::parse(reinterpret_cast<const SOCKADDR*>(&b), sizeof(b));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->port(), 445);
  EXPECT_TRUE(parsed->is_unspecified());
  EXPECT_FALSE(SockAddr::parse(reinterpret_cast<const SOCKADDR*>(&b), sizeof(sockaddr_in)));
  {
    sockaddr s{};
    s.sa_family = AF_UNIX;
    EXPECT_FALSE(SockAddr::parse(&s, sizeof(s)));
  }
}

TEST(SockAddr, CopyOutReportsTheRequiredSize) {
  SockAddr a = v4("192.0.2.9", 80);
  EXPECT_EQ(a.str(), "192.0.2.9:80");
  ULONG length = 4;
  sockaddr_in out{};
  EXPECT_EQ(a.copy_out(reinterpret_cast<PSOCKADDR>(&out), &length), STATUS_BUFFER_TOO_SMALL);
  EXPECT_EQ(length, sizeof(sockaddr_in));
  EXPECT_EQ(a.copy_out(reinterpret_cast<PSOCKADDR>(&out), &length), STATUS_SUCCESS);
  EXPECT_EQ(ntohs(out.sin_port), 80);
}

TEST(InprocHost, ReservesPortsPerAddressAndHandsOutEphemeralOnes) {
  fabric::inproc::InprocHost host(99, "unit", {v4("192.0.2.40", 0), v4("192.0.2.41", 0)});
  SockAddr a = v4("192.0.2.40", 445);
  EXPECT_EQ(host.reserve(a), STATUS_SUCCESS);
  SockAddr again = v4("192.0.2.40", 445);
  EXPECT_EQ(host.reserve(again), STATUS_SHARING_VIOLATION);
  SockAddr other_ip = v4("192.0.2.41", 445);
  EXPECT_EQ(host.reserve(other_ip), STATUS_SUCCESS);
  SockAddr foreign = v4("198.51.100.1", 445);
  EXPECT_EQ(host.reserve(foreign), STATUS_INVALID_ADDRESS);
  host.unreserve(a);
  EXPECT_EQ(host.reserve(again), STATUS_SUCCESS);

  SockAddr ephemeral = v4("192.0.2.40", 0);
  EXPECT_EQ(host.reserve(ephemeral), STATUS_SUCCESS);
  EXPECT_GE(ephemeral.port(), 49152);
}

TEST(InprocHost, RunsOutOfEphemeralPorts) {
  fabric::inproc::InprocHost host(98, "unit", {v4("192.0.2.42", 0)});
  std::set<uint16_t> ports;
  for (int i = 0; i < 65536 - 49152; ++i) {
    SockAddr e = v4("192.0.2.42", 0);
    ASSERT_EQ(host.reserve(e), STATUS_SUCCESS);
    ASSERT_TRUE(ports.insert(e.port()).second);
  }
  SockAddr one_more = v4("192.0.2.42", 0);
  EXPECT_EQ(host.reserve(one_more), STATUS_TOO_MANY_ADDRESSES);
}

}  // namespace
}  // namespace softndk
