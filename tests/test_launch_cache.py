"""The rootless launch path's user cache (shifter_site.usercache/quickload): the cached view
equals the full Config/ImageRecord, a changed file is reloaded, a directory that is not the
user's alone is not used, root never uses it; and the launch path's imports stay lean."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
import pytest

import rtutil
from conftest import REPO, account, need, run_as
from images import make_image, write_config
from shifter_site import config, imagefiles, quickload, usercache

SHIFTER = str(Path(sys.executable).with_name("shifter"))
FULL = {
    "site_mounts": [{"from": "/srv", "to": "/site", "flags": ["ro", "rec"]}],
    "site_env": {"set": {"SITEVAR": "v1"}, "append": {"PATH": "/site/bin"}, "prepend": {"X": "p"}, "unset": ["U"]},
    "per_node_cache": {"dir": "/var/tmp", "size_limit": "2G", "allowed_fs": ["xfs", "ext4"]},
    "modules": {"gpu": {"site_mounts": [{"from": "/usr", "to": "/gpu"}], "env": {"set": {"G": "1"}},
                        "copy_path": "/srv", "user_hook": "/opt/udiImage/modules/gpu/hook.sh",
                        "root_hook": "/etc/hook.sh", "conflict": ["mpi"]},
                "mpi": {"enabled": False}},
    "default_modules": ["gpu"], "import_accounts": ["nobody"], "max_group_count": 7,
    "opt_udi_image": "/srv", "etc_dir": "/etc", "mount_propagation": "slave",
    "etc_mode": "site", "site_pre_mount_hook": "/etc/pre.sh", "site_post_mount_hook": "/etc/post.sh",
    "hook_timeout": 5, "allow_local_images": True, "ccm": {"root": "/srv"},
}


def _same(view, real, where="cfg") -> None:
    """Every field of a msgspec Struct equals the view's attribute (recursively)."""
    if isinstance(real, msgspec.Struct):
        for field in msgspec.structs.fields(real):
            _same(getattr(view, field.name), getattr(real, field.name), f"{where}.{field.name}")
    elif isinstance(real, dict):
        assert set(view) == set(real), where
        for key in real:
            _same(view[key], real[key], f"{where}[{key!r}]")
    elif isinstance(real, list):
        assert len(view) == len(real), where
        for i, (a, b) in enumerate(zip(view, real)):
            _same(a, b, f"{where}[{i}]")
    else:
        assert view == real and type(view) is type(real), where


def test_constants_match_config():
    assert quickload.DEFAULT_PATH == config.DEFAULT_PATH and quickload.ENV_VAR == config.ENV_VAR


def test_view_equals_full_config(tmp_path):
    cfg_path = write_config(tmp_path / "s.yaml", tmp_path / "images", tmp_path / "run", **FULL)
    real = config.load(str(cfg_path), privileged=False)
    data = msgspec.to_builtins(real)
    view = quickload.config_view(data, real.per_node_cache.size_limit_bytes)
    _same(view, real)
    assert view.per_node_cache.size_limit_bytes == 2 * 1024**3


def test_roots_config_snapshot_is_the_same_view(tmp_path):
    """One config shape: root's snapshot (shifter_site.configcache, a step joining its
    container) gives back the same Config-like view as the user's cache, equal to the full
    Config; a changed file is not read from the snapshot."""
    from shifter_site import configcache

    need(os.geteuid() == 0, "root's config snapshot is written by root's full load only")
    cfg_path = write_config(tmp_path / "s.yaml", tmp_path / "images", tmp_path / "run", **FULL)
    real = config.load(str(cfg_path), privileged=True)
    snapshot = configcache._snapshot_path(os.path.realpath(cfg_path))
    try:
        view = configcache.load(str(cfg_path))
        assert view is not None
        _same(view, real)
        assert view.per_node_cache.size_limit_bytes == 2 * 1024**3
        with open(cfg_path, "a") as handle:
            handle.write("\n")
        assert configcache.load(str(cfg_path)) is None
    finally:
        os.unlink(snapshot)


def test_check_id_and_paths_match_imagefiles():
    good = "a" * 64
    assert quickload.check_id(good) == imagefiles.check_id(good)
    assert quickload.squashfs_path("/x/images", good) == str(imagefiles.squashfs_path("/x/images", good))
    for bad in ("A" * 64, "a" * 63, "a" * 64 + "\n", "g" * 64, ""):
        with pytest.raises(imagefiles.ImageError) as err:
            quickload.check_id(bad)
        assert "is not an image id" in str(err.value)


def _as_user(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run Python code as testuser with this checkout on the path."""
    extra = [f"{k}={v}" for k, v in env.items()]
    return run_as("testuser", [*extra, f"PYTHONPATH={REPO}", sys.executable, "-c", code], cwd="/")


@pytest.fixture()
def user_site():
    need(os.geteuid() == 0, "switches to the test user")
    base = Path(tempfile.mkdtemp(prefix="shifter-ucache-"))
    with rtutil.released(base, base / "run"):
        os.chmod(base, 0o755)
        record = make_image(base / "images")
        cfg = write_config(base / "s.yaml", base / "images", base / "run", site_env={"set": {"SITEVAR": "v1"}})
        xdg = base / "xdg"
        xdg.mkdir(mode=0o700)
        user = account("testuser")
        os.chown(xdg, user.pw_uid, user.pw_gid)
        yield {"base": base, "cfg": cfg, "record": record, "xdg": xdg, "user": user}


LOAD = """
import sys
from shifter_site import quickload
cfg = quickload.site_config()
rec = quickload.read_record(cfg.image_dir, sys.argv[1] if len(sys.argv) > 1 else {id!r})
print(type(cfg).__name__, type(rec).__name__, cfg.site_env.set["SITEVAR"], rec.env)
"""


def test_cache_used_then_reloaded_when_the_file_changes(user_site):
    env = {"SHIFTER_CONFIG": str(user_site["cfg"]), "XDG_RUNTIME_DIR": str(user_site["xdg"])}
    code = LOAD.format(id=user_site["record"].id)
    first = _as_user(code, env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[:3] == ["Config", "ImageRecord", "v1"]  # full loads
    cache = user_site["xdg"] / "shifter"
    st = os.lstat(cache)
    assert st.st_uid == user_site["user"].pw_uid and stat.S_IMODE(st.st_mode) == 0o700
    assert sorted(p.name.split("%")[0] for p in cache.iterdir()) == ["config", "record"]
    second = _as_user(code, env)
    assert second.stdout.split()[:3] == ["SimpleNamespace", "SimpleNamespace", "v1"]  # cached views
    assert first.stdout.split()[3:] == second.stdout.split()[3:]
    # the admin edits the config: the next launch sees it (full load), never the stale entry
    text = user_site["cfg"].read_text().replace("v1", "v2")
    user_site["cfg"].write_text(text)
    third = _as_user(code, env)
    assert third.stdout.split()[:3] == ["Config", "SimpleNamespace", "v2"]  # the record is unchanged
    assert _as_user(code, env).stdout.split()[:3] == ["SimpleNamespace", "SimpleNamespace", "v2"]
    # an invalid edit is reported as before (the cache does not hide it)
    user_site["cfg"].write_text(text + "bogus_key: 1\n")
    bad = _as_user(code, env)
    assert bad.returncode != 0 and "bogus_key" in bad.stderr


def test_cache_dir_not_the_users_alone_is_ignored(user_site):
    env = {"SHIFTER_CONFIG": str(user_site["cfg"]), "XDG_RUNTIME_DIR": str(user_site["xdg"])}
    code = LOAD.format(id=user_site["record"].id)
    cache = user_site["xdg"] / "shifter"
    cache.mkdir(mode=0o700)  # made by someone else (root here)
    for _ in range(2):
        out = _as_user(code, env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[0] == "Config"  # full load every time
    assert list(cache.iterdir()) == []
    os.chown(cache, user_site["user"].pw_uid, user_site["user"].pw_gid)
    os.chmod(cache, 0o755)  # the user's, but others may read it: not used either
    assert _as_user(code, env).stdout.split()[0] == "Config"
    assert _as_user(code, env).stdout.split()[0] == "Config"
    # a damaged entry is a miss, not an error
    os.chmod(cache, 0o700)
    _as_user(code, env)
    for entry in cache.iterdir():
        entry.write_bytes(b"\x00garbage")
    out = _as_user(code, env)
    assert out.returncode == 0 and out.stdout.split()[0] == "Config"


def test_root_never_uses_a_user_cache(monkeypatch, tmp_path):
    need(os.geteuid() == 0, "checks root's behaviour")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert usercache.cache_dir() is None
    assert usercache.get("config", "/etc/hostname", quickload._CONFIG_CODE) is None
    assert not (tmp_path / "shifter").exists()


def test_launch_path_imports_stay_lean(user_site):
    """A cached rootless launch loads none of the heavy modules (what made it 72 ms)."""
    need(os.path.exists(SHIFTER), f"{SHIFTER} is not installed (pip install .)")
    need(shutil.which("squashfuse") is not None, "squashfuse is needed for rootless")
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    os.chmod("/dev/fuse", 0o666)
    try:
        argv = [f"SHIFTER_CONFIG={user_site['cfg']}", f"XDG_RUNTIME_DIR={user_site['xdg']}",
                sys.executable, "-X", "importtime", SHIFTER, f"--image=id:{user_site['record'].id}", "/bin/true"]
        first = run_as("testuser", argv, cwd="/")
        assert first.returncode == 0, first.stderr[-500:]
        second = run_as("testuser", argv, cwd="/")
        assert second.returncode == 0, second.stderr[-500:]
    finally:
        os.chmod("/dev/fuse", mode)
    loaded = {line.split("|")[-1].strip() for line in second.stderr.splitlines() if line.startswith("import time:")}
    assert "runtime.rootless" in loaded
    heavy = {"yaml", "msgspec", "dataclasses", "re", "json", "hashlib", "subprocess", "shutil", "typing", "pathlib"}
    assert loaded & heavy == set()
