"""`shifter-config`: check a site configuration before deploying it, or show what it means."""

from __future__ import annotations

import argparse
import json
import sys

import msgspec
import yaml

from shifter_site import config, logs, udiroot
from shifter_site.errors import ShifterError


def import_udiroot(argv: list[str]) -> int:
    """`shifter-config import FILE`: the YAML equivalent of an original udiRoot.conf on stdout,
    every key not carried over on stderr with the reason; nothing on stdout when the result
    would not be a valid configuration."""
    parser = argparse.ArgumentParser(
        prog="shifter-config import",
        description="Print the YAML site configuration equivalent to the original Shifter's udiRoot.conf.",
    )
    parser.add_argument("path", help="the original's udiRoot.conf")
    args = parser.parse_args(argv)
    try:
        with open(args.path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        print(f"shifter-config: {args.path}: cannot read it ({err.strerror or err}); "
              "give the path of a readable udiRoot.conf", file=sys.stderr)
        return 66  # EX_NOINPUT
    try:
        text = udiroot.decode(data)
    except ValueError as err:
        print(f"shifter-config: {args.path}: {err}", file=sys.stderr)
        return 65  # EX_DATAERR
    result = udiroot.translate(text)
    out = (f"# Site configuration translated by `shifter-config import` from {args.path}.\n"
           "# Review it against config/shifter.yaml.example before deploying it.\n"
           + yaml.safe_dump(result.data, sort_keys=False, default_flow_style=False))
    for line in result.notes:
        print(f"shifter-config: {args.path}: {line}", file=sys.stderr)
    try:
        config.parse(out, f"{args.path} (translated)")
    except ShifterError as err:
        print(f"shifter-config: {err}; fix udiRoot.conf (or the printed YAML) and run the import again",
              file=sys.stderr)
        return err.exit_code
    sys.stdout.write(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["import"]:
        return import_udiroot(argv[1:])
    parser = argparse.ArgumentParser(
        prog="shifter-config",
        description="Validate the site configuration (default: $SHIFTER_CONFIG or /etc/shifter/shifter.yaml). "
                    "`shifter-config import udiRoot.conf` translates the original Shifter's configuration.",
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
