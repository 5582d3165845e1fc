"""Logs: JSON lines for services and hooks (one event per step, with its duration), readable
lines for CLIs, debug only with -v."""

from __future__ import annotations

import io
import json

import pytest

from shifter_site import logs


def test_json_lines_carry_event_part_level_and_time():
    out = io.StringIO()
    logs.configure(json=True, stream=out)
    logs.get("prolog").info("image_mounted", job=42, node="n1")
    record = json.loads(out.getvalue())
    assert record["event"] == "image_mounted"
    assert record["part"] == "prolog" and record["job"] == 42 and record["node"] == "n1"
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")


def test_step_logs_duration_and_failure():
    out = io.StringIO()
    logs.configure(json=True, stream=out)
    log = logs.get("runtime")
    with logs.step(log, "mount_image", image="abc") as extra:
        extra["loop"] = "/dev/loop3"
    with pytest.raises(RuntimeError):
        with logs.step(log, "mount_cache"):
            raise RuntimeError("mkfs.xfs failed")
    ok, failed = (json.loads(line) for line in out.getvalue().splitlines())
    assert ok["event"] == "mount_image" and ok["ok"] is True and ok["loop"] == "/dev/loop3"
    assert isinstance(ok["ms"], float) and ok["ms"] >= 0
    assert failed["ok"] is False and failed["error"] == "mkfs.xfs failed" and failed["level"] == "error"


def test_console_output_is_readable_and_debug_needs_verbose():
    out = io.StringIO()
    logs.configure(json=False, verbose=False, stream=out)
    log = logs.get("shifterimg")
    log.debug("hidden_detail")
    log.info("pulling", ref="docker:ubuntu:22.04")
    text = out.getvalue()
    assert "hidden_detail" not in text
    assert "pulling" in text and "ref=docker:ubuntu:22.04" in text
    assert not text.lstrip().startswith("{")

    out = io.StringIO()
    logs.configure(json=False, verbose=True, stream=out)
    logs.get("shifterimg").debug("shown_detail")
    assert "shown_detail" in out.getvalue()
