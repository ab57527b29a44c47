#!/usr/bin/env python3
"""Runs one SoftNDK tool end to end and checks what it did (python3 standard library only).

  check_tools.py run [--rc N] [--stdout RE]... [--stderr RE]... [--one-line-error] -- CMD...
      exit status N (default 0), each RE found in stdout / stderr; with --one-line-error
      stderr is exactly one line.
  check_tools.py ndkinfo-json -- CMD...      stdout is one JSON object describing adapters
  check_tools.py ndkperf-json [--runs N] [--interrupt-after S] -- CMD...
  check_tools.py ndkperf-csv [--runs N] -- CMD...
  check_tools.py interrupt --signal INT|TERM (--after RE | --delay S) [--rc N] [--stdout RE]... -- CMD...
      starts CMD, waits until RE appears in its stdout (or S seconds), sends the signal,
      checks the exit; with --json in CMD, the JSON must say it was interrupted
  check_tools.py plot OUT.svg|OUT.png -- CMD...
      with gnuplot installed: CMD --plot OUT succeeds and OUT is a well-formed chart;
      without it (and always with an empty PATH): CMD --plot OUT fails naming gnuplot-nox.
"""
import argparse
import csv
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

TIMEOUT = 60


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    print("$ " + " ".join(cmd) + f"  -> exit {p.returncode}")
    if p.stdout:
        print(p.stdout if len(p.stdout) < 4000 else p.stdout[:4000] + "\n[...]")
    if p.stderr:
        print("[stderr]\n" + p.stderr)
    return p


def check_common(p, rc, stdout_res, stderr_res, one_line_error=False):
    if p.returncode != rc:
        fail(f"exit status {p.returncode}, expected {rc}")
    for r in stdout_res:
        if not re.search(r, p.stdout, re.M):
            fail(f"stdout lacks /{r}/")
    for r in stderr_res:
        if not re.search(r, p.stderr, re.M):
            fail(f"stderr lacks /{r}/")
    if one_line_error and len(p.stderr.strip().splitlines()) != 1:
        fail("the error is not exactly one line on stderr")


def check_ndkinfo(doc):
    for key in ("softndk_version", "adapters", "tunables", "adapter_count"):
        if key not in doc:
            fail(f"no '{key}'")
    if not doc["adapters"]:
        fail("no adapter listed")
    fields = ["VendorId", "DeviceId", "MaxRegistrationSize", "MaxWindowSize", "FRMRPageCount",
              "MaxInitiatorRequestSge", "MaxReceiveRequestSge", "MaxReadRequestSge", "MaxTransferLength",
              "MaxInlineDataSize", "MaxInboundReadLimit", "MaxOutboundReadLimit", "MaxReceiveQueueDepth",
              "MaxInitiatorQueueDepth", "MaxSrqDepth", "MaxCqDepth", "LargeRequestThreshold", "MaxCallerData",
              "MaxCalleeData", "AdapterFlags", "RdmaTechnology"]
    for a in doc["adapters"]:
        for key in ("fabric", "if_index", "name", "addresses", "opened"):
            if key not in a:
                fail(f"adapter without '{key}'")
        if not a["opened"]:
            fail(f"adapter {a['if_index']} did not open: {a.get('error')}")
        info = a["info"]
        for f in fields:
            if not isinstance(info.get(f), int):
                fail(f"adapter {a['if_index']}: {f} missing or not a number")
        if info["Version"]["Major"] not in (1, 2):
            fail("odd NDK version")
        if info["AdapterFlags"] and not info["AdapterFlagNames"]:
            fail("flags not decoded")
        if info["RdmaTechnologyName"] != "iWARP":
            fail("technology not named")
    names = {t["name"] for t in doc["tunables"]}
    if "completion_mode" not in names or any("value" not in t for t in doc["tunables"]):
        fail("tunables incomplete")


def check_ndkperf_records(records, runs, statuses=("ok",)):
    if runs is not None and len(records) != runs:
        fail(f"{len(records)} results, expected {runs}")
    for r in records:
        if r["status"] not in statuses:
            fail(f"a result has status {r['status']}")
        if int(r["iterations"]) <= 0 or float(r["seconds"]) <= 0 or float(r["bytes_per_second"]) <= 0:
            fail(f"a result measured nothing: {r}")
        if r["mode"] == "latency":
            lat = r["latency_ns"]
            if not 0 < lat["min"] <= lat["median"] <= lat["p99"] <= lat["max"]:
                fail(f"latency percentiles out of order: {lat}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what")
    ap.add_argument("arg", nargs="?")
    ap.add_argument("--rc", type=int, default=None)
    ap.add_argument("--stdout", action="append", default=[])
    ap.add_argument("--stderr", action="append", default=[])
    ap.add_argument("--one-line-error", action="store_true")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--signal", default="INT")
    ap.add_argument("--after")
    ap.add_argument("--delay", type=float, default=0.0)
    argv = sys.argv[1:]
    if "--" not in argv:
        fail("no command (it follows --)")
    split = argv.index("--")
    a = ap.parse_args(argv[:split])
    cmd = argv[split + 1:]
    if not cmd:
        fail("no command")

    if a.what == "run":
        p = run(cmd)
        check_common(p, 0 if a.rc is None else a.rc, a.stdout, a.stderr, a.one_line_error)
    elif a.what == "ndkinfo-json":
        p = run(cmd)
        check_common(p, 0, [], [])
        check_ndkinfo(json.loads(p.stdout))
    elif a.what == "ndkperf-json":
        p = run(cmd)
        check_common(p, 0 if a.rc is None else a.rc, [], [])
        doc = json.loads(p.stdout)
        for key in ("config", "clock", "results", "complete", "interrupted"):
            if key not in doc:
                fail(f"no '{key}'")
        if not doc["complete"] or doc["error"] is not None:
            fail("run not complete")
        check_ndkperf_records(doc["results"], a.runs)
    elif a.what == "ndkperf-csv":
        p = run(cmd)
        check_common(p, 0, [], [])
        rows = list(csv.DictReader(io.StringIO(p.stdout)))
        for r in rows:
            if r["mode"] == "latency":
                r["latency_ns"] = {k: float(r[k + "_ns"]) for k in ("min", "median", "p99", "max")}
        check_ndkperf_records(rows, a.runs)
    elif a.what == "interrupt":
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        print("$ " + " ".join(cmd))
        seen, deadline = b"", time.time() + TIMEOUT
        os.set_blocking(proc.stdout.fileno(), False)
        started = time.time()
        while (re.search(a.after.encode(), seen) is None) if a.after else (time.time() - started < a.delay):
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                fail(f"ended (or never printed /{a.after}/) before the signal; got {seen!r}")
            select.select([proc.stdout], [], [], 0.1)
            chunk = proc.stdout.read()
            if chunk:
                seen += chunk
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM if a.signal == "TERM" else signal.SIGINT)
        try:
            rest, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            fail("still running 20 s after the signal")
        out = (seen + (rest or b"")).decode()
        print(out)
        print("[stderr]\n" + err.decode())
        p = subprocess.CompletedProcess(cmd, proc.returncode, out, err.decode())
        check_common(p, 0 if a.rc is None else a.rc, a.stdout, a.stderr)
        if "--json" in cmd:
            doc = json.loads(out[out.index("{"):])
            if not doc["interrupted"] or doc["complete"]:
                fail("the JSON does not say it was interrupted")
            check_ndkperf_records(doc["results"], None, ("ok", "interrupted"))
    elif a.what == "plot":
        out = a.arg
        if os.path.exists(out):
            os.remove(out)
        with tempfile.TemporaryDirectory() as empty:
            env = dict(os.environ, PATH=empty)
            p = run(cmd + ["--plot", out], env=env)
            check_common(p, 1, [], [r"gnuplot-nox"], True)
        if shutil.which("gnuplot") is None:
            print("gnuplot is not installed: checked the message only")
        else:
            p = run(cmd + ["--plot", out])
            check_common(p, 0, [], [])
            if not os.path.getsize(out):
                fail("empty chart")
            if out.endswith(".svg"):
                root = ET.parse(out).getroot()
                if not root.tag.endswith("svg"):
                    fail("not an SVG")
                text = open(out, encoding="utf-8").read()
                for needed in ("latency", "bandwidth"):
                    if needed not in text:
                        fail(f"the chart has no '{needed}' axis")
            else:
                with open(out, "rb") as f:
                    if f.read(8) != b"\x89PNG\r\n\x1a\n":
                        fail("not a PNG")
    else:
        fail("unknown check " + a.what)
    print("PASS")


if __name__ == "__main__":
    main()
