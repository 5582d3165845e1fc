"""Which image, volumes and modules a `shifter` step gets (shifter_wlm.task), whatever the
user's environment export: pure logic, with a stand-in for Slurm's handle and a job record
as the prolog writes it. The same on the local cluster: test_slurm_first_week.py."""

from __future__ import annotations

import pytest

from runtime.cli import parse_args
from shifter_wlm import task
from shifter_wlm.options import Options as RawOptions
from shifter_wlm.jobs import JobRecord

JOB_ID = "a" * 64
OTHER_ID = "b" * 64


class Env:
    """spank.getenv over a task environment (None: not set)."""

    def __init__(self, **env):
        self.env = env

    def getenv(self, name):
        return self.env.get(name)


JOB = JobRecord(job_id=1, uid=1000, key="k", image_id=JOB_ID, state="ready", image_request="docker:app:1",
                volume="/a:/a;/b:/b", module="hello")
EXPORTED = Env(SHIFTER_IMAGE=JOB_ID, SHIFTER_IMAGEREQUEST="docker:app:1", SHIFTER_VOLUME="/a:/a;/b:/b",
               SHIFTER_MODULE="hello")
# what Slurm hands the step: sbatch's last --volume, via srun
FORWARDED = RawOptions(image="docker:app:1", volume="/b:/b", module="hello")


def choose(spank, options, argv=(), job=JOB):
    opts = parse_args(list(argv))
    return (task._choose_image(spank, None, options, opts, job, cfg=None),
            task._choose_volume(spank, options, opts, job), task._choose_module(spank, options, opts, job))


@pytest.mark.parametrize("spank,options", [
    (EXPORTED, FORWARDED),   # the default export
    (Env(), RawOptions()),   # sbatch --export=NONE: neither environment nor options reach the step
    (Env(), FORWARDED),      # srun --export=NONE: srun's options still do
])
def test_the_jobs_container_whatever_the_export(spank, options):
    assert choose(spank, options) == ((JOB_ID, "docker:app:1"), "/a:/a;/b:/b", "hello")


def test_a_steps_volumes_add_to_the_jobs():
    options = RawOptions(image="docker:app:1", volume="/c:/c")  # srun --volume=/c:/c, Slurm hands on the last
    exported = Env(**{**EXPORTED.env, "SHIFTER_VOLUME": "/a:/a;/b:/b;/c:/c"})
    for spank in (exported, Env()):
        assert choose(spank, options)[1] == "/a:/a;/b:/b;/c:/c"
        assert choose(spank, options, ["-V", "/d:/d", "true"])[1] == "/a:/a;/b:/b;/c:/c;/d:/d"


def test_a_steps_own_image_resolved_by_srun_is_used(monkeypatch):
    spank = Env(SHIFTER_IMAGE=OTHER_ID, SHIFTER_IMAGEREQUEST="docker:other:2")
    options = RawOptions(image="docker:other:2")
    assert choose(spank, options)[0] == (OTHER_ID, "docker:other:2")
    # without srun's environment (srun --export=NONE) the step resolves it itself
    calls = []
    monkeypatch.setattr(task, "_config", lambda args: "cfg")
    monkeypatch.setattr("runtime.cli.resolve_image", lambda cfg, ref: calls.append((cfg, ref)) or OTHER_ID)
    assert choose(Env(), options)[0] == (OTHER_ID, "docker:other:2")
    assert calls == [("cfg", "docker:other:2")]


def test_shifter_options_win():
    _, volume, module = choose(EXPORTED, FORWARDED, ["-m", "none", "-V", "/d:/d", "true"])
    assert (volume, module) == ("/a:/a;/b:/b;/d:/d", "none")


def test_no_job_record_and_no_image_is_refused():
    with pytest.raises(task.StepError, match="no image for this step"):
        choose(Env(), RawOptions(), job=None)
    with pytest.raises(task.StepError, match="is not an image id"):
        choose(Env(SHIFTER_IMAGE="nothex"), RawOptions(), job=None)
