"""The site configuration: valid files load into typed objects; every mistake is one line that
names the file, the offending key and the fix; root code refuses files users could edit."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys

import pytest

from conftest import REPO, need
from shifter_site import config
from shifter_site.errors import ConfigError
from shifter_site.sizes import parse_size

NOT_ROOT = pwd.getpwnam("nobody").pw_uid  # an owner other than root, from the system

BASE = """\
system: local
image_dir: /var/lib/shifter/images
gateway: {urls: ["http://127.0.0.1:8642"]}
registries: {default: "http://127.0.0.1:5000"}
"""


def test_minimal_config_gets_documented_defaults():
    cfg = config.parse(BASE)
    assert cfg.system == "local"
    assert cfg.registries.default == "http://127.0.0.1:5000"
    assert cfg.registries.platform == "linux/amd64"
    assert cfg.run_dir == "/var/run/shifter"
    assert cfg.per_node_cache.allowed_fs == ["xfs"]
    assert cfg.per_node_cache.size_limit_bytes == 100 * 1024**3
    assert cfg.sshd.port == 1204 and cfg.sshd.port_count == 1000 and cfg.sshd.enabled is False
    assert cfg.max_group_count == 31


def test_full_example_is_valid_and_covers_every_section():
    cfg = config.parse((REPO / "config/shifter.yaml.example").read_text(), "example")
    assert cfg.site_mounts and cfg.site_mounts[0].from_.startswith("/")
    assert cfg.site_env.prepend and cfg.site_env.append and cfg.site_env.set and cfg.site_env.unset
    assert cfg.import_accounts
    assert set(cfg.default_modules) <= set(cfg.modules)
    assert cfg.modules["gpu"].site_mounts
    assert cfg.registries.hosts
    assert cfg.ccm.root and cfg.etc_mode == "generated" and cfg.hook_timeout > 0


def test_local_cluster_config_is_valid(tmp_path):
    import conftest
    text = conftest.localcluster.render("shifter.yaml.in")
    cfg = config.parse(text, "local")
    # the local registry is the site's Docker Hub mirror
    assert cfg.registries.default == "https://registry-1.docker.io"
    assert cfg.registries.mirrors == {"docker.io": [f"http://{conftest.localcluster.REGISTRY}"]}
    assert cfg.image_dir.startswith(str(conftest.localcluster.STATE))


def test_config_objects_are_read_only():
    cfg = config.parse(BASE)
    with pytest.raises(AttributeError):
        cfg.system = "other"


# (yaml appended to BASE or whole text, key the message must name, words of the fix)
BAD = [
    ("bogus: 1", "bogus", "unknown key"),
    ("sytem2: x", "sytem2", "did you mean 'system'"),
    ("run_dir: var/run/shifter", "run_dir", "absolute path"),
    ("etc_dir: /etc/../tmp", "etc_dir", "'..'"),
    ("sshd: {port: 70000}", "sshd.port", "65535"),
    ("sshd: {prot: 1204}", "sshd.prot", "did you mean 'port'"),
    ("sshd: {enabled: maybe}", "sshd.enabled", "true or false"),
    ("sshd: {port: 65000, port_count: 1000}", "sshd.port_count", "passes 65535; lower port_count or port"),
    ("sshd: {port_count: 0}", "sshd.port_count", ">= 1"),
    ("site_mounts: [{from: /a, to: /b, flags: [ro, bogus]}]", "site_mounts[0].flags[1]", "ro, rec, slave, private"),
    ("site_mounts: [{from: /a, to: b}]", "site_mounts[0].to", "absolute path"),
    ("site_mounts: [{from: /a, to: /b, flags: [slave, private]}]", "site_mounts[0].flags", "keep one"),
    ("site_mounts: [{from: /a, to: /b, flags: [ro, ro]}]", "site_mounts[0].flags", "twice"),
    ("site_mounts: [{to: /b}]", "site_mounts[0].from", "required key is missing"),
    ("site_env: {set: {1A: x}}", "site_env.set", "not a variable name"),
    ("site_env: {unset: [PATH, 'A-B']}", "site_env.unset[1]", "not a valid variable name"),
    ("site_env: {append: {PATH: 3}}", "site_env.append.PATH", "expected a string, got 3; quote"),
    ("per_node_cache: {size_limit: 10Q}", "per_node_cache.size_limit", "not a size"),
    ("per_node_cache: {allowed_fs: [btrfs]}", "per_node_cache.allowed_fs[0]", "xfs, ext4"),
    ("per_node_cache: {allowed_fs: []}", "per_node_cache.allowed_fs", "allow at least one"),
    ("per_node_cache: {dir: cache}", "per_node_cache.dir", "absolute path"),
    ("default_image_type: podman", "default_image_type", "docker, id, local, custom"),
    ("max_group_count: '31'", "max_group_count", "expected an integer"),
    ("max_group_count: -1", "max_group_count", ">= 0"),
    ("import_accounts: [Bad User]", "import_accounts[0]", "account name"),
    ("default_modules: [gpu]", "default_modules[0]", "not defined under modules"),
    ("modules: {gpu: {conflict: [mpi]}}", "modules.gpu.conflict", "define it or remove it"),
    ("modules: {gpu: {site_mounts: [{from: /a, to: rel}]}}", "modules.gpu.site_mounts[0].to", "absolute path"),
    ("modules: {gpu: {copyPath: /x}}", "modules.gpu.copyPath", "did you mean 'copy_path'"),
    ("modules: {gpu: {env: {set: {1A: x}}}}", "modules.gpu.env.set", "not a variable name"),
    ("modules: {'bad name': {}}", "modules.bad name", "not a module name"),
    ("system: 'my cluster'", "system", "not a name"),
    ("gateway: {urls: []}", "gateway.urls", "at least one"),
    ("gateway: {urls: ['ftp://gw']}", "gateway.urls[0]", "not a URL"),
    ("gateway: {urls: ['http://gw'], timeout: 0}", "gateway.timeout", "must be a finite number (not .inf or .nan) > 0"),
    ("gateway: {urls: ['http://gw'], timeout: .inf}", "gateway.timeout", "<= 315360000; fix the value"),
    ("registries: {default: 'http://r', auth_hosts: ['auth:5001']}", "registries.auth_hosts[0]", "no port"),
    ("registries: {default: 127.0.0.1:5000}", "registries.default", "http://host"),
    ("registries: {default: 'http://r', platform: amd64}", "registries.platform", "os/arch"),
    ("registries: {default: 'http://r', hosts: {docker.io: 'registry-1'}}", "registries.hosts.docker.io", "not a URL"),
    ("site_mounts: {from: /a, to: /b}", "site_mounts", "expected a list"),
]


def _without(text: str, key: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith(key + ":"))


@pytest.mark.parametrize("snippet,key,fix", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_config_is_one_line_naming_key_and_fix(snippet, key, fix):
    top = snippet.split(":", 1)[0]
    text = _without(BASE, top) + snippet + "\n"
    with pytest.raises(ConfigError) as err:
        config.parse(text, "/etc/shifter/shifter.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"/etc/shifter/shifter.yaml: {key}: "), message
    assert fix in message, message


@pytest.mark.parametrize("text,words", [
    ("", "empty"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("system: [\n", "line 2, column 1: not valid YAML"),
    (BASE + "system: again\n", "key 'system' appears twice (lines 1 and 5)"),
    ("image_dir: /x\n", "system: required key is missing"),
])
def test_unusable_files_are_one_line(text, words):
    with pytest.raises(ConfigError) as err:
        config.parse(text, "f.yaml")
    assert "\n" not in str(err.value)
    assert words in str(err.value)


def test_env_var_chooses_the_file_and_explicit_path_wins(tmp_path, monkeypatch):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(BASE)
    b.write_text(BASE.replace("system: local", "system: other"))
    monkeypatch.setenv(config.ENV_VAR, str(a))
    assert config.load(privileged=False).system == "local"
    assert config.load(str(b), privileged=False).system == "other"
    monkeypatch.delenv(config.ENV_VAR)
    assert config.config_path() == config.DEFAULT_PATH


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="no such config file; create it"):
        config.load(str(tmp_path / "nope.yaml"), privileged=False)


@pytest.fixture
def root_dir(tmp_path):
    need(os.geteuid() == 0, "ownership checks need root to create root- and user-owned files")
    d = tmp_path / "etc"
    d.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    path = d / "shifter.yaml"
    path.write_text(BASE)
    path.chmod(0o644)
    return path


def test_privileged_load_accepts_root_owned_file(root_dir):
    assert config.load(str(root_dir), privileged=True).system == "local"


@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_privileged_load_refuses_group_or_world_writable_file(root_dir, mode):
    root_dir.chmod(mode)
    with pytest.raises(ConfigError, match=r"config file can be written by non-root .*chmod go-w"):
        config.load(str(root_dir), privileged=True)
    assert config.load(str(root_dir), privileged=False).system == "local"


def test_privileged_load_refuses_user_owned_file(root_dir):
    os.chown(root_dir, NOT_ROOT, NOT_ROOT)
    with pytest.raises(ConfigError, match=rf"owner uid {NOT_ROOT}.*chown root"):
        config.load(str(root_dir), privileged=True)


def test_privileged_load_refuses_writable_directory(root_dir):
    root_dir.parent.chmod(0o777)
    with pytest.raises(ConfigError, match=r"directory .*/etc holding config file can be written by non-root"):
        config.load(str(root_dir), privileged=True)


def test_privileged_load_follows_symlinks_to_check_the_real_file(root_dir, tmp_path):
    target = tmp_path / "user.yaml"
    target.write_text(BASE)
    os.chown(target, NOT_ROOT, NOT_ROOT)
    link = root_dir.parent / "link.yaml"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match=f"owner uid {NOT_ROOT}"):
        config.load(str(link), privileged=True)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "shifter_site.cli", *args], capture_output=True, text=True,
                          env=env, cwd="/")


def test_cli_reports_bad_config_as_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "sshd: {port: 0}\n")
    result = _cli(str(bad))
    assert result.returncode == ConfigError.exit_code
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert f"{bad}: sshd.port: must be an integer >= 1 and <= 65535; fix the value" in result.stderr


def test_cli_accepts_good_config_and_prints_it_as_json(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    result = _cli(str(good), "--json")
    assert result.returncode == 0, result.stderr
    assert '"system": "local"' in result.stdout


@pytest.mark.parametrize("text,expected", [("0", 0), ("512", 512), ("1b", 1), ("4k", 4096), ("4K", 4096),
                                           ("100m", 100 * 2**20), ("2G", 2 * 2**30), ("1t", 2**40), ("1e", 2**60)])
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "1.5G", "-1", "G", "10 G", "10GB", "1x", " 1"])
def test_bad_sizes_are_refused_not_guessed(text):
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


@pytest.mark.parametrize("snippet,key", [
    ('system: "local\\n"', "system"),
    ('site_env: {unset: ["PATH\\n"]}', "site_env.unset[0]"),
    ('import_accounts: ["nobody\\n"]', "import_accounts[0]"),
    ('registries: {default: "http://r", platform: "linux/amd64\\n"}', "registries.platform"),
])
def test_trailing_newline_is_not_accepted(snippet, key):
    top = snippet.split(":", 1)[0]
    with pytest.raises(ConfigError, match=f": {re.escape(key)}: "):
        config.parse(_without(BASE, top) + snippet + "\n")


def test_size_with_trailing_newline_is_refused():
    with pytest.raises(ValueError):
        parse_size("10G\n")
