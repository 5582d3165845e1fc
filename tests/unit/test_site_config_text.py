"""The site configuration parsed from small texts: defaults, and one-line messages naming
the key and the fix.

Covers shifter_site/config.py: parse (no file, no ownership check: that part is root's and
is tested in tests/test_site_config.py).
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from shifter_site import config
from shifter_site.errors import ConfigError

BASE = """\
system: unit
image_dir: /images
gateway: {urls: ["http://127.0.0.1:1"]}
registries: {default: "http://127.0.0.1:5000"}
"""


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        config.parse(text, "site.yaml")
    message = str(err.value)
    assert message.startswith("site.yaml") and "\n" not in message
    return message


def test_the_four_required_keys_are_enough(site):
    cfg = config.parse(BASE)
    assert cfg.per_node_cache.size_limit_bytes == 100 * 1024**3 and cfg.mount_propagation == "private"
    assert cfg.default_image_type == "docker" and cfg.modules == {} and cfg.site_mounts == []
    assert cfg.etc_mode == "generated" and cfg.site_pre_mount_hook is None and cfg.hook_timeout == 60


def test_the_shared_unit_site_parses_as_written(site):
    assert [m.to for m in site.site_mounts] == ["/global/homes", "/global/scratch"]
    assert site.site_mounts[1].flags == ["rec", "slave"]
    assert site.modules["mpich"].conflict == ["openmpi"] and not site.modules["old"].enabled
    assert site.default_modules == ["mpich"]


@pytest.mark.parametrize("extra,words", [
    ("colour: blue\n", "colour"),                                         # unknown key
    ("run_dir: var/run\n", "run_dir"),                                    # relative path
    ("run_dir: /var/../etc\n", ".."),
    ("max_group_count: many\n", "max_group_count"),
    ("mount_propagation: shared\n", "mount_propagation"),
    ("per_node_cache: {size_limit: lots}\n", "size_limit"),
    ("per_node_cache: {allowed_fs: [btrfs]}\n", "allowed_fs"),
    ("default_modules: [gpu]\n", "gpu"),                                  # not defined
    ("modules: {a: {conflict: [b]}}\n", "b"),
    ("modules: {a: {colour: red}}\n", "modules.a"),
    ("site_env: {set: {1BAD: x}}\n", "1BAD"),
    ("site_env: {set: {N: 3}}\n", "quote"),
    ("site_mounts: [{from: /a, to: /b, flags: [slave, private]}]\n", "exclude"),
    ("sshd: {enabled: true}\n", "opt_udi_image"),
    ("system: other\n", "twice"),                                         # duplicate key
    ("etc_mode: site\n", "etc_mode: 'site' takes passwd and group from etc_dir"),
    ("etc_mode: dynamic\n", "etc_mode"),
    ("site_pre_mount_hook: pre.sh\n", "site_pre_mount_hook"),
    ("site_post_mount_hook: /a/../b.sh\n", "site_post_mount_hook"),
    ("hook_timeout: 0\n", "hook_timeout"),
])
def test_mistakes_name_the_key(extra, words):
    assert words in refused(BASE + extra)


@pytest.mark.parametrize("text,words", [("", "empty"), ("- a\n- b\n", "mapping"), ("system: [\n", "YAML")])
def test_unusable_files_say_why(text, words):
    assert words in refused(text)


@given(name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True))
def test_any_plain_system_name_is_accepted(name):
    text = BASE.replace("system: unit", f"system: '{name}'")
    assert config.parse(text).system == name


@given(size=st.integers(1, 2**40), unit=st.sampled_from(["", "k", "m", "g", "K", "M", "G"]))
def test_cache_size_limits_are_in_1024s(size, unit):
    cfg = config.parse(BASE + f"per_node_cache: {{size_limit: '{size}{unit}'}}\n")
    assert cfg.per_node_cache.size_limit_bytes == size * 1024 ** "_kmg".index(unit.lower() or "_")


NUMBERS = """\
system: unit
image_dir: /images
registries: {default: "http://127.0.0.1:5000"}
"""
# every number a site sets, as `section.key` (gateway.* in the gateway section)
SECONDS = ["gateway.timeout", "gateway.repull_after", "gateway.expire_after", "gateway.autoexpire_every",
           "hook_timeout"]


def _with(key: str, value: str) -> str:
    if key.startswith("gateway."):
        return NUMBERS + f'gateway: {{urls: ["http://127.0.0.1:1"], {key.split(".")[1]}: {value}}}\n'
    return NUMBERS + 'gateway: {urls: ["http://127.0.0.1:1"]}\n' + f"{key}: {value}\n"


@pytest.mark.parametrize("key", SECONDS)
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "-1", "1.0e+12"])
def test_a_duration_that_is_not_a_finite_number_of_seconds_is_refused(key, value):
    """YAML's .inf and .nan are floats: `timeout: .inf` passed `> 0` and hung clients forever."""
    message = refused(_with(key, value))
    assert message.startswith(f"site.yaml: {key}: must be a finite number (not .inf or .nan)"), message
    assert message.endswith("; fix the value"), message


@pytest.mark.parametrize("key", ["gateway.timeout", "hook_timeout"])
def test_a_timeout_of_zero_is_refused(key):
    assert "must be a finite number (not .inf or .nan) > 0" in refused(_with(key, "0"))


@pytest.mark.parametrize("key,value", [("gateway.expire_after", "0"), ("gateway.autoexpire_every", "0"),
                                       ("gateway.timeout", "0.5"), ("gateway.repull_after", "315360000")])
def test_durations_in_range_are_kept(key, value):
    cfg = config.parse(_with(key, value))
    section = cfg.gateway if key.startswith("gateway.") else cfg
    assert getattr(section, key.split(".")[-1]) == float(value)


@pytest.mark.parametrize("extra,words", [
    ("sshd: {port: 0}\n", "sshd.port: must be an integer >= 1 and <= 65535; fix the value"),
    ("sshd: {port_count: 70000}\n", "sshd.port_count: must be an integer >= 1 and <= 65535"),
    ("max_group_count: -1\n", "max_group_count: must be an integer >= 0 and <= 65536"),
])
def test_integers_out_of_range_name_the_range(extra, words):
    assert words in refused(NUMBERS + 'gateway: {urls: ["http://127.0.0.1:1"]}\n' + extra)


def test_gateway_integers_out_of_range_name_the_range():
    assert "gateway.max_pulls_per_user: must be an integer >= 1 and <= 1000" in refused(
        NUMBERS + 'gateway: {urls: ["http://127.0.0.1:1"], max_pulls_per_user: 0}\n')
    assert "gateway.max_image_files" in refused(NUMBERS + 'gateway: {urls: ["http://127.0.0.1:1"], max_image_files: 0}\n')
