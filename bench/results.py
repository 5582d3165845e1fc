"""What every benchmark hands to the report (bench/report.py): ratios measured side by side in
one run, with the command that reproduces them. A benchmark run with `--json FILE` (as
`make bench` does) writes its results there; printed lines stay for people."""

from __future__ import annotations

import json
import os
import sys
import time


class Results:
    """Collects one benchmark's ratios (and any series to plot) and writes them as JSON."""

    def __init__(self, bench: str, command: str, note: str = "") -> None:
        self.data = {"bench": bench, "command": command, "note": note, "ratios": [], "series": {},
                     "when": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:]}

    def ratio(self, what: str, ours: float, peer: float, peer_name: str, unit: str = "ms",
              target: str = "", lower_is_better: bool = True) -> float:
        """Record ours/peer (medians of interleaved runs); returns the ratio."""
        value = ours / peer if peer else float("nan")
        met = None
        if target:
            op, _, limit = target.partition(" ")
            met = value <= float(limit) if op == "<=" else value >= float(limit)
        self.data["ratios"].append({"what": what, "ours": ours, "peer": peer, "peer_name": peer_name,
                                    "unit": unit, "ratio": value, "target": target, "met": met})
        return value

    def skipped(self, reason: str) -> None:
        """This machine cannot run the benchmark (e.g. no GPU): the report says so and why."""
        self.data["skipped"] = reason

    def series(self, name: str, **columns: list) -> None:
        """A table to plot (e.g. nodes -> seconds)."""
        self.data["series"][name] = columns

    def write(self, path: str | None) -> None:
        if not path:
            return
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, path)


def json_arg(parser) -> None:
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON (make bench)")
