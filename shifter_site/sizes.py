"""Sizes as sites and users write them (`100G`, `512m`, `4096`), in bytes."""

import re

_UNITS = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_SIZE = re.compile(r"^([0-9]+)([bkmgtpe]?)$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes for `text`: digits with an optional suffix b k m g t p e (powers of 1024).

    Raises ValueError with a message that says what a size looks like; never guesses.
    """
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(
            f"{text!r} is not a size: write digits with an optional unit b, k, m, g, t, p or e "
            "(powers of 1024), e.g. 100G"
        )
    return int(match.group(1)) * 1024 ** _UNITS[match.group(2).lower()]
