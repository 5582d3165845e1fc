"""Reading JSON on the step path without the `json` package, whose decoder imports `re`,
`enum` and more (~4 ms of every `srun shifter` step; docs/architecture.md, decision 13).
This is the scanner `json` itself uses: CPython's C accelerator `_json`, with json.loads's
defaults. Errors are ValueError, as json.loads's JSONDecodeError is. Writers keep using `json`."""

from __future__ import annotations

import _json

_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Defaults:
    """json.JSONDecoder()'s settings, as the C scanner reads them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_CONSTANTS.__getitem__)


_scan = _json.make_scanner(_Defaults())
_SPACE = " \t\n\r"  # JSON's whitespace


def loads(text: str):
    """json.loads(text) for a str."""
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as err:
        raise ValueError(f"not JSON: expecting a value at character {err.value}") from None
    if text[end:].strip(_SPACE):
        raise ValueError(f"not JSON: extra data at character {end}")
    return value


def load(handle):
    """json.load(handle) for a text file."""
    return loads(handle.read())
