"""Submitting real jobs as the test users, and checking what they leave on the nodes."""

from __future__ import annotations

import os
import pwd
import re
import secrets
import subprocess
import time
from pathlib import Path

from conftest import localcluster, run_as


def home(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def write_job(user: str, name: str, body: str) -> Path:
    """A job script in the user's home, owned by the user."""
    entry = pwd.getpwnam(user)
    job = Path(entry.pw_dir) / name
    job.write_text(body)
    os.chown(job, entry.pw_uid, entry.pw_gid)
    return job


def sbatch_wait(user: str, job: Path, *args: str, check: bool = True) -> tuple[str, str, subprocess.CompletedProcess]:
    """Submit and wait; (job id, output, the sbatch result)."""
    result = run_as(user, ["sbatch", "--parsable", "--wait", "-o", f"{job.stem}-%j.out", *args, str(job)],
                    cwd=job.parent, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().split(";")[0]
    out = job.parent / f"{job.stem}-{job_id}.out"
    return job_id, out.read_text() if job_id and out.exists() else "", result


def refused_name() -> str:
    """A job name no other test's job has, for a submission that must be refused."""
    return f"refused-{secrets.token_hex(4)}"


def assert_never_queued(name: str) -> None:
    """No job called `name` exists in any state (pending, running, or recently ended).

    Checked by name, not by comparing the whole queue: another test's job may be
    completing while a refusal is tested."""
    out = localcluster.slurm("squeue", "-h", "--states=all", "-n", name, "-o", "%i %T").stdout.strip()
    assert out == "", f"a refused submission was queued: {out}"


def wait_gone(job_id: str, timeout: float = 60) -> None:
    """Until Slurm has finished the job everywhere (epilogs included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = localcluster.slurm("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout.strip()
        if not out:
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still in the queue: {out}")


def job_id_by_name(user: str, name: str) -> str:
    """The id of `user`'s one queued or running job called `name` (a script's file name)."""
    out = localcluster.slurm("squeue", "-h", "-u", user, "-n", name, "-o", "%i").stdout.split()
    assert len(out) == 1, f"{user} has {len(out)} jobs named {name}: {out}"
    return out[0]


def sshd_port(job_id: int | str) -> int:
    """The port of the job's sshd, as the local cluster's site config makes it."""
    import yaml

    sshd = yaml.safe_load((localcluster.STATE / "etc/shifter.yaml").read_text())["sshd"]
    return sshd["port"] + int(job_id) % sshd.get("port_count", 1000)


def run_dir() -> Path:
    return localcluster.STATE / "run/shifter"


def leftovers() -> dict:
    """What image jobs may leave on the nodes: container mounts, loop devices, run-dir state
    (job records, namespace pins), perNodeCache backing files, processes of the test users."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if "squashfs" in line or str(run_dir()) in line.split()[4]]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.strip().splitlines()
    state = []
    if run_dir().exists():
        for node in sorted(run_dir().iterdir()):
            for entry in sorted(node.iterdir()):
                if entry.name == "jobs":
                    state += [str(p) for p in entry.iterdir()]
                else:
                    state.append(str(entry))
    users = {pwd.getpwnam(u).pw_uid for u in localcluster.TEST_USERS}
    procs = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if proc_uid(entry) in users and not _command_of_a_login(int(entry.name)):
                    procs.append(f"{entry.name} {(entry / 'comm').read_text().strip()}")
            except OSError:
                continue
    cache = localcluster.STATE / "cache"  # per_node_cache.dir: a backing file lives only until its loop holds it
    caches = sorted(str(p) for p in cache.iterdir()) if cache.is_dir() else []
    return {"mounts": mounts, "loops": loops, "state": state, "cache": caches, "processes": procs}


def proc_uid(entry: Path) -> int:
    """A process's real uid, from its status: not the owner of /proc/<pid>, which is root for
    a process that is not dumpable (the runtime keeps some so across its uid change)."""
    for line in (entry / "status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise OSError(f"{entry}: no Uid line")


def _command_of_a_login(pid: int) -> bool:
    """A command someone runs as a test user with runuser/su, still running, outside any job
    (e.g. another session's benchmark on this shared host): not something a job left. A job's
    process descends from slurmstepd; one a job leaked is orphaned (its parent init)."""
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if comm.startswith("slurm"):
            return False
        if comm in ("runuser", "su", "sudo"):
            return True
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
    return False


def assert_clean(timeout: float = 20, ignore: dict | None = None) -> None:
    """Nothing left (but what `ignore` lists: there before); epilogs finish shortly after
    sbatch --wait returns, so allow a moment."""
    def new() -> dict:
        return {kind: [x for x in found if x not in (ignore or {}).get(kind, [])] for kind, found in leftovers().items()}

    deadline = time.monotonic() + timeout
    left = new()
    while any(left.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
        left = new()
    assert not any(left.values()), left


def lines_with(prefix: str, output: str) -> list[str]:
    return sorted(line for line in output.splitlines() if line.startswith(prefix))


def field(name: str, line: str) -> str:
    match = re.search(rf"\b{name}=(\S*)", line)
    return match.group(1) if match else ""


def node_events(node: str) -> list[dict]:
    """The structured events (one JSON object a line) in a node's slurmd log."""
    import json

    events = []
    for line in (localcluster.STATE / f"log/slurmd-{node}.log").read_text().splitlines():
        start = line.find("{")
        if start >= 0 and '"event"' in line:
            try:
                events.append(json.loads(line[start:]))
            except ValueError:
                continue
    return events


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until a held job (`sbatch --wait` in `proc`) makes `path`; fail if the job ends
    first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the job ended before {path} appeared: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def release_held_job(proc: subprocess.Popen, done: Path, timeout: float = 180) -> None:
    """Let a held job end (it waits for `done`) and wait for its `sbatch --wait`; kill it and
    fail if it does not end in time."""
    done.touch()
    if proc.poll() is None:
        try:
            proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
