#include "fabric/tcp/tcp_connection.hpp"
#include "core/kernel_sync.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "core/tunables.hpp"
#include "fabric/tcp/tcp_fabric.hpp"

namespace softndk::fabric::tcp {

namespace {

constexpr size_t kRxBuffer = 256 * 1024;
// Tagged payload this long or longer is received straight into its target; while such
// payloads flow, a read at an FPDU boundary takes only this much (its headers and some
// payload), so that the rest of the payload can go straight to its place.
constexpr uint32_t kDirectMin = 1024;
// A Send's payload goes straight into its receive from this size on: below it, many small
// messages come with one big read (one call for them all beats one each).
constexpr uint32_t kDirectMinUntagged = 16 * 1024;
constexpr size_t kBoundaryRead = 512;
constexpr size_t kReadBudget = 1 << 20;  // bytes one call of the handler reads at most
constexpr int kSendFlags = MSG_NOSIGNAL | MSG_DONTWAIT;
constexpr size_t kMaxEarly = 1 << 20;

// The NDK status the side that detected a failure reports, and the Terminate it sends.
TerminateInfo terminate_with(const TerminateCode& code) {
  TerminateInfo t;
  t.code = code;
  return t;
}

// A tagged access the QP refused (`status`, with every lock of that attempt released), as
// the RFCs name it. The target of a Write or Read Response is DDP's tagged buffer (RFC 5041
// Tagged Buffer Errors: invalid STag, base or bounds, as siw answers); the source of a Read
// Request is RDMAP's (RFC 5040 Remote Protection Errors). A valid STag that lacks the right
// (found by asking again without it) is RDMAP's access rights violation either way: DDP
// has no code for it.
TerminateCode code_of_tagged(QpEndpoint& qp, NTSTATUS status, uint32_t stag, uint64_t to,
                             uint64_t length, bool sink, ExtentList& scratch) {
  if (status == STATUS_REMOTE_RESOURCES) return sink ? term::kDdpTaggedBaseOrBounds : term::kRdmapBaseOrBounds;
  AccessGuard guard;
  scratch.clear();
  const NTSTATUS without_rights = qp.resolve_tagged(stag, to, length, /*need=*/0, scratch, guard);
  scratch.clear();
  if (NT_SUCCESS(without_rights) || without_rights == STATUS_REMOTE_RESOURCES) return term::kRdmapAccessRights;
  return sink ? term::kDdpTaggedInvalidStag : term::kRdmapInvalidStag;
}

// A receive taken by a message the stream ended in the middle of (an error, a FIN):
// the QP's flush no longer holds it, so it completes here, flushed, before the others.
void abandon_receive(QpEndpoint* qp, const PostedReceive& receive, bool& have) {
  if (!have) return;
  have = false;
  if (qp != nullptr) (void)qp->finish_receive(receive, STATUS_CANCELLED, 0, false, false, 0);
}

// Small messages go out at once; a peer that stops answering (killed host, cut link: no
// FIN, no reset) is declared dead `dead_peer_ms` after its last sign of life, whether data
// waits for its acknowledgement (TCP_USER_TIMEOUT) or the connection is idle (keepalive
// probes from 1 s of silence on, bounded by the same timeout).
void configure_socket(int fd, unsigned dead_peer_ms) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &one, sizeof one);
  const int probes = static_cast<int>(std::max(1u, dead_peer_ms / 1000));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
  const unsigned timeout = dead_peer_ms;
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof timeout);
}

// An extent list as iovecs, in place of what `out` held (the bytes stay where they are).
void append_iov(std::vector<iovec>& out, const ExtentList& extents) {
  out.clear();
  for (ULONG i = 0; i < extents.count(); ++i)
    out.push_back({extents.begin()[i].data, extents.begin()[i].length});
}

// One piece of memory of an iovec list or an extent list.
std::pair<uint8_t*, size_t> piece_of(const iovec& v) { return {static_cast<uint8_t*>(v.iov_base), v.iov_len}; }
std::pair<uint8_t*, size_t> piece_of(const Extent& e) { return {e.data, e.length}; }

// The window [offset, offset + length) of the memory `in` describes, as at most `max`
// iovecs in `out`; their count (fewer bytes than asked when `in` or `max` runs out).
template <class Piece>
size_t slice_pieces(std::span<const Piece> in, uint64_t offset, uint64_t length, iovec* out, size_t max) {
  size_t count = 0;
  for (const Piece& p : in) {
    const auto [base, size] = piece_of(p);
    if (length == 0 || count == max) break;
    if (offset >= size) {
      offset -= size;
      continue;
    }
    const size_t piece = static_cast<size_t>(std::min<uint64_t>(size - offset, length));
    out[count++] = {base + offset, piece};
    length -= piece;
    offset = 0;
  }
  return count;
}
size_t slice_iov(std::span<const iovec> in, uint64_t offset, uint64_t length, iovec* out, size_t max) {
  return slice_pieces(in, offset, length, out, max);
}
size_t slice_iov(const ExtentList& in, uint64_t offset, uint64_t length, iovec* out, size_t max) {
  return slice_pieces(std::span<const Extent>(in.begin(), in.count()), offset, length, out, max);
}

// Copies `bytes` to `offset` of the memory an iovec list describes; the bytes copied.
size_t copy_to_iov(const std::vector<iovec>& to, uint64_t offset, std::span<const uint8_t> bytes) {
  size_t done = 0;
  iovec pieces[16];
  while (done < bytes.size()) {
    const size_t count = slice_iov(to, offset + done, bytes.size() - done, pieces, std::size(pieces));
    if (count == 0) break;
    for (size_t i = 0; i < count; ++i) {
      std::memcpy(pieces[i].iov_base, bytes.data() + done, pieces[i].iov_len);
      done += pieces[i].iov_len;
    }
  }
  return done;
}

}  // namespace

MpaSettings MpaSettings::from_tunables() {
  MpaSettings s;
  s.revision = static_cast<uint8_t>(tunables::number("iwarp_mpa_revision"));
  s.crc = tunables::number("iwarp_crc") != 0;
  s.peer_to_peer = tunables::number("iwarp_peer_to_peer") != 0;
  s.complete_when_placed = tunables::get(*tunables::find("iwarp_completion")) == "placed";
  s.dead_peer_ms = static_cast<unsigned>(tunables::number("iwarp_dead_peer_ms"));
  return s;
}

NTSTATUS status_of_terminate(const TerminateCode& code) {
  if (code == term::kRdmapBaseOrBounds || code == term::kDdpTaggedBaseOrBounds ||
      code == term::kRdmapToWrap || code == term::kDdpTaggedToWrap ||
      code == term::kDdpUntaggedNoBuffer)
    return STATUS_REMOTE_RESOURCES;
  if (code == term::kDdpUntaggedMessageTooLong) return STATUS_BUFFER_OVERFLOW;
  if (code.layer != term_layer::kLlp &&
      (code.error_type == rdmap_etype::kRemoteProtection ||
       (code.layer == term_layer::kDdp && code.error_type == ddp_etype::kTaggedBuffer)))
    return STATUS_ACCESS_VIOLATION;  // STag unknown, not ours, rights; cannot invalidate
  if (code == term::kMpaCrcError) return STATUS_DATA_ERROR;
  return STATUS_CONNECTION_ABORTED;
}

// ------------------------------------------------------------------------- life --

TcpConnection::TcpConnection(int fd, const SockAddr& source, const SockAddr& destination,
                             ConnectorEvents* events)
    : active_(true),
      local_(source),
      remote_(destination),
      settings_(MpaSettings::from_tunables()),
      fd_(fd),
      phase_(Phase::kIdle),
      events_(events) {}

TcpConnection::TcpConnection(int fd, const SockAddr& local, const SockAddr& remote,
                             TcpInterface* iface)
    : active_(false),
      local_(local),
      remote_(remote),
      iface_(iface),
      settings_(MpaSettings::from_tunables()),
      fd_(fd),
      phase_(Phase::kAwaitRequest) {}

TcpConnection::~TcpConnection() {
  // Nobody else holds us now. Once the engine is going away (process exit: it drops its
  // handlers, us among them) it is not asked to forget the timer.
  if (Engine::running() != nullptr) drop_request_timer_locked();
  if (request_timer_ >= 0) close(request_timer_);
  if (fd_ >= 0) close(fd_);
}

// The passive side's bound on the MPA Request: a timerfd the engine watches. On expiry it
// only flags the connection and posts it, so that the connection's own handler (never two
// threads at once) decides and closes.
class TcpConnection::RequestDeadline final : public Engine::Handler {
 public:
  RequestDeadline(int fd, std::weak_ptr<TcpConnection> connection)
      : fd_(fd), connection_(std::move(connection)) {}
  void on_events(uint32_t) override {
    uint64_t expirations;
    if (::read(fd_, &expirations, sizeof expirations) != sizeof expirations) return;
    if (auto c = connection_.lock()) {
      c->request_overdue_.store(true);
      Engine::instance().post(c);
    }
  }

 private:
  const int fd_;
  const std::weak_ptr<TcpConnection> connection_;
};

bool TcpConnection::start_passive() {
  configure_socket(fd_, settings_.dead_peer_ms);
  rx_buffer_.resize(kRxBuffer);
  frame_parser_ = std::make_unique<MpaFrameParser>(MpaFrameType::kRequest);
  std::lock_guard lock(mutex_);
  registered_ = Engine::instance().add(fd_, EPOLLIN, shared_from_this());
  if (!registered_) return false;
  // A peer gets connect_timeout_ms to send its whole MPA Request: one that stalls halfway
  // (or never starts) holds no socket beyond that.
  request_timer_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (request_timer_ < 0) return true;  // unbounded, as without the timer
  const uint64_t ms = tunables::number("connect_timeout_ms");
  itimerspec when{};
  when.it_value.tv_sec = static_cast<time_t>(ms / 1000);
  when.it_value.tv_nsec = static_cast<long>(ms % 1000) * 1000000;
  if (timerfd_settime(request_timer_, 0, &when, nullptr) != 0 ||
      !Engine::instance().add(request_timer_, EPOLLIN,
                              std::make_shared<RequestDeadline>(request_timer_, weak_from_this()))) {
    close(request_timer_);
    request_timer_ = -1;
  }
  return true;
}

void TcpConnection::drop_request_timer_locked() {
  if (request_timer_ < 0) return;
  Engine::instance().remove(request_timer_);  // its handler takes no lock of ours
  close(request_timer_);
  request_timer_ = -1;
}

template <class F>
void TcpConnection::with_events(F&& deliver) {
  ConnectorEvents* target;
  {
    std::lock_guard lock(mutex_);
    target = events_;
    if (target == nullptr) return;
    target->pin();  // under the lock: a detaching connector cannot vanish in between
  }
  deliver(target);
  target->unpin();
}

// ---------------------------------------------------------------- establishment --

NTSTATUS TcpConnection::request(ULONG inbound_limit, ULONG outbound_limit,
                                std::span<const uint8_t> private_data) {
  std::lock_guard lock(mutex_);
  if (local_.family() != remote_.family()) return STATUS_NETWORK_UNREACHABLE;
  own_inbound_ = inbound_limit;
  ird_ = inbound_limit;
  own_outbound_ = outbound_limit;
  own_private_data_.assign(private_data.begin(), private_data.end());
  MpaFrame& f = request_frame_;
  f.type = MpaFrameType::kRequest;
  f.revision = settings_.revision;
  f.enhanced = settings_.revision == kMpaRevision2;
  f.crc = settings_.crc;
  f.v2.ird = static_cast<uint16_t>(std::min<ULONG>(inbound_limit, 0x3fff));
  f.v2.ord = static_cast<uint16_t>(std::min<ULONG>(outbound_limit, 0x3fff));
  f.v2.peer_to_peer = f.enhanced && settings_.peer_to_peer;
  f.v2.rtr = f.v2.peer_to_peer ? rtr::kZeroLengthWrite | rtr::kZeroLengthRead : 0;
  f.private_data = own_private_data_;
  raw_.resize(mpa_frame_size(f));
  if (raw_.empty() || encode_mpa_frame(f, raw_) == 0) return STATUS_INVALID_PARAMETER;
  raw_sent_ = 0;
  rx_buffer_.resize(kRxBuffer);
  frame_parser_ = std::make_unique<MpaFrameParser>(MpaFrameType::kReply);
  configure_socket(fd_, settings_.dead_peer_ms);
  if (::connect(fd_, remote_.sockaddr(), remote_.length()) != 0 && errno != EINPROGRESS)
    return status_of_errno(errno);
  phase_ = Phase::kTcpConnecting;
  registered_ = Engine::instance().add(fd_, EPOLLOUT | EPOLLIN, shared_from_this());
  if (!registered_) return STATUS_INSUFFICIENT_RESOURCES;
  want_output_ = true;
  return STATUS_PENDING;
}

void TcpConnection::on_connected() {
  int error = 0;
  socklen_t length = sizeof error;
  getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length);
  if (error != 0) {
    {
      std::lock_guard lock(mutex_);
      close_locked();
    }
    with_events([&](ConnectorEvents* e) { e->connect_failed(status_of_errno(error)); });
    return;
  }
  std::lock_guard lock(mutex_);
  if (phase_ != Phase::kTcpConnecting) return;
  phase_ = Phase::kAwaitReply;
  pump_locked();  // the MPA Request
}

void TcpConnection::attach_passive(ConnectorEvents* events) {
  std::lock_guard lock(mutex_);
  events_ = events;
}

void TcpConnection::negotiated_locked(const MpaFrame& request, const MpaFrame& reply) {
  tx_options_.crc = mpa_crc_negotiated(request, reply);
  tx_options_.max_fpdu = 0;
  refresh_max_fpdu_locked();
  FpduParser::Options options;
  options.crc = tx_options_.crc;
  parser_.emplace(options);
}

void TcpConnection::set_ord_locked(uint32_t ord) {
  ord_ = ord;
  // A peer that serves no reads (IRD 0) gets none, not even the empty reads that prove
  // placement (siw answers one with a Terminate): sends and writes then complete once
  // sent, and the consumer's reads wait in the queue (R178).
  prove_placement_ = settings_.complete_when_placed && ord > 0;
}

void TcpConnection::refresh_max_fpdu_locked() {
  // FPDUs follow the path's MSS (RFC 5044). It may grow after the handshake (Linux bounds
  // it by half the peer's first, small window), so it is asked again now and then.
  int mss = 0;
  socklen_t length = sizeof mss;
  if (getsockopt(fd_, IPPROTO_TCP, TCP_MAXSEG, &mss, &length) != 0 || mss < int{kMinFpdu})
    mss = tx_options_.max_fpdu != 0 ? static_cast<int>(tx_options_.max_fpdu) : 1460;
  tx_options_.max_fpdu = static_cast<uint32_t>(std::min(mss, 65535 - 8));
}

void TcpConnection::accept(QpEndpoint* qp, ULONG inbound_limit, ULONG outbound_limit,
                           std::span<const uint8_t> private_data) {
  bool completed = false;
  {
    std::lock_guard lock(mutex_);
    if (phase_ != Phase::kRequested) return;  // the peer went away: it learns nothing more
    qp_.store(qp, std::memory_order_release);
    const uint16_t ird = static_cast<uint16_t>(std::min<ULONG>(inbound_limit, 0x3fff));
    ird_ = ird;
    // Our ORD never exceeds the initiator's IRD (RFC 6581; the NDK's R177 too).
    ULONG outbound = request_frame_.enhanced ? std::min<ULONG>(outbound_limit, request_frame_.v2.ird)
                                             : outbound_limit;
    const uint16_t ord = static_cast<uint16_t>(std::min<ULONG>(outbound, 0x3fff));
    MpaFrame reply = mpa_reply_for(request_frame_, settings_.crc, ird, ord, private_data);
    raw_.resize(mpa_frame_size(reply));
    encode_mpa_frame(reply, raw_);
    raw_sent_ = 0;
    negotiated_locked(request_frame_, reply);
    set_ord_locked(ord);
    rtr_expected_ = reply.enhanced && reply.v2.peer_to_peer;
    // Without an RTR, an MPA Responder sends no FPDU before it has received one (RFC 5044,
    // 7.1.2): the initiator may still be reading the Reply, and Linux siw refuses a Reply
    // followed by anything in the same read. Our consumer may post meanwhile; it waits.
    awaiting_first_fpdu_.store(!rtr_expected_, std::memory_order_relaxed);
    phase_ = rtr_expected_ ? Phase::kAwaitRtr : Phase::kEstablished;
    completed = !rtr_expected_;
    pump_locked();
  }
  // A peer that sends no RTR starts with its first message: the connection is complete.
  if (completed) with_events([](ConnectorEvents* e) { e->peer_completed(); });
}

void TcpConnection::reject(Side, std::span<const uint8_t> private_data) {
  std::lock_guard lock(mutex_);
  if (!active_ && phase_ == Phase::kRequested) {
    MpaFrame frame = mpa_reject_for(request_frame_, private_data);
    raw_.resize(mpa_frame_size(frame));
    encode_mpa_frame(frame, raw_);
    raw_sent_ = 0;
    end_locked(nullptr);
    return;
  }
  // The active side refuses after the Reply: the passive side finds the connection gone.
  end_locked(nullptr);
}

void TcpConnection::complete(QpEndpoint* qp) {
  std::lock_guard lock(mutex_);
  if (phase_ != Phase::kAccepted) return;
  qp_.store(qp, std::memory_order_release);
  phase_ = Phase::kEstablished;
  if (rtr_ & rtr::kZeroLengthRead && !(rtr_ & rtr::kZeroLengthWrite)) {
    queue_empty_read_locked(/*covers=*/0);
    tx_.back().rtr = true;
  } else {
    // The RTR; or, with none agreed, an empty Write all the same: a responder sends
    // nothing before our first FPDU (RFC 5044, 7.1.2), and a consumer whose server
    // speaks first would otherwise wait for ever. An empty Write places nothing.
    TxItem& opening = tx_.push_slot();
    opening.reset();
    opening.message.opcode = Opcode::kRdmaWrite;
  }
  pump_locked();
  // Messages a peer without RTR sent before our consumer completed: now they land.
  if (!early_rx_.empty()) Engine::instance().post(shared_from_this());
}

// --------------------------------------------------------------------- the end --

void TcpConnection::disconnect(Side) {
  {
    std::lock_guard lock(mutex_);
    disconnect_locked();
  }
  deliver_completions();  // what was flushed
}

void TcpConnection::disconnect_locked() {
  if (phase_ != Phase::kEstablished) return end_locked(nullptr);
  // Graceful: what is on the wire completes (its placement proven by a fence), what was
  // not sent yet is flushed; FIN once nothing is in flight. Input is discarded meanwhile,
  // but for read responses and a Terminate.
  // Laid out for the socket, and the message in progress, go out whole.
  const size_t keep = laid_[kRequests] + (encoder_ && !sending_response_ ? 1 : 0);
  for (; tx_.size() > keep; tx_.pop_back())
    if (tx_.back().completes) finish_request_locked(tx_.back().request, STATUS_CANCELLED);
  // Reads whose request never left: reads_ is in posting order, and the first
  // reads_in_flight_ of it are on the wire (counted as each request starts).
  while (reads_.size() > reads_in_flight_) {
    if (reads_.back().request != kNoRequest) finish_request_locked(reads_.back().request, STATUS_CANCELLED);
    reads_.pop_back();
  }
  phase_ = Phase::kDraining;
  fin_after_drain_ = true;
  queue_fence_locked();
  pump_locked();
}

void TcpConnection::terminate(Side, NTSTATUS status) {
  // A failure our side detected (a local protection error): the peer is told.
  {
    std::lock_guard lock(mutex_);
    // The peer's disconnect event carries the status (status_of_terminate inverts this).
    TerminateInfo t = terminate_with(status == STATUS_ACCESS_VIOLATION   ? term::kRdmapProtectionUnspecified
                                     : status == STATUS_REMOTE_RESOURCES ? term::kRdmapBaseOrBounds
                                                                         : term::kRdmapLocalCatastrophic);
    end_locked(&t);
  }
  deliver_completions();  // what was flushed
}

void TcpConnection::end_locked(const TerminateInfo* terminate) {
  response_failure_.reset();  // this end is the one the peer sees
  if (phase_ == Phase::kClosed) return;
  const bool established = phase_ == Phase::kEstablished || phase_ == Phase::kAwaitRtr ||
                           phase_ == Phase::kDraining;
  phase_ = Phase::kDraining;
  // Requests not yet on the wire never will be; those in flight are flushed. Only the FPDU
  // in progress finishes (the stream stays framed for the Terminate).
  encoder_.reset();
  while (tx_.size() > laid_[kRequests]) tx_.pop_back();
  while (responses_.size() > laid_[kResponses]) responses_.pop_back();
  batch_.cut([this](uint8_t tag) {
    queue_of(tag).pop_back();
    --laid_[tag];
  });
  reads_.clear();
  for (uint64_t i = 0; i < requests_.size(); ++i)
    if (!requests_[i].done) finish_request_locked(first_request_ + i, STATUS_CANCELLED);
  sent_upto_ = fenced_upto_ = first_request_ + requests_.size();
  if (terminate != nullptr && established) {
    TxMessage m;
    m.opcode = Opcode::kTerminate;
    m.msn = 1;
    m.terminate = *terminate;
    const size_t at = raw_.size();
    raw_.resize(at + encoded_size(tx_options_, m));
    encode_message(tx_options_, m, std::span(raw_).subspan(at));
    terminate_queued_ = true;
  }
  fin_after_drain_ = true;
  pump_locked();
}

bool TcpConnection::requests_sent_mark_locked(uint64_t request) {
  if (request < first_request_ || request - first_request_ >= requests_.size()) return false;
  Request& r = requests_[request - first_request_];
  r.sent = true;
  if (!r.silent && request >= fenced_upto_) awaited_unfenced_ = true;
  return true;
}

void TcpConnection::confirm_locked(uint64_t covers) {
  for (uint64_t i = 0; i < requests_.size() && first_request_ + i < covers; ++i)
    if (requests_[i].sent && !requests_[i].done) {
      requests_[i].done = true;
      requests_[i].status = STATUS_SUCCESS;
    }
}

TcpConnection::PendingRead& TcpConnection::new_read_locked(uint64_t request, uint64_t length,
                                                           uint64_t covers, uint32_t token,
                                                           uint64_t address, bool fence) {
  PendingRead& read = reads_.push_slot();
  read.request = request;
  read.sink_stag = next_sink_stag_++;
  if (next_sink_stag_ == 0) next_sink_stag_ = 1;
  read.length = length;
  read.covers = covers;
  read.received = 0;
  read.sink.clear();
  TxItem& item = tx_.push_slot();
  item.reset();
  item.message.opcode = Opcode::kRdmaReadRequest;
  item.message.msn = read_msn_++;
  item.message.read_request = {read.sink_stag, 0, static_cast<uint32_t>(length), token, address};
  item.read_request = true;
  item.fence = fence;
  return read;
}

void TcpConnection::queue_empty_read_locked(uint64_t covers) {
  new_read_locked(kNoRequest, 0, covers, 0, 0, false);
}

bool TcpConnection::queue_fence_locked() {
  if (!prove_placement_ || sent_upto_ <= fenced_upto_) return false;
  if (phase_ != Phase::kEstablished && phase_ != Phase::kDraining) return false;
  // Silent requests are proven lazily: by a later read or fence, or once they hold half
  // the initiator queue (the consumer's posts must not find it full of them).
  const QpEndpoint* endpoint = qp();
  const uint64_t lazy_limit = endpoint == nullptr ? 1 : std::max<ULONG>(1, endpoint->initiator_depth() / 2);
  if (!awaited_unfenced_ && phase_ == Phase::kEstablished && sent_upto_ - fenced_upto_ < lazy_limit)
    return false;
  queue_empty_read_locked(sent_upto_);
  fenced_upto_ = sent_upto_;
  awaited_unfenced_ = false;
  return true;
}

void TcpConnection::fail_named_locked(const TerminateInfo& t, NTSTATUS status) {
  // The message the Terminate names, from the DDP header it copied (RFC 5040): tagged,
  // a Write by STag and TO; untagged, a Send (queue 0) or Read Request (queue 1) by MSN.
  const uint8_t* h = t.ddp_header;
  auto be32 = [](const uint8_t* p) { return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3]; };
  uint64_t named = kNoRequest;
  if (t.rdma_header_present) {
    // A read, by the sink STag of the Read Request header the Terminate copied: each of
    // our reads has its own. Surer than the MSN, which Linux siw fills with the read's
    // length when the failure came while it answered.
    const uint32_t sink_stag = be32(t.rdma_header);
    for (uint64_t i = 0; i < reads_.size() && named == kNoRequest; ++i)
      if (const uint64_t r = reads_[i].request; reads_[i].sink_stag == sink_stag && r != kNoRequest &&
                                                   r >= first_request_ && r - first_request_ < requests_.size() &&
                                                   !requests_[r - first_request_].done)
        named = r;
  }
  if (named == kNoRequest && t.d) {
    const bool tagged = (h[0] & ddp_flag::kTagged) != 0;
    for (uint64_t i = 0; i < requests_.size() && named == kNoRequest; ++i) {
      const Request& r = requests_[i];
      if (r.done) continue;
      const bool match =
          tagged ? r.opcode == Opcode::kRdmaWrite && r.stag == be32(h + 2) &&
                       r.to == (uint64_t{be32(h + 6)} << 32 | be32(h + 10))
                 : ((be32(h + 6) == kQnSend && r.opcode != Opcode::kRdmaWrite &&
                     r.opcode != Opcode::kRdmaReadRequest) ||
                    (be32(h + 6) == kQnReadRequest && r.opcode == Opcode::kRdmaReadRequest)) &&
                       r.msn == be32(h + 10);
      if (match) named = first_request_ + i;
    }
  }
  if (named == kNoRequest) {  // no usable header: the oldest request the peer had seen
    for (uint64_t i = 0; i < requests_.size() && named == kNoRequest; ++i)
      if (!requests_[i].done && (requests_[i].sent || requests_[i].opcode == Opcode::kRdmaReadRequest))
        named = first_request_ + i;
  }
  if (named != kNoRequest) {
    confirm_locked(named);  // the peer placed what came before it
    finish_request_locked(named, status);
  }
  end_locked(nullptr);
}

void TcpConnection::close_locked() {
  drop_request_timer_locked();
  if (registered_) {
    Engine::instance().remove(fd_);
    registered_ = false;
  }
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  phase_ = Phase::kClosed;
}

void TcpConnection::detach(Side) {
  {
    std::lock_guard lock(mutex_);
    if (phase_ != Phase::kDraining && phase_ != Phase::kClosed) end_locked(nullptr);
  }
  deliver_completions();  // the flushed requests, before the QP may go
  bool registered;
  int fd;
  {
    // The socket becomes ours alone: a handler running now finds fd_ gone and leaves it
    // open, so it is not closed (and its number reused) before the engine forgets it.
    std::lock_guard lock(mutex_);
    drop_request_timer_locked();
    detached_ = true;  // a handler starting now returns at once
    registered = registered_;
    registered_ = false;
    fd = fd_;
    fd_ = -1;
  }
  // Waits for a handler of ours running on the engine (not under mutex_, which it may
  // need); it reaches nobody afterwards.
  if (registered) Engine::instance().remove(fd);
  std::lock_guard lock(mutex_);
  events_ = nullptr;
  qp_.store(nullptr, std::memory_order_release);
  // What is still queued (a Reject, a Terminate) goes out if the socket takes it now.
  if (fd >= 0) {
    fd_ = fd;
    send_raw_locked();
    wire_sent();
    shutdown(fd_, SHUT_WR);
    close(fd_);
    fd_ = -1;
  }
  phase_ = Phase::kClosed;
}

void TcpConnection::fail_connection(const TerminateInfo& terminate, NTSTATUS status) {
  {
    std::lock_guard lock(mutex_);
    end_locked(&terminate);
  }
  deliver_completions();
  with_events([&](ConnectorEvents* e) { e->peer_disconnected(status); });
}

// -------------------------------------------------------------------- data path --

uint64_t TcpConnection::add_request_locked() {
  requests_.push_slot() = Request{};
  return first_request_ + requests_.size() - 1;
}

void TcpConnection::finish_request_locked(uint64_t request, NTSTATUS status) {
  if (request < first_request_ || request - first_request_ >= requests_.size()) return;
  Request& r = requests_[request - first_request_];
  if (r.done) return;
  r.done = true;
  r.status = status;
}

NTSTATUS TcpConnection::post(const TxMessage& message, const ExtentList& data, ULONG flags) {
  Engine::instance().consumer_posts();
  {
    std::lock_guard lock(mutex_);
    if (phase_ != Phase::kEstablished) return STATUS_CANCELLED;  // ended meanwhile: flushed
    TxItem& item = tx_.push_slot();
    item.reset();
    item.message = message;
    if (!opcode_info(message.opcode).tagged) item.message.msn = send_msn_++;  // the Sends
    if (flags & NDK_OP_FLAG_INLINE) {
      // The caller may reuse its buffers once the post returns (R087), before the socket
      // took the bytes (a full socket, a DEFER chain): they are copied here.
      item.inline_bytes.resize(data.total());
      copy_from_extents(item.inline_bytes, data, 0);
      if (!item.inline_bytes.empty()) item.payload.push_back({item.inline_bytes.data(), item.inline_bytes.size()});
    } else {
      append_iov(item.payload, data);
    }
    item.request = add_request_locked();
    Request& r = requests_.back();
    r.opcode = item.message.opcode;
    r.msn = item.message.msn;
    r.stag = item.message.stag;
    r.to = item.message.to;
    r.silent = (flags & NDK_OP_FLAG_SILENT_SUCCESS) != 0;
    item.completes = true;  // once placed, or once the socket has every byte
    item.fence = (flags & NDK_OP_FLAG_READ_FENCE) != 0;
    if (hold_deferred_locked(flags, data.total())) return STATUS_PENDING;  // goes with the chain
    pump_locked();
  }
  deliver_completions();
  return STATUS_PENDING;
}

NTSTATUS TcpConnection::send(Side, const ExtentList& data, bool solicited, bool invalidate,
                             uint32_t token, ULONG flags) {
  TxMessage m;
  m.opcode = invalidate ? (solicited ? Opcode::kSendWithSeAndInvalidate : Opcode::kSendWithInvalidate)
                        : (solicited ? Opcode::kSendWithSe : Opcode::kSend);
  m.invalidate_stag = invalidate ? token : 0;
  return post(m, data, flags);
}

NTSTATUS TcpConnection::write(Side, const ExtentList& data, uint32_t token, uint64_t address,
                              ULONG flags) {
  TxMessage m;
  m.opcode = Opcode::kRdmaWrite;
  m.stag = token;
  m.to = address;
  return post(m, data, flags);
}

NTSTATUS TcpConnection::read(Side, const ExtentList& into, uint32_t token, uint64_t address,
                             ULONG flags) {
  Engine::instance().consumer_posts();
  {
    std::lock_guard lock(mutex_);
    if (phase_ != Phase::kEstablished) return STATUS_CANCELLED;
    const uint64_t request = add_request_locked();
    requests_.back().opcode = Opcode::kRdmaReadRequest;
    requests_.back().msn = read_msn_;
    // The read's response also proves the placement of every send and write before it.
    fenced_upto_ = std::max(fenced_upto_, request);
    PendingRead& read = new_read_locked(request, into.total(), request, token, address,
                                        (flags & NDK_OP_FLAG_READ_FENCE) != 0);
    append_iov(read.sink, into);
    if (hold_deferred_locked(flags, 0)) return STATUS_PENDING;  // goes with the chain
    pump_locked();
  }
  deliver_completions();
  return STATUS_PENDING;
}

NTSTATUS TcpConnection::local(Side, ULONG flags) {
  {
    std::lock_guard lock(mutex_);
    if (requests_.empty()) return STATUS_SUCCESS;
    requests_.push_slot() = Request{.done = true};  // done, delivered after those before it
    if (!(flags & NDK_OP_FLAG_DEFER)) pump_locked();  // the end of a deferred chain
  }
  deliver_completions();
  return STATUS_PENDING;
}

bool TcpConnection::hold_deferred_locked(ULONG flags, size_t bytes) {
  if (!(flags & NDK_OP_FLAG_DEFER)) return false;
  // A chain is for sending together what one sendmsg carries; beyond a batch the socket
  // might as well start (R082: DEFER is a hint). A big write is never held: holding it
  // made 1 MiB writes slower, and there is no call to save.
  deferred_bytes_ += bytes;
  return deferred_bytes_ < FpduBatch::kMaxBytes;
}

void TcpConnection::start_deferred(Side) {
  {
    std::lock_guard lock(mutex_);
    pump_locked();
  }
  deliver_completions();
}

void TcpConnection::deliver_completions() {
  std::unique_lock lock(mutex_);
  if (delivering_) return;  // the thread delivering now will see ours too
  delivering_ = true;
  while (!requests_.empty() && requests_.front().done) {
    const NTSTATUS status = requests_.front().status;
    QpEndpoint* qp = qp_.load(std::memory_order_acquire);
    lock.unlock();
    if (qp != nullptr) qp->initiator_completed(status);
    lock.lock();
    // Popped after delivery: while one is being delivered, no later one overtakes it.
    requests_.pop_front();
    ++first_request_;
  }
  delivering_ = false;
}

// --------------------------------------------------------------------- transmit --

void TcpConnection::want_output_locked(bool want) {
  if (want == want_output_ || !registered_) return;
  want_output_ = want;
  Engine::instance().modify(fd_, EPOLLIN | (want ? EPOLLOUT : 0u));
}

bool TcpConnection::send_raw_locked() {
  while (raw_sent_ < raw_.size()) {
    wire_sent();
    ssize_t n = ::send(fd_, raw_.data() + raw_sent_, raw_.size() - raw_sent_, kSendFlags);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) raw_sent_ = raw_.size();  // lost with the socket
      return false;
    }
    raw_sent_ += static_cast<size_t>(n);
  }
  raw_.clear();
  raw_sent_ = 0;
  return true;
}

bool TcpConnection::start_message_locked() {
  if (response_failure_) return false;  // the Terminate comes next
  // Read Responses go first and are never held behind our own requests waiting for ORD or
  // a fence: the peer's reads would otherwise wait for ours, and ours for its.
  sending_response_ = responses_.size() > laid_[kResponses];
  if (!sending_response_) {
    if (tx_.size() == laid_[kRequests] && !queue_fence_locked()) return false;
    if (phase_ == Phase::kDraining && !fin_after_drain_) return false;
    const TxItem& next = tx_[laid_[kRequests]];
    if (next.fence && reads_in_flight_ > 0) return false;           // READ_FENCE (R081)
    if (next.read_request && reads_in_flight_ >= std::max<uint32_t>(ord_, next.rtr)) return false;  // ORD (R178)
  }
  const uint8_t tag = sending_response_ ? kResponses : kRequests;
  Ring<TxItem>& queue = queue_of(tag);
  TxItem& item = queue[laid_[tag]];
  if (item.read_response) {
    // Our memory, resolved now: it stays ours while it is sent (consumer rule).
    AccessGuard guard;
    ExtentList& source = *tx_extents_;
    source.clear();
    const NTSTATUS status =
        qp() == nullptr ? STATUS_CANCELLED
                        : qp()->resolve_tagged(item.source_stag, item.source_to, item.source_length,
                                               kNeedRemoteRead, source, guard);
    if (!NT_SUCCESS(status)) {
      // The region went away after the request was checked: the peer's read fails as it
      // would have on arrival, and the connection ends (the handler sends the Terminate).
      const ReadRequest request{item.message.stag, item.message.to, item.source_length, item.source_stag,
                                item.source_to};
      ExtentList& scratch = *tx_extents_;
      const TerminateCode code = qp() == nullptr ? term::kRdmapInvalidStag
                                                 : code_of_tagged(*qp(), status, item.source_stag, item.source_to,
                                                                  item.source_length, false, scratch);
      response_failure_ = read_request_terminate(code, item.request_msn, request);
      queue.erase(laid_[tag]);
      Engine::instance().post(shared_from_this());
      return false;
    }
    append_iov(item.payload, source);
  }
  item.message.payload = item.payload;
  if (item.payload.size() > 0 && ++messages_since_mss_ >= kMssRefresh) {
    messages_since_mss_ = 0;
    refresh_max_fpdu_locked();
  }
  encoder_.emplace(tx_options_, item.message);
  if (item.read_request) ++reads_in_flight_;
  return true;
}

void TcpConnection::lay_out_locked() {
  if (awaiting_first_fpdu_.load(std::memory_order_relaxed)) return;  // see accept()
  // Nothing follows a Terminate.
  while (!terminate_queued_ && batch_.has_room(kFpduIov)) {
    if (!encoder_ && !start_message_locked()) return;
    const uint8_t tag = sending_response_ ? kResponses : kRequests;
    batch_.add(*encoder_, tag);
    if (encoder_->done()) {
      encoder_.reset();
      ++laid_[tag];
    }
  }
}

void TcpConnection::message_sent_locked(uint8_t tag) {
  Ring<TxItem>& queue = queue_of(tag);
  const TxItem& item = queue.front();
  if (item.completes && prove_placement_) {
    if (requests_sent_mark_locked(item.request)) sent_upto_ = std::max(sent_upto_, item.request + 1);
  } else if (item.completes) {
    finish_request_locked(item.request, STATUS_SUCCESS);
  }
  queue.pop_front();
  --laid_[tag];
}

void TcpConnection::pump_locked() {
  deferred_bytes_ = 0;  // whatever a chain held goes now
  if (fd_ < 0 || phase_ == Phase::kTcpConnecting) return;
  const bool setup = phase_ != Phase::kEstablished && phase_ != Phase::kDraining &&
                     phase_ != Phase::kAwaitRtr;
  // MPA frames go before any FPDU, a Terminate after the FPDU in progress (end_locked
  // cut the batch to it).
  if (setup || batch_.empty()) {
    if (!send_raw_locked()) return want_output_locked(true);
  }
  if (setup) return want_output_locked(false);
  for (;;) {
    lay_out_locked();
    if (batch_.empty()) break;
    wire_sent();
    const ssize_t n = batch_.send(fd_, kSendFlags);
    batch_.take_sent([this](uint8_t tag) { message_sent_locked(tag); });
    // A short send: the socket is full (or failed, which the receive side reports).
    if (n < 0 || !batch_.empty()) return want_output_locked(true);
  }
  if (!send_raw_locked()) return want_output_locked(true);  // the Terminate
  want_output_locked(false);
  if (phase_ == Phase::kDraining && fin_after_drain_ && tx_.empty() && responses_.empty() &&
      raw_.empty() && reads_.empty()) {
    wire_sent();
    shutdown(fd_, SHUT_WR);  // FIN: the peer sees the end after everything we sent
    fin_after_drain_ = false;
  }
}

// ---------------------------------------------------------------------- receive --

bool TcpConnection::try_input() {
  bool pumped;
  {
    std::lock_guard lock(mutex_);
    if (detached_ || fd_ < 0 || phase_ == Phase::kTcpConnecting) return false;
    pumped = want_output_;
    if (pumped) pump_locked();  // what waited for room, as EPOLLOUT would have it
  }
  const bool got = on_readable();
  if (got || pumped) deliver_completions();  // a send may complete once its bytes left
  return got;
}

void TcpConnection::on_events(uint32_t events) {
  if (events == 0) {  // posted: early messages to take, completions to deliver, a deadline
    std::vector<uint8_t> early;
    std::optional<TerminateCode> failed;
    {
      std::lock_guard lock(mutex_);
      if (detached_) return;
      if (response_failure_) {  // still there: no other end came first (end_locked drops it)
        const TerminateInfo terminate = *response_failure_;
        end_locked(&terminate);
        failed = terminate.code;
      }
      if (request_overdue_.exchange(false) && phase_ == Phase::kAwaitRequest) {
        drop_request_timer_locked();
        end_locked(nullptr);
        close_locked();  // the listener never saw it: nobody to tell
        return;
      }
      if (phase_ == Phase::kEstablished) early.swap(early_rx_);
    }
    if (failed) {  // as fail_connection: the requests flushed, then the disconnect event
      deliver_completions();
      with_events([&](ConnectorEvents* e) { e->peer_disconnected(status_of_terminate(*failed)); });
      return;
    }
    if (!early.empty()) consume(early);
    deliver_completions();
    return;
  }
  Phase phase;
  {
    std::lock_guard lock(mutex_);
    if (detached_ || fd_ < 0) return;
    phase = phase_;
    if ((events & EPOLLOUT) && phase != Phase::kTcpConnecting) pump_locked();
  }
  if (phase == Phase::kTcpConnecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
    on_connected();
    return;
  }
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable();
  deliver_completions();
}

bool TcpConnection::on_readable() {
  bool got = false;
  // A stream that never drains does not keep a thread here for good: after kReadBudget the
  // handler returns (epoll reports the socket again), so that the engine thread can see a
  // consumer polling and step back, and a polling consumer gets back to its CQ.
  size_t budget = kReadBudget;
  for (;;) {
    int fd;
    bool framed;  // FPDUs flow: parser_ is set (under mutex_, by the consumer's Accept)
    {
      std::lock_guard lock(mutex_);
      fd = fd_;
      framed = phase_ == Phase::kAwaitRtr || phase_ == Phase::kEstablished || phase_ == Phase::kDraining;
    }
    if (fd < 0) return got;
    // Tagged payload goes from the socket straight to its place (one copy per byte, the
    // kernel's), the next FPDU's headers in the same call into rx_buffer_; everything else
    // through rx_buffer_, in big reads while small messages flow and at most kBoundaryRead
    // at an FPDU boundary while big payloads do (the rest of the payload then goes direct).
    size_t wanted = 0, buffered = 0;
    ssize_t n = framed ? receive_direct(fd, wanted, buffered) : 0;
    if (wanted == 0) {
      wanted = framed && rx_big_payloads_ ? kBoundaryRead : rx_buffer_.size();
      n = recv(fd, rx_buffer_.data(), wanted, MSG_DONTWAIT);
      buffered = n > 0 ? static_cast<size_t>(n) : 0;
    }
    if (n >= 0) wire_received();
    if (n == 0) {
      on_eof(0);
      return true;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return got;
      if (errno == EINTR) continue;
      on_eof(errno);
      return true;
    }
    got = true;
    if (buffered > 0) consume({rx_buffer_.data(), buffered});
    if (static_cast<size_t>(n) < wanted) return got;  // the socket is drained
    if (static_cast<size_t>(n) >= budget) return got;
    budget -= static_cast<size_t>(n);
  }
}

ssize_t TcpConnection::receive_direct(int fd, size_t& wanted, size_t& buffered) {
  wanted = buffered = 0;
  if (!parser_ || rx_discard_) return 0;
  const Segment& s = parser_->segment();
  const uint32_t length = parser_->direct_pending();
  if (length < (s.tagged ? kDirectMin : kDirectMinUntagged)) return 0;
  const uint64_t at = (s.tagged ? s.to : uint64_t{s.mo}) + parser_->payload_offset();
  size_t count = 0;
  ssize_t n = 0;
  size_t placed = 0;
  auto receive = [&] {
    size_t direct = 0;
    for (size_t i = 0; i < count; ++i) direct += direct_iov_[i].iov_len;
    direct_iov_[count] = {rx_buffer_.data(), kBoundaryRead};  // what follows the payload
    wanted = direct + kBoundaryRead;
    n = readv(fd, direct_iov_, static_cast<int>(count + 1));
    if (n <= 0) return;
    placed = std::min(static_cast<size_t>(n), direct);
    buffered = static_cast<size_t>(n) - placed;
    // The CRC covers them as they lie in their place.
    size_t left = placed;
    for (size_t i = 0; i < count && left > 0; ++i) {
      const size_t piece = std::min(left, direct_iov_[i].iov_len);
      parser_->placed_directly({static_cast<const uint8_t*>(direct_iov_[i].iov_base), piece});
      left -= piece;
    }
  };
  if (s.opcode == Opcode::kRdmaWrite) {
    QpEndpoint* endpoint = qp();
    if (endpoint == nullptr) return 0;
    AccessGuard guard;  // the region stays registered while bytes land in it
    ExtentList& target = *rx_extents_;
    target.clear();
    if (!NT_SUCCESS(endpoint->resolve_tagged(s.stag, at, length, kNeedRemoteWrite, target, guard)))
      return 0;  // the byte-wise path reports it
    count = slice_iov(target, 0, length, direct_iov_, kDirectIov);
    receive();
    return n;
  }
  if (!s.tagged) {  // a Send: into the receive it took (begin_segment)
    QpEndpoint* endpoint = qp();
    // Past the receive's end the byte-wise path places what fits and reports the overflow.
    if (endpoint == nullptr || !rx_have_receive_ || at + length > rx_capacity_) return 0;
    AccessGuard guard;  // its buffers stay registered while bytes land in them
    ExtentList& target = *rx_extents_;
    target.clear();
    if (!NT_SUCCESS(endpoint->resolve_receive(rx_receive_, target, guard))) return 0;
    count = slice_iov(target, at, length, direct_iov_, kDirectIov);
    if (count == 0) return 0;
    receive();
    rx_bytes_ = std::max<uint64_t>(rx_bytes_, at + placed);
    return n;
  }
  // A Read Response: our own read's sink, checked by begin_segment. Under mutex_, so that a
  // flush cannot complete the read (and its memory go back to the consumer) meanwhile.
  std::lock_guard lock(mutex_);
  if (reads_.empty()) return 0;
  PendingRead& read = reads_.front();
  count = slice_iov(read.sink, at, length, direct_iov_, kDirectIov);
  if (count == 0) return 0;
  receive();
  read.received += placed;
  return n;
}

void TcpConnection::consume(std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    Phase phase;
    {
      std::lock_guard lock(mutex_);
      phase = phase_;
    }
    switch (phase) {
      case Phase::kAwaitReply:
      case Phase::kAwaitRequest: {
        bytes = bytes.subspan(frame_parser_->feed(bytes));
        if (frame_parser_->finished()) on_mpa_frame();
        break;
      }
      case Phase::kAwaitRtr:
      case Phase::kEstablished:
      case Phase::kDraining: {
        if (!parser_) return;  // ended before any FPDU could flow
        bytes = bytes.subspan(parser_->feed(bytes, *this));
        if (parser_->failed()) return on_rx_error();
        break;
      }
      case Phase::kAccepted: {
        // A responder that uses no RTR should wait for our first FPDU (RFC 5044 7.1.2),
        // but Linux siw sends as soon as it replied: kept until NdkCompleteConnect gives
        // the messages a QP, up to kMaxEarly. Beyond, dropping bytes would lose the
        // stream's framing: the connection ends, and NdkCompleteConnect says so.
        bool kept;
        {
          std::lock_guard lock(mutex_);
          kept = early_rx_.size() + bytes.size() <= kMaxEarly;
          if (kept) early_rx_.insert(early_rx_.end(), bytes.begin(), bytes.end());
        }
        if (!kept) on_eof(ECONNABORTED);
        return;
      }
      default:
        return;  // nothing is expected now (ending, or data before the consumer answered)
    }
  }
}

void TcpConnection::on_mpa_frame() {
  const MpaFrame& frame = frame_parser_->frame();
  if (!active_) {
    std::shared_ptr<Connection> self = shared_from_this();
    {
      std::lock_guard lock(mutex_);
      drop_request_timer_locked();  // the Request came in time
    }
    if (frame_parser_->state() != MpaFrameParser::State::kComplete) {
      std::lock_guard lock(mutex_);
      if (frame_parser_->state() == MpaFrameParser::State::kRefused) {
        MpaFrame reject = mpa_reject_for(frame, {});
        raw_.resize(mpa_frame_size(reject));
        encode_mpa_frame(reject, raw_);
      }
      phase_ = Phase::kRequested;  // so that end_locked sends it
      end_locked(nullptr);
      return;
    }
    ULONG ird = frame.enhanced ? frame.v2.ird : 0xffff, ord = frame.enhanced ? frame.v2.ord : 0xffff;
    {
      std::lock_guard lock(mutex_);
      request_private_data_.assign(frame.private_data.begin(), frame.private_data.end());
      request_frame_ = frame;
      request_frame_.private_data = request_private_data_;
      phase_ = Phase::kRequested;
    }
    NTSTATUS status = iface_->deliver_request(local_, self, ird, ord, request_private_data_);
    if (status != STATUS_PENDING) reject(kPassive, {});  // nobody listening: an MPA Reject
    return;
  }
  // Active: a Reply or a Reject.
  std::vector<uint8_t> data(frame.private_data.begin(), frame.private_data.end());
  if (frame_parser_->state() != MpaFrameParser::State::kComplete) {
    {
      std::lock_guard lock(mutex_);
      close_locked();
    }
    with_events([](ConnectorEvents* e) { e->connect_failed(STATUS_CONNECTION_REFUSED); });
    return;
  }
  if (frame.reject) {
    {
      std::lock_guard lock(mutex_);
      close_locked();
    }
    with_events([&](ConnectorEvents* e) { e->peer_rejected(data); });
    return;
  }
  if (std::optional<TerminateCode> bad = mpa_check_reply(request_frame_, frame)) {
    {
      std::lock_guard lock(mutex_);
      negotiated_locked(request_frame_, frame);
      phase_ = Phase::kEstablished;
      TerminateInfo t = terminate_with(*bad);
      end_locked(&t);
    }
    with_events([](ConnectorEvents* e) { e->connect_failed(STATUS_CONNECTION_REFUSED); });
    return;
  }
  ULONG ird = own_inbound_, ord = own_outbound_;
  {
    std::lock_guard lock(mutex_);
    negotiated_locked(request_frame_, frame);
    if (frame.enhanced) {
      ird = frame.v2.ird;
      ord = frame.v2.ord;
      rtr_ = request_frame_.v2.peer_to_peer ? frame.v2.rtr : 0;
    }
    set_ord_locked(std::min<uint32_t>(own_outbound_, ird));
    phase_ = Phase::kAccepted;
  }
  with_events([&](ConnectorEvents* e) { e->peer_accepted(ird, ord, data); });
}

void TcpConnection::on_rx_error() {
  const RxError& error = parser_->error();
  const NTSTATUS status = status_of_terminate(error.terminate.code);
  abandon_receive(qp(), rx_receive_, rx_have_receive_);
  if (error.send_terminate) {
    fail_connection(error.terminate, status);
    return;
  }
  // The peer's own Terminate was malformed or it answered ours: just end.
  {
    std::lock_guard lock(mutex_);
    end_locked(nullptr);
  }
  deliver_completions();
  with_events([&](ConnectorEvents* e) { e->peer_disconnected(STATUS_CONNECTION_ABORTED); });
}

void TcpConnection::on_eof(int error) {
  // A FIN inside an FPDU or a message is no graceful end: the stream was cut.
  if (error == 0 && (rx_have_receive_ || (parser_ && !parser_->at_boundary() && !parser_->failed())))
    error = ECONNABORTED;
  abandon_receive(qp(), rx_receive_, rx_have_receive_);
  Phase phase;
  {
    std::lock_guard lock(mutex_);
    phase = phase_;
    end_locked(nullptr);
    close_locked();
  }
  deliver_completions();
  switch (phase) {
    case Phase::kTcpConnecting:
    case Phase::kAwaitReply:
      with_events([&](ConnectorEvents* e) {
        e->connect_failed(error != 0 ? status_of_errno(error) : STATUS_CONNECTION_REFUSED);
      });
      break;
    case Phase::kAccepted:
    case Phase::kRequested:
    case Phase::kAwaitRtr:
      with_events([](ConnectorEvents* e) { e->peer_aborted(); });
      break;
    case Phase::kEstablished:
      // A FIN is the peer's graceful disconnect; a reset or a dead link is not.
      with_events([&](ConnectorEvents* e) {
        e->peer_disconnected(error == 0 ? STATUS_SUCCESS : STATUS_CONNECTION_ABORTED);
      });
      break;
    default:
      break;
  }
}

// ----------------------------------------------------------- FpduSink (engine) --

Verdict TcpConnection::begin_segment(const Segment& s) {
  QpEndpoint* qp = qp_.load(std::memory_order_acquire);
  Phase phase;
  {
    std::lock_guard lock(mutex_);
    phase = phase_;
  }
  const bool awaiting_rtr = !active_ && rtr_expected_ && phase == Phase::kAwaitRtr;
  // Big tagged payloads flow until a small message starts (a big message's short last
  // segment does not count).
  if (s.payload_length >= (s.tagged ? kDirectMin : kDirectMinUntagged)) rx_big_payloads_ = true;
  else if (s.first) rx_big_payloads_ = false;
  // Ending: only what completes our own requests still counts (read responses, a
  // Terminate); the peer's messages are let go, as after a FIN.
  rx_discard_ = phase == Phase::kDraining || qp == nullptr;
  if (rx_discard_ && s.opcode != Opcode::kRdmaReadResponse && s.opcode != Opcode::kTerminate) return kAccept;
  switch (s.opcode) {
    case Opcode::kRdmaWrite:
      if (s.payload_length == 0) return kAccept;  // the RTR, or an empty write: no placement
      if (awaiting_rtr) return term::kRdmapUnexpectedOpcode;
      {
        AccessGuard guard;
        ExtentList& target = *rx_extents_;
        target.clear();
        NTSTATUS status = qp->resolve_tagged(s.stag, s.to, s.payload_length, kNeedRemoteWrite, target, guard);
        guard.release();
        if (!NT_SUCCESS(status)) return code_of_tagged(*qp, status, s.stag, s.to, s.payload_length, true, target);
      }
      return kAccept;
    case Opcode::kRdmaReadResponse: {
      std::lock_guard lock(mutex_);
      // Only the oldest read on the wire may be answered (reads_ also holds those that ORD
      // or a fence still keeps back).
      if (reads_in_flight_ == 0 || reads_.empty() || reads_.front().sink_stag != s.stag)
        return term::kDdpTaggedInvalidStag;  // nobody asked for it
      const PendingRead& read = reads_.front();
      // In order and within the sink (written so that nothing wraps); the last segment
      // must complete it.
      if (s.to != read.received || s.payload_length > read.length - s.to ||
          (s.last && s.to + s.payload_length != read.length))
        return term::kDdpTaggedBaseOrBounds;
      return kAccept;
    }
    case Opcode::kRdmaReadRequest: {
      // At most our IRD of the peer's reads wait for their responses (a peer beyond it
      // would make us queue without bound), rounded up to a power of two: Linux siw sizes
      // its read queue so and issues reads until it is full. The RTR always fits.
      std::lock_guard lock(mutex_);
      if (responses_.size() >= std::bit_ceil(std::max<ULONG>(1, ird_))) return term::kRdmapCatastrophicStream;
      if (s.read_request.rdma_read_message_size == 0) return kAccept;  // RTR or empty read
      if (awaiting_rtr) return term::kRdmapUnexpectedOpcode;
      return kAccept;  // checked at its end, once its CRC holds
    }
    case Opcode::kTerminate:
      return kAccept;
    default:  // the Sends
      if (awaiting_rtr) return term::kRdmapUnexpectedOpcode;
      if (s.first) {
        if (!qp->take_receive(rx_receive_)) return term::kDdpUntaggedNoBuffer;
        rx_have_receive_ = true;
        rx_bytes_ = 0;
        rx_capacity_ = 0;
        for (ULONG i = 0; i < rx_receive_.count; ++i) rx_capacity_ += rx_receive_.sge[i].Length;
      }
      return kAccept;
  }
}

Verdict TcpConnection::payload(const Segment& s, uint32_t offset, std::span<const uint8_t> bytes) {
  if (rx_discard_ && s.opcode != Opcode::kRdmaReadResponse) return kAccept;
  switch (s.opcode) {
    case Opcode::kRdmaWrite: {
      AccessGuard guard;
      ExtentList& target = *rx_extents_;
      target.clear();
      NTSTATUS status = qp()->resolve_tagged(s.stag, s.to + offset, bytes.size(), kNeedRemoteWrite, target, guard);
      if (!NT_SUCCESS(status)) {  // deregistered meanwhile
        guard.release();
        return code_of_tagged(*qp(), status, s.stag, s.to + offset, bytes.size(), true, target);
      }
      copy_to_extents(target, 0, bytes);  // the only copy of these bytes after the socket's
      return kAccept;
    }
    case Opcode::kRdmaReadResponse: {
      std::lock_guard lock(mutex_);
      if (reads_.empty()) return term::kDdpTaggedInvalidStag;
      PendingRead& read = reads_.front();
      read.received += copy_to_iov(read.sink, s.to + offset, bytes);
      return kAccept;
    }
    default: {  // the Sends
      const uint64_t at = uint64_t{s.mo} + offset;
      NTSTATUS status = qp()->place_receive(rx_receive_, at, bytes);
      rx_bytes_ = std::max(rx_bytes_, std::min(at + bytes.size(), rx_capacity_));
      if (NT_SUCCESS(status)) return kAccept;
      // The receive completes now with what it holds; the peer learns why.
      rx_have_receive_ = false;
      QpEndpoint::SendOutcome outcome =
          qp()->finish_receive(rx_receive_, status, rx_bytes_, opcode_info(s.opcode).solicited, false, 0);
      (void)outcome;
      return status == STATUS_BUFFER_OVERFLOW ? term::kDdpUntaggedMessageTooLong
                                              : term::kDdpLocalCatastrophic;
    }
  }
}

Verdict TcpConnection::end_segment(const Segment& s) {
  if (awaiting_first_fpdu_.load(std::memory_order_relaxed)) {  // the initiator's first FPDU
    std::lock_guard lock(mutex_);
    awaiting_first_fpdu_.store(false, std::memory_order_relaxed);
    pump_locked();
  }
  if (rx_discard_ && s.opcode != Opcode::kRdmaReadResponse && s.opcode != Opcode::kTerminate) return kAccept;
  switch (s.opcode) {
    case Opcode::kRdmaWrite:
      if (s.payload_length == 0 && [&] {
            std::lock_guard lock(mutex_);
            if (phase_ != Phase::kAwaitRtr) return false;
            phase_ = Phase::kEstablished;
            return true;
          }())
        with_events([](ConnectorEvents* e) { e->peer_completed(); });  // the RTR
      return kAccept;
    case Opcode::kRdmaReadResponse:
      if (s.last) {
        std::lock_guard lock(mutex_);
        if (reads_.empty()) return kAccept;  // flushed meanwhile (the connection is ending)
        PendingRead& read = reads_.front();
        confirm_locked(read.covers);
        if (read.request != kNoRequest) finish_request_locked(read.request, STATUS_SUCCESS);
        reads_.pop_front();
        if (reads_in_flight_ > 0) --reads_in_flight_;
        pump_locked();  // a read or a fenced request may have waited for this one
      }
      return kAccept;
    case Opcode::kRdmaReadRequest: {
      const ReadRequest& r = s.read_request;
      bool rtr = false;
      {
        std::lock_guard lock(mutex_);
        if (r.rdma_read_message_size > 0) {
          AccessGuard guard;
          ExtentList& source = *rx_extents_;
          source.clear();
          NTSTATUS status = qp()->resolve_tagged(r.data_source_stag, r.data_source_to,
                                                r.rdma_read_message_size, kNeedRemoteRead, source, guard);
          guard.release();
          if (!NT_SUCCESS(status))
            return code_of_tagged(*qp(), status, r.data_source_stag, r.data_source_to,
                                  r.rdma_read_message_size, false, source);
        }
        if (phase_ == Phase::kAwaitRtr) {
          phase_ = Phase::kEstablished;
          rtr = true;
        }
        if (phase_ == Phase::kEstablished) {
          TxItem& item = responses_.push_slot();
          item.reset();
          item.message.opcode = Opcode::kRdmaReadResponse;
          item.message.stag = r.data_sink_stag;
          item.message.to = r.data_sink_to;
          item.read_response = r.rdma_read_message_size > 0;
          item.message.stable_copy = true;  // our consumer may be writing what the peer reads
          item.source_stag = r.data_source_stag;
          item.source_to = r.data_source_to;
          item.source_length = r.rdma_read_message_size;
          item.request_msn = s.msn;
          pump_locked();
        }
      }
      if (rtr) with_events([](ConnectorEvents* e) { e->peer_completed(); });
      return kAccept;
    }
    case Opcode::kTerminate: {
      const NTSTATUS status = status_of_terminate(s.terminate.code);
      {
        std::lock_guard lock(mutex_);
        fail_named_locked(s.terminate, status);
      }
      deliver_completions();
      with_events([&](ConnectorEvents* e) { e->peer_disconnected(status); });
      return kAccept;
    }
    default: {  // the Sends
      if (!s.last || !rx_have_receive_) return kAccept;
      rx_have_receive_ = false;
      const OpcodeInfo& info = opcode_info(s.opcode);
      QpEndpoint::SendOutcome outcome = qp()->finish_receive(
          rx_receive_, STATUS_SUCCESS, rx_bytes_, info.solicited, info.invalidate, s.invalidate_stag);
      if (outcome.terminate) return term::kRdmapProtectionCannotInvalidate;
      return kAccept;
    }
  }
}

}  // namespace softndk::fabric::tcp
