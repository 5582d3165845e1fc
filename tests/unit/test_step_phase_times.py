"""The step path's phase marks (shifter_wlm/task.py), shown by `srun shifter -v`: each phase's
time since the mark before it, in order."""

from __future__ import annotations

from shifter_wlm import task


def test_each_phase_is_the_time_since_the_mark_before(monkeypatch):
    monkeypatch.setattr(task, "_marks", [("start", 1.0), ("config", 1.0005), ("join", 1.0025)])
    assert task.phase_times() == "config 0.50, join 2.00"
