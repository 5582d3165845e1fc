"""`shifterimg`: pull, list and look up images through the image gateway.

    shifterimg images [--json]     images ready on this system
    shifterimg lookup REF          print the image id (exit 3 when it is not there)
    shifterimg pull REF            pull and convert, showing progress, until READY or FAILURE
    shifterimg pull -u U1,U2 -g G REF   the same, private to those users and groups (and you)
    shifterimg login [REGISTRY]    store your user name and password/token for a registry

Every call carries a munge credential: the gateway knows who asks.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import signal
import sys
import time

from shifter_site import config, logs
from shifter_site.errors import ShifterError

from imagegw import client


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def progress_line(body: dict) -> str:
    p = body.get("progress") or {}
    parts = [body.get("status", "?")]
    if p.get("layers"):
        parts.append(f"layers {p.get('layers_done', 0)}/{p['layers']}")
    if p.get("bytes_total"):
        parts.append(f"{_size(p.get('bytes', 0))}/{_size(p['bytes_total'])}")
    if p.get("entries"):
        parts.append(f"{p['entries']} files")
    return "  ".join(parts)


def cmd_pull(cfg, args) -> int:
    tty = sys.stdout.isatty()
    last = [""]
    start = time.monotonic()

    def show(body: dict) -> None:
        line = progress_line(body)
        if line == last[0]:
            return
        last[0] = line
        if tty:
            print(f"\r\033[K{line}", end="", flush=True)
        else:
            print(line, flush=True)

    accepted = []  # the gateway's first answer: from then on the pull is the gateway's

    def update(body: dict) -> None:
        accepted.append(True)
        show(body)

    acl = access_list(args.users, args.groups)
    try:
        body = client.pull(cfg, args.ref, on_update=update, acl=acl)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the line short
        # stopping the wait does not stop the pull: say where it goes on and how to see it
        goes_on = "goes on" if accepted else "may go on"
        print(("\n" if tty else "") + f"shifterimg: stopped waiting; the pull of {args.ref} {goes_on} in the "
              f"gateway: check it with `shifterimg lookup {args.ref}` or `shifterimg images`",
              file=sys.stderr, flush=True)
        return 130
    if tty:
        print()
    if body.get("status") == "READY":
        print(f"{args.ref}: READY {body['id']} ({time.monotonic() - start:.1f}s)")
        return 0
    print(f"shifterimg: pull of {args.ref} failed: {body.get('status_message') or body.get('status')}", file=sys.stderr)
    return 1


class UsageError(ShifterError):
    """A command-line value is wrong; the message says which and how to fix it."""

    exit_code = 2


def _ids(text: str | None, kind: str) -> list[int]:
    """Names or numeric ids, comma-separated, as ids; UsageError naming the unknown ones."""
    if text is None:
        return []
    names = text.split(",")
    if not all(n and n == n.strip() for n in names):
        raise UsageError(f"{'-u' if kind == 'user' else '-g'} {text!r}: give comma-separated {kind} names or ids "
                         f"without spaces or empty entries, e.g. {'alice,bob' if kind == 'user' else 'myproject'}")
    ids, unknown = [], []
    for name in names:
        try:
            if kind == "user":
                ids.append(pwd.getpwuid(int(name)).pw_uid if name.isascii() and name.isdigit() else pwd.getpwnam(name).pw_uid)
            else:
                ids.append(grp.getgrgid(int(name)).gr_gid if name.isascii() and name.isdigit() else grp.getgrnam(name).gr_gid)
        except KeyError:
            unknown.append(name)
    if unknown:
        raise UsageError(f"unknown {kind}{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}; "
                         f"check the names (getent {'passwd' if kind == 'user' else 'group'})")
    return sorted(set(ids))


def access_list(users: str | None, groups: str | None) -> tuple[list[int], list[int]] | None:
    """-u/-g as (uids, gids) with the caller always included; None when neither was given."""
    if users is None and groups is None:
        return None
    return sorted({*_ids(users, "user"), os.getuid()}), _ids(groups, "group")


def _ask() -> tuple[str, str]:
    """User name and password: prompted on a terminal (the password not echoed), else two
    lines from stdin (for scripts)."""
    import getpass

    if sys.stdin.isatty():
        username = input("Username: ").strip()
        password = getpass.getpass("Password or token: ")
    else:
        username = sys.stdin.readline().rstrip("\n")
        password = sys.stdin.readline().rstrip("\n")
    if not username or not password:
        raise UsageError("login needs a user name and a password or token (on a terminal they are asked for; "
                         "from a script: two lines on stdin)")
    return username, password


def cmd_login(cfg, args) -> int:
    from imagegw import logins, registry, sources

    name, url = sources.login_endpoint(cfg.registries, args.registry or cfg.registries.default)
    logins.load()  # refuse an unsafe file before asking for anything
    username, password = _ask()
    check = registry.Client(url, "", registry.Credentials(username=username, password=password),
                            retries=1, timeout=cfg.gateway.timeout, name=name)
    try:
        check.check_login()
    finally:
        check.close()
    file = logins.save(name, username, password)
    print(f"Login for {name} stored in {file} (readable by you only); your pulls from {name} use it, "
          f"and images pulled with it are private to you")
    return 0


def cmd_lookup(cfg, args) -> int:
    print(client.lookup(cfg, args.ref).id)
    return 0


def cmd_images(cfg, args) -> int:
    rows = client.images(cfg)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'SYSTEM':10} {'TYPE':7} {'ID':14} {'STATUS':8} {'PULLED':19} TAG")
    for r in rows:
        pulled = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r.get("last_pull") or 0))
        print(f"{r['system']:10} {r['itype']:7} {(r.get('id') or '-')[:12]:14} {r['status']:8} {pulled:19} {r['tag']}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shifterimg", description="Pull, list and look up container images.")
    p.add_argument("--config", help="site config (default $SHIFTER_CONFIG or /etc/shifter/shifter.yaml)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("images", help="list images ready on this system")
    s.add_argument("--json", action="store_true", help="print the records as JSON")
    s.set_defaults(func=cmd_images)
    s = sub.add_parser("lookup", help="print the id of an image (exit 3 if absent)")
    s.add_argument("ref", metavar="REF")
    s.set_defaults(func=cmd_lookup)
    s = sub.add_parser("pull", help="pull an image and wait until it is READY or FAILED")
    s.add_argument("-u", "--users", metavar="USER[,USER]",
                   help="make the image private to these users (you are always included)")
    s.add_argument("-g", "--groups", metavar="GROUP[,GROUP]", help="make the image private to these groups")
    s.add_argument("ref", metavar="REF")
    s.set_defaults(func=cmd_pull)
    s = sub.add_parser("login", help="store your credentials for a private registry (yours only)")
    s.add_argument("registry", nargs="?", metavar="REGISTRY", help="host[:port] (default: the site's default)")
    s.set_defaults(func=cmd_login)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(json=False, verbose=args.verbose)
    try:
        cfg = config.load(args.config, privileged=False)
        return args.func(cfg, args)
    except ShifterError as err:
        print(f"shifterimg: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
