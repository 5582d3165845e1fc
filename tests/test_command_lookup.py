"""A bad command gets the shells' exit codes (127 not found, naming the PATH searched; 126
not executable), and `shifter` in a batch script or an salloc shell: which srun options,
which note. Pure parts, with files made here."""

from __future__ import annotations

import os
import pwd

import pytest

from runtime.enter import CommandNotExecutable, CommandNotFound, find_command
from shifter_wlm import batch


@pytest.fixture
def bindir(tmp_path):
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin/tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    data = tmp_path / "bin/data"
    data.write_text("x")
    data.chmod(0o644)
    (tmp_path / "bin/dir").mkdir()
    return tmp_path / "bin"


def test_found_in_path(bindir):
    assert find_command("tool", {"PATH": f"/nonexistent:{bindir}"}) == f"{bindir}/tool"
    assert find_command(f"{bindir}/tool", {}) == f"{bindir}/tool"


def test_not_found_is_127_and_names_the_path(bindir):
    with pytest.raises(CommandNotFound) as err:
        find_command("pythn3", {"PATH": f"/nonexistent:{bindir}"})
    assert err.value.exit_code == 127
    assert str(err.value) == f"pythn3: command not found in the container (PATH=/nonexistent:{bindir})"
    with pytest.raises(CommandNotFound, match="no such file"):
        find_command(f"{bindir}/absent", {})


def test_not_executable_file_and_directory_are_126_for_anyone(bindir):
    with pytest.raises(CommandNotExecutable, match="is not executable"):
        find_command(f"{bindir}/data", {})  # no x bit at all: not even root may exec it
    with pytest.raises(CommandNotExecutable, match="is a directory"):
        find_command(f"{bindir}/dir", {})


@pytest.mark.parametrize("plugin,binds", [("task/none", False), ("task/affinity,task/cgroup", True),
                                          (None, False)])
def test_cpu_bind_none_only_where_slurm_binds_tasks(tmp_path, plugin, binds):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n# TaskPlugin=task/affinity\n" + (f"TaskPlugin={plugin}\n" if plugin else ""))
    assert batch.cluster_binds_tasks({"SLURM_CONF": str(conf)}) is binds


def test_salloc_shell_note_only_outside_the_nodes():
    env = {"SLURM_JOB_ID": "7"}
    user = os.geteuid() or pwd.getpwnam("nobody").pw_uid  # a user's uid, from the system
    assert "this shell of job 7 is not on its nodes: running here, rootless" in batch.outside_the_nodes(env, user)
    assert batch.outside_the_nodes(env, 0) is None                                   # root: privileged, no job's
    assert batch.outside_the_nodes({**env, "SLURMD_NODENAME": "n1"}, user) is None  # a batch script: a step
    assert batch.outside_the_nodes({**env, "SLURM_STEP_ID": "0"}, user) is None     # already in a step
    assert batch.outside_the_nodes({}, user) is None
