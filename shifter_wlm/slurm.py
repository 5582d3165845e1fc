"""The one place that asks Slurm about a job: nodes, tasks per node, owner.

pyslurm is used when a build matching the installed Slurm is importable (PyPI's is built for
Slurm 25.11 only); otherwise Slurm's own commands. Callers get the same JobInfo either way.

A job record holds text its user wrote (--comment, --job-name, --chdir...), and `scontrol
show job` prints it raw, newlines included, among the fields: `--comment='x NodeList=n[1-3]'`
must not become the job's node list. So (Slurm 22.05 has no `scontrol --json`, and
`squeue --json` ignores -j and prints every job):
- ids, node list, task and CPU counts come from `squeue -O` with a delimiter no such field
  can hold, one line per job, each field checked (numbers, a host list that expands to
  exactly NumNodes names);
- the per-node CPUs (only the task layout in the job's own /var/hostsfile depends on them)
  come from scontrol's `Nodes=... CPU_IDs=...` lines, accepted only when they name each of
  the job's nodes once and add up to its CPU count, else the layout assumes none;
- every expansion is bounded (MAX_NODES, MAX_CPUS, MAX_TASKS) before it is made.
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


MAX_NODES = 100_000     # names one host list may expand to
MAX_CPUS = 1 << 16      # CPU ids one node may list
MAX_TASKS = 10_000_000  # tasks a job may have, for the hostsfile
SQUEUE_FIELDS = ("JobID", "UserID", "GroupID", "NodeList", "BatchHost", "NumTasks", "cpus-per-task", "NumNodes",
                 "NumCPUs")


@dataclass(frozen=True)
class JobInfo:
    job_id: int
    uid: int
    gid: int
    nodes: tuple[str, ...]                 # in allocation order
    tasks_per_node: dict[str, int]         # the job's task layout, for /var/hostsfile
    batch_host: str


# ---------------------------------------------------------------- pure parsing


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() is also true for '²' (int() refuses it) and '٣'."""
    return text.isascii() and text.isdigit()


def parse_cpu_ids(text: str, limit: int = MAX_CPUS) -> int:
    """How many CPUs `0-1,4` names; SlurmQueryError when it is not that, or names more than `limit`."""
    count = 0
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        if not _digits(lo) or not _digits(hi or lo) or int(hi or lo) < int(lo):
            raise SlurmQueryError(f"CPU id list {text[:80]!r} is not one Slurm writes")
        count += int(hi or lo) - int(lo) + 1
        if count > limit:
            raise SlurmQueryError(f"CPU id list {text[:80]!r} names more than {limit} CPUs")
    return count


def expand_hostlist(expr: str, limit: int = MAX_NODES) -> list[str]:
    """`n[1-3,5],login01` -> n1 n2 n3 n5 login01 (Slurm's hostlist syntax, one bracket per name).
    SlurmQueryError when the list is malformed or would expand to more than `limit` names
    (counted before anything is expanded)."""
    groups: list[tuple[str, list[tuple[int, int, int]], str] | str] = []
    total = 0
    for name in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", expr):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", name)
        if not match:
            groups.append(name)
            total += 1
        else:
            prefix, ranges, suffix = match.groups()
            if "[" in suffix:
                raise SlurmQueryError(f"host list {expr[:80]!r} has more than one range in a name; not supported")
            spans = []
            for part in ranges.split(","):
                lo, _, hi = part.partition("-")
                if not _digits(lo) or not _digits(hi or lo) or int(hi or lo) < int(lo):
                    raise SlurmQueryError(f"host list {expr[:80]!r} has a range {part[:20]!r} Slurm does not write")
                spans.append((int(lo), int(hi or lo), len(lo)))
                total += int(hi or lo) - int(lo) + 1
            groups.append((prefix, spans, suffix))
        if total > limit:
            raise SlurmQueryError(f"host list {expr[:80]!r} names more than {limit} nodes")
    out: list[str] = []
    for group in groups:
        if isinstance(group, str):
            out.append(group)
            continue
        prefix, spans, suffix = group
        for lo, hi, width in spans:
            out.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(lo, hi + 1))
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
    if left > 0 and nodes:  # overcommitted: Slurm goes round the nodes again
        rounds, rest = divmod(left, len(nodes))
        for i, n in enumerate(nodes):
            layout[n] += rounds + (1 if i < rest else 0)
    return layout


def _number(name: str, text: str, limit: int) -> int:
    if not _digits(text) or int(text) > limit:
        raise SlurmQueryError(f"squeue's {name} {text[:40]!r} is not a number up to {limit}")
    return int(text)


def parse_squeue(text: str, job_id: int) -> dict:
    """The structured fields of one job from `squeue -h -O <SQUEUE_FIELDS, '|'-ended>`."""
    lines = text.splitlines()
    fields = lines[0].split("|") if len(lines) == 1 else []
    if len(fields) != len(SQUEUE_FIELDS) + 1 or fields[-1] != "":
        raise SlurmQueryError(f"squeue did not give one record for job {job_id}: {text[:200]!r}")
    values = dict(zip(SQUEUE_FIELDS, (f.strip() for f in fields)))
    if values["JobID"] != str(job_id):
        raise SlurmQueryError(f"squeue answered for job {values['JobID'][:20]!r}, not {job_id}")
    num_nodes = _number("NumNodes", values["NumNodes"], MAX_NODES)
    nodes = expand_hostlist(values["NodeList"], limit=num_nodes)
    if len(nodes) != num_nodes or len(set(nodes)) != num_nodes:
        raise SlurmQueryError(f"squeue's NodeList {values['NodeList'][:80]!r} does not name its {num_nodes} nodes")
    cpt = values["cpus-per-task"]
    return {
        "uid": _number("UserID", values["UserID"], 1 << 32), "gid": _number("GroupID", values["GroupID"], 1 << 32),
        "nodes": nodes,
        "num_tasks": _number("NumTasks", values["NumTasks"], MAX_TASKS) if _digits(values["NumTasks"]) else num_nodes,
        "cpus_per_task": _number("cpus-per-task", cpt, MAX_CPUS) if _digits(cpt) else 1,
        "num_cpus": _number("NumCPUs", values["NumCPUs"], MAX_NODES * MAX_CPUS),
        "batch_host": values["BatchHost"] if values["BatchHost"] in nodes else (nodes[0] if nodes else ""),
    }


_CPU_LINE = re.compile(r"^ +Nodes=(\S+) CPU_IDs=(\S+) Mem=\S* GRES=\S*$")


def cpus_per_node(show_job: str, nodes: list[str], num_cpus: int) -> dict[str, int]:
    """Per-node CPU counts from `scontrol show job -d` (multi-line) output: accepted only when
    the `Nodes= CPU_IDs=` lines name each of `nodes` once and add up to `num_cpus` (text a
    user wrote into the record cannot add a node or a CPU); {} when they do not."""
    cpus: dict[str, int] = {}
    wanted = set(nodes)
    try:
        for line in show_job.splitlines():
            match = _CPU_LINE.match(line)
            if not match:
                continue
            for node in expand_hostlist(match.group(1), limit=len(nodes)):
                if node not in wanted or node in cpus:
                    return {}
                cpus[node] = parse_cpu_ids(match.group(2))
    except SlurmQueryError:
        return {}
    if set(cpus) != wanted or sum(cpus.values()) != num_cpus:
        return {}
    return cpus


def job_from(squeue_text: str, show_job: str, job_id: int) -> JobInfo:
    """A JobInfo from squeue's structured line and scontrol's per-node CPU lines."""
    fields = parse_squeue(squeue_text, job_id)
    nodes = fields["nodes"]
    cpus = cpus_per_node(show_job, nodes, fields["num_cpus"])
    num_tasks = fields["num_tasks"] or len(nodes)
    return JobInfo(job_id=job_id, uid=fields["uid"], gid=fields["gid"], nodes=tuple(nodes),
                   tasks_per_node=layout_tasks(cpus, nodes, num_tasks, fields["cpus_per_task"]),
                   batch_host=fields["batch_host"])


# job states in which a job holds no node and runs no script any more (COMPLETING is not
# one: its epilogs are still running)
ENDED_STATES = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
                          "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT"})


def parse_states(text: str, job_ids: set[int]) -> dict[int, str]:
    """{job: state} from `squeue -h -O JobID:|,State:|` lines, for the jobs asked about;
    SlurmQueryError for a line that is not one squeue writes."""
    states = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 3 or fields[2] or not fields[0].isdigit() or not re.fullmatch(r"[A-Z_]+", fields[1]):
            raise SlurmQueryError(f"squeue gave a line that is not 'job|state|': {line[:120]!r}")
        if int(fields[0]) in job_ids:
            states[int(fields[0])] = fields[1]
    return states


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
    fields = ",".join(f"{name}:|" for name in SQUEUE_FIELDS)
    squeue = _run(["squeue", "-h", "--states=all", "-j", str(job_id), "-O", fields])
    return job_from(squeue, _run(["scontrol", "show", "job", "-d", str(job_id)]), job_id)


def job_states(job_ids: list[int] | set[int]) -> dict[int, str]:
    """The state of each of these jobs that Slurm still knows ("RUNNING", "COMPLETED"...);
    a job missing from the answer is one Slurm has forgotten (ended longer ago than
    MinJobAge). SlurmQueryError when Slurm cannot say (then nobody may assume a job ended)."""
    asked = set(job_ids)
    if not asked:
        return {}
    pyslurm = _pyslurm()
    if pyslurm is not None:
        try:
            known = pyslurm.Jobs.load()
        except Exception as err:  # noqa: BLE001 - pyslurm raises its own types
            raise SlurmQueryError(f"pyslurm could not load the jobs: {err}") from None
        return {j: str(known[j].state).upper() for j in asked if j in known}
    try:
        out = _run(["squeue", "-h", "--states=all", "-j", ",".join(map(str, sorted(asked))), "-O", "JobID:|,State:|"])
    except SlurmQueryError as err:
        # asked about one job only, squeue loads just that one, and fails when it is gone
        if len(asked) == 1 and "Invalid job id specified" in str(err):
            return {}
        raise
    return parse_states(out, asked)


def node_addresses(nodes: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Each node's NodeAddr (the address Slurm reaches its slurmd at), in the given order."""
    if not nodes:
        return {}
    known = parse_show_nodes(_run(["scontrol", "show", "node", "-o", ",".join(nodes)]))
    missing = [n for n in nodes if n not in known]
    if missing:
        raise SlurmQueryError(f"scontrol show node did not list {', '.join(missing)}")
    return {n: known[n] for n in nodes}
