"""A site coming from the original Shifter, in real jobs on the local 3-node cluster (issue
17): the site's mount hooks in each node's prolog, site mounts below /etc, etc_mode: site,
/var/shifterConfig.json, `--image=local:/path`, and `sbatch --ccm` without --image using the
site's CCM tree. Refusals come at submission with one line, and nothing is left behind.

Each test runs with the cluster's site config plus its own keys (cluster_config), and puts
the config back afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

import images
import jobtools as jt
import rtutil
from conftest import localcluster, run_as

pytestmark = pytest.mark.cluster
USER = "testuser"


@contextlib.contextmanager
def cluster_config(**extra):
    """The cluster's site config with `extra` keys set, for the block (the prolog, the step
    hooks and the submit side all read this one file)."""
    path = localcluster.STATE / "etc/shifter.yaml"
    original = path.read_text()

    def put(text: str) -> None:
        tmp = path.with_name(".shifter.yaml.compat")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    put(yaml.safe_dump({**yaml.safe_load(original), **extra}))
    try:
        yield
    finally:
        put(original)


def _hook(name: str) -> str:
    """Records, in the container's /var, who ran it, whether the /etc site mount is there yet
    and its environment's names."""
    return (f'#!/bin/sh\n{{ echo "{name} uid=$(id -u) root=$(pwd)"; '
            f'if [ -e ./etc/opt/cray/release ]; then echo mounted; else echo unmounted; fi; '
            f"env | cut -d= -f1 | sort | tr '\\n' ,; }} | tr '\\n' ' ' > ./var/{name}-hook.txt\n")


@pytest.fixture(scope="module")
def site(cluster):
    """Root-owned trees under the cluster's state directory: an image tree (busybox), hooks,
    site files for /etc/opt/cray and etc_mode: site, and a tree in a world-writable directory."""
    base = Path(tempfile.mkdtemp(prefix="compat-", dir=localcluster.STATE))
    try:
        os.chmod(base, 0o755)
        tree = base / "tree"
        images.make_root(tree)
        os.chmod(tree, 0o755)
        hooks = base / "hooks"
        hooks.mkdir(mode=0o755)
        for name in ("pre", "post"):
            (hooks / f"{name}.sh").write_text(_hook(name))
        (hooks / "fail.sh").write_text('#!/bin/sh\necho "the scratch filesystem is down" >&2\nexit 4\n')
        marker = str(4000 + os.getpid() % 1000)  # the hanging hook's sleeps, found by their argument
        (hooks / "hang.sh").write_text(f'#!/bin/sh\necho "waiting for scratch"\nsleep {marker} &\nsleep {marker}\n')
        cray = base / "cray"
        cray.mkdir(mode=0o755)
        (cray / "release").write_text("cray-site-files\n")
        etcsite = base / "etcsite"
        etcsite.mkdir(mode=0o755)
        user = pwd.getpwnam(USER)
        (etcsite / "passwd").write_text(f"{user.pw_name}:x:{user.pw_uid}:{user.pw_gid}:site-passwd:"
                                        f"{user.pw_dir}:/bin/sh\n")
        (etcsite / "group").write_text(f"sitegroup:x:{user.pw_gid}:{user.pw_name}\n")
        loose = base / "loose"
        images.make_root(loose / "tree")
        os.chmod(loose, 0o777)
        yield {"base": base, "tree": tree, "hooks": hooks, "cray": cray, "etcsite": etcsite,
               "loose_tree": loose / "tree", "user": user, "marker": marker}
    finally:
        shutil.rmtree(base)


def _mounts(site) -> list[dict]:
    return [{"from": "/home", "to": "/home"}, {"from": str(site["cray"]), "to": "/etc/opt/cray", "flags": ["ro"]}]


LOCAL_JOB = """#!/bin/bash
#SBATCH -N 2 -n 2 -t 5
#SBATCH --image=local:{tree}
#SBATCH --volume={home}:/data:ro
srun shifter sh -c 'echo "task node=$SLURMD_NODENAME release=$(cat /etc/os-release) cray=$(cat /etc/opt/cray/release) \
probe=$(/usr/bin/suidprobe | tr " " /) cfg=$(cat /var/shifterConfig.json)"; cat /var/pre-hook.txt; echo; \
cat /var/post-hook.txt; echo; grep -v " /proc\\| /sys\\| /dev" /proc/self/mountinfo | grep -vc nosuid | sed "s/^/suidmounts=/"'
"""


def test_local_image_job_with_site_hooks_and_a_site_mount_below_etc(site):
    """--image=local:/path on two nodes: the tree is the image (read-only, nosuid), each
    node's prolog ran the site's hooks as root around the site mounts (the /etc one too),
    with a clean environment, and /var/shifterConfig.json is the original's line."""
    home = jt.home(USER)
    with cluster_config(allow_local_images=True, site_mounts=_mounts(site),
                        site_pre_mount_hook=str(site["hooks"] / "pre.sh"),
                        site_post_mount_hook=str(site["hooks"] / "post.sh")):
        job = jt.write_job(USER, "compat-local.sl", LOCAL_JOB.format(tree=site["tree"], home=home))
        _, output, result = jt.sbatch_wait(USER, job, check=False)
    assert result.returncode == 0, (result.stderr, output)
    tasks = jt.lines_with("task ", output)
    assert {jt.field("node", t) for t in tasks} == {"n1", "n2"}, output
    uid = site["user"].pw_uid
    for line in tasks:
        assert jt.field("release", line) == "NAME=shifter-test"
        assert jt.field("cray", line) == "cray-site-files"
        assert jt.field("probe", line) == f"{uid}/{uid}"
        assert jt.field("cfg", line) == ('{"identifier":"%s","user":"%s","volMap":"%s:/data:ro","modules":""}'
                                         % (site["tree"], USER, home))
    assert jt.lines_with("suidmounts=", output) == ["suidmounts=0"] * 2, output  # every mount nosuid
    for name, mounted in (("pre", "unmounted"), ("post", "mounted")):
        hooks = jt.lines_with(f"{name} ", output)
        assert len(hooks) == 2, output
        for line in hooks:
            words = line.split()
            assert words[1] == "uid=0" and words[2].startswith("root=/") and words[3] == mounted, line
            assert words[4] == "PATH,PWD,SHIFTER_GID,SHIFTER_IMAGE,SHIFTER_ROOT,SHIFTER_UID,SHIFTER_USER,", line
    jt.assert_clean()


CCM_JOB = """#!/bin/sh
#SBATCH -N 1 -t 5
#SBATCH --ccm
echo "ccm release=$(cat /etc/os-release) user=$(id -un) gecos=$(grep "^$(id -un):" /etc/passwd | cut -d: -f5) \
script=$0 cfg=$(cat /var/shifterConfig.json)"
"""


def test_ccm_without_image_runs_the_batch_script_in_the_sites_ccm_tree(site):
    """sbatch --ccm with no --image: the site's ccm.root is the job's image (a local: image
    allowed although allow_local_images is off), here with etc_mode: site."""
    with cluster_config(ccm={"root": str(site["tree"])}, etc_dir=str(site["etcsite"]), etc_mode="site"):
        job = jt.write_job(USER, "compat-ccm.sl", CCM_JOB)
        _, output, result = jt.sbatch_wait(USER, job, check=False)
    assert result.returncode == 0, (result.stderr, output)
    line = jt.lines_with("ccm ", output)
    assert len(line) == 1, output
    assert jt.field("release", line[0]) == "NAME=shifter-test"
    assert jt.field("user", line[0]) == USER and jt.field("gecos", line[0]) == "site-passwd"  # the site's passwd
    assert jt.field("script", line[0]) == "/var/run/udiImage/ccm/job-script"
    assert jt.field("cfg", line[0]) == '{"identifier":"%s","user":"%s","volMap":"","modules":""}' % (site["tree"], USER)
    jt.assert_clean()


def test_ccm_with_a_local_image_acts_in_place_of_ccm(site):
    """sbatch --ccm --image=local:/tree (the original's "acts in place of CCM if the image
    points to the /dsl tree"): the batch script runs in that tree where the site allows
    local images."""
    with cluster_config(allow_local_images=True):
        job = jt.write_job(USER, "compat-ccm-local.sl",
                           CCM_JOB.replace("#SBATCH --ccm\n", f"#SBATCH --ccm\n#SBATCH --image=local:{site['tree']}\n"))
        _, output, result = jt.sbatch_wait(USER, job, check=False)
    assert result.returncode == 0, (result.stderr, output)
    [line] = jt.lines_with("ccm ", output)
    assert jt.field("release", line) == "NAME=shifter-test" and jt.field("user", line) == USER, line
    assert jt.field("script", line) == "/var/run/udiImage/ccm/job-script"
    assert jt.field("cfg", line).startswith('{"identifier":"%s","user":"%s"' % (site["tree"], USER)), line
    jt.assert_clean()


def test_failing_site_hook_fails_the_jobs_steps_with_its_message(site):
    with cluster_config(allow_local_images=True, site_pre_mount_hook=str(site["hooks"] / "fail.sh")):
        job = jt.write_job(USER, "compat-fail.sl", "#!/bin/bash\n#SBATCH -N 1 -t 5\n"
                           f"#SBATCH --image=local:{site['tree']}\nsrun shifter echo RAN; echo step=$?\n")
        _, output, _ = jt.sbatch_wait(USER, job)
    assert "RAN" not in output
    assert f"site_pre_mount_hook {site['hooks']}/fail.sh failed (exit status 4): the scratch filesystem is down" \
        in output, output
    assert "step=0" not in output and "Traceback" not in output
    jt.assert_clean()


def test_hanging_site_hook_is_killed_and_the_jobs_steps_say_so(site):
    """A hook that hangs holds the prolog only hook_timeout seconds: it is killed with what it
    started, the build stops, and each step gets the one line."""
    with cluster_config(allow_local_images=True, hook_timeout=2, site_post_mount_hook=str(site["hooks"] / "hang.sh")):
        job = jt.write_job(USER, "compat-hang.sl", "#!/bin/bash\n#SBATCH -N 1 -t 5\n"
                           f"#SBATCH --image=local:{site['tree']}\nsrun shifter echo RAN; echo step=$?\n")
        _, output, _ = jt.sbatch_wait(USER, job)
    assert "RAN" not in output and "step=0" not in output
    assert (f"site_post_mount_hook {site['hooks']}/hang.sh did not finish within 2 s (hook_timeout) and was killed: "
            "waiting for scratch") in output, output
    assert rtutil.processes_with(site["marker"]) == []
    jt.assert_clean()


@pytest.mark.parametrize("allow,path,words", [
    (False, "TREE", "local images are not allowed on this site"),
    (True, "LOOSE", "loose is writable by others (mode 0777)"),
    (True, "TREE/etc/motd", "is not a directory"),
    (True, "/nonexistent-tree", "No such file or directory"),
])
def test_local_image_refused_at_submission(site, allow, path, words):
    path = path.replace("LOOSE", str(site["loose_tree"])).replace("TREE", str(site["tree"]))
    with cluster_config(allow_local_images=allow):
        result = run_as(USER, ["sbatch", f"--image=local:{path}", "--wrap", "true"], cwd="/tmp")
    assert result.returncode != 0 and "Submitted" not in result.stdout
    error = [line for line in result.stderr.splitlines() if "shifter:" in line]
    assert len(error) == 1 and f"image 'local:{path}'" in error[0] and words in error[0], result.stderr
    assert "Traceback" not in result.stderr
    jt.assert_clean()
