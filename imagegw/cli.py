"""`shifterimg`: pull, list and look up images through the image gateway."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("shifterimg: the image gateway is not installed in this version yet", file=sys.stderr)
    return 69  # EX_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
