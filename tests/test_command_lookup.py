"""A bad command gets the shells' exit codes (127 not found, naming the PATH searched; 126
not executable), and `shifter` in a batch script or an salloc shell: which srun options,
which note. Pure parts, with files made here."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

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


def test_typed_shifter_relays_the_steps_stderr_less_sruns_exit_note(tmp_path):
    """`shifter` typed in a batch script runs srun: its stderr comes through as it is (a
    partial last line too), less srun's own "task 0: Exited with exit code N" line; the exit
    code is the step's. A stand-in for srun (a shell script) plays the step."""
    fake = tmp_path / "srun"
    fake.write_text("#!/bin/sh\n"
                    "echo 'out line'\n"
                    "echo 'srun: error: looks like it but is not' >&2\n"
                    "echo 'shifter: pythn3: command not found in the container (PATH=/bin)' >&2\n"
                    "echo 'srun: error: n1: task 0: Exited with exit code 127' >&2\n"
                    "printf 'no newline at the end' >&2\n"
                    "exit 127\n")
    fake.chmod(0o755)
    proc = subprocess.run([sys.executable, "-c", f"import sys; from shifter_wlm import batch; "
                           f"sys.exit(batch.run_step([{str(fake)!r}]))"],
                          capture_output=True, text=True, timeout=30, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 127
    assert proc.stdout == "out line\n"
    assert proc.stderr == ("srun: error: looks like it but is not\n"
                           "shifter: pythn3: command not found in the container (PATH=/bin)\n"
                           "no newline at the end")
    assert batch.is_exit_note(b"srun: error: n2: task 3: Exited with exit code 1\n")
    assert not batch.is_exit_note(b"srun: error: n1: task 0: Killed\n")
    missing = subprocess.run([sys.executable, "-c", "import sys; from shifter_wlm import batch; "
                              f"sys.exit(batch.run_step([{str(tmp_path / 'nosrun')!r}]))"],
                             capture_output=True, text=True, timeout=30, cwd=Path(__file__).parent.parent)
    assert missing.returncode == 127 and missing.stderr.startswith("shifter: cannot run ")


@pytest.mark.parametrize("ignored", [False, True])
def test_typed_shifter_passes_signals_on_to_srun_unless_the_script_ignores_them(tmp_path, ignored):
    """`shifter CMD` typed in a batch script: a SIGTERM it gets goes to srun (as when it was
    srun itself); one the script ignores (`shifter CMD &` ignores SIGINT) stays ignored, as
    srun would have inherited it."""
    fake = tmp_path / "srun"
    fake.write_text("#!/bin/sh\ntrap 'echo got-term; exit 7' TERM\necho ready\nwhile :; do sleep 0.05; done\n")
    fake.chmod(0o755)
    setup = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignored else ""
    proc = subprocess.Popen([sys.executable, "-c", f"{setup}import sys; from shifter_wlm import batch; "
                             f"sys.exit(batch.run_step([{str(fake)!r}]))"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent,
                            start_new_session=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        if ignored:
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(2)  # neither the shifter process nor srun took it
        else:
            out, _ = proc.communicate(timeout=30)
            assert (proc.returncode, out) == (7, "got-term\n")
    finally:
        with contextlib.suppress(ProcessLookupError):  # the stand-in srun too, if still there
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
