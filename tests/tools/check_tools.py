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
  check_tools.py two [checks] -- TOOL [server arguments] -- [client arguments]
      two processes: starts TOOL --server --port 0 [server arguments], reads the address it
      prints ("listening on ADDR:PORT"), runs TOOL [client arguments] with {server} replaced
      by that address, then waits for the server to end. Checks: --rc/--stdout/--stderr/
      --one-line-error (client), --server-rc/--server-stdout/--server-stderr, --ndkperf-json N
      or --ndkperf-csv N (the client's output holds N results). --no-server: nothing listens
      ({server} is a free port); --silent-listener: a plain TCP socket listens and never
      answers; --kill-server-after RE: SIGKILL the server once RE is in the client's stdout;
      --signal-client-after RE: SIGINT the client once RE is in its stdout. Every process
      started is killed when the check ends, passed or not.
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
import socket
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


def check_ndkperf_json(text, runs):
    doc = json.loads(text)
    for key in ("config", "clock", "results", "complete", "interrupted"):
        if key not in doc:
            fail(f"no '{key}'")
    if not doc["complete"] or doc["error"] is not None:
        fail("run not complete")
    check_ndkperf_records(doc["results"], runs)
    return doc


def check_ndkperf_csv(text, runs):
    rows = list(csv.DictReader(io.StringIO(text)))
    for r in rows:
        if r["mode"] == "latency":
            r["latency_ns"] = {k: float(r[k + "_ns"]) for k in ("min", "median", "p99", "max")}
    check_ndkperf_records(rows, runs)


def kill(proc):
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


class Reader:
    """Collects a process's stdout without blocking."""

    def __init__(self, proc):
        self.proc, self.seen = proc, b""
        os.set_blocking(proc.stdout.fileno(), False)

    def poll(self, wait=0.05):
        select.select([self.proc.stdout], [], [], wait)
        chunk = self.proc.stdout.read()
        if chunk:
            self.seen += chunk
        return self.seen.decode(errors="replace")

    def rest(self):
        while True:
            chunk = self.proc.stdout.read()
            if not chunk:
                break
            self.seen += chunk
        return self.seen.decode(errors="replace")


def two(a, tool, server_args, client_args):
    """Server and client as two processes; see the module's doc."""
    server = listener = client = None
    try:
        if a.no_server or a.silent_listener:
            listener = socket.socket(socket.AF_INET)
            listener.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{listener.getsockname()[1]}"
            if a.silent_listener:
                listener.listen()
            else:
                listener.close()  # nothing listens there now
                listener = None
        else:
            cmd = [tool, "--server", "--port", "0"] + server_args
            print("$ " + " ".join(cmd) + " &")
            server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, deadline = Reader(server), time.time() + 10
            while not (m := re.search(r"listening on (\S+)", out.poll())):
                if time.time() > deadline or server.poll() is not None:
                    fail(f"the server did not say where it listens: {out.rest()!r}")
            address = m.group(1)
        cmd = [tool] + [x.replace("{server}", address) for x in client_args]
        print("$ " + " ".join(cmd))
        client = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        watch = a.kill_server_after or a.signal_client_after
        cout = Reader(client)
        if watch:
            deadline = time.time() + TIMEOUT
            while re.search(watch, cout.poll(), re.M) is None:
                if time.time() > deadline or client.poll() is not None:
                    fail(f"the client ended (or never printed /{watch}/): {cout.rest()!r}")
            time.sleep(0.3)
            if a.kill_server_after:
                server.kill()
            else:
                client.send_signal(signal.SIGINT)
        try:
            client.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            fail(f"the client is still running after {TIMEOUT} s")
        c = subprocess.CompletedProcess(cmd, client.returncode, cout.rest(), client.stderr.read().decode())
        print(f"client exit {c.returncode}\n{c.stdout}\n[client stderr]\n{c.stderr}")
        s = None
        if server is not None:
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                fail("the server is still running 15 s after its client ended")
            s = subprocess.CompletedProcess([], server.returncode, out.rest(), server.stderr.read().decode())
            print(f"server exit {s.returncode}\n{s.stdout}\n[server stderr]\n{s.stderr}")
        check_common(c, 0 if a.rc is None else a.rc, a.stdout, a.stderr, a.one_line_error)
        if s is not None and a.server_rc != "any":
            check_common(s, int(a.server_rc), a.server_stdout, a.server_stderr)
        if a.ndkperf_json is not None:
            check_ndkperf_json(c.stdout, a.ndkperf_json)
        if a.ndkperf_csv is not None:
            check_ndkperf_csv(c.stdout, a.ndkperf_csv)
    finally:
        kill(client)
        kill(server)
        if listener is not None:
            listener.close()


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
    ap.add_argument("--server-rc", default="0")
    ap.add_argument("--server-stdout", action="append", default=[])
    ap.add_argument("--server-stderr", action="append", default=[])
    ap.add_argument("--ndkperf-json", type=int)
    ap.add_argument("--ndkperf-csv", type=int)
    ap.add_argument("--no-server", action="store_true")
    ap.add_argument("--silent-listener", action="store_true")
    ap.add_argument("--kill-server-after")
    ap.add_argument("--signal-client-after")
    argv = sys.argv[1:]
    if "--" not in argv:
        fail("no command (it follows --)")
    split = argv.index("--")
    a = ap.parse_args(argv[:split])
    cmd = argv[split + 1:]
    if not cmd:
        fail("no command")

    if a.what == "two":
        if "--" not in cmd[1:]:
            fail("two: TOOL [server arguments] -- [client arguments]")
        split = cmd.index("--", 1)
        two(a, cmd[0], cmd[1:split], cmd[split + 1:])
    elif a.what == "run":
        p = run(cmd)
        check_common(p, 0 if a.rc is None else a.rc, a.stdout, a.stderr, a.one_line_error)
    elif a.what == "ndkinfo-json":
        p = run(cmd)
        check_common(p, 0, [], [])
        check_ndkinfo(json.loads(p.stdout))
    elif a.what == "ndkperf-json":
        p = run(cmd)
        check_common(p, 0 if a.rc is None else a.rc, [], [])
        check_ndkperf_json(p.stdout, a.runs)
    elif a.what == "ndkperf-csv":
        p = run(cmd)
        check_common(p, 0, [], [])
        check_ndkperf_csv(p.stdout, a.runs)
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
