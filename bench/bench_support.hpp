// What softndk_bench and softndk_iwarp_bench share: their command line and display, the
// CPU time other processes used during the run, and the tools they run as processes.
#pragma once

#include <benchmark/benchmark.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

extern char** environ;

namespace softndk::bench {

// A tool run as a child process (no shell), its standard output and error collected; killed
// and reaped if it is still running when this goes.
class Process {
 public:
  Process(std::vector<std::string> argv, const std::vector<std::string>& env) {
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    std::vector<std::string> environment(env);
    std::vector<char*> envp;
    for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
    for (std::string& e : environment) envp.push_back(e.data());
    envp.push_back(nullptr);
    int out[2];
    if (pipe(out) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), envp.data()) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    out_ = out[0];
  }
  ~Process() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Reads output until a line containing `text` arrived: that line, or "" after `limit`.
  std::string read_until(const std::string& text, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
      if (size_t at = output_.find(text); at != std::string::npos) {
        size_t line_end = output_.find('\n', at);
        if (line_end != std::string::npos) {
          const size_t start = output_.rfind('\n', at);
          return output_.substr(start == std::string::npos ? 0 : start + 1,
                                line_end - (start == std::string::npos ? 0 : start + 1));
        }
      }
      if (!read_some(end)) return "";
    }
  }
  // Waits for the process to exit (killing it after `limit`); everything it wrote.
  const std::string& finish(std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (read_some(end)) {
    }
    if (pid_ > 0) {
      if (waitpid(pid_, nullptr, WNOHANG) != pid_) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
      }
      pid_ = -1;
    }
    return output_;
  }
  const std::string& output() const { return output_; }

 private:
  // Appends what the process wrote, waiting until `end`; false at its end or the deadline.
  bool read_some(std::chrono::steady_clock::time_point end) {
    if (out_ < 0) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    pollfd p{out_, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) return false;
    char chunk[4096];
    const ssize_t n = ::read(out_, chunk, sizeof chunk);
    if (n <= 0) return false;
    output_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  std::string output_;
};

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
  double self = 0;     // seconds of CPU used by this process (all its threads) and its children
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
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
  // This process and the children it ran and reaped (the tools a benchmark starts).
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    rusage usage{};
    getrusage(who, &usage);
    s.self += seconds(usage.ru_utime) + seconds(usage.ru_stime);
  }
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
