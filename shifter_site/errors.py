"""Error types shared by every part.

Each error carries a message written for the person who has to act on it (a user or an
admin): what was wrong and how to fix it, on one line. Boundaries (CLIs, Slurm hooks, the
HTTP service) turn these into exit codes or Slurm errors; nothing below them prints.
"""


class ShifterError(Exception):
    """An error whose message is ready to show to a user or admin as is."""

    exit_code = 1


class ConfigError(ShifterError):
    """The site configuration is missing, unreadable, unsafe or invalid."""

    exit_code = 78  # EX_CONFIG


class ImageError(ShifterError):
    """An image file is missing or unusable; the message says which and what to do."""


class StepError(ShifterError):
    """This shifter step cannot run; the message says why. Raised by shifter_wlm.task and by
    shifter_wlm.stepbuild (here, not in task.py, so the step-level builder and the step's
    fast path need not import each other)."""
