"""What the container's process gets: its environment and its command line.

Covers runtime/enter.py: environment, command, check_env_entry, parse_env_file (the pure
parts the `shifter` CLI and the Slurm task hook share).
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from runtime.enter import EnterError, check_env_entry, command, environment, parse_env_file
from runtime.spec import ContainerSpec, SiteEnv, User
from shifter_site.errors import ShifterError

ID = "ab" * 32
USER = User(name="alice", uid=1001, gid=1001, home="/home/alice", shell="/bin/bash")
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
values = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=20)


def spec(**kw) -> ContainerSpec:
    return ContainerSpec(image_id=ID, squashfs=f"/images/{ID}.squashfs", user=USER, **kw)


def test_later_sources_win_host_image_env_file_env_then_site():
    s = spec(image_env=("A=image", "B=image", "C=image", "D=image"), env_file=("B=file", "C=file", "D=file"),
             env=("C=cli", "D=cli"), site_env=(SiteEnv(set=(("D", "site"),)),))
    env = environment(s, {"A": "host", "H": "host"})
    assert (env["H"], env["A"], env["B"], env["C"], env["D"]) == ("host", "image", "file", "cli", "site")


def test_image_request_and_id_are_exported():
    assert environment(spec(image_request="docker:ubuntu:22.04"), {})["SHIFTER_IMAGEREQUEST"] == "docker:ubuntu:22.04"
    env = environment(spec(), {})
    assert env["SHIFTER_IMAGE"] == ID and env["SHIFTER_IMAGEREQUEST"] == f"id:{ID}"


def test_clearenv_drops_the_callers_environment_only():
    env = environment(spec(clearenv=True, image_env=("PATH=/usr/bin",)), {"SECRET": "x", "PATH": "/host"})
    assert "SECRET" not in env and env["PATH"] == "/usr/bin"


def test_modules_then_global_site_env_set_append_prepend_unset():
    module = SiteEnv(set=(("WHO", "module"), ("GONE", "x")), prepend=(("PATH", "/mod/bin"),))
    glob = SiteEnv(set=(("WHO", "global"),), append=(("PATH", "/site/bin"), ("EMPTY", "/e")),
                   prepend=(("NEW", "/n"),), unset=("GONE",))
    env = environment(spec(site_env=(module, glob), image_env=("PATH=/usr/bin",)), {})
    assert env["WHO"] == "global"
    assert env["PATH"] == "/mod/bin:/usr/bin:/site/bin"
    assert env["EMPTY"] == "/e" and env["NEW"] == "/n"  # no stray ':' on an unset variable
    assert "GONE" not in env


@given(host=st.dictionaries(names, values, max_size=8), cli=st.dictionaries(names, values, max_size=8))
def test_env_entries_always_reach_the_container_unchanged(host, cli):
    env = environment(spec(env=tuple(f"{k}={v}" for k, v in cli.items())), host)
    for name, value in cli.items():
        if name not in ("SHIFTER_IMAGE", "SHIFTER_IMAGEREQUEST"):
            assert env[name] == value
    for name, value in host.items():
        if name not in cli and not name.startswith("SHIFTER_IMAGE"):
            assert env[name] == value


@pytest.mark.parametrize("entry", ["NOEQUALS", "=v", "1A=v", "A-B=v", "A B=v", "A=x\0y", ""])
def test_bad_env_entries_are_refused_naming_the_source(entry):
    with pytest.raises(EnterError) as err:
        check_env_entry(entry, "--env")
    assert str(err.value).startswith("--env") and "\n" not in str(err.value)
    assert isinstance(err.value, ShifterError)


def test_env_file_skips_blanks_and_comments_and_names_the_bad_line():
    assert parse_env_file("# c\n\nA=1\n  # indented comment\nB=two words\n", "f") == ("A=1", "B=two words")
    with pytest.raises(EnterError, match="vars.env line 3"):
        parse_env_file("A=1\n\nnot a variable\n", "vars.env")


@pytest.mark.parametrize("kw,argv,expected", [
    ({}, ["/bin/echo", "hi"], ["/bin/echo", "hi"]),                      # the command line wins
    ({"image_cmd": ("/cmd",), "image_entrypoint": ("/ep",)}, ["ls"], ["ls"]),  # image's ignored without --entrypoint
    ({}, [], ["/bin/zsh"]),                                              # no command: $SHELL
    ({"entrypoint": "", "image_entrypoint": ("/ep", "-x"), "image_cmd": ("/cmd",)}, [], ["/ep", "-x", "/cmd"]),
    ({"entrypoint": "", "image_entrypoint": ("/ep",), "image_cmd": ("/cmd",)}, ["a"], ["/ep", "a"]),
    ({"entrypoint": "", "image_cmd": ("/cmd", "x")}, [], ["/cmd", "x"]),
    ({"entrypoint": "/my/ep"}, ["a", "b"], ["/my/ep", "a", "b"]),
])
def test_command_follows_dockers_rules(kw, argv, expected):
    assert command(spec(**kw), argv, {"SHELL": "/bin/zsh"}) == expected


def test_no_command_and_no_shell_runs_bin_sh():
    assert command(spec(), [], {}) == ["/bin/sh"]


def test_bare_entrypoint_with_nothing_to_run_is_refused():
    with pytest.raises(EnterError, match="--entrypoint"):
        command(spec(entrypoint=""), [], {})


@given(argv=st.lists(values.filter(bool), min_size=1, max_size=6))
def test_a_given_command_is_run_verbatim(argv):
    assert command(spec(image_cmd=("/cmd",)), list(argv), {}) == argv
