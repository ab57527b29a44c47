// What softndk_bench and softndk_iwarp_bench share: their command line and display, and
// the CPU time other processes used during the run.
#pragma once

#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace softndk::bench {

// Initialises Google Benchmark with our defaults first (5 repetitions, aggregates only), so
// that `arguments` (the command line but the program name) override them. False when an
// argument is not understood (Google Benchmark has said so).
inline bool initialize(char* program, const std::vector<char*>& arguments) {
  std::string repetitions = "--benchmark_repetitions=5";
  std::string aggregates = "--benchmark_report_aggregates_only=true";
  std::vector<char*> args{program, repetitions.data(), aggregates.data()};
  args.insert(args.end(), arguments.begin(), arguments.end());
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&count, args.data());
  return !benchmark::ReportUnrecognizedArguments(count, args.data());
}

// The display: the console (and the summary on stdout), or JSON with
// --benchmark_format=json (the summary then goes to stderr).
inline std::unique_ptr<benchmark::BenchmarkReporter> display_reporter(const std::vector<char*>& arguments,
                                                                      FILE*& summary) {
  for (const char* a : arguments)
    if (std::strcmp(a, "--benchmark_format=json") == 0) {
      summary = stderr;
      return std::make_unique<benchmark::JSONReporter>();
    }
  summary = stdout;
  return std::make_unique<benchmark::ConsoleReporter>(isatty(STDOUT_FILENO) ? benchmark::ConsoleReporter::OO_Color
                                                                            : benchmark::ConsoleReporter::OO_None);
}

// CPU time used on the whole machine (from /proc/stat, hypervisor steal included) and by
// this process, so that a summary can tell whether something else competed with the run.

struct CpuSample {
  double machine = 0;  // seconds of busy CPU, all CPUs
  double self = 0;     // seconds of CPU used by this process (all its threads)
  std::chrono::steady_clock::time_point wall = std::chrono::steady_clock::now();
  bool valid = false;
};

inline CpuSample sample_cpu() {
  CpuSample s;
  FILE* f = std::fopen("/proc/stat", "r");
  if (f == nullptr) return s;
  unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system, &idle, &iowait, &irq,
                      &softirq, &steal);
  std::fclose(f);
  if (n != 8) return s;
  const double tick = 1.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
  s.machine = static_cast<double>(user + nice + system + irq + softirq + steal) * tick;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
  s.self = seconds(usage.ru_utime) + seconds(usage.ru_stime);
  s.valid = true;
  return s;
}

// Prints the CPUs used on average by other processes since `start` (nothing when unknown).
// Above 0.15 the figures are not trustworthy on a 2-CPU machine.
inline void print_other_activity(FILE* o, const char* indent, const CpuSample& start) {
  const CpuSample end = sample_cpu();
  const double wall = std::chrono::duration<double>(end.wall - start.wall).count();
  if (!start.valid || !end.valid || wall <= 0) return;
  const double others = std::max(0.0, (end.machine - start.machine) - (end.self - start.self)) / wall;
  std::fprintf(o, "%sother activity on this machine during the run: %.2f CPUs on average%s\n", indent, others,
               others > 0.15 ? "  -- figures may be off, rerun on a quiet machine" : "");
}

}  // namespace softndk::bench
