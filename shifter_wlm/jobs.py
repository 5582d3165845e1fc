"""Which container each job (and step-level image) uses on a node, written by root.

    <run_dir>/<node>/<key>/            a pinned container (runtime.build)
    <run_dir>/<node>/jobs/<job>.json   JobRecord of a job's container on that node
    <run_dir>/<node>/jobs/<job>.<step>.json   a step-level container (srun --image=OTHER)

The prolog writes the record *before* it builds (state "building"), so the epilog can clean
up after a prolog killed half-way; "ready" once built; "failed" with the reason, which each
`shifter` step then reports (a failed prolog must not drain the node).
"""

from __future__ import annotations

import os
import stat

from shifter_site import jsonread  # not json: its decoder imports re, ~4 ms a step (docs/architecture.md, decision 13)
from shifter_site.errors import ShifterError


class JobStateError(ShifterError):
    """The job's state on this node is missing or not trustworthy."""


class JobRecord:
    """A plain class, not a dataclass: importing dataclasses costs a step ~8 ms.

    job_id, uid         whose container this is
    key                 runtime.build key of the container
    image_id            the image it was built from
    state, message      building | ready | failed, and why it failed (user-ready)
    image_request, volume, module   the request as the user wrote it
    entering            what entering needs (runtime.spec.Entering.to_data()), so a step
                        loads neither the site config nor the image record
    gpus                the node's GPUs the container got (runtime/gpu.py); a step with others
                        gets a container of its own
    sshd_port           the job's sshd port (0: the job has no sshd); the prolog's plan,
    sshd_addrs          with the job's nodes' addresses (node -> Slurm NodeAddr), for the
                        extern step that starts it (shifter_wlm.extern)
    sshd_pid            the job's sshd in the container (0: none); a child of the extern step
    sshd_error          why the job's sshd did not start on this node ("" when it did, or none)
    """

    DEFAULTS = {
        "job_id": 0, "uid": -1, "key": "", "image_id": "", "state": "building", "message": "",
        "image_request": "", "volume": "", "module": "", "entering": None, "gpus": [],
        "sshd_port": 0, "sshd_addrs": None, "sshd_pid": 0, "sshd_error": "",
    }
    __slots__ = tuple(DEFAULTS)

    def __init__(self, **values):
        unknown = values.keys() - self.DEFAULTS.keys()
        if unknown:
            raise JobStateError(f"job record has unknown fields {sorted(unknown)}")
        for name, default in self.DEFAULTS.items():
            value = values.get(name, default)
            setattr(self, name, list(value) if isinstance(value, list) else value)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.DEFAULTS}

    def __eq__(self, other) -> bool:
        return isinstance(other, JobRecord) and self.to_dict() == other.to_dict()


def updated(record: JobRecord, **changes) -> JobRecord:
    """A copy of `record` with some fields changed."""
    return JobRecord(**{**record.to_dict(), **changes})


def node_name() -> str:
    """This node, as slurmd names it in the prolog's and epilog's environment (spank_getenv
    answers only in remote context, so the environment is the one source there)."""
    name = os.environ.get("SLURMD_NODENAME")
    if not name:
        raise JobStateError("SLURMD_NODENAME is not set in the prolog or epilog environment")
    return name


def node_dir(run_dir: str, node: str) -> str:
    if not node or "/" in node or node in (".", "..") or node.startswith("."):
        raise JobStateError(f"node name {node!r} cannot name a directory")
    return os.path.join(run_dir, node)


def _path(node_run_dir: str, name: str) -> str:
    return os.path.join(node_run_dir, "jobs", f"{name}.json")


def write(node_run_dir: str, name: str, record: JobRecord) -> None:
    directory = os.path.join(node_run_dir, "jobs")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        import json

        json.dump(record.to_dict(), handle)
    os.replace(tmp, _path(node_run_dir, name))


def read(node_run_dir: str, name: str) -> JobRecord | None:
    """The record, or None when nothing was set up; a record root did not write is refused."""
    path = _path(node_run_dir, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as handle:
        st = os.fstat(handle.fileno())
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise JobStateError(f"{path} was not written by root; refusing it")
        return JobRecord(**jsonread.load(handle))


def remove(node_run_dir: str, name: str) -> None:
    try:
        os.unlink(_path(node_run_dir, name))
    except FileNotFoundError:
        pass


def names(node_run_dir: str) -> list[str]:
    """Every job and step record on this node ("42", "42.3")."""
    try:
        entries = os.listdir(os.path.join(node_run_dir, "jobs"))
    except FileNotFoundError:
        return []
    return sorted(e[:-5] for e in entries if e.endswith(".json") and not e.startswith("."))


def cache_in_use(node_run_dir: str, job_id: int) -> int:
    """perNodeCache bytes this job's containers (its own and its steps') hold on this node:
    the site's limit is per job and node, not per container."""
    from runtime.volumes import VolumeError, parse

    total = 0
    for name in names(node_run_dir):
        if name != str(job_id) and not name.startswith(f"{job_id}."):
            continue
        record = read(node_run_dir, name)
        if record is None or record.state == "failed" or not record.volume:
            continue
        try:
            total += sum(v.cache.size for v in parse(record.volume) if v.cache)
        except VolumeError:
            continue
    return total


def keys_in_use(node_run_dir: str, excluding: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Container keys some job or step on this node still records (records named in
    `excluding` not counted: those being forgotten)."""
    keys = set()
    for name in set(names(node_run_dir)) - set(excluding):
        try:
            with open(_path(node_run_dir, name)) as handle:
                keys.add(jsonread.load(handle)["key"])
        except (OSError, ValueError, KeyError):
            continue
    return keys
