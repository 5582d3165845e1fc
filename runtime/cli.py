"""`shifter`: run a command inside a container image (the runtime is built in its own issue)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("shifter: the container runtime is not installed in this version yet", file=sys.stderr)
    return 69  # EX_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
