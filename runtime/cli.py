"""`shifter`: run a command in a container image.

    shifter [-i IMAGE] [-V SPEC]... [-e K=V]... [--env-file F] [-E] [-w[PATH]]
            [--entrypoint[=CMD]] [-m MODULES] [-v] [--] [COMMAND [ARG...]]

As root: a privileged build (or join an identical pinned container, e.g. the job's). As a
user outside Slurm: rootless. Without --image, the image, volumes and modules come from
SHIFTER_IMAGETYPE/SHIFTER_IMAGE (or SHIFTER_IMAGEREQUEST), SHIFTER_VOLUME and SHIFTER_MODULE,
inside a job (which exports them) or not, as in the original. Options stop at the first
non-option.
Imports stay inside functions so that a launch loads only what it uses.
"""

from __future__ import annotations

import os
import sys

USAGE = """\
usage: shifter [options] [--] [COMMAND [ARG...]]
  -i, --image=REF        image: docker:name:tag (via the image gateway), or an id (64 hex
                         digits, or its first 12+ as shifterimg images shows, id: optional),
                         or local:/path (a directory tree on the node, where the site allows)
  -V, --volume=SPEC      from:to[:ro|:perNodeCache=size=N[,fs=xfs|ext4][,bs=N]]; repeatable,
                         several mappings joined by ';'; adds to the job's volumes
  -e, --env=NAME=VALUE   set a variable in the container (repeatable)
      --env-file=FILE    NAME=VALUE lines ('#' comments)
  -E, --clearenv         start from an empty environment
  -w, --workdir[=PATH]   working directory (no PATH: the image's WORKDIR)
      --entrypoint[=CMD] run the image's ENTRYPOINT (or CMD) before the command
                         (--entry[=CMD] is the same option)
  -m, --module=a,b|none  site modules
  -v, --verbose          log each step
  -h, --help             this help
Environment (as the original's shifter; an option given on the command line wins):
  SHIFTER_IMAGETYPE and SHIFTER_IMAGE (both), else SHIFTER_IMAGEREQUEST: the image;
  SHIFTER_VOLUME: volumes (-V adds to them); SHIFTER_MODULE: modules (-m replaces them)
"""


class UsageError(Exception):
    """A command-line mistake: one line, exit 64."""


_LONG_ARG = {"image": "image", "volume": "volume", "env": "env", "env-file": "env_file", "module": "module"}
_LONG_OPTIONAL = {"workdir": "workdir", "entrypoint": "entrypoint", "entry": "entrypoint"}  # --entry: the original's alias
_LONG_FLAG = {"clearenv": "clearenv", "verbose": "verbose", "help": "help"}
_SHORT_ARG = {"i": "image", "V": "volume", "e": "env", "m": "module"}
_SHORT_FLAG = {"E": "clearenv", "v": "verbose", "h": "help"}


def parse_args(argv: list[str]) -> dict:
    """getopt_long semantics: `--opt=v`/`--opt v`, `-ov`/`-o v`, optional arguments only
    attached (`--workdir=/x`, `-w/x`), parsing stops at the first non-option or `--`."""
    opts: dict = {"volume": [], "env": [], "image": None, "env_file": None, "module": None, "workdir": None,
                  "entrypoint": None, "clearenv": False, "verbose": False, "help": False, "command": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            opts["command"] = argv[i + 1:]
            return opts
        if not arg.startswith("-") or arg == "-":
            opts["command"] = argv[i:]
            return opts
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name in _LONG_ARG:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise UsageError(f"option --{name} needs a value")
                    value = argv[i]
                _store(opts, _LONG_ARG[name], value)
            elif name in _LONG_OPTIONAL:
                if _LONG_OPTIONAL[name] == "entrypoint" and opts["entrypoint"] is not None:
                    raise UsageError(f"--{name}: the entrypoint is already given (--entry is another name for "
                                     "--entrypoint); give one of them once")
                opts[_LONG_OPTIONAL[name]] = value if eq else ""
                if eq and value == "":
                    raise UsageError(f"option --{name}= has an empty value; write --{name} alone or give a value")
            elif name in _LONG_FLAG:
                if eq:
                    raise UsageError(f"option --{name} takes no value")
                opts[_LONG_FLAG[name]] = True
            else:
                raise UsageError(f"unknown option --{name} (see shifter --help)")
        else:
            j = 1
            while j < len(arg):
                letter = arg[j]
                if letter in _SHORT_FLAG:
                    opts[_SHORT_FLAG[letter]] = True
                    j += 1
                    continue
                if letter in _SHORT_ARG:
                    value = arg[j + 1:]
                    if not value:
                        i += 1
                        if i >= len(argv):
                            raise UsageError(f"option -{letter} needs a value")
                        value = argv[i]
                    _store(opts, _SHORT_ARG[letter], value)
                    break
                if letter == "w":
                    opts["workdir"] = arg[j + 1:]
                    break
                raise UsageError(f"unknown option -{letter} (see shifter --help)")
        i += 1
    return opts


def _store(opts: dict, key: str, value: str) -> None:
    if key in ("volume", "env"):
        opts[key].append(value)
    else:
        if opts[key] is not None:
            raise UsageError(f"option --{key.replace('_', '-')} is given twice; give it once")
        opts[key] = value


def resolve_image(cfg, ref: str, config_path: str | None = None, full_config=None) -> str:
    """The image id for a reference: `id:<64 hex>` or an id's first 12+ digits, as
    `shifterimg images` shows it (`id:` optional), locally; a name the gateway published in
    its tag index (shifter_site.tagindex: public images), from that file; anything else via
    the gateway. One rule for shifter -i, srun/sbatch --image and the step hooks.
    `config_path`: the site config `cfg` came from, to remember (per user) which index entry
    a name means; `full_config`: makes the full Config for a gateway request when `cfg` is
    the quick view (shifter_site.quickload)."""
    from shifter_site.imageid import check_id, local_id

    if ref.startswith("local:"):
        from runtime import localimage
        return localimage.local_id(localimage.check(cfg, ref))
    found = local_id(cfg.image_dir, ref)
    if found:
        return found
    if ref.startswith("id:"):
        return check_id(ref[3:])
    try:
        found = indexed_id(cfg, ref, config_path)
        if found:
            return found
        from imagegw.client import lookup
    except ImportError:
        from shifter_site.errors import ShifterError
        raise ShifterError(f"image {ref!r}: looking up references other than id:<64 hex> needs the image "
                           "gateway client (imagegw.client), which is not installed here; use id:<image id>") from None
    return check_id(lookup(full_config() if full_config else cfg, ref).id)


def image_from_env(env: dict) -> str | None:
    """The image the environment asks for, as the original's shifter reads it (the command
    line's --image wins): SHIFTER_IMAGETYPE and SHIFTER_IMAGE together (`type:image`), else
    SHIFTER_IMAGEREQUEST. A lone SHIFTER_IMAGE holding an image id (what a job exports) is
    that id. One of the pair alone is refused: the original dropped it silently."""
    from shifter_site.imageid import is_id

    image, itype = env.get("SHIFTER_IMAGE") or "", env.get("SHIFTER_IMAGETYPE") or ""
    if image and itype:
        return f"{itype}:{image}"
    if image and is_id(image):
        return f"id:{image}"
    if image or itype:
        have, missing = ("SHIFTER_IMAGE", "SHIFTER_IMAGETYPE") if image else ("SHIFTER_IMAGETYPE", "SHIFTER_IMAGE")
        raise UsageError(f"{have} is set but {missing} is not; set both (e.g. SHIFTER_IMAGETYPE=docker "
                         "SHIFTER_IMAGE=ubuntu:22.04), or unset it and give --image=REF")
    return env.get("SHIFTER_IMAGEREQUEST") or None


_HERE = os.path.dirname(os.path.abspath(__file__))
# the code that makes a name canonical: a remembered key counts only while it is unchanged
_NAME_RULES = tuple(os.path.join(os.path.dirname(_HERE), *name) for name in
                    (("imagegw", "reference.py"), ("imagegw", "sources.py"), ("shifter_site", "config.py")))


def canonical_key(cfg, ref: str) -> tuple[str, str]:
    """(itype, key) the gateway files `ref` under: imagegw.sources.canonical, the one rule
    (ReferenceError for a malformed reference or a registry the site does not pull from)."""
    from imagegw import reference, sources

    parsed = sources.canonical(cfg.registries, reference.parse(ref, cfg.default_image_type))
    return parsed.itype, parsed.key


def indexed_id(cfg, ref: str, config_path: str | None = None) -> str | None:
    """The id the gateway's tag index gives for `ref` when its image is published here; None
    otherwise (ask the gateway). A plain user remembers the name's canonical key in their own
    cache (shifter_site.usercache, while the config file and the naming rules are unchanged),
    so a repeated launch by name imports neither the reference parser nor the config loader."""
    from shifter_site import tagindex, usercache

    keys = usercache.get("names", config_path, _NAME_RULES) if config_path else None
    known = keys.get(ref) if isinstance(keys, dict) else None
    if isinstance(known, tuple) and len(known) == 2:
        itype, key = known
    else:
        stamp = usercache.stamp(config_path, _NAME_RULES) if config_path else None
        itype, key = canonical_key(cfg, ref)
        if stamp is not None:
            keys = dict(keys) if isinstance(keys, dict) and len(keys) < 256 else {}
            keys[ref] = (itype, key)
            usercache.put("names", config_path, _NAME_RULES, keys, stamp)
    image_id = tagindex.read(cfg.image_dir, itype, key)
    if image_id is None or not os.path.isfile(os.path.join(cfg.image_dir, f"{image_id}.json")):
        return None  # not indexed (private, older, removed since): the gateway answers
    return image_id


def _site(privileged: bool):
    """(site config, record reader). Root: the full, privileged load (ownership check).
    A plain user: their own cache of validated loads (shifter_site.quickload), which skips
    YAML and msgspec (~20 ms) while the files are unchanged; a gateway request loads the full
    Config (resolve_image's full_config)."""
    if not privileged:
        from shifter_site import quickload
        return quickload.site_config(), quickload.read_record
    from shifter_site import config, imagefiles
    return config.load(privileged=privileged), imagefiles.read_record


def run(argv: list[str]) -> int:
    opts = parse_args(argv)
    if opts["help"]:
        sys.stdout.write(USAGE)
        return 0
    host_env = dict(os.environ)
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    from runtime import spec as specs
    from runtime.volumes import parse
    from shifter_site.access import check_access

    log = None  # build steps are logged only with -v: importing structlog costs ~35 ms a launch
    if opts["verbose"]:
        from runtime.steps import runtime_log
        from shifter_site import logs
        logs.configure(verbose=True)
        log = runtime_log()
    ref = opts["image"] if opts["image"] is not None else image_from_env(host_env)
    if ref is None:
        raise UsageError("no image: give --image=REF (or set SHIFTER_IMAGETYPE and SHIFTER_IMAGE, "
                         "or run inside a job submitted with --image)")
    privileged = os.geteuid() == 0
    cfg, read_record = _site(privileged=privileged)
    if ref.startswith("local:"):
        from runtime import localimage
        record = localimage.record(cfg, ref)
    else:
        full_config = None
        if not privileged:
            from shifter_site.quickload import config_path

            def full_config():
                from shifter_site import config
                return config.load(privileged=False)
        image_id = resolve_image(cfg, ref, config_path() if not privileged else None, full_config)
        record = read_record(cfg.image_dir, image_id)
    # volumes accumulate (one rule everywhere, runtime.volumes.combine): the job's, then -V
    from runtime.volumes import combine
    volume_text = combine(host_env.get("SHIFTER_VOLUME", ""), *opts["volume"])
    volumes = parse(volume_text) if volume_text else []  # parse checks them together
    env_file: tuple[str, ...] = ()
    if opts["env_file"] is not None:
        from runtime.enter import parse_env_file
        try:
            with open(opts["env_file"], encoding="utf-8") as f:
                env_file = parse_env_file(f.read(), opts["env_file"])
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"--env-file {opts['env_file']}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    from runtime.enter import check_env_entry
    for entry in opts["env"]:
        check_env_entry(entry, "--env")
    user = specs.user_from_host(os.getuid(), cfg.max_group_count)
    check_access(record, user.uid, [user.gid, *user.gids])
    module = opts["module"] if opts["module"] is not None else (host_env.get("SHIFTER_MODULE") or None)
    gpus = None
    if cfg.gpu_module is not None:  # the site's GPU module (runtime/gpu.py)
        from runtime import gpu
        named = module is not None and cfg.gpu_module in module.split(",")
        gpus = gpu.launch_gpus(host_env, named, os.listdir("/dev"))
    spec = specs.from_config(cfg, record, user, volumes=tuple(volumes), module=module, gpus=gpus,
                             image_request=ref, env=tuple(opts["env"]), env_file=env_file,
                             clearenv=opts["clearenv"], workdir=opts["workdir"], entrypoint=opts["entrypoint"])
    command = opts["command"]
    from runtime.enter import command as choose, environment
    choose(spec, command, environment(spec, host_env))  # refuse a bad --entrypoint before building
    if os.geteuid() == 0:
        from runtime import build, enter
        found = build.find(cfg.run_dir, spec.build_key())
        if found:
            enter.join(found.ns_path)
        else:
            build.build_private(spec, cfg.run_dir, log=log)
        enter.exec_command(spec, command, host_env, cwd)
    else:
        from runtime import rootless
        rootless.run(spec, cfg.run_dir, command, host_env, cwd, log=log)
    return 1  # not reached: exec replaces this process


def main(argv: list[str] | None = None) -> int:
    from shifter_site.errors import ShifterError

    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UsageError as err:
        print(f"shifter: {err}", file=sys.stderr)
        return 64
    except ShifterError as err:
        print(f"shifter: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        print(f"shifter: {err.strerror or err}{': ' + str(err.filename) if err.filename else ''}", file=sys.stderr)
        return 71  # EX_OSERR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
