"""Submit side (sbatch/salloc = allocator, srun = local), as the user: check the options,
resolve the image once, and pass the result to every node and step."""

from __future__ import annotations

from shifter_site.errors import ShifterError


class OptionError(ShifterError):
    """A --image/--volume/--module value is wrong; the message says how to fix it."""

    exit_code = 2


def _check(options) -> None:
    if options.volume is not None and options.image is None:
        raise OptionError("--volume needs --image: add --image=TYPE:TAG (e.g. --image=docker:ubuntu:22.04)")


def allocator(spank, args, options) -> None:
    _check(options)


def local(spank, args, options) -> None:
    _check(options)
