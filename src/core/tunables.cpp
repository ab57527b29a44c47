#include "core/tunables.hpp"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string_view>

namespace softndk::tunables {
namespace {

bool is_number(const std::string& v) {
  if (v.empty() || v.size() > 19) return false;
  for (char c : v)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}
bool is_flag(const std::string& v) { return v == "0" || v == "1"; }
bool is_positive(const std::string& v) { return is_number(v) && std::stoull(v) > 0; }
bool is_sge_count(const std::string& v) { return is_positive(v) && std::stoull(v) <= 64; }
bool is_mode(const std::string& v) {
  return v == "inline" || v == "caller-thread" || v == "provider-thread" || v == "mixed";
}

// Capabilities an adapter can be told not to advertise; it then behaves as a provider
// without them (R094, R128, R135, R212).
struct Capability {
  const char* name;
  uint32_t flag;  // NDK_ADAPTER_FLAG_*
};
const Capability kWithholdable[] = {
    {"in_order_dma", 0x1},                 // IN_ORDER_DMA_SUPPORTED
    {"rdma_read_sink_not_required", 0x2},  // RDMA_READ_SINK_NOT_REQUIRED
    {"cq_interrupt_moderation", 0x4},      // CQ_INTERRUPT_MODERATION_SUPPORTED
    {"rdma_read_local_invalidate", 0x10},  // RDMA_READ_LOCAL_INVALIDATE_SUPPORTED
};

// A comma-separated list of kWithholdable names (empty: none); 0xFFFFFFFF when invalid.
uint32_t parse_capabilities(const std::string& v) {
  uint32_t flags = 0;
  size_t at = 0;
  while (at < v.size()) {
    size_t comma = v.find(',', at);
    std::string_view name(v.data() + at, (comma == std::string::npos ? v.size() : comma) - at);
    const Capability* found = nullptr;
    for (const Capability& c : kWithholdable)
      if (name == c.name) found = &c;
    if (found == nullptr) return 0xFFFFFFFFu;
    flags |= found->flag;
    if (comma == std::string::npos) break;
    at = comma + 1;
    if (at == v.size()) return 0xFFFFFFFFu;  // trailing comma
  }
  return flags;
}
bool is_capability_list(const std::string& v) { return parse_capabilities(v) != 0xFFFFFFFFu; }

// The limits an adapter reports in NDK_ADAPTER_INFO and enforces (R211). The defaults are
// in the range of real RDMA NICs; tests lower them to reach every maximum cheaply.
const Tunable kTable[] = {
    {"completion_mode", "inline",
     "How creates, requests and closes complete: inline, caller-thread (STATUS_PENDING, "
     "callback before the call returns), provider-thread (callback from a provider thread) "
     "or mixed (each call picks one from a seeded sequence)",
     is_mode},
    {"completion_seed", "1", "Seed of the mixed completion mode (same seed, same choices)",
     is_number},
    {"max_cq_depth", "65536", "MaxCqDepth: most completions a CQ holds", is_positive},
    {"max_receive_queue_depth", "16384", "MaxReceiveQueueDepth of a QP", is_positive},
    {"max_initiator_queue_depth", "16384", "MaxInitiatorQueueDepth of a QP", is_positive},
    {"max_srq_depth", "16384", "MaxSrqDepth of a shared receive queue", is_positive},
    {"max_initiator_sge", "32", "MaxInitiatorRequestSge (at most 64)", is_sge_count},
    {"max_receive_sge", "32", "MaxReceiveRequestSge of QP and SRQ receives (at most 64)", is_sge_count},
    {"max_read_sge", "32", "MaxReadRequestSge (at most 64)", is_sge_count},
    {"max_inline_data", "256", "MaxInlineDataSize: most bytes one INLINE request carries",
     is_number},
    {"max_inbound_read_limit", "16", "MaxInboundReadLimit (IRD) of a QP", is_positive},
    {"max_outbound_read_limit", "16", "MaxOutboundReadLimit (ORD) of a QP", is_positive},
    {"frmr_page_count", "512", "FRMRPageCount: most pages of one fast registration",
     is_positive},
    {"max_transfer_length", "1073741824", "MaxTransferLength: most bytes of one request",
     is_positive},
    {"max_registration_size", "1099511627776", "MaxRegistrationSize of one memory region",
     is_positive},
    {"max_caller_data", "56", "MaxCallerData: private data bytes a connect may carry",
     is_number},
    {"max_callee_data", "148", "MaxCalleeData: private data bytes an accept or reject may carry",
     is_number},
    {"iwarp_mpa_revision", "2",
     "iWARP fabric: the MPA revision a Connect offers (2: RFC 6581 enhanced setup with "
     "IRD/ORD and peer-to-peer RTR; 1: RFC 5044)",
     [](const std::string& v) { return v == "1" || v == "2"; }},
    {"iwarp_crc", "1",
     "iWARP fabric: ask for the MPA CRC32c on every FPDU (either side asking turns it on)",
     is_flag},
    {"iwarp_peer_to_peer", "1",
     "iWARP fabric: a Connect asks for RFC 6581 peer-to-peer mode, whose RTR message "
     "completes the passive side's Accept",
     is_flag},
    {"iwarp_completion", "placed",
     "iWARP fabric: when a send or RDMA write completes. placed: once the peer placed it (a "
     "later read's response proves it; a remote failure fails the request itself, as on "
     "InfiniBand and in-process); sent: once the socket took its bytes (raw iWARP semantics)",
     [](const std::string& v) { return v == "placed" || v == "sent"; }},
    {"iwarp_dead_peer_ms", "10000",
     "iWARP fabric: a connection whose peer stops answering (killed host, cut link) ends "
     "this long after its last sign of life: unacknowledged data or keepalive probes "
     "(TCP_USER_TIMEOUT, keepalive from 1 s of silence on)",
     is_positive},
    {"connect_timeout_ms", "30000",
     "How long a Connect waits for the peer's answer, and an Accept for the peer's "
     "CompleteConnect, before failing with STATUS_IO_TIMEOUT",
     is_positive},
    {"withheld_capabilities", "",
     "Adapter capabilities not to advertise, comma-separated: in_order_dma, "
     "rdma_read_sink_not_required, cq_interrupt_moderation (then NdkControlCqInterruptModeration "
     "returns STATUS_NOT_SUPPORTED), rdma_read_local_invalidate (then reads ignore "
     "NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE)",
     is_capability_list},
    {"large_request_threshold", "65536",
     "LargeRequestThreshold: requests at least this large are better as RDMA than sends",
     is_number},
};

std::mutex g_mutex;
std::map<std::string, std::string, std::less<>> g_values;  // set through the API

std::string env_name(const char* name) {
  std::string result = "SOFTNDK_";
  for (const char* p = name; *p; ++p) result += static_cast<char>(std::toupper(*p));
  return result;
}

}  // namespace

const Tunable* begin() { return kTable; }
const Tunable* end() { return kTable + sizeof(kTable) / sizeof(kTable[0]); }

const Tunable* find(const std::string& name) {
  for (const Tunable* t = begin(); t != end(); ++t)
    if (name == t->name) return t;
  return nullptr;
}

std::string get(const Tunable& t) {
  {
    std::lock_guard lock(g_mutex);
    auto it = g_values.find(std::string_view(t.name));
    if (it != g_values.end()) return it->second;
  }
  const char* env = std::getenv(env_name(t.name).c_str());
  if (env != nullptr && t.valid(env)) return env;
  if (env != nullptr)
    std::fprintf(stderr, "softndk: ignoring %s=%s (not a valid value)\n",
                 env_name(t.name).c_str(), env);
  return t.default_value;
}

std::optional<std::string> get(const std::string& name) {
  const Tunable* t = find(name);
  if (t == nullptr) return std::nullopt;
  return get(*t);
}

bool set(const std::string& name, const std::string& value) {
  const Tunable* t = find(name);
  if (t == nullptr || !t->valid(value)) return false;
  std::lock_guard lock(g_mutex);
  g_values[name] = value;
  return true;
}

void reset() {
  std::lock_guard lock(g_mutex);
  g_values.clear();
}

uint32_t withheld_capabilities() {
  uint32_t flags = parse_capabilities(get(*find("withheld_capabilities")));
  return flags == 0xFFFFFFFFu ? 0 : flags;
}

uint64_t number(const char* name) {
  const Tunable* t = find(name);
  if (t == nullptr) {
    std::fprintf(stderr, "softndk: internal error: no tunable named %s\n", name);
    std::abort();
  }
  return std::stoull(get(*t));
}

}  // namespace softndk::tunables
