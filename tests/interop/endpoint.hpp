// One end of an iWARP connection as the interop scenarios drive it: an NDK QP of SoftNDK's
// TCP fabric, or a verbs QP of the kernel's siw. Both ends offer the same few verbs, so each
// scenario is written once and run with either end as the initiator.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace interop {

using namespace std::chrono_literals;

// What a work completion reports, in terms common to NDK and verbs.
enum class Op { Send, Receive, Write, Read, Bind, Other };

struct Completion {
  bool ok = false;
  std::string status;    // the provider's own name for the status, for messages
  uint64_t id = 0;       // the request's context
  Op op = Op::Other;
  uint32_t bytes = 0;
  std::optional<uint32_t> invalidated;  // the STag a send with invalidate named
};

// A buffer of the other end: where a tagged message goes.
struct RemoteBuffer {
  uint64_t address = 0;
  uint32_t stag = 0;
};

inline constexpr size_t kBufferSize = 8 << 20;  // each end registers this much

// How a connect attempt ended, seen by its initiator.
struct ConnectOutcome {
  bool accepted = false;
  std::string private_data;  // of the MPA Reply (accept or reject)
  uint32_t inbound_reads = 0, outbound_reads = 0;  // where the provider reports them
  std::string error;         // when neither accepted nor rejected
};

inline constexpr uint32_t kReadLimit = 4;  // IRD and ORD both ends ask for

class Endpoint {
 public:
  virtual ~Endpoint() = default;
  virtual std::string name() const = 0;

  // ---- connection setup, private data up to 40 bytes ----
  // Responder: listens on a port chosen by the system, returned (0 on failure).
  virtual uint16_t listen() = 0;
  // Responder: the next connect request's private data (nullopt if none came in time).
  virtual std::optional<std::string> incoming() = 0;
  virtual bool accept(const std::string& private_data) = 0;
  virtual bool reject(const std::string& private_data) = 0;
  // Responder: waits until the accepted connection is up.
  virtual bool established() = 0;
  // Initiator: starts a connect to `port`, then learns its outcome.
  virtual bool start_connect(uint16_t port, const std::string& private_data) = 0;
  virtual ConnectOutcome finish_connect() = 0;

  // ---- the data path, once connected ----

  // The registered buffer (kBufferSize bytes, remote read and write allowed).
  virtual unsigned char* buffer() = 0;
  virtual RemoteBuffer exported(size_t offset) = 0;
  // An STag over [offset, offset + length) of the buffer that a send with invalidate may
  // name (an NDK memory window; a siw memory region); remote write allowed.
  virtual std::optional<RemoteBuffer> invalidatable(size_t offset, uint32_t length) = 0;

  // Each posts one request; false (with the reason in last_error()) if the post failed.
  virtual bool receive(uint64_t id, size_t offset, uint32_t length) = 0;
  virtual bool send(uint64_t id, size_t offset, uint32_t length, bool solicited = false) = 0;
  virtual bool send_invalidate(uint64_t id, size_t offset, uint32_t length, uint32_t stag) = 0;
  virtual bool write(uint64_t id, size_t offset, uint32_t length, RemoteBuffer to) = 0;
  virtual bool read(uint64_t id, size_t offset, uint32_t length, RemoteBuffer from) = 0;

  // The next completion of either queue, waited for at most `limit`.
  virtual std::optional<Completion> poll(std::chrono::milliseconds limit = 10s) = 0;
  // Asks for one notification when a solicited receive (or an error) completes; how many
  // came so far.
  virtual void arm_solicited() = 0;
  virtual int notifications() = 0;
  // Whether the connection ended (the peer disconnected or the QP went to error), waited
  // for at most `limit`.
  virtual bool wait_disconnected(std::chrono::milliseconds limit) = 0;
  // Starts a graceful disconnect.
  virtual void disconnect() = 0;

  // Whether a consumer of this end can see a received Send's solicited event (an armed
  // notification) and the STag a Send with Invalidate invalidated (the receive's result).
  virtual bool sees_solicited_events() const { return true; }
  virtual bool sees_invalidated_stags() const { return true; }

  const std::string& last_error() const { return error_; }

 protected:
  std::string error_;
};

}  // namespace interop
