#!/usr/bin/env python3
"""blebatt's own CPU per tick, without D-Bus: `blebatt run --demo` driven like Telegraf.

    python3 bench/ticks_demo.py [--ticks 5000] [--rounds 3] [BINARY ...]

Writes a newline to the binary's stdin (as Telegraf's `signal = "STDIN"` does), waits for the
demo's three lines, and repeats; the CPU time the process used (utime + stime from
/proc/PID/stat) is divided by the number of ticks. The demo devices answer at once, so what is
measured is blebatt's own work per tick: reading stdin, waking the device tasks, reassembling
and decoding the demo's frames, writing the lines. The D-Bus side (bench/run.py) is not in it.
Binaries are run in turn, round after round, so that a change in machine load hits them alike.
Default binary: target/release/blebatt (build it first). Stdlib only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_LINES_PER_TICK = 6
WARM_UP_TICKS = 50


def cpu_ticks(pid: int) -> int:
    """utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def measure(binary: str, ticks: int) -> tuple[float, float]:
    """(CPU ms per tick, wall ms per tick)."""
    p = subprocess.Popen([binary, "run", "--demo", "-q"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    pending = b""

    def tick() -> None:
        nonlocal pending
        p.stdin.write(b"\n")
        while pending.count(b"\n") < DEMO_LINES_PER_TICK:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                raise SystemExit(f"{binary} ended early (exit {p.wait()})")
            pending += chunk
        pending = pending.split(b"\n", DEMO_LINES_PER_TICK)[-1]

    try:
        for _ in range(WARM_UP_TICKS):
            tick()
        cpu0, t0 = cpu_ticks(p.pid), time.monotonic()
        for _ in range(ticks):
            tick()
        cpu1, t1 = cpu_ticks(p.pid), time.monotonic()
    finally:
        p.stdin.close()
        p.wait()
    clk = os.sysconf("SC_CLK_TCK")
    return (cpu1 - cpu0) / clk * 1000 / ticks, (t1 - t0) * 1000 / ticks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("binaries", nargs="*", default=[str(ROOT / "target" / "release" / "blebatt")])
    args = ap.parse_args()
    results: dict[str, list[float]] = {b: [] for b in args.binaries}
    for r in range(args.rounds):
        for b in args.binaries:
            cpu, wall = measure(b, args.ticks)
            results[b].append(cpu)
            print(f"round {r + 1}  {b}: CPU {cpu:.4f} ms/tick, wall {wall:.3f} ms/tick", flush=True)
    print("\nmedian CPU ms/tick:")
    for b, cpus in results.items():
        print(f"  {sorted(cpus)[len(cpus) // 2]:.4f}  {b}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
