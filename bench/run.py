#!/usr/bin/env python3
"""blebatt benchmark: blebatt vs a Python (aiobmsble/bleak) poller on a mock BlueZ.

    python3 bench/run.py [--ticks 300]      side-by-side comparison -> bench/results/latest.json
    python3 bench/run.py --soak             10,000-tick soak with link drops -> bench/results/soak.json

Stdlib only (the Python poller and the raw D-Bus client run in bench/.venv, created on demand
with Python 3.12 from bench/requirements.txt). See bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import glob
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
VENV = BENCH / ".venv"
VENV_PY = VENV / "bin" / "python"
BLEBATT = ROOT / "target" / "release" / "blebatt"
MOCK = ROOT / "target" / "release" / "examples" / "mock_bluez"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# name -> (kind for blebatt/python, mock option, MAC)
DEVICES = {
    "a": ("jbd", "--jbd4", "A4:C1:38:00:00:01"),
    "b": ("jbd", "--jbd4", "A4:C1:38:00:00:02"),
    "c": ("jbd", "--jbd16", "A4:C1:38:00:00:03"),
    "d": ("powermon", "--powermon", "C0:11:22:00:00:04"),
}

# ---------------------------------------------------------------------------------------------
# Child processes: every one is registered and stopped in `finally`; PR_SET_PDEATHSIG makes the
# kernel SIGTERM them should this driver die without running its cleanup.

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl


def _child_setup() -> None:
    _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Procs:
    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen]] = []

    def spawn(self, name: str, cmd: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(cmd, preexec_fn=_child_setup, **kw)
        self.items.append((name, p))
        return p

    def stop(self, p: subprocess.Popen, grace: float = 5.0) -> int | None:
        """Close stdin (the normal way to stop blebatt, the pollers and the mock), then
        SIGTERM, then SIGKILL."""
        if p.poll() is None and p.stdin and not p.stdin.closed:
            try:
                p.stdin.close()
            except OSError:
                pass
        elif p.poll() is None and p.stdin is None:
            p.terminate()
        try:
            return p.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        p.terminate()
        try:
            return p.wait(3)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(3)

    def stop_all(self) -> None:
        for name, p in reversed(self.items):
            if p.poll() is None:
                try:
                    self.stop(p, grace=3.0)
                except Exception as e:  # keep stopping the others
                    print(f"warning: could not stop {name} (pid {p.pid}): {e}", file=sys.stderr)
        self.items.clear()


class Lines:
    """Reads a child's stream on a thread: every line with its arrival time (monotonic)."""

    def __init__(self, stream, cond: threading.Condition, log_path: Path | None = None) -> None:
        self.items: list[tuple[float, str]] = []
        self.cond = cond
        self.log = open(log_path, "w") if log_path else None
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            t = time.monotonic()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.items.append((t, line))
                self.cond.notify_all()
            if self.log:
                self.log.write(line + "\n")
        if self.log:
            self.log.close()
        with self.cond:
            self.cond.notify_all()

    def __len__(self) -> int:
        return len(self.items)


DEVICE_TAG = re.compile(r"(?:^|,)device=([^,\s]+)")


class Poller:
    """blebatt run, or the Python poller: ticks on stdin, lines on stdout."""

    def __init__(self, procs: Procs, label: str, cmd: list[str], env: dict, names: list[str]):
        self.label = label
        self.names = names
        self.cond = threading.Condition()
        self.t_spawn = time.monotonic()
        self.p = procs.spawn(label, cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
        self.procs = procs
        self.out = Lines(self.p.stdout, self.cond)
        self.err = Lines(self.p.stderr, self.cond, RESULTS / f"{label}-stderr.log.tmp")

    def tick(self) -> float:
        self.p.stdin.write(b"\n")
        self.p.stdin.flush()
        return time.monotonic()

    def wait_tick(self, out_from: int, err_from: int, timeout: float,
                  give_up_on_failure: bool = False) -> tuple[bool, float | None, set[str]]:
        """Waits until every device printed a line after `out_from`. Returns (complete, time
        of the last of those lines, devices seen). With `give_up_on_failure`, a device that
        logged a failure on stderr since `err_from` is not waited for."""
        deadline = time.monotonic() + timeout
        want = set(self.names)
        with self.cond:
            while True:
                seen: set[str] = set()
                last = None
                for t, line in self.out.items[out_from:]:
                    m = DEVICE_TAG.search(line.split(" ", 1)[0])
                    if m:
                        seen.add(m.group(1))
                        last = t
                if want <= seen:
                    return True, last, seen
                if give_up_on_failure:
                    failed = {n for n in want - seen
                              for _, l in self.err.items[err_from:]
                              if l.startswith(("W! ", "E! ")) and f" {n} (" in f" {l[3:]}"}
                    if want <= seen | failed:
                        return False, last, seen
                left = deadline - time.monotonic()
                if left <= 0 or self.p.poll() is not None:
                    return False, last, seen
                self.cond.wait(min(left, 0.5))

    def status(self) -> dict:
        return proc_status(self.p.pid)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.p.pid)

    def cpu_clock_s(self) -> float | None:
        return proc_cpu_clock_s(self.p.pid)

    def stop(self) -> int | None:
        rc = self.procs.stop(self.p, grace=10.0)
        self.out.thread.join(2)
        self.err.thread.join(2)
        return rc


# ---------------------------------------------------------------------------------------------
# /proc

def proc_status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmSize", "VmData"):
                out[k + "_kib"] = int(v.split()[0])
            elif k == "Threads":
                out["threads"] = int(v)
    return out


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime = field 14, stime = field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cpu_clock_s(pid: int) -> float | None:
    """The same figure from the process's CPU-time clock (all threads, ns resolution;
    clock id as clock_getcpuclockid(3) builds it), or None where the kernel refuses."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:
        return None


def smaps_rollup(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if v.strip().endswith("kB"):
                    out[k.strip() + "_kib"] = int(v.split()[0])
    except OSError:
        pass
    return out


def pct(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, -(-len(s) * p // 100) - 1))
    return s[int(k)]


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 2)


def r3(x):
    return None if x is None else round(x, 3)


# ---------------------------------------------------------------------------------------------
# Setup

def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def build() -> None:
    run(["cargo", "build", "--release"])
    run(["cargo", "build", "--release", "--example", "mock_bluez"])


def find_python312() -> str:
    for c in [shutil.which("python3.12"), *sorted(glob.glob("/root/.pyenv/versions/3.12*/bin/python3.12")),
              *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12"))),
              "/usr/bin/python3.12"]:
        if c and os.access(c, os.X_OK):
            return c
    raise SystemExit("Python 3.12 not found (aiobmsble needs >= 3.12): install it, or make "
                     "bench/.venv yourself with it and `pip install -r bench/requirements.txt`")


def ensure_venv() -> None:
    check = [str(VENV_PY), "-c", "import aiobmsble, bleak, dbus_fast"]
    if VENV_PY.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return
    run([find_python312(), "-m", "venv", str(VENV)])
    run([str(VENV_PY), "-m", "pip", "install", "-q", "-r", str(BENCH / "requirements.txt")])
    subprocess.run(check, check=True)


def start_bus(procs: Procs, tmp: Path) -> str:
    p = procs.spawn("dbus-daemon", ["dbus-daemon", "--session", f"--address=unix:path={tmp}/bus.sock",
                                    "--nofork", "--print-address"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    addr = read_line_with_timeout(p.stdout, 10)
    if not addr:
        raise RuntimeError("dbus-daemon printed no address")
    return addr


def read_line_with_timeout(stream, timeout: float) -> str | None:
    box: list[str] = []
    t = threading.Thread(target=lambda: box.append(stream.readline().decode().strip()), daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else None


class Mock:
    def __init__(self, procs: Procs, bus: str, drop_every: int | None, label: str) -> None:
        cmd = [str(MOCK), "--bus-address", bus]
        for _, (_, opt, mac) in DEVICES.items():
            cmd += [opt, mac]
        if drop_every:
            cmd += ["--drop-every", str(drop_every)]
        self.cmd = cmd
        self.procs = procs
        self.errlog = RESULTS / f"{label}-stderr.log.tmp"
        self.errf = open(self.errlog, "w")
        self.p = procs.spawn("mock_bluez", cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=self.errf)
        line = read_line_with_timeout(self.p.stdout, 60)
        if not line or not line.startswith("DBUS_SYSTEM_BUS_ADDRESS="):
            raise RuntimeError(f"mock_bluez did not start: {line!r} (see {self.errlog})")
        self.address = line.split("=", 1)[1]

    def cpu_s(self) -> float:
        return proc_cpu_s(self.p.pid)

    def stop(self) -> dict:
        """Stops the mock (stdin EOF) and returns its per-device summary."""
        self.procs.stop(self.p, grace=10.0)
        self.errf.close()
        summary = {}
        pat = re.compile(r"mock_bluez: (\S+): connects (\d+) refused (\d+) disconnects (\d+) "
                         r"link drops (\d+) writes (\d+) reads (\d+) notifications (\d+)")
        for line in self.errlog.read_text().splitlines():
            m = pat.search(line)
            if m:
                keys = ["connects", "refused", "disconnects", "link_drops", "writes", "reads",
                        "notifications"]
                summary[m.group(1)] = dict(zip(keys, map(int, m.groups()[1:])))
        return summary


WRAP: list[str] = []  # --wrap: a profiler command put before blebatt's
BLEBATT_RUN = [BLEBATT]  # --blebatt: another build to run (e.g. unstripped, for a profiler)


def blebatt_cmd(names: list[str], wrap: bool = True) -> list[str]:
    cmd = [*(WRAP if wrap else []), str(BLEBATT_RUN[0]), "run"]
    for n in names:
        kind, _, mac = DEVICES[n]
        cmd += [f"--{kind}", f"{n}={mac}"]
    return cmd


def python_cmd(names: list[str]) -> list[str]:
    cmd = [str(VENV_PY), str(BENCH / "python_poller.py")]
    for n in names:
        kind, _, mac = DEVICES[n]
        cmd += [f"--{kind}", f"{n}={mac}"]
    return cmd


def env_for(bus: str) -> dict:
    env = dict(os.environ)
    env["DBUS_SYSTEM_BUS_ADDRESS"] = bus
    env.pop("RUST_LOG", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------------------------------------
# Measurements

def wait_connected(pl: Poller, timeout: float = 90.0) -> dict:
    """Ticks until one tick is answered by every device. Returns startup timings (ms)."""
    deadline = time.monotonic() + timeout
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        o, e = len(pl.out), len(pl.err)
        pl.tick()
        ok, last, _ = pl.wait_tick(o, e, 5.0)
        if ok:
            first = pl.out.items[0][0]
            return {
                "spawn_to_first_line_ms": round((first - pl.t_spawn) * 1000, 1),
                "spawn_to_first_complete_tick_ms": round((last - pl.t_spawn) * 1000, 1),
                "ticks_until_connected": tries,
            }
        if pl.p.poll() is not None:
            break
    tail = "\n".join(l for _, l in pl.err.items[-20:])
    raise RuntimeError(f"{pl.label}: not connected after {timeout:.0f}s (exit {pl.p.poll()}); "
                       f"stderr tail:\n{tail}")


def quiet(pl: Poller, period: float = 0.3) -> None:
    """Waits until no line arrived for `period` (stray answers of extra connect ticks)."""
    while True:
        n = len(pl.out)
        time.sleep(period)
        if len(pl.out) == n:
            return


def measure_poller(procs: Procs, label: str, cmd: list[str], env: dict, names: list[str],
                   ticks: int, gap: float, timeout: float, mock: Mock,
                   rss_every: int = 0, rss_at: tuple[int, ...] = (),
                   give_up_on_failure: bool = False, progress: int = 0,
                   settle: float = 0.0) -> dict:
    print(f"\n== {label}: {' '.join(cmd)}", flush=True)
    pl = Poller(procs, label, cmd, env, names)
    try:
        startup = wait_connected(pl)
        quiet(pl)
        status_start = pl.status()
        out0, err0 = len(pl.out), len(pl.err)
        cpu0, clk0, mock_cpu0, t0 = pl.cpu_s(), pl.cpu_clock_s(), mock.cpu_s(), time.monotonic()
        lat: list[float] = []
        incomplete = 0
        missed: list[list] = []  # [tick, devices without a line, ms waited]
        rss: dict[int, dict] = {}
        for i in range(1, ticks + 1):
            o, e = len(pl.out), len(pl.err)
            t = pl.tick()
            ok, last, seen = pl.wait_tick(o, e, timeout, give_up_on_failure)
            if ok:
                lat.append((last - t) * 1000)
            else:
                incomplete += 1
                missed.append([i, "".join(sorted(set(names) - seen)),
                               round((time.monotonic() - t) * 1000, 1)])
                if give_up_on_failure and settle:
                    # blebatt logs a loss just BEFORE its poll returns and frees the device's
                    # slot; a tick sent within that window is coalesced for the device (its
                    # documented behaviour), which would count as a lost line of the harness's
                    # making. Telegraf never ticks that fast.
                    time.sleep(settle)
                if pl.p.poll() is not None:
                    raise RuntimeError(f"{label} exited with {pl.p.returncode} at tick {i}")
            if (rss_every and i % rss_every == 0) or i in rss_at:
                s = pl.status()
                rss[i] = {"VmRSS_kib": s["VmRSS_kib"], "VmHWM_kib": s["VmHWM_kib"],
                          "RssAnon_kib": s.get("RssAnon_kib")}
            if progress and i % progress == 0:
                print(f"  {label}: tick {i}/{ticks}, RSS {pl.status()['VmRSS_kib']} KiB, "
                      f"lines {len(pl.out) - out0}/{i * len(names)}, "
                      f"{time.monotonic() - t0:.0f}s", flush=True)
            if gap:
                time.sleep(gap)
        if give_up_on_failure:
            time.sleep(0.5)  # a line of the last tick still on its way counts
        wall = time.monotonic() - t0
        cpu = pl.cpu_s() - cpu0
        clk1 = pl.cpu_clock_s()
        cpu_clock = clk1 - clk0 if clk0 is not None and clk1 is not None else None
        mock_cpu = mock.cpu_s() - mock_cpu0
        received = len(pl.out) - out0
        by_device: dict[str, int] = {n: 0 for n in names}
        for _, line in pl.out.items[out0:]:
            m = DEVICE_TAG.search(line.split(" ", 1)[0])
            if m and m.group(1) in by_device:
                by_device[m.group(1)] += 1
        status_end = pl.status()
        rollup = smaps_rollup(pl.p.pid)
        stderr_phase = [l for _, l in pl.err.items[err0:]]
    finally:
        rc = pl.stop()
    stderr_all = [l for _, l in pl.err.items]
    expected = ticks * len(names)
    return {
        "command": cmd,
        "ticks": ticks,
        "tick_gap_s": gap,
        "tick_timeout_s": timeout,
        "startup": startup,
        "steady_rss_kib": status_end["VmRSS_kib"],
        "peak_rss_kib": status_end["VmHWM_kib"],
        "status_after_connect": status_start,
        "status_at_end": status_end,
        "smaps_rollup_at_end": rollup,
        "cpu_s_tick_phase": round(cpu, 3),
        "cpu_ms_per_tick": round(cpu * 1000 / ticks, 4),
        "cpu_ms_per_tick_cpu_clock": None if cpu_clock is None else round(cpu_clock * 1000 / ticks, 4),
        "mock_cpu_ms_per_tick": round(mock_cpu * 1000 / ticks, 4),
        "wall_s_tick_phase": round(wall, 2),
        "latency_ms": {
            "p50": r3(pct(lat, 50)), "p90": r3(pct(lat, 90)), "p99": r3(pct(lat, 99)),
            "max": r3(max(lat) if lat else None), "mean": r3(statistics.fmean(lat) if lat else None),
            "n_complete_ticks": len(lat),
        },
        "incomplete_ticks": incomplete,
        "incomplete_tick_list": missed,
        "lines_by_device": by_device,
        "lines_received": received,
        "lines_expected": expected,
        "lines_lost": expected - received,
        "rss_samples": {str(k): v for k, v in rss.items()},
        "stderr_lines_tick_phase": len(stderr_phase),
        "stderr_reconnected": sum("reconnected" in l for l in stderr_all),
        "stderr_connection_lost": sum("connection lost" in l for l in stderr_all),
        "stderr_tail": stderr_all[-8:],
        "exit_code": rc,
    }


def measure_startup(procs: Procs, label: str, cmd: list[str], env: dict, runs: int) -> dict:
    """Spawn -> first line, one JBD; the first tick is written right after spawn (and
    repeated every 0.5 s until a line arrives)."""
    times = []
    for r in range(runs):
        pl = Poller(procs, f"{label}-startup", cmd, env, ["a"])
        try:
            pl.tick()
            deadline = pl.t_spawn + 60
            while not pl.out.items and time.monotonic() < deadline and pl.p.poll() is None:
                with pl.cond:
                    pl.cond.wait(0.5)
                if not pl.out.items:
                    pl.tick()
            if not pl.out.items:
                raise RuntimeError(f"{label}: no line within 60 s (startup run {r + 1})")
            times.append((pl.out.items[0][0] - pl.t_spawn) * 1000)
        finally:
            pl.stop()
        time.sleep(0.3)
    return {"runs_ms": [round(t, 1) for t in times], "median_ms": round(statistics.median(times), 1)}


def measure_raw(env: dict, mac: str, n: int) -> dict:
    cmd = [str(VENV_PY), str(BENCH / "raw_roundtrip.py"), "--mac", mac, "-n", str(n)]
    for kind, _, m in DEVICES.values():
        cmd += [f"--{kind}", m]
    print(f"\n== raw D-Bus round trip: {' '.join(cmd)}", flush=True)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                       preexec_fn=_child_setup)
    if p.returncode != 0:
        raise RuntimeError(f"raw_roundtrip.py failed ({p.returncode}):\n{p.stderr}")
    return json.loads(p.stdout)


def static_footprint() -> dict:
    st = os.stat(BLEBATT)
    size_out = subprocess.run(["size", str(BLEBATT)], capture_output=True, text=True).stdout
    nums = {}
    lines = size_out.strip().splitlines()
    if len(lines) >= 2:
        hdr, vals = lines[0].split(), lines[1].split()
        nums = {k: int(v) for k, v in zip(hdr, vals) if v.isdigit()}
    file_out = ""
    if shutil.which("file"):
        file_out = subprocess.run(["file", "-b", str(BLEBATT)], capture_output=True, text=True).stdout.strip()
    return {
        "path": str(BLEBATT.relative_to(ROOT)),
        "file_size_bytes": st.st_size,
        "file_size_mib": round(st.st_size / 2**20, 2),
        "stripped": ("not stripped" not in file_out) if file_out else None,
        "file": file_out,
        "size_output": size_out.rstrip(),
        "size": nums,
    }


def machine_info() -> dict:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def git(*a):
        p = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None

    dirty = git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock", "examples", "tests/support")
    return {
        "uname_m": platform.machine(),
        "uname_r": platform.release(),
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "blebatt_commit": git("rev-parse", "HEAD"),
        "blebatt_source_dirty": bool(dirty),
        "rustc": (subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
                  if shutil.which("rustc") else None),
        "python_poller": subprocess.run(
            [str(VENV_PY), "-c", "import sys, importlib.metadata as m; print(sys.version.split()[0], "
             "*[f'{p}=={m.version(p)}' for p in ('aiobmsble','bleak','bleak-retry-connector','dbus-fast')])"],
            capture_output=True, text=True).stdout.strip(),
    }


# ---------------------------------------------------------------------------------------------
# Reports

def fmt(x, nd=2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def ratio(a, b) -> str:
    if a is None or b in (None, 0):
        return "-"
    return f"{a / b:.3f}"


def print_table(rows: list[tuple[str, str, str, str]]) -> str:
    hdr = ("figure", "blebatt", "python", "ratio blebatt/python")
    w = [max(len(r[i]) for r in [hdr, *rows]) for i in range(4)]
    out = []
    out.append(" | ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
    out.append("-|-".join("-" * w[i] for i in range(4)))
    for r in rows:
        out.append(" | ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
    text = "\n".join(out)
    print(text)
    return text


def print_static(st: dict) -> None:
    print(f"\nstatic footprint: {st['path']} {st['file_size_bytes']} bytes ({st['file_size_mib']} MiB), "
          f"stripped={st['stripped']}")
    print(st["size_output"])


def comparison(args, procs: Procs, bus: str) -> dict:
    names = list(DEVICES)
    mock = Mock(procs, bus, None, "mock-compare")
    env = env_for(mock.address)
    raw = measure_raw(env, DEVICES["a"][2], args.raw_n)
    bb = measure_poller(procs, "blebatt", blebatt_cmd(names), env, names, args.ticks, args.gap, args.timeout, mock)
    py = measure_poller(procs, "python", python_cmd(names), env, names, args.ticks, args.gap, args.timeout, mock)
    print(f"\n== startup, one JBD, {args.startup_runs} runs each", flush=True)
    su_bb = measure_startup(procs, "blebatt", blebatt_cmd(["a"], wrap=False), env, args.startup_runs)
    su_py = measure_startup(procs, "python", python_cmd(["a"]), env, args.startup_runs)
    mock_summary = mock.stop()

    raw50 = raw["request_0x03"]["p50_ms"]
    raw99 = raw["request_0x03"]["p99_ms"]
    pair50 = raw["request_0x03_then_0x04"]["p50_ms"]
    overhead = bb["latency_ms"]["p50"] / raw50 if raw50 else None
    overhead_pair = bb["latency_ms"]["p50"] / pair50 if pair50 else None
    tick50 = raw["all_devices_tick"]["p50_ms"]
    overhead_tick = bb["latency_ms"]["p50"] / tick50 if tick50 else None
    py_overhead = py["latency_ms"]["p50"] / raw50 if raw50 else None

    rows = [
        ("steady RSS MiB", fmt(mib(bb["steady_rss_kib"])), fmt(mib(py["steady_rss_kib"])),
         ratio(bb["steady_rss_kib"], py["steady_rss_kib"])),
        ("peak RSS MiB", fmt(mib(bb["peak_rss_kib"])), fmt(mib(py["peak_rss_kib"])),
         ratio(bb["peak_rss_kib"], py["peak_rss_kib"])),
        ("CPU ms/tick (utime+stime)", fmt(bb["cpu_ms_per_tick"], 3), fmt(py["cpu_ms_per_tick"], 3),
         ratio(bb["cpu_ms_per_tick"], py["cpu_ms_per_tick"])),
        ("CPU ms/tick (process CPU clock, ns res.)", fmt(bb["cpu_ms_per_tick_cpu_clock"], 3),
         fmt(py["cpu_ms_per_tick_cpu_clock"], 3),
         ratio(bb["cpu_ms_per_tick_cpu_clock"], py["cpu_ms_per_tick_cpu_clock"])),
        ("latency p50 ms (tick -> last of 4 lines)", fmt(bb["latency_ms"]["p50"]), fmt(py["latency_ms"]["p50"]),
         ratio(bb["latency_ms"]["p50"], py["latency_ms"]["p50"])),
        ("latency p99 ms", fmt(bb["latency_ms"]["p99"]), fmt(py["latency_ms"]["p99"]),
         ratio(bb["latency_ms"]["p99"], py["latency_ms"]["p99"])),
        ("lines received/expected", f"{bb['lines_received']}/{bb['lines_expected']}",
         f"{py['lines_received']}/{py['lines_expected']}", "-"),
        ("startup to first line ms (1 JBD, median)", fmt(su_bb["median_ms"], 1), fmt(su_py["median_ms"], 1),
         ratio(su_bb["median_ms"], su_py["median_ms"])),
        ("start to first full tick ms (4 devices)", fmt(bb["startup"]["spawn_to_first_complete_tick_ms"], 1),
         fmt(py["startup"]["spawn_to_first_complete_tick_ms"], 1),
         ratio(bb["startup"]["spawn_to_first_complete_tick_ms"], py["startup"]["spawn_to_first_complete_tick_ms"])),
        ("raw D-Bus round trip 0x03 p50 / p99 ms", f"{raw50:.2f} / {raw99:.2f}", "(same mock)", "-"),
        ("raw 0x03 then 0x04 p50 / p99 ms", f"{pair50:.2f} / {raw['request_0x03_then_0x04']['p99_ms']:.2f}",
         "(same mock)", "-"),
        ("raw all-4-devices tick p50 / p99 ms", f"{tick50:.2f} / {raw['all_devices_tick']['p99_ms']:.2f}",
         "(same mock)", "-"),
        ("latency overhead = p50 / raw 0x03 p50", f"{overhead:.2f}x", f"{py_overhead:.2f}x", "-"),
        ("  p50 / raw 0x03+0x04 p50", f"{overhead_pair:.2f}x", f"{py['latency_ms']['p50'] / pair50:.2f}x", "-"),
        ("  p50 / raw all-4-devices tick p50", f"{overhead_tick:.2f}x",
         f"{py['latency_ms']['p50'] / tick50:.2f}x", "-"),
        ("mock CPU ms/tick (context)", fmt(bb["mock_cpu_ms_per_tick"], 3), fmt(py["mock_cpu_ms_per_tick"], 3), "-"),
    ]
    print(f"\n== {args.ticks} ticks, 4 devices (2 JBD 4S, 1 JBD 16S, 1 PowerMon), mock BlueZ on dbus-daemon\n")
    table = print_table(rows)

    steady_mib = bb["steady_rss_kib"] / 1024
    targets = {
        "steady_rss_le_8mib": {"value_mib": round(steady_mib, 2), "pass": steady_mib <= 8},
        "steady_rss_le_one_fifth_python": {"ratio": round(bb["steady_rss_kib"] / py["steady_rss_kib"], 3),
                                           "pass": bb["steady_rss_kib"] * 5 <= py["steady_rss_kib"]},
        "cpu_per_tick_le_one_tenth_python": {
            "ratio": round(bb["cpu_ms_per_tick"] / py["cpu_ms_per_tick"], 3) if py["cpu_ms_per_tick"] else None,
            "ratio_cpu_clock": (round(bb["cpu_ms_per_tick_cpu_clock"] / py["cpu_ms_per_tick_cpu_clock"], 3)
                                if py.get("cpu_ms_per_tick_cpu_clock") else None),
            "pass": bb["cpu_ms_per_tick"] * 10 <= py["cpu_ms_per_tick"]},
        "latency_overhead_le_2x_raw": {"overhead": round(overhead, 2), "pass": overhead <= 2.0},
        "no_lines_lost": {"blebatt_lost": bb["lines_lost"], "pass": bb["lines_lost"] == 0},
    }
    print("\ntargets:")
    for k, v in targets.items():
        print(f"  {'PASS' if v['pass'] else 'MISS'}  {k}  {json.dumps({x: y for x, y in v.items() if x != 'pass'})}")
    return {
        "kind": "comparison",
        "devices": {n: {"kind": k, "mock": o, "mac": m} for n, (k, o, m) in DEVICES.items()},
        "mock_command": mock.cmd,
        "raw_dbus_roundtrip": raw,
        "blebatt": bb,
        "python": py,
        "startup_one_jbd": {"blebatt": su_bb, "python": su_py},
        "latency_overhead_vs_raw_0x03_p50": round(overhead, 3),
        "latency_overhead_vs_raw_pair_p50": round(overhead_pair, 3),
        "latency_overhead_vs_raw_all_devices_tick_p50": round(overhead_tick, 3),
        "python_latency_overhead_vs_raw_0x03_p50": round(py_overhead, 3),
        "targets": targets,
        "mock_summary": mock_summary,
        "table": table,
        "python_poller": "bench/python_poller.py: aiobmsble JBD driver (bleak) for the 3 JBDs, "
                         "plain bleak read_gatt_char for the PowerMon",
    }


def soak(args, procs: Procs, bus: str) -> dict:
    names = list(DEVICES)
    mock = Mock(procs, bus, args.drop_every, "mock-soak")
    env = env_for(mock.address)
    at = (1000, args.soak_ticks)
    res = measure_poller(procs, "blebatt-soak", blebatt_cmd(names), env, names, args.soak_ticks, 0.0,
                         args.soak_timeout, mock, rss_every=100, rss_at=at, give_up_on_failure=True,
                         progress=1000, settle=args.soak_settle)
    summary = mock.stop()
    drops = sum(d["link_drops"] for d in summary.values())
    s = res["rss_samples"]
    rss1k = s.get("1000", {}).get("VmRSS_kib")
    rssN = s.get(str(args.soak_ticks), {}).get("VmRSS_kib")
    lost = res["lines_lost"]
    out = {
        "kind": "soak",
        "ticks": args.soak_ticks,
        "drop_every_polls": args.drop_every,
        "tick_timeout_s": args.soak_timeout,
        "settle_after_failed_tick_s": args.soak_settle,
        "rss_kib_at_tick_1000": rss1k,
        f"rss_kib_at_tick_{args.soak_ticks}": rssN,
        "rss_growth_kib": (rssN - rss1k) if rss1k and rssN else None,
        # Growth still going on at the end, or a plateau? (RSS at the last sample minus RSS
        # half-way; every 100 ticks are sampled.)
        "rss_growth_kib_second_half": (
            rssN - s[str(args.soak_ticks // 2 // 100 * 100)]["VmRSS_kib"]
            if rssN and str(args.soak_ticks // 2 // 100 * 100) in s else None),
        "peak_rss_kib": res["peak_rss_kib"],
        "lines_expected": res["lines_expected"],
        "lines_received": res["lines_received"],
        "lines_lost": lost,
        "link_drops_by_mock": drops,
        "lines_lost_per_link_drop": round(lost / drops, 3) if drops else None,
        "lines_lost_beyond_one_per_drop": lost - drops,
        "reconnects_stderr": res["stderr_reconnected"],
        "connection_lost_stderr": res["stderr_connection_lost"],
        "incomplete_ticks": res["incomplete_ticks"],
        "cpu_ms_per_tick": res["cpu_ms_per_tick"],
        "cpu_ms_per_tick_cpu_clock": res["cpu_ms_per_tick_cpu_clock"],
        "latency_ms": res["latency_ms"],
        "wall_s": res["wall_s_tick_phase"],
        "mock_summary": summary,
        "blebatt": res,
    }
    growth = out["rss_growth_kib"]
    out["targets"] = {
        # "No growth": at most 16 pages between tick 1,000 and the end (allocator noise).
        "no_rss_growth": {"growth_kib": growth, "threshold_kib": 64,
                          "pass": growth is not None and growth <= 64},
        "no_lines_lost_except_during_a_link_drop": {
            "lost": lost, "link_drops": drops, "pass": lost <= drops},
    }
    print(f"\n== soak: {args.soak_ticks} ticks, --drop-every {args.drop_every}, {res['wall_s_tick_phase']:.0f} s")
    print(f"  RSS at tick 1000: {rss1k} KiB; at tick {args.soak_ticks}: {rssN} KiB; growth {growth} KiB; "
          f"peak {res['peak_rss_kib']} KiB; growth over the second half {out['rss_growth_kib_second_half']} KiB")
    print(f"  lines: {res['lines_received']}/{res['lines_expected']} received, {lost} lost; "
          f"link drops (mock): {drops}; lost per drop: {out['lines_lost_per_link_drop']}")
    print(f"  reconnects (stderr 'reconnected'): {res['stderr_reconnected']}; "
          f"'connection lost': {res['stderr_connection_lost']}")
    print(f"  CPU {res['cpu_ms_per_tick']:.3f} ms/tick (CPU clock: {res['cpu_ms_per_tick_cpu_clock']}); latency p50 {res['latency_ms']['p50']} ms, "
          f"p99 {res['latency_ms']['p99']} ms over {res['latency_ms']['n_complete_ticks']} complete ticks; "
          f"blebatt exit {res['exit_code']}")
    print("  targets:")
    for k, v in out["targets"].items():
        print(f"    {'PASS' if v['pass'] else 'MISS'}  {k}  {json.dumps({x: y for x, y in v.items() if x != 'pass'})}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=300)
    ap.add_argument("--gap", type=float, default=0.05, help="pause between ticks, s (comparison)")
    ap.add_argument("--timeout", type=float, default=5.0, help="wait for a tick's lines, s (comparison)")
    ap.add_argument("--raw-n", type=int, default=200)
    ap.add_argument("--startup-runs", type=int, default=5)
    ap.add_argument("--soak", action="store_true", help="run the soak instead of the comparison")
    ap.add_argument("--soak-ticks", type=int, default=10_000)
    ap.add_argument("--drop-every", type=int, default=50)
    ap.add_argument("--soak-timeout", type=float, default=1.0,
                    help="wait for a tick's lines during the soak, s (ends early for a device "
                         "that logged a failure)")
    ap.add_argument("--soak-settle", type=float, default=0.05,
                    help="pause after a soak tick that ended early on a logged failure, s")
    ap.add_argument("--output", default="", help="write the JSON here instead")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--wrap", default="",
                    help="profiling only: run blebatt under this command, e.g. "
                         "'valgrind --tool=massif --massif-out-file=bench/results/massif.out.tmp' "
                         "(its RSS/CPU figures are then the profiler's, not blebatt's)")
    ap.add_argument("--blebatt", default="",
                    help="profiling only: run this blebatt binary instead of target/release/blebatt")
    args = ap.parse_args()
    WRAP[:] = shlex.split(args.wrap)
    if args.blebatt:
        BLEBATT_RUN[0] = Path(args.blebatt).resolve()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.no_build:
        build()
    ensure_venv()
    for b in (BLEBATT, MOCK):
        if not b.exists():
            raise SystemExit(f"missing {b}: build first")

    st = static_footprint()
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="blebatt-bench-"))
    try:
        bus = start_bus(procs, tmp)
        info = machine_info()
        if args.soak:
            res = soak(args, procs, bus)
            path = RESULTS / "soak.json"
        else:
            res = comparison(args, procs, bus)
            path = RESULTS / "latest.json"
        if WRAP or args.blebatt:  # a profiling run: keep the real results
            path = RESULTS / f"profile-{path.stem}.json.tmp"
            res["profiling"] = {"wrap": WRAP, "blebatt": str(BLEBATT_RUN[0])}
        if args.output:
            path = Path(args.output).resolve()
        print_static(st)
        res = {"machine": info, "static_footprint": st, **res}
        path.write_text(json.dumps(res, indent=2) + "\n")
        print(f"\nwrote {os.path.relpath(path, ROOT)}")
        return 0
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
