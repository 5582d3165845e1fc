"""`shifter-gateway`: the image gateway HTTP service (run it as a non-root service account)."""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlsplit

from shifter_site import config, logs
from shifter_site.errors import ShifterError

from imagegw.squash import COMPRESSORS

DEFAULT_STATE = "/var/lib/shifter-gateway"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="shifter-gateway", description=__doc__)
    p.add_argument("--config", help="site config (default $SHIFTER_CONFIG or /etc/shifter/shifter.yaml)")
    p.add_argument("--listen", help="host:port to listen on (default: the first gateway.urls entry)")
    p.add_argument("--state-dir", default=DEFAULT_STATE, help=f"database and layer cache (default {DEFAULT_STATE})")
    p.add_argument("--database", help="image database: a SQLite file, or postgresql://USER@HOST[:PORT]/DB shared by "
                                      "several gateways (password: libpq's ~/.pgpass, never the command line); "
                                      "default STATE_DIR/images.db")
    p.add_argument("--compression", default="zstd", choices=sorted(COMPRESSORS), help="squashfs compression")
    p.add_argument("--workers", type=int, default=2, help="pulls converted at once (default 2)")
    p.add_argument("--auth-file", help="registry credentials (containers auth.json)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(json=True, verbose=args.verbose)
    log = logs.get("gateway")
    try:
        cfg = config.load(args.config, privileged=os.geteuid() == 0)
        if os.geteuid() == 0:
            raise ShifterError("refusing to run the gateway as root; run it as a service account "
                               "(e.g. runuser -u shifter-gw -- shifter-gateway)")
        if args.database and "://" in args.database:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                url = make_url(args.database)
            except ArgumentError:
                raise ShifterError(f"--database {args.database!r} is not a database URL; write "
                                   f"postgresql://USER@HOST[:PORT]/DB or a SQLite file path") from None
            if url.password:
                raise ShifterError("--database carries a password, which every user could read in the process "
                                   "list; put it in the gateway account's ~/.pgpass and drop it from the URL")
        listen = args.listen or urlsplit(cfg.gateway.urls[0]).netloc
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise ShifterError(f"--listen {listen!r}: write host:port, e.g. 127.0.0.1:8642")
        if not os.access(cfg.image_dir, os.W_OK):
            raise ShifterError(f"image_dir {cfg.image_dir} is not writable by uid {os.geteuid()}; "
                               f"chown it to the gateway's account")
        from imagegw.api import Gateway, create_app
        import uvicorn
        gateway = Gateway(cfg, args.state_dir, compression=args.compression, workers=args.workers,
                          auth_file=args.auth_file, database=args.database)
    except (ShifterError, OSError) as err:
        log.error("gateway_not_started", error=str(err))
        print(f"shifter-gateway: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 1)
    try:
        uvicorn.run(create_app(gateway), host=host.strip("[]"), port=int(port), log_config=None,
                    access_log=False, log_level="warning")
    finally:
        gateway.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
