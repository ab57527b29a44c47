// The conformance suite's main: the test binary is also the remote peer of the process form
// (PeerForm::kProcess, peer.hpp), re-executed with the peer's arguments; then it serves the
// peer and never starts GoogleTest.
#include <gtest/gtest.h>

#include "peer.hpp"

int main(int argc, char** argv) {
  int exit_code = 0;
  if (conformance::RunPeerProcessIfAsked(argc, argv, &exit_code)) return exit_code;
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
