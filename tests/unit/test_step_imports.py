"""A `srun shifter` step joining its container imports only what it runs (docs/architecture.md,
"lean imports on the two hot paths"): the modules the step hooks import to choose the job's
container and enter it must not pull in what a step cannot afford (the step's target: <= 25 ms
over a plain step, bench/bench_srun.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent

# what slurmstepd's Python imports for a step that joins the job's container: the hook
# router, the step module, the job records, the config cache, option parsing and entering
STEP_PATH = ["shifter_wlm.dispatch", "shifter_wlm.task", "shifter_wlm.stepscripts", "shifter_wlm.procfds", "shifter_wlm.jobs",
             "runtime.spec", "shifter_site.configcache", "shifter_site.imageid", "runtime.cli", "runtime.enter", "runtime.volumes", "runtime.modules",
             "shifter_site.jsonread", "shifter_site.logs"]
STEP_MUST_NOT_IMPORT = ["typing", "subprocess", "structlog", "msgspec", "yaml", "dataclasses", "shutil",
                        "hashlib", "logging", "inspect", "runtime.build", "runtime.phases",
                        # issue 19: json's decoder (re, enum) and contextlib (collections,
                        # functools) cost a step ~7 ms; records are read with shifter_site.jsonread
                        "json", "re", "enum", "contextlib", "collections", "functools"]


def test_joining_a_container_imports_only_what_it_runs():
    code = (f"import sys\nimport {', '.join(STEP_PATH)}\n"
            f"print(' '.join(m for m in {STEP_MUST_NOT_IMPORT!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == []
