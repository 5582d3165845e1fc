"""The merged tar piped into `tar2sqfs` (squashfs-tools-ng): one squashfs, nothing extracted.

zstd level 3 by default (docs/architecture.md, decision 11: ~15x faster than gzip-9 for ~4% more size, and
fast to start). The output goes to a temporary name chosen by the caller; on any failure it
is removed, so a half-made image is never left behind. tar2sqfs is killed with its parent,
so a gateway killed mid-conversion leaves no writer behind either.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Callable

from shifter_site.errors import ShifterError

from imagegw import layers

COMPRESSORS = {"zstd": ["-c", "zstd", "-X", "level=3"], "lz4": ["-c", "lz4"], "gzip": ["-c", "gzip"],
               "xz": ["-c", "xz"], "lzo": ["-c", "lzo"]}
_PR_SET_PDEATHSIG = 1


class ConversionError(ShifterError):
    """tar2sqfs failed or the layers could not be merged; the message says which."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


PIPE_SIZE = 1 << 20  # Linux's default pipe-max-size


def _widen(pipe) -> None:
    """A 1 MiB pipe to tar2sqfs instead of 64 KiB: the merge and tar2sqfs then hand over 16x
    fewer times; a conversion took ~25% less time (bench/bench_pull.py). Best effort."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (OSError, AttributeError, ImportError):
        pass


def tar2sqfs_argv(output: str | Path, compression: str = "zstd") -> list[str]:
    if compression not in COMPRESSORS:
        raise ConversionError(f"compression {compression!r} is not one of {', '.join(COMPRESSORS)}")
    exe = shutil.which("tar2sqfs")
    if not exe:
        raise ConversionError("tar2sqfs is not installed; install Debian's squashfs-tools-ng")
    return [exe, "--quiet", "--no-skip", "--force", *COMPRESSORS[compression], str(output)]


def _failure(code: int, err: str, output: Path, unpacked: int) -> str:
    """tar2sqfs's failure as one line. It says only "I/O error" when its disk fills up, and
    removes its output: when the image directory now has less room than the merged tar
    written so far, that is named as the likely cause."""
    last = err.splitlines()[-1] if err else "no message"
    try:
        st = os.statvfs(output.parent)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    if free is not None and free < unpacked:
        return (f"tar2sqfs failed ({last}); the image directory {output.parent} is probably full: "
                f"{free} bytes free there, the image is {unpacked} bytes unpacked; free space or tell "
                "the site admins, then pull again")
    return f"tar2sqfs failed (exit {code}): {last}"


def convert(layer_paths: list, output: str | Path, compression: str = "zstd",
            all_root: bool = False, progress: Callable[[int, int], None] | None = None,
            max_bytes: int | None = None, max_files: int | None = None) -> layers.Flattener:
    """Flatten `layer_paths` (oldest first; paths, or futures of paths still downloading) into
    the squashfs `output`; returns the counts. `max_bytes`/`max_files`: the site's caps on
    the merged image (layers.Capped)."""
    output = Path(output)
    proc = subprocess.Popen(tar2sqfs_argv(output, compression), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
    _widen(proc.stdin)
    try:
        try:
            # counts what passes (for the message when tar2sqfs fails), and applies the caps
            out = layers.Capped(proc.stdin, max_bytes or 1 << 62, max_files or 1 << 62, progress)
            progress = out.progress
            flat = layers.flatten(layer_paths, out, all_root=all_root, progress=progress)
            if flat.entries > (max_files or 1 << 62):
                out.progress(flat.entries, flat.bytes)  # the last <512 entries: checked once more
            proc.stdin.close()
        except BrokenPipeError:
            flat = None
        err = proc.stderr.read().decode(errors="replace").strip()
        code = proc.wait()
        if code != 0 or flat is None:
            raise ConversionError(_failure(code, err, output, out.written))
        return flat
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        output.unlink(missing_ok=True)
        raise
    finally:
        for pipe in (proc.stdin, proc.stderr):
            try:
                pipe.close()
            except (OSError, BrokenPipeError):
                pass
