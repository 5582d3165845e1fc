"""The modules of config/shifter.yaml.example work (docs/architecture.md, "Build"): a site
mount into /opt/udiImage/modules/gpu/lib (the gpu module, with its root hook) and a module's
copy_path (mpich, with its user hook), beside the site's /opt/udiImage content. All of
/opt/udiImage is sealed read-only and nosuid in the last setup phase, after the module
mounts went in. The example config itself, with its host paths moved to a scratch tree."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

import rtutil

from conftest import account, need, run_as
from images import make_image

SHIFTER = str(Path(sys.executable).with_name("shifter"))
EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "shifter.yaml.example"
UDI = "/opt/udiImage"


def _script(path: Path, text: str) -> str:
    path.write_text("#!/bin/sh\n" + text)
    os.chmod(path, 0o755)
    return str(path)


@pytest.fixture(scope="module")
def site():
    need(os.geteuid() == 0, "building with site mounts and root hooks needs root")
    need(os.path.exists(SHIFTER), f"{SHIFTER} is not installed (pip install .)")
    need(shutil.which("squashfuse") is not None, "squashfuse is needed for rootless")
    base = Path(tempfile.mkdtemp(prefix="shifter-example-modules-"))
    with rtutil.released(base, base / "run"):
        os.chmod(base, 0o755)
        image = make_image(base / "images")
        run = base / "run"
        run.mkdir(mode=0o755)
        udi = base / "udiImage"
        (udi / "bin").mkdir(parents=True)
        (udi / "bin" / "site-tool").write_text("site tool\n")
        etc = base / "etc_files"
        etc.mkdir()
        nvidia = base / "nvidia"
        nvidia.mkdir()
        (nvidia / "libcuda.so.1").write_text("fake cuda\n")
        mpich = base / "mpich"
        (mpich / "lib").mkdir(parents=True)
        (mpich / "bin").mkdir()
        (mpich / "lib" / "libmpi.so.12").write_text("fake mpi\n")
        _script(mpich / "bin" / "setup.sh", 'echo "mpich hook $(id -u)"\n')
        out = base / "out"
        out.mkdir(mode=0o755)
        gpu_hook = _script(base / "gpu-root.sh", f'echo "gpu root hook $(id -u) $SHIFTER_MODULE" > {out}/gpu.out\n')

        cfg = yaml.safe_load(EXAMPLE.read_text())
        cfg.update(image_dir=str(base / "images"), run_dir=str(run), opt_udi_image=str(udi), etc_dir=str(etc))
        cfg["per_node_cache"]["dir"] = str(base)
        sources = {}
        for mount in cfg["site_mounts"]:  # the example's /global/... trees, as scratch dirs
            sources[mount["from"]] = base / mount["from"].strip("/").replace("/", "-")
            sources[mount["from"]].mkdir()
            mount["from"] = str(sources[mount["from"]])
        gpu, mp = cfg["modules"]["gpu"], cfg["modules"]["mpich"]
        assert gpu["site_mounts"][0]["to"] == f"{UDI}/modules/gpu/lib"  # what this test is about
        gpu["site_mounts"][0]["from"] = str(nvidia)
        gpu.pop("gpu")  # its GPU part (devices, driver) is tests/test_gpu_module.py's: here the mounts
        gpu["root_hook"] = gpu_hook
        mp["copy_path"] = str(mpich)
        path = base / "shifter.yaml"
        path.write_text(yaml.safe_dump(cfg))
        os.chmod(path, 0o644)
        mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
        os.chmod("/dev/fuse", 0o666)
        try:
            yield {"cfg": str(path), "image": image, "run": str(run), "out": out}
        finally:
            os.chmod("/dev/fuse", mode)


PROBE = (f"cat {UDI}/modules/gpu/lib/libcuda.so.1 {UDI}/modules/mpich/lib/libmpi.so.12 {UDI}/bin/site-tool; "
         f"echo LD=$LD_LIBRARY_PATH; touch {UDI}/modules/gpu/lib/new 2>/dev/null || echo gpu-readonly; "
         f"touch {UDI}/modules/mpich/new 2>/dev/null || echo mpich-readonly; cat /proc/self/mountinfo")


def _udi_mounts(mountinfo: str) -> dict[str, set[str]]:
    """Mount point -> its per-mount options, for the mounts at and below /opt/udiImage."""
    found = {}
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 5 and (fields[4] == UDI or fields[4].startswith(UDI + "/")):
            found[fields[4]] = set(fields[5].split(","))
    return found


def _check(proc: subprocess.CompletedProcess, modules: tuple[str, ...]) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    mounts = _udi_mounts(proc.stdout)
    assert UDI in mounts
    if "gpu" in modules:
        assert f"{UDI}/modules/gpu/lib" in mounts
    assert f"{UDI}/modules/mpich" in mounts
    for point, opts in mounts.items():
        assert {"ro", "nosuid", "nodev"} <= opts, (point, opts)
    return lines


def test_example_gpu_and_mpich_modules_as_root(site):
    before = rtutil.host_state(site["run"])
    env = {"PATH": "/usr/bin:/bin", "SHIFTER_CONFIG": site["cfg"]}
    proc = subprocess.run([SHIFTER, f"--image=id:{site['image'].id}", "-m", "gpu,mpich", "--", "sh", "-c", PROBE],
                          capture_output=True, text=True, env=env, timeout=60, cwd="/")
    lines = _check(proc, ("gpu", "mpich"))
    assert lines[:4] == ["mpich hook 0", "fake cuda", "fake mpi", "site tool"]
    ld = next(line for line in lines if line.startswith("LD="))
    assert f"{UDI}/modules/gpu/lib" in ld and f"{UDI}/modules/mpich/lib" in ld
    assert "gpu-readonly" in lines and "mpich-readonly" in lines
    assert (site["out"] / "gpu.out").read_text().split() == ["gpu", "root", "hook", "0", "gpu"]
    assert rtutil.settled(site["run"], before) == before


def test_example_default_mpich_module_rootless(site):
    """The example's default module (mpich, a copy_path) for a plain user, rootless."""
    before = rtutil.host_state(site["run"])
    uid = account("testuser").pw_uid
    proc = run_as("testuser", [f"SHIFTER_CONFIG={site['cfg']}", SHIFTER, f"--image=id:{site['image'].id}",
                               "--", "sh", "-c", PROBE.replace(f"{UDI}/modules/gpu/lib/libcuda.so.1 ", "")], cwd="/")
    lines = _check(proc, ("mpich",))
    assert lines[:3] == [f"mpich hook {uid}", "fake mpi", "site tool"]
    assert "mpich-readonly" in lines
    assert rtutil.settled(site["run"], before) == before
