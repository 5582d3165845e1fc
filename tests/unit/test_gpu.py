"""The GPU module's decisions (runtime/gpu.py, runtime/modules.py's GPU rule, the spec it
makes): which GPUs, which device files, which driver libraries, which environment."""

from __future__ import annotations

import os
import stat

import pytest

from runtime import gpu
from runtime import spec as specs
from runtime.modules import ModuleError, select
from runtime.spec import User
from shifter_site import config
from shifter_site.errors import ConfigError
from shifter_site.imagefiles import ImageRecord

LDCONFIG = """\
1234 libs found in cache `/etc/ld.so.cache'
	libnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1
	libnvidia-ml.so.1 (libc6) => /usr/lib/i386-linux-gnu/libnvidia-ml.so.1
	libcuda.so.1 (libc6,x86-64) => /usr/local/nvidia/lib64/libcuda.so.1
	libcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
	libcuda.so (libc6,x86-64) => /usr/local/nvidia/lib64/libcuda.so
	libnvidia-ptxjitcompiler.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ptxjitcompiler.so.1
	libc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6
	libcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12
"""
DEV = ("null", "zero", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia0", "nvidia1",
       "nvidia2", "nvidia3", "tty", "nvidia-caps")
SITE = gpu.GpuSite(module="gpu", libraries=("libcuda.so*", "libnvidia-*.so*"))
GPU_SITE_YAML = """\
system: unit
image_dir: /images
gateway: {urls: ["http://127.0.0.1:1"]}
registries: {default: "http://127.0.0.1:5000"}
modules:
  gpu:
    gpu: {libraries: ["libcuda.so*"], tool_path: [/opt/nv/bin]}
    env: {set: {GPU_ON: "1"}}
  mpich: {env: {set: {MPI: mpich}}}
  other: {conflict: [gpu]}
%s
"""


@pytest.fixture(scope="module")
def gsite() -> config.Config:
    return config.parse(GPU_SITE_YAML % "", "gpu-site.yaml")


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"CUDA_VISIBLE_DEVICES": ""}, ()),
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, ()),
    ({"SLURM_STEP_GPUS": "NoDevFiles", "CUDA_VISIBLE_DEVICES": "0"}, ()),
    ({"CUDA_VISIBLE_DEVICES": "1"}, (1,)),
    ({"SLURM_STEP_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}, (2, 3)),
    ({"SLURM_JOB_GPUS": "1", "CUDA_VISIBLE_DEVICES": "0"}, (1,)),
])
def test_allocated_gpus_from_slurm_env(env, expected):
    assert gpu.allocated(env) == expected


@pytest.mark.parametrize("value", ["GPU-1234-uuid", "0,,1", "-1", "0;1", "0,0"])
def test_malformed_gpu_list_is_refused_in_one_line(value):
    with pytest.raises(gpu.GpuError) as err:
        gpu.allocated({"CUDA_VISIBLE_DEVICES": value})
    assert "CUDA_VISIBLE_DEVICES" in str(err.value) and "\n" not in str(err.value)


def test_only_allocated_gpu_and_present_control_devices():
    files = gpu.device_files((2,), DEV)
    assert files == ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia2")
    assert "/dev/nvidia-modeset" not in files  # absent on the node: not added
    assert "/dev/nvidia-modeset" in gpu.device_files((0,), DEV + ("nvidia-modeset",))
    assert gpu.device_files((), DEV) == ()


def test_allocated_gpu_without_device_file_is_refused():
    with pytest.raises(gpu.GpuError, match="/dev/nvidia7 is missing"):
        gpu.device_files((7,), DEV)
    with pytest.raises(gpu.GpuError, match="nvidiactl is missing"):
        gpu.device_files((0,), ("nvidia0",))


def test_node_gpus_and_launch_gpus():
    assert gpu.node_gpus(DEV) == (0, 1, 2, 3)
    assert gpu.launch_gpus({}, True, DEV) == (0, 1, 2, 3)      # asked for by name, nothing said
    assert gpu.launch_gpus({}, False, DEV) == ()
    assert gpu.launch_gpus({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, True, DEV) == ()
    assert gpu.launch_gpus({"CUDA_VISIBLE_DEVICES": "3"}, False, DEV) == (3,)


def test_ldconfig_parse_keeps_first_of_this_arch():
    cache = gpu.parse_ldconfig(LDCONFIG)
    assert cache["libcuda.so.1"] == "/usr/local/nvidia/lib64/libcuda.so.1"
    assert cache["libnvidia-ml.so.1"] == "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"


def test_loader_cache_read_directly_equals_ldconfig(tmp_path):
    """read_loader_cache (the file, no subprocess) lists what `ldconfig -p` lists, for this
    host's cache and for one made here with a library under a driver's soname."""
    import shutil
    import subprocess

    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(next(p for p in ("/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1")
                     if os.path.exists(p)), lib / "libz.so.1")
    (tmp_path / "conf").write_text(f"{lib}\n")
    subprocess.run([ldconfig, "-C", str(tmp_path / "cache"), "-f", str(tmp_path / "conf"), "-X"],
                   check=True, capture_output=True)
    for cache in ("/etc/ld.so.cache", str(tmp_path / "cache")):
        text = subprocess.run([ldconfig, "-p", "-C", cache], capture_output=True, text=True, check=True).stdout
        assert gpu.read_loader_cache(cache) == gpu.parse_ldconfig(text), cache
    assert gpu.read_loader_cache(str(tmp_path / "cache"))["libz.so.1"] == str(lib / "libz.so.1")


def test_unreadable_or_foreign_loader_cache_is_one_line(tmp_path):
    (tmp_path / "bad").write_bytes(b"not a cache")
    for path, what in ((str(tmp_path / "none"), "cannot read"), (str(tmp_path / "bad"), "not a glibc loader cache")):
        with pytest.raises(gpu.GpuError, match=what) as err:
            gpu.read_loader_cache(path)
        assert "\n" not in str(err.value)


def test_layout_binds_each_node_directory_once(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("libcuda.so.580.1", "libnvidia-ml.so.580.1"):
        (lib / name).write_text("")
    (lib / "libcuda.so.1").symlink_to("libcuda.so.580.1")
    (lib / "libnvidia-ml.so.1").symlink_to("libnvidia-ml.so.580.1")
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text("")
    dirs, links = gpu.layout([str(lib / "libcuda.so.1"), str(lib / "libnvidia-ml.so.1")], [str(tool)])
    assert dirs == (str(lib), str(tool.parent))
    assert links == (("/opt/udiImage/gpu/lib64/libcuda.so.1", "/opt/udiImage/gpu/host/0/libcuda.so.580.1"),
                     ("/opt/udiImage/gpu/lib64/libnvidia-ml.so.1", "/opt/udiImage/gpu/host/0/libnvidia-ml.so.580.1"),
                     ("/opt/udiImage/gpu/bin/nvidia-smi", "/opt/udiImage/gpu/host/1/nvidia-smi"))


def test_driver_libraries_match_the_site_patterns_only():
    names = {os.path.basename(p) for p in gpu.driver_libraries(gpu.parse_ldconfig(LDCONFIG), SITE.libraries)}
    assert names == {"libcuda.so.1", "libcuda.so", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1"}
    only = gpu.driver_libraries(gpu.parse_ldconfig(LDCONFIG), ["libnvidia-ml.so*"])
    assert only == ("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",)


def test_plan_for_a_step(tmp_path):
    tool = tmp_path / "nvidia-smi"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(stat.S_IRWXU)
    site = gpu.GpuSite(module="gpu", libraries=SITE.libraries, tools=("nvidia-smi", "nvidia-absent"),
                       tool_path=("/nonexistent", str(tmp_path)))
    plan = gpu.plan((1, 3), site, present=DEV, cache=gpu.parse_ldconfig(LDCONFIG))
    assert [d for d in plan.devices if d[-1].isdigit()] == ["/dev/nvidia1", "/dev/nvidia3"]
    assert plan.tools == (str(tool),)
    assert gpu.container_env(plan.gpus) == {"CUDA_VISIBLE_DEVICES": "0,1", "SHIFTER_GPUS": "1,3"}
    assert gpu.plan((), site, present=DEV, cache={}) == gpu.GpuPlan(gpus=())


def test_gpus_without_libcuda_in_the_cache_is_refused_naming_the_module():
    with pytest.raises(gpu.GpuError, match="module 'gpu': .* lists no libcuda.so; install") as err:
        gpu.plan((0,), SITE, present=DEV, cache=gpu.parse_ldconfig("0 libs found\n"))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- the module rule


def test_gpu_module_is_added_by_itself_when_there_are_gpus(gsite):
    assert gsite.gpu_module == "gpu"
    assert select(None, gsite, (0,)) == ["gpu"]
    assert select("mpich", gsite, (0, 1)) == ["mpich", "gpu"]
    assert select("none", gsite, (0,)) == []          # none means none
    assert select("mpich", gsite, None) == ["mpich"]  # GPUs not known (submit side)


def test_no_gpus_adds_nothing_and_asking_by_name_is_refused(gsite):
    assert select("mpich", gsite, ()) == ["mpich"]
    with pytest.raises(ModuleError, match="'gpu' needs GPUs and this job has none on this node; ask for them"):
        select("gpu,mpich", gsite, ())


def test_gpu_module_conflicts_are_refused(gsite):
    with pytest.raises(ModuleError, match="'other' and 'gpu' cannot be used together"):
        select("other", gsite, (0,))


def test_auto_off_means_only_by_name():
    cfg = config.parse((GPU_SITE_YAML % "").replace('tool_path: [/opt/nv/bin]', 'tool_path: [/opt/nv/bin], auto: false'), "s.yaml")
    assert select("mpich", cfg, (0,)) == ["mpich"]
    assert select("gpu", cfg, (0,)) == ["gpu"]


def test_two_gpu_modules_are_refused_by_the_config():
    text = (GPU_SITE_YAML % "").replace("mpich: {env: {set: {MPI: mpich}}}", "mpich: {gpu: {}}")
    with pytest.raises(ConfigError, match="'gpu' is the GPU module already"):
        config.parse(text, "s.yaml")


@pytest.mark.parametrize("bad, what", [("libraries: []", "is empty"), ("libraries: [/lib/libcuda.so]", "not a file name"),
                                       ("loader_cache: etc/ld.so.cache", "relative path")])
def test_bad_gpu_settings_are_refused_in_one_line(bad, what):
    text = (GPU_SITE_YAML % "").replace('libraries: ["libcuda.so*"]', bad)
    with pytest.raises(ConfigError, match=what) as err:
        config.parse(text, "s.yaml")
    assert "\n" not in str(err.value)


def test_spec_carries_gpus_settings_and_environment(gsite):
    record = ImageRecord(id="ab" * 32, system="unit", env=["PATH=/usr/bin"], entrypoint=None, cmd=None, workdir="")
    user = User(name="alice", uid=1001, gid=1001, home="/home/alice", shell="/bin/sh")
    s = specs.from_config(gsite, record, user, module="mpich", gpus=(1, 3))
    assert s.modules == ("mpich", "gpu") and s.gpus == (1, 3)
    assert s.gpu.tool_path == ("/opt/nv/bin",) and s.gpu.libraries == ("libcuda.so*",)
    gpu_env = s.site_env[-2]  # the module's own env, then the GPU env, then the global one
    assert dict(gpu_env.set) == {"CUDA_VISIBLE_DEVICES": "0,1", "SHIFTER_GPUS": "1,3"}
    assert gpu_env.prepend == (("LD_LIBRARY_PATH", gpu.CONTAINER_LIB_DIR),)
    none = specs.from_config(gsite, record, user, module="mpich", gpus=())
    assert none.gpus == () and none.gpu is None and none.modules == ("mpich",)
    assert s.build_key() != specs.from_config(gsite, record, user, module="mpich", gpus=(1,)).build_key()
    assert none.build_key() == specs.from_config(gsite, record, user, module="mpich").build_key()
