"""bench/timed.py, which `make bench` runs each benchmark through: it records how the run went
(duration, exit status, last lines) and goes on, so one failing or hung benchmark costs the
report one line, not the other benchmarks' results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIMED = str(REPO / "bench/timed.py")


def _timed(out: Path, name: str, code: str, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, TIMED, str(out), name, sys.executable, "-c", code], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr  # make goes on to the next benchmark
    return json.loads((out / "runs" / f"{name}.json").read_text())


def test_a_failing_benchmark_is_recorded_with_its_exit_and_last_line(tmp_path):
    run = _timed(tmp_path, "bench_x", "print('measuring', flush=True); raise SystemExit('bench_x: no registry here')")
    assert run["rc"] == 1 and run["tail"] == ["measuring", "bench_x: no registry here"]
    assert run["bench"] == "bench_x" and run["seconds"] >= 0 and run["start"] <= run["end"]
    assert _timed(tmp_path, "bench_y", "print('ok')")["rc"] == 0


def test_a_hung_benchmark_is_interrupted_and_cleans_up(tmp_path):
    code = "import time\ntry:\n    time.sleep(60)\nfinally:\n    print('cleaned up')"
    run = _timed(tmp_path, "bench_hung", code, env={"BENCH_TIMEOUT": "1", "PATH": "/usr/bin:/bin"})
    assert run["rc"] == 124 and run["seconds"] < 30
    assert "cleaned up" in run["tail"] and run["tail"][-1] == "stopped after 1 s (BENCH_TIMEOUT)"
