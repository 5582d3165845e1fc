"""Containerized Slurm jobs on the local 3-node cluster, as a plain user: `#SBATCH --image`
with a perNodeCache volume, `srun shifter` on every node, step-level images, host steps,
submit-time refusals, cleanup after every job (also after scancel and 20 jobs at once), and
a plugin whose Python cannot start failing the job instead of running it without a container.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import gatewaytools as gt
import imagebuilder as ib
import images
import jobtools as jt
from conftest import localcluster, run_as

pytestmark = pytest.mark.cluster
USER = "testuser"


def _push_and_pull(repo: str, tag: str, env: list[str], extra_files: dict[str, bytes] | None = None) -> str:
    root = Path(tempfile.mkdtemp())
    try:
        images.make_root(root)
        for name, data in (extra_files or {}).items():
            (root / name).write_bytes(data)
        layer = ib.layer_from_dir(root)
    finally:
        shutil.rmtree(root)
    digest = ib.push("127.0.0.1:5000", repo, tag, ib.Image([layer], config={"Env": env, "Cmd": ["/bin/sh"]}))
    gt.age_rows(f"%{repo}:{tag}")  # new content under an old name: not "pulled recently"
    pulled = run_as(USER, [str(localcluster.PREFIX / "bin/shifterimg"), "pull", f"docker:{repo}:{tag}"])
    assert pulled.returncode == 0, pulled.stderr
    return digest.split(":", 1)[1]


@pytest.fixture(scope="module")
def image(cluster):
    """The job image: busybox with a setuid-root probe, and an ENV of its own."""
    return _push_and_pull("slurm/app", "1", ["PATH=/usr/bin:/bin", "APP_FLAVOUR=from-the-image"],
                          {"etc/app-release": b"slurm-app-1\n"})


@pytest.fixture(scope="module")
def other_image(cluster):
    return _push_and_pull("slurm/other", "2", ["PATH=/usr/bin:/bin", "APP_FLAVOUR=other"],
                          {"etc/app-release": b"slurm-other-2\n"})


DEMO = """#!/bin/bash
#SBATCH -N 3 -n 3 -t 5
#SBATCH --image=docker:slurm/app:1
#SBATCH --volume=/ignored:/cache:perNodeCache=size=512m
srun shifter sh -c '
  echo "$SLURMD_NODENAME" > /cache/$SLURMD_NODENAME; sleep 1
  echo "task node=$SLURMD_NODENAME uid=$(id -u) gid=$(id -g) release=$(cat /etc/app-release) \
flavour=$APP_FLAVOUR image=$SHIFTER_IMAGE hosts=$(cat /var/hostsfile | tr "\\n" ,) \
cache=$(ls /cache | tr "\\n" ,) cachesize=$(df -k /cache | tail -1 | tr -s " " | cut -d" " -f2) \
probe=$(/usr/bin/suidprobe | tr " " /) \
$(grep -E "^(CapEff|CapPrm|CapBnd|NoNewPrivs)" /proc/self/status | tr -d "\\t" | tr ":\\n" "= ")"
  grep -v " /proc\\| /sys\\| /dev" /proc/self/mountinfo | grep -vc nosuid | sed "s/^/suidmounts=/"
'
srun hostname | sort | tr "\\n" " " | sed "s/^/hoststep=/"; echo
"""


def test_demo_job_runs_in_the_image_on_every_node(image):
    job = jt.write_job(USER, "demo.sl", DEMO)
    job_id, output, _ = jt.sbatch_wait(USER, job)
    tasks = jt.lines_with("task ", output)
    assert len(tasks) == 3, output
    entry = pwd.getpwnam(USER)
    assert {jt.field("node", t) for t in tasks} == {"n1", "n2", "n3"}
    for line in tasks:
        assert jt.field("uid", line) == str(entry.pw_uid)
        assert jt.field("gid", line) == str(entry.pw_gid)
        assert jt.field("release", line) == "slurm-app-1"           # the image's files
        assert jt.field("flavour", line) == "from-the-image"       # the image's ENV
        assert jt.field("image", line) == image
        assert jt.field("hosts", line) == "n1,n2,n3,"              # /var/hostsfile
        # the cache is the node's own: it holds only what this node wrote, at the asked size
        assert jt.field("cache", line) == jt.field("node", line) + ","
        assert 400_000 < int(jt.field("cachesize", line)) <= 524_288
        assert jt.field("probe", line) == f"{entry.pw_uid}/{entry.pw_uid}"  # setuid does not elevate
        assert jt.field("CapEff", line) == "0000000000000000"
        assert jt.field("CapPrm", line) == "0000000000000000"
        assert jt.field("CapBnd", line) == "0000000000000000"
        assert jt.field("NoNewPrivs", line) == "1"
    assert jt.lines_with("suidmounts=", output) == ["suidmounts=0"] * 3
    # a step without `shifter` runs on the host
    assert jt.lines_with("hoststep=", output) == [f"hoststep={' '.join([os.uname().nodename] * 3)} "]
    jt.assert_clean()


def test_task_is_the_users_own_slurm_task(image):
    """Exit codes, Slurm's task ids and the working directory pass through the container."""
    job = jt.write_job(USER, "task.sl", """#!/bin/bash
#SBATCH -N 2 -n 4 -t 5
#SBATCH --image=docker:slurm/app:1
srun shifter sh -c 'echo "rank=$SLURM_PROCID of=$SLURM_NTASKS pwd=$(pwd) ppid_is_stepd=$(cat /proc/$PPID/comm)"'
srun -n1 shifter sh -c 'exit 7'; echo "exit=$?"
srun -n1 shifter /bin/false; echo "false=$?"
""")
    _, output, _ = jt.sbatch_wait(USER, job)
    ranks = jt.lines_with("rank=", output)
    assert sorted(jt.field("rank", r) for r in ranks) == ["0", "1", "2", "3"]
    assert all(jt.field("pwd", r) == str(jt.home(USER)) for r in ranks)  # cwd exists via the /home site mount
    assert all(jt.field("ppid_is_stepd", r) == "slurmstepd" for r in ranks)
    assert "exit=7" in output and "false=1" in output
    jt.assert_clean()


def test_step_level_image_and_job_image_side_by_side(image, other_image):
    job = jt.write_job(USER, "steps.sl", """#!/bin/bash
#SBATCH -N 2 -t 5
#SBATCH --image=docker:slurm/app:1
srun -N2 shifter cat /etc/app-release | sed 's/^/job:/'
srun -N2 --image=docker:slurm/other:2 shifter sh -c 'echo "step:$(cat /etc/app-release) $APP_FLAVOUR"'
srun -N1 shifter --image=docker:slurm/other:2 cat /etc/app-release | sed 's/^/arg:/'
srun -N1 shifter cat /etc/app-release | sed 's/^/again:/'
""")
    _, output, _ = jt.sbatch_wait(USER, job)
    assert jt.lines_with("job:", output) == ["job:slurm-app-1"] * 2
    assert jt.lines_with("step:", output) == ["step:slurm-other-2 other"] * 2
    assert jt.lines_with("arg:", output) == ["arg:slurm-other-2"]
    assert jt.lines_with("again:", output) == ["again:slurm-app-1"]
    jt.assert_clean()


@pytest.mark.parametrize("args,message", [
    (["--image=docker:slurm/NOPE:1"], "uppercase letters are not allowed"),
    (["--image=docker:slurm/absent:9"], "slurm/absent:9"),
    (["--volume=/tmp:/data"], "--volume needs --image"),
    (["--image=docker:slurm/app:1", "--volume=/tmp:/etc/x"], "/etc"),
    (["--image=docker:slurm/app:1", "--volume=tmp:/data"], "absolute"),
    (["--image=docker:slurm/app:1", "--volume=/x:/c:perNodeCache=size=1t"], "limit"),
    (["--image=docker:slurm/app:1", "--module=nosuchmodule"], "'nosuchmodule' is not a module here"),
])
def test_bad_submissions_are_refused_before_queueing(image, args, message):
    name = jt.refused_name()
    result = run_as(USER, ["sbatch", "--parsable", "-J", name, *args, "--wrap", "true"], cwd="/tmp")
    assert result.returncode != 0
    ours = [l for l in result.stderr.splitlines() if l.startswith("sbatch: error: shifter: ")]
    assert len(ours) == 1 and message in ours[0], result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    jt.assert_never_queued(name)


def test_srun_refuses_a_bad_step_image(image):
    job = jt.write_job(USER, "badstep.sl", """#!/bin/bash
#SBATCH -N 1 -t 5
#SBATCH --image=docker:slurm/app:1
srun --image=docker:slurm/absent:1 shifter true; echo "srun=$?"
""")
    _, output, _ = jt.sbatch_wait(USER, job)
    assert "srun=1" in output
    assert re.search(r"srun: error: shifter: .*slurm/absent:1", output)
    jt.assert_clean()


def test_scancel_of_a_running_image_job_cleans_up(image):
    job = jt.write_job(USER, "long.sl", """#!/bin/bash
#SBATCH -N 3 -t 5
#SBATCH --image=docker:slurm/app:1
#SBATCH --volume=/x:/cache:perNodeCache=size=512m
srun shifter sleep 300
""")
    result = run_as(USER, ["sbatch", "--parsable", "-o", "/dev/null", str(job)], cwd=str(job.parent))
    job_id = result.stdout.strip()
    deadline = time.monotonic() + 60
    while len([l for l in jt.leftovers()["processes"] if l.endswith(" sleep")]) < 3:
        assert time.monotonic() < deadline, "the job's tasks did not start"
        time.sleep(0.2)
    assert jt.leftovers()["state"], "a running job has state on its nodes"
    run_as(USER, ["scancel", job_id])
    jt.wait_gone(job_id)
    jt.assert_clean()


def test_twenty_image_jobs_at_once_all_complete_and_leave_nothing(image):
    job = jt.write_job(USER, "many.sl", """#!/bin/bash
#SBATCH -N 1 -n 1 -t 5
#SBATCH --image=docker:slurm/app:1
srun shifter cat /etc/app-release
""")
    ids = []
    for _ in range(20):
        result = run_as(USER, ["sbatch", "--parsable", "-o", "many-%j.out", str(job)], cwd=str(job.parent))
        assert result.returncode == 0, result.stderr
        ids.append(result.stdout.strip())
    for job_id in ids:
        jt.wait_gone(job_id, timeout=240)
    for job_id in ids:
        out = (job.parent / f"many-{job_id}.out").read_text().splitlines()
        # jobs sharing a node each have their own sshd port: no step warns about the sshd
        assert out == ["slurm-app-1"], (job_id, out)
        state = jt.localcluster.slurm("sacct", "-n", "-j", job_id, check=False)  # no accounting: informative only
        del state
    jt.assert_clean()


def _slurm_conf_with_plugin_args(tmp: Path, args: str) -> Path:
    """A slurm.conf (in `tmp`) like the cluster's whose plugstack.conf loads our plugin with
    the config file and `args`: what an admin's plugstack.conf line would say."""
    plugstack = tmp / "plugstack.conf"
    plugstack.write_text(f"required {localcluster.PREFIX}/lib/shifter_spank.so "
                         f"shifter_config={localcluster.STATE}/etc/shifter.yaml {args}\n")
    conf = tmp / "slurm.conf"
    conf.write_text(re.sub(r"^PlugStackConfig=.*$", f"PlugStackConfig={plugstack}",
                           (localcluster.STATE / "etc/slurm.conf").read_text(), flags=re.M))
    return conf


@pytest.mark.parametrize("python,message", [
    ("/nonexistent/bin/python3", "cannot start Python (/nonexistent/bin/python3): No such file"),
    # the system Python: it may or may not have cffi; it never has our packages
    ("/usr/bin/python3.11", "cannot load the Python hooks (ModuleNotFoundError: No module named '"),
    # a bare venv: no cffi backend at all
    ("VENV", "cannot load the Python hooks (ModuleNotFoundError: No module named '_cffi_backend')"),
])
def test_plugin_whose_python_cannot_start_fails_the_job(image, python, message):
    """A broken Python (a missing interpreter, or one without cffi or our packages) must fail
    the image job with one line instead of running it without the container (cffi alone would
    fail open, and print its own traceback)."""
    tmp = Path(tempfile.mkdtemp(dir=localcluster.STATE))
    os.chmod(tmp, 0o755)
    if python == "VENV":
        subprocess.run(["/usr/bin/python3.11", "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
        python = str(tmp / "venv/bin/python3")
    try:
        conf = _slurm_conf_with_plugin_args(tmp, f"python={python}")
        result = run_as(USER, ["env", f"SLURM_CONF={conf}", "srun", "-N1", "--image=docker:slurm/app:1",
                               "shifter", "cat", "/etc/app-release"])
        assert result.returncode != 0
        assert "slurm-app-1" not in result.stdout
        assert message in result.stderr
        assert "Traceback" not in result.stderr and "File \"" not in result.stderr
        # a job without our options is not affected by the broken Python
        plain = run_as(USER, ["env", f"SLURM_CONF={conf}", "srun", "-N1", "true"])
        assert plain.returncode == 0, plain.stderr
    finally:
        shutil.rmtree(tmp)


@pytest.mark.parametrize("arg,message", [
    ("extern_setup=/usr/local/bin/setup", "plugin argument 'extern_setup=/usr/local/bin/setup' in plugstack.conf is not supported"),
    ("extern_cgroup=1", "plugin argument 'extern_cgroup=1' in plugstack.conf is not supported"),
    ("enable_sshd=maybe", "plugin argument 'enable_sshd=maybe' in plugstack.conf: the value must be one of 1/0/yes/no/true/false"),
    ("enable_ccm=", "plugin argument 'enable_ccm=' in plugstack.conf: the value must be one of"),
    ("shifter_config=relative.yaml", "plugin argument 'shifter_config=relative.yaml' in plugstack.conf: the value must be an absolute path"),
    ("enable_sshd", "unknown plugin argument 'enable_sshd' in plugstack.conf"),
    ("bogus=1", "unknown plugin argument 'bogus=1' in plugstack.conf"),
    ("enable_ccm=1 enable_ccm=0", "plugin argument 'enable_ccm' is given twice in plugstack.conf; keep one"),
])
def test_plugin_argument_that_would_do_nothing_fails_jobs_with_its_name(image, arg, message):
    """An admin's plugstack.conf argument either works or fails jobs with one line naming it:
    never accepted and ignored."""
    tmp = Path(tempfile.mkdtemp(dir=localcluster.STATE))
    os.chmod(tmp, 0o755)
    try:
        conf = _slurm_conf_with_plugin_args(tmp, arg)
        result = run_as(USER, ["env", f"SLURM_CONF={conf}", "srun", "-N1", "true"])
        assert result.returncode != 0
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        shutil.rmtree(tmp)


def test_prolog_logs_one_event_per_step_with_its_duration(image):
    job = jt.write_job(USER, "logged.sl", "#!/bin/bash\n#SBATCH -N 1 -w n2 -t 5\n#SBATCH --image=docker:slurm/app:1\n"
                       "srun shifter true\n")
    job_id, _, _ = jt.sbatch_wait(USER, job)
    jt.wait_gone(job_id)
    import json
    events = []
    for line in (localcluster.STATE / "log/slurmd-n2.log").read_text().splitlines():
        start = line.find("{")
        if start >= 0 and '"part"' in line:
            try:
                record = json.loads(line[start:])
            except ValueError:
                continue
            if record.get("job") == int(job_id) or record.get("key") and record.get("event", "").startswith("build."):
                events.append(record)
    ours = {e["event"]: e for e in events if e.get("job") == int(job_id)}
    for name in ("load_config", "job_info", "spec", "build", "teardown"):
        assert name in ours, (name, sorted(ours))
        assert ours[name]["ok"] is True and isinstance(ours[name]["ms"], float) and ours[name]["node"] == "n2"
    assert ours["build"]["key"] == ours["teardown"]["key"]
    jt.assert_clean()


def test_request_broken_after_submission_fails_the_steps_not_the_node(image, cluster):
    """The image's files vanish between submission and start: the prolog records why, each
    `srun shifter` step fails with that line, other steps run, and no node is drained."""
    record = localcluster.STATE / "images" / f"{image}.json"
    saved = record.read_bytes()
    job = jt.write_job(USER, "broken.sl", """#!/bin/bash
#SBATCH -N 2 -t 5
#SBATCH --image=docker:slurm/app:1
srun shifter true; echo "shifter=$?"
srun true; echo "host=$?"
""")
    result = run_as(USER, ["sbatch", "--parsable", "--hold", "-o", "broken-%j.out", str(job)], cwd=str(job.parent))
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    try:
        record.unlink()
        cluster.slurm("scontrol", "release", job_id)
        jt.wait_gone(job_id, timeout=120)
    finally:
        record.write_bytes(saved)
        os.chmod(record, 0o644)
        os.chown(record, pwd.getpwnam("shifter-gw").pw_uid, pwd.getpwnam("shifter-gw").pw_gid)
    output = (job.parent / f"broken-{job_id}.out").read_text()
    assert "shifter=1" in output and "host=0" in output, output
    assert re.search(rf"error: shifter: image {image} is not in .*; pull it first", output), output
    states = cluster.slurm("sinfo", "-h", "-N", "-o", "%N %t").stdout.split("\n")
    # in service; "plnd" is an idle node the backfill scheduler planned for a pending job (the
    # released job itself, until its next cycle: seen on a fresh root)
    assert all(line.split()[1] in ("idle", "mix", "alloc", "plnd") for line in states if line.strip()), states
    jt.assert_clean()


def test_shifter_in_the_batch_script_enters_the_jobs_container(image):
    """`shifter CMD` typed in the batch script (no srun) runs in the job's container on the
    batch node, with its cache and hostsfile; stdin, stdout and the exit code pass through."""
    job = jt.write_job(USER, "batchshifter.sl", """#!/bin/bash
#SBATCH -N 2 -t 5
#SBATCH --image=docker:slurm/app:1
#SBATCH --volume=/x:/cache:perNodeCache=size=512m
srun -N2 shifter sh -c 'touch /cache/from-$SLURMD_NODENAME'
shifter sh -c 'echo "release=$(cat /etc/app-release) hosts=$(cat /var/hostsfile | tr "\\n" ,) cache=$(ls /cache | tr "\\n" ,)"'
echo piped | shifter cat
shifter sh -c 'exit 3'; echo "rc=$?"
command -v shifter | sed 's/^/path=/'
""")
    _, output, _ = jt.sbatch_wait(USER, job)
    assert "release=slurm-app-1 hosts=n1,n2, cache=from-n1," in output, output
    assert "\npiped\n" in f"\n{output}"
    assert "rc=3" in output
    assert jt.lines_with("path=", output) == ["path=/usr/local/bin/shifter"]
    jt.assert_clean()


def test_bad_shifter_steps_fail_with_their_reason_and_a_nonzero_exit(image):
    """Problems found on the node (bad shifter options, an unknown image id, a bad --env)
    fail the step's tasks with the reason in the job's output; srun exits non-zero."""
    job = jt.write_job(USER, "badsteps.sl", """#!/bin/bash
#SBATCH -N 1 -t 5
#SBATCH --image=docker:slurm/app:1
srun shifter --no-such-flag true; echo "flag=$?"
srun shifter --image=id:0000000000000000000000000000000000000000000000000000000000000000 true; echo "id=$?"
srun shifter --env=1BAD=x true; echo "env=$?"
srun shifter true; echo "good=$?"
""")
    _, output, _ = jt.sbatch_wait(USER, job)
    for name in ("flag", "id", "env"):
        assert f"{name}=1" in output, output
    assert "good=0" in output
    assert "error: shifter: unknown option --no-such-flag" in output
    assert "error: shifter: image 0000000000000000000000000000000000000000000000000000000000000000 is not in" in output
    assert "error: shifter: --env: '1BAD=x' is not NAME=value" in output
    assert "Traceback" not in output
    jt.assert_clean()


def test_module_user_hooks_run_in_each_shifter_task(image):
    """--module: the module's env and files are in the container, its user hook runs as the
    user inside it before each task's command; a failing hook fails the step's tasks."""
    job = jt.write_job(USER, "modules.sl", """#!/bin/bash
#SBATCH -N 2 -n 2 -t 5
#SBATCH --image=docker:slurm/app:1
#SBATCH --module=hello
srun shifter sh -c 'echo "command on=$SLURMD_NODENAME module_env=$HELLO_MODULE"'
srun -N1 -n1 shifter --module=broken sh -c 'echo must-not-run'; echo "broken=$?"
""")
    _, output, _ = jt.sbatch_wait(USER, job)
    uid = pwd.getpwnam(USER).pw_uid
    hooks = jt.lines_with("hello-hook ", output)
    assert hooks == [f"hello-hook uid={uid} cwd={jt.home(USER)} image={image} module_env=loaded"] * 2, output
    assert sorted(jt.field("on", line) for line in jt.lines_with("command ", output)) == ["n1", "n2"]
    assert all(jt.field("module_env", line) == "loaded" for line in jt.lines_with("command ", output))
    assert "must-not-run" not in output and "broken=1" in output
    assert "broken-hook ran" in output
    assert "error: shifter: module 'broken': user hook /opt/udiImage/modules/broken/hook.sh failed" in output
    jt.assert_clean()


EVIL_SO = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void evil(void) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/shifter-evil-ld-as-%d", (int)geteuid());
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
}
"""


def test_users_python_and_loader_variables_never_reach_root_code(image):
    """PYTHON* and LD_* from the user's environment must not steer the plugin's root code
    (prolog, step hooks, epilog): the embedded Python is isolated and the runtime scrubs its
    environment. A user-owned sitecustomize.py and LD_PRELOAD library each leave a marker
    named after the uid that ran them; none may say 0."""
    evil = jt.home(USER) / "evil"
    shutil.rmtree(evil, ignore_errors=True)
    (evil / "shifter_wlm").mkdir(parents=True)
    marker = "import os; open('/tmp/shifter-evil-py-as-%d' % os.geteuid(), 'w').close()\n"
    (evil / "sitecustomize.py").write_text(marker)
    (evil / "shifter_wlm" / "__init__.py").write_text(marker + "raise SystemExit('hijacked')\n")
    src = evil / "evil.c"
    src.write_text(EVIL_SO)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(evil / "evil.so"), str(src)], check=True)
    for path in [evil, *evil.rglob("*")]:
        os.chown(path, pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid)
    for leftover in Path("/tmp").glob("shifter-evil-*"):
        leftover.unlink()
    job = jt.write_job(USER, "evil.sl", """#!/bin/bash
#SBATCH -N 2 -t 5
#SBATCH --image=docker:slurm/app:1
srun shifter cat /etc/app-release
""")
    _, output, _ = jt.sbatch_wait(USER, job, f"--export=ALL,PYTHONPATH={evil},PYTHONHOME={evil},"
                                  f"PYTHONSTARTUP={evil}/sitecustomize.py,LD_PRELOAD={evil}/evil.so,"
                                  f"LD_LIBRARY_PATH={evil}")
    assert output.count("slurm-app-1") == 2, output
    assert "hijacked" not in output
    jt.assert_clean()
    markers = sorted(p.name for p in Path("/tmp").glob("shifter-evil-*"))
    # the variables were in effect: the user's own processes (the batch shell, the tasks)
    # loaded the library ...
    assert f"shifter-evil-ld-as-{pwd.getpwnam(USER).pw_uid}" in markers, markers
    # ... and nothing running as root did, nor ran the user's Python
    assert [m for m in markers if m.endswith("-as-0")] == [], markers
    shutil.rmtree(evil)
    for leftover in Path("/tmp").glob("shifter-evil-*"):
        leftover.unlink()


LEFTOVER = """#!/bin/bash
#SBATCH -N 1 -w n1 -t 5
#SBATCH --image=docker:slurm/app:1
#SBATCH --volume=/x:/cache:perNodeCache=size=320m
srun shifter sh -c 'echo started; sleep 300'
"""
NEXT = """#!/bin/bash
#SBATCH -N 1 -w n1 -t 5
#SBATCH --image=docker:slurm/app:1
srun shifter cat /etc/app-release
"""


def _job_whose_epilog_never_ran() -> tuple[str, dict]:
    """A job on n1 ended while slurmd's plugin stack lacked our plugin: its epilog ran
    without us, as if it never ran. (job id, its record on n1); its container is still
    pinned there (its sshd went with the job's extern step, or goes with the collection)."""
    import json
    job = jt.write_job(USER, "leftover.sl", LEFTOVER)
    # a name of this run's own: job ids start again after the cluster's state is wiped, and an
    # earlier run's output of the same job id must not count as this job's
    token = os.urandom(4).hex()
    result = run_as(USER, ["sbatch", "--parsable", "-o", f"{job.stem}-%j-{token}.out", str(job)], cwd=str(job.parent))
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().split(";")[0]
    out = job.parent / f"{job.stem}-{job_id}-{token}.out"
    deadline = time.monotonic() + 60
    while not (out.exists() and "started" in out.read_text()):
        assert time.monotonic() < deadline, "the job's step did not start"
        time.sleep(0.2)
    plugstack = localcluster.STATE / "etc/plugstack.conf"
    saved = plugstack.read_text()
    try:
        plugstack.write_text("")  # read by each slurmstepd: the job's epilog runs without us
        run_as(USER, ["scancel", job_id])
        jt.wait_gone(job_id)
    finally:
        plugstack.write_text(saved)
    record = json.loads((jt.run_dir() / "n1/jobs" / f"{job_id}.json").read_text())
    assert record["state"] == "ready" and record["sshd_pid"], record
    return job_id, record


def _next_job_on_n1() -> str:
    job_id, output, _ = jt.sbatch_wait(USER, jt.write_job(USER, "next.sl", NEXT))
    assert output.splitlines() == ["slurm-app-1"], output  # no warning about the sshd either
    jt.wait_gone(job_id)
    return job_id


def test_next_prolog_collects_what_a_job_whose_epilog_never_ran_left(image):
    """Its record, pinned container, loop device, perNodeCache file and sshd go with the next
    job's prolog on the node, logged as one event; the next job gets the node's sshd port."""
    dead, record = _job_whose_epilog_never_ran()
    state = jt.run_dir() / "n1" / record["key"]
    assert str(state / "ns") in jt.leftovers()["mounts"]
    following = _next_job_on_n1()
    assert not (jt.run_dir() / "n1/jobs" / f"{dead}.json").exists() and not state.exists()
    assert not Path(f"/proc/{record['sshd_pid']}").exists()
    events = jt.node_events("n1")
    collected = [e for e in events if e.get("event") == "leftovers" and e.get("job") == int(following)]
    assert len(collected) == 1 and collected[0]["ok"] is True, collected
    assert collected[0]["jobs"] == [int(dead)] and collected[0]["containers"] == [record["key"]], collected
    # the sshd belongs to the job's extern step, so it normally went with the job; if it
    # still ran, the collection stopped it
    assert collected[0]["sshd_stopped"] in ([], [record["sshd_pid"]]), collected
    sshd = [e for e in events if e.get("event") == "sshd" and e.get("job") == int(following)]
    assert sshd and sshd[0]["ok"] is True, sshd  # the port was free again
    jt.assert_clean()


@pytest.mark.parametrize("run_dir", ["kept", "wiped"])
def test_next_prolog_after_a_reboot_while_a_record_said_ready(image, run_dir):
    """A node rebooted during a job: every mount and process is gone, the job record still
    says "ready" (run dir on disk: kept) or the run dir is gone too (wiped). The next job
    runs; a kept record is collected without signalling the process that now has its sshd's
    pid (a reboot reuses pids)."""
    import json
    from runtime import syscalls as sc
    from runtime import teardown
    dead, record = _job_whose_epilog_never_ran()
    state = jt.run_dir() / "n1" / record["key"]
    for pid in teardown.processes_in(str(state / "ns")):  # the "reboot": processes, then mounts
        os.kill(pid, 9)
    sc.umount2(str(state / "ns"), sc.MNT_DETACH)
    sc.umount2(str(state), sc.MNT_DETACH)
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        if run_dir == "wiped":
            shutil.rmtree(jt.run_dir() / "n1")
        else:
            path = jt.run_dir() / "n1/jobs" / f"{dead}.json"
            path.write_text(json.dumps({**record, "sshd_pid": stranger.pid}))
        following = _next_job_on_n1()
        assert stranger.poll() is None, "the next prolog signalled a process that only had a dead sshd's pid"
        assert not (jt.run_dir() / "n1/jobs" / f"{dead}.json").exists() and not state.exists()
        if run_dir == "kept":
            collected = [e for e in jt.node_events("n1")
                         if e.get("event") == "leftovers" and e.get("job") == int(following)]
            assert len(collected) == 1 and collected[0]["ok"] is True, collected
            assert collected[0]["jobs"] == [int(dead)] and collected[0]["sshd_stopped"] == [], collected
    finally:
        stranger.kill()
        stranger.wait()
    jt.assert_clean()
