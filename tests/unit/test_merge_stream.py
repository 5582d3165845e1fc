"""The merge's streaming paths: a layer read while it still downloads into the
layer cache (registry.Arriving / Fetch.follow) merges to the same bytes as the finished blob,
also when the download pauses inside a header block, and a download that fails fails the
merge with the download's own error; a finished layer cut inside a header is refused; a regular file's
content copied straight from the layer's stream (layers._copy) keeps GNU sparse files whole.

Pure (no root, no cluster): runs in `make unit`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zstandard

from imagegw import layers, registry


def _layer() -> bytes:
    """A layer with files big and small (some over the 1 MiB copy buffer), a hard link and a
    directory, as pax (the header path tarfile reads differently)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("opt")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for i, size in enumerate((0, 1, 511, 512, 513, 70_000, (1 << 20) + 7, 3 << 20)):
            info = tarfile.TarInfo(f"opt/f{i}")
            info.size, info.mtime = size, 1_700_000_000.5
            tar.addfile(info, io.BytesIO(os.urandom(size // 2) + bytes(size - size // 2)))
        link = tarfile.TarInfo("opt/link")
        link.type, link.linkname = tarfile.LNKTYPE, "opt/f5"
        tar.addfile(link)
    return out.getvalue()


COMPRESS = {"gzip": lambda b: gzip.compress(b, mtime=0), "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
            "tar": lambda b: b}


def _merged(items: list) -> bytes:
    out = io.BytesIO()
    layers.flatten(items, out)
    return out.getvalue()


def _fetch(pool, cache: registry.LayerCache, blob: bytes, fail_after: int | None = None) -> registry.Fetch:
    """A Fetch whose "download" writes `blob` into the cache in small pieces with pauses (so
    the merge catches up with it and waits), or fails after `fail_after` bytes (after all of
    them when fail_after is the blob's length: a digest that does not match)."""
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    arriving = registry.Arriving()

    def download(out) -> None:
        for start in range(0, len(blob), 100_000):
            if fail_after is not None and start >= fail_after:
                raise registry.RegistryError("the download broke off (test)")
            out.write(blob[start:start + 100_000])
            time.sleep(0.002)
        if fail_after == len(blob):
            raise registry.RegistryError("downloaded content hashes to something else (test)")

    def one() -> Path:
        try:
            return cache.get_or_fetch(digest, download, arriving)
        finally:
            arriving.ended()

    return registry.Fetch(pool.submit(one), arriving)


@pytest.mark.parametrize("compression", sorted(COMPRESS))
def test_a_layer_read_while_it_downloads_merges_to_the_same_bytes(tmp_path: Path, compression: str) -> None:
    blob = COMPRESS[compression](_layer())
    with ThreadPoolExecutor(1) as pool:
        fetch = _fetch(pool, registry.LayerCache(tmp_path / "cache"), blob)
        following = _merged([fetch])
        path = fetch.result()
    assert path.read_bytes() == blob
    assert following == _merged([path])
    assert tarfile.open(fileobj=io.BytesIO(following)).getmember("opt/f7").size == 3 << 20


def _small_layer(entries: int = 12) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(entries):
            info = tarfile.TarInfo(f"etc/small{i}")
            info.size = 100 + 37 * i
            tar.addfile(info, io.BytesIO(bytes([i]) * info.size))
    return out.getvalue()


@pytest.mark.parametrize("first", [0, 1], ids=["from-the-first-header", "from-the-second-header"])
@pytest.mark.parametrize("cut", [100, 300, 511])
def test_an_uncompressed_layer_whose_download_pauses_inside_a_header_loses_nothing(
        tmp_path: Path, cut: int, first: int) -> None:
    """A registry's chunks end anywhere: the download pauses `cut` bytes into header blocks, so
    the merge reads a block that has only partly arrived. tarfile takes a short header for the
    archive's end (the files after it silently missing from the image) or, at the start, for
    an error: the reader must wait for the whole block."""
    blob = _small_layer()
    headers = [m.offset for m in tarfile.open(fileobj=io.BytesIO(blob))]
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    arriving = registry.Arriving()

    def download(out) -> None:
        start = 0
        for offset in headers[first:]:
            out.write(blob[start:offset + cut])
            start = offset + cut
            time.sleep(0.01)  # the merge catches up and reads the part-written block
        out.write(blob[start:])

    with ThreadPoolExecutor(1) as pool:
        cache = registry.LayerCache(tmp_path / "cache")
        fetch = registry.Fetch(pool.submit(cache.get_or_fetch, digest, download, arriving), arriving)
        following = _merged([fetch])
        path = fetch.result()
    assert following == _merged([path])
    assert len(tarfile.open(fileobj=io.BytesIO(following)).getnames()) == len(headers)


@pytest.mark.parametrize("compression", sorted(COMPRESS))
def test_a_finished_layer_cut_inside_a_header_fails_and_one_cut_between_entries_does_not(
        tmp_path: Path, compression: str) -> None:
    """A layer whose tar stops inside a header block past its first is corrupt (Docker's Go
    reader fails it too), not an archive that ends there; one that stops between entries
    (no end-of-archive blocks) is read as ending there, as Go's reader does."""
    blob = _small_layer()
    third = [m.offset for m in tarfile.open(fileobj=io.BytesIO(blob))][2]
    (tmp_path / "cut").write_bytes(COMPRESS[compression](blob[:third + 200]))
    with pytest.raises(layers.LayerError, match=r"cannot be read: a header block is cut short \(200 of 512"):
        _merged([tmp_path / "cut"])
    (tmp_path / "between").write_bytes(COMPRESS[compression](blob[:third]))
    assert tarfile.open(fileobj=io.BytesIO(_merged([tmp_path / "between"]))).getnames() == ["etc/small0", "etc/small1"]


def test_a_zstd_layer_of_several_frames_merges_whole(tmp_path: Path) -> None:
    """zstd:chunked and parallel compressors write many frames; frame ends fall anywhere."""
    blob, compressor = _layer(), zstandard.ZstdCompressor()
    cuts = [0, 777, 70_001, 1 << 20, len(blob)]
    (tmp_path / "frames").write_bytes(b"".join(compressor.compress(blob[a:b]) for a, b in zip(cuts, cuts[1:])))
    (tmp_path / "one").write_bytes(compressor.compress(blob))
    assert _merged([tmp_path / "frames"]) == _merged([tmp_path / "one"])


def test_a_download_that_fails_fails_the_merge_with_its_own_error(tmp_path: Path) -> None:
    blob = COMPRESS["gzip"](_layer())
    cache = registry.LayerCache(tmp_path / "cache")
    with ThreadPoolExecutor(1) as pool:
        fetch = _fetch(pool, cache, blob, fail_after=len(blob) // 2)
        with pytest.raises(registry.RegistryError, match="broke off"):
            _merged([fetch])
    assert not list(cache.root.iterdir())  # nothing half-downloaded left in the cache


def test_a_download_whose_digest_does_not_match_fails_the_merge_after_reading_it_all(tmp_path: Path) -> None:
    """The whole layer merges fine while it arrives; its digest is checked at the end, and
    the merge fails then (the image is not made from bytes the registry did not sign for)."""
    blob = COMPRESS["zstd"](_layer())
    cache = registry.LayerCache(tmp_path / "cache")
    with ThreadPoolExecutor(1) as pool:
        fetch = _fetch(pool, cache, blob, fail_after=len(blob))
        with pytest.raises(registry.RegistryError, match="hashes to"):
            _merged([fetch])
    assert not list(cache.root.iterdir())


def test_a_layer_already_in_the_cache_is_read_from_there(tmp_path: Path) -> None:
    blob = COMPRESS["zstd"](_layer())
    cache = registry.LayerCache(tmp_path / "cache")
    with ThreadPoolExecutor(1) as pool:
        first = _fetch(pool, cache, blob)
        first.result()
        again = _fetch(pool, cache, blob)
        again.result()
        assert again.follow() is None  # nothing downloading: the merge opens the cached blob
        assert _merged([again]) == _merged([first.result()])


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_a_sparse_file_is_merged_with_its_holes_filled(tmp_path: Path, fmt: str) -> None:
    """GNU tar's sparse files (old GNU and pax 1.0 maps): the merged tar holds the file's
    full content, as tarfile expands it (the direct copy is only for plain files)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    data = bytearray(3 << 20)
    data[5] = data[(1 << 20) + 3] = data[-1] = 7
    with open(tree / "sparse", "wb") as f:  # holes on disk between the three bytes
        f.truncate(len(data))
        for at in (5, (1 << 20) + 3, len(data) - 1):
            f.seek(at)
            f.write(b"\x07")
    (tree / "plain").write_bytes(b"after the sparse file\n")
    layer = tmp_path / "layer.tar"
    subprocess.run(["tar", "--sparse", f"--format={fmt}", "-cf", str(layer), "-C", str(tree), "sparse", "plain"],
                   check=True)
    with tarfile.open(layer) as tar:
        assert tar.getmember("sparse").issparse()  # the layer really holds a sparse map
    merged = tarfile.open(fileobj=io.BytesIO(_merged([layer])))
    assert merged.extractfile("sparse").read() == bytes(data)
    assert merged.extractfile("plain").read() == b"after the sparse file\n"
