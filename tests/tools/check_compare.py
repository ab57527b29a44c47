#!/usr/bin/env python3
"""Runs bench/compare --quick into a temporary folder and checks what it wrote (python3
standard library only).

  check_compare.py [--hide-peers | --expect-failed] COMPARE NDKPERF TCP_BASELINE [compare options...]

compare.md, compare.json, compare.svg and compare.png exist; the SoftNDK fabric was measured;
every other row was measured at every size or says "not installed", "not available yet" or
"failed: <reason>"; the table names every row. With --hide-peers, PATH holds only gnuplot,
so UCX's and libfabric's tools must be reported as not installed. With --expect-failed (run
with a tiny --timeout), every row must say "failed: timed out", and with nothing measured
there is no chart and the exit status is 1. Afterwards no process
started by the run is left (each inherits a marker in its environment).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

STATUSES = ("measured", "not installed", "not available yet", "failed: ")


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def leftovers(marker):
    """The processes whose environment carries marker."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"SOFTNDK_CHECK_COMPARE={marker}".encode() in f.read().split(b"\0"):
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        found.append(c.read().replace(b"\0", b" ").decode(errors="replace").strip())
        except OSError:
            pass
    return found


def main():
    args = sys.argv[1:]
    hide = args[:1] == ["--hide-peers"]
    expect_failed = args[:1] == ["--expect-failed"]
    if hide or expect_failed:
        args = args[1:]
    if len(args) < 3:
        fail("usage: check_compare.py [--hide-peers] COMPARE NDKPERF TCP_BASELINE [options...]")
    compare, ndkperf, tcp_baseline, extra = args[0], args[1], args[2], args[3:]
    with tempfile.TemporaryDirectory(prefix="check-compare-") as tmp:
        out = os.path.join(tmp, "out")
        marker = f"check-compare-{os.getpid()}-{time.time_ns()}"
        env = dict(os.environ, SOFTNDK_CHECK_COMPARE=marker)
        if hide:
            bin_dir = os.path.join(tmp, "bin")
            os.mkdir(bin_dir)
            gnuplot = shutil.which("gnuplot")
            if gnuplot:
                os.symlink(gnuplot, os.path.join(bin_dir, "gnuplot"))
            env["PATH"] = bin_dir
        cmd = [sys.executable, compare, "--quick", "-o", out, "--ndkperf", ndkperf, "--tcp-baseline", tcp_baseline] + (
            [] if expect_failed else ["--timeout", "20"]) + extra
        print("$ " + " ".join(cmd))
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        print(p.stdout)
        print("[stderr]\n" + p.stderr)
        time.sleep(0.5)
        left = leftovers(marker)
        if left:
            fail(f"processes left running: {left}")
        charted = shutil.which("gnuplot") is not None and not expect_failed
        if p.returncode != (0 if charted else 1):
            fail(f"exit status {p.returncode}")
        for name in ("compare.md", "compare.json") + (("compare.svg", "compare.png") if charted else ()):
            path = os.path.join(out, name)
            if not os.path.isfile(path) or os.path.getsize(path) == 0:
                fail(f"{name} missing or empty")
        if charted:
            root = ET.parse(os.path.join(out, "compare.svg")).getroot()
            if not root.tag.endswith("svg"):
                fail("compare.svg is not an SVG")
            with open(os.path.join(out, "compare.png"), "rb") as f:
                if f.read(8) != b"\x89PNG\r\n\x1a\n":
                    fail("compare.png is not a PNG")
        with open(os.path.join(out, "compare.json")) as f:
            doc = json.load(f)
        with open(os.path.join(out, "compare.md")) as f:
            md = f.read()
        if not doc["rows"]:
            fail("no rows")
        timed_out = 0
        for row in doc["rows"]:
            status = row["status"]
            if not status.startswith(STATUSES):
                fail(f"{row['name']}: status {status!r}")
            if f"| {row['name']} |" not in md and f"| **{row['name']}** |" not in md:
                fail(f"{row['name']} is not in the table")
            if status == "measured":
                for size in map(str, doc["sizes"]):
                    fig = row["results"].get(size, {})
                    if not fig.get("lat_us", 0) > 0 or not fig.get("bw_MiBps", 0) > 0:
                        fail(f"{row['name']} at {size} B: {fig}")
            elif status not in md:
                fail(f"{row['name']}: its status is not in the table")
            if expect_failed:
                # A peer this machine lacks (setup installs UCX and libfabric only for
                # ./dev compare) has nothing to time out: it says so instead.
                if row["key"].startswith(("ucx-", "fi-")) and status.startswith("not installed"):
                    continue
                if not status.startswith("failed: timed out"):
                    fail(f"{row['name']} should have timed out: {status}")
                timed_out += 1
                continue
            if row.get("softndk") and status != "measured":
                fail(f"SoftNDK was not measured: {status}")
            if hide and row["key"].startswith(("ucx-", "fi-")) and not status.startswith("not installed"):
                fail(f"{row['name']} should be reported as not installed: {status}")
        if expect_failed and timed_out == 0:
            fail("no row timed out")
        if "Latency" not in md or "Bandwidth" not in md:
            fail("the latency or bandwidth table is missing")
        if not os.listdir(os.path.join(out, "logs")):
            fail("no logs")
    print("ok")


if __name__ == "__main__":
    main()
