"""The step path's phase marks (shifter_wlm/task.py), shown by `srun shifter -v`: each phase's
time since the mark before it, in order."""

from __future__ import annotations

from shifter_wlm import task


def test_each_phase_is_the_time_since_the_mark_before(monkeypatch):
    monkeypatch.setattr(task, "_marks", [("start", 1.0), ("config", 1.0005), ("join", 1.0025)])
    assert task.phase_times() == "config 0.50, join 2.00"


def test_the_first_phase_is_the_plugins_start_of_python(monkeypatch):
    """The interpreter's start in slurmstepd is timed too, from the plugin's clock
    (pyentry.c, CLOCK_MONOTONIC = perf_counter's), once per process."""
    import time

    from shifter_wlm import dispatch

    class NotShifter:
        def argv(self):
            return ["/bin/true"]

        def step_id(self):
            return 0

    class Options:
        ccm = None

    t0 = time.perf_counter() - 0.004
    monkeypatch.setattr(dispatch, "_python_t0", t0)
    monkeypatch.setattr(task, "_marks", [])
    task.step_setup(NotShifter(), None, Options())
    assert task._marks[0] == ("python_start", t0) and task._marks[1][0] == "python"
    assert task.phase_times().startswith("python ") and float(task.phase_times().split()[1]) >= 4.0
    task.step_setup(NotShifter(), None, Options())  # a second hook in the process: no python phase
    assert [name for name, _ in task._marks] == ["start"]
