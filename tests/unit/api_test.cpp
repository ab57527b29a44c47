// The SoftNDK entry points of ndk/softndk.h: enumeration, opening, in-process hosts,
// tunables, fault injection and names.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "ndk/softndk.h"

namespace {

SOCKADDR_INET v4(const char* ip) {
  SOCKADDR_INET a{};
  a.Ipv4.sin_family = AF_INET;
  inet_pton(AF_INET, ip, &a.Ipv4.sin_addr);
  return a;
}

SOCKADDR_INET v6(const char* ip) {
  SOCKADDR_INET a{};
  a.Ipv6.sin6_family = AF_INET6;
  inet_pton(AF_INET6, ip, &a.Ipv6.sin6_addr);
  return a;
}

class Api : public ::testing::Test {
 protected:
  void TearDown() override {
    for (ULONG i : hosts_) SoftNdkDestroyInprocHost(i);
    SoftNdkResetTunables();
  }
  ULONG host(const char* name, std::vector<SOCKADDR_INET> addresses) {
    ULONG index = 0;
    EXPECT_EQ(SoftNdkCreateInprocHost(name, addresses.data(), static_cast<ULONG>(addresses.size()), &index),
              STATUS_SUCCESS);
    hosts_.push_back(index);
    return index;
  }
  std::vector<ULONG> hosts_;
};

TEST_F(Api, EnumerationListsTheLoopbackHostAndNewHostsWithTheirAddresses) {
  ULONG index = host("api-enum", {v4("192.0.2.77"), v6("2001:db8::77")});
  ULONG count = 0;
  EXPECT_EQ(SoftNdkEnumerateAdapters(nullptr, &count), STATUS_BUFFER_TOO_SMALL);
  ASSERT_GE(count, 2u);
  std::vector<SOFTNDK_ADAPTER_DESCRIPTION> list(count);
  ULONG capacity = count;
  ASSERT_EQ(SoftNdkEnumerateAdapters(list.data(), &capacity), STATUS_SUCCESS);
  bool found_loopback = false, found_new = false, found_tcp_loopback = false;
  for (const auto& d : list) {
    ASSERT_TRUE(d.Fabric == SOFTNDK_FABRIC_INPROC || d.Fabric == SOFTNDK_FABRIC_TCP);
    if (d.Fabric == SOFTNDK_FABRIC_TCP) {
      // The host's own interfaces; loopback ("lo") with 127.0.0.1 always.
      for (ULONG i = 0; i < d.AddressCount; ++i)
        if (d.Addresses[i].si_family == AF_INET &&
            d.Addresses[i].Ipv4.sin_addr.s_addr == htonl(INADDR_LOOPBACK))
          found_tcp_loopback = true;
      continue;
    }
    if (d.IfIndex == 1) found_loopback = std::string(d.Name) == "inproc-lo" && d.AddressCount == 2;
    if (d.IfIndex == index) {
      found_new = std::string(d.Name) == "api-enum" && d.AddressCount == 2 &&
                  d.Addresses[0].si_family == AF_INET && d.Addresses[1].si_family == AF_INET6;
    }
  }
  EXPECT_TRUE(found_loopback);
  EXPECT_TRUE(found_new);
  EXPECT_TRUE(found_tcp_loopback);
  ULONG one = 1;
  EXPECT_EQ(SoftNdkEnumerateAdapters(list.data(), &one), STATUS_BUFFER_TOO_SMALL);
  EXPECT_EQ(one, count);
}

TEST_F(Api, OpensByInterfaceIndexAndByIpv4OrIpv6Address) {
  ULONG index = host("api-open", {v4("192.0.2.78"), v6("2001:db8::78")});
  NDK_ADAPTER* a = nullptr;
  ASSERT_EQ(SoftNdkOpenAdapter(index, NDK_VERSION{1, 1}, nullptr, &a), STATUS_SUCCESS);
  EXPECT_EQ(a->Header.ObjectType, NdkObjectTypeAdapter);
  EXPECT_EQ(a->Header.Version.Major, 1);
  EXPECT_EQ(a->Header.Version.Minor, 2);
  SoftNdkCloseAdapter(a);

  for (SOCKADDR_INET address : {v4("192.0.2.78"), v6("2001:db8::78")}) {
    NDK_ADAPTER* b = nullptr;
    ULONG length = address.si_family == AF_INET ? sizeof(SOCKADDR_IN) : sizeof(SOCKADDR_IN6);
    ASSERT_EQ(SoftNdkOpenAdapterByAddress(reinterpret_cast<SOCKADDR*>(&address), length, NDK_VERSION{2, 1},
                                          nullptr, &b),
              STATUS_SUCCESS);
    SoftNdkCloseAdapter(b);
  }
  SOCKADDR_INET nobody = v4("198.51.100.200");
  NDK_ADAPTER* c = nullptr;
  EXPECT_EQ(SoftNdkOpenAdapterByAddress(reinterpret_cast<SOCKADDR*>(&nobody), sizeof(SOCKADDR_IN),
                                        NDK_VERSION{1, 1}, nullptr, &c),
            STATUS_NOT_FOUND);
  EXPECT_EQ(c, nullptr);
}

TEST_F(Api, OpenRefusesUnknownInterfacesFabricsAndBadOptions) {
  NDK_ADAPTER* a = nullptr;
  EXPECT_EQ(SoftNdkOpenAdapter(987654, NDK_VERSION{1, 1}, nullptr, &a), STATUS_NOT_FOUND);
  SOFTNDK_OPEN_OPTIONS tcp{sizeof(tcp), SOFTNDK_FABRIC_TCP, SOFTNDK_COMPLETION_DEFAULT, 0};
  EXPECT_EQ(SoftNdkOpenAdapter(987654, NDK_VERSION{1, 1}, &tcp, &a), STATUS_NOT_FOUND);
  SOFTNDK_OPEN_OPTIONS shm{sizeof(shm), SOFTNDK_FABRIC_SHM, SOFTNDK_COMPLETION_DEFAULT, 0};
  EXPECT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{1, 1}, &shm, &a), STATUS_NOT_FOUND);  // not built yet
  SOFTNDK_OPEN_OPTIONS bad_mode{sizeof(bad_mode), SOFTNDK_FABRIC_INPROC, static_cast<SOFTNDK_COMPLETION_MODE>(9), 0};
  EXPECT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{1, 1}, &bad_mode, &a), STATUS_INVALID_PARAMETER);
  SOFTNDK_OPEN_OPTIONS short_size{4, SOFTNDK_FABRIC_INPROC, SOFTNDK_COMPLETION_DEFAULT, 0};
  EXPECT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{1, 1}, &short_size, &a), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{1, 1}, nullptr, nullptr), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(a, nullptr);
}

TEST_F(Api, CompletionModeComesFromOptionsElseFromTheTunable) {
  NDK_ADAPTER* a = nullptr;
  SOFTNDK_COMPLETION_MODE mode;
  ULONG64 seed = 0;
  ASSERT_EQ(SoftNdkSetTunable("completion_mode", "mixed"), STATUS_SUCCESS);
  ASSERT_EQ(SoftNdkSetTunable("completion_seed", "99"), STATUS_SUCCESS);
  ASSERT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{1, 1}, nullptr, &a), STATUS_SUCCESS);
  ASSERT_EQ(SoftNdkGetCompletionMode(a, &mode, &seed), STATUS_SUCCESS);
  EXPECT_EQ(mode, SOFTNDK_COMPLETION_MIXED);
  EXPECT_EQ(seed, 99u);
  SoftNdkCloseAdapter(a);
  SOFTNDK_OPEN_OPTIONS options{sizeof(options), SOFTNDK_FABRIC_INPROC, SOFTNDK_COMPLETION_PROVIDER_THREAD, 5};
  ASSERT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{1, 1}, &options, &a), STATUS_SUCCESS);
  ASSERT_EQ(SoftNdkGetCompletionMode(a, &mode, &seed), STATUS_SUCCESS);
  EXPECT_EQ(mode, SOFTNDK_COMPLETION_PROVIDER_THREAD);
  EXPECT_EQ(seed, 5u);
  SoftNdkCloseAdapter(a);
}

TEST_F(Api, InprocHostsOwnTheirAddressesExclusively) {
  ULONG index = host("api-own", {v4("192.0.2.79")});
  ULONG other = 0;
  SOCKADDR_INET same = v4("192.0.2.79");
  EXPECT_EQ(SoftNdkCreateInprocHost("api-dup", &same, 1, &other), STATUS_ADDRESS_ALREADY_EXISTS);
  SOCKADDR_INET any = v4("0.0.0.0");
  EXPECT_EQ(SoftNdkCreateInprocHost("api-any", &any, 1, &other), STATUS_INVALID_ADDRESS);
  EXPECT_EQ(SoftNdkCreateInprocHost(nullptr, &same, 1, &other), STATUS_INVALID_PARAMETER);
  std::string long_name(SOFTNDK_MAX_NAME, 'x');
  SOCKADDR_INET fresh = v4("192.0.2.80");
  EXPECT_EQ(SoftNdkCreateInprocHost(long_name.c_str(), &fresh, 1, &other), STATUS_INVALID_PARAMETER);

  NDK_ADAPTER* a = nullptr;
  ASSERT_EQ(SoftNdkOpenAdapter(index, NDK_VERSION{1, 1}, nullptr, &a), STATUS_SUCCESS);
  EXPECT_EQ(SoftNdkDestroyInprocHost(index), STATUS_INVALID_DEVICE_STATE);  // adapter open on it
  SoftNdkCloseAdapter(a);
  EXPECT_EQ(SoftNdkDestroyInprocHost(index), STATUS_SUCCESS);
  hosts_.clear();
  EXPECT_EQ(SoftNdkDestroyInprocHost(index), STATUS_NOT_FOUND);
  EXPECT_EQ(SoftNdkDestroyInprocHost(1), STATUS_NOT_FOUND);  // the loopback host stays
}

TEST_F(Api, TunablesAreListedSetReadAndRefused) {
  ULONG n = SoftNdkTunableCount();
  ASSERT_GT(n, 10u);
  bool saw_mode = false;
  for (ULONG i = 0; i < n; ++i) {
    SOFTNDK_TUNABLE_INFO info;
    ASSERT_EQ(SoftNdkDescribeTunable(i, &info), STATUS_SUCCESS);
    EXPECT_NE(info.Name, nullptr);
    EXPECT_NE(info.Help, nullptr);
    saw_mode |= std::string(info.Name) == "completion_mode";
  }
  EXPECT_TRUE(saw_mode);
  SOFTNDK_TUNABLE_INFO info;
  EXPECT_EQ(SoftNdkDescribeTunable(n, &info), STATUS_INVALID_PARAMETER);

  EXPECT_EQ(SoftNdkSetTunable("max_cq_depth", "128"), STATUS_SUCCESS);
  char text[8];
  ULONG length = 2;
  EXPECT_EQ(SoftNdkGetTunable("max_cq_depth", text, &length), STATUS_BUFFER_TOO_SMALL);
  EXPECT_EQ(length, 4u);
  EXPECT_EQ(SoftNdkGetTunable("max_cq_depth", text, &length), STATUS_SUCCESS);
  EXPECT_STREQ(text, "128");
  EXPECT_EQ(SoftNdkSetTunable("max_cq_depth", "lots"), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(SoftNdkSetTunable("no_such_knob", "1"), STATUS_NOT_FOUND);
  EXPECT_EQ(SoftNdkGetTunable("no_such_knob", text, &length), STATUS_NOT_FOUND);

  // A limit set through the API is what a new adapter reports (R211).
  NDK_ADAPTER* a = nullptr;
  ASSERT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{1, 1}, nullptr, &a), STATUS_SUCCESS);
  NDK_ADAPTER_INFO adapter_info{};
  ULONG size = sizeof(adapter_info);
  ASSERT_EQ(a->Dispatch->NdkQueryAdapterInfo(a, &adapter_info, &size), STATUS_SUCCESS);
  EXPECT_EQ(adapter_info.MaxCqDepth, 128u);
  SoftNdkCloseAdapter(a);
}

TEST_F(Api, FaultInjectionValidatesItsArguments) {
  NDK_ADAPTER* a = nullptr;
  ASSERT_EQ(SoftNdkOpenAdapter(1, NDK_VERSION{1, 1}, nullptr, &a), STATUS_SUCCESS);
  EXPECT_EQ(SoftNdkInjectFault(a, SOFTNDK_FAULT_CREATE, STATUS_SUCCESS, 1), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(SoftNdkInjectFault(nullptr, SOFTNDK_FAULT_CREATE, STATUS_INSUFFICIENT_RESOURCES, 1),
            STATUS_INVALID_PARAMETER);
  EXPECT_EQ(SoftNdkInjectFault(a, static_cast<SOFTNDK_FAULT_POINT>(7), STATUS_INSUFFICIENT_RESOURCES, 1),
            STATUS_INVALID_PARAMETER);
  ASSERT_EQ(SoftNdkInjectFault(a, SOFTNDK_FAULT_CREATE, STATUS_INSUFFICIENT_RESOURCES, 1), STATUS_SUCCESS);
  NDK_PD* pd = nullptr;
  auto ignore = [](PVOID, NTSTATUS, NDK_OBJECT_HEADER*) {};
  EXPECT_EQ(a->Dispatch->NdkCreatePd(a, ignore, nullptr, &pd), STATUS_INSUFFICIENT_RESOURCES);
  EXPECT_EQ(pd, nullptr);
  ASSERT_EQ(a->Dispatch->NdkCreatePd(a, ignore, nullptr, &pd), STATUS_SUCCESS);  // only once
  EXPECT_EQ(pd->Dispatch->NdkClosePd(&pd->Header, nullptr, nullptr), STATUS_SUCCESS);
  SoftNdkCloseAdapter(a);
}

TEST_F(Api, NamesOfStatusesModesAndObjectTypes) {
  EXPECT_STREQ(SoftNdkStatusName(STATUS_PENDING), "STATUS_PENDING");
  EXPECT_STREQ(SoftNdkStatusName(STATUS_CONNECTION_INVALID), "STATUS_CONNECTION_INVALID");
  EXPECT_STREQ(SoftNdkStatusName(NDIS_STATUS_BAD_VERSION), "NDIS_STATUS_BAD_VERSION");
  EXPECT_EQ(SoftNdkStatusName(static_cast<NTSTATUS>(0x12345)), nullptr);
  EXPECT_STREQ(SoftNdkCompletionModeName(SOFTNDK_COMPLETION_CALLER_THREAD), "caller-thread");
  EXPECT_STREQ(SoftNdkObjectTypeName(NdkObjectTypeSharedEndpoint), "shared endpoint");
}

TEST_F(Api, ProviderCharacteristicsAreWhatNdisExpects) {
  NDIS_NDK_PROVIDER_CHARACTERISTICS chars;
  NDIS_HANDLE context = nullptr;
  ASSERT_EQ(SoftNdkGetProviderCharacteristics(SOFTNDK_FABRIC_INPROC, 1, &chars, &context), STATUS_SUCCESS);
  EXPECT_EQ(chars.Header.Type, NDIS_OBJECT_TYPE_NDK_PROVIDER_CHARACTERISTICS);
  EXPECT_EQ(chars.Header.Revision, NDIS_NDK_PROVIDER_CHARACTERISTICS_REVISION_1);
  EXPECT_EQ(chars.Header.Size, NDIS_SIZEOF_NDK_PROVIDER_CHARACTERISTICS_REVISION_1);
  EXPECT_EQ(chars.Flags, 0u);
  ASSERT_NE(chars.OpenNDKAdapterHandler, nullptr);
  ASSERT_NE(chars.CloseNDKAdapterHandler, nullptr);
  EXPECT_EQ(SoftNdkGetProviderCharacteristics(SOFTNDK_FABRIC_INPROC, 424242, &chars, &context), STATUS_NOT_FOUND);

  NDIS_OPEN_NDK_ADAPTER_PARAMETERS p{NDK_VERSION{2, 0}, 0, 0};
  NDK_ADAPTER* a = nullptr;
  ASSERT_EQ(chars.OpenNDKAdapterHandler(context, &p, &a), NDIS_STATUS_SUCCESS);
  EXPECT_EQ(a->Header.Version.Major, 2);
  EXPECT_EQ(a->Header.Version.Minor, 1);
  chars.CloseNDKAdapterHandler(context, a);
}

}  // namespace
