// ndkinfo: lists every adapter SoftNDK can open (SoftNdkEnumerateAdapters: fabric,
// interface index, name, addresses), opens each one and prints its NDK_ADAPTER_INFO, every
// field, flags decoded by name, and the tunables with their current values; as text for
// people or, with --json, as one JSON object.
//
// Exit status: 0 success; 1 an adapter that is not there or could not be opened; 2 a bad
// command line.
#include <arpa/inet.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/cli.hpp"
#include "ndk/softndk.h"

namespace {

using nlohmann::ordered_json;

constexpr const char* kTool = "ndkinfo";

std::string status_text(NTSTATUS s) {
  const char* name = SoftNdkStatusName(s);
  return name != nullptr ? name : fmt::format("0x{:08X}", static_cast<uint32_t>(s));
}

const char* fabric_id(SOFTNDK_FABRIC f) {
  switch (f) {
    case SOFTNDK_FABRIC_INPROC: return "inproc";
    case SOFTNDK_FABRIC_TCP: return "tcp";
    case SOFTNDK_FABRIC_SHM: return "shm";
  }
  return "unknown";
}

const char* fabric_title(SOFTNDK_FABRIC f) {
  switch (f) {
    case SOFTNDK_FABRIC_INPROC: return "in-process fabric";
    case SOFTNDK_FABRIC_TCP: return "TCP fabric (iWARP)";
    case SOFTNDK_FABRIC_SHM: return "shared-memory fabric";
  }
  return "unknown fabric";
}

const char* technology_name(NDK_RDMA_TECHNOLOGY t) {
  switch (t) {
    case NdkUndefined: return "Undefined";
    case NdkiWarp: return "iWARP";
    case NdkInfiniBand: return "InfiniBand";
    case NdkRoCE: return "RoCE";
    case NdkRoCEv2: return "RoCEv2";
    case NdkMaxTechnology: break;
  }
  return "unknown";
}

struct FlagName {
  ULONG bit;
  const char* name;
};
constexpr FlagName kAdapterFlags[] = {
    {NDK_ADAPTER_FLAG_IN_ORDER_DMA_SUPPORTED, "IN_ORDER_DMA_SUPPORTED"},
    {NDK_ADAPTER_FLAG_RDMA_READ_SINK_NOT_REQUIRED, "RDMA_READ_SINK_NOT_REQUIRED"},
    {NDK_ADAPTER_FLAG_CQ_INTERRUPT_MODERATION_SUPPORTED, "CQ_INTERRUPT_MODERATION_SUPPORTED"},
    {NDK_ADAPTER_FLAG_MULTI_ENGINE_SUPPORTED, "MULTI_ENGINE_SUPPORTED"},
    {NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED, "RDMA_READ_LOCAL_INVALIDATE_SUPPORTED"},
    {NDK_ADAPTER_FLAG_CQ_RESIZE_SUPPORTED, "CQ_RESIZE_SUPPORTED"},
    {NDK_ADAPTER_FLAG_LOOPBACK_CONNECTIONS_SUPPORTED, "LOOPBACK_CONNECTIONS_SUPPORTED"},
};

// "NDK_ADAPTER_FLAG_<NAME>" for each set bit; unknown bits as one hex value.
std::vector<std::string> flag_names(ULONG flags) {
  std::vector<std::string> names;
  ULONG known = 0;
  for (const FlagName& f : kAdapterFlags) {
    known |= f.bit;
    if (flags & f.bit) names.push_back(std::string("NDK_ADAPTER_FLAG_") + f.name);
  }
  if (flags & ~known) names.push_back(fmt::format("unknown bits 0x{:08X}", flags & ~known));
  return names;
}

std::string address_text(const SOCKADDR_INET& a) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (a.si_family == AF_INET)
    inet_ntop(AF_INET, &a.Ipv4.sin_addr, text, sizeof(text));
  else if (a.si_family == AF_INET6)
    inet_ntop(AF_INET6, &a.Ipv6.sin6_addr, text, sizeof(text));
  return text;
}

// " (64 KiB)" for a whole number of KiB, MiB, GiB or TiB; "" otherwise.
std::string bytes_hint(uint64_t n) {
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (n < 1024 || n % 1024 != 0) return "";
  int unit = -1;
  while (n >= 1024 && n % 1024 == 0 && unit < 4) {
    n /= 1024;
    ++unit;
  }
  return fmt::format(" ({} {})", n, kUnits[unit]);
}

struct Adapter {
  SOFTNDK_ADAPTER_DESCRIPTION description{};
  NTSTATUS open_status = STATUS_SUCCESS;  // of opening it (or querying it)
  std::string error;                      // what failed, empty on success
  NDK_ADAPTER_INFO info{};
  SOFTNDK_COMPLETION_MODE mode = SOFTNDK_COMPLETION_DEFAULT;
  ULONG64 seed = 0;
};

struct Tunable {
  std::string name, value, default_value, help, source;
};

std::vector<SOFTNDK_ADAPTER_DESCRIPTION> enumerate(NTSTATUS* status) {
  std::vector<SOFTNDK_ADAPTER_DESCRIPTION> list;
  for (;;) {  // the count can grow between two calls
    ULONG count = static_cast<ULONG>(list.size());
    *status = SoftNdkEnumerateAdapters(list.empty() ? nullptr : list.data(), &count);
    if (*status == STATUS_SUCCESS) {
      list.resize(count);
      return list;
    }
    if (*status != STATUS_BUFFER_TOO_SMALL) return {};
    list.resize(count);
  }
}

// Opens the adapter, reads what it reports and closes it again.
void query(Adapter& a, NDK_VERSION version) {
  SOFTNDK_OPEN_OPTIONS options{sizeof(options), a.description.Fabric, SOFTNDK_COMPLETION_DEFAULT, 0};
  NDK_ADAPTER* adapter = nullptr;
  a.open_status = SoftNdkOpenAdapter(a.description.IfIndex, version, &options, &adapter);
  if (a.open_status != STATUS_SUCCESS) {
    a.error = "cannot open it: " + status_text(a.open_status);
    return;
  }
  ULONG size = sizeof(a.info);
  a.open_status = adapter->Dispatch->NdkQueryAdapterInfo(adapter, &a.info, &size);
  if (a.open_status != STATUS_SUCCESS) a.error = "NdkQueryAdapterInfo: " + status_text(a.open_status);
  if (SoftNdkGetCompletionMode(adapter, &a.mode, &a.seed) != STATUS_SUCCESS) a.mode = SOFTNDK_COMPLETION_DEFAULT;
  SoftNdkCloseAdapter(adapter);
}

std::vector<Tunable> tunables() {
  std::vector<Tunable> list;
  for (ULONG i = 0, n = SoftNdkTunableCount(); i < n; ++i) {
    SOFTNDK_TUNABLE_INFO info{};
    if (SoftNdkDescribeTunable(i, &info) != STATUS_SUCCESS) continue;
    Tunable t{info.Name, "", info.DefaultValue, info.Help, "default"};
    char value[256] = "";
    ULONG length = sizeof(value);
    if (SoftNdkGetTunable(info.Name, value, &length) == STATUS_SUCCESS) t.value = value;
    std::string variable = "SOFTNDK_";
    for (const char* p = info.Name; *p; ++p) variable += static_cast<char>(std::toupper(static_cast<unsigned char>(*p)));
    if (const char* env = std::getenv(variable.c_str()); env != nullptr && t.value == env) t.source = variable;
    list.push_back(std::move(t));
  }
  return list;
}

// Every field of NDK_ADAPTER_INFO, in declaration order: name, value, and a hint for people.
struct Field {
  const char* name;
  uint64_t value;
  bool bytes;  // a size in bytes (gets a KiB/MiB/... hint)
};
std::vector<Field> numeric_fields(const NDK_ADAPTER_INFO& i) {
  return {
      {"VendorId", i.VendorId, false},
      {"DeviceId", i.DeviceId, false},
      {"MaxRegistrationSize", i.MaxRegistrationSize, true},
      {"MaxWindowSize", i.MaxWindowSize, true},
      {"FRMRPageCount", i.FRMRPageCount, false},
      {"MaxInitiatorRequestSge", i.MaxInitiatorRequestSge, false},
      {"MaxReceiveRequestSge", i.MaxReceiveRequestSge, false},
      {"MaxReadRequestSge", i.MaxReadRequestSge, false},
      {"MaxTransferLength", i.MaxTransferLength, true},
      {"MaxInlineDataSize", i.MaxInlineDataSize, true},
      {"MaxInboundReadLimit", i.MaxInboundReadLimit, false},
      {"MaxOutboundReadLimit", i.MaxOutboundReadLimit, false},
      {"MaxReceiveQueueDepth", i.MaxReceiveQueueDepth, false},
      {"MaxInitiatorQueueDepth", i.MaxInitiatorQueueDepth, false},
      {"MaxSrqDepth", i.MaxSrqDepth, false},
      {"MaxCqDepth", i.MaxCqDepth, false},
      {"LargeRequestThreshold", i.LargeRequestThreshold, true},
      {"MaxCallerData", i.MaxCallerData, true},
      {"MaxCalleeData", i.MaxCalleeData, true},
  };
}

void print_text(const std::vector<Adapter>& adapters, size_t total, const std::vector<Tunable>& tuning,
                NDK_VERSION asked) {
  fmt::print("SoftNDK {}: {} adapter{}{}\n", SOFTNDK_VERSION_TEXT, total, total == 1 ? "" : "s",
             adapters.size() != total ? fmt::format(", {} shown", adapters.size()) : "");
  for (const Adapter& a : adapters) {
    const SOFTNDK_ADAPTER_DESCRIPTION& d = a.description;
    fmt::print("\nadapter {} \"{}\": {}\n", d.IfIndex, d.Name, fabric_title(d.Fabric));
    std::vector<std::string> addresses;
    for (ULONG k = 0; k < d.AddressCount; ++k) addresses.push_back(address_text(d.Addresses[k]));
    fmt::print("  {:<24}{}\n", "interface index", d.IfIndex);
    fmt::print("  {:<24}{}\n", "addresses", addresses.empty() ? "(none)" : fmt::format("{}", fmt::join(addresses, ", ")));
    if (!a.error.empty()) {
      fmt::print("  {:<24}{}\n", "error", a.error);
      continue;
    }
    fmt::print("  {:<24}{}{}\n", "completion mode", SoftNdkCompletionModeName(a.mode),
               a.mode == SOFTNDK_COMPLETION_MIXED ? fmt::format(" (seed {})", a.seed) : "");
    const NDK_ADAPTER_INFO& i = a.info;
    fmt::print("  NDK_ADAPTER_INFO (asked for NDK {}.{}):\n", asked.Major, asked.Minor);
    fmt::print("    {:<24}{}.{}\n", "Version", i.Version.Major, i.Version.Minor);
    for (const Field& f : numeric_fields(i)) {
      if (f.name == std::string("VendorId") || f.name == std::string("DeviceId"))
        fmt::print("    {:<24}0x{:08X}\n", f.name, f.value);
      else
        fmt::print("    {:<24}{}{}\n", f.name, f.value, f.bytes ? bytes_hint(f.value) : "");
    }
    fmt::print("    {:<24}0x{:08X}\n", "AdapterFlags", i.AdapterFlags);
    for (const std::string& name : flag_names(i.AdapterFlags)) fmt::print("    {:<24}  {}\n", "", name);
    fmt::print("    {:<24}{} ({})\n", "RdmaTechnology", technology_name(i.RdmaTechnology),
               static_cast<int>(i.RdmaTechnology));
  }
  fmt::print("\ntunables (SoftNdkSetTunable, or the environment variable SOFTNDK_<NAME>; * = not the default):\n");
  size_t width = 0;
  for (const Tunable& t : tuning) width = std::max(width, t.name.size());
  for (const Tunable& t : tuning) {
    fmt::print("  {}{:<{}} = {}{}\n", t.value != t.default_value ? "*" : " ", t.name, width, t.value,
               t.value != t.default_value
                   ? fmt::format("   (default {}{})", t.default_value, t.source != "default" ? ", from " + t.source : "")
                   : "");
    fmt::print("   {:<{}}   {}\n", "", width, t.help);
  }
}

ordered_json to_json(const std::vector<Adapter>& adapters, size_t total, const std::vector<Tunable>& tuning,
                     NDK_VERSION asked) {
  ordered_json root;
  root["softndk_version"] = SOFTNDK_VERSION_TEXT;
  root["ndk_version_asked"] = {{"Major", asked.Major}, {"Minor", asked.Minor}};
  root["adapter_count"] = total;
  root["adapters"] = ordered_json::array();
  for (const Adapter& a : adapters) {
    const SOFTNDK_ADAPTER_DESCRIPTION& d = a.description;
    ordered_json j;
    j["fabric"] = fabric_id(d.Fabric);
    j["if_index"] = d.IfIndex;
    j["name"] = d.Name;
    j["addresses"] = ordered_json::array();
    for (ULONG k = 0; k < d.AddressCount; ++k) j["addresses"].push_back(address_text(d.Addresses[k]));
    j["opened"] = a.error.empty();
    if (!a.error.empty()) {
      j["error"] = a.error;
      j["status"] = status_text(a.open_status);
      root["adapters"].push_back(std::move(j));
      continue;
    }
    j["completion_mode"] = SoftNdkCompletionModeName(a.mode);
    j["completion_seed"] = a.seed;
    const NDK_ADAPTER_INFO& i = a.info;
    ordered_json info;
    info["Version"] = {{"Major", i.Version.Major}, {"Minor", i.Version.Minor}};
    for (const Field& f : numeric_fields(i)) info[f.name] = f.value;
    info["AdapterFlags"] = i.AdapterFlags;
    info["AdapterFlagNames"] = flag_names(i.AdapterFlags);
    info["RdmaTechnology"] = static_cast<int>(i.RdmaTechnology);
    info["RdmaTechnologyName"] = technology_name(i.RdmaTechnology);
    j["info"] = std::move(info);
    root["adapters"].push_back(std::move(j));
  }
  root["tunables"] = ordered_json::array();
  for (const Tunable& t : tuning)
    root["tunables"].push_back({{"name", t.name},
                                {"value", t.value},
                                {"default", t.default_value},
                                {"source", t.source},
                                {"help", t.help}});
  return root;
}

std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  return softndk::tools::parse(kTool, app, argc, argv);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ndkinfo: list the adapters SoftNDK can open (fabric, interface, addresses) with each one's\n"
      "NDK_ADAPTER_INFO (every field, flags decoded) and the tunables with their current values.\n"
      "Exit status: 0 success, 1 an adapter missing or failing to open, 2 a bad command line."};
  app.set_version_flag("--version", std::string("ndkinfo (SoftNDK) ") + SOFTNDK_VERSION_TEXT);
  bool json = false;
  std::optional<ULONG> only;
  int ndk_major = 2;
  app.add_flag("--json", json, "Print one JSON object instead of text");
  app.add_option("-d,--adapter", only, "Show only the adapter with this interface index")->type_name("IFINDEX");
  app.add_option("--ndk", ndk_major, "NDK major version to open the adapters with (1: 1.2, 2: 2.1)")
      ->check(CLI::IsMember({1, 2}))
      ->capture_default_str();
  if (auto code = parse(app, argc, argv)) return *code;

  const NDK_VERSION asked{static_cast<USHORT>(ndk_major), static_cast<USHORT>(ndk_major == 1 ? 1 : 0)};
  NTSTATUS status = STATUS_SUCCESS;
  std::vector<SOFTNDK_ADAPTER_DESCRIPTION> all = enumerate(&status);
  if (status != STATUS_SUCCESS) {
    fmt::print(stderr, "{}: cannot list the adapters: {}\n", kTool, status_text(status));
    return 1;
  }
  std::vector<Adapter> shown;
  for (const SOFTNDK_ADAPTER_DESCRIPTION& d : all)
    if (!only || d.IfIndex == *only) {
      Adapter a;
      a.description = d;
      shown.push_back(a);
    }
  if (only && shown.empty()) {
    std::vector<std::string> present;
    for (const SOFTNDK_ADAPTER_DESCRIPTION& d : all) present.push_back(fmt::format("{} \"{}\"", d.IfIndex, d.Name));
    fmt::print(stderr, "{}: no adapter with interface index {} (there {}: {})\n", kTool, *only,
               present.size() == 1 ? "is" : "are", present.empty() ? "none" : fmt::format("{}", fmt::join(present, ", ")));
    return 1;
  }
  int failures = 0;
  for (Adapter& a : shown) {
    query(a, asked);
    if (!a.error.empty()) {
      ++failures;
      fmt::print(stderr, "{}: adapter {} ({}): {}\n", kTool, a.description.IfIndex, a.description.Name, a.error);
    }
  }
  const std::vector<Tunable> tuning = tunables();
  if (json)
    fmt::print("{}\n", to_json(shown, all.size(), tuning, asked).dump(2));
  else
    print_text(shown, all.size(), tuning, asked);
  return failures == 0 ? 0 : 1;
}
