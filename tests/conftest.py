"""Shared fixtures: the real local cluster, running things as the test users, CI strictness."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))


def _load_localcluster():
    spec = importlib.util.spec_from_file_location("localcluster", REPO / "tools/localcluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["localcluster"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


localcluster = _load_localcluster()


def need(condition: bool, reason: str) -> None:
    """Skip when a requirement (root, a tool) is missing, except in CI, where it is a failure."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI must run this test: {reason}")
        pytest.skip(reason)


def run_as(user: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run argv as a test user with a login-like environment (no root environment leaks in)."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(["runuser", "-u", user, "--", "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin",
                           f"HOME={Path('~' + user).expanduser()}", f"USER={user}", *argv], **kw)


@pytest.fixture(scope="session")
def cluster():
    """The local cluster, up for the session. If this session started it, it is taken down at
    the end and must leave no process behind."""
    need(os.geteuid() == 0, "the local cluster needs root")
    already = all(d.pid() for d in localcluster.daemons())
    localcluster.up()
    yield localcluster
    if not already:
        localcluster.down()
        assert localcluster.leftover_processes() == []
