#!/opt/shifter/bin/python
"""Runs one benchmark for `make bench` and records how it went, so that the report can give
each benchmark's duration and say why one has no results instead of leaving it out.

    python bench/timed.py BENCH_OUT NAME COMMAND...

Writes BENCH_OUT/runs/NAME.json: the command, its start and end, seconds, exit status and
its last output lines. Exits 0 even when the benchmark fails (the report names the failure
and `bench/report.py` exits non-zero), so one failing benchmark does not lose the others.
A benchmark still running after $BENCH_TIMEOUT seconds (default 900; the longest takes about
200 s) is interrupted (SIGINT: its own clean-up runs), then killed 60 s later; its exit
status is then 124.
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: timed.py BENCH_OUT NAME COMMAND...", file=sys.stderr)
        return 2
    out, name, command = Path(argv[0]), argv[1], argv[2:]
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=5)
    start_wall, start = time.time(), time.perf_counter()
    print(f"=== {name}: {shlex.join(command)} ({time.strftime('%H:%M:%S')})", flush=True)
    limit = float(os.environ.get("BENCH_TIMEOUT", "900"))
    timed_out = threading.Event()
    try:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # `make bench &`: the benchmark must
            signal.signal(signal.SIGINT, signal.default_int_handler)  # not inherit SIGINT ignored
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")

        def stop() -> None:  # a hung benchmark must not hold `make bench` (and the cluster) forever
            timed_out.set()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()

        timer = threading.Timer(limit, stop)
        timer.daemon = True
        timer.start()
        for line in proc.stdout:  # type: ignore[union-attr]
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.strip():
                tail.append(line.rstrip())
        rc = proc.wait()
        timer.cancel()
        if timed_out.is_set():
            rc = 124
            tail.append(f"stopped after {limit:.0f} s (BENCH_TIMEOUT)")
    except OSError as e:
        rc, tail = 127, collections.deque([f"cannot run {command[0]}: {e.strerror}"])
    seconds = time.perf_counter() - start
    record = {"bench": name, "command": shlex.join(command), "rc": rc, "seconds": round(seconds, 1),
              "start": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start_wall)),
              "end": time.strftime("%Y-%m-%d %H:%M:%S"), "tail": list(tail)}
    tmp = runs / f"{name}.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, runs / f"{name}.json")
    print(f"=== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
