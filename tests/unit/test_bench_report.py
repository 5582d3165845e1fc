"""bench/report.py turns the benchmarks' JSON into bench/report.md: the sections on
the prolog's time per node vs node count and on MPI (each kind of step, the step path per
task, the swap module's prolog cost) come from the series the benchmarks write."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if not os.environ.get("CI"):
    pytest.importorskip("matplotlib", reason="the bench extras (pip install '.[bench]') draw the plots")
sys.path.insert(0, str(REPO / "bench"))
import report  # noqa: E402

STEPS = report.PROLOG_STEPS


def _write(directory: Path, name: str, data: dict) -> None:
    base = {"command": f"python bench/{name}.py", "note": f"{name} note", "when": "2026-11-30 04:00:00",
            "argv": [], "ratios": [], "series": {}}
    (directory / f"{name}.json").write_text(json.dumps({**base, **data, "bench": name}))


def test_prolog_scale_and_mpi_sections(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    nodes = [3, 8, 16]
    _write(out, "bench_prolog_scale", {"series": {"prolog_scale": {
        "nodes": nodes, "prolog_ms": [100.0, 300.0, 700.0], "prolog_max_ms": [120.0, 350.0, 900.0],
        "start_s": [1.5, 2.5, 4.0], **{f"{s}_ms": [float(i + 1)] * 3 for i, s in enumerate(STEPS)}}}})
    _write(out, "bench_mpi", {
        "ratios": [{"what": "MPI hello", "ours": 110.0, "peer": 100.0, "peer_name": "native srun", "unit": "ms",
                    "ratio": 1.1, "target": "<= 1.1", "met": True, "overhead_ms": -3.0}],
        "series": {"mpi_times": {"side": ["native", "swap"], "median_ms": [100.0, 110.0], "q1_ms": [95.0, 105.0],
                                 "q3_ms": [104.0, 116.0]},
                   "mpi_phases_container": {"phase": ["join"], "ms": [0.05]},
                   "mpi_phases_swap": {"phase": ["join"], "ms": [0.07]},
                   "mpi_prolog": {"job": ["plain", "swap"], "build_ms": [16.0, 129.0], "root_hooks_ms": [0.0, 120.0]}}})
    md = tmp_path / "report.md"
    assert report.main([str(out), str(md)]) == 0
    text = md.read_text()
    assert "## Prolog time per node vs node count" in text
    assert "| 16 | 700 | 900 | " + " | ".join(f"{i + 1:.1f}" for i in range(len(STEPS))) + " | 4.00 |" in text
    assert f"At 16 nodes the largest step is `{STEPS[-1]}` ({len(STEPS)} of 700 ms" in text
    assert "| swap | 110.0 | 105.0 .. 116.0 |" in text and "| join | 0.05 | 0.07 |" in text
    assert "129 ms with `--module=mpich`" in text and "root hook" in text
    assert "**1.10** (-3.0 ms)" in text  # an overhead below the peer's, signed once
    assert (tmp_path / "plots/prolog_scale.png").stat().st_size > 0 and (tmp_path / "plots/ratios.png").exists()


def test_the_step_floor_section(tmp_path):
    """bench_step_floor's layers (issue 19: where a step's milliseconds go below our code)."""
    out = tmp_path / "out"
    out.mkdir()
    _write(out, "bench_step_floor", {"series": {"step_floor": {
        "variant": ["nothing", "libpython", "interpreter"], "ms": [0.7, 1.8, 6.1], "over_previous": [0.0, 1.1, 4.3]}}})
    md = tmp_path / "report.md"
    assert report.main([str(out), str(md)]) == 0
    text = md.read_text()
    assert "## The floor under a step's milliseconds" in text
    assert "| libpython | 1.80 | +1.10 |" in text and "| interpreter | 6.10 | +4.30 |" in text


def _ratio(what: str, ours: float, peer: float, peer_name: str, target: str = "", met=None) -> dict:
    return {"what": what, "ours": ours, "peer": peer, "peer_name": peer_name, "unit": "ms", "ratio": ours / peer,
            "target": target, "met": met}


def _run(directory: Path, name: str, rc: int, seconds: float, start: str, end: str, tail: list[str]) -> None:
    runs = directory / "runs"
    runs.mkdir(exist_ok=True)
    (runs / f"{name}.json").write_text(json.dumps({"bench": name, "command": f"python bench/{name}.py --json x",
                                                    "rc": rc, "seconds": seconds, "start": start, "end": end,
                                                    "tail": tail}))


def test_client_lookup_scale_and_gpu_rows_durations_and_span(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _write(out, "bench_client", {"ratios": [
        _ratio("shifterimg lookup (a process), one HTTP client per process vs a client per call", 80.0, 100.0,
               "client per call (httpx.request)")]})
    _write(out, "bench_lookup_scale", {"ratios": [
        _ratio(f"lookup at 10000 images ({b}) vs the 10 ms budget", ms, 10.0, "budget", "<= 1", ms <= 10)
        for b, ms in (("sqlite", 2.5), ("postgresql", 12.0))]})
    _write(out, "bench_gpu_stream", {"skipped": "no GPU (no NVIDIA driver loaded here: /proc/driver/nvidia/version "
                                                "is missing)"})
    _run(out, "bench_client", 0, 31.0, "2026-11-30 05:00:00", "2026-11-30 05:00:31", ["ratio 1.25"])
    _run(out, "bench_lookup_scale", 1, 64.0, "2026-11-30 05:01:00", "2026-11-30 05:02:04", ["OVER the 10 ms target"])
    _run(out, "bench_gpu_stream", 0, 0.4, "2026-11-30 05:22:00", "2026-11-30 05:22:01", ["SKIP: no NVIDIA driver"])
    md = tmp_path / "report.md"
    assert report.main([str(out), str(md)]) == 1  # bench_lookup_scale exited 1: the report names it, make fails
    text = md.read_text()
    assert "one `make bench` run from 2026-11-30 05:00:00 to 2026-11-30 05:22:01 (22 minutes)" in text
    assert "| bench_client | shifterimg lookup (a process), one HTTP client per process vs a client per call | " \
           "80.0 ms | 100.0 ms (client per call (httpx.request)) | **0.80** |" in text
    assert "| bench_lookup_scale | lookup at 10000 images (sqlite) vs the 10 ms budget | 2.5 ms | " in text
    assert "| bench_lookup_scale | lookup at 10000 images (postgresql) vs the 10 ms budget | 12.0 ms | " in text
    assert "| bench_gpu_stream | **not run: no GPU (no NVIDIA driver loaded here: /proc/driver/nvidia/version " \
           "is missing)** |" in text
    commands = text.split("## Commands", 1)[1]
    assert "- `bench_client` (31 s): `python bench/bench_client.py`" in commands
    assert "- `bench_lookup_scale` (64 s): " in commands and "- `bench_gpu_stream` (0 s): " in commands
    assert "**exited 1** (its last line: OVER the 10 ms target)" in commands  # it wrote its ratios, then failed
    assert "together 1.6 minutes of benchmarks" in commands  # 31 + 64 + 0.4 s


def test_a_benchmark_without_json_is_a_not_run_line(tmp_path):
    """Every bench/bench_*.py has a line: a missing JSON or a crash says so, the report is still written."""
    out = tmp_path / "out"
    out.mkdir()
    _write(out, "bench_client", {"ratios": [_ratio("lookup", 80.0, 100.0, "before")]})
    _run(out, "bench_srun", 1, 12.0, "2026-11-30 05:00:00", "2026-11-30 05:00:12",
         ["Traceback (most recent call last):", "RuntimeError: srun | failed"])
    _run(out, "bench_layers", 0, 5.0, "2026-11-30 05:00:12", "2026-11-30 05:00:17", ["done"])
    md = tmp_path / "report.md"
    assert report.main([str(out), str(md)]) == 1
    text = md.read_text()
    assert "| bench_srun | **failed (exit 1 after 12 s): RuntimeError: srun / failed** |" in text  # one cell
    assert f"| bench_layers | **ran (exit 0 in 5 s) but wrote no JSON to {out}** |" in text
    others = sorted(p.stem for p in (REPO / "bench").glob("bench_*.py")
                    if p.stem not in ("bench_client", "bench_srun", "bench_layers"))
    assert others and all(f"| {name} | **not run: no results in {out} (`make bench` runs it)** |" in text
                          for name in others)


def test_no_results_at_all_is_one_line(tmp_path, capsys):
    assert report.main([str(tmp_path / "nothing"), str(tmp_path / "report.md")]) == 1
    assert capsys.readouterr().err.strip() == (f"no results in {tmp_path / 'nothing'}: run the benchmarks with "
                                               "--json (make bench)")
    assert not (tmp_path / "report.md").exists()
