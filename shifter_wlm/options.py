"""The plugin's two tables: its SPANK options (`--image`...) and its plugstack.conf
arguments (`shifter_config=`...). The one place where either is declared.

The C shim (spank/shim.c) gets both tables from here: `spank/build.py` writes them into a
generated header when the plugin is built, so the C registers exactly these options,
stores their values by row, and hands them to Python as one NULL-terminated list of
"name=value" strings (`Options.from_list`). Adding an option is a row in OPTIONS and the
code that reads `options.<name>`; docs/architecture.md shows a worked example.

This module is on a step's hot path (dispatch imports it for every hook): plain classes,
no dataclasses, nothing imported but the error type.
"""

from __future__ import annotations

from shifter_site.errors import ConfigError, ShifterError


class OptionError(ShifterError):
    """A --image/--volume/--module value is wrong; the message says how to fix it."""

    exit_code = 2


class Option:
    """One SPANK option (one row of OPTIONS).

    name, arg, help   as `sbatch --help` shows them (arg None: a flag, no value)
    kind              "store" (each use replaces the value), "append" (uses are joined
                      with ';', as shifter -V accumulates) or "flag"
    enabled_by        a boolean plugin argument that must be true for the option to exist
                      (None: always registered)
    needs_image       refused without --image outside a job (inside one, the job's image)
    nonempty          an empty value is refused, saying "give <nonempty>" (None: allowed)
    step_env, compare how `srun` inside a job tells that the option asks for nothing new,
                      so that it does not start Python (spank/shim.c already_resolved):
                      step_env is the SHIFTER_* variable the submit side exported the job's
                      value as, compared as "same" text or as "mappings" (runtime.volumes.
                      combine adds nothing); step_env None: the option does not change a step
    """

    __slots__ = ("name", "arg", "help", "kind", "enabled_by", "needs_image", "nonempty", "step_env", "compare")

    def __init__(self, name: str, arg: str | None, help: str, kind: str = "store", *,
                 enabled_by: str | None = None, needs_image: bool = False, nonempty: str | None = None,
                 step_env: str | None = None, compare: str = "same"):
        self.name, self.arg, self.help, self.kind = name, arg, help, kind
        self.enabled_by, self.needs_image, self.nonempty = enabled_by, needs_image, nonempty
        self.step_env, self.compare = step_env, compare


OPTIONS = (
    Option("image", "type:tag", "Container image to run this job's `shifter` steps in, e.g. docker:ubuntu:22.04",
           nonempty="an image, e.g. --image=docker:ubuntu:22.04", step_env="SHIFTER_IMAGEREQUEST"),
    Option("volume", "from:to[:flags][;...]", "Host paths to mount into the container (needs --image)",
           kind="append", needs_image=True, step_env="SHIFTER_VOLUME", compare="mappings"),
    Option("module", "name[,name...]|none", "Site modules for the container (GPU, MPI...)",
           needs_image=True, step_env="SHIFTER_MODULE"),
    Option("ccm", None, "Run the batch script inside the container, with an sshd on every node",
           kind="flag", enabled_by="enable_ccm", needs_image=True),
)
OPTION_NAMES = tuple(o.name for o in OPTIONS)


class Options:
    """This job's or step's option values exactly as the user typed them (None: not given;
    a flag is True or False). Attributes are the rows of OPTIONS."""

    __slots__ = OPTION_NAMES

    def __init__(self, **values):
        unknown = values.keys() - set(OPTION_NAMES)
        if unknown:
            raise TypeError(f"not a plugin option: {', '.join(sorted(unknown))}")
        for option in OPTIONS:
            setattr(self, option.name, values.get(option.name, False if option.kind == "flag" else None))

    @classmethod
    def from_list(cls, items: list[str]) -> "Options":
        """From the C shim's list of "name=value" (only the options that were given)."""
        values: dict = {}
        for item in items:
            name, _, value = item.partition("=")
            values[name] = True if name in _FLAGS else value
        return cls(**values)


_FLAGS = frozenset(o.name for o in OPTIONS if o.kind == "flag")
_EXAMPLE = "add --image=TYPE:TAG (e.g. --image=docker:ubuntu:22.04)"


def check(options: Options, in_job: bool = False) -> None:
    """The rules that need no configuration (pure). Inside a job (srun in an allocation) an
    option that needs an image applies to the job's."""
    for option in OPTIONS:
        value = getattr(options, option.name)
        if option.needs_image and value not in (None, False) and options.image is None and not in_job:
            raise OptionError(f"--{option.name} needs --image: {_EXAMPLE}")
    for option in OPTIONS:
        if option.nonempty and getattr(options, option.name) == "":
            raise OptionError(f"--{option.name} is empty: give {option.nonempty}")


# ---------------------------------------------------------------- plugstack.conf arguments

# (name, kind, value when not given): "path" must be absolute; "bool" one of BOOLS. The C
# shim checks every argument against this table in every context (a wrong one fails every
# job with one line naming it); Python reads the already checked list.
PLUGIN_ARGS = (
    ("shifter_config", "path", "/etc/shifter/shifter.yaml"),
    ("python", "path", None),          # read by spank/pyentry.c: the Python it starts
    ("enable_ccm", "bool", False),
    ("enable_sshd", "bool", None),     # None: as the site config's sshd.enabled says
)
# the original Shifter's plugin had these; they do nothing here, so they are refused
UNSUPPORTED_ARGS = ("extern_setup", "extern_cgroup")
BOOLS = {"1": True, "yes": True, "true": True, "0": False, "no": False, "false": False}


class PluginArgs:
    """The plugin's arguments from plugstack.conf (trusted: written by root, and already
    checked by the C shim against PLUGIN_ARGS)."""

    __slots__ = tuple(name for name, _, _ in PLUGIN_ARGS)

    def __init__(self, **values):
        for name, _, default in PLUGIN_ARGS:
            setattr(self, name, values.get(name, default))

    @classmethod
    def parse(cls, args: list[str]) -> "PluginArgs":
        """The checked values; ConfigError (one line) for what the C shim's check refuses,
        should a caller skip it, and for an argument given twice (the C refuses that too: a
        later one would otherwise be ignored silently on one side)."""
        kinds = {name: kind for name, kind, _ in PLUGIN_ARGS}
        values: dict = {}
        for arg in args:
            key, eq, value = arg.partition("=")
            if key not in kinds or not eq:
                known = " ".join(f"{n}={k.upper()}" for n, k, _ in PLUGIN_ARGS)
                raise ConfigError(f"unknown plugin argument {arg!r} in plugstack.conf; known: {known}")
            if key in values:
                raise ConfigError(f"plugin argument {key} is given twice in plugstack.conf; keep one")
            if kinds[key] == "bool":
                if value not in BOOLS:
                    raise ConfigError(f"plugin argument {arg!r} in plugstack.conf: the value must be one of "
                                      "1/0/yes/no/true/false")
                values[key] = BOOLS[value]
            elif not value.startswith("/"):
                raise ConfigError(f"plugin argument {arg!r} in plugstack.conf: the value must be an absolute path")
            else:
                values[key] = value
        return cls(**values)
