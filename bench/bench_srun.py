#!/usr/bin/env python3
"""What the SPANK plugin costs a job step, on the local cluster (run as root; the cluster up;
it pushes and pulls a small busybox image, bench/srun:1, unless --image names another).

A. `srun -n1 /bin/true` with the plugin loaded but no image, vs no plugin at all
   (plugstack.conf toggled between runs; it is restored at the end). Two ways: a new
   allocation per srun (prolog included) and a step inside an existing allocation.
   Target: overhead <= 1 ms.
B. `srun -n1 shifter /bin/true` in an image job vs `srun -n1 /bin/true` in a plain job,
   both steps of allocations that are already running. Target: overhead <= 10 ms.
   Beside it, the same shifter step with the plugin's Python started with `site` (what
   starting without it buys), and where the step's milliseconds go (`srun shifter -v`).

Runs are interleaved (A, B, A, B...) and medians compared, because the machine is shared.
usage: bench_srun.py [-n 30] [--image docker:bench/srun:1] [--step-only]
"""

from __future__ import annotations

import argparse
import os
import pwd
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "tools"), str(Path(__file__).resolve().parent)]
import localcluster  # noqa: E402
from results import Results, json_arg  # noqa: E402

USER = "testuser"


def as_user(argv: list[str], env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    entry = pwd.getpwnam(USER)
    base = {"PATH": "/usr/bin:/bin", "HOME": entry.pw_dir, "USER": USER,
            "SLURM_CONF": str(localcluster.STATE / "etc/slurm.conf")}
    result = subprocess.run(["runuser", "-u", USER, "--", "env", "-i",
                             *[f"{k}={v}" for k, v in {**base, **(env or {})}.items()], *argv],
                            capture_output=True, text=True, cwd="/tmp")
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def timed(argv: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    as_user(argv, env)
    return (time.perf_counter() - start) * 1000


def allocation(*options: str) -> tuple[str, dict]:
    """A running job that sleeps; returns its id and its batch environment (what an srun
    inside the job script would see)."""
    envfile = f"/tmp/bench-env-{os.getpid()}-{len(options)}"
    out = as_user(["sbatch", "--parsable", "-N1", "-o", "/dev/null", *options, "--wrap",
                   f"env -0 > {envfile}.tmp && mv {envfile}.tmp {envfile}; sleep 3600"]).stdout.strip()
    deadline = time.monotonic() + 60
    while not os.path.exists(envfile):
        if time.monotonic() > deadline:
            raise SystemExit(f"job {out} did not start")
        time.sleep(0.1)
    env = dict(item.split("=", 1) for item in Path(envfile).read_text().split("\0") if "=" in item)
    os.unlink(envfile)
    keep = {k: v for k, v in env.items() if k.startswith(("SLURM_", "SHIFTER_"))}
    return out, keep


def push_and_pull(repo: str, tag: str) -> None:
    """A small busybox image in the local registry, pulled by the gateway (as testuser)."""
    import shutil
    import tempfile

    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent.parent / "tests")]
    import imagebuilder as ib
    import images

    root = Path(tempfile.mkdtemp())
    try:
        images.make_root(root)
        image = ib.Image([ib.layer_from_dir(root)], config={"Env": ["PATH=/usr/bin:/bin"]})
    finally:
        shutil.rmtree(root)
    ib.push(localcluster.REGISTRY, repo, tag, image)
    as_user([str(localcluster.PREFIX / "bin/shifterimg"), "pull", f"{repo}:{tag}"])


def median(values: list[float]) -> float:
    return statistics.median(values)


RESULTS = Results("bench_srun", "python bench/bench_srun.py -n N (root, cluster up)",
                  "steps of running allocations on the local cluster")


def report(title: str, base: list[float], other: list[float], target: float, peer: str = "plain srun") -> None:
    diff = median(other) - median(base)
    RESULTS.ratio(title.split(". ", 1)[-1], median(other), median(base), peer,
                  target=f"<= {1 + target / median(base):.3f}")
    RESULTS.data["ratios"][-1]["overhead_ms"] = diff
    RESULTS.data["ratios"][-1]["overhead_target_ms"] = target
    verdict = "meets" if diff <= target else "MISSES"
    print(f"{title}\n  baseline median {median(base):7.1f} ms   with plugin {median(other):7.1f} ms   "
          f"overhead {diff:+6.1f} ms   ratio {median(other) / median(base):.3f}   ({verdict} target <= {target} ms)")


STEP_MODULES = ["shifter_wlm.dispatch", "shifter_wlm.task", "shifter_wlm.jobs", "shifter_site.configcache",
                "runtime.cli", "runtime.enter", "runtime.spec", "runtime.volumes", "runtime.frozen", "runtime.syscalls"]


def breakdown(image_env: dict, n: int, overhead: float) -> None:
    """Where the step's extra milliseconds go: the step path's own phases (the -v line of
    shifter_wlm/task.py, medians over n steps; its first, "python", runs from the plugin's
    start of the interpreter to the first hook, imports included), and the rest (Slurm's
    and the SPANK shim's work around the hooks: loading the plugin's Python part, the task's
    fork). A plugin without the "python" phase (older builds): the interpreter's start and
    the step path's imports are estimated in a fresh process each, as before."""
    phases: dict[str, list[float]] = {}
    for _ in range(n):
        err = as_user(["srun", "-n1", "shifter", "-v", "/bin/true"], image_env).stderr
        line = next((l for l in err.splitlines() if "step path (ms):" in l), "")
        for item in line.split("step path (ms):", 1)[-1].split(","):
            if item.strip():
                name, value = item.split()
                phases.setdefault(name, []).append(float(value))
    med = {k: median(v) for k, v in phases.items()}
    between = med.pop("task", 0.0)  # slurmstepd's own work between the two hooks: a plain step has it too
    extra: dict[str, float] = {}
    if "python" not in med:
        python = str(localcluster.PREFIX / "bin/python")
        runs: tuple[list[float], list[float]] = ([], [])
        path = f"import sys; sys.path.append({str(localcluster.PREFIX / 'lib/python3.11/site-packages')!r})"
        code = f"{path}; import " + ", ".join(STEP_MODULES)
        for _ in range(n):
            # -I -S: isolated and without site, as the embedded interpreter starts (pyentry.c)
            for i, argv in enumerate(([python, "-I", "-S", "-c", path], [python, "-I", "-S", "-c", code])):
                t = time.perf_counter()
                subprocess.run(argv, check=True, cwd="/")
                runs[i].append((time.perf_counter() - t) * 1000)
        extra = {"imports": median(runs[1]) - median(runs[0]), "interpreter start": median(runs[0])}
    own = sum(med.values())
    rest = overhead - own - sum(extra.values())
    print(f"   where the {overhead:+.1f} ms go (medians):")
    for name, value in med.items():
        print(f"     step path, {name:12} {value:6.2f} ms")
    print(f"     step path in all       {own:6.2f} ms  (slurmstepd between the hooks, not counted: {between:.2f} ms)")
    for name, value in extra.items():
        print(f"     {name:22} ~{value:5.1f} ms  (estimated in a fresh process: python -I -S)")
    print(f"     the rest               {rest:6.1f} ms  (loading the plugin's Python part, Slurm's hook calls, "
          "the task's fork; noise)")
    RESULTS.series("step_phases", phase=[*med, *extra, "rest"], ms=[*med.values(), *extra.values(), rest])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=30)
    parser.add_argument("--image", default="docker:bench/srun:1",
                        help="the image job's image (default: a busybox image this bench pushes and pulls)")
    parser.add_argument("--versus-plugin", metavar="DIR",
                        help="another build of the plugin (DIR/shifter_spank.so and shifter_spank_py.so, e.g. "
                             "`python -m spank.build DIR` at an older commit): its shifter step is interleaved "
                             "with ours (what a change to the plugin bought, in the same run)")
    parser.add_argument("--step-only", action="store_true",
                        help="only B (the shifter step and where its milliseconds go): a shorter run")
    json_arg(parser)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (toggles plugstack.conf, submits as testuser)", file=sys.stderr)
        return 2
    if args.image == "docker:bench/srun:1":
        push_and_pull("bench/srun", "1")
    plugstack = localcluster.STATE / "etc/plugstack.conf"
    ours = plugstack.read_text()
    empty = "# bench_srun.py: no plugin\n"
    image_job = plain_job = None
    try:
        # ---- A: plugin loaded, no image, vs no plugin
        plain_job, plain_env = allocation()
        new_with, new_without, step_with, step_without = [], [], [], []
        for _ in range(0 if args.step_only else args.n):
            for text, new_list, step_list in ((ours, new_with, step_with), (empty, new_without, step_without)):
                plugstack.write_text(text)
                new_list.append(timed(["srun", "-n1", "/bin/true"]))
                step_list.append(timed(["srun", "-n1", "/bin/true"], plain_env))
        plugstack.write_text(ours)
        if not args.step_only:
            report("A1. srun -n1 /bin/true, new allocation each time: plugin loaded (no image) vs no plugin",
                   new_without, new_with, 1.0, "srun, no plugin")
            report("A2. srun -n1 /bin/true, step in a running job: plugin loaded (no image) vs no plugin",
                   step_without, step_with, 1.0, "srun, no plugin")

        # ---- B: shifter step in an image job vs plain step in a plain job
        image_job, image_env = allocation(f"--image={args.image}")
        # the same step with the plugin's Python started with `site` (python= naming the venv's
        # interpreter under another name than the default: spank/pyentry.c), what -S bought
        with_site = ours.replace("shifter_spank.so", f"shifter_spank.so python={localcluster.PREFIX / 'bin/python'}", 1)
        other = (ours.replace(str(localcluster.PREFIX / "lib/shifter_spank.so"),
                              str(Path(args.versus_plugin).resolve() / "shifter_spank.so"), 1)
                 if args.versus_plugin else None)
        shifter_steps, plain_steps, site_steps, other_steps = [], [], [], []
        for _ in range(args.n):
            shifter_steps.append(timed(["srun", "-n1", "shifter", "/bin/true"], image_env))
            plain_steps.append(timed(["srun", "-n1", "/bin/true"], plain_env))
            plugstack.write_text(with_site)
            site_steps.append(timed(["srun", "-n1", "shifter", "/bin/true"], image_env))
            if other:
                plugstack.write_text(other)
                other_steps.append(timed(["srun", "-n1", "shifter", "/bin/true"], image_env))
            plugstack.write_text(ours)
        report(f"B. srun -n1 shifter /bin/true in an image job ({args.image}) vs srun -n1 /bin/true in a plain job",
               plain_steps, shifter_steps, 10.0)
        diff = median(site_steps) - median(shifter_steps)
        RESULTS.ratio("srun shifter step, plugin's Python with site vs without", median(site_steps),
                      median(shifter_steps), "srun shifter (no site)")
        print(f"B'. the same shifter step with the plugin's Python started with site: median {median(site_steps):.1f} ms; "
              f"starting without it bought {diff:+.1f} ms ({median(site_steps) / median(shifter_steps):.3f}x)")
        if other:
            RESULTS.ratio("srun shifter step, this plugin vs another build", median(shifter_steps),
                          median(other_steps), f"srun shifter ({args.versus_plugin})")
            print(f"B''. the same shifter step with the plugin in {args.versus_plugin}: median "
                  f"{median(other_steps):.1f} ms (overhead {median(other_steps) - median(plain_steps):+.1f} ms); "
                  f"this one {median(shifter_steps) - median(other_steps):+.1f} ms "
                  f"({median(shifter_steps) / median(other_steps):.3f}x)")
        breakdown(image_env, args.n, median(shifter_steps) - median(plain_steps))
        RESULTS.write(args.json)
    finally:
        plugstack.write_text(ours)
        for job in (image_job, plain_job):
            if job:
                as_user(["scancel", job], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
