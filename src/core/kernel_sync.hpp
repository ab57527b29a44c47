// What ThreadSanitizer cannot see: bytes written to a socket by one thread and read by
// another order what those threads did before and after, through the kernel. With both
// ends of a connection in one process (loopback tests, the conformance suite's channel
// peer), a write to memory before a send and the other thread's read of it after the
// receive are ordered, yet look like a race. Under TSan every send releases and every
// receive acquires one process-wide token, which models that order (coarsely: any send
// before any later receive). Elsewhere these are nothing.
#pragma once

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SOFTNDK_TSAN 1
#endif
#endif
#if !defined(SOFTNDK_TSAN) && defined(__SANITIZE_THREAD__)
#define SOFTNDK_TSAN 1
#endif

#ifdef SOFTNDK_TSAN
extern "C" void __tsan_acquire(void* address);
extern "C" void __tsan_release(void* address);
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace softndk {

#ifdef SOFTNDK_TSAN
inline char g_wire_token;
inline void wire_sent() { __tsan_release(&g_wire_token); }
inline void wire_received() { __tsan_acquire(&g_wire_token); }
#else
inline void wire_sent() {}
inline void wire_received() {}
#endif

// A consumer's write to registered memory a peer may be reading at that moment (as an RDMA
// NIC reads it whenever a request comes; the peer accepts whatever it finds): the fabric's
// send reads it concurrently by design, which TSan would report. `write` runs unwatched.
template <class F>
void write_exposed(F&& write) {
#ifdef SOFTNDK_TSAN
  __tsan_ignore_thread_begin();
  write();
  __tsan_ignore_thread_end();
#else
  write();
#endif
}

}  // namespace softndk
