"""Logging, configured in one place for every part.

Services and Slurm hooks write JSON lines (one event per step, with its duration) so an admin
can grep a job's setup on each node; CLIs write readable lines to stderr. `-v` means debug.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Iterator

import structlog


def configure(json: bool = False, verbose: bool = False, stream=None) -> None:
    """Set up structlog for this process: `json` for services and hooks, console for CLIs."""
    stream = stream or sys.stderr
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if json:
        processors += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        colors = hasattr(stream, "isatty") and stream.isatty()
        processors += [structlog.dev.ConsoleRenderer(colors=colors, pad_event_to=0)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger for one part (`gateway`, `runtime`, `prolog`...); the name goes in every event."""
    # lazy: a module-level logger made at import time still follows a later configure()
    return structlog.get_logger(part=name)


@contextlib.contextmanager
def step(log, event: str, **fields) -> Iterator[dict]:
    """Log one event when a step ends, with its duration in ms and whether it failed.

    The yielded dict lets the step add fields it learns while running.
    """
    extra: dict = {}
    start = time.perf_counter()
    try:
        yield extra
    except BaseException as err:
        log.error(event, ok=False, ms=round((time.perf_counter() - start) * 1000, 2),
                  error=str(err) or type(err).__name__, **fields, **extra)
        raise
    log.info(event, ok=True, ms=round((time.perf_counter() - start) * 1000, 2), **fields, **extra)
