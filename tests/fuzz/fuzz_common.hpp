// What the fuzz targets share: invariant checks that abort (libFuzzer and the replay driver
// both report an abort as a crash), the control bytes that lead every input, and the
// chunkings a stream is fed in.
//
// Every input is: control bytes (each target documents its own), then the byte stream a peer
// sent. Missing control bytes read as 0, so any input is valid.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#define FUZZ_CHECK(cond)                                         \
  do {                                                           \
    if (!(cond)) ::fuzz::check_failed(#cond, __FILE__, __LINE__); \
  } while (0)

namespace fuzz {

[[noreturn]] inline void check_failed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "fuzz invariant violated: %s (%s:%d)\n", what, file, line);
  std::abort();
}

// FUZZ_VERBOSE set: the targets say what each input did (for the replay driver).
inline bool verbose() {
  static const bool on = std::getenv("FUZZ_VERBOSE") != nullptr;
  return on;
}

// The control bytes at the front of an input, then the stream.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : bytes_(data, size) {}
  uint8_t byte() { return at_ < bytes_.size() ? bytes_[at_++] : 0; }
  std::span<const uint8_t> rest() const { return bytes_.subspan(at_); }

 private:
  std::span<const uint8_t> bytes_;
  size_t at_ = 0;
};

// A chunking chosen by the input: pieces of `a`, `b`, `a`, ... bytes (0: all the rest),
// after one empty piece (a receive of nothing must change nothing).
struct Chunking {
  uint8_t a = 0, b = 0;

  // Calls feed(piece) for each piece; feed returns the bytes it consumed. Stops after a
  // piece not wholly consumed. Returns the bytes consumed in all.
  template <class Feed>
  size_t run(std::span<const uint8_t> stream, Feed&& feed) const {
    if (feed(stream.first(0)) != 0) check_failed("an empty piece consumed bytes", __FILE__, __LINE__);
    size_t at = 0;
    for (size_t i = 0; at < stream.size(); ++i) {
      const uint8_t size = i % 2 == 0 ? a : b;
      const size_t n = size == 0 ? stream.size() - at : std::min<size_t>(size, stream.size() - at);
      const size_t used = feed(stream.subspan(at, n));
      if (used > n) check_failed("consumed more than it was given", __FILE__, __LINE__);
      at += used;
      if (used < n) break;
    }
    return at;
  }
};

// The two control bytes of a chunking (fuzz_inputs.hpp says where they are).
inline Chunking read_chunking(Input& in) {
  Chunking c;
  c.a = in.byte();
  c.b = in.byte();
  return c;
}

}  // namespace fuzz

// The target of each fuzz executable (libFuzzer's entry point; the replay driver calls it).
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
