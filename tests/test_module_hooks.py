"""Module hooks (reference: Modules): a root hook runs outside the container as root with
cwd = the container root; a user hook runs inside as the user before the command; a failing
hook fails the launch with one line and leaves nothing behind. Real hooks (shell scripts),
real mounts, as root and as testuser."""

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


def _script(path: Path, text: str, mode: int = 0o755) -> str:
    path.write_text("#!/bin/sh\n" + text)
    os.chmod(path, mode)
    return str(path)


@pytest.fixture(scope="module")
def site():
    need(os.geteuid() == 0, "hooks run as root and as the test user")
    need(os.path.exists(SHIFTER), f"{SHIFTER} is not installed (pip install .)")
    need(shutil.which("squashfuse") is not None, "squashfuse is needed for rootless")
    base = Path(tempfile.mkdtemp(prefix="shifter-hooks-"))
    with rtutil.released(base, base / "run"):
        os.chmod(base, 0o755)
        out = base / "out"
        out.mkdir(mode=0o755)
        image = make_image(base / "images")
        run = base / "run"
        run.mkdir(mode=0o755)
        mod, bad = base / "mod", base / "badmod"
        mod.mkdir()
        bad.mkdir()
        _script(mod / "hook.sh", 'echo "userhook $(id -u) $(pwd) $SHIFTER_IMAGE $HOOKVAR"\n')
        _script(bad / "fail.sh", 'echo "user hook says no" >&2\nexit 5\n')
        root_hook = _script(base / "roothook.sh", f'pwd > {out}/root.out\nid -u >> {out}/root.out\n'
                            f'echo "$SHIFTER_MODULE $SHIFTER_UID" >> {out}/root.out\necho hooked > ./hooked-by-root\n')
        fail_hook = _script(base / "failhook.sh", 'echo "no GPU on this node" >&2\nexit 3\n')
        loose_hook = _script(base / "loosehook.sh", "true\n", mode=0o777)
        cfg = write_config(base / "shifter.yaml", base / "images", run, modules={
            "mark": {"root_hook": root_hook},
            "uhook": {"copy_path": str(mod), "user_hook": "/opt/udiImage/modules/uhook/hook.sh",
                      "env": {"set": {"HOOKVAR": "fromenv"}}},
            "badroot": {"root_hook": fail_hook},
            "baduser": {"copy_path": str(bad), "user_hook": "/opt/udiImage/modules/baduser/fail.sh"},
            "loose": {"root_hook": loose_hook},
        })
        mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
        os.chmod("/dev/fuse", 0o666)
        try:
            yield {"base": base, "out": out, "cfg": str(cfg), "image": image, "run": str(run)}
        finally:
            os.chmod("/dev/fuse", mode)


def as_root(site, *args):
    env = {"PATH": "/usr/bin:/bin", "SHIFTER_CONFIG": site["cfg"]}
    return subprocess.run([SHIFTER, f"--image=id:{site['image'].id}", *args], capture_output=True, text=True,
                          env=env, timeout=60, cwd="/")


def as_user(site, *args):
    return run_as("testuser", [f"SHIFTER_CONFIG={site['cfg']}", SHIFTER, f"--image=id:{site['image'].id}", *args], cwd="/")


def test_root_and_user_hooks_as_root(site):
    before = host_state(site["run"])
    (site["out"] / "root.out").unlink(missing_ok=True)
    proc = as_root(site, "-m", "mark,uhook", "--", "cat", "/hooked-by-root")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"userhook 0 / {site['image'].id} fromenv", "hooked"]
    # the root hook: cwd = the container root (the build's mount point), root, outside
    assert (site["out"] / "root.out").read_text().splitlines() == [site["run"], "0", "mark 0"]
    assert not os.path.exists(os.path.join(site["run"], "hooked-by-root"))  # only inside the container
    assert rtutil.settled(site["run"], before) == before


def test_user_hook_rootless_runs_as_the_user_before_the_command(site):
    before = host_state(site["run"])
    proc = as_user(site, "-m", "uhook", "--", "sh", "-c", "echo command $(id -u)")
    assert proc.returncode == 0, proc.stderr
    uid = account("testuser").pw_uid
    assert proc.stdout.splitlines() == [f"userhook {uid} / {site['image'].id} fromenv", f"command {uid}"]
    assert rtutil.settled(site["run"], before) == before


@pytest.mark.parametrize("who", ["root", "testuser"])
def test_failing_user_hook_fails_the_launch(site, who):
    before = host_state(site["run"])
    proc = (as_root if who == "root" else as_user)(site, "-m", "baduser", "--", "echo", "RAN")
    assert proc.returncode == 1
    assert "RAN" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert lines[0] == "user hook says no"  # the hook's own output reaches the user
    assert lines[1:] == ["shifter: module 'baduser': user hook /opt/udiImage/modules/baduser/fail.sh failed in "
                         "the container (exit status 5); the command was not run"]
    assert rtutil.settled(site["run"], before) == before


def test_failing_root_hook_fails_the_build_and_leaves_nothing(site):
    before = host_state(site["run"])
    proc = as_root(site, "-m", "badroot", "--", "echo", "RAN")
    assert proc.returncode != 0 and "RAN" not in proc.stdout
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("shifter: module 'badroot': root hook ")
    assert "failed (exit status 3): no GPU on this node" in proc.stderr
    assert rtutil.settled(site["run"], before) == before


def test_root_hook_writable_by_users_is_refused(site):
    before = host_state(site["run"])
    proc = as_root(site, "-m", "loose", "--", "true")
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1
    assert "loosehook.sh is writable by others (mode 0777): root runs only scripts that root alone can change" \
        in proc.stderr
    assert rtutil.settled(site["run"], before) == before


def test_root_hook_rootless_is_a_clear_error(site):
    before = host_state(site["run"])
    proc = as_user(site, "-m", "mark", "--", "true")
    assert proc.returncode == 69 and proc.stderr.count("\n") == 1
    assert "module 'mark' has a root hook, which needs root" in proc.stderr
    assert rtutil.settled(site["run"], before) == before


def test_pinned_build_with_failing_root_hook_is_torn_down(site):
    from runtime import build, spec as specs
    from shifter_site import config

    cfg = config.load(site["cfg"])
    user = specs.user_from_host(account("testuser").pw_uid, 31)
    before = host_state(site["run"])
    bad = specs.from_config(cfg, site["image"], user, module="badroot")
    with pytest.raises(build.BuildError, match="root hook .* failed"):
        build.build(bad, site["run"])
    assert rtutil.settled(site["run"], before) == before
    plain = specs.from_config(cfg, site["image"], user, module="none")
    assert plain.root_hooks == () and plain.user_hooks == ()
    assert specs.from_config(cfg, site["image"], user, module="mark").build_key() != plain.build_key()
