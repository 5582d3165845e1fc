"""Writes the `shifter` command: the launcher pip would write, started with `python -S`.

Why: every launch pays for Python's `site` (the venv's site-packages scan and its `.pth`
files, e.g. setuptools' `_distutils_hack`), about 2 ms of a rootless launch
(docs/architecture.md, decision 13; bench/bench_launch.py --variants). `-S` skips it and the launcher puts this install's
site-packages on sys.path itself, after the standard library, where `site` puts it.

    python -m runtime.launcher /opt/shifter/bin/shifter      (make package runs this)
"""

from __future__ import annotations

import os
import sys
import sysconfig

ENTRY = "shifter_wlm.batch"  # = setup.py's console_scripts entry for `shifter`


def script(python: str, purelib: str, platlib: str) -> str:
    """The launcher's text for this interpreter and these package directories."""
    paths = [purelib] if purelib == platlib else [purelib, platlib]
    return (f"#!{python} -S\n"
            "# written by runtime/launcher.py (make package): -S skips `site` (~2 ms a launch)\n"
            "import sys\n"
            f"sys.path.extend({paths!r})\n"
            f"from {ENTRY} import main\n"
            "if __name__ == '__main__':\n"
            "    sys.exit(main())\n")


def write(target: str) -> None:
    paths = sysconfig.get_paths()
    text = script(sys.executable, paths["purelib"], paths["platlib"])
    tmp = f"{target}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m runtime.launcher PATH")
    write(sys.argv[1])
