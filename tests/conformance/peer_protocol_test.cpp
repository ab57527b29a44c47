// The peer protocol's records (peer.hpp): fixed 80-byte little-endian records, variable
// data after them, malformed records refused. The data-path suites run every test through
// it in their ChannelPeer and ProcessPeer instances; this checks the encoding itself, and
// the process form's life: a child of the test that ends with it and is reaped.
#include <arpa/inet.h>
#include <gtest/gtest-spi.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "harness.hpp"
#include "peer.hpp"

namespace conformance {
namespace {

TEST(PeerProtocol, CommandRecordIsLittleEndianAndFixedSize) {
  PeerCommand c;
  c.op = PeerOp::kWrite;
  for (int i = 0; i < 8; ++i) c.arg[i] = 0x0102030405060708ull + static_cast<uint64_t>(i);
  c.data = {0xAA, 0xBB, 0xCC};
  std::vector<uint8_t> bytes = EncodePeerCommand(c, 0x11223344u);
  ASSERT_EQ(bytes.size(), kPeerRecordSize + 3);
  EXPECT_EQ(bytes[0], 0x53);  // "SNPQ", least significant byte first
  EXPECT_EQ(bytes[3], 0x51);
  EXPECT_EQ(bytes[4], static_cast<uint8_t>(PeerOp::kWrite));
  EXPECT_EQ(bytes[8], 0x44);  // sequence, little-endian
  EXPECT_EQ(bytes[11], 0x11);
  EXPECT_EQ(bytes[12], 3);     // data length
  EXPECT_EQ(bytes[16], 0x08);  // arg[0], little-endian
  EXPECT_EQ(bytes[23], 0x01);
  EXPECT_EQ(bytes[kPeerRecordSize], 0xAA);
  PeerCommand back;
  uint32_t sequence = 0, length = 0;
  ASSERT_TRUE(DecodePeerCommand(bytes.data(), &back, &sequence, &length));
  EXPECT_EQ(back.op, PeerOp::kWrite);
  EXPECT_EQ(sequence, 0x11223344u);
  EXPECT_EQ(length, 3u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(back.arg[i], c.arg[i]);
}

TEST(PeerProtocol, ReplyRecordCarriesTheStatus) {
  PeerReply r;
  r.status = STATUS_CONNECTION_REFUSED;
  r.value[7] = ~0ull;
  std::vector<uint8_t> bytes = EncodePeerReply(r, 9);
  ASSERT_EQ(bytes.size(), kPeerRecordSize);
  PeerReply back;
  uint32_t sequence = 0, length = 1;
  ASSERT_TRUE(DecodePeerReply(bytes.data(), &back, &sequence, &length));
  EXPECT_EQ(back.status, STATUS_CONNECTION_REFUSED);
  EXPECT_EQ(back.value[7], ~0ull);
  EXPECT_EQ(sequence, 9u);
  EXPECT_EQ(length, 0u);
}

TEST(PeerProtocol, MalformedRecordsAreRefused) {
  std::vector<uint8_t> bytes = EncodePeerCommand(PeerCommand{PeerOp::kOpen, {}, {}}, 1);
  PeerCommand c;
  PeerReply r;
  uint32_t sequence, length;
  EXPECT_FALSE(DecodePeerReply(bytes.data(), &r, &sequence, &length)) << "a command is not a reply";
  bytes[1] ^= 0xFF;
  EXPECT_FALSE(DecodePeerCommand(bytes.data(), &c, &sequence, &length)) << "bad magic";
  bytes = EncodePeerCommand(PeerCommand{PeerOp::kOpen, {}, {}}, 1);
  bytes[15] = 0x7F;  // data length far above kPeerMaxData
  EXPECT_FALSE(DecodePeerCommand(bytes.data(), &c, &sequence, &length)) << "oversized data";
}

TEST(PeerProtocol, AddressesRoundTrip) {
  SOCKADDR_INET v4{}, v6{};
  v4.Ipv4.sin_family = AF_INET;
  v4.Ipv4.sin_port = htons(445);
  v4.Ipv4.sin_addr.s_addr = htonl(0xC0000201u);
  v6.Ipv6.sin6_family = AF_INET6;
  v6.Ipv6.sin6_port = htons(50000);
  inet_pton(AF_INET6, "2001:db8::7", &v6.Ipv6.sin6_addr);
  std::vector<uint8_t> bytes;
  PutPeerAddress(bytes, v4);
  PutPeerAddress(bytes, v6);
  ASSERT_EQ(bytes.size(), 40u);
  EXPECT_EQ(bytes[2], 445 & 0xFF) << "the port in host order, little-endian";
  EXPECT_EQ(bytes[4], 192) << "the address in network order";
  SOCKADDR_INET a = ReadPeerAddress(bytes.data()), b = ReadPeerAddress(bytes.data() + 20);
  EXPECT_EQ(std::memcmp(&a.Ipv4, &v4.Ipv4, sizeof(SOCKADDR_IN)), 0);
  EXPECT_EQ(std::memcmp(&b.Ipv6, &v6.Ipv6, sizeof(SOCKADDR_IN6)), 0);
}

// Per-fabric exclusions (harness.cpp): each names its reason; the in-process fabric runs
// every test.
TEST(FabricExclusions, ReasonsArePerFabric) {
  const char* tcp =
      ExclusionFor(SOFTNDK_FABRIC_TCP, "ConnectionTest", "R159_R189_EphemeralPortsExhausted");
  ASSERT_NE(tcp, nullptr);
  EXPECT_GT(std::strlen(tcp), 20u) << "an exclusion states its reason";
  EXPECT_EQ(
      ExclusionFor(SOFTNDK_FABRIC_INPROC, "ConnectionTest", "R159_R189_EphemeralPortsExhausted"),
      nullptr);
  EXPECT_EQ(ExclusionFor(SOFTNDK_FABRIC_TCP, "ConnectionTest",
                         "R013_R158_R159_R175_R197_AddressesAndTransferOverIPv4AndIPv6"),
            nullptr);
}

// The process form's exclusions come on top of the fabric's.
TEST(FabricExclusions, TheProcessFormKeepsTheFabricsExclusions) {
  Param process{SOFTNDK_FABRIC_TCP, "Tcp", SOFTNDK_COMPLETION_PROVIDER_THREAD, 0,
                "ProviderThread_ProcessPeer", PeerForm::kProcess};
  EXPECT_STREQ(ExclusionFor(process, "ConnectionTest", "R160_ConnectFailures"),
               ExclusionFor(SOFTNDK_FABRIC_TCP, "ConnectionTest", "R160_ConnectFailures"));
  EXPECT_EQ(ExclusionFor(process, "PostingTest", "R101_FlushCancelsEveryPendingReceiveOnce"),
            nullptr);
}

// What ps says about a process: its parent and name (from /proc/PID/status).
bool ProcessStatus(int pid, int* parent, std::string* name) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  bool found = false;
  while (std::getline(status, line)) {
    if (line.rfind("Name:\t", 0) == 0) *name = line.substr(6);
    if (line.rfind("PPid:\t", 0) == 0) {
      *parent = std::stoi(line.substr(6));
      found = true;
    }
  }
  return found;
}

PeerReply Open(PeerTransport& peer) {
  PeerCommand open{PeerOp::kOpen, {SOFTNDK_COMPLETION_PROVIDER_THREAD, 0}, {}};
  return peer.Call(open, kWait);
}

// The process form: the engine runs in a child of this process (this binary re-executed),
// owns its adapter there, ends when its channel closes and is reaped (no zombie is left).
TEST(PeerProcess, RunsInAChildThatEndsWithItsChannelAndIsReaped) {
  std::unique_ptr<PeerTransport> peer = MakeProcessPeer(SOFTNDK_FABRIC_TCP);
  const int pid = peer->process_id();
  ASSERT_GT(pid, 0);
  EXPECT_NE(pid, getpid());
  PeerReply opened = Open(*peer);
  ASSERT_EQ(opened.status, STATUS_SUCCESS) << StatusText(opened.status);
  int parent = 0;
  std::string name;
  ASSERT_TRUE(ProcessStatus(pid, &parent, &name));
  EXPECT_EQ(parent, getpid());
  EXPECT_EQ(name, "softndk-peer");
  EXPECT_TRUE(peer->Stop()) << "a clean exit";
  EXPECT_EQ(kill(pid, 0), -1) << "reaped: not even a zombie is left";
  EXPECT_EQ(errno, ESRCH);
}

// A peer process that dies is reported as such: the call that finds it gone fails (and says
// how it ended), every later call fails at once, and Stop() reaps it and says so.
TEST(PeerProcess, ADeadPeerIsReportedAndReaped) {
  std::unique_ptr<PeerTransport> peer = MakeProcessPeer(SOFTNDK_FABRIC_TCP);
  const int pid = peer->process_id();
  ASSERT_GT(pid, 0);
  ASSERT_EQ(Open(*peer).status, STATUS_SUCCESS);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  PeerReply reply;
  EXPECT_NONFATAL_FAILURE(reply = Open(*peer), "killed by signal 9");
  EXPECT_EQ(reply.status, STATUS_IO_TIMEOUT);
  Clock::time_point start = Clock::now();
  EXPECT_EQ(Open(*peer).status, STATUS_IO_TIMEOUT) << "a broken channel fails at once";
  EXPECT_LT(Clock::now() - start, kBoundedCall);
  bool stopped = true;
  EXPECT_NONFATAL_FAILURE(stopped = peer->Stop(), "killed by signal 9");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(kill(pid, 0), -1) << "reaped";
}

// The middle process of PeerProcess.DiesWithItsParent: starts a peer process, keeps it busy
// in a long poll (so that it does not see its channel close), reports its number, and waits
// to be killed.
TEST(PeerProcess, ParentRole) {
  const char* fd_text = std::getenv("SOFTNDK_TEST_PEER_PARENT_FD");
  if (fd_text == nullptr) GTEST_SKIP() << "the middle process of PeerProcess.DiesWithItsParent";
  const int report = std::atoi(fd_text);
  std::unique_ptr<PeerTransport> peer = MakeProcessPeer(SOFTNDK_FABRIC_TCP);
  ASSERT_EQ(Open(*peer).status, STATUS_SUCCESS);
  PeerReply cq = peer->Call(PeerCommand{PeerOp::kCreateCq, {4}, {}}, kWait);
  ASSERT_EQ(cq.status, STATUS_SUCCESS);
  const std::string pid = std::to_string(peer->process_id()) + "\n";
  ASSERT_EQ(::write(report, pid.data(), pid.size()), static_cast<ssize_t>(pid.size()));
  ::close(report);
  const Millis poll = kWait * 4;  // far longer than the parent waits for the peer to die
  peer->Call(PeerCommand{PeerOp::kPoll, {cq.value[0], 1, 1, static_cast<uint64_t>(poll.count())}, {}},
             poll);
  ADD_FAILURE() << "the middle process was not killed";
}

// Whether a process is gone: reaped, or a zombie waiting for its new parent to reap it.
bool Gone(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("State:\t", 0) == 0) return line.size() > 7 && line[7] == 'Z';
  return true;
}

// A peer process dies with the process that started it (PR_SET_PDEATHSIG), even one busy
// inside a request that has not seen its channel close: a test process killed by ctest's
// timeout or a crash leaves no peer behind.
TEST(PeerProcess, DiesWithItsParent) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  // Prepared before fork: the child only execs.
  char self[4096] = {};
  ASSERT_GT(::readlink("/proc/self/exe", self, sizeof(self) - 1), 0);
  std::string filter = "--gtest_filter=PeerProcess.ParentRole";
  std::string variable = "SOFTNDK_TEST_PEER_PARENT_FD=" + std::to_string(pipe_fds[1]);
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  env.push_back(variable.data());
  env.push_back(nullptr);
  char* argv[] = {self, filter.data(), nullptr};
  const pid_t middle = ::fork();
  ASSERT_GE(middle, 0);
  if (middle == 0) {
    ::close(pipe_fds[0]);
    ::execve(self, argv, env.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  int peer = 0;
  pollfd readable{pipe_fds[0], POLLIN, 0};
  char text[16] = {};
  if (::poll(&readable, 1, static_cast<int>(kWait.count() * 2)) == 1 &&
      ::read(pipe_fds[0], text, sizeof(text) - 1) > 0)
    peer = std::atoi(text);
  ::close(pipe_fds[0]);
  ::kill(middle, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(middle, &status, 0), middle);
  ASSERT_GT(peer, 0) << "the middle process did not report its peer";
  EXPECT_TRUE(WaitUntil([&] { return Gone(peer); }))
      << "the peer process outlived its parent by " << kWait.count() << " ms";
  if (!Gone(peer)) ::kill(peer, SIGKILL);
}

}  // namespace
}  // namespace conformance
