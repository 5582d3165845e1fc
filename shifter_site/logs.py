"""Logging, configured in one place for every part.

Services and Slurm hooks write JSON lines (one event per step, with its duration) so an admin
can grep a job's setup on each node; CLIs write readable lines to stderr. `-v` means debug.

structlog is imported on the first event, not before: a job step's hot path (joining the
job's container) logs nothing and must not pay ~35 ms of imports for it.
"""

from __future__ import annotations

import sys
import time

_DEBUG, _INFO = 10, 20  # logging's levels, without importing logging
_pending: tuple | None = None  # the last configure() not yet applied to structlog


def configure(json: bool = False, verbose: bool = False, stream=None) -> None:
    """Set up logging for this process: `json` for services and hooks, console for CLIs."""
    global _pending
    _pending = (json, verbose, stream or sys.stderr)
    if "structlog" in sys.modules:
        _apply()


def _apply() -> None:
    global _pending
    if _pending is None:
        return
    import structlog

    json, verbose, stream = _pending
    _pending = None
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
        wrapper_class=structlog.make_filtering_bound_logger(_DEBUG if verbose else _INFO),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


class _Logger:
    """A part's logger; structlog is loaded (and the pending configuration applied) when the
    first event is logged. Module-level loggers made at import time follow a later
    configure()."""

    def __init__(self, part: str):
        self._part = part

    def __getattr__(self, name: str):
        import structlog

        _apply()
        return getattr(structlog.get_logger(part=self._part), name)


def get(name: str) -> _Logger:
    """A logger for one part (`gateway`, `runtime`, `prolog`...); the name goes in every event."""
    return _Logger(name)


def step(log, event: str, **fields) -> _Step:
    """Log one event when a step ends, with its duration in ms and whether it failed.

    `with step(...) as info:` gives a dict the step can add fields to while running. (A
    class, not contextlib: the step path imports this module, and contextlib costs it ~3 ms.)
    """
    return _Step(log, event, fields)


class _Step:
    __slots__ = ("log", "event", "fields", "extra", "start")

    def __init__(self, log, event: str, fields: dict):
        self.log, self.event, self.fields, self.extra = log, event, fields, {}

    def __enter__(self) -> dict:
        self.start = time.perf_counter()
        return self.extra

    def __exit__(self, kind, err, tb) -> bool:
        ms = round((time.perf_counter() - self.start) * 1000, 2)
        if kind is not None:
            self.log.error(self.event, ok=False, ms=ms, error=str(err) or kind.__name__, **self.fields, **self.extra)
        else:
            self.log.info(self.event, ok=True, ms=ms, **self.fields, **self.extra)
        return False
