// softndk_perf_check: the perf engine proves what it measures. Every operation, mode and
// flag runs with verification on (every byte of every message checked where it lands) on
// pairs in each completion mode, IPv4 and IPv6, several runs per pair; bad parameters are
// refused and leave the pair usable. Prints "N passed, N failed"; exits non-zero on failure.
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "perf/engine.hpp"
#include "perf/pair.hpp"

namespace {

namespace perf = softndk::perf;

int g_passed = 0;
int g_failed = 0;

void expect(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL %s\n", what.c_str());
  }
}

std::string describe(const perf::Params& p, const char* pair) {
  char text[200];
  std::snprintf(text, sizeof(text), "[%s] %s %s size %zu flags 0x%lx depth %lu", pair, perf::to_string(p.operation),
                perf::to_string(p.mode), p.size, static_cast<unsigned long>(p.flags),
                static_cast<unsigned long>(p.queue_depth));
  return text;
}

// One verified run and the consistency of what it reports.
void check_run(perf::Pair& pair, const perf::Params& p, const char* name) {
  const std::string what = describe(p, name);
  perf::Result r = perf::run(pair, p);
  expect(r.ok(), what + (r.ok() ? "" : ": " + r.error));
  if (!r.ok()) return;
  const bool ping_pong = p.operation == perf::Operation::kSend && p.mode == perf::Mode::kLatency;
  const uint64_t messages = p.iterations * (ping_pong ? 2 : 1);
  expect(r.messages == messages && r.bytes == messages * p.size && r.seconds > 0, what + ": totals");
  if (p.mode == perf::Mode::kLatency && p.samples) {
    const perf::Latency& l = r.latency;
    expect(l.min_ns > 0 && l.min_ns <= l.median_ns && l.median_ns <= l.p99_ns && l.p99_ns <= l.max_ns,
           what + ": percentiles ordered");
  }
  if (p.keep_samples) expect(r.samples_ns.size() == p.iterations, what + ": samples kept");
}

void check_pair(SOFTNDK_COMPLETION_MODE mode, bool ipv6) {
  char name[64];
  std::snprintf(name, sizeof(name), "%s %s", SoftNdkCompletionModeName(mode), ipv6 ? "IPv6" : "IPv4");
  perf::PairOptions options;
  options.area_size = 70000;  // not a page multiple: the Pair rounds it up
  options.queue_depth = 64;
  options.completion_mode = mode;
  options.ipv6 = ipv6;
  std::unique_ptr<perf::Pair> pair;
  try {
    pair = std::make_unique<perf::Pair>(options);
  } catch (const std::exception& e) {
    expect(false, std::string("[") + name + "] setting up the pair: " + e.what());
    return;
  }
  expect(true, std::string("[") + name + "] pair set up");

  const perf::Operation operations[] = {perf::Operation::kSend, perf::Operation::kWrite, perf::Operation::kRead};
  const perf::Mode modes[] = {perf::Mode::kLatency, perf::Mode::kBandwidth};
  const size_t sizes[] = {1, 7, 8, 100, 4096, 65539};
  for (size_t size : sizes) {
    for (perf::Operation op : operations) {
      for (perf::Mode m : modes) {
        std::vector<ULONG> flag_sets = {0, NDK_OP_FLAG_SILENT_SUCCESS};
        if (op != perf::Operation::kRead && size <= 256) {
          flag_sets.push_back(NDK_OP_FLAG_INLINE);
          flag_sets.push_back(NDK_OP_FLAG_INLINE | NDK_OP_FLAG_SILENT_SUCCESS);
        }
        for (ULONG flags : flag_sets) {
          perf::Params p;
          p.operation = op;
          p.mode = m;
          p.size = size;
          p.iterations = 53;  // not a multiple of the depth: a partial last window
          p.warmup = 5;
          p.queue_depth = 8;
          p.flags = flags;
          p.verify = true;
          p.keep_samples = m == perf::Mode::kLatency;
          check_run(*pair, p, name);
        }
      }
    }
  }
  // Unverified, without samples, at the deepest queue the pair allows.
  perf::Params p;
  p.mode = perf::Mode::kBandwidth;
  p.queue_depth = options.queue_depth;
  p.iterations = 1000;
  for (perf::Operation op : operations) {
    p.operation = op;
    check_run(*pair, p, name);
  }
  p.mode = perf::Mode::kLatency;
  p.samples = false;
  check_run(*pair, p, name);

  // Refused parameters; the pair stays usable.
  auto refused = [&](perf::Params bad, const char* why) {
    perf::Result r = perf::run(*pair, bad);
    expect(r.status == STATUS_INVALID_PARAMETER && !r.error.empty(), std::string("[") + name + "] refuses " + why);
  };
  perf::Params bad;
  bad.size = 0;
  refused(bad, "size 0");
  bad.size = pair->client().area + 1;
  refused(bad, "size above the area");
  bad = perf::Params{};
  bad.queue_depth = 0;
  refused(bad, "queue depth 0");
  bad.queue_depth = options.queue_depth + 1;
  refused(bad, "queue depth above the pair's");
  bad = perf::Params{};
  bad.iterations = 0;
  refused(bad, "0 iterations");
  bad = perf::Params{};
  bad.operation = perf::Operation::kRead;
  bad.flags = NDK_OP_FLAG_INLINE;
  refused(bad, "INLINE reads");
  bad.operation = perf::Operation::kWrite;
  bad.size = pair->client().inline_data + 1;
  refused(bad, "INLINE above the inline size");
  perf::Params after;
  after.verify = true;
  after.operation = perf::Operation::kSend;
  check_run(*pair, after, name);
  expect(pair->disconnects() == 0, std::string("[") + name + "] no disconnect during the runs");
}

}  // namespace

int main() {
  const SOFTNDK_COMPLETION_MODE modes[] = {SOFTNDK_COMPLETION_INLINE, SOFTNDK_COMPLETION_CALLER_THREAD,
                                           SOFTNDK_COMPLETION_PROVIDER_THREAD, SOFTNDK_COMPLETION_MIXED};
  for (SOFTNDK_COMPLETION_MODE mode : modes)
    for (bool ipv6 : {false, true}) check_pair(mode, ipv6);
  // Many pairs in a row: addresses are reused once their hosts are gone.
  for (int i = 0; i < 300; ++i) {
    try {
      perf::PairOptions options;
      options.area_size = 4096;
      options.queue_depth = 4;
      options.inline_data = 64;
      perf::Pair pair(options);
    } catch (const std::exception& e) {
      expect(false, std::string("pair #") + std::to_string(i) + ": " + e.what());
      break;
    }
  }
  expect(true, "300 pairs in a row");
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
