// A connection between two connectors of one process. Establishment events are forwarded
// to the other side's connector; the data path calls the peer QP's core directly, so a
// write or read lands in the target's memory with nobody on the target side polling.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "fabric/connection.hpp"

namespace softndk::fabric::inproc {

class InprocConnection final : public Connection,
                               public std::enable_shared_from_this<InprocConnection> {
 public:
  InprocConnection(const SockAddr& active_address, const SockAddr& passive_address,
                   ConnectorEvents* active);

  NTSTATUS request(ULONG inbound_limit, ULONG outbound_limit,
                   std::span<const uint8_t> private_data) override;
  void attach_passive(ConnectorEvents* passive) override;

  SockAddr local_address(Side side) const override { return addresses_[side]; }
  SockAddr remote_address(Side side) const override { return addresses_[1 - side]; }

  void accept(QpEndpoint* qp, ULONG inbound_limit, ULONG outbound_limit,
              std::span<const uint8_t> private_data) override;
  void reject(Side side, std::span<const uint8_t> private_data) override;
  void complete(QpEndpoint* qp) override;
  void disconnect(Side side) override;
  void terminate(Side side, NTSTATUS status) override;
  void detach(Side side) override;

  // Every request runs to completion here: `fence` holds trivially.
  NTSTATUS send(Side side, const ExtentList& data, bool solicited, bool invalidate,
                uint32_t token, ULONG flags) override;
  NTSTATUS write(Side side, const ExtentList& data, uint32_t token, uint64_t address,
                 ULONG flags) override;
  NTSTATUS read(Side side, const ExtentList& into, uint32_t token, uint64_t address,
                ULONG flags) override;
  NTSTATUS local(Side, ULONG) override { return STATUS_SUCCESS; }  // nothing is ever outstanding
  void start_deferred(Side) override {}  // DEFER holds nothing here: every request runs at once

 private:
  // Delivers an event to `to`'s connector, pinned, outside the lock.
  template <class F>
  void forward(Side to, F&& deliver);
  // Stops the data path and waits for operations in flight to leave it (they are
  // bounded copies), so no peer QP is reached after it may be destroyed.
  void close_data_path();
  // The peer QP of `side` for one operation, or null when the data path is closed.
  QpEndpoint* enter(Side side);
  void leave() { inflight_.fetch_sub(1, std::memory_order_release); }
  // Where a tagged access's target memory is listed: one list per side, because each
  // side's initiator queue is used by one thread at a time (R067), and kept here so the
  // data path allocates nothing and keeps the stack small.
  ExtentList& scratch(Side side) { return *scratch_[side]; }

  const SockAddr addresses_[2];
  std::mutex mutex_;
  ConnectorEvents* sides_[2];
  QpEndpoint* qps_[2] = {nullptr, nullptr};
  bool ended_ = false;  // disconnected or terminated: the data path stays closed
  std::atomic<bool> open_{false};
  std::atomic<uint32_t> inflight_{0};
  std::unique_ptr<ExtentList> scratch_[2] = {std::make_unique<ExtentList>(), std::make_unique<ExtentList>()};
};

}  // namespace softndk::fabric::inproc
