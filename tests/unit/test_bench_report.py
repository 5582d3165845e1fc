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
