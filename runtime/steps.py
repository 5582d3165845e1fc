"""One structured log event per setup step, with its duration (shifter_site.logs.step).

What a build logs, and where it may be stopped on purpose, is given to it (injected):
`log` None logs nothing (the `shifter` CLI without -v: importing structlog alone costs
~35 ms a launch); `fault(step)` runs after each step that succeeded (tests use it to stop a
builder anywhere, to prove teardown copes)."""

from __future__ import annotations

TYPE_CHECKING = False  # a hot path: no `typing` import (docs/architecture.md, decision 13)
if TYPE_CHECKING:  # annotations only (typing costs a rootless launch ~7 ms)
    from typing import Any, Callable

    from runtime.spec import ContainerSpec


class Steps:
    """Makes a context manager per named step: `with steps("image") as info: ...`."""

    def __init__(self, spec: ContainerSpec, log: Any = None, fault: Callable[[str], None] | None = None,
                 key: str = ""):
        self.log, self.fault = log, fault
        self.fields = {"image": spec.image_id[:12], "uid": spec.user.uid}
        if key:  # which container: a node's log interleaves builds
            self.fields["key"] = key

    def __call__(self, name: str, **extra) -> _Step:
        return _Step(self, name, extra)


class _Step:
    def __init__(self, steps: Steps, name: str, extra: dict):
        self.steps, self.name, self.extra = steps, name, extra
        self.cm = None

    def __enter__(self) -> dict:
        if self.steps.log is None:
            return {}
        from shifter_site import logs
        self.cm = logs.step(self.steps.log, f"build.{self.name}", **self.steps.fields, **self.extra)
        return self.cm.__enter__()

    def __exit__(self, *exc) -> bool | None:
        result = self.cm.__exit__(*exc) if self.cm else None
        if exc[0] is None and self.steps.fault is not None:
            self.steps.fault(self.name)
        return result


def runtime_log() -> Any:
    """The runtime's logger (imports structlog: not for a quiet rootless launch)."""
    from shifter_site import logs
    return logs.get("runtime")
