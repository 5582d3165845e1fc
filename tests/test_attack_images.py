"""Attack: an image that inflates without limit. A 1 MB layer of zeros unpacks to 1 GiB, and
a small layer can hold millions of empty files; the gateway converted them without limit.
The site caps (gateway.max_image_size, gateway.max_image_files) now fail such a conversion
with one clear message and leave no output behind. Runs as the gateway does: unprivileged
(testuser, uid from pwd), real tar2sqfs."""

from __future__ import annotations

import gzip
import io
import os
import pwd
import shutil
import tempfile
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from conftest import need, run_as
from shifter_site import config

BOMB_BYTES = 64 << 20
ATTACKER = "testuser"


class _Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def _bomb(path, size: int = 0, files: int = 0) -> None:
    with gzip.open(path, "wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        if size:
            info = tarfile.TarInfo("zeros")
            info.size = size
            tar.addfile(info, io.BufferedReader(_Zeros(size)))
        for i in range(files):
            tar.addfile(tarfile.TarInfo(f"f{i}"), io.BytesIO(b""))


@pytest.fixture
def place():
    """A work dir of the (unprivileged) converting user's own."""
    need(os.geteuid() == 0 and shutil.which("tar2sqfs") is not None, "needs root (to drop to a test user) and tar2sqfs")
    entry = pwd.getpwnam(ATTACKER)
    tmp = Path(tempfile.mkdtemp(prefix="shifter-bomb-"))
    os.chown(tmp, entry.pw_uid, entry.pw_gid)
    os.chmod(tmp, 0o755)
    yield tmp, entry
    shutil.rmtree(tmp)


def _convert_as_user(place, layer, **caps) -> subprocess.CompletedProcess:
    tmp, entry = place
    script = textwrap.dedent(f"""
        import sys
        from imagegw import squash
        from shifter_site.errors import ShifterError
        try:
            flat = squash.convert([{str(layer)!r}], {str(tmp / 'out.squashfs')!r}, **{caps!r})
        except ShifterError as err:
            print(f"error: {{err}}", file=sys.stderr)
            sys.exit(1)
        print(flat.entries, flat.bytes)
    """)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return run_as(ATTACKER, [f"PYTHONPATH={repo}", sys.executable, "-c", script], cwd=repo)


def test_a_small_layer_that_inflates_past_the_cap_fails_once_and_leaves_nothing(place):
    tmp, _ = place
    layer = tmp / "bomb.tar.gz"
    _bomb(layer, size=BOMB_BYTES)
    assert layer.stat().st_size < BOMB_BYTES // 100  # tiny compressed, huge unpacked
    result = _convert_as_user(place, layer, max_bytes=16 << 20, max_files=1000)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "larger than this site's limit of 16777216 bytes" in lines[0], result.stderr
    assert "gateway.max_image_size" in lines[0]
    assert not (tmp / "out.squashfs").exists()
    # the control: the same layer under a cap it fits converts
    ok = _convert_as_user(place, layer, max_bytes=128 << 20, max_files=1000)
    assert ok.returncode == 0, ok.stderr
    assert (tmp / "out.squashfs").exists()


def test_a_layer_of_too_many_files_fails_once(place):
    tmp, _ = place
    layer = tmp / "files.tar.gz"
    _bomb(layer, files=3000)
    result = _convert_as_user(place, layer, max_bytes=1 << 30, max_files=1000)
    assert result.returncode == 1
    assert "more than this site's limit of 1000 files (gateway.max_image_files)" in result.stderr
    assert not (tmp / "out.squashfs").exists()
    # just over the cap, below the 512-entry progress step: still caught
    result = _convert_as_user(place, layer, max_bytes=1 << 30, max_files=2999)
    assert result.returncode == 1 and "max_image_files" in result.stderr


GATEWAY = 'system: t\nimage_dir: /x\nrun_dir: /y\nregistries: {default: "http://127.0.0.1:1"}\ngateway: {%s}\n'


def test_caps_are_site_keys_with_defaults_and_checked_values():
    cfg = config.parse(GATEWAY % 'urls: ["http://127.0.0.1:1"]')
    assert cfg.gateway.max_image_size_bytes == 64 << 30 and cfg.gateway.max_image_files == 10_000_000
    cfg = config.parse(GATEWAY % 'urls: ["http://127.0.0.1:1"], max_image_size: 2G, max_image_files: 5')
    assert cfg.gateway.max_image_size_bytes == 2 << 30 and cfg.gateway.max_image_files == 5
    for bad, word in (("max_image_size: 0", "max_image_size"), ("max_image_size: lots", "max_image_size"),
                      ("max_image_files: 0", "max_image_files")):
        with pytest.raises(config.ConfigError, match=word):
            config.parse(GATEWAY % f'urls: ["http://127.0.0.1:1"], {bad}')
