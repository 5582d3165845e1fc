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
