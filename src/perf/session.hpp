// One endpoint of a connection between two processes (on one host or two) over the iWARP
// fabric: the set-up of ndkping and ndkperf with --server and --client. Each process builds
// its endpoint as a Pair builds each of its two (adapter, CQs, PD, QP, registered buffer),
// then the server listens and accepts, the client connects and completes.
//
// The connection's private data carries a Greeting each way (52 bytes, within MaxCallerData
// 56 and MaxCalleeData 148): the tool, the endpoint's buffer address, token, area size,
// queue depth, SGEs and inline size, and the client's nonce (echoed by the server). The
// client's greeting asks; the server builds its endpoint to match (within its limits) before
// it accepts. After that the two talk in Control messages: 128-byte sends between the
// control pages of the two buffers, strictly one question and one answer at a time, so a
// control receive is always posted before the other side can send.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "perf/pair.hpp"

namespace softndk::perf {

namespace detail {
struct Incoming;
}

// "127.0.0.1", "127.0.0.1:4791", "::1", "[::1]:4791", "fe80::1%eth0" style scope ids are
// not taken. nullopt (and *error) for anything else.
std::optional<SOCKADDR_INET> parse_address(const std::string& text, uint16_t default_port, std::string* error);
std::string ip_text(const SOCKADDR_INET& a);       // "127.0.0.1", "::1"
std::string address_text(const SOCKADDR_INET& a);  // "127.0.0.1:4791", "[::1]:4791"
uint16_t port_of(const SOCKADDR_INET& a);

enum class Tool : uint8_t { kPing = 1, kPerf = 2 };
const char* to_string(Tool tool);

// What each side tells the other when connecting.
struct Greeting {
  Tool tool = Tool::kPerf;
  uint16_t status = 0;        // server: 0, or why it rejects (Greeting::kWrongTool...)
  uint64_t area = 0;          // client: the area it asks for; server: its area
  uint32_t queue_depth = 0;
  uint32_t max_sge = 0;
  uint32_t inline_data = 0;
  uint64_t nonce = 0;         // the client's; the server sends it back
  uint64_t buffer = 0;        // the sender's buffer (out area first)
  uint32_t token = 0;         // the sender's remote token
  uint32_t message_size = 0;  // ndkping's client: bytes per message

  static constexpr uint16_t kWrongTool = 1, kTooLarge = 2, kBusy = 3, kSimulated = 4;
  static constexpr size_t kBytes = 52;
  std::vector<uint8_t> encode() const;
  static std::optional<Greeting> decode(const std::vector<uint8_t>& bytes);
};

// A control message: a kind, eight numbers and a short text.
struct Control {
  enum Kind : uint32_t {
    kRun = 1, kReady, kEnd, kDone, kBye, kError,  // ndkperf
    kCheck = 16, kVerdict,                        // ndkping
  };
  uint32_t kind = 0;
  uint64_t arg[8] = {};
  std::string text;  // at most kTextBytes

  static constexpr size_t kBytes = 128;
  static constexpr size_t kTextBytes = kBytes - 8 - 64;
  void encode(uint8_t* to) const;
  // A control message in `bytes` received bytes, or nullopt (its magic tells it apart).
  static std::optional<Control> decode(const uint8_t* from, size_t bytes);
};

// Where a Session's control messages live in its endpoint's control page. The first bytes
// stay free: a receive of ndkperf's server may reach past the in area into them.
constexpr size_t kControlSendOffset = 256;
constexpr size_t kControlReceiveOffset = 512;
constexpr size_t kCreditOffset = 768;        // ndkperf: the server's receive credits land here
constexpr size_t kCreditSourceOffset = 1024;  // ... and are written from here
// The request context of control sends and receives.
inline PVOID control_context() { return reinterpret_cast<PVOID>(~uintptr_t{0} - 1); }

class Session {
 public:
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Server, step 1: opens an adapter on the interface that owns `bind` (on the iWARP
  // fabric) and listens there; port 0 takes one the kernel picks (address() says which).
  static std::unique_ptr<Session> listen(const SOCKADDR_INET& bind, SOFTNDK_COMPLETION_MODE mode);
  // Server, step 2: waits for a connect request and returns the client's greeting; nullopt
  // once *stop is set. A request whose private data is no greeting is rejected and waited
  // past.
  std::optional<Greeting> wait_for_client(const std::atomic<bool>* stop);
  // Server, step 3: builds the endpoint with `options`, posts a control receive and
  // accepts, sending `answer` completed with the endpoint's buffer, token and limits.
  void accept(const EndpointOptions& options, Greeting answer);
  // Server, step 3 instead: refuses the request, telling why.
  void reject(Greeting answer);

  // Client: opens an adapter on the interface whose address the kernel would use to reach
  // `server`, builds the endpoint, connects with `hello` (completed with the endpoint's
  // buffer and token) and completes. No control receive is posted: post one before each
  // control message sent, when no data receive is left. Throws Error: STATUS_CONNECTION_REFUSED (nobody
  // listening, or the server refused: rejection() says why), STATUS_IO_TIMEOUT.
  static std::unique_ptr<Session> connect(const SOCKADDR_INET& server, const EndpointOptions& options,
                                          Greeting hello, std::chrono::milliseconds timeout);

  Endpoint& local() { return local_; }
  // The peer's endpoint as seen from here (remote: its addresses and limits only).
  Endpoint& peer() { return peer_; }
  const Greeting& peer_greeting() const { return peer_greeting_; }
  const SOCKADDR_INET& address() const { return local_.address; }  // where it listens / connected from
  const SOCKADDR_INET& peer_address() const { return peer_address_; }
  // The QPs' depth both sides have (the smaller of the two).
  ULONG queue_depth() const { return queue_depth_; }
  int disconnects() const { return disconnects_.load(); }
  const std::atomic<int>& disconnect_count() const { return disconnects_; }

  // ---- control messages ----
  void post_control_receive();  // throws Error
  // Sends and waits for the send's completion (successful completions of other requests
  // polled meanwhile are dropped). Throws Error.
  void send_control(const Control& message, std::chrono::milliseconds timeout);
  enum class Wait { kDone, kTimeout, kStopped, kDisconnected };
  // Waits for the next receive completion, which must be a control message; throws Error
  // for a failed receive or anything else. kTimeout after `timeout` (0: no limit),
  // kStopped once *stop is set, kDisconnected once the peer disconnected.
  Wait wait_control(Control& message, std::chrono::milliseconds timeout, const std::atomic<bool>* stop);

 private:
  Session();
  static void on_disconnect(PVOID context);
  void teardown() noexcept;

  Endpoint local_, peer_;
  Greeting peer_greeting_;
  SOCKADDR_INET peer_address_{};
  NDK_LISTENER* listener_ = nullptr;
  ULONG peer_ird_ = 0, peer_ord_ = 0;  // the client's read limits (server side)
  std::unique_ptr<detail::Incoming> incoming_;
  std::atomic<int> disconnects_{0};
  bool connected_ = false;
  ULONG queue_depth_ = 0;
};

}  // namespace softndk::perf
