// The control bytes that lead each target's inputs, for the targets and the corpus
// generator. After them comes the stream, fed in the chunking of fuzz::Chunking.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fuzz {

// fuzz_mpa: [mode][limits][chunk a][chunk b] stream
namespace mpa_input {
// mode
inline constexpr uint8_t kActive = 0x01;        // we sent a Request: parse a Reply or Reject
inline constexpr uint8_t kWantCrc = 0x02;       // our iwarp_crc setting
inline constexpr uint8_t kRevision1 = 0x04;     // active: our Request is revision 1
inline constexpr uint8_t kNoPeerToPeer = 0x08;  // active: our Request does not ask for an RTR
inline constexpr unsigned kMaxPdShift = 4;      // 2 bits: index into kMaxPrivateData
inline constexpr size_t kMaxPrivateData[4] = {512, 256, 16, 0};
// limits: our IRD (bits 0-1) and ORD (bits 2-3) as the consumer gives them (kLimits), and
// the length of the private data we answer with (bits 4-7, times 16)
inline constexpr uint32_t kLimits[4] = {16, 0, 1, 0x4000};
inline constexpr unsigned kOrdShift = 2;
inline constexpr unsigned kAnswerPdShift = 4;
inline constexpr size_t kControlBytes = 4;
}  // namespace mpa_input

// fuzz_fpdu: [mode][setup][chunk a][chunk b] stream
namespace fpdu_input {
// mode
inline constexpr uint8_t kCrcMask = 0x03;        // kCrcOff, kCrcOn, kCrcFixed (3: off)
inline constexpr uint8_t kCrcOff = 0, kCrcOn = 1;
inline constexpr uint8_t kCrcFixed = 2;          // CRC on, and the target writes every FPDU's CRC first
inline constexpr uint8_t kNoMsnCheck = 0x04;     // FpduParser::Options::check_msn off
inline constexpr uint8_t kAwaitingRtr = 0x08;    // passive side after its Reply: the RTR is due
inline constexpr unsigned kMaxUntaggedShift = 4; // 2 bits: index into kMaxUntagged
inline constexpr uint32_t kMaxUntagged[4] = {0, 64, 4096, 65535};
inline constexpr unsigned kReceivesShift = 6;    // 2 bits: receives posted, kReceives
inline constexpr unsigned kReceives[4] = {16, 0, 1, 4};
// setup
inline constexpr uint8_t kCapacityMask = 0x03;   // capacity of every posted receive
inline constexpr uint64_t kCapacity[4] = {4096, 64, 0, 1 << 20};
inline constexpr unsigned kReadsShift = 2;       // 2 bits: our reads in flight, kReads
inline constexpr unsigned kReads[4] = {1, 0, 2, 4};
inline constexpr unsigned kReadLengthShift = 4;  // 2 bits: the first read's length; the
inline constexpr uint32_t kReadLength[4] = {4096, 0, 100, 70000};  // next ones cycle on
inline constexpr uint8_t kDraining = 0x40;       // the connection is ending: input is let go
inline constexpr size_t kControlBytes = 4;

// The fake memory of the receiving side: STag, first TO, length, rights.
struct Region {
  uint32_t stag;
  uint64_t base;
  uint64_t length;
  bool remote_write, remote_read;
  bool invalidatable;  // by a Send with Invalidate
};
inline constexpr Region kRegions[] = {
    {0x00001000, 0x10000, 8192, true, true, true},                  // read and write
    {0x00002000, 0, 256, false, true, false},                       // read only
    {0x00003000, 0xfffffffffffff000ull, 4096, true, false, true},   // at the top of the TO space
};
// Our reads in flight use data sink STags 1, 2, ... (as TcpConnection numbers them), TO 0.
}  // namespace fpdu_input

}  // namespace fuzz
