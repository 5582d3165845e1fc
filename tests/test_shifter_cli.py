"""The `shifter` command: flags, bad input (one line, non-zero, nothing left, no traceback),
rootless as testuser (security model, volumes, env, entrypoint/cmd), and as root."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import rtutil

from conftest import account, need, run_as
from images import make_image, write_config
from rtutil import host_state

SHIFTER = str(Path(sys.executable).with_name("shifter"))


@pytest.fixture(scope="module")
def site():
    need(os.geteuid() == 0, "the CLI tests switch to the test user and build as root")
    need(os.path.exists(SHIFTER), f"{SHIFTER} is not installed (pip install .)")
    need(shutil.which("squashfuse") is not None, "squashfuse is needed for rootless")
    base = Path(tempfile.mkdtemp(prefix="shifter-cli-"))
    with rtutil.released(base, base / "run"):
        os.chmod(base, 0o755)
        images = base / "images"
        plain = make_image(images)
        ep = make_image(images, entrypoint=["/bin/echo", "EP"], cmd=["CMD"], workdir="/opt/app",
                        env=("PATH=/usr/bin:/bin", "IMAGEVAR=ep"))
        run = base / "run"
        run.mkdir(mode=0o755)
        cfg = write_config(base / "shifter.yaml", images, run,
                           site_env={"set": {"SITEVAR": "site"}, "append": {"PATH": "/site/bin"}})
        data = base / "data"
        data.mkdir()
        user = account("testuser")
        os.chown(data, user.pw_uid, user.pw_gid)
        secret = base / "secret"
        secret.mkdir(mode=0o700)
        (base / "link").symlink_to(secret)
        # rootless FUSE needs /dev/fuse usable by users; set it up for these tests, then restore
        mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
        os.chmod("/dev/fuse", 0o666)
        try:
            yield {"base": base, "cfg": str(cfg), "plain": plain, "ep": ep, "run": str(run), "data": data, "user": user}
        finally:
            os.chmod("/dev/fuse", mode)


def shifter_as(site, user, *args, env=()):
    return run_as(user, ["SHIFTER_CONFIG=" + site["cfg"], *env, SHIFTER, *args], cwd="/")


def shifter_root(site, *args):
    env = {"PATH": "/usr/bin:/bin", "SHIFTER_CONFIG": site["cfg"]}
    return subprocess.run([SHIFTER, *args], capture_output=True, text=True, env=env, timeout=60, cwd="/")


def image(site, which="plain"):
    return "--image=id:" + site[which].id


def test_rootless_security(site):
    before = host_state(site["run"])
    script = "id -u; id -g; cat /proc/self/status; cat /proc/self/mountinfo; /usr/bin/suidprobe; touch /usr/x"
    proc = shifter_as(site, "testuser", image(site), "--", "sh", "-c", script)
    out = proc.stdout
    assert "Read-only" in proc.stderr  # the image is read-only
    lines = out.splitlines()
    uid, gid = str(site["user"].pw_uid), str(site["user"].pw_gid)
    assert lines[:2] == [uid, gid]
    status = dict(l.split(":\t", 1) for l in lines if ":\t" in l)
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[key], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Uid"].split() == [uid] * 4
    mounts = [l for l in lines if " - " in l and l.split(" ")[0].isdigit()]
    assert len(mounts) > 10
    for line in mounts:
        assert "nosuid" in line.split(" ")[5], line
    assert lines[-1] == f"{uid} {uid}"  # setuid-root binary did not elevate
    assert rtutil.settled(site["run"], before) == before  # no squashfuse, mount or file left


def test_rootless_passwd_env_volumes(site):
    d = site["data"]
    proc = shifter_as(site, "testuser", image(site), f"--volume={d}:/data", "-V", f"{d}:/ro:ro", "-e", "A=1",
                      "--", "sh", "-c", "cat /etc/passwd; echo $A $IMAGEVAR $SITEVAR $PATH; echo w > /data/w; echo x > /ro/x")
    u = site["user"]
    assert proc.stdout.splitlines()[0].startswith(f"testuser:x:{u.pw_uid}:{u.pw_gid}:")
    assert "1 image site /usr/bin:/bin:/site/bin" in proc.stdout
    assert (d / "w").read_text() == "w\n"
    assert "Read-only" in proc.stderr and not (d / "x").exists()


def test_rootless_symlink_to_unreadable_refused(site):
    before = host_state(site["run"])
    proc = shifter_as(site, "testuser", image(site), f"-V{site['base']}/link:/s", "true")
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and "not readable by you" in proc.stderr or "Permission denied" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert rtutil.settled(site["run"], before) == before


def test_entrypoint_and_cmd(site):
    assert shifter_as(site, "testuser", image(site, "ep"), "--entrypoint").stdout == "EP CMD\n"
    assert shifter_as(site, "testuser", image(site, "ep"), "--entrypoint", "x", "y").stdout == "EP x y\n"
    assert shifter_as(site, "testuser", image(site, "ep"), "--entrypoint=/bin/echo", "z").stdout == "z\n"
    assert shifter_as(site, "testuser", image(site, "ep"), "echo", "cmd").stdout == "cmd\n"
    assert shifter_as(site, "testuser", image(site, "ep"), "-w", "pwd").stdout == "/opt/app\n"


def test_clearenv_and_env_file(site):
    f = site["base"] / "envfile"
    f.write_text("# comment\nFROMFILE=f\nA=file\n")
    os.chmod(f, 0o644)
    proc = shifter_as(site, "testuser", image(site), "-E", f"--env-file={f}", "-e", "A=cli", "env",
                      env=["HOSTONLY=h"])
    got = dict(l.split("=", 1) for l in proc.stdout.splitlines())
    assert got["A"] == "cli" and got["FROMFILE"] == "f" and "HOSTONLY" not in got


BAD_INPUT = [
    (["--image=id:abc", "true"], "is not an image id"),
    (["--image=id:" + "0" * 64, "true"], "is not in"),
    (["--bogus", "true"], "unknown option --bogus"),
    (["-Z", "true"], "unknown option -Z"),
    (["-i"], "needs a value"),
    (["true"], "no image"),
    (["IMG", "-V", "/a:/etc", "true"], "under /etc"),
    (["IMG", "-V", "rel:/x", "true"], "relative path"),
    (["IMG", "-e", "1BAD=x", "true"], "--env: '1BAD=x' is not NAME=value"),
    (["IMG", "--env-file=/nonexistent", "true"], "cannot read it"),
    (["IMG", "-V", "/nonexistent:/x", "true"], "No such file"),
    (["IMG", "-V", "/x:/c:perNodeCache=size=1G", "true"], "perNodeCache needs the privileged path"),
    (["IMG", "-m", "gpu", "true"], "--module: 'gpu' is not a module here"),
    (["IMG", "--workdir=/nonexistent", "true"], "--workdir /nonexistent"),
    (["IMG", "nonexistent-command"], "nonexistent-command: command not found in the container (PATH="),
    (["--image=docker:ubuntu:22.04", "true"], "image"),
    (["IMG", "--entry", "--entrypoint", "true"], "give one of them once"),
]


@pytest.mark.parametrize("args,fragment", BAD_INPUT)
def test_bad_input(site, args, fragment):
    before = host_state(site["run"])
    args = [image(site) if a == "IMG" else a for a in args]
    proc = shifter_as(site, "testuser", *args)
    assert proc.returncode != 0
    assert fragment in proc.stderr, proc.stderr
    assert proc.stderr.startswith("shifter: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert rtutil.settled(site["run"], before) == before


def test_options_stop_at_first_non_option(site):
    proc = shifter_as(site, "testuser", image(site), "sh", "-c", 'for a; do echo "[$a]"; done', "_", "-e", "--image=x")
    assert proc.stdout == "[-e]\n[--image=x]\n"


def test_job_image_used_inside_slurm(site):
    proc = shifter_as(site, "testuser", "cat", "/etc/motd",
                      env=["SLURM_JOB_ID=1", f"SHIFTER_IMAGE={site['plain'].id}"])
    assert proc.stdout == "image motd\n", proc.stderr


def test_environment_outside_slurm_as_the_original(site):
    """SHIFTER_IMAGETYPE/SHIFTER_IMAGE, SHIFTER_VOLUME and SHIFTER_MODULE outside any job: the
    image, volumes and modules; --image and -m on the command line win; -V adds."""
    d = site["data"]
    (d / "fromenv").write_text("env volume\n")
    os.chmod(d / "fromenv", 0o644)
    env = ["SHIFTER_IMAGETYPE=id", f"SHIFTER_IMAGE={site['plain'].id}", f"SHIFTER_VOLUME={d}:/envdata:ro",
           "SHIFTER_MODULE=none"]
    proc = shifter_as(site, "testuser", "sh", "-c", "cat /etc/motd /envdata/fromenv", env=env)
    assert proc.returncode == 0 and proc.stdout == "image motd\nenv volume\n", proc.stderr
    proc = shifter_as(site, "testuser", image(site, "ep"), "-V", f"{d}:/cli", "--", "sh", "-c",
                      "echo $IMAGEVAR; cat /envdata/fromenv /cli/fromenv", env=env)
    assert proc.returncode == 0 and proc.stdout == "ep\nenv volume\nenv volume\n", proc.stderr
    proc = shifter_as(site, "testuser", "--entry", env=["SHIFTER_IMAGETYPE=id", f"SHIFTER_IMAGE={site['ep'].id}"])
    assert proc.returncode == 0 and proc.stdout == "EP CMD\n", proc.stderr
    # a module named in SHIFTER_MODULE is checked like -m's (the site has none)
    proc = shifter_as(site, "testuser", "true", env=[*env[:2], "SHIFTER_MODULE=gpu"])
    assert proc.returncode != 0 and "'gpu' is not a module here" in proc.stderr and proc.stderr.count("\n") == 1
    proc = shifter_as(site, "testuser", "true", env=["SHIFTER_IMAGE=ubuntu:22.04"])
    assert proc.returncode == 64 and "SHIFTER_IMAGETYPE is not" in proc.stderr and proc.stderr.count("\n") == 1


def test_root_launch(site):
    before = host_state(site["run"])
    proc = shifter_root(site, image(site), "sh", "-c", "id -u; grep -E 'CapEff|CapBnd|NoNewPrivs' /proc/self/status")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "0" and all(l.split()[1] in ("0000000000000000", "1") for l in lines[1:])
    assert rtutil.settled(site["run"], before) == before


def test_rootless_impossible_names_the_cause(site):
    os.chmod("/dev/fuse", 0o600)
    try:
        proc = shifter_as(site, "testuser", image(site), "true")
    finally:
        os.chmod("/dev/fuse", 0o666)
    assert proc.returncode == 69 and "/dev/fuse" in proc.stderr and "Traceback" not in proc.stderr


# What a rootless launch must not import (docs/architecture.md, "lean imports on the two hot
# paths"): each costs every `shifter` launch milliseconds (typing ~7 ms, structlog ~35 ms,
# msgspec/yaml ~20 ms with the full config load).
LAUNCH_MUST_NOT_IMPORT = {"typing", "json", "subprocess", "structlog", "msgspec", "yaml", "dataclasses",
                          "shutil", "hashlib", "logging", "inspect", "asyncio",
                          "site", "_distutils_hack",  # the launcher runs python -S (runtime/launcher.py)
                          "types", "runtime.loop", "struct"}  # configview's SimpleNamespace; root's loop


def test_a_rootless_launch_imports_only_what_it_runs(site):
    """The real launch, as a plain user, with Python's own import trace (-X importtime)."""
    shifter_as(site, "testuser", image(site), "true")  # the user's cache of validated loads, warm
    proc = shifter_as(site, "testuser", image(site), "true", env=("PYTHONPROFILEIMPORTTIME=1",))
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "runtime.rootless" in imported and "runtime.phases" in imported  # the trace is of the launch
    assert "runtime.prefetch" in imported  # the command is read before exec
    assert imported & LAUNCH_MUST_NOT_IMPORT == set()
