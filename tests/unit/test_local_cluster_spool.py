"""The local cluster's slurmd spool lives outside its state directory (PMIx needs it at a
fixed path): it must go when the controller's state goes, or slurmd takes a new job id for an
old one it saved credentials for and skips that job's prolog (seen: job 17 ran without its
prolog after the state directory was wiped)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("localcluster_under_test", TOOLS / "localcluster.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "localcluster_under_test", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "STATE", tmp_path / "state")
    monkeypatch.setattr(module, "SPOOL", tmp_path / "spool")
    (tmp_path / "state" / "slurm").mkdir(parents=True)
    return module


def _saved_credentials(spool: Path) -> Path:
    node = spool / "n1"
    node.mkdir(parents=True, exist_ok=True)
    (node / "cred_state").write_text("job 17\n")
    return node / "cred_state"


def test_spool_kept_while_the_controller_state_is_the_same(cluster):
    cluster.forget_slurmd_state()
    saved = _saved_credentials(cluster.SPOOL)
    cluster.forget_slurmd_state()
    assert saved.exists()


def test_spool_emptied_when_the_controller_state_was_wiped(cluster):
    cluster.forget_slurmd_state()
    saved = _saved_credentials(cluster.SPOOL)
    (cluster.STATE / "slurm" / "spool-token").unlink()   # what `rm -rf STATE` does
    cluster.forget_slurmd_state()
    assert not saved.exists() and not saved.parent.exists()


def test_a_spool_older_than_any_token_is_emptied(cluster):
    saved = _saved_credentials(cluster.SPOOL)
    cluster.forget_slurmd_state()
    assert not saved.exists()
