"""Who listens on a TCP port on this host, from /proc/net/tcp{,6} and /proc/<pid>/fd: the
job's sshd is ready when its own process listens on its address (shifter_wlm.sshd)."""

from __future__ import annotations

import ipaddress
import os
import sys

from shifter_wlm.procfds import socket_inodes


def _proc_address(text: str) -> str:
    """An address as /proc/net/tcp{,6} writes it (hex, 32-bit words in host order)."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)) if sys.byteorder == "little" else raw
    return str(ipaddress.ip_address(words))


def listening(pid: int, listen: str, port: int) -> bool:
    """Whether process `pid` itself has a socket listening on listen:port (listen "": the
    IPv4 wildcard), found by matching its fds' socket inodes in its /proc/net/tcp{,6}.
    Someone else listening on the port (a squatter) does not count."""
    try:
        inodes = socket_inodes(pid)
    except OSError:
        return False
    want = listen or "0.0.0.0"
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) < 10 or fields[3] != "0A" or fields[9] not in inodes:
                        continue
                    addr, _, hexport = fields[1].partition(":")
                    if int(hexport, 16) == port and _proc_address(addr) == want:
                        return True
        except OSError:
            continue
    return False


def _listeners(listen: str, port: int) -> set[str]:
    """Socket inodes listening on `port` where a bind to listen:port would collide."""
    want = listen or "0.0.0.0"
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{table}") as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) < 10 or fields[3] != "0A":
                        continue
                    addr, _, hexport = fields[1].partition(":")
                    where = _proc_address(addr)
                    if int(hexport, 16) == port and (where in (want, "0.0.0.0", "::") or want == "0.0.0.0"):
                        inodes.add(fields[9])
        except OSError:
            continue
    return inodes


def port_holders(listen: str, port: int) -> set[int]:
    """The pids holding a listening socket that keeps listen:port from the job's sshd (on
    failure only: this scans every process's fds)."""
    inodes = _listeners(listen, port)
    pids = set()
    if not inodes:
        return pids
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if socket_inodes(name) & inodes:
                pids.add(int(name))
        except OSError:  # gone meanwhile
            continue
    return pids
