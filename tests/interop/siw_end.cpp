// The kernel's software iWARP (siw) end of an interop connection: librdmacm for the
// connection (the kernel speaks MPA), libibverbs for the data path. Needs an siw device on
// the interface of interop_address() (run-in-vm makes one).
#include "ends.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <rdma/rdma_cma.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

namespace interop {
namespace {

class SiwEnd final : public Endpoint {
 public:
  SiwEnd() : buffer_(kBufferSize) {
    channel_ = rdma_create_event_channel();
    if (channel_ != nullptr) fcntl(channel_->fd, F_SETFL, fcntl(channel_->fd, F_GETFL) | O_NONBLOCK);
  }
  ~SiwEnd() override {
    if (id_ != nullptr && id_->qp != nullptr) rdma_destroy_qp(id_);
    for (ibv_mr* mr : windows_) ibv_dereg_mr(mr);
    if (mr_ != nullptr) ibv_dereg_mr(mr_);
    if (cq_ != nullptr) {
      drain_notifications();
      ibv_destroy_cq(cq_);
    }
    if (completions_ != nullptr) ibv_destroy_comp_channel(completions_);
    if (pd_ != nullptr) ibv_dealloc_pd(pd_);
    if (id_ != nullptr) rdma_destroy_id(id_);
    if (listener_ != nullptr) rdma_destroy_id(listener_);
    if (channel_ != nullptr) rdma_destroy_event_channel(channel_);
  }

  std::string name() const override { return "siw"; }

  // siw (Linux 6.1, siw_qp.c, siw_rqe_complete) notifies a receive's CQ as if every
  // completion were unsolicited, and tells only kernel consumers which STag a Send with
  // Invalidate named; it still invalidates it.
  bool sees_solicited_events() const override { return false; }
  bool sees_invalidated_stags() const override { return false; }

  uint16_t listen() override {
    if (channel_ == nullptr || rdma_create_id(channel_, &listener_, nullptr, RDMA_PS_TCP) != 0) {
      return fail("rdma_create_id"), 0;
    }
    SOCKADDR_INET here = interop_address(0);
    if (rdma_bind_addr(listener_, reinterpret_cast<sockaddr*>(&here)) != 0) return fail("rdma_bind_addr"), 0;
    if (rdma_listen(listener_, 4) != 0) return fail("rdma_listen"), 0;
    return ntohs(rdma_get_src_port(listener_));
  }

  std::optional<std::string> incoming() override {
    std::optional<Event> e = next_event(RDMA_CM_EVENT_CONNECT_REQUEST);
    if (!e) return std::nullopt;
    id_ = e->id;
    if (!create_qp()) return std::nullopt;
    return e->private_data;
  }

  bool accept(const std::string& private_data) override {
    rdma_conn_param param = connection_parameters(private_data);
    return rdma_accept(id_, &param) == 0 || fail("rdma_accept");
  }

  bool reject(const std::string& private_data) override {
    return rdma_reject(id_, private_data.data(), static_cast<uint8_t>(private_data.size())) == 0 ||
           fail("rdma_reject");
  }

  bool established() override { return next_event(RDMA_CM_EVENT_ESTABLISHED).has_value(); }

  bool start_connect(uint16_t port, const std::string& private_data) override {
    if (channel_ == nullptr || rdma_create_id(channel_, &id_, nullptr, RDMA_PS_TCP) != 0) {
      return fail("rdma_create_id");
    }
    SOCKADDR_INET to = interop_address(port);
    if (rdma_resolve_addr(id_, nullptr, reinterpret_cast<sockaddr*>(&to), 5000) != 0) {
      return fail("rdma_resolve_addr");
    }
    if (!next_event(RDMA_CM_EVENT_ADDR_RESOLVED)) return false;
    if (rdma_resolve_route(id_, 5000) != 0) return fail("rdma_resolve_route");
    if (!next_event(RDMA_CM_EVENT_ROUTE_RESOLVED)) return false;
    if (!create_qp()) return false;
    rdma_conn_param param = connection_parameters(private_data);
    return rdma_connect(id_, &param) == 0 || fail("rdma_connect");
  }

  ConnectOutcome finish_connect() override {
    ConnectOutcome outcome;
    std::optional<Event> e = next_event();
    if (!e) {
      outcome.error = error_;
    } else if (e->type == RDMA_CM_EVENT_ESTABLISHED) {
      outcome.accepted = true;
      outcome.private_data = e->private_data;
      outcome.inbound_reads = e->responder_resources;
      outcome.outbound_reads = e->initiator_depth;
    } else if (e->type == RDMA_CM_EVENT_REJECTED) {
      outcome.private_data = e->private_data;
    } else {
      outcome.error = std::string("connect ended with ") + rdma_event_str(e->type) + " status " +
                      std::to_string(e->status);
    }
    return outcome;
  }

  unsigned char* buffer() override { return buffer_.data(); }
  RemoteBuffer exported(size_t offset) override {
    return {reinterpret_cast<uintptr_t>(buffer_.data()) + offset, mr_->rkey};
  }
  std::optional<RemoteBuffer> invalidatable(size_t offset, uint32_t length) override {
    ibv_mr* mr = ibv_reg_mr(pd_, buffer_.data() + offset, length, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    if (mr == nullptr) return fail("ibv_reg_mr"), std::nullopt;
    windows_.push_back(mr);
    return RemoteBuffer{reinterpret_cast<uintptr_t>(buffer_.data()) + offset, mr->rkey};
  }

  bool receive(uint64_t id, size_t offset, uint32_t length) override {
    ibv_sge sge = local(offset, length);
    ibv_recv_wr wr{};
    wr.wr_id = id;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    ibv_recv_wr* bad = nullptr;
    return ibv_post_recv(id_->qp, &wr, &bad) == 0 || fail("ibv_post_recv");
  }
  bool send(uint64_t id, size_t offset, uint32_t length, bool solicited) override {
    ibv_send_wr wr = request(id, IBV_WR_SEND, offset, length);
    if (solicited) wr.send_flags |= IBV_SEND_SOLICITED;
    return post(wr);
  }
  bool send_invalidate(uint64_t id, size_t offset, uint32_t length, uint32_t stag) override {
    ibv_send_wr wr = request(id, IBV_WR_SEND_WITH_INV, offset, length);
    wr.invalidate_rkey = stag;
    wr.wr.rdma.rkey = stag;  // libsiw (rdma-core 44) sends this one as the Invalidate STag
    return post(wr);
  }
  bool write(uint64_t id, size_t offset, uint32_t length, RemoteBuffer to) override {
    ibv_send_wr wr = request(id, IBV_WR_RDMA_WRITE, offset, length);
    wr.wr.rdma.remote_addr = to.address;
    wr.wr.rdma.rkey = to.stag;
    return post(wr);
  }
  bool read(uint64_t id, size_t offset, uint32_t length, RemoteBuffer from) override {
    ibv_send_wr wr = request(id, IBV_WR_RDMA_READ, offset, length);
    wr.wr.rdma.remote_addr = from.address;
    wr.wr.rdma.rkey = from.stag;
    return post(wr);
  }

  std::optional<Completion> poll(std::chrono::milliseconds limit) override {
    const auto end = std::chrono::steady_clock::now() + limit;
    do {
      ibv_wc wc{};
      int n = ibv_poll_cq(cq_, 1, &wc);
      if (n < 0) return fail("ibv_poll_cq"), std::nullopt;
      if (n == 1) return completion_of(wc);
      std::this_thread::sleep_for(50us);
    } while (std::chrono::steady_clock::now() < end);
    fail("no completion in time");
    return std::nullopt;
  }

  void arm_solicited() override { ibv_req_notify_cq(cq_, 1); }
  int notifications() override {
    drain_notifications();
    return notifications_;
  }

  // Once disconnected, moves the QP to error as a verbs consumer does (rdma_disconnect):
  // siw flushes the QP's queues then, not when it ends the connection itself.
  bool wait_disconnected(std::chrono::milliseconds limit) override {
    if (!disconnected_ && !next_event(RDMA_CM_EVENT_DISCONNECTED, limit)) return false;
    rdma_disconnect(id_);
    return true;
  }
  void disconnect() override { rdma_disconnect(id_); }

 private:
  struct Event {
    rdma_cm_event_type type;
    int status;
    rdma_cm_id* id;
    std::string private_data;
    uint8_t responder_resources, initiator_depth;
  };

  bool fail(const std::string& what) {
    error_ = what + ": " + std::strerror(errno);
    return false;
  }

  // The next connection manager event (of type `want`, when given: anything else is a
  // failure), waited for at most `limit`.
  std::optional<Event> next_event(std::optional<rdma_cm_event_type> want = std::nullopt,
                                  std::chrono::milliseconds limit = 10s) {
    pollfd p{channel_->fd, POLLIN, 0};
    rdma_cm_event* raw = nullptr;
    const auto end = std::chrono::steady_clock::now() + limit;
    while (rdma_get_cm_event(channel_, &raw) != 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (errno != EAGAIN || left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) < 0) {
        error_ = std::string("no connection event") + (want ? std::string(" ") + rdma_event_str(*want) : "") +
                 " in time";
        return std::nullopt;
      }
    }
    Event e{raw->event, raw->status, raw->id, {}, 0, 0};
    const rdma_conn_param& c = raw->param.conn;
    if (c.private_data != nullptr) {
      e.private_data.assign(static_cast<const char*>(c.private_data), c.private_data_len);
    }
    e.responder_resources = c.responder_resources;
    e.initiator_depth = c.initiator_depth;
    rdma_ack_cm_event(raw);
    if (e.type == RDMA_CM_EVENT_DISCONNECTED) disconnected_ = true;
    if (want && e.type != *want) {
      error_ = std::string("expected ") + rdma_event_str(*want) + ", got " + rdma_event_str(e.type) +
               " status " + std::to_string(e.status);
      return std::nullopt;
    }
    return e;
  }

  rdma_conn_param connection_parameters(const std::string& private_data) const {
    rdma_conn_param param{};
    param.private_data = private_data.data();
    param.private_data_len = static_cast<uint8_t>(private_data.size());
    param.responder_resources = kReadLimit;
    param.initiator_depth = kReadLimit;
    return param;
  }

  bool create_qp() {
    pd_ = ibv_alloc_pd(id_->verbs);
    if (pd_ == nullptr) return fail("ibv_alloc_pd");
    completions_ = ibv_create_comp_channel(id_->verbs);
    if (completions_ == nullptr) return fail("ibv_create_comp_channel");
    fcntl(completions_->fd, F_SETFL, fcntl(completions_->fd, F_GETFL) | O_NONBLOCK);
    cq_ = ibv_create_cq(id_->verbs, 256, nullptr, completions_, 0);
    if (cq_ == nullptr) return fail("ibv_create_cq");
    ibv_qp_init_attr attr{};
    attr.send_cq = cq_;
    attr.recv_cq = cq_;
    attr.qp_type = IBV_QPT_RC;
    attr.sq_sig_all = 1;
    attr.cap.max_send_wr = 64;
    attr.cap.max_recv_wr = 64;
    attr.cap.max_send_sge = 2;
    attr.cap.max_recv_sge = 2;
    if (rdma_create_qp(id_, pd_, &attr) != 0) return fail("rdma_create_qp");
    mr_ = ibv_reg_mr(pd_, buffer_.data(), buffer_.size(),
                     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
    return mr_ != nullptr || fail("ibv_reg_mr");
  }

  ibv_sge local(size_t offset, uint32_t length) {
    return {reinterpret_cast<uintptr_t>(buffer_.data()) + offset, length, mr_->lkey};
  }

  // A send queue request of one SGE over [offset, offset + length) of the buffer.
  ibv_send_wr request(uint64_t id, ibv_wr_opcode opcode, size_t offset, uint32_t length) {
    sge_ = local(offset, length);
    ibv_send_wr wr{};
    wr.wr_id = id;
    wr.opcode = opcode;
    wr.sg_list = &sge_;
    wr.num_sge = 1;
    return wr;
  }
  bool post(ibv_send_wr& wr) {
    ibv_send_wr* bad = nullptr;
    return ibv_post_send(id_->qp, &wr, &bad) == 0 || fail("ibv_post_send");
  }

  static Completion completion_of(const ibv_wc& wc) {
    Completion c;
    c.ok = wc.status == IBV_WC_SUCCESS;
    c.status = ibv_wc_status_str(wc.status);
    c.id = wc.wr_id;
    c.bytes = wc.byte_len;
    switch (wc.opcode) {
      case IBV_WC_SEND: c.op = Op::Send; break;
      case IBV_WC_RECV: c.op = Op::Receive; break;
      case IBV_WC_RDMA_WRITE: c.op = Op::Write; break;
      case IBV_WC_RDMA_READ: c.op = Op::Read; break;
      default: c.op = Op::Other; break;
    }
    if (c.ok && (wc.wc_flags & IBV_WC_WITH_INV) != 0) c.invalidated = wc.invalidated_rkey;
    return c;
  }

  void drain_notifications() {
    ibv_cq* cq = nullptr;
    void* context = nullptr;
    while (ibv_get_cq_event(completions_, &cq, &context) == 0) {
      ibv_ack_cq_events(cq, 1);
      ++notifications_;
    }
  }

  std::vector<unsigned char> buffer_;
  rdma_event_channel* channel_ = nullptr;
  rdma_cm_id* listener_ = nullptr;
  rdma_cm_id* id_ = nullptr;
  ibv_pd* pd_ = nullptr;
  ibv_comp_channel* completions_ = nullptr;
  ibv_cq* cq_ = nullptr;
  ibv_mr* mr_ = nullptr;
  std::vector<ibv_mr*> windows_;
  ibv_sge sge_{};  // of the request being posted
  int notifications_ = 0;
  bool disconnected_ = false;
};

}  // namespace

std::unique_ptr<Endpoint> make_siw_end() { return std::make_unique<SiwEnd>(); }

}  // namespace interop
