// SoftNDK's end of an interop connection: an adapter of the TCP (iWARP) fabric on the
// interface of interop_address(), driven through the NDK dispatch tables as any NDK consumer would.
#include <atomic>
#include <thread>

#include "../e2e/e2e.hpp"
#include "ends.hpp"

namespace interop {
namespace {

using e2e::create;
using e2e::Waiter;

std::string hex(NTSTATUS s) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", static_cast<unsigned>(s));
  return text;
}

class NdkEnd final : public Endpoint {
 public:
  NdkEnd() : buffer_(kBufferSize) {
    SOFTNDK_OPEN_OPTIONS options{sizeof(options), SOFTNDK_FABRIC_TCP, SOFTNDK_COMPLETION_DEFAULT, 0};
    SOCKADDR_INET here = interop_address(0);
    if (NTSTATUS s = SoftNdkOpenAdapterByAddress(reinterpret_cast<PSOCKADDR>(&here), length_of(here),
                                                 NDK_VERSION{2, 0}, &options, &adapter_);
        s != STATUS_SUCCESS) {
      error_ = "SoftNdkOpenAdapter: " + hex(s);
      return;
    }
    cq_ = create<NDK_CQ>([&](auto cb, auto ctx, NDK_CQ** out) {
      return adapter_->Dispatch->NdkCreateCq(adapter_, 256, &NdkEnd::on_notification, this, nullptr, cb, ctx, out);
    });
    pd_ = create<NDK_PD>([&](auto cb, auto ctx, NDK_PD** out) { return adapter_->Dispatch->NdkCreatePd(adapter_, cb, ctx, out); });
    if (cq_ == nullptr || pd_ == nullptr) return;
    qp_ = create<NDK_QP>([&](auto cb, auto ctx, NDK_QP** out) {
      return pd_->Dispatch->NdkCreateQp(pd_, cq_, cq_, this, 64, 64, 2, 2, 0, cb, ctx, out);
    });
    mr_ = e2e::register_region(pd_, buffer_.data(), buffer_.size(),
                               NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ |
                                   NDK_MR_FLAG_ALLOW_REMOTE_WRITE,
                               mdl_);
    if (qp_ == nullptr || mr_ == nullptr) error_ = "creating the QP or registering the buffer failed";
  }
  ~NdkEnd() override {
    e2e::close(connector_);
    e2e::close(listener_);
    e2e::close(qp_);
    e2e::close(mw_);
    e2e::close(mr_);
    if (mdl_ != nullptr) IoFreeMdl(mdl_);
    e2e::close(pd_);
    e2e::close(cq_);
    if (adapter_ != nullptr) SoftNdkCloseAdapter(adapter_);
  }

  std::string name() const override { return "SoftNDK"; }

  uint16_t listen() override {
    if (!ready()) return 0;
    listener_ = create<NDK_LISTENER>([&](auto cb, auto ctx, NDK_LISTENER** out) {
      return adapter_->Dispatch->NdkCreateListener(adapter_, &e2e::Incoming::on_connect, &incoming_, cb, ctx, out);
    });
    if (listener_ == nullptr) return fail("NdkCreateListener", STATUS_INSUFFICIENT_RESOURCES), 0;
    SOCKADDR_INET address = interop_address(0);
    Waiter listened;
    if (NTSTATUS s = listened.wait(listener_->Dispatch->NdkListen(listener_, reinterpret_cast<PSOCKADDR>(&address),
                                                                  length_of(address), &Waiter::on_request, &listened));
        s != STATUS_SUCCESS) {
      return fail("NdkListen", s), 0;
    }
    ULONG length = sizeof(address);
    listener_->Dispatch->NdkGetLocalAddress(listener_, reinterpret_cast<PSOCKADDR>(&address), &length);
    return ntohs(address.si_family == AF_INET6 ? address.Ipv6.sin6_port : address.Ipv4.sin_port);
  }

  std::optional<std::string> incoming() override {
    connector_ = incoming_.next();
    if (connector_ == nullptr) return error_ = "no connect request in time", std::nullopt;
    ULONG inbound = 0, outbound = 0;
    std::string data(256, '\0');
    ULONG length = static_cast<ULONG>(data.size());
    if (NTSTATUS s = connector_->Dispatch->NdkGetConnectionData(connector_, &inbound, &outbound, data.data(), &length);
        s != STATUS_SUCCESS) {
      return fail("NdkGetConnectionData", s), std::nullopt;
    }
    data.resize(length);
    return data;
  }

  bool accept(const std::string& private_data) override {
    NTSTATUS s = connector_->Dispatch->NdkAcceptEx(connector_, qp_, kReadLimit, kReadLimit,
                                                   const_cast<char*>(private_data.data()),
                                                   static_cast<ULONG>(private_data.size()), &e2e::Disconnects::on_ex,
                                                   &disconnects_, &Waiter::on_request, &accepted_);
    return s == STATUS_SUCCESS || s == STATUS_PENDING || fail("NdkAcceptEx", s);
  }
  bool reject(const std::string& private_data) override {
    NTSTATUS s = connector_->Dispatch->NdkReject(connector_, const_cast<char*>(private_data.data()),
                                                 static_cast<ULONG>(private_data.size()));
    return s == STATUS_SUCCESS || fail("NdkReject", s);
  }
  bool established() override {
    NTSTATUS s = accepted_.wait(STATUS_PENDING);
    return s == STATUS_SUCCESS || fail("NdkAcceptEx completion", s);
  }

  bool start_connect(uint16_t port, const std::string& private_data) override {
    if (!ready()) return false;
    connector_ = create<NDK_CONNECTOR>([&](auto cb, auto ctx, NDK_CONNECTOR** out) {
      return adapter_->Dispatch->NdkCreateConnector(adapter_, cb, ctx, out);
    });
    if (connector_ == nullptr) return fail("NdkCreateConnector", STATUS_INSUFFICIENT_RESOURCES);
    SOCKADDR_INET from = interop_address(0), to = interop_address(port);
    NTSTATUS s = connector_->Dispatch->NdkConnect(
        connector_, qp_, reinterpret_cast<PSOCKADDR>(&from), length_of(from), reinterpret_cast<PSOCKADDR>(&to),
        length_of(to), kReadLimit, kReadLimit, const_cast<char*>(private_data.data()),
        static_cast<ULONG>(private_data.size()), &Waiter::on_request, &connected_);
    return s == STATUS_PENDING || s == STATUS_SUCCESS || fail("NdkConnect", s);
  }

  ConnectOutcome finish_connect() override {
    ConnectOutcome outcome;
    NTSTATUS s = connected_.wait(STATUS_PENDING);
    if (s != STATUS_SUCCESS && s != STATUS_CONNECTION_REFUSED) {
      outcome.error = "NdkConnect completed with " + hex(s);
      return outcome;
    }
    std::string data(256, '\0');
    ULONG length = static_cast<ULONG>(data.size()), inbound = 0, outbound = 0;
    if (NTSTATUS got = connector_->Dispatch->NdkGetConnectionData(connector_, &inbound, &outbound, data.data(), &length);
        got != STATUS_SUCCESS) {
      outcome.error = "NdkGetConnectionData: " + hex(got);
      return outcome;
    }
    data.resize(length);
    outcome.private_data = data;
    outcome.inbound_reads = inbound;
    outcome.outbound_reads = outbound;
    if (s == STATUS_CONNECTION_REFUSED) return outcome;
    Waiter completed;
    s = completed.wait(connector_->Dispatch->NdkCompleteConnectEx(connector_, &e2e::Disconnects::on_ex, &disconnects_,
                                                                   &Waiter::on_request, &completed));
    if (s != STATUS_SUCCESS) {
      outcome.error = "NdkCompleteConnectEx: " + hex(s);
      return outcome;
    }
    outcome.accepted = true;
    return outcome;
  }

  unsigned char* buffer() override { return buffer_.data(); }
  RemoteBuffer exported(size_t offset) override {
    return {reinterpret_cast<uintptr_t>(buffer_.data()) + offset, mr_->Dispatch->NdkGetRemoteTokenFromMr(mr_)};
  }
  std::optional<RemoteBuffer> invalidatable(size_t offset, uint32_t length) override {
    mw_ = create<NDK_MW>([&](auto cb, auto ctx, NDK_MW** out) { return pd_->Dispatch->NdkCreateMw(pd_, cb, ctx, out); });
    if (mw_ == nullptr) return fail("NdkCreateMw", STATUS_INSUFFICIENT_RESOURCES), std::nullopt;
    if (NTSTATUS s = qp_->Dispatch->NdkBind(qp_, nullptr, mr_, mw_, buffer_.data() + offset, length,
                                            NDK_OP_FLAG_ALLOW_REMOTE_WRITE);
        s != STATUS_SUCCESS) {
      return fail("NdkBind", s), std::nullopt;
    }
    std::optional<Completion> bound = poll(10s);
    if (!bound || !bound->ok || bound->op != Op::Bind) return error_ = "the bind did not complete", std::nullopt;
    return RemoteBuffer{reinterpret_cast<uintptr_t>(buffer_.data()) + offset, mw_->Dispatch->NdkGetRemoteTokenFromMw(mw_)};
  }

  bool receive(uint64_t id, size_t offset, uint32_t length) override {
    NDK_SGE sge = local(offset, length);
    return posted("NdkReceive", qp_->Dispatch->NdkReceive(qp_, context(id), &sge, 1));
  }
  bool send(uint64_t id, size_t offset, uint32_t length, bool solicited) override {
    NDK_SGE sge = local(offset, length);
    return posted("NdkSend", qp_->Dispatch->NdkSend(qp_, context(id), &sge, 1,
                                                    solicited ? NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT : 0));
  }
  bool send_invalidate(uint64_t id, size_t offset, uint32_t length, uint32_t stag) override {
    NDK_SGE sge = local(offset, length);
    return posted("NdkSendAndInvalidate", qp_->Dispatch->NdkSendAndInvalidate(qp_, context(id), &sge, 1, 0, stag));
  }
  bool write(uint64_t id, size_t offset, uint32_t length, RemoteBuffer to) override {
    NDK_SGE sge = local(offset, length);
    return posted("NdkWrite", qp_->Dispatch->NdkWrite(qp_, context(id), &sge, 1, to.address, to.stag, 0));
  }
  bool read(uint64_t id, size_t offset, uint32_t length, RemoteBuffer from) override {
    NDK_SGE sge = local(offset, length);
    return posted("NdkRead", qp_->Dispatch->NdkRead(qp_, context(id), &sge, 1, from.address, from.stag, 0));
  }

  std::optional<Completion> poll(std::chrono::milliseconds limit) override {
    const auto end = std::chrono::steady_clock::now() + limit;
    do {
      NDK_RESULT_EX r{};
      if (cq_->Dispatch->NdkGetCqResultsEx(cq_, &r, 1) == 1) return completion_of(r);
      std::this_thread::sleep_for(50us);
    } while (std::chrono::steady_clock::now() < end);
    error_ = "no completion in time";
    return std::nullopt;
  }

  void arm_solicited() override { cq_->Dispatch->NdkArmCq(cq_, NDK_CQ_NOTIFY_SOLICITED); }
  int notifications() override { return notifications_.load(); }

  // Once disconnected, flushes the QP as an NDK consumer does: the provider does not on a
  // disconnect its peer started (R103).
  bool wait_disconnected(std::chrono::milliseconds limit) override {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (disconnects_.count.load() == 0) {
      if (std::chrono::steady_clock::now() >= end) return false;
      std::this_thread::sleep_for(1ms);
    }
    qp_->Dispatch->NdkFlush(qp_);
    return true;
  }
  void disconnect() override {
    Waiter done;
    done.wait(connector_->Dispatch->NdkDisconnect(connector_, &Waiter::on_request, &done));
  }

 private:
  bool ready() {
    if (adapter_ == nullptr || qp_ == nullptr || mr_ == nullptr) {
      if (error_.empty()) error_ = "the NDK end was not created";
      return false;
    }
    return true;
  }
  bool fail(const char* what, NTSTATUS s) {
    error_ = std::string(what) + ": " + hex(s);
    return false;
  }
  bool posted(const char* what, NTSTATUS s) { return s == STATUS_SUCCESS || fail(what, s); }

  static PVOID context(uint64_t id) { return reinterpret_cast<PVOID>(static_cast<uintptr_t>(id)); }
  NDK_SGE local(size_t offset, uint32_t length) {
    NDK_SGE sge{};
    sge.VirtualAddress = buffer_.data() + offset;
    sge.Length = length;
    sge.MemoryRegionToken = mr_->Dispatch->NdkGetLocalTokenFromMr(mr_);
    return sge;
  }

  static Completion completion_of(const NDK_RESULT_EX& r) {
    Completion c;
    c.ok = r.Status == STATUS_SUCCESS;
    c.status = hex(r.Status);
    c.id = reinterpret_cast<uintptr_t>(r.RequestContext);
    c.bytes = r.BytesTransferred;
    switch (r.Type) {
      case NdkOperationTypeSend: c.op = Op::Send; break;
      case NdkOperationTypeReceive: c.op = Op::Receive; break;
      case NdkOperationTypeReceiveAndInvalidate:
        c.op = Op::Receive;
        c.invalidated = static_cast<uint32_t>(r.TypeSpecificCompletionOutput);
        break;
      case NdkOperationTypeWrite: c.op = Op::Write; break;
      case NdkOperationTypeRead: c.op = Op::Read; break;
      case NdkOperationTypeBind: c.op = Op::Bind; break;
      default: c.op = Op::Other; break;
    }
    return c;
  }

  static void on_notification(PVOID context, NTSTATUS) { ++static_cast<NdkEnd*>(context)->notifications_; }

  std::vector<unsigned char> buffer_;
  NDK_ADAPTER* adapter_ = nullptr;
  NDK_CQ* cq_ = nullptr;
  NDK_PD* pd_ = nullptr;
  NDK_QP* qp_ = nullptr;
  NDK_MR* mr_ = nullptr;
  NDK_MW* mw_ = nullptr;
  PMDL mdl_ = nullptr;
  NDK_LISTENER* listener_ = nullptr;
  NDK_CONNECTOR* connector_ = nullptr;
  e2e::Incoming incoming_;
  e2e::Disconnects disconnects_;
  Waiter connected_, accepted_;
  std::atomic<int> notifications_{0};
};

}  // namespace

std::unique_ptr<Endpoint> make_ndk_end() { return std::make_unique<NdkEnd>(); }

}  // namespace interop
