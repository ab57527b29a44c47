// Two connected endpoints in one process, the set-up every perf run needs: an adapter on
// each side, CQs, PD, QP, a registered buffer, and a connection (listen, connect, accept,
// complete). On the in-process fabric the sides are two hosts with documentation
// addresses; on the iWARP fabric both adapters sit on the host's loopback interface and
// the connection runs through the kernel's TCP. Each endpoint is built as a Session
// (src/perf/session.hpp) builds its one endpoint between two processes. Only public
// headers are used.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ndk/ndkpi.h"
#include "ndk/softndk.h"

namespace softndk::perf {

// "STATUS_ACCESS_VIOLATION", or the value in hex for an unknown status.
std::string status_text(NTSTATUS status);

// A set-up step that failed.
class Error : public std::runtime_error {
 public:
  Error(const std::string& what, NTSTATUS status);
  NTSTATUS status() const { return status_; }

 private:
  NTSTATUS status_;
};

// What one endpoint is made of.
struct EndpointOptions {
  // Bytes of each of an endpoint's two areas: `out` (what it sends and what its peer
  // reads) and `in` (where its peer's sends and writes land, where its reads go).
  // Registered as one region of 2 x area_size (rounded up to pages) and a control page.
  size_t area_size = 1 << 20;
  ULONG queue_depth = 256;   // QP initiator depth (receive depth: one more); each CQ holds 2x + 2
  ULONG inline_data = 256;   // QP InlineDataSize asked for (capped by the adapter)
  SOFTNDK_COMPLETION_MODE completion_mode = SOFTNDK_COMPLETION_INLINE;
  SOFTNDK_FABRIC fabric = SOFTNDK_FABRIC_INPROC;  // or SOFTNDK_FABRIC_TCP
  ULONG max_sge = 1;         // QP SGEs per request and per receive asked for (capped by the adapter)
};

struct PairOptions : EndpointOptions {
  bool ipv6 = false;         // in-process: 2001:db8::/32 instead of 192.0.2.0/24 and
                             // 198.51.100.0/24; TCP: ::1 instead of 127.0.0.1
  // Private data: the client's connect carries caller_data (at most MaxCallerData bytes),
  // the server's accept or reject callee_data (at most MaxCalleeData). Each side finds
  // what the other sent in Endpoint::peer_data.
  std::vector<uint8_t> caller_data = {};
  std::vector<uint8_t> callee_data = {};
  // How the server answers the connect request. Reject: the connect fails with
  // STATUS_CONNECTION_REFUSED. Ignore: it fails with STATUS_IO_TIMEOUT once the
  // connect_timeout_ms tunable has passed. Both make the constructor throw; they let a
  // tool show (and test) its refusal and timeout paths.
  enum class Answer { kAccept, kReject, kIgnore };
  Answer server_answer = Answer::kAccept;
};

// The control page after the two areas (src/perf/session.hpp uses it between processes).
constexpr size_t kControlPage = 4096;

// One side of a connection: everything is owned by the Pair or Session that made it.
// A `remote` endpoint is the view a process has of its peer's endpoint in another
// process: its buffer's address (never dereferenced here), token, areas and limits.
struct Endpoint {
  const char* name = "";
  bool remote = false;
  ULONG host = 0;
  SOCKADDR_INET address{};
  NDK_ADAPTER* adapter = nullptr;
  NDK_ADAPTER_INFO info{};
  NDK_CQ* send_cq = nullptr;  // initiator completions
  NDK_CQ* recv_cq = nullptr;  // receive completions
  NDK_PD* pd = nullptr;
  NDK_QP* qp = nullptr;
  NDK_MR* mr = nullptr;
  NDK_CONNECTOR* connector = nullptr;
  PMDL mdl = nullptr;
  uint8_t* buffer = nullptr;  // 2 x area + kControlPage, page aligned: out, in, control
  size_t area = 0;
  ULONG inline_data = 0;      // what the QP was created with
  ULONG max_sge = 0;          // what the QP was created with (requests and receives)
  std::vector<uint8_t> peer_data;  // the private data the other side sent
  UINT32 local_token = 0;
  UINT32 remote_token = 0;

  uint8_t* out() const { return buffer; }
  uint8_t* in() const { return buffer + area; }
  uint8_t* control() const { return buffer + 2 * area; }
  // An SGE over registered bytes of this endpoint.
  NDK_SGE sge(const uint8_t* at, size_t length) const {
    NDK_SGE s{};
    s.VirtualAddress = const_cast<uint8_t*>(at);
    s.Length = static_cast<ULONG>(length);
    s.MemoryRegionToken = local_token;
    return s;
  }
};

namespace detail {
struct Incoming;
}

class Pair {
 public:
  // Sets everything up and connects; throws Error naming the step that failed (what was
  // set up so far is torn down first).
  explicit Pair(const PairOptions& options = {});
  // Disconnects and closes everything, in dependency order; never throws.
  ~Pair();
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;

  Endpoint& client() { return client_; }  // the active (connecting) side
  Endpoint& server() { return server_; }  // the passive (accepting) side
  const PairOptions& options() const { return options_; }
  // Disconnect events seen (a run that breaks the connection makes the peer see one).
  int disconnects() const { return disconnects_.load(); }
  const std::atomic<int>& disconnect_count() const { return disconnects_; }

 private:
  void open(Endpoint& e, bool server);
  void connect();
  void teardown() noexcept;
  static void on_disconnect(PVOID context);

  PairOptions options_;
  Endpoint client_, server_;
  NDK_LISTENER* listener_ = nullptr;
  std::unique_ptr<detail::Incoming> incoming_;
  std::atomic<int> disconnects_{0};
};

}  // namespace softndk::perf
