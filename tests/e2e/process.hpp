// Child processes for the end-to-end tests: this test binary again, running one role (a
// gtest filter naming a test that skips unless its environment says it is a role), possibly
// inside a network namespace (`ip netns exec`). The child reports on a pipe; it never
// outlives the test: the Child kills and reaps it whatever happens.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace e2e {

// Lines from a file descriptor, each waited for with a bound.
class LineReader {
 public:
  // The next line (without its newline), or "" when none came within `limit`.
  std::string next(int fd, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
      if (auto at = buffered_.find('\n'); at != std::string::npos) {
        std::string line = buffered_.substr(0, at);
        buffered_.erase(0, at + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count()))) != 1) return "";
      char chunk[256];
      const ssize_t n = ::read(fd, chunk, sizeof chunk);
      if (n <= 0) return "";
      buffered_.append(chunk, static_cast<size_t>(n));
    }
  }

 private:
  std::string buffered_;
};

class Child {
 public:
  // Runs this binary with --gtest_filter=`role`, the current environment plus `env`
  // (NAME=value), and SOFTNDK_TEST_REPORT_FD naming the write end of the report pipe;
  // inside network namespace `netns` when it is not empty.
  Child(const std::string& role, std::vector<std::string> env, const std::string& netns = "") {
    int fds[2], control[2];
    if (pipe(fds) != 0) return;
    if (pipe(control) != 0) {
      ::close(fds[0]);
      ::close(fds[1]);
      return;
    }
    // Everything is prepared before fork(): the child only execs (other threads of this
    // process may hold locks that malloc would wait for).
    const std::string self = std::filesystem::read_symlink("/proc/self/exe");
    std::string filter = "--gtest_filter=" + role;
    env.push_back("SOFTNDK_TEST_REPORT_FD=" + std::to_string(fds[1]));
    std::vector<char*> envp;
    for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string ip = "/usr/sbin/ip", netns_word = "netns", exec_word = "exec", ns = netns;
    std::vector<char*> argv;
    if (!netns.empty()) argv = {ip.data(), netns_word.data(), exec_word.data(), ns.data()};
    argv.push_back(const_cast<char*>(self.c_str()));
    argv.push_back(filter.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      ::close(fds[0]);
      ::close(control[1]);
      dup2(control[0], STDIN_FILENO);  // the parent's write_line() arrives here
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    ::close(fds[1]);
    ::close(control[0]);
    report_ = fds[0];
    control_ = control[1];
  }
  ~Child() {
    if (report_ >= 0) ::close(report_);
    if (control_ >= 0) ::close(control_);
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool started() const { return pid_ > 0 && report_ >= 0; }
  pid_t pid() const { return pid_; }
  bool signal(int number) const { return pid_ > 0 && !reaped_ && kill(pid_, number) == 0; }
  // SIGSTOP, then waits until every thread of the child has stopped (kill() returns before:
  // a thread inside a system call stops only when it leaves it).
  bool stop(std::chrono::milliseconds limit) {
    if (!signal(SIGSTOP)) return false;
    for (auto end = std::chrono::steady_clock::now() + limit; std::chrono::steady_clock::now() < end;) {
      int status = 0;
      if (waitpid(pid_, &status, WUNTRACED | WNOHANG) == pid_ && WIFSTOPPED(status)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }

  // The next line the child reported (without its newline), or "" when none came in time.
  std::string read_line(std::chrono::milliseconds limit) { return reader_.next(report_, limit); }

  // Sends one line to the child's standard input (role_read_line there).
  bool write_line(const std::string& line) const {
    const std::string text = line + "\n";
    return control_ >= 0 && ::write(control_, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  }

  // Waits for the child to exit; true with exit_status() set when it did in time.
  bool wait(std::chrono::milliseconds limit) {
    for (auto end = std::chrono::steady_clock::now() + limit; std::chrono::steady_clock::now() < end;) {
      if (waitpid(pid_, &status_, WNOHANG) == pid_) return reaped_ = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }
  // The exit code (or 128 + the signal that ended it).
  int exit_status() const {
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : WIFSIGNALED(status_) ? 128 + WTERMSIG(status_) : -1;
  }

 private:
  pid_t pid_ = -1;
  int report_ = -1;
  int control_ = -1;
  int status_ = -1;
  bool reaped_ = false;
  LineReader reader_;
};

// In a role: the report pipe the parent gave (or -1: not running as a role).
inline int role_report_fd() {
  const char* text = std::getenv("SOFTNDK_TEST_REPORT_FD");
  return text == nullptr ? -1 : std::atoi(text);
}

// In a role: the next line the parent sent (Child::write_line), or "" after `limit`.
inline std::string role_read_line(std::chrono::milliseconds limit) {
  static LineReader reader;
  return reader.next(STDIN_FILENO, limit);
}

// In a role: writes one line to the parent.
inline bool report_line(const std::string& line) {
  const int fd = role_report_fd();
  const std::string text = line + "\n";
  return fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

}  // namespace e2e
