// What every SoftNDK tool does with its command line: --help and --version exit 0, and
// anything wrong is one line on stderr with exit status 2.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include <fmt/format.h>

namespace softndk::tools {

// Parses; an exit status when the tool should stop here, nullopt to go on.
inline std::optional<int> parse(const char* tool, CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "{}: {} (see {} --help)\n", tool, e.what(), tool);
    return 2;
  }
  return std::nullopt;
}

inline int usage_error(const char* tool, const std::string& what) {
  fmt::print(stderr, "{}: {}\n", tool, what);
  return 2;
}

}  // namespace softndk::tools
