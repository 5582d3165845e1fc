"""The site configuration: one YAML file loaded into typed, validated, read-only objects.

Every part reads the same file (default /etc/shifter/shifter.yaml). A mistake in it is
reported as one line naming the file, the key and the fix, because the person reading the
message is an admin looking at a failed job, not at this code. Privileged code (Slurm hooks,
`shifter` as root) also refuses a file that a non-root user could have written.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from typing import Literal
from urllib.parse import urlsplit

import msgspec
import yaml

from shifter_site import configcache
from shifter_site.configcache import check_owner
from shifter_site.errors import ConfigError
from shifter_site.sizes import parse_size

DEFAULT_PATH = "/etc/shifter/shifter.yaml"
ENV_VAR = "SHIFTER_CONFIG"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ACCOUNT = re.compile(r"^[a-z_][a-z0-9_.-]*\$?$")


class _Invalid(ValueError):
    """A failed check inside a section; msgspec adds where the section is."""

    def __init__(self, key: str, message: str):
        super().__init__(f"`{key}`: {message}")


def _absolute(key: str, value: str | None) -> None:
    if value is None:
        return
    if not value.startswith("/"):
        raise _Invalid(key, f"{value!r} is a relative path; write an absolute path (starting with /)")
    if ".." in value.split("/"):
        raise _Invalid(key, f"{value!r} contains '..'; write the path without '..'")
    if "\0" in value:
        raise _Invalid(key, "contains a NUL character; remove it")


def _url(key: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise _Invalid(key, f"{value!r} is not a URL; write http://host[:port] or https://host[:port]")


def _names(key: str, values: typing.Iterable[str], pattern: re.Pattern, what: str) -> None:
    for i, value in enumerate(values):
        if not pattern.fullmatch(value):
            raise _Invalid(f"{key}[{i}]" if not isinstance(values, dict) else key,
                           f"{value!r} is not a valid {what}")


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base for every section: unknown keys are errors, values are read-only."""


# Every duration a site sets is one of these: a finite number of seconds (YAML's .inf and
# .nan are floats too, and comparisons with them pass every lower bound), at most ten years.
MAX_SECONDS = 10 * 365 * 86400
Seconds = typing.Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
PositiveSeconds = typing.Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]


class SiteMount(_Section):
    """A host path the site mounts into every container (or a module's containers)."""

    from_: str = msgspec.field(name="from")
    to: str
    flags: list[Literal["ro", "rec", "slave", "private"]] = []

    def __post_init__(self) -> None:
        _absolute("from", self.from_)
        _absolute("to", self.to)
        if len(set(self.flags)) != len(self.flags):
            raise _Invalid("flags", f"{self.flags} lists a flag twice; list each flag once")
        if "slave" in self.flags and "private" in self.flags:
            raise _Invalid("flags", "'slave' and 'private' exclude each other; keep one")


class SiteEnv(_Section):
    """Environment changes applied last, after the image's and the user's."""

    # values typed loosely so a wrong one is reported by its variable name, not as [...]
    set: dict[str, typing.Any] = {}
    append: dict[str, typing.Any] = {}
    prepend: dict[str, typing.Any] = {}
    unset: list[str] = []

    def __post_init__(self) -> None:
        for key in ("set", "append", "prepend"):
            for name, value in getattr(self, key).items():
                if not _ENV_NAME.fullmatch(name):
                    raise _Invalid(key, f"{name!r} is not a variable name (letters, digits, _)")
                if not isinstance(value, str):
                    raise _Invalid(f"{key}.{name}", f"expected a string, got {value!r}; quote the value")
                if "\0" in value:
                    raise _Invalid(f"{key}.{name}", "contains a NUL character; remove it")
        _names("unset", self.unset, _ENV_NAME, "variable name (letters, digits, _)")


class Gateway(_Section):
    """Where clients find the image gateway; URLs are tried in random order."""

    urls: list[str]
    timeout: PositiveSeconds = 60.0
    # pulls one user may have queued or running at once: a user cannot fill the workers alone
    max_pulls_per_user: typing.Annotated[int, msgspec.Meta(ge=1, le=1000)] = 4
    # conversion caps: a small layer may inflate to anything (a 1 MB layer of zeros -> 1 GiB)
    max_image_size: str = "64G"        # the merged image, uncompressed
    max_image_files: int = 10_000_000  # entries in the merged image
    # a pull asked for within this many seconds of the last one (or while one runs) returns the
    # current record instead of asking the registry again (the original's PullUpdateTimeout)
    repull_after: Seconds = 300.0
    # user and group names the gateway treats as admins (see every image, set any image's ACL)
    admins: list[str] = []
    # an image not looked up or used by a job for this many seconds expires (autoexpire
    # removes it once no job uses it); 0: images never expire
    expire_after: Seconds = 0.0
    # the service runs autoexpire this often (seconds; 0: only when an admin asks)
    autoexpire_every: Seconds = 3600.0
    # accounts besides root whose credentials may record that a job uses an image (the
    # prolog/epilog run as root, or as Slurm's SlurmdUser/SlurmUser where a site sets one)
    use_recorders: list[str] = []
    # who may read GET /metrics: "loopback" (any caller on the gateway host), "admins"
    # (a munge credential of gateway.admins), or "either"
    metrics_access: typing.Literal["loopback", "admins", "either"] = "loopback"

    def __post_init__(self) -> None:
        for field_name in ("admins", "use_recorders"):
            for i, name in enumerate(getattr(self, field_name)):
                if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", name):
                    raise _Invalid(f"{field_name}[{i}]", f"{name!r} is not a user or group name")
        if not self.urls:
            raise _Invalid("urls", "is empty; list at least one gateway URL")
        for i, url in enumerate(self.urls):
            _url(f"urls[{i}]", url)
        try:
            if parse_size(self.max_image_size) == 0:
                raise ValueError(f"{self.max_image_size!r} is 0; give a positive size, e.g. 64G")
        except ValueError as err:
            raise _Invalid("max_image_size", str(err)) from None
        if self.max_image_files <= 0:
            raise _Invalid("max_image_files", f"{self.max_image_files} is not a positive number of files")

    @property
    def max_image_size_bytes(self) -> int:
        return parse_size(self.max_image_size)


REGISTRY_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
                            r"(?::[0-9]{1,5})?|\[[0-9a-f:]+\](?::[0-9]{1,5})?")
DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")  # Docker Hub's names; docker.io first


def registry_name(host_or_url: str) -> str:
    """The canonical name of a registry: `docker.io` for Docker Hub (whatever alias or API URL
    is written), else host[:port] in lowercase. Accepts `host[:port]` or a URL."""
    text = host_or_url.strip()
    netloc = urlsplit(text).netloc if "://" in text else text
    netloc = netloc.rstrip("/").lower()
    return DOCKER_HUB[0] if netloc in DOCKER_HUB else netloc


class Registries(_Section):
    """The registries images may come from: an allow-list. `docker:app` means the `default`
    registry; `docker:host/app` is pulled only when `host` is the default, Docker Hub (unless
    `docker_hub: false`), a `hosts` entry (name -> URL) or a `mirrors` upstream. A registry
    with `mirrors` is fetched from them, in order; a reference naming a mirror means its
    upstream (a declared mirror holds the upstream's names)."""

    default: str
    hosts: dict[str, typing.Any] = {}  # checked below, to name the host in messages
    mirrors: dict[str, typing.Any] = {}
    docker_hub: bool = True
    platform: str = "linux/amd64"
    # hosts besides a registry's own that its Bearer challenge may name as token service
    # (`realm`); Docker Hub's auth.docker.io is known. Any other realm is refused.
    auth_hosts: list[str] = []

    def __post_init__(self) -> None:
        _url("default", self.default)
        for host, url in self.hosts.items():
            if not REGISTRY_HOST.fullmatch(str(host)):
                raise _Invalid(f"hosts.{host}", "is not a registry host[:port] (lowercase), e.g. registry.example.org:5000")
            _url(f"hosts.{host}", url if isinstance(url, str) else repr(url))
        mirror_of: dict[str, str] = {}
        for upstream, urls in self.mirrors.items():
            if not REGISTRY_HOST.fullmatch(str(upstream)):
                raise _Invalid(f"mirrors.{upstream}", "is not a registry host[:port] (lowercase), e.g. docker.io")
            if not isinstance(urls, list) or not urls:
                raise _Invalid(f"mirrors.{upstream}", f"expected a non-empty list of mirror URLs, got {urls!r}")
            for i, url in enumerate(urls):
                _url(f"mirrors.{upstream}[{i}]", url if isinstance(url, str) else repr(url))
                mirror_of[registry_name(url)] = registry_name(str(upstream))
        for host in self.hosts:
            if registry_name(str(host)) in mirror_of:
                raise _Invalid(f"hosts.{host}", f"is declared a mirror of {mirror_of[registry_name(str(host))]} "
                                                "under mirrors (references naming it mean its upstream); remove it from hosts")
        for i, host in enumerate(self.auth_hosts):
            if not REGISTRY_HOST.fullmatch(host) or ":" in host:
                raise _Invalid(f"auth_hosts[{i}]", f"{host!r} is not a host name (lowercase, no port), e.g. auth.example.org")
        if not re.fullmatch(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?", self.platform):
            raise _Invalid("platform", f"{self.platform!r} is not os/arch[/variant], e.g. linux/amd64")


class PerNodeCache(_Section):
    """Limits for `--volume=...:perNodeCache=size=..`: where backing files go, how big, which fs."""

    dir: str = "/tmp"
    size_limit: str = "100G"
    allowed_fs: list[Literal["xfs", "ext4"]] = msgspec.field(default_factory=lambda: ["xfs"])

    def __post_init__(self) -> None:
        _absolute("dir", self.dir)
        try:
            parse_size(self.size_limit)
        except ValueError as err:
            raise _Invalid("size_limit", str(err)) from None
        if not self.allowed_fs:
            raise _Invalid("allowed_fs", "is empty; allow at least one of xfs, ext4")

    @property
    def size_limit_bytes(self) -> int:
        return parse_size(self.size_limit)


class Sshd(_Section):
    """The per-job sshd inside the container, for non-MPI parallel jobs."""

    enabled: bool = False
    # a job's sshd listens on port + (job id mod port_count), the same on each of its nodes
    # (every prolog works it out alone), so jobs sharing a node get different ports
    port: typing.Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1204
    port_count: typing.Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1000
    # a root-only file, identical on every node: the job's host key is derived from it
    host_key_secret: str = "/etc/munge/munge.key"


class Ccm(_Section):
    """`sbatch --ccm` without --image: the site's CCM tree (e.g. /dsl) is the job's image, a
    `local:` image the site allows whatever allow_local_images says."""

    root: str | None = None

    def __post_init__(self) -> None:
        _absolute("root", self.root)


class Gpu(_Section):
    """What makes a module the GPU module (runtime/gpu.py): the node's NVIDIA driver files
    bound in for the step's GPUs; on by itself when the step has GPUs (`auto`)."""

    auto: bool = True
    # loader-cache names (fnmatch patterns) of the driver's user-space libraries
    libraries: list[str] = msgspec.field(default_factory=lambda: [
        "libcuda.so*", "libnvidia-*.so*", "libnvcuvid.so*", "libnvoptix.so*"])
    tools: list[str] = msgspec.field(default_factory=lambda: [
        "nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control"])
    tool_path: list[str] = msgspec.field(default_factory=lambda: ["/usr/bin", "/usr/local/nvidia/bin", "/usr/local/bin"])
    loader_cache: str = "/etc/ld.so.cache"   # read with `ldconfig -p -C` (a site may keep its own)

    def __post_init__(self) -> None:
        _absolute("loader_cache", self.loader_cache)
        for i, directory in enumerate(self.tool_path):
            _absolute(f"tool_path[{i}]", directory)
        if not self.libraries:
            raise _Invalid("libraries", "is empty; list the driver's library patterns (libcuda.so* at least)")
        for key, values in (("libraries", self.libraries), ("tools", self.tools)):
            for i, value in enumerate(values):
                if not value or "/" in value:
                    raise _Invalid(f"{key}[{i}]", f"{value!r} is not a file name (pattern); write a name without /")


class Module(_Section):
    """A site module (GPU, MPI...): extra mounts, files and environment, opted into per job."""

    enabled: bool = True
    site_mounts: list[SiteMount] = []
    env: SiteEnv = SiteEnv()
    copy_path: str | None = None
    user_hook: str | None = None
    root_hook: str | None = None
    conflict: list[str] = []
    gpu: Gpu | None = None       # set: this module is the GPU module (at most one)

    def __post_init__(self) -> None:
        _absolute("copy_path", self.copy_path)
        _absolute("user_hook", self.user_hook)
        _absolute("root_hook", self.root_hook)


class Config(_Section):
    """The whole site configuration; see config/shifter.yaml.example for every key."""

    system: str
    image_dir: str
    gateway: Gateway
    registries: Registries
    run_dir: str = "/var/run/shifter"
    # munged's socket: shifterimg proves who asks with a munge credential (the gateway decodes it)
    munge_socket: str = "/run/munge/munge.socket.2"
    default_image_type: Literal["docker", "id", "local", "custom"] = "docker"
    allow_local_images: bool = False
    site_mounts: list[SiteMount] = []
    site_env: SiteEnv = SiteEnv()
    import_accounts: list[str] = []
    max_group_count: typing.Annotated[int, msgspec.Meta(ge=0, le=65536)] = 31
    mount_propagation: Literal["private", "slave"] = "private"
    per_node_cache: PerNodeCache = PerNodeCache()
    sshd: Sshd = Sshd()
    ccm: Ccm = Ccm()
    opt_udi_image: str | None = None
    etc_dir: str | None = None
    # passwd/group in the container: "generated" (the user, their groups, import_accounts) or
    # "site" (the site's own files from etc_dir; the original's populateEtcDynamically=0)
    etc_mode: Literal["generated", "site"] = "generated"
    # root scripts run around the site mounts (the original's sitePreMountHook/PostMountHook)
    site_pre_mount_hook: str | None = None
    site_post_mount_hook: str | None = None
    # seconds a root script (site mount hooks, modules' root hooks) may take before it is killed
    hook_timeout: typing.Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0  # finite: bounded above
    modules: dict[str, Module] = {}
    default_modules: list[str] = []

    @property
    def gpu_module(self) -> str | None:
        """The name of the module with a `gpu:` section (runtime/gpu.py), or None."""
        return next((name for name, module in self.modules.items() if module.gpu is not None), None)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.system):
            raise _Invalid("system", f"{self.system!r} is not a name (letters, digits, . _ -)")
        for key in ("image_dir", "run_dir", "opt_udi_image", "etc_dir", "munge_socket", "site_pre_mount_hook",
                    "site_post_mount_hook"):
            _absolute(key, getattr(self, key))
        if self.etc_mode == "site" and not self.etc_dir:
            raise _Invalid("etc_mode", "'site' takes passwd and group from etc_dir, which is not set; "
                           "set etc_dir or use etc_mode: generated")
        _names("import_accounts", self.import_accounts, _ACCOUNT, "account name")
        _absolute("sshd.host_key_secret", self.sshd.host_key_secret)
        if self.sshd.port + self.sshd.port_count - 1 > 65535:
            raise _Invalid("sshd.port_count", f"port {self.sshd.port} + port_count {self.sshd.port_count} "
                           "passes 65535; lower port_count or port")
        if self.sshd.enabled and not self.opt_udi_image:
            raise _Invalid("sshd.enabled", "needs opt_udi_image (the sshd is installed there by make install)")
        for name, module in self.modules.items():
            if not _NAME.fullmatch(name):
                raise _Invalid(f"modules.{name}", "is not a module name (letters, digits, . _ -)")
            for other in module.conflict:
                if other not in self.modules:
                    raise _Invalid(f"modules.{name}.conflict", f"names {other!r}, which is not a module; define it or remove it")
        gpu_modules = [name for name, module in self.modules.items() if module.gpu is not None]
        if len(gpu_modules) > 1:
            raise _Invalid(f"modules.{gpu_modules[1]}.gpu", f"{gpu_modules[0]!r} is the GPU module already; keep `gpu:` in one module")
        for i, name in enumerate(self.default_modules):
            if name not in self.modules:
                raise _Invalid(f"default_modules[{i}]", f"{name!r} is not defined under modules; define it or remove it")


# ---------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses a key given twice (PyYAML silently keeps the last)."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, (list, dict)):  # `? [a, b]`: YAML allows it, no key here is one
            raise ConfigError(f"line {key_node.start_mark.line + 1}: a key is a list or mapping; "
                              "write a plain name before ':'")
        if key in seen:
            raise ConfigError(
                f"key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); keep one"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def config_path(explicit: str | None = None) -> str:
    """The file to read: an explicit path, else $SHIFTER_CONFIG, else the default.

    Privileged hooks pass the path from plugstack.conf explicitly, so a user's environment
    never chooses the configuration of root code.
    """
    return explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH


def parse(text: str, source: str = "<config>") -> Config:
    """A Config from YAML text; ConfigError (one line: source, key, fix) when it is wrong."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except RecursionError:
        raise ConfigError(f"{source}: brackets or indentation nested too deeply to read; fix the syntax") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{source}: {where}not valid YAML ({problem}); fix the syntax") from None
    if data is None:
        raise ConfigError(f"{source}: the file is empty; see config/shifter.yaml.example")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys (system:, image_dir:, ...)")
    modules = data.get("modules")
    if isinstance(modules, dict):
        # msgspec writes a dict key as [...]; check each module alone to name it in the message
        for name, module in modules.items():
            try:
                msgspec.convert(module, Module)
            except msgspec.ValidationError as err:
                raise ConfigError(f"{source}: {_explain(str(err), f'modules.{name}')}") from None
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as err:
        raise ConfigError(f"{source}: {_explain(str(err))}") from None


def load(path: str | None = None, privileged: bool | None = None) -> Config:
    """Read and validate the site configuration.

    `privileged` (default: running as root) adds the ownership check: root code must not run
    on a file a user could have edited.
    """
    path = config_path(path)
    if privileged is None:
        privileged = os.geteuid() == 0
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file; create it (see config/shifter.yaml.example) or set {ENV_VAR}"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file ({err}); fix its permissions or content") from None
    if privileged:
        check_owner(path)
    cfg = parse(text, path)
    if privileged:
        configcache.save(path, msgspec.to_builtins(cfg), cfg.per_node_cache.size_limit_bytes)
    return cfg


# ---------------------------------------------------------------- messages

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_TYPE_WORDS = {
    "str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
    "array": "a list", "object": "a mapping", "null": "nothing", "dict": "a mapping",
}


def _words(match: re.Match) -> str:
    return " or ".join(_TYPE_WORDS.get(t.strip(), t.strip()) for t in match.group(1).split("|"))


def _explain(raw: str, prefix: str = "") -> str:
    """msgspec's message ('Expected `int`, got `str` - at `$.a.b`') as 'a.b: <what>; <fix>'."""
    parts = _AT.match(raw)
    msg, path = parts.group("msg"), prefix + (parts.group("path") or "")
    path = path.lstrip(".")
    join = lambda *names: ".".join(n for n in names if n).replace(".[", "[")  # noqa: E731

    own = re.match(r"^`([^`]+)`: (.*)$", msg)
    if own:
        return f"{join(path, own.group(1))}: {own.group(2)}"
    unknown = re.match(r"^Object contains unknown field `([^`]+)`$", msg)
    if unknown:
        key = unknown.group(1)
        hint = ""
        known = _known_keys(path)
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        elif known:
            hint = f" (known keys here: {', '.join(sorted(known))})"
        return f"{join(path, key)}: unknown key; remove it or fix its spelling{hint}"
    missing = re.match(r"^Object missing required field `([^`]+)`$", msg)
    if missing:
        return f"{join(path, missing.group(1))}: required key is missing; add it"
    enum = re.match(r"^Invalid enum value (.*)$", msg)
    if enum:
        allowed = _literal_values(path)
        choice = f"; use one of {', '.join(allowed)}" if allowed else ""
        return f"{path or 'value'}: {enum.group(1)} is not allowed{choice}"
    bound = re.match(r"^Expected `(int|float)` (>=|<=|>|<) \S+$", msg)
    if bound:
        return f"{path}: {_bounds(path, bound.group(1))}; fix the value"
    expected = re.sub(r"`([^`]+)`", _words, msg)
    expected = expected[0].lower() + expected[1:] if expected else expected
    return f"{path or 'top level'}: {expected}; fix the value"


def _bounds(path: str, kind: str) -> str:
    """'must be a number > 0 and <= 315360000' from the declared type's constraints."""
    limits = {}
    for meta in typing.get_args(_type_at(path))[1:]:
        if isinstance(meta, msgspec.Meta):
            for op, name in ((">=", "ge"), (">", "gt"), ("<=", "le"), ("<", "lt")):
                value = getattr(meta, name)
                if value is not None:
                    limits[op[0]] = f"{op} {int(value) if float(value).is_integer() else value}"
    what = "an integer" if kind == "int" else "a finite number (not .inf or .nan)"
    return f"must be {what} " + " and ".join(limits[side] for side in (">", "<") if side in limits)


def _type_at(path: str):
    """The declared type at a msgspec error path, to name the keys or values allowed there."""
    current: typing.Any = Config
    for token in re.findall(r"[A-Za-z_][A-Za-z0-9_-]*|\[[^\]]*\]", path):
        current = _unwrap(current)
        if token.startswith("[") or typing.get_origin(current) is dict:
            args = typing.get_args(current)
            current = args[-1] if args else None
        elif isinstance(current, type) and issubclass(current, msgspec.Struct):
            fields = {f.encode_name: f.type for f in msgspec.structs.fields(current)}
            current = fields.get(token)
        else:
            return None
    return _unwrap(current)


def _unwrap(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _known_keys(path: str) -> list[str]:
    tp = _type_at(path)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return [f.encode_name for f in msgspec.structs.fields(tp)]
    return []


def _literal_values(path: str) -> list[str]:
    tp = _type_at(path)
    if typing.get_origin(tp) is list:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) is Literal:
        return [str(v) for v in typing.get_args(tp)]
    return []
