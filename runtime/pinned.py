"""Pinned containers: the state a pinned container keeps on the node (docs/architecture.md,
"Per-node job state lives in a pinned mount namespace").

A pinned container (the Slurm prolog's) lives in its own mount namespace, whose root *is*
the container root, pinned by a bind mount of its nsfs file:

    <run_dir>/<key>/          the container's state dir (a private bind mount of itself)
        intent.json           written first: what a teardown must clean (cache dir, key)
        ns                    the pin (bind of /proc/<pid>/ns/mnt) once built
        record.json           written last: the container is ready; what entering it needs
                              (runtime.spec.Entering.to_data(), the one serialisation the
                              Slurm job record embeds too, under the same field names)

`key` is ContainerSpec.build_key(): an identical later request finds the record and joins
the namespace (runtime.enter.join) instead of building again. runtime.build builds it;
runtime.teardown removes it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from runtime import binds
from runtime import syscalls as sc
from runtime.cache import cache_file_prefix
from runtime.frozen import Frozen
from runtime.paths import fdpath

if TYPE_CHECKING:
    from runtime.spec import ContainerSpec


class Container(Frozen):
    """A built, pinned container on this node."""

    key: str
    state_dir: str

    @property
    def ns_path(self) -> str:
        return os.path.join(self.state_dir, "ns")

    @property
    def record_path(self) -> str:
        return os.path.join(self.state_dir, "record.json")


def find(run_dir: str, key: str) -> Container | None:
    """The ready, pinned container with this key, or None."""
    import json

    state = os.path.join(run_dir, key)
    container = Container(key, state)
    try:
        with open(container.record_path) as f:
            record = json.load(f)
        pinned = os.stat(container.ns_path).st_dev != os.stat(state).st_dev
    except (OSError, ValueError):
        return None
    return container if pinned and record.get("state") == "ready" else None


def _write_json(path: str, data: dict) -> None:
    import json

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def make_state_dir(spec: ContainerSpec, state: str, key: str) -> None:
    """The state dir, its intent (first: what a teardown must clean), the pin's file and
    the root's empty directory."""
    os.mkdir(state, 0o700)
    _write_json(os.path.join(state, "intent.json"),
                {"key": key, "cache_prefix": cache_file_prefix(spec, key), "pid": os.getpid()})
    binds.bind(state, state)
    sc.mount(None, state, None, sc.MS_PRIVATE)
    open(os.path.join(state, "ns"), "w").close()
    os.mkdir(os.path.join(state, "root"), 0o700)


def pin(state: str, ns_fd: int) -> None:
    """Keep the namespace `ns_fd` alive with no process in it."""
    sc.mount(fdpath(ns_fd), os.path.join(state, "ns"), None, sc.MS_BIND)


def write_record(spec: ContainerSpec, state: str, key: str) -> None:
    """Last: the container is ready (find() looks for this). One record style: the fields
    `state`, `key` and `entering` as in the Slurm job record (shifter_wlm/jobs.py)."""
    _write_json(os.path.join(state, "record.json"),
                {"state": "ready", "key": key, "entering": spec.entering().to_data()})
