"""perNodeCache under a full disk, with real mounts (root, no cluster): the user filling
their own cache gets ENOSPC there and nothing else changes; a node whose cache directory
(`per_node_cache.dir`, where the sparse backing files live) is full fails the build with one
line naming the cache, and leaves no mount, loop device, backing file or run-dir state."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from rtutil import run_in
from test_runtime_root import env, make_spec  # noqa: F401 - env is a fixture
from test_runtime_root import snapshot as _snapshot


def snapshot(env):  # noqa: F811
    """The host state; a run directory not made yet counts as an empty one (a build makes it)."""
    state = _snapshot(env)
    return {**state, "run_dir": state["run_dir"] or []}


def settled(env, before, timeout: float = 5.0):  # noqa: F811
    """Namespaces and AUTOCLEAR loop devices go asynchronously: wait for the state."""
    deadline = time.monotonic() + timeout
    while (now := snapshot(env)) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


def test_a_user_filling_their_cache_gets_enospc_there_only(env):  # noqa: F811
    from runtime import build, teardown
    before = snapshot(env)
    spec = make_spec(env, volumes="/x:/cache:perNodeCache=size=4M,fs=ext4")
    c = build.build(spec, env["run"])
    try:
        rc, out, err = run_in(c, spec, ["sh", "-c", "dd if=/dev/zero of=/cache/big bs=64k count=200 2>&1; "
                                                    "echo dd=$?; echo still > /cache/small; echo small=$?; "
                                                    "head -c 5 /etc/passwd; echo; echo fine"])
        assert "No space left on device" in out and "dd=1" in out, out + err
        assert "fine" in out, out + err          # the container's other filesystems are unaffected
    finally:
        teardown.teardown(env["run"], c.key)
    assert settled(env, before) == before


@pytest.fixture
def full_cache_dir(env):  # noqa: F811
    """The site's cache directory on a 256 KiB tmpfs, filled up."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", env["cache"]], check=True)
    try:
        fd = os.open(os.path.join(env["cache"], "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        yield env
    finally:
        subprocess.run(["umount", env["cache"]], check=True)


def test_a_full_cache_directory_fails_the_build_with_one_line_and_leaves_nothing(full_cache_dir):
    from runtime import build
    from shifter_site.errors import ShifterError
    env = full_cache_dir
    before = snapshot(env)
    spec = make_spec(env, volumes="/x:/cache:perNodeCache=size=16M,fs=ext4")
    with pytest.raises(ShifterError) as err:
        build.build(spec, env["run"])
    message = str(err.value)
    assert "perNodeCache" in message and "\n" not in message, message
    assert f"perNodeCache directory {env['cache']} has only" in message, message
    assert sorted(os.listdir(env["cache"])) == ["filler"]     # no backing file left
    assert settled(env, before) == before
