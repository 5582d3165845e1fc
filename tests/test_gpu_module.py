"""The GPU module end to end on the local cluster, with real `--gres=gpu:N` jobs.

The cluster's nodes have two fake GPUs each (tools/localcluster.py fake_gpus: /dev/nvidia0-1
made with mknod and NVIDIA's major 195, nvidiactl, nvidia-uvm, nvidia-modeset; gres.conf),
and a fake driver tree: libcuda.so.1 and libnvidia-ml.so.1 under their real sonames, carrying
a random token, a loader cache listing them, and a fake nvidia-smi. The image holds
/app/cudaprobe, a program linked against libcuda.so.1 but without a libcuda of its own: it
runs only if the container's loader finds the node's copy, and prints the token it got, the
mapped path, the /dev/nvidia* files it sees and CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import imagebuilder as ib
import images
import jobtools as jt
import mpiimages
from conftest import localcluster, need, run_as

pytestmark = pytest.mark.cluster
USER = "testuser"
PROBE_C = r"""
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
const char *shifter_fake_driver_token(void);
int cuDriverGetVersion(int *version);
int main(void) {
    int version = 0;
    char line[4096], mapped[4096] = "none", devs[4096] = "";
    cuDriverGetVersion(&version);
    FILE *maps = fopen("/proc/self/maps", "r");
    while (maps && fgets(line, sizeof line, maps)) {
        char *path = strchr(line, '/');
        if (path && strstr(path, "libcuda")) { path[strcspn(path, "\n")] = 0; strcpy(mapped, path); break; }
    }
    DIR *dev = opendir("/dev");
    struct dirent *e;
    while (dev && (e = readdir(dev)))
        if (!strncmp(e->d_name, "nvidia", 6)) { strcat(devs, e->d_name); strcat(devs, ","); }
    const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
    printf("cuda token=%s version=%d mapped=%s devs=%s cvd=%s\n", shifter_fake_driver_token(), version,
           mapped, devs, cvd ? cvd : "unset");
    return 0;
}
"""


def _fake() -> Path:
    return localcluster.STATE / "nvidia"


@pytest.fixture(scope="module")
def gpu_image(cluster):
    need((_fake() / "lib/libcuda.so.1").exists(), "the local cluster has no fake NVIDIA driver (a real one is present?)")
    root = Path(tempfile.mkdtemp())
    try:
        images.make_root(root)
        (root / "app").mkdir()
        src = root / "probe.c"
        src.write_text(PROBE_C)
        subprocess.run(["cc", "-O2", "-o", str(root / "app/cudaprobe"), str(src), f"-L{_fake() / 'lib'}",
                        "-l:libcuda.so.1"], check=True)
        src.unlink()
        for lib in sorted(mpiimages.closure([root / "app/cudaprobe"])):  # glibc and the loader, never libcuda
            assert "libcuda" not in lib
            mpiimages._copy_into(root, lib)
        layer = ib.layer_from_dir(root)
    finally:
        shutil.rmtree(root)
    ib.push("127.0.0.1:5000", "gpu/probe", "1", ib.Image([layer], config={"Env": ["PATH=/usr/bin:/bin"]}))
    pulled = run_as(USER, [str(localcluster.PREFIX / "bin/shifterimg"), "pull", "docker:gpu/probe:1"])
    assert pulled.returncode == 0, pulled.stderr
    return "docker:gpu/probe:1"


def _job(name: str, body: str, *args: str, check: bool = True) -> tuple[str, str]:
    job = jt.write_job(USER, name, "#!/bin/bash\n#SBATCH -N1 -t 5\n" + body)
    job_id, output, _ = jt.sbatch_wait(USER, job, *args, check=check)
    jt.wait_gone(job_id)
    return job_id, output


def _probes(output: str) -> list[dict[str, str]]:
    return [dict(item.split("=", 1) for item in line.split()[1:]) for line in output.splitlines()
            if line.startswith("cuda token=")]


def _gpu_devs(probe: dict[str, str]) -> set[str]:
    return {d for d in probe["devs"].split(",") if d}


def test_one_gpu_job_sees_only_its_gpu_and_the_nodes_driver(gpu_image):
    job_id, output = _job("gpu1.sl", f"#SBATCH --image={gpu_image} --gres=gpu:1\n"
                          "echo host SLURM_JOB_GPUS=$SLURM_JOB_GPUS\n"
                          "srun shifter /app/cudaprobe\nsrun shifter nvidia-smi\n")
    host_gpu = next(line.split("=", 1)[1] for line in output.splitlines() if line.startswith("host SLURM_JOB_GPUS="))
    assert host_gpu in ("0", "1"), output
    (probe,) = _probes(output)
    # the loader found libcuda.so.1: the node's copy (its token), bound in by the module
    assert probe["token"] == (_fake() / "token").read_text().strip(), output
    # found as lib64/libcuda.so.1, a link to the node's file in its bound directory
    assert probe["mapped"] == "/opt/udiImage/gpu/host/0/libcuda.so.580.0.0" and probe["version"] == "13000", output
    # only the allocated GPU, plus the control devices the node has
    assert _gpu_devs(probe) == {f"nvidia{host_gpu}", "nvidiactl", "nvidia-uvm", "nvidia-modeset"}, output
    assert probe["cvd"] == "0", output  # the one GPU inside is CUDA's device 0
    smi = [line for line in output.splitlines() if line.startswith("GPU ")]
    assert smi == [f"GPU {host_gpu}: Fake GPU (/dev/nvidia{host_gpu})"], output
    assert "NVIDIA-SMI fake" in output
    jt.assert_clean()


def test_two_gpus_and_a_step_with_one_of_them(gpu_image):
    _, output = _job("gpu2.sl", f"#SBATCH --image={gpu_image} --gres=gpu:2\n"
                     "srun shifter /app/cudaprobe\nsrun --gres=gpu:1 shifter /app/cudaprobe\n")
    both, one = _probes(output)
    assert _gpu_devs(both) >= {"nvidia0", "nvidia1"} and both["cvd"] == "0,1", output
    assert len({d for d in _gpu_devs(one) if d[6:].isdigit()}) == 1 and one["cvd"] == "0", output
    jt.assert_clean()


def test_no_gpus_adds_nothing_gpu_related(gpu_image):
    _, output = _job("gpu0.sl", f"#SBATCH --image={gpu_image}\n"
                     "srun shifter sh -c 'echo cvd=${CUDA_VISIBLE_DEVICES-unset} ld=${LD_LIBRARY_PATH-unset}; "
                     "ls /opt/udiImage/gpu 2>&1 | head -1'\n"
                     "srun shifter /app/cudaprobe; echo probe_rc=$?\n")
    assert "cvd=unset ld=unset" in output, output
    assert "No such file or directory" in output, output        # no /opt/udiImage/gpu
    assert "libcuda.so.1" in output and "probe_rc=0" not in output, output  # its loader finds no libcuda
    jt.assert_clean()


def test_asking_for_the_module_without_gpus_is_one_line_and_the_node_stays_up(gpu_image):
    _, output = _job("gpuask.sl", f"#SBATCH --image={gpu_image} --module=gpu -w n2\n"
                     "srun shifter true; echo rc=$?\n", check=False)
    lines = [line for line in output.splitlines() if "'gpu' needs GPUs" in line]
    assert lines and "--gres=gpu:N" in lines[0] and "Traceback" not in output, output
    assert "rc=0" not in output
    state = subprocess.run(["sinfo", "-h", "-n", "n2", "-o", "%t"], capture_output=True, text=True,
                           env={**os.environ, "SLURM_CONF": str(localcluster.STATE / "etc/slurm.conf")}).stdout
    assert state.strip() in ("idle", "mix", "alloc"), state
    jt.assert_clean()


def test_gpu_setup_costs_at_most_5_ms_per_node(gpu_image):
    """The prolog's phase events (slurmd's log): the GPU module's two phases, per node."""
    job_id, _ = _job("gpucost.sl", f"#SBATCH --image={gpu_image} --gres=gpu:2 -w n3\nsrun shifter true\n")
    events = []
    for line in (localcluster.STATE / "log/slurmd-n3.log").read_text().splitlines():
        start = line.find("{")
        if start >= 0 and '"part"' in line:
            try:
                events.append(json.loads(line[start:]))
            except ValueError:
                continue
    spec = [e for e in events if e.get("event") == "spec" and e.get("job") == int(job_id)]
    assert spec and spec[-1]["gpus"] == [0, 1], spec
    key = spec[-1]["key"]
    phases = {e["event"]: e for e in events if e.get("key") == key and e.get("event", "").startswith("build.")}
    assert phases["build.gpu"]["libraries"] >= 2 and phases["build.gpu"]["tools"] == 1, phases["build.gpu"]
    assert phases["build.gpu"]["mounts"] == 2, phases["build.gpu"]  # the driver's lib dir and bin dir
    assert phases["build.gpu_dev"]["hidden"] == [], phases["build.gpu_dev"]
    cost = phases["build.gpu"]["ms"] + phases["build.gpu_dev"]["ms"]
    print(f"GPU module setup on n3: gpu {phases['build.gpu']['ms']} ms + gpu_dev {phases['build.gpu_dev']['ms']} ms")
    assert cost <= 5.0, phases
    jt.assert_clean()


def test_module_whose_host_files_are_missing_is_one_line_and_the_node_stays_up(gpu_image):
    _, output = _job("absent.sl", f"#SBATCH --image={gpu_image} --module=absent -w n1\n"
                     "srun shifter true; echo rc=$?\n", check=False)
    lines = [line for line in output.splitlines() if "module 'absent':" in line]
    assert lines and "is missing on this node" in lines[0] and "Traceback" not in output, output
    assert "rc=0" not in output
    state = subprocess.run(["sinfo", "-h", "-n", "n1", "-o", "%t"], capture_output=True, text=True,
                           env={**os.environ, "SLURM_CONF": str(localcluster.STATE / "etc/slurm.conf")}).stdout
    assert state.strip() in ("idle", "mix", "alloc"), state
    jt.assert_clean()


def test_a_users_gpu_variables_never_widen_the_allocation(gpu_image):
    """Attack: the user sets the variables the module reads. A one-GPU job's step still sees
    one GPU (or is refused in one line); a job without GPUs still gets none."""
    _, output = _job("gpuforge.sl", f"#SBATCH --image={gpu_image} --gres=gpu:1\n"
                     "SLURM_STEP_GPUS=0,1 SLURM_JOB_GPUS=0,1 CUDA_VISIBLE_DEVICES=0,1 srun shifter /app/cudaprobe\n",
                     check=False)
    probes = _probes(output)
    if probes:
        assert len({d for d in _gpu_devs(probes[0]) if d[6:].isdigit()}) == 1 and probes[0]["cvd"] == "0", output
    else:
        assert "names GPUs job" in output and "Traceback" not in output, output
    _, output = _job("gpuforge0.sl", f"#SBATCH --image={gpu_image}\n"
                     "SLURM_STEP_GPUS=0,1 SLURM_JOB_GPUS=0,1 CUDA_VISIBLE_DEVICES=0,1 "
                     "srun shifter sh -c 'ls -d /opt/udiImage/gpu 2>&1; echo ran'\n", check=False)
    if "ran" in output.split():
        assert "No such file or directory" in output, output  # no GPU added
    else:
        assert "names GPUs job" in output and "Traceback" not in output, output
    jt.assert_clean()


def test_shifter_as_root_outside_slurm_takes_its_gpus_from_the_environment(gpu_image):
    """`shifter` run by root on a node (no Slurm step): CUDA_VISIBLE_DEVICES names the GPUs;
    asking for the module by name with nothing said gives every GPU the node shows."""
    image_id = subprocess.run([str(localcluster.PREFIX / "bin/shifterimg"), "lookup", "docker:gpu/probe:1"],
                              capture_output=True, text=True, check=True).stdout.strip()
    env = {"PATH": "/usr/bin:/bin", "SHIFTER_CONFIG": str(localcluster.STATE / "etc/shifter.yaml")}
    shifter = [str(localcluster.PREFIX / "bin/shifter"), f"--image=id:{image_id}"]
    one = subprocess.run([*shifter, "/app/cudaprobe"], env={**env, "CUDA_VISIBLE_DEVICES": "1"},
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    (probe,) = _probes(one.stdout)
    assert _gpu_devs(probe) == {"nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-modeset"} and probe["cvd"] == "0", probe
    every = subprocess.run([*shifter, "--module=gpu", "/app/cudaprobe"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert every.returncode == 0, every.stderr
    (probe,) = _probes(every.stdout)
    assert {"nvidia0", "nvidia1"} <= _gpu_devs(probe) and probe["cvd"] == "0,1", probe
