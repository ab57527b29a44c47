// Unit tests of the provider core's building blocks (no NDK objects involved).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <thread>
#include <vector>

#include "core/completion.hpp"
#include "core/sockaddr.hpp"
#include "core/tokens.hpp"
#include "core/tunables.hpp"
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
