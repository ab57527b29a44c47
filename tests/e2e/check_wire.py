#!/usr/bin/env python3
"""Proof that the iWARP fabric speaks iWARP: capture one session on loopback and let
Wireshark's own dissectors judge it.

    check_wire.py IWARP_TEST REVISION

Runs the Iwarp.EveryMessageTypeOnTheWire test of IWARP_TEST (MPA revision REVISION, CRC
on) on a free loopback port while tshark captures that port, then reads the capture with
the iwarp_mpa and iwarp_ddp_rdmap dissectors (`--disable-protocol rpcordma`: its heuristic
misreads some send payloads) and fails when:
  - a packet is malformed, or an FPDU's CRC is not the one the dissector computes;
  - the iWARP dissectors raise a warning or an error, except "Rev field is NOT set to one"
    and "Res field is NOT set to zero" on revision 2 MPA Request and Reply frames (tshark
    4.0 predates RFC 6581's enhanced header);
  - a message type is missing: MPA Request with private data, Reply, Reject; Send, Send
    with Solicited Event, Send with Invalidate, RDMA Write, Read Request, Read Response,
    Terminate.
Exit 77 (skipped) only when tshark is not installed; `./dev setup` installs it.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

OPCODES = {
    0x0: "RDMA Write",
    0x1: "RDMA Read Request",
    0x2: "RDMA Read Response",
    0x3: "Send",
    0x4: "Send with Invalidate",
    0x5: "Send with Solicited Event",
    0x7: "Terminate",
}
ALLOWED_ON_SETUP_FRAMES = ("Rev field is NOT set to one", "Res field is NOT set to zero")


def fail(message):
    print(f"check_wire: FAIL: {message}")
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tshark_read(capture, *args):
    cmd = ["tshark", "-r", capture, "--disable-protocol", "rpcordma", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        fail(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def capture_session(binary, revision, capture):
    port = free_port()
    tshark = subprocess.Popen(
        ["tshark", "-i", "lo", "-f", f"tcp port {port}", "-w", capture],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        seen = ""
        while "Capture started" not in seen:
            if tshark.poll() is not None:
                seen += tshark.stderr.read()
                # A sandbox without packet capture (no CAP_NET_RAW, no loopback device to
                # open) forbids the check: say so and skip, never pass silently.
                if any(w in seen for w in ("ermission", "Operation not permitted", "no such device",
                                           "No such device", "couldn't run", "doesn't exist")):
                    print(f"check_wire: SKIP: this environment forbids capturing on lo: {seen.strip()}")
                    sys.exit(77)
                fail(f"tshark did not start capturing: {seen.strip()}")
            if time.monotonic() > deadline:
                fail(f"tshark did not start capturing: {seen.strip()}")
            seen += tshark.stderr.readline()
        time.sleep(0.5)  # dumpcap's filter is attached: give it a moment to be live
        env = dict(os.environ, SOFTNDK_TEST_LISTEN_PORT=str(port))
        wire = "Rev2Crc" if revision == "2" else "Rev1Crc"
        run = subprocess.run(
            [binary, f"--gtest_filter=Tcp/Iwarp.EveryMessageTypeOnTheWire/inline_IPv4_{wire}"],
            env=env, capture_output=True, text=True, timeout=120)
        if run.returncode != 0 or "[  PASSED  ] 1 test" not in run.stdout:
            fail(f"the session failed:\n{run.stdout[-3000:]}{run.stderr[-2000:]}")
        time.sleep(0.5)  # the last segments reach the capture
    finally:
        tshark.send_signal(signal.SIGINT)  # tshark stops dumpcap and flushes the file
        try:
            tshark.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(tshark.pid, signal.SIGKILL)
            tshark.wait()


def check(capture, revision):
    problems = []
    malformed = tshark_read(capture, "-Y", "_ws.malformed", "-T", "fields", "-e", "frame.number").split()
    if malformed:
        problems.append(f"malformed packets: frames {', '.join(malformed)}")

    # Every FPDU's CRC: the dissector checks it against the data (tshark 4.0 shows the
    # verdict only in the item's text).
    fpdus = 0
    frame = "?"
    for line in tshark_read(capture, "-V", "-Y", "iwarp_mpa.crc_check").splitlines():
        text = line.strip()
        if text.startswith("Frame ") and ":" in text:
            frame = text.split()[1].rstrip(":")
        if text.startswith("CRC check:"):
            fpdus += 1
            if "(Good CRC32)" not in text:
                problems.append(f"frame {frame}: {text}")
    if fpdus == 0:
        problems.append("no FPDU with a CRC was dissected")

    # Expert warnings and errors of the iWARP dissectors.
    report = tshark_read(capture, "-q", "-z", "expert,warn")
    for line in report.splitlines():
        fields = line.split(None, 3)
        if len(fields) == 4 and fields[2] in ("IWARP_MPA", "IWARP_DDP_RDMAP"):
            summary = fields[3]
            if revision == "2" and summary.startswith(ALLOWED_ON_SETUP_FRAMES):
                continue
            problems.append(f"expert: {line.strip()}")
    misplaced = tshark_read(
        capture, "-Y", "(iwarp_mpa.rev.not_set1 || iwarp_mpa.res.not_set0) && !(iwarp_mpa.req || iwarp_mpa.rep)",
        "-T", "fields", "-e", "frame.number").split()
    if misplaced:
        problems.append(f"RFC 6581 warnings outside Request/Reply frames: {', '.join(misplaced)}")
    if revision == "1" and "NOT set" in report:
        problems.append("revision 1 frames drew RFC 5044 warnings")

    # Every message type.
    seen = set()
    for line in tshark_read(capture, "-T", "fields", "-E", "occurrence=a", "-e", "iwarp_rdma.opcode").split():
        seen.update(int(v, 16) for v in line.split(",") if v)
    for code, name in OPCODES.items():
        if code not in seen:
            problems.append(f"no {name} was dissected")
    setup = tshark_read(capture, "-Y", "iwarp_mpa.req || iwarp_mpa.rep", "-T", "fields",
                        "-e", "iwarp_mpa.key.req", "-e", "iwarp_mpa.rej_flag", "-e", "iwarp_mpa.pdlength",
                        "-e", "iwarp_mpa.rev")
    requests = replies = rejects = 0
    for line in setup.splitlines():
        key, reject, pd_length, rev = (line.split("\t") + ["", "", "", ""])[:4]
        if rev and rev != revision:
            problems.append(f"an MPA frame of revision {rev}, expected {revision}")
        if key:
            requests += 1
            if not pd_length or int(pd_length) == 0:
                problems.append("an MPA Request without private data")
        elif reject in ("1", "True"):
            rejects += 1
        else:
            replies += 1
    for count, name in ((requests, "MPA Request"), (replies, "MPA Reply"), (rejects, "MPA Reject")):
        if count == 0:
            problems.append(f"no {name} was dissected")
    if problems:
        fail("\n  ".join([""] + problems))
    print(f"check_wire: revision {revision}: {fpdus} FPDUs with good CRCs, "
          f"{requests} Requests, {replies} Replies, {rejects} Rejects, every RDMAP opcode, no warnings")


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("1", "2"):
        print(__doc__)
        return 2
    if shutil.which("tshark") is None:
        print("check_wire: SKIP: tshark is not installed (./dev setup installs it)")
        return 77
    binary, revision = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        capture = os.path.join(tmp, "session.pcapng")
        capture_session(binary, revision, capture)
        check(capture, revision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
