"""`shifter-config import udiRoot.conf`: a site's original configuration, translated key by key;
every key is either carried over or named on stderr with the reason, never dropped silently."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from shifter_site import config, udiroot

# The keys and values of the original's documented example (udiRoot.conf.example, as its
# configure substitutes it), without its comments.
DOCUMENTED = """\
udiMount=/var/udiMount
loopMount=/var/udiLoopMount
imagePath=/images
udiRootPath=/opt/shifter/udiRoot/default
#sitePreMountHook=/etc/shifter/premount.sh
optUdiImage=/opt/shifter/udiRoot/default/libexec/shifter/opt/udiImage
etcPath=/opt/shifter/udiRoot/default/etc/shifter_etc_files
mountUdiRootWritable=1
populateEtcDynamically = 1
allowLibcPwdCalls = 1
maxGroupCount=31
modprobePath=/sbin/modprobe
insmodPath=/sbin/insmod
cpPath=/bin/cp
mvPath=/bin/mv
chmodPath=/bin/chmod
ddPath=/bin/dd
rootfsType=tmpfs
siteFs=/home:/home
siteEnv=SHIFTER_RUNTIME=1
siteEnvAppend=PATH=/opt/udiImage/bin
imageGateway=http://imagegwapi:5000
system=mycluster
defaultImageType=docker
"""

# A production-like file: several gateways, siteFs with flags over continued lines, every
# siteEnv form, perNodeCache limits, modules, deprecated keys.
PRODUCTION = """\
# production config
system=cori
imagePath=/global/cscratch1/sd/shifter/images
imageGateway=https://gw1.example.org:8642 https://gw2.example.org:8642
gatewayTimeout=30
udiMount=/var/udiMount
loopMount=/var/udiLoopMount
etcPath=/etc/opt/shifter/etc_files
optUdiImage=/opt/shifter/udiImage
allowLocalChroot=1
usersToImport=sshd nobody
maxGroupCount=63
mountPropagationStyle=slave
siteFs=/global/homes:/global/homes; \\
    /global/project:/global/project:rec:slave; \\
    /global/common:/global/common:ro; \\
    /var/opt/cray/alps:/var/opt/cray/alps
siteEnv=SHIFTER_RUNTIME=1 NERSC_HOST=cori
siteEnvAppend=PATH=/opt/udiImage/bin
siteEnvPrepend=LD_LIBRARY_PATH=/opt/udiImage/lib
siteEnvUnset=_LMFILES_ LOADEDMODULES MODULEPATH
perNodeCachePath=/tmp
perNodeCacheSizeLimit=200G
perNodeCacheAllowedFsType=xfs ext4
sitePreMountHook=/etc/opt/shifter/premount.sh
autoLoadKernelModule=0
mkfsXfsPath=/sbin/mkfs.xfs
module_gpu_siteFs=/usr/lib/nvidia:/opt/udiImage/modules/gpu/lib:ro
module_gpu_siteEnvPrepend=LD_LIBRARY_PATH=/opt/udiImage/modules/gpu/lib
module_gpu_roothook=/etc/opt/shifter/gpu-root.sh
module_mpich_copyPath=/opt/shifter/modules/mpich
module_mpich_userhook=/opt/udiImage/modules/mpich/bin/setup.sh
module_mpich_conflict=openmpi
module_mpich_copypath=/wrong/case
module_openmpi_enabled=0
module_openmpi_conflict=mpich
defaultModules=mpich
"""


def run_import(tmp_path: Path, text: str, name: str = "udiRoot.conf") -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "shifter_site.cli", "import", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def keys_of(text: str) -> list[str]:
    return [line.split("=", 1)[0].strip() for line in text.splitlines()
            if "=" in line and not line.startswith("#") and not line.startswith(" ")]


def assert_every_key_accounted_for(text: str, data: dict, stderr: str) -> None:
    """Each key of the input is either translated (checked by the caller) or named on stderr."""
    translated = {"system", "imagePath", "imageGateway", "gatewayTimeout", "etcPath", "optUdiImage",
                  "allowLocalChroot", "usersToImport", "maxGroupCount", "mountPropagationStyle", "siteFs",
                  "siteEnv", "siteEnvAppend", "siteEnvPrepend", "siteEnvUnset", "perNodeCachePath",
                  "perNodeCacheSizeLimit", "perNodeCacheAllowedFsType", "defaultImageType", "defaultModules",
                  "sitePreMountHook", "sitePostMountHook", "populateEtcDynamically"}
    for key in keys_of(text):
        if key in translated or (key.startswith("module_") and not key.endswith("copypath")):
            continue
        assert re.search(rf"line \d+: {re.escape(key)}: not (supported|needed): ", stderr), key


def test_documented_example_translates(tmp_path):
    proc = run_import(tmp_path, DOCUMENTED)
    assert proc.returncode == 0, proc.stderr
    cfg = config.parse(proc.stdout)  # the output is a valid site configuration
    assert cfg.system == "mycluster" and cfg.image_dir == "/images"
    assert cfg.gateway.urls == ["http://imagegwapi:5000"]
    assert [(m.from_, m.to, m.flags) for m in cfg.site_mounts] == [("/home", "/home", [])]
    assert cfg.site_env.set == {"SHIFTER_RUNTIME": "1"} and cfg.site_env.append == {"PATH": "/opt/udiImage/bin"}
    assert cfg.opt_udi_image == "/opt/shifter/udiRoot/default/libexec/shifter/opt/udiImage"
    assert cfg.etc_dir == "/opt/shifter/udiRoot/default/etc/shifter_etc_files"
    assert cfg.max_group_count == 31 and cfg.default_image_type == "docker"
    assert cfg.etc_mode == "generated" and cfg.site_pre_mount_hook is None
    assert_every_key_accounted_for(DOCUMENTED, yaml.safe_load(proc.stdout), proc.stderr)
    assert "sitePreMountHook" not in proc.stderr  # a commented-out key is not a key
    assert "Traceback" not in proc.stderr


def test_production_config_translates(tmp_path):
    proc = run_import(tmp_path, PRODUCTION)
    assert proc.returncode == 0, proc.stderr
    cfg = config.parse(proc.stdout)
    assert cfg.gateway.urls == ["https://gw1.example.org:8642", "https://gw2.example.org:8642"]
    assert cfg.gateway.timeout == 30 and cfg.allow_local_images is True
    assert cfg.import_accounts == ["sshd", "nobody"] and cfg.max_group_count == 63
    assert cfg.mount_propagation == "slave"
    assert [(m.from_, m.to, m.flags) for m in cfg.site_mounts] == [
        ("/global/homes", "/global/homes", []),
        ("/global/project", "/global/project", ["rec", "slave"]),
        ("/global/common", "/global/common", ["ro"]),
        ("/var/opt/cray/alps", "/var/opt/cray/alps", []),
    ]
    assert cfg.site_env.set == {"SHIFTER_RUNTIME": "1", "NERSC_HOST": "cori"}
    assert cfg.site_env.prepend == {"LD_LIBRARY_PATH": "/opt/udiImage/lib"}
    assert cfg.site_env.unset == ["_LMFILES_", "LOADEDMODULES", "MODULEPATH"]
    assert cfg.per_node_cache.dir == "/tmp" and cfg.per_node_cache.size_limit_bytes == 200 * 1024 ** 3
    assert cfg.per_node_cache.allowed_fs == ["xfs", "ext4"]
    gpu, mpich, openmpi = cfg.modules["gpu"], cfg.modules["mpich"], cfg.modules["openmpi"]
    assert [(m.from_, m.to, m.flags) for m in gpu.site_mounts] == [
        ("/usr/lib/nvidia", "/opt/udiImage/modules/gpu/lib", ["ro"])]
    assert gpu.env.prepend == {"LD_LIBRARY_PATH": "/opt/udiImage/modules/gpu/lib"}
    assert gpu.root_hook == "/etc/opt/shifter/gpu-root.sh"
    assert mpich.copy_path == "/opt/shifter/modules/mpich" and mpich.conflict == ["openmpi"]
    assert mpich.user_hook == "/opt/udiImage/modules/mpich/bin/setup.sh"
    assert openmpi.enabled is False and cfg.default_modules == ["mpich"]
    assert_every_key_accounted_for(PRODUCTION, yaml.safe_load(proc.stdout), proc.stderr)
    # the original silently ignored a module key in the wrong case: we name it
    assert "module_mpich_copypath: not supported: module 'mpich' has no setting 'copypath'" in proc.stderr
    assert cfg.site_pre_mount_hook == "/etc/opt/shifter/premount.sh" and cfg.site_post_mount_hook is None
    assert "sitePreMountHook" not in proc.stderr and "populateEtcDynamically" not in proc.stderr


def test_hooks_and_site_etc_files_translate(tmp_path):
    """sitePreMountHook/sitePostMountHook and populateEtcDynamically=0 (passwd/group from
    etcPath): translated, not refused."""
    proc = run_import(tmp_path, "system=a\nimagePath=/i\nimageGateway=http://g:1\netcPath=/etc/site\n"
                                "populateEtcDynamically=0\nsitePreMountHook=/etc/pre.sh\nsitePostMountHook=/etc/post.sh\n")
    assert proc.returncode == 0, proc.stderr
    cfg = config.parse(proc.stdout)
    assert (cfg.etc_mode, cfg.etc_dir) == ("site", "/etc/site")
    assert (cfg.site_pre_mount_hook, cfg.site_post_mount_hook) == ("/etc/pre.sh", "/etc/post.sh")
    assert "not supported" not in proc.stderr


@pytest.mark.parametrize("text,words", [
    ("system=a\nimagePath=/i\nimageGateway=http://g:1\nbogusKey=1\n", "bogusKey: unknown key"),
    ("system=a\nimagePath=/i\nimageGateway=http://g:1\nrootfsType=ramfs\n",
     "rootfsType: not supported: the container root is always a tmpfs; 'ramfs' cannot be chosen"),
    ("system=a\nimagePath=/i\nimageGateway=http://g:1\nsiteFs=/a:/b:perNodeCache=size=1G\n",
     "flag 'perNodeCache=size=1G' of '/a:/b:perNodeCache=size=1G' not supported for site mounts"),
    ("system=a\nimagePath=/i\nimageGateway=http://g:1\njust some words\n", "has no '=': skipped"),
])
def test_untranslatable_lines_are_named(tmp_path, text, words):
    proc = run_import(tmp_path, text)
    assert proc.returncode == 0, proc.stderr
    assert words in proc.stderr
    config.parse(proc.stdout)


@pytest.mark.parametrize("text,words", [
    ("imagePath=/i\nimageGateway=http://g:1\n", "system: required key is missing"),
    ("system=a\nimagePath=images\nimageGateway=http://g:1\n", "image_dir: 'images' is a relative path"),
    ("system=a\nimagePath=/i\nimageGateway=http://g:1\nperNodeCacheSizeLimit=lots\n",
     "per_node_cache.size_limit: 'lots' is not a size"),
    ("system=a\nimagePath=/i\nimageGateway=http://g:1\nmountPropagationStyle=shared\n",
     "mount_propagation: 'shared' is not allowed"),
    ("system=a\nimagePath=/i\nimageGateway=http://g:1\npopulateEtcDynamically=0\n",
     "etc_mode: 'site' takes passwd and group from etc_dir, which is not set"),
    ("system=a\nimagePath=/i\nimageGateway=http://g:1\nsitePostMountHook=post.sh\n",
     "site_post_mount_hook: 'post.sh' is a relative path"),
])
def test_result_that_is_not_a_valid_config_prints_nothing_and_says_why(tmp_path, text, words):
    proc = run_import(tmp_path, text)
    assert proc.returncode != 0 and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert words in last and "fix udiRoot.conf" in last, proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_file_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "shifter_site.cli", "import", str(tmp_path / "missing.conf")],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 66 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "cannot read it" in proc.stderr


# Every key the original's parser knows (src/UdiRootConfig.c _assign, NERSC/shifter master),
# with a value it accepts: each must come out translated or named with the reason.
ORIGINAL_KEYS = {
    "udiMount": "/var/udiMount", "loopMount": "/var/udiLoopMount", "imagePath": "/images",
    "udiRootPath": "/opt/shifter", "perNodeCachePath": "/tmp", "perNodeCacheSizeLimit": "100G",
    "perNodeCacheAllowedFsType": "xfs", "usersToImport": "sshd", "sitePreMountHook": "/etc/pre.sh",
    "sitePostMountHook": "/etc/post.sh", "optUdiImage": "/opt/udiImage", "etcPath": "/etc/site",
    "allowLocalChroot": "1", "allowLibcPwdCalls": "0", "optionalSshdAsRoot": "1",
    "populateEtcDynamically": "1", "autoLoadKernelModule": "1", "mountPropagationStyle": "private",
    "mountUdiRootWritable": "1", "maxGroupCount": "31", "modprobePath": "/sbin/modprobe",
    "insmodPath": "/sbin/insmod", "cpPath": "/bin/cp", "mvPath": "/bin/mv", "chmodPath": "/bin/chmod",
    "ddPath": "/bin/dd", "mkfsXfsPath": "/sbin/mkfs.xfs", "rootfsType": "ramfs", "gatewayTimeout": "30",
    "kmodBasePath": "/lib/modules", "kmodCacheFile": "/tmp/kmod", "siteFs": "/a:/b",
    "siteEnv": "A=1", "siteEnvAppend": "PATH=/x", "siteEnvPrepend": "PATH=/y", "siteEnvUnset": "B",
    "imageGateway": "http://g:1", "batchType": "slurm", "system": "a", "defaultImageType": "docker",
    "nodeContextPrefix": "x", "defaultModules": "m", "module_m_userhook": "/u.sh",
    "module_m_roothook": "/r.sh", "module_m_siteEnv": "A=1", "module_m_siteEnvPrepend": "P=/p",
    "module_m_siteEnvAppend": "P=/q", "module_m_siteEnvUnset": "C", "module_m_conflict": "n",
    "module_m_siteFs": "/c:/d", "module_m_copyPath": "/opt/m", "module_m_enabled": "1",
}


@pytest.mark.parametrize("key", sorted(ORIGINAL_KEYS))
def test_every_key_the_original_parser_knows_is_translated_or_named(key):
    base = udiroot.translate("")
    got = udiroot.translate(f"{key}={ORIGINAL_KEYS[key]}\n")
    named = [n for n in got.notes if f": {key}: not supported: " in n or f": {key}: not needed: " in n]
    assert got.data != base.data or named, (key, got)
    assert not [n for n in got.notes if "unknown key" in n], got.notes


def test_keys_given_twice_add_up_as_in_the_original_or_are_named():
    """The original appends each line of list keys (imageGateway, siteFs, usersToImport, ...)
    and keeps the last value of the others: the import does the same and names the latter."""
    got = udiroot.translate("imageGateway=http://g1:1\nimageGateway=http://g2:1 http://g3:1\n"
                            "usersToImport=sshd\nusersToImport=nobody\nsiteFs=/a:/a\nsiteFs=/b:/b\n"
                            "system=a\nsystem=b\nmodule_m_conflict=x\nmodule_m_conflict=y\n"
                            "module_m_userhook=/1.sh\nmodule_m_userhook=/2.sh\n")
    assert got.data["gateway"]["urls"] == ["http://g1:1", "http://g2:1", "http://g3:1"]
    assert got.data["import_accounts"] == ["sshd", "nobody"]
    assert [m["to"] for m in got.data["site_mounts"]] == ["/a", "/b"]
    assert got.data["modules"]["m"]["conflict"] == ["x", "y"]
    assert got.data["system"] == "b" and got.data["modules"]["m"]["user_hook"] == "/2.sh"
    again = [n for n in got.notes if "given again" in n]
    assert again == [
        "line 8: system: given again (first on line 7): the last value is used, as the original does; "
        "remove the other line",
        "line 12: module_m_userhook: given again (first on line 11): the last value is used, as the original "
        "does; remove the other line"], got.notes


def test_a_latin1_comment_is_read_and_a_latin1_key_line_is_named(tmp_path):
    """The original's parser never reads comments: an old file's Latin-1 comment imports; a
    key line that is not UTF-8 is one line naming it."""
    path = tmp_path / "udiRoot.conf"
    path.write_bytes(b"# r\xe9glages du site\nsystem=a\nimagePath=/i\nimageGateway=http://g:1\n")
    proc = subprocess.run([sys.executable, "-m", "shifter_site.cli", "import", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0 and config.parse(proc.stdout).system == "a", proc.stderr
    path.write_bytes(b"system=a\nimagePath=/i\nimageGateway=http://g:1\nsiteEnv=SITE=caf\xe9\n")
    proc = subprocess.run([sys.executable, "-m", "shifter_site.cli", "import", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 65 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "line 4 is not UTF-8 text (byte 0xe9 at column 17)" in proc.stderr
