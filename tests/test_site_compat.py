"""A site coming from the original Shifter, with real builds as root and rootless:
the site's mount hooks (root, cwd the container root, a clean environment, a timeout), site
mounts below /etc, etc_mode: site, /var/shifterConfig.json, and local: images. Bad input:
one line, non-zero, nothing left (no mount, loop device, run-dir entry or process)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import rtutil

from conftest import account, need, run_as
from images import make_image, make_root, write_config
from rtutil import host_state

SHIFTER = str(Path(sys.executable).with_name("shifter"))
CLEAN_ENV_KEYS = {"PATH", "PWD", "SHIFTER_ROOT", "SHIFTER_IMAGE", "SHIFTER_UID", "SHIFTER_GID", "SHIFTER_USER"}


def _script(path: Path, text: str, mode: int = 0o755) -> str:
    path.write_text("#!/bin/sh\n" + text)
    os.chmod(path, mode)
    return str(path)


def _hook(out: Path, name: str) -> str:
    """A hook recording where it ran, as whom, whether the site mount below /etc is there yet,
    and its whole environment."""
    return (f'{{ echo "{name} $(pwd) $(id -u)"; if [ -e ./etc/opt/cray/release ]; then echo {name}-mounted; '
            f'else echo {name}-unmounted; fi; env | sort; }} > {out}/{name}.out\n')


@pytest.fixture(scope="module")
def site():
    need(os.geteuid() == 0, "the site's hooks run as root; rootless runs switch to the test user")
    need(os.path.exists(SHIFTER), f"{SHIFTER} is not installed (pip install .)")
    need(shutil.which("squashfuse") is not None, "squashfuse is needed for rootless")
    base = Path(tempfile.mkdtemp(prefix="shifter-compat-"))
    with rtutil.released(base, base / "run"):
        os.chmod(base, 0o755)
        image = make_image(base / "images")
        run = base / "run"
        run.mkdir(mode=0o755)
        out = base / "out"
        out.mkdir(mode=0o755)
        hooks = base / "hooks"
        hooks.mkdir(mode=0o755)
        cray = base / "cray"
        cray.mkdir(mode=0o755)
        (cray / "release").write_text("cray site files\n")
        (base / "cray-release").write_text("CLE 7\n")
        etc_mounts = [{"from": str(cray), "to": "/etc/opt/cray", "flags": ["ro"]},
                      {"from": str(base / "cray-release"), "to": "/etc/cray-release"}]
        etcsite = base / "etcsite"
        etcsite.mkdir(mode=0o755)
        user = account("testuser")
        (etcsite / "passwd").write_text(f"root:x:0:0:root:/root:/bin/sh\n{user.pw_name}:x:{user.pw_uid}:"
                                        f"{user.pw_gid}:from the site's own passwd:{user.pw_dir}:/bin/sh\n")
        (etcsite / "group").write_text(f"sitegroup:x:{user.pw_gid}:{user.pw_name}\n")
        nogroup = base / "etcnogroup"
        nogroup.mkdir(mode=0o755)
        shutil.copy(etcsite / "passwd", nogroup / "passwd")
        tree = base / "tree"
        make_root(tree)
        os.chmod(tree, 0o755)
        loose = base / "loose"
        loose.mkdir()
        os.chmod(loose, 0o777)
        links = base / "links"
        links.mkdir(mode=0o755)
        (links / "good").symlink_to(tree)
        (links / "evil").symlink_to(tree)
        os.lchown(links / "evil", user.pw_uid, user.pw_gid)
        wtree = loose / "tree"
        make_root(wtree)
        data = base / "data"
        data.mkdir(mode=0o755)
        marker = str(3000 + os.getpid() % 1000)  # a hanging hook's sleep, found by its argument
        cfgs = {
            "hooks": write_config(base / "hooks.yaml", base / "images", run, site_mounts=etc_mounts,
                                  site_pre_mount_hook=_script(hooks / "pre.sh", _hook(out, "pre")),
                                  site_post_mount_hook=_script(hooks / "post.sh", _hook(out, "post")),
                                  modules={"m1": {"env": {"set": {"M1": "on"}}}}),
            "fail": write_config(base / "fail.yaml", base / "images", run, site_post_mount_hook=_script(
                hooks / "fail.sh", 'echo "preparing scratch"\necho "no scratch today" >&2\nexit 3\n')),
            "hang": write_config(base / "hang.yaml", base / "images", run, hook_timeout=2, site_pre_mount_hook=_script(
                hooks / "hang.sh", f'echo started\nsleep {marker} &\nsleep {marker}\n')),
            "loose": write_config(base / "loose.yaml", base / "images", run,
                                  site_pre_mount_hook=_script(loose / "pre.sh", "true\n", mode=0o755)),
            "plain": write_config(base / "plain.yaml", base / "images", run, site_mounts=etc_mounts,
                                  etc_dir=str(etcsite), etc_mode="site", allow_local_images=True),
            "nogroup": write_config(base / "nogroup.yaml", base / "images", run, etc_dir=str(nogroup),
                                    etc_mode="site"),
            "forbid": write_config(base / "forbid.yaml", base / "images", run),
        }
        mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
        os.chmod("/dev/fuse", 0o666)
        try:
            yield {"base": base, "out": out, "cfg": {k: str(v) for k, v in cfgs.items()}, "image": image,
                   "run": str(run), "user": user, "tree": tree, "wtree": wtree, "links": links, "data": data,
                   "marker": marker, "etcsite": etcsite}
        finally:
            os.chmod("/dev/fuse", mode)


def as_root(site, cfg: str, *args, env: dict | None = None, image: str | None = None):
    env = {"PATH": "/usr/bin:/bin", "SHIFTER_CONFIG": site["cfg"][cfg], **(env or {})}
    return subprocess.run([SHIFTER, image or f"--image=id:{site['image'].id}", *args], capture_output=True,
                          text=True, env=env, timeout=60, cwd="/")


def as_user(site, cfg: str, *args, image: str | None = None):
    return run_as("testuser", [f"SHIFTER_CONFIG={site['cfg'][cfg]}", SHIFTER,
                               image or f"--image=id:{site['image'].id}", *args], cwd="/")


def one_line(proc, *words: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert proc.stderr.startswith("shifter: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


# ---------------------------------------------------------------- site mount hooks


def test_site_hooks_run_as_root_around_the_site_mounts_with_a_clean_environment(site):
    before = host_state(site["run"])
    for name in ("pre", "post"):
        (site["out"] / f"{name}.out").unlink(missing_ok=True)
    proc = as_root(site, "hooks", "-m", "m1", "-V", f"{site['data']}:/data", "--", "sh", "-c",
                   "cat /etc/opt/cray/release /etc/cray-release /var/shifterConfig.json; echo $M1",
                   env={"LEAKED_FROM_CALLER": "1", "LD_LIBRARY_PATH": "/caller/lib"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "cray site files", "CLE 7",
        '{"identifier":"%s","user":"root","volMap":"%s:/data","modules":"m1,"}' % (site["image"].id, site["data"]),
        "on"]
    pre = (site["out"] / "pre.out").read_text().splitlines()
    post = (site["out"] / "post.out").read_text().splitlines()
    # cwd = the container root (the build's mount point), as root, before / after the mounts
    assert pre[:2] == [f"pre {site['run']} 0", "pre-unmounted"]
    assert post[:2] == [f"post {site['run']} 0", "post-mounted"]
    for lines in (pre[2:], post[2:]):
        env = dict(line.split("=", 1) for line in lines)
        assert set(env) == CLEAN_ENV_KEYS, env           # nothing of the caller's
        assert env["SHIFTER_IMAGE"] == site["image"].id and env["SHIFTER_UID"] == "0"
        assert env["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin"
    assert not os.path.exists(os.path.join(site["run"], "etc"))  # made only inside the container
    assert rtutil.settled(site["run"], before) == before


def test_failing_site_hook_stops_the_build_with_its_message(site):
    before = host_state(site["run"])
    proc = as_root(site, "fail", "--", "echo", "RAN")
    one_line(proc, "site_post_mount_hook ", "fail.sh failed (exit status 3): no scratch today")
    assert "RAN" not in proc.stdout
    assert rtutil.settled(site["run"], before) == before


def test_hanging_site_hook_is_killed_with_all_it_started(site):
    before = host_state(site["run"])
    started = time.monotonic()
    proc = as_root(site, "hang", "--", "echo", "RAN")
    assert time.monotonic() - started < 30
    one_line(proc, "site_pre_mount_hook ", "did not finish within 2 s (hook_timeout) and was killed: started")
    assert rtutil.processes_with(site["marker"]) == []      # the hook's background sleep too
    assert rtutil.settled(site["run"], before) == before


def test_site_hook_a_user_could_change_is_refused(site):
    before = host_state(site["run"])
    proc = as_root(site, "loose", "true")
    one_line(proc, f"{site['base']}/loose is writable by others (mode 0777)", "root alone can change")
    assert rtutil.settled(site["run"], before) == before


def test_site_hooks_need_root_so_rootless_says_so(site):
    before = host_state(site["run"])
    proc = as_user(site, "hooks", "true")
    one_line(proc, "site_pre_mount_hook", "cannot run rootless here")
    assert proc.returncode == 69
    assert rtutil.settled(site["run"], before) == before


# ---------------------------------------------------------------- /etc


@pytest.mark.parametrize("who", ["root", "testuser"])
def test_site_mounts_below_etc_and_the_sites_own_passwd(site, who):
    before = host_state(site["run"])
    run = as_root if who == "root" else as_user
    proc = run(site, "plain", "--", "sh", "-c", "cat /etc/opt/cray/release /etc/cray-release /etc/passwd "
               "/etc/group /etc/motd; touch /etc/opt/cray/x 2>/dev/null || echo read-only; "
               "grep -v ' /proc\\| /sys\\| /dev' /proc/self/mountinfo | grep -vc nosuid || true")
    assert proc.returncode == 0, proc.stderr
    expected = ["cray site files", "CLE 7", *(site["etcsite"] / "passwd").read_text().splitlines(),
                *(site["etcsite"] / "group").read_text().splitlines(), "image motd", "read-only", "0"]
    assert proc.stdout.splitlines() == expected
    assert rtutil.settled(site["run"], before) == before


def test_site_etc_mode_without_the_sites_group_file_is_one_line(site):
    before = host_state(site["run"])
    proc = as_root(site, "nogroup", "true")
    one_line(proc, f"etc_mode: site: {site['base']}/etcnogroup/group does not exist")
    assert rtutil.settled(site["run"], before) == before


def test_shifter_config_json_rootless(site):
    proc = as_user(site, "plain", "cat", "/var/shifterConfig.json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '{"identifier":"%s","user":"testuser","volMap":"","modules":""}\n' % site["image"].id


# ---------------------------------------------------------------- local: images


@pytest.mark.parametrize("who", ["root", "testuser"])
def test_local_image_is_the_tree_read_only_and_nosuid(site, who):
    before = host_state(site["run"])
    uid = account(who).pw_uid
    run = as_root if who == "root" else as_user
    proc = run(site, "plain", "sh", "-c", "cat /etc/os-release /var/shifterConfig.json; /usr/bin/suidprobe; "
               "touch /opt/app/x 2>/dev/null || echo read-only", image=f"--image=local:{site['tree']}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "NAME=shifter-test"
    assert lines[1] == '{"identifier":"%s","user":"%s","volMap":"","modules":""}' % (site["tree"], who)
    assert lines[2:] == [f"{uid} {uid}", "read-only"]   # the setuid-root probe does not elevate
    assert not (site["tree"] / "opt/app/x").exists()
    # through a symlink root owns: the same tree
    proc = run(site, "plain", "cat", "/etc/os-release", image=f"--image=local:{site['links']}/good")
    assert proc.returncode == 0 and proc.stdout == "NAME=shifter-test\n", proc.stderr
    assert rtutil.settled(site["run"], before) == before


@pytest.mark.parametrize("who", ["root", "testuser"])
@pytest.mark.parametrize("cfg,path,words", [
    ("forbid", "TREE", "local images are not allowed on this site"),
    ("plain", "TREE/etc/motd", "is not a directory"),
    ("plain", "WTREE", "loose is writable by others (mode 0777)"),
    ("plain", "LINKS/evil", "links/evil is owned by uid"),
    ("plain", "/nonexistent-tree", "No such file or directory"),
    ("plain", "relative/tree", "is not an absolute path"),
])
def test_local_image_refused(site, who, cfg, path, words):
    before = host_state(site["run"])
    path = path.replace("WTREE", str(site["wtree"])).replace("TREE", str(site["tree"])).replace(
        "LINKS", str(site["links"]))
    run = as_root if who == "root" else as_user
    proc = run(site, cfg, "echo", "RAN", image=f"--image=local:{path}")
    one_line(proc, f"image 'local:{path}'", words)
    assert "RAN" not in proc.stdout
    assert rtutil.settled(site["run"], before) == before
