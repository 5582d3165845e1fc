"""Who asks the gateway: a munge credential, as in the original gateway (header
`authentication: MUNGE:...`). The cluster already runs munge for Slurm; a credential names the
uid of the process that made it, cannot be forged without the cluster key, and is accepted
once (munged refuses a replay). The gateway uses the uid to bound each user's pulls.

Credentials are made and checked with munge's own `munge`/`unmunge` commands (the socket from
the site config's `munge_socket`).
"""

from __future__ import annotations

import re
import subprocess

from shifter_site import logs
from shifter_site.config import Config
from shifter_site.errors import ShifterError

log = logs.get("gateway.identity")
HEADER = "authentication"
_CREDENTIAL = re.compile(r"MUNGE:[A-Za-z0-9+/=._:-]{1,4000}")


class IdentityError(ShifterError):
    """A credential was sent but is not valid (forged, replayed, expired, or munge is down)."""


def credential(cfg: Config) -> str | None:
    """A fresh credential for the calling user, or None where munge is not running here (the
    gateway then counts the caller as anonymous)."""
    try:
        out = subprocess.run(["munge", "--no-input", f"--socket={cfg.munge_socket}"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("no_munge_credential", error=str(err))
        return None
    return out if _CREDENTIAL.fullmatch(out) else None


def uid_of(cfg: Config, text: str) -> int:
    """The uid a credential was made by; IdentityError (one line) when it is not valid."""
    if not _CREDENTIAL.fullmatch(text or ""):
        raise IdentityError("the request's munge credential is malformed; use shifterimg (it sends one)")
    try:
        proc = subprocess.run(["unmunge", f"--socket={cfg.munge_socket}", "--numeric", "--keys=UID",
                               "--output=/dev/null"], input=text, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as err:
        log.error("unmunge_failed", error=str(err))
        raise IdentityError("the gateway cannot check munge credentials; tell the site admins") from None
    found = re.search(r"^UID:\s*(\d+)\s*$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not found:
        reason = (proc.stderr.strip().splitlines() or ["invalid"])[-1].removeprefix("unmunge: Error: ")
        log.warning("credential_refused", reason=reason)
        raise IdentityError(f"the request's munge credential was refused ({reason}); run the command again")
    return int(found.group(1))
