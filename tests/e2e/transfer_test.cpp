// End to end on the in-process fabric, through the public headers only: two hosts, two
// adapters, a listener, a connection, then sends, RDMA writes and reads with every byte
// checked, the classic failures, and a clean teardown. Run in every completion mode.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "e2e.hpp"
#include "ndk/ndkpi.h"
#include "ndk/softndk.h"

namespace {

using namespace std::chrono_literals;

using namespace e2e;

class Transfer : public LinkFixture<std::tuple<SOFTNDK_COMPLETION_MODE, bool>> {
 protected:
  void SetUp() override {
    static std::atomic<int> unique{0};
    int n = ++unique;
    bool v6 = std::get<1>(GetParam());
    server_address_ = v6 ? ipv6(("2001:db8:1::" + std::to_string(n)).c_str(), 445)
                         : ipv4(("192.0.2." + std::to_string(n)).c_str(), 445);
    client_address_ = v6 ? ipv6(("2001:db8:2::" + std::to_string(n)).c_str(), 0)
                         : ipv4(("198.51.100." + std::to_string(n)).c_str(), 0);
    ASSERT_EQ(SoftNdkCreateInprocHost("server", &server_address_, 1, &server_host_), STATUS_SUCCESS);
    ASSERT_EQ(SoftNdkCreateInprocHost("client", &client_address_, 1, &client_host_), STATUS_SUCCESS);
    auto mode = std::get<0>(GetParam());
    ULONG flags = NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ | NDK_MR_FLAG_ALLOW_REMOTE_WRITE;
    server_.open(server_host_, mode, flags);
    client_.open(client_host_, mode, flags);
  }
  void TearDown() override {
    close_link();
    SoftNdkDestroyInprocHost(server_host_);
    SoftNdkDestroyInprocHost(client_host_);
  }

  ULONG server_host_ = 0, client_host_ = 0;
};

TEST_P(Transfer, ConnectsSendsWritesReadsWithEveryByteInPlace) {
  ASSERT_NO_FATAL_FAILURE(connect());
  // Addresses: the passive side reports the listener's address (R197).
  SOCKADDR_STORAGE a{};
  ULONG a_length = sizeof(a);
  ASSERT_EQ(server_connector_->Dispatch->NdkGetLocalAddress(server_connector_, reinterpret_cast<PSOCKADDR>(&a), &a_length),
            STATUS_SUCCESS);
  EXPECT_EQ(a_length, length_of(server_address_));
  EXPECT_EQ(std::memcmp(&a, &server_address_, a_length), 0);

  // Send / receive, 3 SGEs into 2.
  for (size_t i = 0; i < 3000; ++i) client_.buffer[i] = static_cast<unsigned char>(i * 7 + 1);
  NDK_SGE into[2] = {server_.sge(0, 1000), server_.sge(5000, 4000)};
  ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, &into, into, 2), STATUS_SUCCESS);
  NDK_SGE from[3] = {client_.sge(0, 1000), client_.sge(1000, 1000), client_.sge(2000, 1000)};
  ASSERT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, &from, from, 3, NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT), STATUS_SUCCESS);
  auto sent = client_.poll(1);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(sent[0].Type, NdkOperationTypeSend);
  EXPECT_EQ(sent[0].RequestContext, &from);
  EXPECT_EQ(sent[0].QPContext, &client_);
  auto received = server_.poll(1);
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(received[0].Type, NdkOperationTypeReceive);
  EXPECT_EQ(received[0].BytesTransferred, 3000u);
  EXPECT_EQ(std::memcmp(server_.buffer.data(), client_.buffer.data(), 1000), 0);
  EXPECT_EQ(std::memcmp(server_.buffer.data() + 5000, client_.buffer.data() + 1000, 2000), 0);

  // RDMA write of 256 KiB, completed while the server makes no call at all.
  const size_t kWrite = 256 * 1024;
  for (size_t i = 0; i < kWrite; ++i) client_.buffer[100000 + i] = static_cast<unsigned char>(i % 251);
  NDK_SGE w = client_.sge(100000, kWrite);
  ASSERT_EQ(client_.qp->Dispatch->NdkWrite(client_.qp, &w, &w, 1, server_.address(300000), server_.remote_token(), 0),
            STATUS_SUCCESS);
  auto wrote = client_.poll(1);
  ASSERT_EQ(wrote.size(), 1u);
  EXPECT_EQ(wrote[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(wrote[0].Type, NdkOperationTypeWrite);
  EXPECT_EQ(std::memcmp(server_.buffer.data() + 300000, client_.buffer.data() + 100000, kWrite), 0);

  // RDMA read back into another place, silent success: no completion.
  NDK_SGE r = client_.sge(600000, kWrite);
  ASSERT_EQ(client_.qp->Dispatch->NdkRead(client_.qp, &r, &r, 1, server_.address(300000), server_.remote_token(),
                                          NDK_OP_FLAG_SILENT_SUCCESS),
            STATUS_SUCCESS);
  EXPECT_EQ(std::memcmp(client_.buffer.data() + 600000, client_.buffer.data() + 100000, kWrite), 0);
  NDK_RESULT none[1];
  EXPECT_EQ(client_.cq->Dispatch->NdkGetCqResults(client_.cq, none, 1), 0u);

  // Inline send: the buffer may change right after the call.
  char text[] = "inline bytes";
  NDK_SGE in_line{};
  in_line.VirtualAddress = text;
  in_line.Length = sizeof(text);
  NDK_SGE one = server_.sge(9000, 64);
  ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, nullptr, &one, 1), STATUS_SUCCESS);
  ASSERT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, nullptr, &in_line, 1, NDK_OP_FLAG_INLINE), STATUS_SUCCESS);
  std::memset(text, 'x', sizeof(text));
  ASSERT_EQ(server_.poll(1).size(), 1u);
  EXPECT_STREQ(reinterpret_cast<char*>(server_.buffer.data() + 9000), "inline bytes");
  client_.poll(1);

  // Graceful disconnect: the server is told, the client's QP is flushed.
  Waiter disconnected;
  ASSERT_EQ(disconnected.wait(client_connector_->Dispatch->NdkDisconnect(client_connector_, &Waiter::on_request, &disconnected)),
            STATUS_SUCCESS);
  for (int i = 0; i < 500 && server_disconnects_.count == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(server_disconnects_.count, 1);
  EXPECT_EQ(server_disconnects_.reason, 0u);
  EXPECT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, nullptr, from, 1, 0), STATUS_CONNECTION_INVALID);
}

TEST_P(Transfer, RemoteAccessViolationsFailTheRequestAndTerminate) {
  ASSERT_NO_FATAL_FAILURE(connect());
  NDK_SGE into = server_.sge(0, 64);
  ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, &into, &into, 1), STATUS_SUCCESS);
  // A write past the end of the server's region.
  NDK_SGE w = client_.sge(0, 64);
  ASSERT_EQ(client_.qp->Dispatch->NdkWrite(client_.qp, nullptr, &w, 1, server_.address(server_.buffer.size() - 32),
                                           server_.remote_token(), 0),
            STATUS_SUCCESS);
  auto results = client_.poll(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].Status, STATUS_REMOTE_RESOURCES);
  // The connection is gone: the server's posted receive is flushed, it hears of it.
  auto flushed = server_.poll(1);
  ASSERT_EQ(flushed.size(), 1u);
  EXPECT_EQ(flushed[0].Status, STATUS_CANCELLED);
  EXPECT_EQ(flushed[0].RequestContext, &into);
  for (int i = 0; i < 500 && server_disconnects_.count == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(server_disconnects_.count, 1);
  EXPECT_EQ(server_disconnects_.reason, static_cast<ULONG>(STATUS_REMOTE_RESOURCES));
  EXPECT_EQ(client_.qp->Dispatch->NdkWrite(client_.qp, nullptr, &w, 1, server_.address(0), server_.remote_token(), 0),
            STATUS_CONNECTION_INVALID);
}

TEST_P(Transfer, BadTokenAndSendWithoutReceiveEndTheConnection) {
  ASSERT_NO_FATAL_FAILURE(connect());
  NDK_SGE w = client_.sge(0, 8);
  ASSERT_EQ(client_.qp->Dispatch->NdkRead(client_.qp, nullptr, &w, 1, server_.address(0), server_.remote_token() ^ 0x5a5a, 0),
            STATUS_SUCCESS);
  auto results = client_.poll(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].Status, STATUS_ACCESS_VIOLATION);
}

TEST_P(Transfer, SendWithoutPostedReceiveTerminates) {
  ASSERT_NO_FATAL_FAILURE(connect());
  NDK_SGE s = client_.sge(0, 8);
  ASSERT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, nullptr, &s, 1, 0), STATUS_SUCCESS);
  auto results = client_.poll(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].Status, STATUS_REMOTE_RESOURCES);
  for (int i = 0; i < 500 && server_disconnects_.count == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(server_disconnects_.count, 1);
}

TEST_P(Transfer, ReceiveTooSmallFailsBothSides) {
  ASSERT_NO_FATAL_FAILURE(connect());
  NDK_SGE small = server_.sge(0, 16);
  ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, nullptr, &small, 1), STATUS_SUCCESS);
  NDK_SGE big = client_.sge(0, 64);
  ASSERT_EQ(client_.qp->Dispatch->NdkSend(client_.qp, nullptr, &big, 1, 0), STATUS_SUCCESS);
  auto sent = client_.poll(1);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].Status, STATUS_BUFFER_OVERFLOW);
  auto received = server_.poll(1);
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].Status, STATUS_BUFFER_OVERFLOW);
}

TEST_P(Transfer, RejectCarriesPrivateDataAndNobodyListeningIsRefused) {
  client_connector_ = new_connector(client_);
  Waiter refused;
  NTSTATUS s = refused.wait(client_connector_->Dispatch->NdkConnect(
      client_connector_, client_.qp, reinterpret_cast<PSOCKADDR>(&client_address_), length_of(client_address_),
      reinterpret_cast<PSOCKADDR>(&server_address_), length_of(server_address_), 1, 1, nullptr, 0, &Waiter::on_request,
      &refused));
  EXPECT_EQ(s, STATUS_CONNECTION_REFUSED);  // nobody listening (R160)

  ASSERT_NO_FATAL_FAILURE(listen());
  Waiter rejected;
  ASSERT_EQ(client_connector_->Dispatch->NdkConnect(
                client_connector_, client_.qp, reinterpret_cast<PSOCKADDR>(&client_address_), length_of(client_address_),
                reinterpret_cast<PSOCKADDR>(&server_address_), length_of(server_address_), 1, 1, nullptr, 0,
                &Waiter::on_request, &rejected),
            STATUS_PENDING);
  server_connector_ = incoming_.next();
  ASSERT_NE(server_connector_, nullptr);
  const char no[] = "go away";
  EXPECT_EQ(server_connector_->Dispatch->NdkReject(server_connector_, const_cast<char*>(no), sizeof(no)), STATUS_SUCCESS);
  EXPECT_EQ(rejected.wait(STATUS_PENDING), STATUS_CONNECTION_REFUSED);  // R166
  char got[16] = {};
  ULONG got_length = sizeof(got);
  EXPECT_EQ(client_connector_->Dispatch->NdkGetConnectionData(client_connector_, nullptr, nullptr, got, &got_length),
            STATUS_SUCCESS);
  EXPECT_STREQ(got, no);
}

// Posts an initiator request and returns its completion status (polling the CQ).
template <class Post>
NTSTATUS run(Side& side, Post&& post) {
  NTSTATUS posted = post();
  if (posted != STATUS_SUCCESS) return posted;
  auto results = side.poll(1);
  return results.empty() ? STATUS_IO_TIMEOUT : results[0].Status;
}

TEST_P(Transfer, R146_R148_WindowGrantsItsRangeAndRightsOnly) {
  ASSERT_NO_FATAL_FAILURE(connect());
  NDK_PD* pd = server_.pd;
  NDK_MW* mw = create<NDK_MW>([&](auto cb, auto ctx, NDK_MW** out) { return pd->Dispatch->NdkCreateMw(pd, cb, ctx, out); });
  ASSERT_NE(mw, nullptr);
  for (size_t i = 0; i < 8192; ++i) server_.buffer[4096 + i] = static_cast<unsigned char>(i * 13);
  // A read-only window over 8 KiB of the server's region.
  EXPECT_EQ(run(server_, [&] {
              return server_.qp->Dispatch->NdkBind(server_.qp, nullptr, server_.mr, mw,
                                                   reinterpret_cast<PVOID>(server_.address(4096)), 8192,
                                                   NDK_OP_FLAG_ALLOW_REMOTE_READ);
            }),
            STATUS_SUCCESS);
  UINT32 token = mw->Dispatch->NdkGetRemoteTokenFromMw(mw);
  NDK_SGE r = client_.sge(0, 8192);
  EXPECT_EQ(run(client_, [&] { return client_.qp->Dispatch->NdkRead(client_.qp, nullptr, &r, 1, server_.address(4096), token, 0); }),
            STATUS_SUCCESS);
  EXPECT_EQ(std::memcmp(client_.buffer.data(), server_.buffer.data() + 4096, 8192), 0);
  // Writing into the read-only window fails and ends the connection.
  NDK_SGE w = client_.sge(0, 16);
  EXPECT_EQ(run(client_, [&] { return client_.qp->Dispatch->NdkWrite(client_.qp, nullptr, &w, 1, server_.address(4096), token, 0); }),
            STATUS_ACCESS_VIOLATION);
  close(mw);
}

TEST_P(Transfer, R145_WindowPastItsEndAndInvalidatedWindowRefuseAccess) {
  ASSERT_NO_FATAL_FAILURE(connect());
  NDK_PD* pd = server_.pd;
  NDK_MW* mw = create<NDK_MW>([&](auto cb, auto ctx, NDK_MW** out) { return pd->Dispatch->NdkCreateMw(pd, cb, ctx, out); });
  ASSERT_EQ(run(server_, [&] {
              return server_.qp->Dispatch->NdkBind(server_.qp, nullptr, server_.mr, mw,
                                                   reinterpret_cast<PVOID>(server_.address(0)), 4096,
                                                   NDK_OP_FLAG_ALLOW_REMOTE_READ | NDK_OP_FLAG_ALLOW_REMOTE_WRITE);
            }),
            STATUS_SUCCESS);
  UINT32 token = mw->Dispatch->NdkGetRemoteTokenFromMw(mw);
  ASSERT_EQ(run(server_, [&] { return server_.qp->Dispatch->NdkInvalidate(server_.qp, nullptr, &mw->Header, 0); }),
            STATUS_SUCCESS);
  // Invalidating it again fails inline (R145).
  EXPECT_EQ(server_.qp->Dispatch->NdkInvalidate(server_.qp, nullptr, &mw->Header, 0), STATUS_INVALID_DEVICE_STATE);
  NDK_SGE w = client_.sge(0, 16);
  EXPECT_EQ(run(client_, [&] { return client_.qp->Dispatch->NdkWrite(client_.qp, nullptr, &w, 1, server_.address(0), token, 0); }),
            STATUS_ACCESS_VIOLATION);
  close(mw);
}

TEST_P(Transfer, R141_R144_FastRegisteredLamPagesReceiveWritesAndRemoteInvalidation) {
  ASSERT_NO_FATAL_FAILURE(connect());
  // Server: a fast-register MR over pages of a LAM built from an MDL.
  NDK_PD* pd = server_.pd;
  NDK_MR* frmr = create<NDK_MR>([&](auto cb, auto ctx, NDK_MR** out) { return pd->Dispatch->NdkCreateMr(pd, TRUE, cb, ctx, out); });
  ASSERT_NE(frmr, nullptr);
  Waiter initialized;
  ASSERT_EQ(initialized.wait(frmr->Dispatch->NdkInitializeFastRegisterMr(frmr, 8, TRUE, &Waiter::on_request, &initialized)),
            STATUS_SUCCESS);
  std::vector<unsigned char> target(5 * PAGE_SIZE, 0);
  unsigned char* start = target.data() + 100;
  PMDL mdl = IoAllocateMdl(start, static_cast<ULONG>(3 * PAGE_SIZE), FALSE, FALSE, nullptr);
  MmBuildMdlForNonPagedPool(mdl);
  alignas(8) unsigned char lam_storage[256];
  auto* lam = reinterpret_cast<NDK_LOGICAL_ADDRESS_MAPPING*>(lam_storage);
  ULONG lam_size = sizeof(lam_storage), fbo = 0;
  Waiter built;
  ASSERT_EQ(built.wait(server_.adapter->Dispatch->NdkBuildLAM(server_.adapter, mdl, 3 * PAGE_SIZE, &Waiter::on_request,
                                                               &built, lam, &lam_size, &fbo)),
            STATUS_SUCCESS);
  ASSERT_EQ(fbo, reinterpret_cast<uintptr_t>(start) % PAGE_SIZE);
  uint64_t base = reinterpret_cast<uintptr_t>(start);
  ASSERT_EQ(run(server_, [&] {
              return server_.qp->Dispatch->NdkFastRegister(server_.qp, nullptr, frmr, lam->AdapterPageCount,
                                                           lam->AdapterPageArray, fbo, 3 * PAGE_SIZE,
                                                           reinterpret_cast<PVOID>(base),
                                                           NDK_OP_FLAG_ALLOW_REMOTE_WRITE | NDK_OP_FLAG_ALLOW_REMOTE_READ);
            }),
            STATUS_SUCCESS);
  UINT32 token = frmr->Dispatch->NdkGetRemoteTokenFromMr(frmr);
  ASSERT_NE(token, 0u);
  for (size_t i = 0; i < 3 * PAGE_SIZE; ++i) client_.buffer[i] = static_cast<unsigned char>(i * 3 + 5);
  NDK_SGE w = client_.sge(0, static_cast<ULONG>(3 * PAGE_SIZE));
  ASSERT_EQ(run(client_, [&] { return client_.qp->Dispatch->NdkWrite(client_.qp, nullptr, &w, 1, base, token, 0); }),
            STATUS_SUCCESS);
  EXPECT_EQ(std::memcmp(start, client_.buffer.data(), 3 * PAGE_SIZE), 0);

  // Send with invalidate: the server's receive says which token went away (R096).
  NDK_SGE into = server_.sge(0, 64);
  ASSERT_EQ(server_.qp->Dispatch->NdkReceive(server_.qp, nullptr, &into, 1), STATUS_SUCCESS);
  NDK_SGE s = client_.sge(0, 8);
  ASSERT_EQ(run(client_, [&] { return client_.qp->Dispatch->NdkSendAndInvalidate(client_.qp, nullptr, &s, 1, 0, token); }),
            STATUS_SUCCESS);
  auto received = server_.poll(1);
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].Status, STATUS_SUCCESS);
  EXPECT_EQ(received[0].Type, NdkOperationTypeReceiveAndInvalidate);
  EXPECT_EQ(received[0].TypeSpecificCompletionOutput, token);
  // The region is invalid now: a local invalidate fails (R098), a remote access too.
  EXPECT_EQ(server_.qp->Dispatch->NdkInvalidate(server_.qp, nullptr, &frmr->Header, 0), STATUS_INVALID_DEVICE_STATE);
  EXPECT_EQ(run(client_, [&] { return client_.qp->Dispatch->NdkRead(client_.qp, nullptr, &w, 1, base, token, 0); }),
            STATUS_ACCESS_VIOLATION);
  server_.adapter->Dispatch->NdkReleaseLAM(server_.adapter, lam);
  IoFreeMdl(mdl);
  close(frmr);
}

TEST_P(Transfer, R162_R196_SharedEndpointConnectsOncePerDestination) {
  ASSERT_NO_FATAL_FAILURE(listen());
  NDK_ADAPTER* c = client_.adapter;
  SOCKADDR_INET any_port = client_address_;
  NDK_SHARED_ENDPOINT* endpoint = create<NDK_SHARED_ENDPOINT>([&](auto cb, auto ctx, NDK_SHARED_ENDPOINT** out) {
    return c->Dispatch->NdkCreateSharedEndpoint(c, reinterpret_cast<PSOCKADDR>(&any_port), length_of(any_port), cb, ctx,
                                               out);
  });
  ASSERT_NE(endpoint, nullptr);
  NDK_QP* second_qp = create<NDK_QP>([&](auto cb, auto ctx, NDK_QP** out) {
    return client_.pd->Dispatch->NdkCreateQp(client_.pd, client_.cq, client_.cq, nullptr, 4, 4, 1, 1, 0, cb, ctx, out);
  });
  NDK_CONNECTOR* second = new_connector(client_);
  client_connector_ = new_connector(client_);
  Waiter first;
  ASSERT_EQ(client_connector_->Dispatch->NdkConnectWithSharedEndpoint(
                client_connector_, client_.qp, endpoint, reinterpret_cast<PSOCKADDR>(&server_address_),
                length_of(server_address_), 1, 1, nullptr, 0, &Waiter::on_request, &first),
            STATUS_PENDING);
  server_connector_ = incoming_.next();
  ASSERT_NE(server_connector_, nullptr);
  // The same destination through the same endpoint: refused (R162).
  Waiter duplicate;
  EXPECT_EQ(duplicate.wait(second->Dispatch->NdkConnectWithSharedEndpoint(
                second, second_qp, endpoint, reinterpret_cast<PSOCKADDR>(&server_address_), length_of(server_address_),
                1, 1, nullptr, 0, &Waiter::on_request, &duplicate)),
            STATUS_ADDRESS_ALREADY_EXISTS);
  // The connector's local address is the endpoint's.
  SOCKADDR_STORAGE mine{}, shared{};
  ULONG mine_length = sizeof(mine), shared_length = sizeof(shared);
  ASSERT_EQ(endpoint->Dispatch->NdkGetLocalAddress(endpoint, reinterpret_cast<PSOCKADDR>(&shared), &shared_length),
            STATUS_SUCCESS);
  ASSERT_EQ(client_connector_->Dispatch->NdkGetLocalAddress(client_connector_, reinterpret_cast<PSOCKADDR>(&mine),
                                                            &mine_length),
            STATUS_SUCCESS);
  EXPECT_EQ(mine_length, shared_length);
  EXPECT_EQ(std::memcmp(&mine, &shared, mine_length), 0);
  // Closing the endpoint waits for the connector connected through it (R196).
  Waiter endpoint_closed;
  EXPECT_EQ(endpoint->Dispatch->NdkCloseSharedEndpoint(&endpoint->Header, &Waiter::on_close, &endpoint_closed),
            STATUS_PENDING);
  EXPECT_EQ(server_connector_->Dispatch->NdkReject(server_connector_, nullptr, 0), STATUS_SUCCESS);
  EXPECT_EQ(first.wait(STATUS_PENDING), STATUS_CONNECTION_REFUSED);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(endpoint_closed.calls, 0);
  close(client_connector_);
  EXPECT_EQ(endpoint_closed.wait(STATUS_PENDING), STATUS_SUCCESS);
  close(second);
  close(second_qp);
}

TEST_P(Transfer, R160_R165_UnansweredConnectAndUncompletedAcceptTimeOut) {
  ASSERT_EQ(SoftNdkSetTunable("connect_timeout_ms", "150"), STATUS_SUCCESS);
  ASSERT_NO_FATAL_FAILURE(listen());
  client_connector_ = new_connector(client_);
  // Nobody answers the request: the Connect times out; a late Accept finds the peer gone.
  Waiter unanswered;
  ASSERT_EQ(client_connector_->Dispatch->NdkConnect(
                client_connector_, client_.qp, reinterpret_cast<PSOCKADDR>(&client_address_), length_of(client_address_),
                reinterpret_cast<PSOCKADDR>(&server_address_), length_of(server_address_), 1, 1, nullptr, 0,
                &Waiter::on_request, &unanswered),
            STATUS_PENDING);
  NDK_CONNECTOR* late = incoming_.next();
  ASSERT_NE(late, nullptr);
  EXPECT_EQ(unanswered.wait(STATUS_PENDING), STATUS_IO_TIMEOUT);
  Waiter late_accept;
  EXPECT_EQ(late_accept.wait(late->Dispatch->NdkAccept(late, server_.qp, 1, 1, nullptr, 0, nullptr, nullptr,
                                                       &Waiter::on_request, &late_accept)),
            STATUS_CONNECTION_ABORTED);
  close(late);
  close(client_connector_);

  // The active side never completes: the Accept times out (R165), CompleteConnect is late.
  client_connector_ = new_connector(client_);
  NDK_QP* qp2 = create<NDK_QP>([&](auto cb, auto ctx, NDK_QP** out) {
    return client_.pd->Dispatch->NdkCreateQp(client_.pd, client_.cq, client_.cq, nullptr, 4, 4, 1, 1, 0, cb, ctx, out);
  });
  NDK_QP* server_qp2 = create<NDK_QP>([&](auto cb, auto ctx, NDK_QP** out) {
    return server_.pd->Dispatch->NdkCreateQp(server_.pd, server_.cq, server_.cq, nullptr, 4, 4, 1, 1, 0, cb, ctx, out);
  });
  Waiter answered;
  ASSERT_EQ(client_connector_->Dispatch->NdkConnect(
                client_connector_, qp2, reinterpret_cast<PSOCKADDR>(&client_address_), length_of(client_address_),
                reinterpret_cast<PSOCKADDR>(&server_address_), length_of(server_address_), 1, 1, nullptr, 0,
                &Waiter::on_request, &answered),
            STATUS_PENDING);
  server_connector_ = incoming_.next();
  ASSERT_NE(server_connector_, nullptr);
  Waiter accepted;
  ASSERT_EQ(server_connector_->Dispatch->NdkAccept(server_connector_, server_qp2, 1, 1, nullptr, 0, nullptr, nullptr,
                                                   &Waiter::on_request, &accepted),
            STATUS_PENDING);
  EXPECT_EQ(answered.wait(STATUS_PENDING), STATUS_SUCCESS);
  EXPECT_EQ(accepted.wait(STATUS_PENDING), STATUS_IO_TIMEOUT);
  Waiter completed;
  EXPECT_EQ(completed.wait(client_connector_->Dispatch->NdkCompleteConnect(client_connector_, nullptr, nullptr,
                                                                           &Waiter::on_request, &completed)),
            STATUS_CONNECTION_ABORTED);
  close(client_connector_);
  close(server_connector_);
  close(qp2);
  close(server_qp2);
  SoftNdkResetTunables();
}

// R124, R125: moderation by count holds the notification until enough completions
// satisfied the arm; moderation by interval delays it by at most the interval.
TEST(CqModeration, R124_R125_CountAndIntervalDelayTheNotification) {
  NDK_ADAPTER* adapter = nullptr;
  SOFTNDK_OPEN_OPTIONS options{sizeof(options), SOFTNDK_FABRIC_INPROC, SOFTNDK_COMPLETION_INLINE, 0};
  ASSERT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{2, 0}, &options, &adapter), STATUS_SUCCESS);
  struct Notified {
    std::atomic<int> calls{0};
    static void on(PVOID c, NTSTATUS) { static_cast<Notified*>(c)->calls++; }
  } notified;
  NDK_CQ* cq = create<NDK_CQ>([&](auto cb, auto ctx, NDK_CQ** out) {
    return adapter->Dispatch->NdkCreateCq(adapter, 64, &Notified::on, &notified, nullptr, cb, ctx, out);
  });
  NDK_PD* pd = create<NDK_PD>([&](auto cb, auto ctx, NDK_PD** out) { return adapter->Dispatch->NdkCreatePd(adapter, cb, ctx, out); });
  NDK_QP* qp = create<NDK_QP>([&](auto cb, auto ctx, NDK_QP** out) {
    return pd->Dispatch->NdkCreateQp(pd, cq, cq, nullptr, 16, 16, 1, 1, 0, cb, ctx, out);
  });
  ASSERT_TRUE(cq && pd && qp);
  auto flush_n = [&](int n) {
    for (int i = 0; i < n; ++i) ASSERT_EQ(qp->Dispatch->NdkReceive(qp, nullptr, nullptr, 0), STATUS_SUCCESS);
    qp->Dispatch->NdkFlush(qp);
  };
  auto drain = [&] {
    NDK_RESULT r[16];
    while (cq->Dispatch->NdkGetCqResults(cq, r, 16) > 0) {
    }
  };
  EXPECT_EQ(cq->Dispatch->NdkControlCqInterruptModeration(cq, MAXULONG, MAXULONG), STATUS_INVALID_PARAMETER_MIX);  // R126
  EXPECT_EQ(cq->Dispatch->NdkControlCqInterruptModeration(cq, MAXULONG, 65), STATUS_INVALID_PARAMETER_MIX);
  // Count alone: three completions before the notification.
  ASSERT_EQ(cq->Dispatch->NdkControlCqInterruptModeration(cq, MAXULONG, 3), STATUS_SUCCESS);
  cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ANY);
  flush_n(2);
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(notified.calls, 0);
  flush_n(1);
  for (int i = 0; i < 500 && notified.calls == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(notified.calls, 1);
  drain();
  // Interval alone: one completion, notified after about 20 ms, not at once.
  ASSERT_EQ(cq->Dispatch->NdkControlCqInterruptModeration(cq, 20000, MAXULONG), STATUS_SUCCESS);
  cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ANY);
  auto start = std::chrono::steady_clock::now();
  flush_n(1);
  EXPECT_EQ(notified.calls, 1);
  for (int i = 0; i < 1000 && notified.calls == 1; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(notified.calls, 2);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 15ms);
  drain();
  // Off again: at once.
  ASSERT_EQ(cq->Dispatch->NdkControlCqInterruptModeration(cq, 0, 0), STATUS_SUCCESS);
  cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ANY);
  flush_n(1);
  for (int i = 0; i < 500 && notified.calls == 2; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(notified.calls, 3);
  close(qp);
  close(pd);
  close(cq);
  SoftNdkCloseAdapter(adapter);
}

// R116: more completions than the CQ holds put it in error: an armed notification says
// STATUS_BUFFER_OVERFLOW, nothing more is reported and its QPs refuse work.
TEST(CqOverflow, R116_OverrunCqReportsBufferOverflowAndItsQpsStop) {
  NDK_ADAPTER* adapter = nullptr;
  SOFTNDK_OPEN_OPTIONS options{sizeof(options), SOFTNDK_FABRIC_INPROC, SOFTNDK_COMPLETION_INLINE, 0};
  ASSERT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{2, 0}, &options, &adapter), STATUS_SUCCESS);
  struct Notified {
    std::atomic<int> calls{0};
    std::atomic<NTSTATUS> status{STATUS_PENDING};
    static void on(PVOID c, NTSTATUS s) {
      static_cast<Notified*>(c)->status = s;
      static_cast<Notified*>(c)->calls++;
    }
  } notified;
  NDK_CQ* cq = create<NDK_CQ>([&](auto cb, auto ctx, NDK_CQ** out) {
    return adapter->Dispatch->NdkCreateCq(adapter, 4, &Notified::on, &notified, nullptr, cb, ctx, out);
  });
  NDK_PD* pd = create<NDK_PD>([&](auto cb, auto ctx, NDK_PD** out) { return adapter->Dispatch->NdkCreatePd(adapter, cb, ctx, out); });
  NDK_QP* qp = create<NDK_QP>([&](auto cb, auto ctx, NDK_QP** out) {
    return pd->Dispatch->NdkCreateQp(pd, cq, cq, nullptr, 8, 8, 1, 1, 0, cb, ctx, out);
  });
  ASSERT_TRUE(cq && pd && qp);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(qp->Dispatch->NdkReceive(qp, nullptr, nullptr, 0), STATUS_SUCCESS);
  qp->Dispatch->NdkFlush(qp);  // five flushed receives into a CQ of four
  cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ERRORS);  // the overrun is reported to the arm
  for (int i = 0; i < 500 && notified.calls == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(notified.calls, 1);
  EXPECT_EQ(notified.status, STATUS_BUFFER_OVERFLOW);
  NDK_RESULT results[8];
  EXPECT_EQ(cq->Dispatch->NdkGetCqResults(cq, results, 8), 0u);
  EXPECT_EQ(qp->Dispatch->NdkReceive(qp, nullptr, nullptr, 0), STATUS_INVALID_DEVICE_STATE);
  close(qp);
  close(pd);
  close(cq);
  SoftNdkCloseAdapter(adapter);
}

// R007: an open that cannot get resources returns NDIS_STATUS_RESOURCES and no adapter.
TEST(Faults, R007_OpenWithoutResourcesFails) {
  ASSERT_EQ(SoftNdkInjectFault(nullptr, SOFTNDK_FAULT_OPEN, NDIS_STATUS_RESOURCES, 1), STATUS_SUCCESS);
  NDK_ADAPTER* adapter = nullptr;
  EXPECT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{1, 1}, nullptr, &adapter), NDIS_STATUS_RESOURCES);
  EXPECT_EQ(adapter, nullptr);
  ASSERT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{1, 1}, nullptr, &adapter), STATUS_SUCCESS);  // only once
  SoftNdkCloseAdapter(adapter);
}

// R117, R204: a fatal CQ or SRQ fault is reported as STATUS_INTERNAL_ERROR and leaves the
// CQ or SRQ, and the QPs using it, unusable.
TEST(Faults, R117_R204_FatalCqAndSrqErrors) {
  NDK_ADAPTER* adapter = nullptr;
  ASSERT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{2, 0}, nullptr, &adapter), STATUS_SUCCESS);
  struct Notified {
    std::atomic<int> calls{0};
    std::atomic<NTSTATUS> status{STATUS_PENDING};
    static void on(PVOID c, NTSTATUS s) {
      static_cast<Notified*>(c)->status = s;
      static_cast<Notified*>(c)->calls++;
    }
  } cq_notified, srq_notified;
  NDK_CQ* cq = create<NDK_CQ>([&](auto cb, auto ctx, NDK_CQ** out) {
    return adapter->Dispatch->NdkCreateCq(adapter, 16, &Notified::on, &cq_notified, nullptr, cb, ctx, out);
  });
  NDK_PD* pd = create<NDK_PD>([&](auto cb, auto ctx, NDK_PD** out) { return adapter->Dispatch->NdkCreatePd(adapter, cb, ctx, out); });
  NDK_SRQ* srq = create<NDK_SRQ>([&](auto cb, auto ctx, NDK_SRQ** out) {
    return pd->Dispatch->NdkCreateSrq(pd, 8, 1, 0, &Notified::on, &srq_notified, nullptr, cb, ctx, out);
  });
  NDK_QP* qp = create<NDK_QP>([&](auto cb, auto ctx, NDK_QP** out) {
    return pd->Dispatch->NdkCreateQp(pd, cq, cq, nullptr, 4, 4, 1, 1, 0, cb, ctx, out);
  });
  ASSERT_TRUE(cq && pd && srq && qp);
  cq->Dispatch->NdkArmCq(cq, NDK_CQ_NOTIFY_ERRORS);
  ASSERT_EQ(SoftNdkInjectFatalError(&cq->Header), STATUS_SUCCESS);
  ASSERT_EQ(SoftNdkInjectFatalError(&srq->Header), STATUS_SUCCESS);
  for (int i = 0; i < 500 && (cq_notified.calls == 0 || srq_notified.calls == 0); ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(cq_notified.status, STATUS_INTERNAL_ERROR);
  EXPECT_EQ(srq_notified.status, STATUS_INTERNAL_ERROR);
  EXPECT_EQ(qp->Dispatch->NdkReceive(qp, nullptr, nullptr, 0), STATUS_INVALID_DEVICE_STATE);
  EXPECT_EQ(srq->Dispatch->NdkSrqReceive(srq, nullptr, nullptr, 0), STATUS_INVALID_DEVICE_STATE);
  EXPECT_EQ(SoftNdkInjectFatalError(&pd->Header), STATUS_INVALID_PARAMETER);
  close(qp);
  close(srq);
  close(pd);
  close(cq);
  SoftNdkCloseAdapter(adapter);
}

std::string mode_name(const ::testing::TestParamInfo<Transfer::ParamType>& info) {
  std::string name = SoftNdkCompletionModeName(std::get<0>(info.param));
  name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
  return name + (std::get<1>(info.param) ? "_IPv6" : "_IPv4");
}

INSTANTIATE_TEST_SUITE_P(
    Inproc, Transfer,
    ::testing::Combine(::testing::Values(SOFTNDK_COMPLETION_INLINE, SOFTNDK_COMPLETION_CALLER_THREAD,
                                         SOFTNDK_COMPLETION_PROVIDER_THREAD, SOFTNDK_COMPLETION_MIXED),
                       ::testing::Bool()),
    mode_name);

}  // namespace
