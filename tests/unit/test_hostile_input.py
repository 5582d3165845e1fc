"""Hostile and malformed input, generated: every parser of user or site text either gives
its result or the project's own one-line error, never another exception (a traceback).

Covers imagegw/reference.py parse, imagegw/sources.py canonical/endpoints/login_endpoint,
runtime/volumes.py parse (user and site rules) and combine, shifter_site/config.py parse,
shifter_site/sizes.py parse_size, runtime/enter.py parse_env_file, runtime/cli.py parse_args
and shifter_wlm/dispatch.py PluginArgs.parse. Layers: test_hostile_layers.py; the gateway's
HTTP API: test_hostile_api.py.

Runs in `make unit` (no root, no cluster): examples are bounded and derandomized, so a run
is reproducible and a failure is found again by the next run.
"""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from imagegw import reference, sources
from runtime import cli, enter, volumes
from shifter_site import config, sizes
from shifter_site.errors import ShifterError
from shifter_wlm.dispatch import PluginArgs

# the profile's count (tests/unit/conftest.py: fewer in `make unit`), at most 100; FUZZ_EXAMPLES=N for more
EXAMPLES = int(__import__("os").environ.get("FUZZ_EXAMPLES") or min(100, settings.default.max_examples))
FUZZ = settings(derandomize=True, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])

# text that looks like what is parsed (its separators and keywords), plus anything
SEPARATORS = [":", "/", "@", ".", "-", "_", "=", ",", ";", "[", "]", "..", "//", "sha256:", "docker:", "id:",
              "localhost", "perNodeCache", "size", "fs", "ro", "rec", "slave", "private", "\n", "\0", "\x7f",
              " ", "#", "\u2028", "\x0c", "\r", "é", "٣", "ǅ", "\udcff"]
pieces = st.one_of(st.sampled_from(SEPARATORS), st.text(max_size=6),
                   st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
texts = st.lists(pieces, max_size=12).map("".join)


def one_line(err: ShifterError) -> str:
    message = str(err)
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


# ---------------------------------------------------------------- image references

def _site_registries() -> config.Registries:
    return config.parse(
        "system: s\nimage_dir: /i\ngateway: {urls: ['http://127.0.0.1:1']}\n"
        "registries:\n  default: http://127.0.0.1:5000\n  hosts: {'reg.example.org:5000': 'https://reg.example.org:5000'}\n"
        "  mirrors: {'docker.io': ['http://127.0.0.1:5000']}\n").registries


REGISTRIES = _site_registries()


@FUZZ
@given(text=texts)
@example(text="docker:a:٣")              # a Unicode digit is \w
@example(text="docker:[::1]:5000/a:b")
@example(text="docker:" + "a/" * 200 + "a")
def test_any_reference_parses_canonicalises_and_reparses_or_is_one_line(text):
    try:
        ref = reference.parse(text)
        canon = sources.canonical(REGISTRIES, ref)
        urls = sources.endpoints(REGISTRIES, canon) if canon.itype == "docker" else []
    except reference.ReferenceError as err:
        one_line(err)
        return
    assert ref.tag in text
    if ref.itype == "docker":
        # what is accepted is what the registry API accepts: ASCII only, and it parses again
        # to the same image (the key the gateway files it under)
        assert canon.key.isascii() and canon.repository.isascii()
        assert sources.canonical(REGISTRIES, reference.parse(f"docker:{canon.key}")).key == canon.key
        assert urls and all(u.startswith(("http://", "https://")) for u in urls)


@FUZZ
@given(text=texts)
def test_any_login_registry_name_is_allowed_or_one_line(text):
    try:
        name, url = sources.login_endpoint(REGISTRIES, text)
    except reference.ReferenceError as err:
        one_line(err)
        return
    assert name in sources.allowed(REGISTRIES) and url.startswith(("http://", "https://"))


# ---------------------------------------------------------------- volume specs

@FUZZ
@given(text=texts, site=st.booleans())
@example(text="/a:/b:perNodeCache=size=99999999999999999999999999E", site=False)
@example(text="/a:/b:perNodeCache=size=1G,bs=0", site=False)
@example(text="/a:/b:perNodeCache=size=1G,fs=ext4,bs=1p", site=False)
def test_any_volume_spec_parses_and_round_trips_or_is_one_line(text, site):
    try:
        parsed = volumes.parse(text, site=site)
    except volumes.VolumeError as err:
        one_line(err)
        return
    for volume in parsed:
        assert volume.source.startswith("/") and volume.target.startswith("/")
        assert ".." not in volume.target.split("/") and "\0" not in volume.source + volume.target
        assert volumes.parse(volume.text(), site=site) == [volume]
    assert volumes.parse(volumes.combine(text, text), site=site) == parsed


# ---------------------------------------------------------------- sizes

@FUZZ
@given(text=texts)
@example(text="1" * 5000)
@example(text="٣G")
def test_any_size_is_bytes_or_a_value_error(text):
    try:
        n = sizes.parse_size(text)
    except ValueError as err:
        assert "\n" not in str(err)
        return
    assert isinstance(n, int) and n >= 0 and text[:1].isascii()


# ---------------------------------------------------------------- site config

BASE = {"system": "unit", "image_dir": "/images", "gateway": {"urls": ["http://127.0.0.1:1"]},
        "registries": {"default": "http://127.0.0.1:5000"}}
SECTIONS = ["system", "image_dir", "run_dir", "gateway", "registries", "site_mounts", "site_env", "modules",
            "default_modules", "per_node_cache", "sshd", "import_accounts", "max_group_count",
            "mount_propagation", "default_image_type", "urls", "default", "hosts", "mirrors", "from", "to",
            "flags", "set", "append", "prepend", "unset", "conflict", "size_limit", "allowed_fs", "port",
            "enabled", "max_image_size", "timeout", "admins", "platform"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), texts,
                    st.sampled_from(["/a", "http://[::1", "http://h:99999", "http://", "ro", "xfs", "1G", "0"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(st.sampled_from(SECTIONS), texts), inner, max_size=3)),
    max_leaves=12)


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(SECTIONS), values, max_size=4))
def test_any_config_values_load_or_are_one_line_naming_the_file(changes):
    text = yaml.safe_dump({**BASE, **changes}, allow_unicode=True)
    try:
        config.parse(text, "site.yaml")
    except config.ConfigError as err:
        assert one_line(err).startswith("site.yaml")


YAML_BITS = ["system: unit\n", "image_dir: /images\n", "gateway: {urls: ['http://127.0.0.1:1']}\n",
             "registries: {default: 'http://127.0.0.1:5000'}\n", "? [a, b]\n: c\n", "? {a: 1}\n: c\n",
             "&x [*x]\n", "modules: {1: {}}\n", "modules: {? [a]: {}}\n", "!!python/object:os.system {}\n",
             "site_env: {set: {? [x]: y}}\n", "- a\n", "a: !!binary aGVsbG8=\n", "a: 2001-01-01\n",
             "a: !!set {x, y}\n", "[" * 200, "{a: *b}\n", "\t", "a: |\n  x\n", "\ufeff", "%YAML 1.1\n---\n",
             "--- \n...\n", "modules: {a: {site_mounts: [{from: /x, to: /y, flags: [ro, ro]}]}}\n"]


@FUZZ
@given(parts=st.lists(st.one_of(st.sampled_from(YAML_BITS), texts), max_size=8))
@example(parts=["? [a, b]\n: c\n"])
@example(parts=["modules: {? [a]: {}}\n"])
@example(parts=["[" * 2000])
def test_any_config_text_loads_or_is_one_line_naming_the_file(parts):
    try:
        config.parse("".join(parts), "site.yaml")
    except config.ConfigError as err:
        assert one_line(err).startswith("site.yaml")


# ---------------------------------------------------------------- env files

env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
env_values = st.text(st.characters(blacklist_characters="\n\r\0", blacklist_categories=("Cs",)), max_size=12)


@FUZZ
@given(text=texts)
def test_any_env_file_gives_entries_or_one_line_naming_the_line(text):
    try:
        entries = enter.parse_env_file(text, "vars.env")
    except enter.EnterError as err:
        assert one_line(err).startswith("vars.env line ")
        return
    for entry in entries:
        enter.check_env_entry(entry, "again")


@FUZZ
@given(pairs=st.lists(st.tuples(env_names, env_values), max_size=6))
@example(pairs=[("A", "x\x0cB=y")])         # form feed: one value, not two variables
@example(pairs=[("A", "x\u2028B=y")])       # Unicode line separator
@example(pairs=[("A", "x\x1cB=y")])
def test_each_line_of_an_env_file_is_one_variable_as_written(pairs):
    """A value is the rest of its line, whatever characters it holds: only a newline ends it
    (as Docker's --env-file reads it), never a form feed or a Unicode line separator."""
    text = "".join(f"{name}={value}\n" for name, value in pairs)
    assert enter.parse_env_file(text, "vars.env") == tuple(f"{n}={v}" for n, v in pairs)


def test_an_env_file_with_windows_line_ends_means_the_same():
    assert enter.parse_env_file("A=1\r\nB=two words\r\n", "f") == ("A=1", "B=two words")


# ---------------------------------------------------------------- shifter's command line

@FUZZ
@given(argv=st.lists(st.one_of(st.sampled_from(["-i", "-V", "-e", "-m", "-w", "-E", "-v", "-h", "--", "-",
                                                "--image", "--image=", "--volume", "--env", "--env-file",
                                                "--module", "--workdir", "--workdir=", "--entrypoint",
                                                "--entrypoint=", "--clearenv", "--clearenv=1", "--verbose",
                                                "-iV", "-Ew", "-x", "--x"]), texts), max_size=8))
def test_any_command_line_parses_or_is_a_usage_error(argv):
    try:
        opts = cli.parse_args(argv)
    except cli.UsageError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert all(isinstance(v, str) for v in opts["volume"] + opts["env"] + opts["command"])
    assert opts["command"] == argv[len(argv) - len(opts["command"]):]


# ---------------------------------------------------------------- plugin arguments

ARG_NAMES = ["shifter_config", "python", "enable_ccm", "enable_sshd", "extern_setup", "extern_cgroup", "other", ""]
BOOL_TEXT = ["1", "0", "yes", "no", "true", "false", "YES", "True", "", "2", "on"]


BOOL_WORDS = {"1": True, "yes": True, "true": True, "0": False, "no": False, "false": False}  # and nothing else


def c_shim_accepts(args: list[str]) -> bool:
    """spank/shim.c check_args's rules (the C side checks plugstack.conf first)."""
    for arg in args:
        name, eq, value = arg.partition("=")
        if name not in ("shifter_config", "python", "enable_ccm", "enable_sshd") or not eq:
            return False
        if name.startswith("enable_") and value not in BOOL_WORDS:
            return False
        if name in ("shifter_config", "python") and not value.startswith("/"):
            return False
    return True


@FUZZ
@given(args=st.lists(st.one_of(
    st.builds(lambda n, v: f"{n}={v}", st.sampled_from(ARG_NAMES), st.one_of(st.sampled_from(BOOL_TEXT), texts)),
    st.sampled_from(ARG_NAMES), texts), max_size=5))
@example(args=["enable_ccm=1", "enable_ccm=0"])
@example(args=["enable_sshd=maybe"])
@example(args=["enable_sshd=YES"])
@example(args=["enable_sshd=yes", "enable_ccm=0", "shifter_config=/etc/shifter/x.yaml", "python=/usr/bin/python3"])
def test_plugin_arguments_mean_what_the_c_shim_checked_or_are_one_line(args):
    try:
        parsed = PluginArgs.parse(args)
    except config.ConfigError as err:
        assert "plugstack.conf" in one_line(err)
        return
    assert c_shim_accepts(args)
    named = dict(a.partition("=")[::2] for a in args)
    assert len(named) == len(args), "an argument given twice must be refused, not one of them dropped"
    for key in ("enable_ccm", "enable_sshd"):
        if key in named:
            assert getattr(parsed, key) is BOOL_WORDS[named[key]]
    if "shifter_config" in named:
        assert parsed.shifter_config == named["shifter_config"]


@pytest.mark.parametrize("args,words", [
    (["enable_sshd=maybe"], "enable_sshd"),
    (["enable_ccm=1", "enable_ccm=0"], "twice"),
    (["shifter_config=etc/shifter.yaml"], "absolute"),
])
def test_plugin_argument_mistakes_name_the_argument(args, words):
    with pytest.raises(config.ConfigError, match=words):
        PluginArgs.parse(args)


# ---------------------------------------------------------------- Slurm's answers (root reads them in the prolog)

from shifter_wlm import slurm  # noqa: E402

SLURM_PIECES = ["n", "1", "[", "]", "-", ",", "0", "01", "9" * 12, "²", "٣", "\n", " ", "|", "x"]
slurm_texts = st.lists(st.one_of(st.sampled_from(SLURM_PIECES), st.text(max_size=4)), max_size=14).map("".join)


@FUZZ
@given(text=slurm_texts)
@example(text="²")
@example(text="n[1-²]")
def test_host_lists_and_cpu_ids_expand_within_bounds_or_are_one_line(text):
    try:
        names = slurm.expand_hostlist(text, limit=64)
        assert len(names) <= 64
    except slurm.SlurmQueryError as err:
        one_line(err)
    try:
        assert 0 <= slurm.parse_cpu_ids(text, limit=4096) <= 4096
    except slurm.SlurmQueryError as err:
        one_line(err)


@FUZZ
@given(comment=slurm_texts)
@example(comment="\n   Nodes=n1 CPU_IDs=² Mem=0 GRES=")
def test_a_users_text_in_scontrols_record_adds_no_node_or_cpu(comment):
    """scontrol prints a job's --comment raw (newlines included): a line it forges is either
    ignored or makes the per-node CPUs unknown ({}), never an error other than Slurm's own."""
    show = f"JobId=5 Comment={comment}\n   Nodes=n1 CPU_IDs=0-1 Mem=0 GRES=\n"
    cpus = slurm.cpus_per_node(show, ["n1"], 2)
    assert cpus in ({"n1": 2}, {})


# ---------------------------------------------------------------- an original udiRoot.conf; shifterimg's -u/-g

from imagegw import cli as imgcli  # noqa: E402
from shifter_site import udiroot  # noqa: E402

UDI_KEYS = ["system", "imagePath", "imageGateway", "gatewayTimeout", "maxGroupCount", "siteFs", "siteEnv",
            "siteEnvAppend", "usersToImport", "mountPropagationStyle", "perNodeCachePath", "module_gpu_siteFs",
            "module_gpu_userhook", "bogus", ""]
udi_lines = st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(UDI_KEYS),
                               st.one_of(st.sampled_from(["²", "٣", "12", "/a:/b", "/a:/b:ro", "x y"]), texts))
                     | texts, max_size=6).map("\n".join)


@FUZZ
@given(text=udi_lines)
@example(text="maxGroupCount=²")
@example(text="gatewayTimeout=²")
def test_any_udiroot_conf_translates_or_is_one_line(text):
    try:
        result = udiroot.translate(text)
    except ShifterError as err:
        one_line(err)
        return
    assert result.data.get("max_group_count", 0) != 3 or "maxGroupCount=3" in text   # '٣' is not 3


@FUZZ
@given(text=st.one_of(st.sampled_from(["²", "٣", "0", "root", "nobody", "1,²", ""]), texts))
def test_shifterimg_user_and_group_lists_are_ids_or_a_usage_error(text):
    for kind in ("user", "group"):
        try:
            ids = imgcli._ids(text, kind)
        except imgcli.UsageError as err:
            assert str(err) and "\n" not in str(err)
            continue
        assert all(isinstance(i, int) for i in ids)
