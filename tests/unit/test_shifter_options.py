"""Option parsing as users see it: `shifter`'s command line and the submit-side checks of
`--image/--volume/--module/--ccm` (sbatch, salloc, srun).

Covers runtime/cli.py: parse_args (getopt_long rules); shifter_wlm/submit.py:
check_combination, check_modules, check_volumes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from runtime.cli import UsageError, parse_args
from shifter_site.errors import ShifterError
from shifter_wlm import submit
from shifter_wlm.options import Options as RawOptions

words = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=12)


@pytest.mark.parametrize("argv", [
    ["--image=docker:a:1", "cmd"], ["--image", "docker:a:1", "cmd"], ["-idocker:a:1", "cmd"], ["-i", "docker:a:1", "cmd"],
])
def test_image_in_every_getopt_spelling(argv):
    opts = parse_args(argv)
    assert opts["image"] == "docker:a:1" and opts["command"] == ["cmd"]


def test_volumes_and_env_accumulate_in_order():
    opts = parse_args(["-V", "/a:/b", "--volume=/c:/d", "-e", "A=1", "--env", "B=2", "true"])
    assert opts["volume"] == ["/a:/b", "/c:/d"] and opts["env"] == ["A=1", "B=2"]


def test_flags_bundle_and_optional_arguments_are_attached_only():
    opts = parse_args(["-Ev", "-w", "cmd"])
    assert opts["clearenv"] and opts["verbose"] and opts["workdir"] == "" and opts["command"] == ["cmd"]
    assert parse_args(["-w/tmp", "x"])["workdir"] == "/tmp"
    assert parse_args(["--workdir=/tmp", "x"])["workdir"] == "/tmp"
    opts = parse_args(["--entrypoint", "x"])
    assert opts["entrypoint"] == "" and opts["command"] == ["x"]   # not --entrypoint's value
    assert parse_args(["--entrypoint=/ep"])["entrypoint"] == "/ep"


def test_no_options_means_defaults():
    opts = parse_args([])
    assert opts["image"] is None and opts["volume"] == [] and opts["command"] == []
    assert opts["workdir"] is None and opts["entrypoint"] is None and not opts["clearenv"]


@given(command=st.lists(words, max_size=6))
def test_everything_after_double_dash_is_the_command(command):
    assert parse_args(["-i", "id:x", "--", *command])["command"] == command


@given(first=words.filter(lambda w: not w.startswith("-") or w == "-"), rest=st.lists(words, max_size=5))
def test_parsing_stops_at_the_first_non_option(first, rest):
    """`shifter -i img mpirun -n 4 ./a.out`: the command's own options are not shifter's."""
    assert parse_args(["-i", "id:x", first, *rest])["command"] == [first, *rest]


@pytest.mark.parametrize("argv,words", [
    (["--bogus"], "--bogus"), (["-x"], "-x"), (["--image"], "needs a value"), (["-i"], "needs a value"),
    (["-i", "a", "--image=b"], "twice"), (["--clearenv=1"], "takes no value"), (["--workdir="], "empty value"),
])
def test_command_line_mistakes_are_one_line(argv, words):
    with pytest.raises(UsageError, match=words) as err:
        parse_args(argv)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ submit side (sbatch/srun)


@pytest.mark.parametrize("options", [RawOptions(volume="/a:/b"), RawOptions(module="gpu"), RawOptions(ccm=True),
                                     RawOptions(image="")])
def test_options_without_a_usable_image_refuse_the_submission(options):
    with pytest.raises(ShifterError, match="--image"):
        submit.check_combination(options)


def test_jobs_without_container_options_pass():
    submit.check_combination(RawOptions())


def test_module_list(site):
    assert submit.check_modules("gpu,mpich", site) == ["gpu", "mpich"]
    assert submit.check_modules("none", site) == []
    for text, words in (("cuda", "cuda"), ("old", "old"), ("mpich,openmpi", "openmpi"), ("gpu,,mpich", "empty"),
                        ("gpu,gpu", "twice")):
        with pytest.raises(ShifterError, match=words):
            submit.check_modules(text, site)


def test_volume_checks_include_the_site_cache_limits(site, tmp_path):
    a, c = tmp_path / "a", tmp_path / "c"
    a.mkdir()
    c.mkdir()
    submit.check_volumes(f"{a}:/b;{c}:/d:ro", site)  # sources are checked at submit: they exist
    with pytest.raises(ShifterError, match="limit"):
        submit.check_volumes(f"{tmp_path}:/cache:perNodeCache=size=20G", site)
    with pytest.raises(ShifterError, match="/etc"):
        submit.check_volumes(f"{a}:/etc/x", site)
    with pytest.raises(ShifterError, match="No such file"):
        submit.check_volumes(f"{tmp_path}/missing:/b", site)


# ---------------------------------------------------------------- the original's habits


@pytest.mark.parametrize("argv", [["--entry", "x"], ["--entry=/ep", "x"]])
def test_entry_is_the_entrypoint_option(argv):
    assert parse_args(argv)["entrypoint"] == parse_args([a.replace("--entry", "--entrypoint") for a in argv])["entrypoint"]
    assert parse_args(argv)["command"] == ["x"]


@pytest.mark.parametrize("argv", [["--entry", "--entrypoint", "x"], ["--entrypoint=/a", "--entry=/b"],
                                  ["--entrypoint", "--entrypoint=/b"]])
def test_entry_with_entrypoint_is_one_clear_error(argv):
    with pytest.raises(UsageError) as err:
        parse_args(argv)
    assert "\n" not in str(err.value) and "give one of them once" in str(err.value)


def test_image_from_the_environment_as_the_original_reads_it():
    from runtime.cli import image_from_env

    digest = "a" * 64
    assert image_from_env({}) is None
    assert image_from_env({"SHIFTER_IMAGETYPE": "docker", "SHIFTER_IMAGE": "ubuntu:22.04"}) == "docker:ubuntu:22.04"
    assert image_from_env({"SHIFTER_IMAGETYPE": "id", "SHIFTER_IMAGE": digest}) == f"id:{digest}"
    assert image_from_env({"SHIFTER_IMAGE": digest}) == f"id:{digest}"   # what a job exports
    assert image_from_env({"SHIFTER_IMAGEREQUEST": "docker:a:1"}) == "docker:a:1"
    # the pair wins over the request, as in the original's parse_environment
    assert image_from_env({"SHIFTER_IMAGETYPE": "docker", "SHIFTER_IMAGE": "b:2",
                           "SHIFTER_IMAGEREQUEST": "docker:a:1"}) == "docker:b:2"


@pytest.mark.parametrize("env", [{"SHIFTER_IMAGE": "ubuntu:22.04"}, {"SHIFTER_IMAGETYPE": "docker"}])
def test_half_of_the_image_pair_is_refused(env):
    from runtime.cli import image_from_env

    with pytest.raises(UsageError) as err:
        image_from_env(env)
    assert "\n" not in str(err.value) and "set both" in str(err.value)
