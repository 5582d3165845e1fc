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
STEP_PATH = ["shifter_wlm.dispatch", "shifter_wlm.options", "shifter_wlm.task", "shifter_wlm.procfds", "shifter_wlm.jobs",
             "runtime.spec", "shifter_site.configcache", "shifter_site.configview", "shifter_site.imageid", "runtime.cli", "runtime.enter", "runtime.modules",
             "runtime.gpu", "shifter_site.jsonread", "shifter_site.logs"]  # runtime.gpu: on a site with a GPU module
STEP_MUST_NOT_IMPORT = ["typing", "subprocess", "structlog", "msgspec", "yaml", "dataclasses", "shutil",
                        "hashlib", "logging", "inspect", "runtime.build", "runtime.phases",
                        # json's decoder (re, enum) and contextlib (collections,
                        # functools) cost a step ~7 ms; records are read with shifter_site.jsonread
                        "json", "re", "enum", "contextlib", "collections", "functools",
                        # the hook router imports its routes with __import__
                        "importlib", "types",
                        # a step with the job's volumes does not parse volumes (task._choose_volume)
                        "runtime.volumes",
                        # issue 19: only a --ccm step or a command longer than Slurm's argv needs it
                        "shifter_wlm.stepscripts"]  # types: configview's SimpleNamespace is type(sys.implementation)


def test_joining_a_container_imports_only_what_it_runs():
    code = (f"import sys\nimport {', '.join(STEP_PATH)}\n"
            f"print(' '.join(m for m in {STEP_MUST_NOT_IMPORT!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == []


def _init_code():
    import ast

    path = REPO / "spank" / "init_code.py"
    return ast.parse(path.read_text()), path.read_text()


def test_the_spank_init_imports_only_at_start_and_hooks_import_nothing():
    """The embedded interpreter's init imports what the hooks need, and a hook never imports
    (it may run as root inside the user's image; `traceback` also cost each step ~8 ms)."""
    import ast

    tree, _ = _init_code()
    top = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert top == {"_shifter_spank"}
    hook = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "shifter_py_hook")
    describe = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_describe")
    for function in (hook, describe):
        assert not [n for n in ast.walk(function) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_a_failed_hook_is_described_with_its_place_and_no_import():
    import ast
    import builtins

    tree, text = _init_code()
    describe = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_describe")
    namespace: dict = {}
    exec(compile(ast.Module(body=[describe], type_ignores=[]), "init_code.py", "exec"), namespace)

    def failing():
        raise ValueError("bad value")

    try:
        failing()
    except ValueError as err:
        real_import = builtins.__import__
        builtins.__import__ = lambda *a, **k: (_ for _ in ()).throw(AssertionError("imported"))
        try:
            text = namespace["_describe"](err)
        finally:
            builtins.__import__ = real_import
    assert text.startswith("ValueError: bad value (at ")
    assert "in failing <- " in text and text.endswith(")")
