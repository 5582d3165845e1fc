"""The runtime's build error (shared by every part of container setup, so none of them
needs to import another just for it)."""

from shifter_site.errors import ShifterError


class BuildError(ShifterError):
    """The container could not be built; the message says which part and why."""
