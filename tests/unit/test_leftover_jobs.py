"""Which jobs' leftovers a prolog may collect on its node (shifter_wlm/leftovers.py): only
those Slurm reports ended or has forgotten, never the starting job, a running, completing,
pending or requeued one; and the squeue lines that decide it (shifter_wlm/slurm.py:
parse_states). Slurm's answer is given here; the real cluster's is in
tests/test_slurm_adapter.py and the collection itself in tests/test_slurm_jobs.py."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, strategies as st

from shifter_wlm import leftovers, slurm


def test_states_of_the_jobs_asked_about():
    text = "12|RUNNING|\n13|COMPLETED|\n99|PENDING|\n"
    assert slurm.parse_states(text, {12, 13, 14}) == {12: "RUNNING", 13: "COMPLETED"}
    assert slurm.parse_states("", {12}) == {}


@pytest.mark.parametrize("line", ["12|RUNNING", "12|RUNNING|x", "1_2|RUNNING|", "12|running|", "12|RUN NING|",
                                  "|RUNNING|", "12|RUNNING|\n13"])
def test_a_line_squeue_does_not_write_is_refused(line):
    with pytest.raises(slurm.SlurmQueryError, match="squeue gave a line"):
        slurm.parse_states(line, {12, 13})


@given(st.text(max_size=60))
def test_any_text_gives_states_or_one_clear_error(text):
    try:
        states = slurm.parse_states(text, {1, 12})
    except slurm.SlurmQueryError:
        return
    assert set(states) <= {1, 12} and all(s.replace("_", "").isalpha() for s in states.values())


def _records(tmp_path, names):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for name in names:
        (jobs / f"{name}.json").write_text("{}")
    (jobs / ".20.json.tmp").write_text("{}")  # a record being written: not a job's name
    return str(tmp_path)


def test_only_ended_or_forgotten_jobs_are_dead(tmp_path, monkeypatch):
    run_dir = _records(tmp_path, ["5", "6", "6.1", "7", "8", "9", "10", "11.2", "12", "20"])
    slurm_says = {6: "COMPLETED", 7: "RUNNING", 8: "COMPLETING", 9: "PENDING", 10: "NODE_FAIL", 12: "SUSPENDED"}
    asked = []
    monkeypatch.setattr(slurm, "job_states", lambda ids: asked.append(set(ids)) or
                        {j: s for j, s in slurm_says.items() if j in ids})
    # 5 and 11 (only a step record left) are forgotten; 20 is the job starting now
    assert leftovers.dead_jobs(run_dir, 20) == [5, 6, 10, 11]
    assert asked == [{5, 6, 7, 8, 9, 10, 11, 12}]


def test_no_other_job_no_question_to_slurm(tmp_path, monkeypatch):
    run_dir = _records(tmp_path, ["20", "20.3"])
    monkeypatch.setattr(slurm, "job_states", lambda ids: pytest.fail("Slurm asked"))
    assert leftovers.dead_jobs(run_dir, 20) == []


def test_slurm_unable_to_answer_means_no_job_is_dead(tmp_path, monkeypatch):
    run_dir = _records(tmp_path, ["5"])

    def down(ids):
        raise slurm.SlurmQueryError("squeue failed: Unable to contact slurm controller")
    monkeypatch.setattr(slurm, "job_states", down)
    with pytest.raises(slurm.SlurmQueryError):
        leftovers.dead_jobs(run_dir, 20)


def test_collect_when_slurm_cannot_answer_logs_one_event_and_touches_nothing(tmp_path, monkeypatch):
    """The starting job must run anyway: one failed `leftovers` event, no exception, every
    record still there."""
    import io
    import json

    from shifter_site import logs
    run_dir = _records(tmp_path, ["5", "6.1"])

    def down(ids):
        raise slurm.SlurmQueryError("squeue failed: Unable to contact slurm controller")
    monkeypatch.setattr(slurm, "job_states", down)
    out = io.StringIO()
    logs.configure(json=True, stream=out)
    leftovers.collect(run_dir, "n1", 20, logs.get("prolog"))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e["ok"], e["job"], e["node"]) for e in events] == [("leftovers", False, 20, "n1")]
    assert "Unable to contact slurm controller" in events[0]["error"]
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == [".20.json.tmp", "5.json", "6.1.json"]


def _forget_env(tmp_path, monkeypatch, fail_teardown: list | None = None):
    """A node run dir with job 7's record and a step record (same container), and another
    job's; teardown and the gateway recorded, not run (their own tests are root's)."""
    from runtime import teardown
    from shifter_wlm import epilog, extern, imageuse, jobs

    run_dir = str(tmp_path)
    os.makedirs(os.path.join(run_dir, "jobs"))
    for name, key in (("7", "k7"), ("7.2", "k7"), ("8", "k8")):
        with open(os.path.join(run_dir, "jobs", f"{name}.json"), "w") as f:
            json.dump({"job_id": int(name.split(".")[0]), "key": key, "state": "ready"}, f)
    monkeypatch.setattr(jobs, "read", lambda d, n: jobs.JobRecord(**json.load(open(os.path.join(d, "jobs", f"{n}.json")))))
    monkeypatch.setattr(extern, "unmark", lambda job_id: None)
    calls = []

    def torn(d, key):
        calls.append(("teardown", key, sorted(jobs.names(d))))
        if fail_teardown:
            fail_teardown.pop()
            raise OSError("killed here")
        return True
    monkeypatch.setattr(teardown, "teardown", torn)
    monkeypatch.setattr(imageuse, "ended", lambda cfg, job_id, node: calls.append(("ended", job_id, sorted(jobs.names(run_dir)))))
    return run_dir, calls, epilog, jobs


def test_forget_removes_the_jobs_records_last(tmp_path, monkeypatch):
    """A hook killed at any step of forget leaves the job's records, so the next prolog on the
    node finds the job dead and forgets it again (kill -9 on the real cluster:
    tests/test_faults_hooks.py)."""
    run_dir, calls, epilog, jobs = _forget_env(tmp_path, monkeypatch)
    done = epilog.forget(run_dir, 7, "n1", cfg=object())
    assert calls == [("teardown", "k7", ["7", "7.2", "8"]), ("ended", 7, ["7", "7.2", "8"])]
    assert jobs.names(run_dir) == ["8"] and done["containers"] == ["k7"] and done["records"] == ["7", "7.2"]


def test_forget_interrupted_keeps_the_records_and_completes_later(tmp_path, monkeypatch):
    run_dir, calls, epilog, jobs = _forget_env(tmp_path, monkeypatch, fail_teardown=[True])
    with pytest.raises(OSError):
        epilog.forget(run_dir, 7, "n1", cfg=object())
    assert jobs.names(run_dir) == ["7", "7.2", "8"]
    epilog.forget(run_dir, 7, "n1")   # again, as the next prolog does (here without cfg: no gateway)
    assert [c[0] for c in calls] == ["teardown", "teardown"] and jobs.names(run_dir) == ["8"]
