"""A clean environment for what privileged code runs: no loader or Python settings of the
caller reach a helper program (docs/security.md)."""

from __future__ import annotations

import os

from runtime import syscalls as sc
from runtime.errors import BuildError

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def scrub_environment() -> None:
    """Privileged code must not run helpers with the caller's loader or Python settings."""
    for name in list(os.environ):
        if name.startswith(("LD_", "PYTHON")) or name in ("IFS", "ENV", "BASH_ENV", "GCONV_PATH"):
            del os.environ[name]
    os.environ["PATH"] = SAFE_PATH


def run_helper(argv: list[str], what: str) -> None:
    """A helper program with a clean environment, killed if we die (no orphan after -9)."""
    import subprocess

    proc = subprocess.run(argv, env={"PATH": SAFE_PATH}, capture_output=True, text=True,
                          preexec_fn=lambda: sc.parent_death_signal(9))
    if proc.returncode != 0:
        raise BuildError(f"{what} failed ({' '.join(argv)}): {(proc.stderr or proc.stdout).strip()[:300]}")
