"""`shifterimg`: pull, list and look up images through the image gateway.

    shifterimg images [--json]     images ready on this system
    shifterimg lookup REF          print the image id (exit 3 when it is not there)
    shifterimg pull REF            pull and convert, showing progress, until READY or FAILURE
    shifterimg pull -u U1,U2 -g G REF   the same, private to those users and groups (and you)
    shifterimg login [REGISTRY]    store your user name and password/token for a registry
    shifterimg images --usage      per image: lookups, jobs, nodes, users, last use, expiry
    shifterimg jobs [JOBID...]     running jobs' images (those you may see)
    shifterimg rm REF              remove an image now (admins; refused while a job uses it)
    shifterimg expire REF          expire an image now: removed at once, or once its jobs end (admins)
    shifterimg autoexpire          remove every expired image no job uses (admins)
    shifterimg import PATH NAME    publish a squashfs, docker save archive or OCI layout as custom:NAME (admins)

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
                            retries=1, timeout=cfg.gateway.timeout, name=name, auth_hosts=cfg.registries.auth_hosts)
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


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) if t else "-"


def cmd_usage(cfg, args) -> int:
    rows = client.usage(cfg)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':14} {'LOOKUPS':>7} {'JOBS':>5} {'NODES':>5} {'USERS':>5} {'LAST USE':19} {'EXPIRES':19} TAG")
    for r in rows:
        print(f"{(r.get('id') or '-')[:12]:14} {r.get('lookups', 0):>7} {r.get('jobs', 0):>5} {r.get('nodes', 0):>5} "
              f"{r.get('users', 0):>5} {_when(r.get('last_used', 0)):19} {_when(r.get('expires', 0)):19} "
              f"{r['itype']}:{r['tag']}")
    return 0


def cmd_jobs(cfg, args) -> int:
    bad = [j for j in args.jobs if not j.isdigit()]
    if bad:
        raise UsageError(f"{', '.join(bad)}: not a job id; give Slurm job ids (digits), e.g. shifterimg jobs 1234")
    rows = client.jobs(cfg, args.jobs)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'JOBID':10} {'USER':12} {'ID':14} {'NODES':20} IMAGE")
    for r in rows:
        print(f"{r['job']:10} {r['user']:12} {r['id'][:12]:14} {','.join(r['nodes']):20} {r['image']}")
    return 0


def _removal(action: str, ref: str, body: dict) -> int:
    for name in body.get("removed", []):
        print(f"removed {name}")
    for name, jobs in body.get("kept", {}).items():
        print(f"{action}: {name} is in use by running job{'s' if len(jobs) > 1 else ''} {', '.join(jobs)}; "
              f"removed once they have ended", file=sys.stderr)
    if body.get("layers"):
        print(f"{body['layers']} unused layer{'s' if body['layers'] > 1 else ''} removed from the layer cache")
    return 0


def cmd_rm(cfg, args) -> int:
    return _removal("rm", args.ref, client.remove(cfg, args.ref))


def cmd_expire(cfg, args) -> int:
    return _removal("expire", args.ref, client.expire(cfg, args.ref))


def cmd_autoexpire(cfg, args) -> int:
    body = client.autoexpire(cfg)
    if not body.get("removed") and not body.get("kept"):
        print("no expired images")
    return _removal("autoexpire", "", body)


def cmd_import(cfg, args) -> int:
    body = client.import_image(cfg, args.path, args.name)
    neutralised = (body.get("record") or {}).get("neutralised") or {}
    note = f" (neutralised: {', '.join(f'{k} {v}' for k, v in sorted(neutralised.items()))})" if neutralised else ""
    print(f"custom:{args.name}: READY {body['id']}{note}")
    return 0


def cmd_images(cfg, args) -> int:
    if args.usage:
        return cmd_usage(cfg, args)
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
    s.add_argument("--usage", action="store_true", help="lookups, jobs, nodes, users, last use and expiry per image")
    s.set_defaults(func=cmd_images)
    s = sub.add_parser("jobs", help="running jobs' images (those you may see)")
    s.add_argument("jobs", nargs="*", metavar="JOBID")
    s.add_argument("--json", action="store_true", help="print the records as JSON")
    s.set_defaults(func=cmd_jobs)
    s = sub.add_parser("rm", help="remove an image now (admins; refused while a job uses it)")
    s.add_argument("ref", metavar="REF")
    s.set_defaults(func=cmd_rm)
    s = sub.add_parser("expire", help="expire an image now: removed at once, or once its jobs have ended (admins)")
    s.add_argument("ref", metavar="REF")
    s.set_defaults(func=cmd_expire)
    s = sub.add_parser("autoexpire", help="remove every expired image no job uses (admins)")
    s.set_defaults(func=cmd_autoexpire)
    s = sub.add_parser("import", help="publish a squashfs, docker save archive or OCI layout as custom:NAME (admins)")
    s.add_argument("path", metavar="PATH", help="a squashfs or docker save file, or an OCI layout directory")
    s.add_argument("name", metavar="NAME", help="the image's name: users ask for custom:NAME")
    s.set_defaults(func=cmd_import)
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
