"""A fixture's scratch tree is released even when the fixture's own setup raised
(tests/rtutil.py `released`): a mount it made under the tree is detached and the tree
removed, in the host's namespace, before the error reaches pytest. (Once, a cluster fixture
that errored left a pinned namespace bind under a test's temporary directory mounted.)"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

import rtutil
from conftest import need


class SetupFailed(Exception):
    pass


def test_a_fixture_whose_setup_raised_leaves_no_mount_and_no_tree():
    need(os.geteuid() == 0, "mounting needs root")
    base = Path(tempfile.mkdtemp(prefix="shifter-released-"))
    inside = base / "run" / "pin"
    with pytest.raises(SetupFailed):
        with rtutil.released(base, base / "run"):
            inside.mkdir(parents=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "shifter-released", str(inside)], check=True)
            (inside / "data").write_text("made by the setup\n")
            assert str(inside) in rtutil.mount_points()
            raise SetupFailed("the setup failed after mounting")
    assert [m for m in rtutil.mount_points() if m == str(base) or m.startswith(f"{base}/")] == []
    assert not base.exists()
