"""An image id: the manifest digest's 64 lowercase hex digits, or (as `shifterimg images`
shows it) its first 12 or more. One rule for the gateway's files, `shifter -i`, the prolog
and the step hooks. Standard library only: the launch and step paths import this."""

from __future__ import annotations

from shifter_site.errors import ImageError

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
