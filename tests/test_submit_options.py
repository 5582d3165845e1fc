"""Submit-side rules for --image/--volume/--module/--ccm (pure parts), and the dispatcher's
contract: a ShifterError is one line in Slurm's output and -1, nothing else runs."""

from __future__ import annotations

import re

import pytest

from shifter_site import config
from shifter_wlm import dispatch, submit
from shifter_wlm.options import Options as RawOptions
from shifter_wlm.options import PluginArgs

CFG = config.parse("""
system: t
image_dir: /images
gateway: {urls: ["http://127.0.0.1:1"]}
registries: {default: "http://127.0.0.1:5000"}
modules:
  gpu: {}
  mpich: {conflict: [openmpi]}
  openmpi: {conflict: [mpich]}
  old: {enabled: false}
""")


@pytest.mark.parametrize("options,words", [
    (RawOptions(volume="/a:/b"), "--volume needs --image"),
    (RawOptions(module="gpu"), "--module needs --image"),
    (RawOptions(ccm=True), "--ccm needs --image"),
    (RawOptions(image=""), "--image is empty"),
])
def test_option_combinations_refused(options, words):
    with pytest.raises(submit.OptionError, match=words):
        submit.check_combination(options)


def test_inside_a_job_volume_and_module_alone_apply_to_the_jobs_image():
    submit.check_combination(RawOptions(volume="/a:/b", module="gpu"), in_job=True)
    with pytest.raises(submit.OptionError, match="--image is empty"):
        submit.check_combination(RawOptions(image=""), in_job=True)


def test_plain_job_and_image_job_pass_the_combination_rules():
    submit.check_combination(RawOptions())
    submit.check_combination(RawOptions(image="docker:ubuntu:22.04", volume="/a:/b", module="gpu", ccm=True))


@pytest.mark.parametrize("text,expected", [("gpu", ["gpu"]), ("gpu,mpich", ["gpu", "mpich"]), ("none", [])])
def test_modules_accepted(text, expected):
    assert submit.check_modules(text, CFG) == expected


@pytest.mark.parametrize("text,words", [
    ("cuda", "'cuda' is not a module here (available: gpu, mpich, openmpi)"),
    ("old", "'old' is disabled"),
    ("mpich,openmpi", "cannot be used together"),
    ("gpu,,mpich", "empty name"),
    ("gpu,gpu", "names a module twice"),
    ("", "empty name"),
])
def test_modules_refused(text, words):
    from runtime.modules import ModuleError

    with pytest.raises(ModuleError, match=re.escape(words)):
        submit.check_modules(text, CFG)


def test_plugin_args_parse():
    args = PluginArgs.parse(["shifter_config=/etc/x.yaml", "enable_sshd=1", "enable_ccm=0", "python=/p"])
    assert args.shifter_config == "/etc/x.yaml" and args.enable_sshd and not args.enable_ccm and args.python == "/p"
    assert PluginArgs.parse([]).enable_sshd is None  # not given: the site config decides
    assert PluginArgs.parse([]).shifter_config == "/etc/shifter/shifter.yaml"


def test_options_cross_the_boundary_as_one_name_value_list():
    options = RawOptions.from_list(["image=docker:a:1", "volume=/a:/b;/c:/d:perNodeCache=size=1G", "ccm=1"])
    assert (options.image, options.volume, options.module, options.ccm) == (
        "docker:a:1", "/a:/b;/c:/d:perNodeCache=size=1G", None, True)
    assert RawOptions.from_list([]).ccm is False and RawOptions.from_list([]).image is None
    with pytest.raises(TypeError, match="not a plugin option: entry"):
        RawOptions.from_list(["entry=/bin/sh"])


@pytest.mark.parametrize("word,value", [("1", True), ("yes", True), ("true", True),
                                        ("0", False), ("no", False), ("false", False)])
def test_plugin_boolean_words(word, value):
    args = PluginArgs.parse([f"enable_sshd={word}", f"enable_ccm={word}"])
    assert args.enable_sshd is value and args.enable_ccm is value


class FakeSpank:
    def __init__(self, context):
        self.context = context
        self.errors: list[str] = []

    def error(self, message):
        self.errors.append(message)


def test_dispatch_turns_user_errors_into_one_line_and_minus_one(mocker):
    spank = FakeSpank("allocator")
    mocker.patch.object(dispatch, "Spank", return_value=spank)
    mocker.patch.object(dispatch, "SlurmLogStream")
    ffi = mocker.Mock()
    ffi.NULL = None
    ffi.string = lambda p: p
    dispatch.bind(ffi, mocker.Mock())
    rc = dispatch.run(b"slurm_spank_init_post_opt", object(), 0, [], [b"volume=/a:/b", None])
    assert rc == -1
    assert spank.errors == ["shifter: --volume needs --image: add --image=TYPE:TAG (e.g. --image=docker:ubuntu:22.04)"]


def test_dispatch_ignores_hooks_it_has_no_route_for(mocker):
    spank = FakeSpank("slurmd")
    mocker.patch.object(dispatch, "Spank", return_value=spank)
    ffi = mocker.Mock()
    ffi.NULL = None
    ffi.string = lambda p: p
    dispatch.bind(ffi, mocker.Mock())
    assert dispatch.run(b"slurm_spank_init_post_opt", object(), 0, [], [b"volume=/a:/b", None]) == 0
    assert spank.errors == []
