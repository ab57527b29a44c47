// One iWARP connection over a kernel TCP socket: MPA connection setup (RFC 5044 with the
// RFC 6581 enhanced header and peer-to-peer RTR), then RDMAP messages as FPDUs.
//
// Unlike the in-process fabric, each process holds only its own side: a TcpConnection is
// the active or the passive end, and the other end is a peer process (SoftNDK or any iWARP
// stack). The NDK establishment maps onto MPA like this:
//   NdkConnect        -> TCP connect, MPA Request (NDK private data after the RFC 6581
//                        header, IRD/ORD = the read limits), peer-to-peer asked
//   NdkAccept         -> MPA Reply;  NdkReject (passive) -> MPA Reject
//   NdkCompleteConnect-> the RTR (a zero-length RDMA Write or Read) when peer-to-peer was
//                        agreed; the passive side's Accept completes when it arrives (at
//                        once after the Reply with a peer that does not use RTR)
//   NdkDisconnect     -> TCP FIN once queued messages left; errors -> a Terminate, then FIN
//
// Threads: the consumer's (posting, connection calls) and the one running the socket's
// handler (the engine's, or a consumer's polling its CQ: engine.hpp; one at a time).
// `mutex_` guards the transmit side, the requests in flight and the phase; the receive
// side belongs to the thread running the handler. Calls into the core (events,
// completions, placement) are made without `mutex_`.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "fabric/connection.hpp"
#include "fabric/tcp/engine.hpp"
#include "fabric/tcp/iwarp_mpa.hpp"
#include "fabric/tcp/iwarp_rx.hpp"
#include "fabric/tcp/iwarp_tx.hpp"
#include "fabric/tcp/ring.hpp"

namespace softndk::fabric::tcp {

class TcpInterface;

// The negotiation knobs, read from the tunables when a connection starts.
struct MpaSettings {
  uint8_t revision = kMpaRevision2;
  bool crc = true;           // ask for CRC32c (either side asking turns it on)
  bool peer_to_peer = true;  // initiator: ask for RFC 6581 peer-to-peer mode (RTR)
  // Sends and writes complete once the peer has placed them (a later read's response
  // proves it), not when their bytes left: a remote failure then fails them (R134).
  bool complete_when_placed = true;
  // A silent peer is declared dead after this long (TCP_USER_TIMEOUT and keepalive).
  unsigned dead_peer_ms = 10000;
  static MpaSettings from_tunables();
};

class TcpConnection final : public Connection,
                            public Engine::Handler,
                            private FpduSink,
                            public std::enable_shared_from_this<TcpConnection> {
 public:
  // The active side: `fd` is bound to `source`; request() connects it.
  TcpConnection(int fd, const SockAddr& source, const SockAddr& destination,
                ConnectorEvents* events);
  // The passive side: `fd` was accepted on `local` (a listener of `iface`).
  TcpConnection(int fd, const SockAddr& local, const SockAddr& remote, TcpInterface* iface);
  ~TcpConnection() override;

  // Passive: starts reading the MPA Request.
  bool start_passive();

  // ---- Connection ----
  NTSTATUS request(ULONG inbound_limit, ULONG outbound_limit,
                   std::span<const uint8_t> private_data) override;
  void attach_passive(ConnectorEvents* events) override;
  SockAddr local_address(Side) const override { return local_; }
  SockAddr remote_address(Side) const override { return remote_; }
  void accept(QpEndpoint* qp, ULONG inbound_limit, ULONG outbound_limit,
              std::span<const uint8_t> private_data) override;
  void reject(Side side, std::span<const uint8_t> private_data) override;
  void complete(QpEndpoint* qp) override;
  void disconnect(Side side) override;
  void terminate(Side side, NTSTATUS status) override;
  void detach(Side side) override;
  NTSTATUS send(Side side, const ExtentList& data, bool solicited, bool invalidate,
                uint32_t token, ULONG flags) override;
  NTSTATUS write(Side side, const ExtentList& data, uint32_t token, uint64_t address,
                 ULONG flags) override;
  NTSTATUS read(Side side, const ExtentList& into, uint32_t token, uint64_t address,
                ULONG flags) override;
  NTSTATUS local(Side side, ULONG flags) override;
  void start_deferred(Side side) override;

  // ---- Engine::Handler ----
  void on_events(uint32_t events) override;
  bool try_input() override;

 private:
  class RequestDeadline;
  enum class Phase {
    kIdle,           // active, before request()
    kTcpConnecting,  // active: TCP handshake in progress
    kAwaitReply,     // active: MPA Request sent
    kAccepted,       // active: Reply received, waiting for NdkCompleteConnect
    kAwaitRequest,   // passive: reading the MPA Request
    kRequested,      // passive: the listener has it, waiting for NdkAccept / NdkReject
    kAwaitRtr,       // passive: Reply sent, waiting for the RTR
    kEstablished,    // RDMAP messages flow
    kDraining,       // ending: what is queued goes out, then FIN; input is discarded
    kClosed,         // the socket is closed
  };

  // One message to transmit. Its slot in tx_ or responses_ is reused (ring.hpp): reset()
  // before filling it keeps the payload vector's capacity.
  struct TxItem {
    TxMessage message;          // headers; payload set when it starts
    std::vector<iovec> payload; // the bytes, referenced in place
    uint64_t request = 0;       // the initiator request it completes when sent (send, write)
    bool completes = false;
    bool fence = false;         // waits until no read is in flight
    bool read_request = false;  // counts against ORD
    bool rtr = false;           // the RTR read: it goes even at ORD 0
    // A Read Response: the source (our memory) is resolved when it starts.
    bool read_response = false;
    uint32_t source_stag = 0;
    uint64_t source_to = 0;
    uint32_t source_length = 0;
    uint32_t request_msn = 0;  // of the Read Request it answers (to name it in a Terminate)
    // INLINE: the caller's bytes, copied at the post (R087); the payload points here.
    std::vector<uint8_t> inline_bytes;
    void reset() {
      std::vector<iovec> keep = std::move(payload);
      std::vector<uint8_t> keep_bytes = std::move(inline_bytes);
      keep.clear();
      *this = TxItem{};
      payload = std::move(keep);
      inline_bytes = std::move(keep_bytes);  // its capacity too: no allocation once warm
    }
  };
  // An initiator request in flight, in posting order.
  struct Request {
    bool done = false;
    NTSTATUS status = STATUS_SUCCESS;
    bool sent = false;  // its bytes left; done once placed (complete_when_placed)
    bool silent = false;  // SILENT_SUCCESS: its placement may be proven lazily
    // What a Terminate names it by: a Send's or Read Request's MSN, a Write's STag and TO.
    Opcode opcode = Opcode::kSend;
    uint32_t msn = 0;
    uint32_t stag = 0;
    uint64_t to = 0;
  };
  // A read of ours waiting for its response: a consumer's, the RTR, or a fence that
  // proves the placement of the sends and writes before it (request kNoRequest).
  static constexpr uint64_t kNoRequest = UINT64_MAX;
  struct PendingRead {
    uint64_t request = kNoRequest;
    uint32_t sink_stag = 0;
    uint64_t length = 0;
    uint64_t covers = 0;  // requests numbered below this were posted before it
    uint64_t received = 0;
    std::vector<iovec> sink;  // its capacity is kept when the slot is reused
  };

  // ---- FpduSink (the handler's thread) ----
  Verdict begin_segment(const Segment& segment) override;
  Verdict payload(const Segment& segment, uint32_t offset, std::span<const uint8_t> bytes) override;
  Verdict end_segment(const Segment& segment) override;

  // ---- receive (the handler's thread) ----
  bool on_readable();  // whether any bytes came
  // Tagged payload straight from the socket into its target, and what follows it into
  // rx_buffer_ (one readv): what readv returned; in `wanted`, what it asked for (0 when
  // nothing is to be taken that way now); in `buffered`, the bytes it put in rx_buffer_.
  ssize_t receive_direct(int fd, size_t& wanted, size_t& buffered);
  void consume(std::span<const uint8_t> bytes);
  void on_mpa_frame();       // a Request or Reply arrived whole
  void on_rx_error();        // the FPDU parser stopped: answer with its Terminate
  void on_eof(int error);    // the peer closed (error 0) or the socket failed
  void on_connected();       // active: the TCP handshake finished

  // ---- transmit (mutex_ held) ----
  // Sends what can go now: MPA frames, FPDUs laid out in batch_, the Terminate, FIN.
  void pump_locked();
  bool send_raw_locked();   // MPA frames and the Terminate; false: blocked or failed
  // Lays out FPDUs of the queued messages into batch_ while it has room.
  void lay_out_locked();
  // Starts the next message that may go (encoder_); false when none may now.
  bool start_message_locked();
  // The bytes of the front message of queue `tag` have all left.
  void message_sent_locked(uint8_t tag);
  void want_output_locked(bool want);
  uint64_t add_request_locked();
  void finish_request_locked(uint64_t request, NTSTATUS status);
  // Starts the end of the connection: stops new work, flushes what is in flight with
  // STATUS_CANCELLED (see fail_named_locked for a Terminate received), queues
  // `terminate` if given, and lets the rest drain before FIN.
  void end_locked(const TerminateInfo* terminate);
  void disconnect_locked();
  // A Terminate from the peer: the request it names fails with `status`; the sends and
  // writes before it were placed (the peer works in order); the rest is flushed.
  void fail_named_locked(const TerminateInfo& terminate, NTSTATUS status);
  // Sends and writes numbered below `covers` whose bytes left are placed: done.
  void confirm_locked(uint64_t covers);
  bool requests_sent_mark_locked(uint64_t request);  // false: no longer tracked
  // Queues a zero-length read after sends and writes awaiting proof of placement.
  bool queue_fence_locked();
  // A zero-length Read Request completing no request of ours (the RTR, a fence); its
  // response proves the placement of the requests numbered below `covers`.
  void queue_empty_read_locked(uint64_t covers);
  void close_locked();
  void drop_request_timer_locked();  // the passive side's MPA Request deadline, if set
  // A Read Request of ours, queued (its slots in reads_ and tx_ reused): a consumer's read
  // (`request`), or a zero-length one (kNoRequest).
  PendingRead& new_read_locked(uint64_t request, uint64_t length, uint64_t covers, uint32_t token,
                               uint64_t address, bool fence);
  // A send or write: queued, completed once the socket has all of it.
  NTSTATUS post(const TxMessage& message, const ExtentList& data, ULONG flags);
  // True when a request posted with `flags` and `bytes` of payload waits for its chain.
  bool hold_deferred_locked(ULONG flags, size_t bytes);
  void negotiated_locked(const MpaFrame& request, const MpaFrame& reply);
  void refresh_max_fpdu_locked();  // tx_options_.max_fpdu from the socket's MSS now
  // The ORD agreed; 0 also gives up the reads that prove placement.
  void set_ord_locked(uint32_t ord);

  // ---- delivering to the core (no lock held) ----
  void deliver_completions();
  template <class F>
  void with_events(F&& deliver);
  // A local detection that ends the connection: Terminate to the peer, our connector
  // learns of it with `status`.
  void fail_connection(const TerminateInfo& terminate, NTSTATUS status);

  // Fixed at creation.
  const bool active_;
  const SockAddr local_;
  const SockAddr remote_;
  TcpInterface* const iface_ = nullptr;  // passive only
  const MpaSettings settings_;
  // settings_.complete_when_placed, unless the peer serves no reads (set_ord_locked).
  bool prove_placement_ = true;

  mutable std::mutex mutex_;
  int fd_;
  bool registered_ = false;  // with the engine
  bool want_output_ = false;
  Phase phase_;
  bool detached_ = false;
  ConnectorEvents* events_ = nullptr;
  // Set before the peer can send to it (NdkAccept, NdkCompleteConnect); read by the engine.
  std::atomic<QpEndpoint*> qp_{nullptr};
  QpEndpoint* qp() const { return qp_.load(std::memory_order_acquire); }
  std::vector<uint8_t> early_rx_;  // messages that came before NdkCompleteConnect

  // Connection setup.
  int request_timer_ = -1;                   // passive: the Request's deadline (timerfd)
  std::atomic<bool> request_overdue_{false};  // it passed; the handler acts on it
  std::vector<uint8_t> own_private_data_;
  MpaFrame request_frame_;                // the Request we sent, or the one we received
  std::vector<uint8_t> request_private_data_;
  std::unique_ptr<MpaFrameParser> frame_parser_;
  ULONG own_inbound_ = 0, own_outbound_ = 0;
  bool rtr_expected_ = false;  // passive: peer-to-peer agreed
  uint8_t rtr_ = 0;            // the RTR type agreed
  uint32_t ord_ = 1;           // reads of ours allowed in flight (R178); 0: none
  // Passive, no RTR agreed: no FPDU leaves before the initiator's first (accept()).
  std::atomic<bool> awaiting_first_fpdu_{false};
  ULONG ird_ = 1;              // the peer's reads we serve at once (our inbound limit)

  // Transmit.
  TxOptions tx_options_;
  static constexpr uint32_t kMssRefresh = 64;  // messages with payload between MSS queries
  uint32_t messages_since_mss_ = 0;
  std::vector<uint8_t> raw_;  // bytes to send before (MPA frames) or after (Terminate) FPDUs
  size_t raw_sent_ = 0;
  // The two queues of messages, by tag. In each, the first laid_[tag] are wholly laid out
  // in batch_ (their bytes have not all left); the next one may be in progress (encoder_).
  static constexpr uint8_t kRequests = 0, kResponses = 1;
  Ring<TxItem> tx_;         // kRequests: ours (and the RTR, fences), in posting order
  Ring<TxItem> responses_;  // kResponses: Read Responses to the peer, in its requests' order
  Ring<TxItem>& queue_of(uint8_t tag) { return tag == kResponses ? responses_ : tx_; }
  size_t laid_[2] = {0, 0};
  bool sending_response_ = false;       // the message in progress is a Read Response
  std::optional<FpduEncoder> encoder_;  // of the message in progress
  static constexpr size_t kFpduIov = kMaxSge + 8;  // the iovecs one FPDU may need
  FpduBatch batch_;
  bool terminate_queued_ = false;  // no FPDU follows it
  // A Read Response whose source went away after its request was checked: the Terminate
  // that fails the peer's read, sent by the handler (posted) since the transmit path
  // cannot end the connection from inside. Nothing is laid out meanwhile.
  std::optional<TerminateInfo> response_failure_;
  // Payload of the DEFER requests held since the last pump: a chain is held only while it
  // fits one batch (holding more would save no system call).
  size_t deferred_bytes_ = 0;
  uint32_t send_msn_ = 1;
  uint32_t read_msn_ = 1;
  bool fin_after_drain_ = false;

  // Requests in flight.
  Ring<Request> requests_;
  uint64_t first_request_ = 0;  // the number of requests_.front()
  bool delivering_ = false;
  Ring<PendingRead> reads_;  // ours, posting order
  uint32_t reads_in_flight_ = 0;   // read requests sent, not answered
  uint32_t next_sink_stag_ = 1;
  uint64_t sent_upto_ = 0;     // requests numbered below this have left (or are reads)
  uint64_t fenced_upto_ = 0;   // ... and a queued read will prove them placed
  bool awaited_unfenced_ = false;  // one of those not yet fenced is not silent

  // Receive (the handler's thread).
  std::optional<FpduParser> parser_;
  std::vector<uint8_t> rx_buffer_;
  bool rx_big_payloads_ = false;  // the last segment's was placed directly: read little at boundaries
  static constexpr size_t kDirectIov = 64;
  iovec direct_iov_[kDirectIov + 1];  // and the tail into rx_buffer_
  PostedReceive rx_receive_{};
  bool rx_have_receive_ = false;
  bool rx_discard_ = false;  // the segment in progress is let go (ending)
  uint64_t rx_capacity_ = 0;
  uint64_t rx_bytes_ = 0;
  std::unique_ptr<ExtentList> rx_extents_ = std::make_unique<ExtentList>();
  std::unique_ptr<ExtentList> tx_extents_ = std::make_unique<ExtentList>();  // mutex_
};

// The NTSTATUS a Terminate's code stands for, for the side that receives it.
NTSTATUS status_of_terminate(const TerminateCode& code);

}  // namespace softndk::fabric::tcp
