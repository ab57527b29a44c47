// What ndkping --server and ndkperf --server do before their own protocol: listen, say
// where, and wait for one client.
#pragma once

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "perf/session.hpp"
#include "perf/stop.hpp"

namespace softndk::tools {

// The exit status after a stop by SIGINT or SIGTERM (what the signal was, on stderr).
inline int interrupted(const char* tool, const perf::SignalStop& stop, const char* when = "") {
  fmt::print(stderr, "{}: interrupted by {}{}\n", tool, stop.signal() == SIGTERM ? "SIGTERM" : "SIGINT", when);
  return 128 + (stop.signal() ? stop.signal() : SIGINT);
}

// A server with a client's connect request waiting (session and its greeting), or the exit
// status when there is none (could not listen, or stopped).
struct Pending {
  std::unique_ptr<perf::Session> session;
  std::optional<perf::Greeting> hello;
  int status = 0;
};

// Listens on `bind` (prints "TOOL server: listening on ADDR:PORT ..." for scripts to read)
// and waits for a client's connect request.
inline Pending wait_for_one_client(const char* tool, const perf::SignalStop& stop, const SOCKADDR_INET& bind,
                                   SOFTNDK_COMPLETION_MODE mode) {
  Pending p;
  try {
    p.session = perf::Session::listen(bind, mode);
  } catch (const perf::Error& e) {
    fmt::print(stderr, "{}: cannot listen on {}: {}\n", tool, perf::address_text(bind), e.what());
    p.status = 1;
    return p;
  }
  fmt::print("{} server: listening on {} (iWARP fabric); serves one client\n", tool,
             perf::address_text(p.session->address()));
  std::fflush(stdout);
  p.hello = p.session->wait_for_client(&stop.flag());
  if (!p.hello) p.status = interrupted(tool, stop, " (no client came)");
  return p;
}

// The command line of the fabric and of the two-process mode, the same in both tools.
struct Fabric {
  std::string fabric = "inproc";
  bool server = false;
  std::string client, bind;
  uint16_t port = 0;
  std::optional<SOCKADDR_INET> server_address;  // after resolve(): where to listen or connect

  bool two_processes() const { return server || !client.empty(); }

  // `serves`: what the server does with its client's requests.
  void add_options(CLI::App& app, const char* tool, uint16_t default_port, const char* serves) {
    port = default_port;
    const char* group = "Fabric, and two processes (iWARP over TCP, on one host or two)";
    app.add_option("--fabric", fabric,
                   "Fabric to use in one process: inproc (in-process hosts) or tcp (iWARP over loopback TCP); "
                   "--server and --client always use tcp; shm is not available yet")
        ->check(CLI::IsMember({"inproc", "tcp", "shm"}))
        ->capture_default_str()
        ->group(group);
    auto* server_flag =
        app.add_flag("--server", server,
                     fmt::format("Serve one client: listen on --bind:--port, {}, exit once it is done", serves))
            ->group(group);
    app.add_option("--client", client, fmt::format("Connect to the {} server at ADDR[:PORT] ([IPV6]:PORT)", tool))
        ->type_name("ADDR")
        ->excludes(server_flag)
        ->group(group);
    app.add_option("--bind", bind, "--server: listen on this address of one of this host's interfaces (default "
                                   "127.0.0.1, with -6 ::1; ndkinfo lists them)")
        ->type_name("ADDR")
        ->needs(server_flag)
        ->group(group);
    app.add_option("-p,--port", port, "--server: the port to listen on (0: one the kernel picks, printed); "
                                      "--client: the server's port when ADDR has none")
        ->type_name("PORT")
        ->capture_default_str()
        ->group(group);
  }

  // After parsing: "" or the usage error. Two processes take the iWARP fabric.
  std::string resolve(const CLI::App& app, bool ipv6) {
    if (fabric == "shm") return "fabric shm is not available yet (use --fabric inproc or tcp)";
    if (!two_processes()) return "";
    if (app.count("--fabric") > 0 && fabric != "tcp")
      return fmt::format("--fabric {}: two processes (--server, --client) run over --fabric tcp", fabric);
    std::string problem;
    server_address =
        perf::parse_address(server ? (bind.empty() ? (ipv6 ? "::1" : "127.0.0.1") : bind) : client, port, &problem);
    if (!server_address) return fmt::format("{}: {}", server ? "--bind" : "--client", problem);
    fabric = "tcp";
    return "";
  }
};

}  // namespace softndk::tools
