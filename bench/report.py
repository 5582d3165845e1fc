#!/opt/shifter/bin/python
"""bench/report.md and its plots from the JSON the benchmarks wrote (`--json`, `make bench`).

    python bench/report.py bench/out bench/report.md      (plots: bench/plots/*.png)

Every figure in the report is a ratio of two things measured side by side in one run on the
machine named in its header, with the command that reproduces it; absolute times are shown
for scale only. RESULTS_DIR/runs/*.json (bench/timed.py, `make bench`) give the run's span and
each benchmark's duration; every bench/bench_*.py without results gets a line saying why.
Exits 1 when a benchmark of the run failed (after writing the report).
"""

from __future__ import annotations

import json
import math
import platform
import sys
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLOTS = HERE / "plots"  # beside the report: main() sets it from the report's path


# What the benchmarks themselves show about their misses (kept with the code they measure)
WHY = {
    "bench_launch": "A rootless launch is a Python process: its interpreter start alone is about a fifth "
                    "of ch-run's whole launch. What the trims bought is measured beside it (python -S, "
                    "squashfuse_ll, reading the command before exec). No C front end, by design.",
    "bench_srun": "See the step table below: the plugin's start of the embedded interpreter and the "
                  "step path's imports (its \"python\" and \"imports\" phases) are most of it, and the "
                  "floor section shows how much of that is CPython's own start before any of our code. "
                  "The no-image rows (Python never starts there) are within about two milliseconds either "
                  "way (noise).",
    "bench_pull": "A pull here is CPU-bound on 2 cores. CPU accounting of one zstd pull of the Debian "
                  "image, measured separately (getrusage and /proc, medians of 3): tar2sqfs 0.81 CPU-s, the "
                  "gateway's process 0.60 (download into the layer cache 0.14, sha256 included; merge ~0.45, "
                  "of it zstd decompression 0.13 and the pipe to tar2sqfs ~0.08), the registry 0.05. The "
                  "floor: zstdcat 0.14 + tar2sqfs 0.81 CPU-s. 1.1x the floor would need the whole pull in "
                  "about 1.26 CPU-s even with both cores busy all the time, which leaves the merge about "
                  "7 us per entry (6,767 entries) to parse, check and write each one; reading a header "
                  "alone takes 13 us per entry in tarfile with the fast header code (imagegw/tarheaders.py). "
                  "With gzip layers the floor pays gzip decompression too, and ours is below it. Against "
                  "skopeo+umoci+mksquashfs, umoci cannot unpack zstd layers, so only gzip is compared; "
                  "that baseline varies most from run to run (10 to 14 s on this machine).",
    "bench_bigimage": "Small images pay the fixed start of a conversion (a Python process, tar2sqfs); "
                      "the ratios improve with size.",
}


def load(directory: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def load_runs(directory: Path) -> dict[str, dict]:
    """How each benchmark's run went (bench/timed.py, `make bench`): command, duration, exit."""
    return {r["bench"]: r for r in load(directory / "runs")} if (directory / "runs").is_dir() else {}


def expected() -> list[str]:
    """Every benchmark in bench/: the report names each one, results or not."""
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def not_run(bench: str, res: dict | None, run: dict | None, directory: Path) -> str | None:
    """Why `bench` has no ratios in the report, in one line; None when it has them."""
    if res is not None and res.get("skipped"):
        return f"not run: {res['skipped']}"
    if res is not None and (res["ratios"] or res.get("series")):
        return None
    if run is not None and run["rc"] != 0:
        last = run["tail"][-1] if run["tail"] else "no output"
        return f"failed (exit {run['rc']} after {run['seconds']:.0f} s): {last}"
    if res is not None:
        return "ran but recorded no ratio"
    if run is not None:
        return f"ran (exit 0 in {run['seconds']:.0f} s) but wrote no JSON to {directory}"
    return f"not run: no results in {directory} (`make bench` runs it)"


def fmt(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g} s" if unit == "s" else f"{value:.1f} {unit}"


def table(results: list[dict], missing: dict[str, str]) -> list[str]:
    lines = ["| benchmark | what (ours vs peer) | ours | peer | ratio ours/peer | target | met |",
             "|---|---|---|---|---|---|---|"]
    for bench, why in missing.items():
        lines.append(f"| {bench} | **{why.replace('|', '/')}** | | | | | |")
    for res in results:
        for r in res["ratios"]:
            met = {True: "yes", False: "**no**", None: ""}[r["met"]]
            extra = f" ({r['overhead_ms']:+.1f} ms)" if "overhead_ms" in r else ""
            lines.append(f"| {res['bench']} | {r['what']} | {fmt(r['ours'], r['unit'])} | "
                         f"{fmt(r['peer'], r['unit'])} ({r['peer_name']}) | **{r['ratio']:.2f}**{extra} | "
                         f"{r['target']} | {met} |")
    return lines


def plot_ratios(results: list[dict], plt) -> str:
    rows = [(f"{res['bench']}: {r['what']}", r["ratio"], r["target"], r["met"]) for res in results
            for r in res["ratios"]]
    fig, ax = plt.subplots(figsize=(15, 0.32 * len(rows) + 1.6))
    ys = range(len(rows))
    colors = {True: "#55a868", False: "#dd8452", None: "#8c8c8c"}
    ax.barh(list(ys), [r[1] for r in rows], color=[colors[r[3]] for r in rows])
    for y, (_, value, target, _met) in zip(ys, rows):
        ax.text(value, y, f" {value:.2f}", va="center", fontsize=8)
        if target:
            limit = float(target.split()[1])
            ax.plot([limit, limit], [y - 0.4, y + 0.4], color="black", linewidth=2)
    ax.axvline(1.0, color="grey", linestyle=":")
    ax.set_yticks(list(ys), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("ours / peer, same run (log scale; < 1: ours is faster)\n"
                  "black tick: target; green: target met, orange: missed, grey: no target")
    ax.set_title("Each benchmark: ours against its peer,\nmeasured side by side")
    ax.set_xlim(right=max(r[1] for r in rows) * 3)  # room for the largest ratio's label
    fig.tight_layout()
    path = PLOTS / "ratios.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_sharedfs(res: dict, plt) -> str:
    s = res["series"]["sharedfs"]
    delays = sorted(set(s["delay_ms"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for delay, style in zip(delays, ("-", "--", ":")):
        idx = [i for i, d in enumerate(s["delay_ms"]) if d == delay]
        nodes = [s["nodes"][i] for i in idx]
        left.plot(nodes, [s["dir_s"][i] for i in idx], "o" + style, color="#dd8452", label=f"directory, {delay} ms/op")
        left.plot(nodes, [s["image_s"][i] for i in idx], "s" + style, color="#4c72b0", label=f"image, {delay} ms/op")
        right.plot(nodes, [s["dir_meta_per_node"][i] for i in idx], "o" + style, color="#dd8452",
                   label=f"directory, {delay} ms/op")
        right.plot(nodes, [s["image_meta_per_node"][i] for i in idx], "s" + style, color="#4c72b0",
                   label=f"image, {delay} ms/op")
    left.axhline(s["local_s"][0], color="grey", linestyle=":", label="local disk, 1 node")
    left.set_yscale("log")
    left.set_xlabel("concurrent nodes")
    left.set_ylabel("slowest node: start to stack imported (s, log)")
    left.set_title("Python stack start-up on a shared filesystem")
    left.legend(fontsize=7)
    right.set_yscale("log")
    right.set_xlabel("concurrent nodes")
    right.set_ylabel("metadata operations per node on the shared fs")
    right.set_title("What each node asks the shared filesystem")
    right.legend(fontsize=7)
    from matplotlib.ticker import FuncFormatter
    for ax in (left, right):
        ax.set_xticks(sorted(set(s["nodes"])))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    fig.tight_layout()
    path = PLOTS / "sharedfs.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_sizes(res: dict, plt) -> str:
    s = res["series"]["sizes"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label, color in (("ours_s", "ours (merge + tar2sqfs)", "#4c72b0"), ("floor_s", "floor (zcat + tar2sqfs)", "grey"),
                              ("classic_s", "umoci unpack + mksquashfs", "#dd8452")):
        if key in s:
            left.plot(s["size_mib"], s[key], "o-", color=color, label=label)
    left.set_xlabel("image size (MiB, uncompressed)")
    left.set_ylabel("seconds")
    left.set_title("Conversion time vs image size")
    left.legend(fontsize=8)
    right.plot(s["size_mib"], s["ours_rss_mib"], "o-", color="#4c72b0", label="ours, peak RSS (pipeline)")
    right.axhline(256, color="black", linestyle=":", label="256 MiB target")
    right.set_xlabel("image size (MiB, uncompressed)")
    right.set_ylabel("peak RSS (MiB)")
    right.set_title("Memory vs image size")
    right.legend(fontsize=8)
    fig.tight_layout()
    path = PLOTS / "sizes.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


PROLOG_STEPS = ("load_config", "job_info", "node_addresses", "spec", "use_record", "build")


def plot_prolog_scale(res: dict, plt) -> str:
    s = res["series"]["prolog_scale"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [str(n) for n in s["nodes"]]
    bottom = [0.0] * len(labels)
    for step in PROLOG_STEPS:
        values = s.get(f"{step}_ms", [0.0] * len(labels))
        left.bar(labels, values, bottom=bottom, label=step)
        bottom = [b + v for b, v in zip(bottom, values)]
    left.plot(labels, s["prolog_ms"], "ko-", label="prolog per node (median)")
    left.set_xlabel("nodes in the job (slurmd on one 2-core VM)")
    left.set_ylabel("ms per node")
    left.set_title("Prolog time per node vs node count (its steps, medians)")
    left.legend(fontsize=7)
    right.plot(s["nodes"], s["start_s"], "o-", color="#4c72b0")
    right.set_xlabel("nodes in the job")
    right.set_ylabel("seconds")
    right.set_title("An all-node image job: submission to script start")
    right.set_xticks(s["nodes"])
    fig.tight_layout()
    path = PLOTS / "prolog_scale.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def mpi_section(res: dict) -> list[str]:
    """bench_mpi's kinds of step, the step path per task and the prolog with the swap module."""
    s = res["series"]
    out = ["## MPI in the container: where the extra time goes", "",
           f"{res['note']}. Medians and quartiles (ms) of each kind of step:", "",
           "| step | median | quartiles |", "|---|---|---|"]
    t = s["mpi_times"]
    out += [f"| {side} | {m:.1f} | {a:.1f} .. {b:.1f} |" for side, m, a, b in zip(t["side"], t["median_ms"], t["q1_ms"], t["q3_ms"])]
    out += ["", "*native*: the host-built hello; *container*: the image's MPICH; *swap*: the host's MPICH "
            "swapped in (`--module=mpich`); *true*/*shifter*: `srun -N3 -n6 [shifter] /bin/true`, "
            "the generic step path's share of the container's extra time.", ""]
    if "mpi_phases_container" in s:
        a, b = s["mpi_phases_container"], s["mpi_phases_swap"]
        out += ["The step path's phases per task (`shifter -v`, median of the six tasks; *task* is slurmstepd's "
                "own work between the hooks, forking the tasks, which a plain step has too):", "",
                "| phase | container (ms) | swap (ms) |", "|---|---|---|"]
        out += [f"| {p} | {x:.2f} | {y:.2f} |" for p, x, y in zip(a["phase"], a["ms"], b["ms"])] + [""]
    if "mpi_prolog" in s:
        p = s["mpi_prolog"]
        out += [f"Each node's prolog (its `build` event): {p['build_ms'][0]:.0f} ms without a module, "
                f"{p['build_ms'][1]:.0f} ms with `--module=mpich`, of which the module's root hook (the "
                f"MPICH/glibc compatibility check, `config/local-cluster/modules/mpich/check.sh`) "
                f"{p['root_hooks_ms'][1]:.0f} ms: paid once per node and job, not per step"
                + (f"; the next job with the same image {p['build_ms'][2]:.0f} ms (root hook "
                   f"{p['root_hooks_ms'][2]:.0f} ms: the check's verdict is kept per image)" if len(p["job"]) > 2 else "")
                + ".", ""]
    return out


def header(results: list[dict], runs: dict[str, dict]) -> list[str]:
    """Where and when: the one run's time span (from bench/timed.py's records when there are any)."""
    if runs:
        start, end = min(r["start"] for r in runs.values()), max(r["end"] for r in runs.values())
        minutes = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() / 60
        span = f"one `make bench` run from {start} to {end} ({minutes:.0f} minute{'' if round(minutes) == 1 else 's'})"
    else:
        span = (f"the runs of {min(r['when'] for r in results)} to {max(r['when'] for r in results)} "
                "(no run records: not one `make bench`)")
    return ["# Benchmark report", "",
            f"Written by bench/report.py from {span} on this project's development machine: "
            f"**a shared 2-core VM** ({platform.machine()}, Linux {platform.release()}) on which other work could run "
            "at the same time. Absolute times there are noisy and only shown for scale; **every result is a ratio "
            "of ours against a peer measured side by side in the same run** (interleaved, medians), with the "
            "command that reproduces it.", ""]


def commands(results: list[dict], runs: dict[str, dict], missing: dict[str, str]) -> list[str]:
    """Each benchmark's command, what it measured and how long it took in this run."""
    by_name = {r["bench"]: r for r in results}
    out = ["## Commands", ""]
    if runs:
        total = sum(r["seconds"] for r in runs.values())
        out += [f"Each benchmark ran once, in this order, as `make bench` ran it (bench/timed.py: its "
                f"duration, start to end); together {total / 60:.1f} minutes of benchmarks.", ""]
    names = sorted(set(by_name) | set(runs) | set(missing), key=lambda n: (runs.get(n, {}).get("start", "~"), n))
    for name in names:
        run, res = runs.get(name), by_name.get(name)
        took = f" ({run['seconds']:.0f} s)" if run else ""
        line = f"- `{name}`{took}: `{res['command']}`" if res else f"- `{name}`{took}"
        if res and res.get("note"):
            line += f" — {res['note']}"
        if name in missing:
            line += f" — **{missing[name]}**"
        elif run and run["rc"] != 0:
            line += f" — **exited {run['rc']}** (its last line: {run['tail'][-1] if run['tail'] else 'none'})"
        if run:
            line += f"; `make bench` ran `{run['command']}`"
        out.append(line)
    return out + [""]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: report.py RESULTS_DIR REPORT.md", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    every = load(directory) if directory.is_dir() else []
    runs = load_runs(directory) if directory.is_dir() else {}
    if not every and not runs:
        print(f"no results in {argv[0]}: run the benchmarks with --json (make bench)", file=sys.stderr)
        return 1
    by_name_all = {r["bench"]: r for r in every}
    missing = {b: why for b in sorted(set(expected()) | set(by_name_all) | set(runs))
               if (why := not_run(b, by_name_all.get(b), runs.get(b), directory))}
    results = [r for r in every if not r.get("skipped")]
    global PLOTS
    PLOTS = Path(argv[1]).resolve().parent / "plots"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(exist_ok=True)
    by_name = {r["bench"]: r for r in results}
    out = header(every, runs)
    if any(r["ratios"] for r in results):
        out += ["![ours vs peers](plots/" + plot_ratios(results, plt) + ")", ""]
    out += ["## Ratios", ""] + table(results, missing) + [""]
    if "bench_sharedfs" in by_name:
        res = by_name["bench_sharedfs"]
        out += ["## Start-up on a shared filesystem", "",
                "![startup vs concurrency](plots/" + plot_sharedfs(res, plt) + ")", "",
                f"{res['note']}.", ""]
        s = res["series"]["sharedfs"]
        out += ["How to read it: each node's Python imports the whole stack. From the directory, every "
                "module costs the shared filesystem dozens of metadata operations (lookups of the paths "
                "Python probes, most of them misses, opens, directory reads), so a node pays "
                "O(files) x the delay. From the image, a node opens one file and reads blocks; its "
                "metadata operations do not depend on the stack's size (with no attribute caching, FUSE "
                "asks for the file's attributes once per read, most of the ~120). On this 2-core VM the "
                "8 nodes and the simulated server (a Python FUSE daemon) share two cores, which is what "
                "grows with the node count here.", ""]
        out += ["| ms per metadata op | nodes | directory (s) | image (s) | directory / image | metadata ops per node: directory | image |",
                "|---|---|---|---|---|---|---|"]
        for i in range(len(s["nodes"])):
            out.append(f"| {s['delay_ms'][i]} | {s['nodes'][i]} | {s['dir_s'][i]:.2f} | {s['image_s'][i]:.2f} | "
                       f"**{s['dir_s'][i] / s['image_s'][i]:.1f}x** | {s['dir_meta_per_node'][i]:.0f} | "
                       f"{s['image_meta_per_node'][i]:.0f} |")
        out.append("")
    if "step_phases" in by_name.get("bench_srun", {}).get("series", {}):
        ph = by_name["bench_srun"]["series"]["step_phases"]
        out += ["## Where a `srun shifter` step's extra milliseconds go", "",
                "Medians from `srun shifter -v /bin/true` (the step path's own phase marks, "
                "`shifter_wlm/task.py`; *python*: from the plugin starting the embedded interpreter to "
                "the first hook, the hook router's imports included); *rest*: the measured overhead "
                "minus the phases (loading the plugin's Python part, Slurm's hook calls, the task's "
                "fork, noise).", "",
                "| phase | ms |", "|---|---|"] + [f"| {p} | {v:.2f} |" for p, v in zip(ph["phase"], ph["ms"])] + [""]
    if "step_floor" in by_name.get("bench_step_floor", {}).get("series", {}):
        fl = by_name["bench_step_floor"]["series"]["step_floor"]
        out += ["## The floor under a step's milliseconds", "",
                "What an embedded Python costs before any of our work, on this machine: tiny C host "
                "processes outside Slurm (`bench/bench_step_floor.py`), interleaved, medians of their wall "
                "time; each row adds one layer to the one above (*interpreter*: a bare "
                "`Py_InitializeFromConfig` as the plugin configures it; *plugin*: the plugin's Python part, "
                "one hook that routes nothing; *step_imports*: what a step joining its container imports "
                "besides).", "",
                "| layer | ms | over the row above |", "|---|---|---|"]
        out += [f"| {v} | {ms:.2f} | {d:+.2f} |" for v, ms, d in zip(fl["variant"], fl["ms"], fl["over_previous"])] + [""]
    if "prolog_scale" in by_name.get("bench_prolog_scale", {}).get("series", {}):
        res = by_name["bench_prolog_scale"]
        ps = res["series"]["prolog_scale"]
        out += ["## Prolog time per node vs node count", "",
                "![prolog per node vs nodes](plots/" + plot_prolog_scale(res, plt) + ")", "",
                f"{res['note']}. A node's prolog time is the sum of its prolog's step events "
                "(`shifter_wlm/prolog.py`). Every slurmd of the local cluster runs on the same 2-core VM, so "
                "an N-node job's N prologs run at once on two cores and share one slurmctld and one gateway: "
                "the growth with N here is that contention, not per-node work (on a real cluster each node "
                "has its own cores; the image is one file open per node).", ""]
        biggest = max(PROLOG_STEPS, key=lambda step: ps.get(step + "_ms", [0])[-1])
        out += [f"At {ps['nodes'][-1]} nodes the largest step is `{biggest}` "
                f"({ps[biggest + '_ms'][-1]:.0f} of {ps['prolog_ms'][-1]:.0f} ms; at {ps['nodes'][0]} nodes "
                f"{ps[biggest + '_ms'][0]:.0f} of {ps['prolog_ms'][0]:.0f} ms). `use_record` asks the one gateway "
                "to record the node's use of the image and `job_info` asks the one slurmctld, all nodes at "
                "the same moment.", "",
                "| nodes | prolog per node (median, ms) | slowest node (ms) | "
                + " | ".join(PROLOG_STEPS) + " | submission to script start (s) |",
                "|---|---|---|" + "---|" * len(PROLOG_STEPS) + "---|"]
        for i, n in enumerate(ps["nodes"]):
            out.append(f"| {n} | {ps['prolog_ms'][i]:.0f} | {ps['prolog_max_ms'][i]:.0f} | "
                       + " | ".join(f"{ps.get(step + '_ms', [0] * (i + 1))[i]:.1f}" for step in PROLOG_STEPS)
                       + f" | {ps['start_s'][i]:.2f} |")
        out.append("")
    if "mpi_times" in by_name.get("bench_mpi", {}).get("series", {}):
        out += mpi_section(by_name["bench_mpi"])
    sized = [r for r in results if "sizes" in r.get("series", {})]
    if sized:
        res = sized[0]
        out += ["## Conversion time and memory vs image size", "",
                "![conversion vs size](plots/" + plot_sizes(res, plt) + ")", "", f"{res['note']}.", ""]
    misses = [(res["bench"], r["what"], r["ratio"], r["target"]) for res in results for r in res["ratios"]
              if r["met"] is False]
    if misses:
        out += ["## Targets missed in this run, and why (what the benchmarks show)", ""]
        for bench in dict.fromkeys(m[0] for m in misses):
            rows = "; ".join(f"{what}: **{ratio:.2f}** (target {target})" for b, what, ratio, target in misses
                             if b == bench)
            out.append(f"- **{bench}** — {rows}. {WHY.get(bench, '')}")
        out.append("")
    out += commands(every, runs, missing)
    Path(argv[1]).write_text("\n".join(out))
    print(f"wrote {argv[1]} and {PLOTS}/*.png")
    failed = sorted(b for b, r in runs.items() if r["rc"] != 0)
    if failed:
        print(f"benchmarks that failed in this run (see the report): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
