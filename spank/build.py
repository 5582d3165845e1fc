"""Build the SPANK plugin `.so` that plugstack.conf names (run by `make install`).

usage: python -m spank.build OUTPUT.so
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("shim.c")
SLURM_HEADER = Path("/usr/include/slurm/spank.h")


class BuildError(Exception):
    """The plugin could not be built; the message says what is missing."""


def build(output: str) -> Path:
    """Compile the shim into `output` (written beside it, then renamed: Slurm may be loading
    the old one right now, and must never see a half-written file)."""
    if not SLURM_HEADER.exists():
        raise BuildError(f"{SLURM_HEADER} is missing: install libslurm-dev")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise BuildError("no C compiler found: install build-essential")
    out = Path(output).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(tmp), str(SOURCE)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"compiling {SOURCE.name} failed:\n{result.stderr}")
    tmp.chmod(0o755)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m spank.build OUTPUT.so", file=sys.stderr)
        return 2
    try:
        print(f"built {build(argv[0])}")
    except BuildError as err:
        print(f"spank.build: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
