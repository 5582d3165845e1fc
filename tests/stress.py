"""A mix of image jobs submitted at once on the local cluster (the WLCG pattern: several
users' jobs sharing nodes, each in its own container), checked job by job, then the nodes
checked for leftovers. Used by tests/test_stress.py (3 nodes, 30 jobs, in CI) and by
`make stress` (python tests/stress.py: up to 200 jobs, for N = 3, 8, 16, 32 nodes, printing
the table; not in CI).

The mix, by job number i: users alternate (testuser, testuser2); three images in turn; every
4th job spans two nodes, every 8th all of them; every 3rd has a perNodeCache it writes and
reads; every 5th runs a step with another image (a step-level container); every 10th asks
for an image that does not exist in a step (its right error: one `srun: error: shifter:`
line); every 7th sleeps and is cancelled once running. While they run, the queue is sampled:
`shared` counts the nodes seen running both users' jobs at once, and each cancelled sleeper's
mount namespace is read from its process (each job its own container, none the host's).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import jobtools as jt  # noqa: E402
from conftest import localcluster, run_as  # noqa: E402

USERS = localcluster.TEST_USERS
IMAGES = [("slurm/app", "1", "slurm-app-1"), ("slurm/other", "2", "slurm-other-2"), ("slurm/third", "3", "slurm-third-3")]


@dataclass
class Job:
    number: int
    user: str
    image: tuple[str, str, str]
    nodes: int
    cache: bool
    step_image: tuple[str, str, str] | None
    bad_step: bool
    cancel: bool
    job_id: str = ""
    out: Path | None = None
    namespace: str = ""   # a sleeper's mount namespace, read from its process once running

    def script(self) -> str:
        repo, tag, _ = self.image
        lines = ["#!/bin/bash", f"#SBATCH -N {self.nodes} -n {self.nodes} -t 5", f"#SBATCH --image=docker:{repo}:{tag}"]
        if self.cache:
            lines.append("#SBATCH --volume=/x:/scratch:perNodeCache=size=4m,fs=ext4")
        if self.cancel:
            lines.append(f"srun -n1 shifter sleep {600 + self.number}")
            return "\n".join(lines) + "\n"
        lines.append("srun shifter cat /etc/app-release")
        if self.cache:
            lines.append("srun shifter sh -c 'echo cache-$SLURM_PROCID > /scratch/f && cat /scratch/f'")
        if self.step_image:
            lines.append(f"srun -n1 -N1 --image=docker:{self.step_image[0]}:{self.step_image[1]} shifter cat /etc/app-release")
        if self.bad_step:
            lines.append("srun -n1 -N1 --image=docker:slurm/absent:9 shifter true; echo bad=$?")
        lines.append("echo done")
        return "\n".join(lines) + "\n"

    def expected(self) -> list[str]:
        if self.cancel:
            return []
        out = [self.image[2]] * self.nodes
        if self.cache:
            out += [f"cache-{i}" for i in range(self.nodes)]
        if self.step_image:
            out.append(self.step_image[2])
        if self.bad_step:
            out.append("bad=1")
        return sorted(out + ["done"])


def mix(count: int, nodes: int) -> list[Job]:
    jobs = []
    for i in range(count):
        width = nodes if i % 8 == 7 else 2 if i % 4 == 3 else 1
        jobs.append(Job(number=i, user=USERS[i % 2], image=IMAGES[i % 3], nodes=min(width, nodes),
                        cache=i % 3 == 0, step_image=IMAGES[(i + 1) % 3] if i % 5 == 4 else None,
                        bad_step=i % 10 == 9, cancel=i % 7 == 6))
    return jobs


@dataclass
class Report:
    nodes: int
    jobs: int = 0
    expected_failures: int = 0
    unexpected: list[str] = field(default_factory=list)
    faults: int = 0
    leaks: dict = field(default_factory=dict)
    build_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    shared: set[str] = field(default_factory=set)   # nodes seen running both users' jobs at once
    wide_start_s: float = 0.0
    wide_step_s: float = 0.0
    wide_build_ms: list[float] = field(default_factory=list)

    def row(self) -> str:
        build = (f"{statistics.median(self.build_ms):8.0f} {max(self.build_ms):8.0f}" if self.build_ms
                 else f"{'-':>8} {'-':>8}")
        leaks = sum(len(v) for v in self.leaks.values())
        wide = (f"{statistics.median(self.wide_build_ms):7.0f} {max(self.wide_build_ms):7.0f}" if self.wide_build_ms
                else f"{'-':>7} {'-':>7}")
        return (f"{self.nodes:5d} {self.jobs:5d} {self.expected_failures:9d} {len(self.unexpected):10d} "
                f"{self.faults:6d} {leaks:5d} {len(self.shared):6d} {build} {self.wide_start_s:10.2f} {self.wide_step_s:9.2f} {wide} {self.seconds:7.0f}")


HEADER = (f"{'nodes':>5} {'jobs':>5} {'exp.fail':>9} {'unexpected':>10} {'faults':>6} {'leaks':>5} {'shared':>6} "
          f"{'build_md':>8} {'build_mx':>8} {'wide_start':>10} {'wide_step':>9} {'wbld_md':>7} {'wbld_mx':>7} {'secs':>7}   (build: the prolog's "
          "build ms per node, median and max; shared: nodes seen running both users' jobs at once; wide: an image job on every node, s from submission to its "
          "script's start, s of its srun shifter true, its prolog's build ms per node)")


def push_images() -> None:
    from test_slurm_jobs import _push_and_pull
    for repo, tag, release in IMAGES:
        _push_and_pull(repo, tag, ["PATH=/usr/bin:/bin"], {"etc/app-release": f"{release}\n".encode()})


def submit(job: Job) -> None:
    path = jt.write_job(job.user, f"stress-{job.number}.sl", job.script())
    result = run_as(job.user, ["sbatch", "--parsable", "-o", f"stress-{job.number}-%j.out", str(path)],
                    cwd=str(path.parent))
    assert result.returncode == 0, result.stderr
    job.job_id = result.stdout.strip()
    job.out = path.parent / f"stress-{job.number}-{job.job_id}.out"


def running_sleeps() -> dict[tuple[int, int], str]:
    """(uid, job number) -> mount namespace of each sleeper's `sleep` running (the process
    itself, in its container: not the srun or shifter that asked for it)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text() == "sleep\n":
                args = (entry / "cmdline").read_bytes().split(b"\0")
                if len(args) >= 2 and args[1].isdigit() and 600 <= int(args[1]) < 1600:
                    found[(jt.proc_uid(entry), int(args[1]) - 600)] = os.readlink(entry / "ns/mnt")
        except OSError:
            continue
    return found


def node_names(nodelist: str) -> list[str]:
    """Slurm's compact node list (n[1-3,7],n9) as names."""
    names = []
    for prefix, ranges, single in re.findall(r"([a-z]+)\[([\d,-]+)\]|([a-z]+\d+)", nodelist):
        if single:
            names.append(single)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            names += [f"{prefix}{i}" for i in range(int(low), int(high or low) + 1)]
    return names


def sample_queue(jobs: list[Job], report: Report) -> set[str] | None:
    """Our job ids still queued (None when squeue could not answer: slurmctld busy under the
    load, not an empty queue); notes the nodes running jobs of both users at this moment."""
    ours = {j.job_id for j in jobs}
    result = localcluster.slurm("squeue", "-h", "-o", "%i|%u|%T|%N", check=False)
    if result.returncode != 0:
        return None
    queued, users = set(), {}
    for line in result.stdout.splitlines():
        job_id, user, state, nodelist = line.split("|")
        if job_id not in ours:
            continue
        queued.add(job_id)
        if state == "RUNNING":
            for node in node_names(nodelist):
                users.setdefault(node, set()).add(user)
    report.shared |= {node for node, who in users.items() if len(who) > 1}
    return queued


def prolog_builds(job_ids: set[int]) -> list[float]:
    """The prolog's `build` event durations (ms) of these jobs, from every node's slurmd log."""
    found = []
    for log in (localcluster.STATE / "log").glob("slurmd-n*.log"):
        for line in log.read_text(errors="replace").splitlines():
            start = line.find('{"')
            if start < 0 or '"event": "build"' not in line and '"event":"build"' not in line:
                continue
            try:
                event = json.loads(line[start:])
            except ValueError:
                continue
            if event.get("event") == "build" and event.get("job") in job_ids and event.get("ok"):
                found.append(float(event["ms"]))
    return found


def wide_job_seconds(nodes: int) -> tuple[float, float, list[float]]:
    """(seconds from submission to the batch script's start, seconds of its `srun shifter
    true` step, its prolog's build ms on each node) of a job on every node (sbatch --wait
    itself polls too coarsely to time)."""
    job = jt.write_job(USERS[0], "stress-wide.sl", f"#!/bin/bash\n#SBATCH -N {nodes} -n {nodes} -t 5\n"
                       f"#SBATCH --image=docker:{IMAGES[0][0]}:{IMAGES[0][1]}\n"
                       "echo start=$(date +%s.%N)\nsrun shifter true\necho end=$(date +%s.%N)\n")
    submitted = time.time()
    job_id, output, _ = jt.sbatch_wait(USERS[0], job)
    jt.wait_gone(job_id)
    start, end = float(jt.field("start", output)), float(jt.field("end", output))
    return start - submitted, end - start, prolog_builds({int(job_id)})


def run(count: int, nodes: int, timeout: float = 900) -> Report:
    """Submit the mix at once, cancel the sleepers once running, wait, check every job's
    output and the nodes. The cluster must be up with `nodes` nodes and the images pulled."""
    report = Report(nodes=nodes)
    start = time.monotonic()
    before = jt.leftovers()   # another session's (e.g. a fault test's) are not this run's
    if any(before.values()):
        print(f"      left before the run (not counted): {before}", file=sys.stderr)
    jobs = mix(count, nodes)
    # at once, as users do: one sbatch after another took ~300 s under this load, longer than
    # the first sleepers' time limit, so they ended before the cancelling below began
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(submit, jobs))
    deadline = time.monotonic() + timeout
    sleepers = [j for j in jobs if j.cancel]   # each cancelled once its sleep runs, in any order
    host = os.readlink("/proc/self/ns/mnt")
    while sleepers and time.monotonic() < deadline:
        queued, running = sample_queue(jobs, report), running_sleeps()
        if queued is None:
            time.sleep(1)
            continue
        # the sleeps running at this moment: each in a container of its own, none the host's
        # (namespace numbers are reused once a container is gone, so only at one moment)
        seen = [ns for (uid, number), ns in running.items()
                if number < len(jobs) and jobs[number].cancel and pwd.getpwnam(jobs[number].user).pw_uid == uid]
        if host in seen or len(set(seen)) != len(seen):
            report.unexpected.append(f"sleeps running together not each in a container of its own "
                                     f"(host {host}): {seen}")
        for job in list(sleepers):
            if namespace := running.get((pwd.getpwnam(job.user).pw_uid, job.number), ""):
                job.namespace = namespace
                run_as(job.user, ["scancel", job.job_id])
                report.faults += 1
                sleepers.remove(job)
            elif job.job_id not in queued:
                report.unexpected.append(f"job {job.number}: ended before it could be cancelled")
                sleepers.remove(job)
        time.sleep(0.3)
    for job in sleepers:
        report.unexpected.append(f"job {job.number}: its sleep never ran in {timeout:.0f} s")
    while (left := sample_queue(jobs, report)) != set() and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        report.unexpected.append(f"jobs still queued after {timeout:.0f} s: {sorted(left, key=int)}")
    for job in jobs:
        report.jobs += 1
        text = job.out.read_text() if job.out and job.out.exists() else ""
        lines = [l for l in text.splitlines() if "warning:" not in l]   # the one-sshd-per-port note
        if job.cancel:
            report.expected_failures += 1
            if "slurm-" in text:
                report.unexpected.append(f"job {job.number}: cancelled, yet ran a step: {text!r}")
            continue
        errors = [l for l in lines if l.startswith("srun: error:")]
        got = sorted(l for l in lines if not l.startswith("srun:"))
        if job.bad_step:
            report.expected_failures += 1
            if not any(re.search(r"srun: error: shifter: .*slurm/absent:9", e) for e in errors):
                report.unexpected.append(f"job {job.number}: no one-line error naming the missing image: {errors}")
            # Slurm's own two lines after a plugin's error: "spank: required plugin ... failed",
            # "Plugin stack post-option processing failed."
            errors = [e for e in errors if not re.search(r"slurm/absent|spank: required plugin|Plugin stack", e)]
        if got != job.expected() or errors:
            report.unexpected.append(f"job {job.number} ({job.job_id}): expected {job.expected()}, got {lines}")
    try:
        jt.assert_clean(timeout=60, ignore=before)
    except AssertionError:
        report.leaks = {kind: [x for x in found if x not in before[kind]] for kind, found in jt.leftovers().items()}
    report.build_ms = prolog_builds({int(j.job_id) for j in jobs})
    report.seconds = time.monotonic() - start
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="`make stress`: the job mix at one node count (cluster "
                                     "brought up with $SHIFTER_CLUSTER_NODES nodes and taken down after)")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--header", action="store_true", help="print the table's header first")
    args = parser.parse_args(argv)
    nodes = len(localcluster.NODES)
    if args.header:
        print(HEADER, flush=True)
    os.environ["CI"] = "1"
    localcluster.up()
    try:
        push_images()
        report = run(args.jobs, nodes, timeout=1200)
        report.wide_start_s, report.wide_step_s, report.wide_build_ms = wide_job_seconds(nodes)
    finally:
        localcluster.down()
    print(report.row(), flush=True)
    for line in report.unexpected[:20]:
        print(f"      unexpected: {line}", file=sys.stderr)
    if report.leaks:
        print(f"      leaks: {report.leaks}", file=sys.stderr)
    return 1 if report.unexpected or report.leaks else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
