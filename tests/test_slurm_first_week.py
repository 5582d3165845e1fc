"""What a new user hits in a first week on the local cluster, as that user:
--export=NONE, shifter's flags in steps, small perNodeCaches, several --volume options,
volume sources checked at submit, exit codes of a bad command, Slurm's own noise, `shifter`
in an salloc shell, short image ids.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

import gatewaytools as gt
import imagebuilder as ib
import images
import jobtools as jt
from conftest import localcluster, run_as

pytestmark = pytest.mark.cluster
USER = "testuser"
IMAGE = "docker:week/app:1"
SHIFTER = str(localcluster.PREFIX / "bin/shifter")
SHIFTERIMG = str(localcluster.PREFIX / "bin/shifterimg")


@pytest.fixture(scope="module")
def rootless():
    """Rootless `shifter` (outside Slurm, an salloc shell) needs /dev/fuse usable by users,
    as a site that allows it has it; restored after."""
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    os.chmod("/dev/fuse", 0o666)
    yield
    os.chmod("/dev/fuse", mode)


MADE: list[Path] = []  # the test user's directories made below, removed after the module


@pytest.fixture(scope="module")
def baseline(cluster):
    """What the nodes held before these tests (another run may have left something): each
    test below must leave nothing beyond it."""
    yield jt.leftovers()
    for path in MADE:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def image(cluster, baseline, rootless):
    """busybox with a WORKDIR, an ENTRYPOINT and a CMD of its own."""
    root = Path(tempfile.mkdtemp())
    try:
        images.make_root(root)
        (root / "srv").mkdir(exist_ok=True)
        (root / "etc/app-release").write_text("week-app-1\n")
        layer = ib.layer_from_dir(root)
    finally:
        shutil.rmtree(root)
    config = {"Env": ["PATH=/usr/bin:/bin"], "WorkingDir": "/srv", "Entrypoint": ["/bin/echo", "entry"],
              "Cmd": ["from-cmd"]}
    digest = ib.push("127.0.0.1:5000", "week/app", "1", ib.Image([layer], config=config))
    gt.age_rows("docker.io/week/app:1")  # a pull minutes ago (an earlier run) is not reused
    pulled = run_as(USER, [str(localcluster.PREFIX / "bin/shifterimg"), "pull", IMAGE])
    assert pulled.returncode == 0, pulled.stderr
    return digest.split(":", 1)[1]


def _user_dir(name: str, mode: int = 0o755, files: dict[str, str] | None = None) -> Path:
    """A directory in the test user's home, the user's own."""
    entry = pwd.getpwnam(USER)
    path = jt.home(USER) / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    MADE.append(path)
    for fname, text in (files or {}).items():
        (path / fname).write_text(text)
        os.chown(path / fname, entry.pw_uid, entry.pw_gid)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, mode)
    return path


def _refused_at_submit(args: list[str], fragment: str, env: tuple[str, ...] = ()) -> str:
    """sbatch refuses with one line of ours naming `fragment`; nothing is queued."""
    name = jt.refused_name()
    result = run_as(USER, ["env", *env, "sbatch", "--parsable", "-J", name, *args, "--wrap", "true"], cwd="/tmp")
    assert result.returncode != 0 and result.stdout == ""
    ours = [line for line in result.stderr.splitlines() if line.startswith("sbatch: error: shifter: ")]
    assert len(ours) == 1 and fragment in ours[0], result.stderr
    assert "Traceback" not in result.stderr and "usage" not in result.stderr.lower()
    jt.assert_never_queued(name)
    return ours[0]


# -- 1. --export=NONE (sbatch, SLURM_EXPORT_ENV, srun)

@pytest.mark.parametrize("how", ["--export=NONE", "SBATCH_EXPORT=NONE"])
def test_export_none_keeps_the_jobs_image_volumes_and_modules(image, baseline, how):
    data = _user_dir("exportdata", files={"marker": "from-the-volume\n"})
    more = _user_dir("exportmore", files={"marker": "from-srun\n"})
    job = jt.write_job(USER, "exportnone.sl", f"""#!/bin/bash
#SBATCH -N 2 -t 5
#SBATCH --image={IMAGE}
#SBATCH --volume={data}:/data
#SBATCH --module=hello
echo "shell_image=${{SHIFTER_IMAGE:-unset}} job_request=$SLURM_SPANK_SHIFTER_IMAGEREQUEST"
srun -N2 shifter sh -c 'echo "step on=$SLURMD_NODENAME release=$(cat /etc/app-release) data=$(cat /data/marker) \
module=$HELLO_MODULE image=$SHIFTER_IMAGE"'
srun -N1 --export=NONE shifter sh -c 'echo "srunnone release=$(cat /etc/app-release) data=$(cat /data/marker)"'
SLURM_EXPORT_ENV=NONE srun -N1 shifter sh -c 'echo "srunenv release=$(cat /etc/app-release) data=$(cat /data/marker)"'
srun -N1 --export=NONE --volume={more}:/more --module=hello shifter sh -c \
  'echo "srunadds data=$(cat /data/marker) more=$(cat /more/marker) module=$HELLO_MODULE"'
shifter sh -c 'echo "typed release=$(cat /etc/app-release) data=$(cat /data/marker)"'
""")
    args, env = ([how], ()) if how.startswith("--") else ([], (how,))
    result = run_as(USER, ["env", *env, "sbatch", "--parsable", "--wait", "-o", "exportnone-%j.out", *args, str(job)],
                    cwd=job.parent, timeout=300)
    assert result.returncode == 0, result.stderr
    output = (job.parent / f"exportnone-{result.stdout.strip()}.out").read_text()
    assert "shell_image=unset" in output, output  # the export really was NONE
    # which image the job uses, visible in the job whatever the export (README)
    assert f"job_request={IMAGE}\n" in output, output
    steps = jt.lines_with("step ", output)
    assert sorted(jt.field("on", line) for line in steps) == ["n1", "n2"], output
    for line in steps:
        assert jt.field("release", line) == "week-app-1"
        assert jt.field("data", line) == "from-the-volume"
        assert jt.field("module", line) == "loaded"
        assert jt.field("image", line) == image
    assert "srunnone release=week-app-1 data=from-the-volume" in output, output
    assert "srunenv release=week-app-1 data=from-the-volume" in output, output
    assert "srunadds data=from-the-volume more=from-srun module=loaded" in output, output
    assert "typed release=week-app-1 data=from-the-volume" in output, output
    jt.assert_clean(ignore=baseline)


# -- 2. every shifter flag means the same in every context

def test_shifter_flags_mean_the_same_in_steps_batch_scripts_and_outside_slurm(image, baseline):
    outside = {}
    for name, flags in (("workdir", ["--workdir=/tmp", "pwd"]), ("w", ["-w", "pwd"]),
                        ("entry", ["--entrypoint"]), ("entryarg", ["--entrypoint", "given"])):
        proc = run_as(USER, [SHIFTER, f"--image={IMAGE}", *flags], cwd="/tmp")
        assert proc.returncode == 0, proc.stderr
        outside[name] = proc.stdout.strip()
    assert outside == {"workdir": "/tmp", "w": "/srv", "entry": "entry from-cmd", "entryarg": "entry given"}
    job = jt.write_job(USER, "flags.sl", f"""#!/bin/bash
#SBATCH -N 1 -t 5
#SBATCH --image={IMAGE}
srun shifter --workdir=/tmp pwd | sed 's/^/step_workdir=/'
srun shifter -w pwd | sed 's/^/step_w=/'
srun shifter --entrypoint | sed 's/^/step_entry=/'
srun shifter --entrypoint given | sed 's/^/step_entryarg=/'
shifter --workdir=/tmp pwd | sed 's/^/typed_workdir=/'
shifter -w pwd | sed 's/^/typed_w=/'
shifter --entrypoint | sed 's/^/typed_entry=/'
shifter --entrypoint given | sed 's/^/typed_entryarg=/'
srun shifter -v true 2>&1 | sed 's/^/verbose:/'
shifter -v true 2>&1 | sed 's/^/typedverbose:/'
srun shifter --workdir=/nonexistent true; echo "badworkdir=$?"
srun shifter --workdir=/srv/d\u00e4t\u00e4 true; echo "utf8workdir=$?"
""")
    _, output, _ = jt.sbatch_wait(USER, job)
    for where in ("step", "typed"):
        assert f"{where}_workdir={outside['workdir']}" in output, output
        assert f"{where}_w={outside['w']}" in output, output
        assert f"{where}_entry={outside['entry']}" in output, output
    assert f"step_entryarg={outside['entryarg']}" in output, output
    assert f"typed_entryarg={outside['entryarg']}" in output, output
    times = jt.lines_with("verbose:shifter: step path (ms): ", output)  # -v also times the step path
    verbose = [line for line in jt.lines_with("verbose:shifter: step ", output) if line not in times]
    assert len(verbose) == 1 and f"image {image}" in verbose[0], output
    assert len(times) == 1 and "choose " in times[0], output
    typed = jt.lines_with("typedverbose:shifter: step ", output)  # the same -v typed in the script
    assert len(typed) == 2 and f"image {image}" in typed[0] and "step path (ms): " in typed[1], output
    # a --workdir the container lacks: the one line and exit code of `shifter` outside Slurm
    bad = run_as(USER, [SHIFTER, f"--image={IMAGE}", "--workdir=/nonexistent", "true"], cwd="/tmp")
    assert bad.stderr == "shifter: --workdir /nonexistent: No such file or directory in the container\n"
    assert f"badworkdir={bad.returncode}" in output, output
    # a name beyond ASCII reaches the kernel (the plugin's Python encodes file names as UTF-8,
    # as `shifter` does; with ASCII, an isolated start's C locale, os.chdir raised an encoding
    # error: an internal error instead of this line)
    assert f"utf8workdir={bad.returncode}" in output, output
    assert "--workdir /srv/d\u00e4t\u00e4: No such file or directory in the container" in output, output
    assert "internal error" not in output
    assert [line for line in output.splitlines() if "/nonexistent" in line or "spank" in line] == [
        bad.stderr.strip()], output
    assert "longer than the step's command line" not in output
    jt.assert_clean(ignore=baseline)


# -- 3. small perNodeCache

@pytest.mark.parametrize("cache,fragment", [
    ("size=200m", "too small for xfs (at least 300M); ask for size=300M or more, or add fs=ext4"),
    ("size=64M,fs=xfs", "too small for xfs"),
    ("size=512k,fs=ext4", "too small for ext4 (at least 1M)"),
])
def test_a_per_node_cache_mkfs_cannot_make_is_refused_at_submit(image, baseline, cache, fragment):
    _refused_at_submit([f"--image={IMAGE}", f"--volume=/x:/cache:perNodeCache={cache}"], fragment)


def test_a_small_ext4_per_node_cache_works(image, baseline):
    job = jt.write_job(USER, "smallcache.sl", f"""#!/bin/bash
#SBATCH -N 1 -t 5
#SBATCH --image={IMAGE}
#SBATCH --volume=/x:/cache:perNodeCache=size=64M,fs=ext4
srun shifter sh -c 'echo hi > /cache/f && echo "cache=$(cat /cache/f) kb=$(df -k /cache | tail -1 | tr -s " " | cut -d" " -f2)"'
srun --volume=/y:/small:perNodeCache=size=64M shifter true; echo "srun_small=$?"
""")
    _, output, _ = jt.sbatch_wait(USER, job)
    line = jt.lines_with("cache=", output)
    assert len(line) == 1 and jt.field("cache", line[0]) == "hi", output
    assert 30_000 < int(jt.field("kb", line[0])) <= 65_536
    assert "srun_small=1" in output
    assert re.search(r"srun: error: shifter: .*too small for xfs", output), output
    assert "Usage" not in output and "mkfs" not in output
    jt.assert_clean(ignore=baseline)


# -- 5. several --volume options accumulate, everywhere

def test_volumes_accumulate_in_every_context(image, baseline):
    dirs = [_user_dir(f"vol{i}", files={"name": f"v{i}\n"}) for i in range(1, 5)]
    locked = _user_dir("vollocked", mode=0o000)
    show = "for d in /v1 /v2 /v3 /v4; do cat $d/name 2>/dev/null || echo -; done | tr \"\\n\" ,"
    job = jt.write_job(USER, "volumes.sl", f"""#!/bin/bash
#SBATCH -N 1 -t 5
#SBATCH --image={IMAGE}
#SBATCH --volume={dirs[0]}:/v1
#SBATCH --volume={dirs[1]}:/v2
srun shifter sh -c '{show}' | sed 's/^/job=/'; echo
srun --volume={dirs[2]}:/v3 shifter sh -c '{show}' | sed 's/^/srun=/'; echo
srun --volume={dirs[2]}:/v3 shifter -V {dirs[3]}:/v4 sh -c '{show}' | sed 's/^/both=/'; echo
srun --export=NONE --volume={dirs[2]}:/v3 shifter sh -c '{show}' | sed 's/^/none=/'; echo
shifter -V {dirs[3]}:/v4 sh -c '{show}' | sed 's/^/typed=/'; echo
srun --volume={locked}:/locked shifter true; echo "srun_locked=$?"
""")
    _, output, _ = jt.sbatch_wait(USER, job)
    assert "job=v1,v2,-,-," in output, output
    assert "srun=v1,v2,v3,-," in output, output
    assert "both=v1,v2,v3,v4," in output, output
    assert "none=v1,v2,v3,-," in output, output
    assert "typed=v1,v2,-,v4," in output, output
    # a step's volume source is checked when srun is typed, as the user, before any node acts
    assert "srun_locked=1" in output, output
    ours = [line for line in output.splitlines() if line.startswith("srun: error: shifter: ")]
    assert ours == [f"srun: error: shifter: volume '{locked}:/locked': source {locked} is not readable by you"], output
    jt.assert_clean(ignore=baseline)


def test_two_volumes_on_one_target_are_refused_at_submit(image, baseline):
    one, two = _user_dir("tgt1"), _user_dir("tgt2")
    _refused_at_submit([f"--image={IMAGE}", f"--volume={one}:/data", f"--volume={two}:/data"],
                       "target '/data' is given twice")


# -- 6. volume sources checked at submit, as the user

@pytest.mark.parametrize("source,fragment", [
    ("/nonexistent-source", "No such file or directory"),
    ("/root", "is not readable by you"),
    ("LOCKED", "is not readable by you"),
])
def test_volume_sources_are_checked_at_submit(image, baseline, source, fragment):
    if source == "LOCKED":
        source = str(_user_dir("locked", mode=0o000))
    line = _refused_at_submit([f"--image={IMAGE}", f"--volume={source}:/data"], f"source {source}")
    assert fragment in line


# -- 7. exit codes of a bad command

def test_bad_commands_exit_127_and_126_everywhere(image, baseline):
    job = jt.write_job(USER, "badcmd.sl", f"""#!/bin/bash
#SBATCH -N 1 -t 5
#SBATCH --image={IMAGE}
srun shifter pythn3; echo "step_missing=$?"
srun shifter /etc/app-release; echo "step_noexec=$?"
shifter pythn3; echo "typed_missing=$?"
shifter /etc/app-release; echo "typed_noexec=$?"
""")
    _, output, _ = jt.sbatch_wait(USER, job)
    assert "step_missing=127" in output and "typed_missing=127" in output, output
    assert "step_noexec=126" in output and "typed_noexec=126" in output, output
    # srun's own exit-code lines: for the two srun lines typed, none for the typed `shifter`s
    assert len([line for line in output.splitlines() if ": Exited with exit code " in line]) == 2, output
    assert re.search(r"^shifter: pythn3: command not found in the container \(PATH=/usr/bin:/bin[:/\w]*\)$",
                     output, re.M), output
    assert "shifter: /etc/app-release: cannot run it in the container: /etc/app-release is not executable" in output
    assert "execve()" not in output
    rootless = run_as(USER, [SHIFTER, f"--image={IMAGE}", "pythn3"], cwd="/tmp")
    assert rootless.returncode == 127, rootless.stderr
    assert rootless.stderr.splitlines()[-1] == "shifter: pythn3: command not found in the container (PATH=/usr/bin:/bin)"
    rootless = run_as(USER, [SHIFTER, f"--image={IMAGE}", "/etc/app-release"], cwd="/tmp")
    assert rootless.returncode == 126, rootless.stderr
    as_root = subprocess.run([SHIFTER, f"--image={IMAGE}", "pythn3"], capture_output=True, text=True,
                                           cwd="/tmp", timeout=120)
    assert as_root.returncode == 127, as_root.stderr
    assert "command not found in the container (PATH=/usr/bin:/bin)" in as_root.stderr
    jt.assert_clean(ignore=baseline)


# -- 8. Slurm's own noise

def test_shifter_typed_in_a_batch_script_adds_no_slurm_noise(image, baseline):
    job = jt.write_job(USER, "quiet.sl", f"""#!/bin/bash
#SBATCH -N 1 -t 5
#SBATCH --image={IMAGE}
shifter cat /etc/app-release
shifter cat /etc/app-release
shifter sh -c 'exit 3'; echo "typed_exit=$?"
""")
    _, output, _ = jt.sbatch_wait(USER, job)
    assert output == "week-app-1\nweek-app-1\ntyped_exit=3\n", output  # no srun line about the exit code
    jt.assert_clean(ignore=baseline)


# -- 9. shifter in an salloc shell

def test_shifter_in_an_salloc_shell_says_it_runs_here_rootless(image, baseline):
    result = run_as(USER, ["salloc", "-N1", f"--image={IMAGE}", SHIFTER, "cat", "/etc/app-release"], cwd="/tmp")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "week-app-1\n"
    notes = [line for line in result.stderr.splitlines() if line.startswith("shifter:")]
    assert len(notes) == 1 and "not on its nodes: running here, rootless" in notes[0], result.stderr
    jt.assert_clean(ignore=baseline)


# -- 11. short image ids

def test_short_image_id_as_images_shows_it_works_everywhere(image, baseline):
    listing = run_as(USER, [SHIFTERIMG, "images"])
    short = image[:12]
    assert short in listing.stdout.split(), listing.stdout
    proc = run_as(USER, [SHIFTER, "-i", short, "cat", "/etc/app-release"], cwd="/tmp")
    assert proc.returncode == 0 and proc.stdout == "week-app-1\n", proc.stderr
    job = jt.write_job(USER, "shortid.sl", f"""#!/bin/bash
#SBATCH -N 1 -t 5
#SBATCH --image={short}
srun shifter sh -c 'echo "job=$(cat /etc/app-release) $SHIFTER_IMAGE"'
srun shifter -i id:{short} cat /etc/app-release | sed 's/^/step=/'
""")
    _, output, _ = jt.sbatch_wait(USER, job)
    assert f"job=week-app-1 {image}" in output and "step=week-app-1" in output, output
    missing = run_as(USER, [SHIFTER, "-i", "id:0123456789ab", "true"], cwd="/tmp")
    assert missing.returncode != 0
    assert missing.stderr == "shifter: no image on this system has an id starting with 0123456789ab (see shifterimg images)\n"
    for ref in (short, f"id:{short}"):  # shifterimg lookup reads the short id as shifter does
        found = run_as(USER, [SHIFTERIMG, "lookup", ref])
        assert (found.returncode, found.stdout, found.stderr) == (0, image + "\n", ""), ref
    missing = run_as(USER, [SHIFTERIMG, "lookup", "id:0123456789ab"])
    assert (missing.returncode, missing.stdout) == (3, "")
    assert missing.stderr == ("shifterimg: no image on this system has an id starting with 0123456789ab "
                              "(see shifterimg images)\n")
    jt.assert_clean(ignore=baseline)
