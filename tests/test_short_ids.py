"""`shifter -i` / `--image` with an image id's first digits, as `shifterimg images` shows
them: one local rule (runtime.cli.resolve_image), files made here, no gateway."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from runtime.cli import resolve_image
from shifter_site.errors import ShifterError

A = "abc123def4560" + "0" * 51
B = "abc123def4561" + "1" * 51


@pytest.fixture
def cfg(tmp_path):
    for image_id in (A, B):
        (tmp_path / f"{image_id}.json").write_text("{}")
    return SimpleNamespace(image_dir=str(tmp_path))


@pytest.mark.parametrize("ref", [A[:13], f"id:{A[:13]}", A[:20], A, f"id:{A}"])
def test_short_and_whole_ids_resolve_locally(cfg, ref):
    assert resolve_image(cfg, ref) == A


def test_an_ambiguous_prefix_is_refused(cfg):
    with pytest.raises(ShifterError, match="image id abc123def456 is ambiguous: 2 images start with it"):
        resolve_image(cfg, "abc123def456")
    with pytest.raises(ShifterError, match="'abc123def45' is not an image id"):
        resolve_image(cfg, "id:abc123def45")  # 11 digits: fewer than images shows


def test_an_unknown_prefix_says_so(cfg):
    with pytest.raises(ShifterError, match="no image on this system has an id starting with 0123456789ab"):
        resolve_image(cfg, "id:0123456789ab")
