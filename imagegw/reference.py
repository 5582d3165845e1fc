"""Image references (`docker:ubuntu:22.04`, `ubuntu:22.04`, `docker:host:5000/org/app@sha256:..`).

Pure parsing: a wrong reference is one ReferenceError line saying what is wrong and how to
write it. The user's string is never rewritten; `Reference.tag` keeps it as given (messages
show it). `imagegw.sources.canonical` makes the site's defaults explicit, so that equal
references have one `key`, which the gateway files an image under.
"""

from __future__ import annotations

import re

import msgspec

from shifter_site.config import DOCKER_HUB
from shifter_site.errors import ShifterError
from shifter_site.imageid import is_id

TYPES = ("docker", "id", "local", "custom")
# Distribution spec grammar (reference/regexp.go), anchored.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)  # ASCII: a Unicode digit is \w too
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"(?::[0-9]{1,5})?|\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?")
HUB = DOCKER_HUB[0]                        # Docker Hub's canonical registry name
HUB_API = "https://registry-1.docker.io"  # where Docker Hub's registry API answers

USAGE = "write docker:[host[:port]/]name[:tag|@sha256:<64 hex>], e.g. docker:ubuntu:22.04"


class ReferenceError(ShifterError):
    """The image reference is malformed; the message says how to write it."""

    exit_code = 2


class Reference(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed reference. `host` is None when the site's default registry is meant."""

    itype: str
    tag: str                 # the user's text after the type prefix, unchanged
    host: str | None = None
    repository: str = ""
    version: str | None = None   # tag part (":14.04"); None with a digest-only reference
    digest: str | None = None

    @property
    def name(self) -> str:
        """[host/]repository, without tag or digest."""
        return f"{self.host}/{self.repository}" if self.host else self.repository

    @property
    def key(self) -> str:
        """The name the gateway files the image under: host/repo:tag or host/repo@digest
        (canonical when this reference came from `canonical`)."""
        if self.itype != "docker":
            return self.tag
        if self.digest:
            return f"{self.name}@{self.digest}" if self.version is None else f"{self.name}:{self.version}@{self.digest}"
        return f"{self.name}:{self.version or 'latest'}"

    @property
    def manifest_ref(self) -> str:
        """What to ask the registry for: the digest when given, else the tag."""
        return self.digest or self.version or "latest"


# an imported image's name (shifterimg import PATH NAME): path components, an optional tag
_CUSTOM = re.compile(r"[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?")


def parse(text: str, default_type: str = "docker") -> Reference:
    """Parse `[type:]tag`. A prefix that is not a known type makes the whole string a tag of
    `default_type`, as in the original (`ubuntu:14.04` == `docker:ubuntu:14.04`)."""
    if not isinstance(text, str) or not text:
        raise ReferenceError(f"empty image reference; {USAGE}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise ReferenceError(f"image reference {text!r} contains whitespace or control characters; {USAGE}")
    prefix, sep, rest = text.partition(":")
    if sep and prefix in TYPES:
        itype, tag = prefix, rest
    else:
        itype, tag = default_type, text
    if not tag:
        raise ReferenceError(f"image reference {text!r} names no image after '{itype}:'; {USAGE}")
    if itype == "docker":
        return _docker(text, tag)
    if itype == "id":
        tag_id = tag.removeprefix("sha256:")
        if not is_id(tag_id):  # the one id rule (shifter_site.imageid)
            raise ReferenceError(f"{text!r}: an id reference is id:<64 lowercase hex digits>")
        return Reference(itype="id", tag=tag)
    if itype == "custom":
        if len(tag) > 255 or not _CUSTOM.fullmatch(tag):
            raise ReferenceError(f"{text!r}: a custom image name is lowercase letters, digits, '.', '_', '-' and '/' "
                                 f"(e.g. custom:mylab/tools:1), as `shifterimg import` published it")
        return Reference(itype="custom", tag=tag)
    raise ReferenceError(f"{text!r}: the gateway pulls docker images only; {itype!r} images are not served by it")


def _docker(text: str, tag: str) -> Reference:
    name, at, digest = tag.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise ReferenceError(f"{text!r}: the digest after '@' must be sha256:<64 lowercase hex digits>")
    host = None
    first, slash, remainder = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if not _HOST.fullmatch(first):
            raise ReferenceError(f"{text!r}: {first!r} is not a registry host[:port]; {USAGE}")
        host, name = first, remainder
    version = None
    last_colon = name.rfind(":")
    if last_colon != -1:
        name, version = name[:last_colon], name[last_colon + 1:]
        if not _TAG.fullmatch(version):
            raise ReferenceError(f"{text!r}: tag {version!r} is not valid (letters, digits, _ . -, "
                                 f"at most 128, not starting with . or -); {USAGE}")
    if not name:
        raise ReferenceError(f"{text!r} names no image; {USAGE}")
    if not _PATH.fullmatch(name):
        what = "uppercase letters are not allowed" if name != name.lower() else \
            "use lowercase letters, digits and single . _ - between them, components separated by /"
        raise ReferenceError(f"{text!r}: image name {name!r} is not valid ({what}); {USAGE}")
    if len(name) > 255:
        raise ReferenceError(f"{text!r}: image name is longer than 255 characters")
    return Reference(itype="docker", tag=tag, host=host, repository=name, version=version,
                     digest=digest or None)


def name_of(key: str) -> str:
    """host/repository of a canonical key (its tag and digest cut off)."""
    name = key.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name
