// Two hosts for the end-to-end tests: network namespaces joined by a veth pair, made for
// one test with `ip` (iproute2) and removed when it ends, also when it fails. Names carry
// this process's id ("sndk-PID-N-a"); namespaces a killed run left behind (their pid is
// gone) are removed first rather than reused. Addresses (10.199.0.1/24 and .2) exist only
// inside the namespaces. Where namespaces cannot be made (no privilege, no iproute2),
// available() is false and why() says so: the test skips, it never passes silently.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <string>
#include <vector>

extern char** environ;

namespace e2e {

// Runs `argv` (no shell) with its output discarded; its exit status (or -1).
inline int run_quietly(std::vector<std::string> argv, std::string* output = nullptr) {
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  int out[2];
  if (pipe(out) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  std::string text;
  char chunk[512];
  for (ssize_t n; spawned == 0 && (n = ::read(out[0], chunk, sizeof chunk)) > 0;) text.append(chunk, static_cast<size_t>(n));
  ::close(out[0]);
  if (output != nullptr) *output = text;
  if (spawned != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class NetnsPair {
 public:
  static constexpr const char* kIp = "/usr/sbin/ip";
  static constexpr const char* kVeth[2] = {"sndk0", "sndk1"};
  static constexpr const char* kAddress[2] = {"10.199.0.1", "10.199.0.2"};

  NetnsPair() {
    static std::atomic<int> counter{0};
    const std::string base = "sndk-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    names_ = {base + "-a", base + "-b"};
    remove_stale();
    std::string output;
    if (run_quietly({kIp, "netns", "add", names_[0]}, &output) != 0) {
      why_ = "cannot create a network namespace (ip netns add: " + output + ")";
      return;
    }
    made_[0] = true;
    made_[1] = run_quietly({kIp, "netns", "add", names_[1]}) == 0;
    const bool ok =
        made_[1] &&
        run_quietly({kIp, "-n", names_[0], "link", "add", kVeth[0], "type", "veth", "peer", "name", kVeth[1],
                     "netns", names_[1]}) == 0 &&
        configure(0) && configure(1);
    if (!ok) why_ = "cannot set up the veth pair between the namespaces";
  }
  ~NetnsPair() {
    for (int i = 0; i < 2; ++i)
      if (made_[i]) run_quietly({kIp, "netns", "del", names_[i]});
  }
  NetnsPair(const NetnsPair&) = delete;
  NetnsPair& operator=(const NetnsPair&) = delete;

  bool available() const { return why_.empty(); }
  const std::string& why() const { return why_; }
  const std::string& name(int host) const { return names_[host]; }

  // Cuts (false) or restores (true) the link, from host 0's end.
  bool set_link(bool up) {
    return run_quietly({kIp, "-n", names_[0], "link", "set", kVeth[0], up ? "up" : "down"}) == 0;
  }

 private:
  bool configure(int host) {
    const std::string& ns = names_[host];
    return run_quietly({kIp, "-n", ns, "link", "set", "lo", "up"}) == 0 &&
           run_quietly({kIp, "-n", ns, "addr", "add", std::string(kAddress[host]) + "/24", "dev", kVeth[host]}) == 0 &&
           run_quietly({kIp, "-n", ns, "link", "set", kVeth[host], "up"}) == 0;
  }

  // Namespaces of earlier runs whose process is gone ("sndk-PID-..."): removed.
  static void remove_stale() {
    std::string list;
    if (run_quietly({kIp, "netns", "list"}, &list) != 0) return;
    size_t at = 0;
    while (at < list.size()) {
      size_t end = list.find('\n', at);
      if (end == std::string::npos) end = list.size();
      const std::string line = list.substr(at, end - at);
      at = end + 1;
      const std::string name = line.substr(0, line.find(' '));
      if (name.rfind("sndk-", 0) != 0) continue;
      const pid_t owner = static_cast<pid_t>(std::atoi(name.c_str() + 5));
      if (owner > 0 && owner != getpid() && kill(owner, 0) != 0 && errno == ESRCH)
        run_quietly({kIp, "netns", "del", name});
    }
  }

  std::array<std::string, 2> names_;
  bool made_[2] = {false, false};
  std::string why_;
};

}  // namespace e2e
