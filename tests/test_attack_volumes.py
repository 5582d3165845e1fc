"""Attack: volume targets and sources that reach other users' files through root. Before
the fix `srun shifter -V /home/attacker/src:/home/victim/RT/sub true` left a root-owned
RT/sub in the victim's private directory (a file source: a root-owned empty file), and the
error text told whether the victim's path existed. Now targets on host directories are
walked and created as the user, with one error text whatever is there; /proc sources are
refused; a job cannot stack perNodeCaches past the site's limit with step containers; a
failed step-level build of a job without --image leaves no record. Played on the local
cluster by testuser (the attacker) against testuser2 (the victim); uids from pwd."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import uuid
from pathlib import Path

import pytest

import jobtools as jt
from conftest import run_as

pytestmark = pytest.mark.cluster
ATTACKER, VICTIM = "testuser", "testuser2"
IMAGE = "docker:attack/volumes:1"


@pytest.fixture(scope="module")
def image(cluster):
    from test_slurm_jobs import _push_and_pull
    _push_and_pull("attack/volumes", "1", ["PATH=/usr/bin:/bin"])
    return IMAGE


def _owned_dir(path: Path, user: str, mode: int) -> Path:
    entry = pwd.getpwnam(user)
    path.mkdir(mode=mode)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, mode)
    return path


@pytest.fixture
def places(image):
    """The attacker's source dir and file; the victim's private dirs in /home and /tmp."""
    tag = uuid.uuid4().hex[:8]
    src = _owned_dir(jt.home(ATTACKER) / f"src-{tag}", ATTACKER, 0o755)
    (src / "data").write_text("attacker data\n")
    os.chown(src / "data", pwd.getpwnam(ATTACKER).pw_uid, pwd.getpwnam(ATTACKER).pw_gid)
    private = _owned_dir(jt.home(VICTIM) / f"private-{tag}", VICTIM, 0o700)
    tmp_private = _owned_dir(Path("/tmp") / f"victim-{tag}", VICTIM, 0o700)
    made = [src, private, tmp_private]
    yield {"tag": tag, "src": src, "file": src / "data", "private": private, "tmp_private": tmp_private, "made": made}
    for path in made:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _srun(volume: str, *command: str):
    return run_as(ATTACKER, ["srun", "-N1", "-w", "n1", f"--image={IMAGE}", "shifter", "-V", volume,
                             *(command or ("true",))], timeout=120)


def _error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if "shifter:" in line]
    assert lines, result.stderr
    return lines[0].split("shifter:", 1)[1].strip()


def _tree(path: Path) -> list[tuple[str, int, int]]:
    out = []
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            out.append((os.path.relpath(os.path.join(root, name), path), st.st_uid, stat.S_IMODE(st.st_mode)))
    return sorted(out)


def test_nothing_is_created_in_a_victims_private_dir_and_errors_are_no_oracle(places):
    private = places["private"]
    missing = _srun(f"{places['src']}:{private}/RT/sub")
    assert missing.returncode != 0
    assert "Traceback" not in missing.stderr and "Plugin initialization failed" not in missing.stderr
    assert "lies on a host directory" in _error(missing)
    assert _tree(private) == []
    # the victim now has RT: the attacker's error text must not change
    _owned_dir(private / "RT", VICTIM, 0o755)
    present = _srun(f"{places['src']}:{private}/RT/sub")
    assert present.returncode != 0
    assert _error(present) == _error(missing)
    # a file source, and a target that exists
    as_file = _srun(f"{places['file']}:{private}/RT/file")
    assert as_file.returncode != 0
    assert _tree(private) == [("RT", pwd.getpwnam(VICTIM).pw_uid, 0o755)]


def test_victims_home_and_tmp_dirs_stay_untouched(places):
    before_home = _tree(jt.home(VICTIM))
    for target in (f"{jt.home(VICTIM)}/.udiRoot/id_dropbear", f"{places['tmp_private']}/x/y"):
        result = _srun(f"{places['file'] if target.endswith('dropbear') else places['src']}:{target}")
        assert result.returncode != 0, target
        assert "lies on a host directory" in _error(result)
    assert _tree(jt.home(VICTIM)) == before_home
    assert _tree(places["tmp_private"]) == []


def test_targets_the_attacker_may_create_are_created_as_the_attacker(places):
    uid = pwd.getpwnam(ATTACKER).pw_uid
    own = jt.home(ATTACKER) / f"new-{places['tag']}"
    in_tmp = Path("/tmp") / f"new-{places['tag']}"
    places["made"] += [own, in_tmp]
    result = _srun(f"{places['src']}:{own}/sub;{places['file']}:{in_tmp}", "sh", "-c",
                   f"cat {own}/sub/data {in_tmp}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "attacker data\n" * 2
    assert {(own.stat().st_uid), (own / "sub").stat().st_uid, in_tmp.stat().st_uid} == {uid}


@pytest.mark.parametrize("source", ["/proc/self/fd/3", "/proc/1/root", "/proc"])
def test_proc_sources_are_refused_with_one_line(image, source):
    result = _srun(f"{source}:/mnt/x")
    assert result.returncode != 0
    assert "is under /proc" in result.stderr
    assert "Plugin initialization failed" not in result.stderr and "Traceback" not in result.stderr


def test_a_link_to_proc_resolves_as_the_user_and_is_refused(places):
    link = places["src"] / "p"
    link.symlink_to("/proc/self/fd")
    os.lchown(link, pwd.getpwnam(ATTACKER).pw_uid, pwd.getpwnam(ATTACKER).pw_gid)
    result = _srun(f"{link}/0:/mnt/x")
    assert result.returncode != 0
    assert "Plugin initialization failed" not in result.stderr and "Traceback" not in result.stderr
    assert "error: shifter: volume" in result.stderr


def test_per_node_cache_limit_holds_per_job_and_node(image):
    # a step's -V adds to the job's volumes, so each step container holds its own 512m /cache
    # too: over = 512m (job) + 512m + 1536m > 2G; within = 512m + 512m + 512m
    job = jt.write_job(ATTACKER, "cachestack.sl", f"""#!/bin/bash
#SBATCH -N 1 -w n1 -t 5
#SBATCH --image={IMAGE}
#SBATCH --volume=/x:/cache:perNodeCache=size=512m
srun shifter -V '/x:/c2:perNodeCache=size=1536m' true; echo "over=$?"
srun shifter -V '/x:/c2:perNodeCache=size=512m' true; echo "within=$?"
""")
    _, output, _ = jt.sbatch_wait(ATTACKER, job)
    assert "over=1" in output and "within=0" in output, output
    assert "the limit per job and node is" in output
    jt.assert_clean()


def test_failed_step_build_in_a_job_without_image_leaves_no_record(image):
    job = jt.write_job(ATTACKER, "stepfail.sl", f"""#!/bin/bash
#SBATCH -N 1 -w n1 -t 5
srun --image={IMAGE} shifter -V /nonexistent-{uuid.uuid4().hex[:8]}:/data true; echo "step=$?"
""")
    job_id, output, _ = jt.sbatch_wait(ATTACKER, job)
    assert "step=1" in output, output
    jt.wait_gone(job_id)
    jt.assert_clean()
