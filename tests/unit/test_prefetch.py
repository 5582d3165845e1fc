"""runtime/prefetch.py: what a rootless launch reads before exec: the command's
file and the interpreter it names, regular files only, never blocking, never failing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

from runtime import prefetch


def _loader_of(path: str) -> str | None:
    """The ELF interpreter as readelf reports it (an independent reading)."""
    assert shutil.which("readelf"), "binutils' readelf is needed to check the ELF parsing"
    out = subprocess.run(["readelf", "-l", path], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "Requesting program interpreter:" in line:
            return line.split(":", 1)[1].strip(" ]")
    return None


def test_an_elf_binary_names_its_loader_as_readelf_does():
    python = os.path.realpath(sys.executable)
    head = prefetch.read_file(python)
    assert head[:4] == b"\x7fELF"
    assert prefetch._interpreter(head) == _loader_of(python)
    assert _loader_of(python)  # the host's python is dynamic: the test compares something


def test_a_script_names_its_interpreter(tmp_path):
    script = tmp_path / "run"
    script.write_text("#!/bin/sh -e\necho hi\n")
    assert prefetch._interpreter(prefetch.read_file(str(script))) == "/bin/sh"
    script.write_text("#! relative/sh\n")
    assert prefetch._interpreter(prefetch.read_file(str(script))) is None
    assert prefetch._interpreter(b"\x7fELF\x01\x01" + b"\0" * 100) is None  # 32-bit: not parsed
    assert prefetch._interpreter(b"\x7fELF\x02\x01" + b"\xff" * 200) is None  # garbage headers


def test_a_fifo_or_a_directory_is_not_read_and_nothing_blocks(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = threading.Event()
    threading.Thread(target=lambda: (prefetch.warm(str(fifo)), done.set()), daemon=True).start()
    assert done.wait(5), "opening a FIFO named as the command blocked"
    assert prefetch.read_file(str(tmp_path)) == b""
    assert prefetch.read_file(str(tmp_path / "missing")) == b""
    prefetch.warm(str(tmp_path / "missing"))  # no exception: exec reports the real problem


def test_only_the_limit_is_read(tmp_path, monkeypatch):
    big = tmp_path / "big"
    big.write_bytes(b"#!/bin/sh\n" + b"x" * (3 << 20))
    reads = []
    real = os.readv
    monkeypatch.setattr(prefetch.os, "readv", lambda fd, bufs: reads.append(real(fd, bufs)) or reads[-1])
    monkeypatch.setattr(prefetch, "LIMIT", 1 << 20)
    assert prefetch.read_file(str(big)).startswith(b"#!/bin/sh")
    assert 4096 + sum(reads) >= 1 << 20 and 4096 + sum(reads) - reads[-1] < 1 << 20
    reads.clear()
    monkeypatch.setattr(prefetch, "LIMIT", 8 << 20)
    prefetch.read_file(str(big))
    assert 4096 + sum(reads) == big.stat().st_size and reads[-1] == 0  # to the end, then EOF
