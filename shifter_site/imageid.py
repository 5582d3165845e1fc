"""An image id: the manifest digest's 64 lowercase hex digits, or (as `shifterimg images`
shows it) its first 12 or more. One rule for the gateway's files, `shifter -i`,
`shifterimg lookup`, the prolog and the step hooks. Standard library only: the launch and step paths import this."""

from __future__ import annotations

import os

from shifter_site.errors import ImageError, ShifterError

HEX = "0123456789abcdef"
SHORT_MIN = 12  # `shifterimg images` shows an id's first 12 digits


def is_id(text: str) -> bool:
    """64 lowercase hex digits."""
    return len(text) == 64 and not text.strip(HEX)


def is_short_id(text: str) -> bool:
    """An id's first SHORT_MIN or more digits (a whole id too)."""
    return SHORT_MIN <= len(text) <= 64 and not text.strip(HEX)


def check_id(image_id: str) -> str:
    """The id itself when it is one (never rewritten), else ImageError."""
    if is_id(image_id):
        return image_id
    raise ImageError(f"{image_id!r} is not an image id: an id is 64 hex digits (the sha256 of the manifest)")


class UnknownId(ShifterError):
    """`id:` and digits that no image on this system starts with."""


def find_short_id(image_dir: str, prefix: str) -> str | None:
    """The one image on this system whose id starts with `prefix` (as `shifterimg images`
    shows it), None when none does; ambiguous prefixes are refused."""
    try:
        names = os.listdir(image_dir)
    except OSError:
        return None
    found = sorted({n[:-5] for n in names if n.endswith(".json") and n.startswith(prefix) and len(n) == 69})
    if len(found) > 1:
        raise ShifterError(f"image id {prefix} is ambiguous: {len(found)} images start with it "
                           "(see shifterimg images); give more digits")
    return found[0] if found else None


def local_id(image_dir: str, ref: str) -> str | None:
    """The image id `ref` names by id: `id:` and an id's first 12 or more digits (or the bare
    digits) of an image on this system, None when `ref` is a bare name-like string no local
    image id starts with. `id:` with digits no image has is refused. One rule for `shifter -i`,
    srun/sbatch --image and `shifterimg lookup`."""
    text = ref[3:] if ref.startswith("id:") else ref
    if is_id(text):
        return text  # a whole id (the launch path: no directory listing)
    if is_short_id(text):
        found = find_short_id(image_dir, text)
        if found:
            return found
        if ref.startswith("id:"):
            raise UnknownId(f"no image on this system has an id starting with {text} (see shifterimg images)")
    return None
