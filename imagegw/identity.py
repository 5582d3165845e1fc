"""Who asks the gateway: a munge credential, as in the original gateway (header
`authentication: MUNGE:...`). The cluster already runs munge for Slurm; a credential names the
uid and gid of the process that made it, cannot be forged without the cluster key, and is
accepted once (munged refuses a replay). Every API call carries one; the gateway learns the
caller's uid and groups from it (Caller) and refuses calls without a valid one.

Credentials are made and checked through libmunge (ctypes: no process per call, so a lookup
stays fast), with the socket from the site config's `munge_socket`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import grp
import os
import pwd
import re
import threading
from dataclasses import dataclass, field

from shifter_site import logs
from shifter_site.config import Config
from shifter_site.errors import ShifterError

log = logs.get("gateway.identity")
HEADER = "authentication"
_CREDENTIAL = re.compile(r"MUNGE:[A-Za-z0-9+/=._:-]{1,4000}")
_OPT_SOCKET = 8  # MUNGE_OPT_SOCKET in munge.h


class IdentityError(ShifterError):
    """A credential is missing or not valid (forged, replayed, expired, or munge is down)."""


@dataclass(frozen=True)
class Caller:
    """Who made a request: uid, primary gid, all gids (from the system's group database)."""

    uid: int
    gid: int
    gids: frozenset[int] = field(default_factory=frozenset)
    admin: bool = False

    @property
    def key(self) -> str:
        return f"uid:{self.uid}"

    def can_read(self, user_acl: list[int], group_acl: list[int]) -> bool:
        """The one rule for private images on the gateway (the node side: shifter_site.access):
        public (both lists empty), or this caller is listed (uid or a group), or an admin."""
        if self.admin or (not user_acl and not group_acl):
            return True
        return self.uid in user_acl or bool(self.gids & set(group_acl))


_lib = None
_lib_lock = threading.Lock()


def _libmunge():
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL(ctypes.util.find_library("munge") or "libmunge.so.2", use_errno=True)
            lib.munge_ctx_create.restype = ctypes.c_void_p
            lib.munge_ctx_destroy.argtypes = [ctypes.c_void_p]
            lib.munge_ctx_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
            lib.munge_encode.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_void_p,
                                         ctypes.c_int]
            lib.munge_decode.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                                         ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_uint),
                                         ctypes.POINTER(ctypes.c_uint)]
            lib.munge_strerror.restype = ctypes.c_char_p
            libc = ctypes.CDLL(None)
            libc.free.argtypes = [ctypes.c_void_p]
            lib.free = libc.free
            _lib = lib
        return _lib


def _context(lib, cfg: Config) -> int:
    ctx = lib.munge_ctx_create()
    lib.munge_ctx_set(ctx, _OPT_SOCKET, cfg.munge_socket.encode())
    return ctx


def credential(cfg: Config) -> str | None:
    """A fresh credential for the calling user, or None where munge is not running here (the
    gateway then refuses the call, saying so)."""
    try:
        lib = _libmunge()
    except OSError as err:
        log.debug("no_libmunge", error=str(err))
        return None
    ctx = _context(lib, cfg)
    out = ctypes.c_void_p()
    try:
        err = lib.munge_encode(ctypes.byref(out), ctx, None, 0)
        if err != 0:
            log.debug("no_munge_credential", error=lib.munge_strerror(err).decode())
            return None
        text = ctypes.string_at(out.value).decode()
    finally:
        if out.value:
            lib.free(out.value)
        lib.munge_ctx_destroy(ctx)
    return text if _CREDENTIAL.fullmatch(text) else None


def decode(cfg: Config, text: str | None) -> tuple[int, int]:
    """(uid, gid) a credential was made by; IdentityError (one line) when it is missing or not valid."""
    if not text:
        raise IdentityError("this request has no munge credential; the gateway answers only requests "
                            "that carry one (use shifterimg; is munged running on this node?)")
    if not _CREDENTIAL.fullmatch(text):
        raise IdentityError("the request's munge credential is malformed; use shifterimg (it sends one)")
    try:
        lib = _libmunge()
    except OSError as err:
        log.error("no_libmunge", error=str(err))
        raise IdentityError("the gateway cannot check munge credentials (no libmunge); tell the site admins") \
            from None
    ctx = _context(lib, cfg)
    buf, length, uid, gid = ctypes.c_void_p(), ctypes.c_int(), ctypes.c_uint(), ctypes.c_uint()
    try:
        err = lib.munge_decode(text.encode(), ctx, ctypes.byref(buf), ctypes.byref(length), ctypes.byref(uid),
                               ctypes.byref(gid))
    finally:
        if buf.value:
            lib.free(buf.value)
        lib.munge_ctx_destroy(ctx)
    if err != 0:
        reason = lib.munge_strerror(err).decode()
        log.warning("credential_refused", reason=reason)
        raise IdentityError(f"the request's munge credential was refused ({reason}); run the command again")
    return uid.value, gid.value


def uid_of(cfg: Config, text: str) -> int:
    """The uid a credential was made by; IdentityError (one line) when it is not valid."""
    return decode(cfg, text)[0]


def groups_of(uid: int, gid: int) -> frozenset[int]:
    """The uid's groups from the system's database (as the original gateway's `id -G`)."""
    try:
        return frozenset(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except KeyError:
        return frozenset({gid})


def is_admin(cfg: Config, uid: int, gids: frozenset[int]) -> bool:
    """Whether the user's name or one of its groups' names is in `gateway.admins`."""
    admins = set(cfg.gateway.admins)
    if not admins:
        return False
    try:
        if pwd.getpwuid(uid).pw_name in admins:
            return True
    except KeyError:
        pass
    for g in gids:
        try:
            if grp.getgrgid(g).gr_name in admins:
                return True
        except KeyError:
            continue
    return False


def caller(cfg: Config, text: str | None) -> Caller:
    """The Caller behind a request's credential; IdentityError when it has none valid."""
    uid, gid = decode(cfg, text)
    gids = groups_of(uid, gid)
    return Caller(uid=uid, gid=gid, gids=gids, admin=is_admin(cfg, uid, gids))
