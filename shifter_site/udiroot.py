"""Translate the original Shifter's `udiRoot.conf` into our YAML site configuration.

Sites migrating from the original bring this file. `shifter-config import FILE` prints the
equivalent YAML and lists, one line each, every key it could not translate with the reason:
no key is ever dropped silently. The file format is the original's (src/utility.c
shifter_parseConfig): `key=value` lines, `#` comment lines, a value continued on the next line
when it ends with a backslash (the pieces joined by one space), lists separated by spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Translation:
    """What the import made: the YAML data, and one note per key not carried over."""

    data: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# keys the original itself ignored (deprecated or defunct there)
_DEPRECATED = {"optionalSshdAsRoot", "autoLoadKernelModule", "kmodBasePath", "kmodCacheFile",
               "nodeContextPrefix"}
# absolute paths to helper programs the original called; this runtime calls none of them
_TOOL_PATHS = {"modprobePath", "insmodPath", "cpPath", "mvPath", "chmodPath", "ddPath"}
_MODULE_KEY = re.compile(r"^module_([^_]+)_(.+)$")
_MODULE_LISTS = {"siteEnv": "set", "siteEnvAppend": "append", "siteEnvPrepend": "prepend",
                 "siteEnvUnset": "unset"}
# keys whose lines add up in the original's parser (each line's words appended to a list);
# every other key given twice keeps its last value there, which the import names
_ACCUMULATING = {"siteFs", "imageGateway", "usersToImport", "perNodeCacheAllowedFsType", *_MODULE_LISTS}


def decode(data: bytes) -> str:
    """The file as text. Comment lines may be in any encoding (the original's parser never
    reads them: a Latin-1 comment is common in old files); a key line must be UTF-8, and one
    that is not is named (ValueError)."""
    lines = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.startswith(b"#"):
            lines.append("#")
            continue
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"line {number} is not UTF-8 text (byte {raw[err.start]:#04x} at column "
                             f"{err.start + 1}); write it in UTF-8") from None
    return "\n".join(lines)


def read_pairs(text: str) -> tuple[list[tuple[int, str, str]], list[str]]:
    """(line, key, value) as the original's parser reads them, and notes on lines it skipped."""
    pairs: list[tuple[int, str, str]] = []
    notes: list[str] = []
    pending: tuple[int, str, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.startswith("#"):
            continue
        if pending is None:
            if "=" not in raw:
                if raw.strip():
                    notes.append(f"line {number}: {raw.strip()!r} has no '=': skipped, as the original does")
                continue
            key, _, value = raw.partition("=")
            start, key, value = number, key.strip(), value.strip()
        else:
            start, key, value = pending[0], pending[1], f"{pending[2]} {raw.strip()}".strip()
        if value.endswith("\\"):
            pending = (start, key, value[:-1].strip())
            continue
        pending = None
        pairs.append((start, key, value))
    if pending is not None:
        pairs.append(pending)
    return pairs, notes


def _accumulates(key: str) -> bool:
    """Whether the original adds each line of this key to a list (else the last line wins)."""
    module = _MODULE_KEY.match(key)
    if module:
        return module.group(2) in (*_MODULE_LISTS, "conflict", "siteFs")
    return key in _ACCUMULATING


def _flag(value: str) -> bool:
    """The original reads 0/1 flags with strtol: anything but a non-zero number is false."""
    match = re.match(r"\s*[+-]?\d+", value)
    return bool(match and int(match.group()))


def _site_mounts(value: str, where: str, notes: list[str]) -> list[dict]:
    """siteFs: `from[:to[:flag...]]` entries separated by ';' (whitespace around them ignored)."""
    mounts = []
    for entry in (e.strip().strip('"') for e in value.split(";")):
        if not entry:
            continue
        parts = entry.split(":")
        source, target, flags = parts[0], parts[1] if len(parts) > 1 and parts[1] else parts[0], parts[2:]
        kept = []
        for flag in flags:
            name = flag.split("=", 1)[0].lower()
            if name in ("ro", "rec", "slave", "private"):
                kept.append(name)
            else:
                notes.append(f"{where}: flag {flag!r} of {entry!r} not supported for site mounts: "
                             "only ro, rec, slave and private are; the mount is translated without it")
        mount: dict = {"from": source, "to": target}
        if kept:
            mount["flags"] = kept
        mounts.append(mount)
    return mounts


def _env(value: str, kind: str, where: str, notes: list[str]) -> dict | list:
    """siteEnv*: space-separated NAME=value words (siteEnvUnset: names)."""
    words = value.split()
    if kind == "unset":
        return words
    out: dict[str, str] = {}
    for word in words:
        name, eq, setting = word.partition("=")
        if not eq:
            notes.append(f"{where}: {word!r} is not NAME=value: not translated")
            continue
        out[name] = setting
    return out


def _merge_env(target: dict, kind: str, values: dict | list) -> None:
    if kind == "unset":
        target.setdefault("unset", []).extend(values)
    else:
        target.setdefault(kind, {}).update(values)


def translate(text: str) -> Translation:
    """The YAML data equivalent to a udiRoot.conf text, and a note for each key not carried over."""
    pairs, notes = read_pairs(text)
    t = Translation(notes=notes)
    d = t.data
    modules: dict[str, dict] = {}

    def note(line: int, key: str, why: str) -> None:
        t.notes.append(f"line {line}: {key}: not supported: {why}")

    def needless(line: int, key: str, why: str) -> None:
        t.notes.append(f"line {line}: {key}: not needed: {why}")

    first_seen: dict[str, int] = {}
    for line, key, value in pairs:
        where = f"line {line}: {key}"
        if key in first_seen and not _accumulates(key):
            t.notes.append(f"{where}: given again (first on line {first_seen[key]}): the last value is used, "
                           "as the original does; remove the other line")
        first_seen.setdefault(key, line)
        if key == "system":
            d["system"] = value
        elif key == "imagePath":
            d["image_dir"] = value
        elif key == "imageGateway":
            d.setdefault("gateway", {}).setdefault("urls", []).extend(value.split())
        elif key == "gatewayTimeout":
            d.setdefault("gateway", {})["timeout"] = float(int(value)) if value.isascii() and value.isdigit() else value
        elif key == "defaultImageType":
            d["default_image_type"] = value
        elif key == "allowLocalChroot":
            d["allow_local_images"] = _flag(value)
        elif key == "siteFs":
            d.setdefault("site_mounts", []).extend(_site_mounts(value, where, t.notes))
        elif key in _MODULE_LISTS:
            kind = _MODULE_LISTS[key]
            _merge_env(d.setdefault("site_env", {}), kind, _env(value, kind, where, t.notes))
        elif key == "usersToImport":
            d.setdefault("import_accounts", []).extend(value.split())
        elif key == "maxGroupCount":
            d["max_group_count"] = int(value) if value.isascii() and value.isdigit() else value
        elif key == "mountPropagationStyle":
            d["mount_propagation"] = value
        elif key == "perNodeCachePath":
            d.setdefault("per_node_cache", {})["dir"] = value
        elif key == "perNodeCacheSizeLimit":
            d.setdefault("per_node_cache", {})["size_limit"] = value  # same syntax; checked with the rest
        elif key == "perNodeCacheAllowedFsType":
            d.setdefault("per_node_cache", {}).setdefault("allowed_fs", []).extend(value.split())
        elif key == "optUdiImage":
            d["opt_udi_image"] = value
        elif key == "etcPath":
            d["etc_dir"] = value
        elif key == "defaultModules":
            d["default_modules"] = [m for m in value.split(",") if m]
        elif _MODULE_KEY.match(key):
            name, sub = _MODULE_KEY.match(key).groups()
            _module_key(modules.setdefault(name, {}), name, sub, value, line, key, t.notes)
        elif key in _DEPRECATED:
            needless(line, key, "deprecated in the original Shifter, which ignores it too")
        elif key in _TOOL_PATHS:
            needless(line, key, "this runtime calls no external cp/mv/chmod/dd/insmod/modprobe; "
                 "load the loop, squashfs and xfs kernel modules at boot")
        elif key == "mkfsXfsPath":
            needless(line, key, "mkfs.xfs (and mkfs.ext4) are taken from root's PATH (/sbin, /usr/sbin); "
                 "install xfsprogs there")
        elif key in ("udiMount", "loopMount"):
            needless(line, key, "each container is built in a mount namespace of its own under run_dir "
                 "(default /var/run/shifter); no fixed mount point is needed")
        elif key == "udiRootPath":
            needless(line, key, "the install prefix is chosen when installing (make install PREFIX=...)")
        elif key == "rootfsType":
            if value != "tmpfs":
                note(line, key, f"the container root is always a tmpfs; {value!r} cannot be chosen")
            else:
                needless(line, key, "the container root is always a tmpfs, as set")
        elif key == "mountUdiRootWritable":
            (note if _flag(value) else needless)(line, key, "the container root is always sealed read-only after setup; "
                 "volumes and perNodeCache are the writable places")
        elif key == "allowLibcPwdCalls":
            (needless if _flag(value) else note)(
                line, key, "the user's passwd and group entries always come from the node's own name "
                "service (libc calls), as with allowLibcPwdCalls=1")
        elif key == "populateEtcDynamically":
            d["etc_mode"] = "generated" if _flag(value) else "site"
        elif key == "sitePreMountHook":
            if value:
                d["site_pre_mount_hook"] = value
        elif key == "sitePostMountHook":
            if value:
                d["site_post_mount_hook"] = value
        elif key == "batchType":
            needless(line, key, "Slurm is the only workload manager")
        else:
            t.notes.append(f"line {line}: {key}: unknown key (the original Shifter also refuses it); "
                           "remove it or fix its spelling")
    if modules:
        d["modules"] = modules
    if "registries" not in d:
        d["registries"] = {"default": "https://registry-1.docker.io"}
        t.notes.append("registries: not in udiRoot.conf (the original gateway's imagemanager.json held "
                       "them): Docker Hub written as the default; add your site's registries")
    return t


def _module_key(module: dict, name: str, sub: str, value: str, line: int, key: str, notes: list[str]) -> None:
    where = f"line {line}: {key}"
    if sub == "userhook":
        module["user_hook"] = value
    elif sub == "roothook":
        module["root_hook"] = value
    elif sub in _MODULE_LISTS:
        kind = _MODULE_LISTS[sub]
        _merge_env(module.setdefault("env", {}), kind, _env(value, kind, where, notes))
    elif sub == "conflict":
        module.setdefault("conflict", []).extend(value.split())
    elif sub == "siteFs":
        module.setdefault("site_mounts", []).extend(_site_mounts(value, where, notes))
    elif sub == "copyPath":
        module["copy_path"] = value
    elif sub == "enabled":
        module["enabled"] = _flag(value)
    else:
        hint = " (the original reads copyPath, with a capital P)" if sub.lower() == "copypath" else ""
        notes.append(f"{where}: not supported: module {name!r} has no setting {sub!r}; the original "
                     f"ignores it silently{hint}")
