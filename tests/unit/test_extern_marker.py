"""The prolog's sshd marker and the extern step id are written in two languages: the C shim
checks the marker before starting Python in a job's extern step, the Python side writes it.
They must name the same things."""

from __future__ import annotations

import re
from pathlib import Path

SHIM = Path(__file__).resolve().parents[2] / "spank/shim.c"


def test_the_shim_and_the_prolog_agree_on_the_marker_and_the_step():
    from shifter_wlm import dispatch, extern

    text = SHIM.read_text()
    assert re.search(r'#define SSHD_MARKERS "([^"]+)"', text).group(1) == extern.MARKER_DIR
    assert "step != 0xfffffffcU" in text
    assert dispatch.EXTERN_STEP == extern.EXTERN_STEP == 0xFFFFFFFC


def test_an_extern_step_without_the_marker_starts_nothing():
    """Only the extern step's task_post_fork has a route: its other hooks, and task_post_fork
    in an ordinary step, do nothing."""
    from shifter_wlm import dispatch

    extern_routes = {hook for (context, hook) in dispatch.ROUTES if context == "extern"}
    assert extern_routes == {"task_post_fork"}
    assert ("remote", "task_post_fork") not in dispatch.ROUTES


def test_a_child_about_to_join_a_container_imports_nothing(tmp_path, monkeypatch):
    """The sshd-to-be and the log reader join the container as root: a module imported
    after that would come from the image (its /usr/lib/python3.*), run as root. They import
    nothing from then on; a module not imported before fails."""
    import os

    from shifter_wlm import sshd

    (tmp_path / "planted_by_an_image.py").write_text("import os\nos.write(1, b'ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            sshd._no_imports_from_the_container()
            try:
                import planted_by_an_image  # noqa: F401
                os.write(w, b"imported")
            except ImportError:
                os.write(w, b"refused")
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 100) == b"refused"
