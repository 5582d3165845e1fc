"""The one place that asks Slurm about a job: nodes, tasks per node, owner.

pyslurm is used when a build matching the installed Slurm is importable (PyPI's is built for
Slurm 25.11 only); otherwise Slurm's own `scontrol`. Callers get the same JobInfo either way.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from shifter_site.errors import ShifterError


class SlurmQueryError(ShifterError):
    """Slurm could not tell us about a job; the message says what failed."""


@dataclass(frozen=True)
class JobInfo:
    job_id: int
    uid: int
    gid: int
    nodes: tuple[str, ...]                 # in allocation order
    tasks_per_node: dict[str, int]         # the job's task layout, for /var/hostsfile
    batch_host: str


# ---------------------------------------------------------------- pure parsing


def parse_cpu_ids(text: str) -> int:
    """How many CPUs `0-1,4` names."""
    count = 0
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def expand_hostlist(expr: str) -> list[str]:
    """`n[1-3,5],login01` -> n1 n2 n3 n5 login01 (Slurm's hostlist syntax, one bracket per name)."""
    out: list[str] = []
    for name in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", expr):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", name)
        if not match:
            out.append(name)
            continue
        prefix, ranges, suffix = match.groups()
        if "[" in suffix:
            raise SlurmQueryError(f"host list {expr!r} has more than one range in a name; not supported")
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            width = len(lo)
            for i in range(int(lo), int(hi or lo) + 1):
                out.append(f"{prefix}{i:0{width}d}{suffix}")
    return out


def layout_tasks(cpus: dict[str, int], nodes: list[str], num_tasks: int, cpus_per_task: int) -> dict[str, int]:
    """Tasks per node as Slurm's block distribution places the job's tasks on its CPUs."""
    slots = {n: max(cpus.get(n, 1) // max(cpus_per_task, 1), 1) for n in nodes}
    layout = {n: 0 for n in nodes}
    left = num_tasks
    # every node gets at least one task when there are enough, then fill in order
    for n in nodes:
        if left > 0:
            layout[n] = 1
            left -= 1
    for n in nodes:
        extra = min(slots[n] - layout[n], left)
        layout[n] += extra
        left -= extra
    while left > 0:  # overcommitted: Slurm goes round the nodes again
        for n in nodes:
            if left > 0:
                layout[n] += 1
                left -= 1
    return layout


def parse_show_job(text: str) -> JobInfo:
    """A JobInfo from `scontrol show job -d -o ID` output."""
    fields = dict(re.findall(r"(?:^|\s)([A-Za-z/:_]+)=(\S*)", text))
    try:
        job_id = int(fields["JobId"])
        uid = int(re.search(r"\((\d+)\)", fields["UserId"]).group(1))
        gid = int(re.search(r"\((\d+)\)", fields["GroupId"]).group(1))
        nodes = expand_hostlist(fields["NodeList"])
        num_tasks = int(fields.get("NumTasks", len(nodes)) or len(nodes))
        cpus_per_task = int(fields.get("CPUs/Task", "1") or 1)
    except (KeyError, AttributeError, ValueError) as err:
        raise SlurmQueryError(f"cannot read scontrol's job record ({err}): {text[:200]!r}") from None
    cpus: dict[str, int] = {}
    for group, ids in re.findall(r"\sNodes=(\S+) CPU_IDs=(\S+)", text):
        for node in expand_hostlist(group):
            cpus[node] = parse_cpu_ids(ids)
    return JobInfo(job_id=job_id, uid=uid, gid=gid, nodes=tuple(nodes),
                   tasks_per_node=layout_tasks(cpus, nodes, num_tasks, cpus_per_task),
                   batch_host=fields.get("BatchHost", nodes[0] if nodes else ""))


def parse_show_nodes(text: str) -> dict[str, str]:
    """NodeName -> NodeAddr from `scontrol show node -o NAMES` output (one line per node)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(?:^|\s)([A-Za-z]+)=(\S*)", line))
        if "NodeName" in fields:
            out[fields["NodeName"]] = fields.get("NodeAddr") or fields["NodeName"]
    return out


# ---------------------------------------------------------------- backends


def _slurm_version() -> str:
    out = _run(["scontrol", "--version"])  # "slurm-wlm 22.05.8" or "slurm 22.05.8"
    return out.split()[-1]


def _pyslurm():
    """pyslurm, only when its build matches this Slurm (major.minor)."""
    try:
        import pyslurm  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - absent or built for another Slurm: not usable
        return None
    built_for = getattr(pyslurm, "__version__", "")
    if built_for.split(".")[:2] != _slurm_version().split(".")[:2]:
        return None
    return pyslurm


def backend() -> str:
    """Which backend answers queries here: 'pyslurm' or 'scontrol'."""
    return "pyslurm" if _pyslurm() else "scontrol"


def _run(argv: list[str]) -> str:
    exe = shutil.which(argv[0], path="/usr/bin:/bin:/usr/sbin:/sbin")
    if not exe:
        raise SlurmQueryError(f"{argv[0]} is not installed; install slurm-client")
    # privileged callers: a fixed PATH, only Slurm's own config variable passed on
    env = {"PATH": "/usr/bin:/bin"}
    if "SLURM_CONF" in os.environ:
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    try:
        result = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, env=env, timeout=60)
    except subprocess.TimeoutExpired:
        raise SlurmQueryError(f"{' '.join(argv)} did not answer within 60 s") from None
    if result.returncode != 0:
        raise SlurmQueryError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _job_info_pyslurm(pyslurm, job_id: int) -> JobInfo:
    job = pyslurm.Job.load(job_id)
    nodes = expand_hostlist(job.allocated_nodes or "")
    cpus = {n: len(v.get("cpu_ids", []) or []) or 1 for n, v in (job.get_resource_layout_per_node() or {}).items()}
    return JobInfo(job_id=job_id, uid=job.user_id, gid=job.group_id, nodes=tuple(nodes),
                   tasks_per_node=layout_tasks(cpus, nodes, job.ntasks or len(nodes), job.cpus_per_task or 1),
                   batch_host=job.batch_host or (nodes[0] if nodes else ""))


def job_info(job_id: int) -> JobInfo:
    """What Slurm knows about a running job."""
    pyslurm = _pyslurm()
    if pyslurm is not None:
        try:
            return _job_info_pyslurm(pyslurm, job_id)
        except Exception as err:  # noqa: BLE001 - pyslurm raises its own types
            raise SlurmQueryError(f"pyslurm could not load job {job_id}: {err}") from None
    return parse_show_job(_run(["scontrol", "show", "job", "-d", "-o", str(job_id)]))


def node_addresses(nodes: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Each node's NodeAddr (the address Slurm reaches its slurmd at), in the given order."""
    if not nodes:
        return {}
    known = parse_show_nodes(_run(["scontrol", "show", "node", "-o", ",".join(nodes)]))
    missing = [n for n in nodes if n not in known]
    if missing:
        raise SlurmQueryError(f"scontrol show node did not list {', '.join(missing)}")
    return {n: known[n] for n in nodes}
