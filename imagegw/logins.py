"""A user's registry logins (`shifterimg login`), kept on the user's side only.

Stored in ~/.udiRoot/registry-auth.json (directory 0700, file 0600, owned by the user); a
file that others could read or that another user owns is refused, not used. The gateway
never stores them: they travel with the user's pull request (over the munge-authenticated
API) and live only in that pull's memory.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

from shifter_site.errors import ShifterError


class LoginError(ShifterError):
    """The login file is unsafe or unreadable, or the registry refused the credentials."""


def path() -> Path:
    return Path(os.path.expanduser("~")) / ".udiRoot" / "registry-auth.json"


def load() -> dict[str, dict[str, str]]:
    """Registry name -> {"username", "password"}; {} when there is no file. LoginError when
    the file is readable by others or not the user's own (fix: chmod 600, or log in again)."""
    file = path()
    try:
        st = file.stat()
    except FileNotFoundError:
        return {}
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise LoginError(f"{file}: registry passwords readable by others or not yours (mode "
                         f"{stat.S_IMODE(st.st_mode):04o}); refusing to use it: chmod 600 {file}, or remove it "
                         f"and run shifterimg login again")
    try:
        data = json.loads(file.read_text())
        logins = data["registries"]
        if not isinstance(logins, dict):
            raise TypeError
        return {str(k): {"username": str(v["username"]), "password": str(v["password"])} for k, v in logins.items()}
    except (OSError, ValueError, KeyError, TypeError):
        raise LoginError(f"{file}: not a registry login file shifterimg wrote; remove it and run "
                         f"shifterimg login again") from None


def save(registry: str, username: str, password: str) -> Path:
    """Add or replace one registry's login, atomically, 0600 from the start."""
    logins = load()
    logins[registry] = {"username": username, "password": password}
    file = path()
    file.parent.mkdir(mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".registry-auth.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"registries": logins}, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file
