"""`shifter-config`: check a site configuration before deploying it, or show what it means."""

from __future__ import annotations

import argparse
import json
import sys

import msgspec

from shifter_site import config, logs
from shifter_site.errors import ShifterError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shifter-config",
        description="Validate the site configuration (default: $SHIFTER_CONFIG or /etc/shifter/shifter.yaml).",
    )
    parser.add_argument("path", nargs="?", help="config file to check")
    parser.add_argument("--json", action="store_true", help="print the effective configuration as JSON")
    parser.add_argument(
        "--privileged", action="store_true",
        help="also apply the ownership check that root code applies (file and its directories root-owned, not group/world-writable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output")
    args = parser.parse_args(argv)
    logs.configure(json=False, verbose=args.verbose)
    try:
        cfg = config.load(args.path, privileged=args.privileged or None)
    except ShifterError as err:
        print(f"shifter-config: {err}", file=sys.stderr)
        return err.exit_code
    if args.json:
        print(json.dumps(msgspec.to_builtins(cfg), indent=2))
    else:
        print(f"{config.config_path(args.path)}: ok (system {cfg.system})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
