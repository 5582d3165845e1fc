"""The job's ssh plan, worked out alike by every node's prolog and extern step: the job's
port, where each node's sshd listens, and how clients find it: the container's /etc/hosts
entries, known_hosts and /etc/ssh/ssh_config (shifter_wlm/sshd.py starts the sshd itself).
Pure functions."""

from __future__ import annotations

import ipaddress
import re

from shifter_wlm.sshd import KNOWN_HOSTS, OPENSSH_KEY
from shifter_wlm.sshkeys import public_line

SSH_CONFIG = "ssh/ssh_config"                       # below the container's /etc
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


def listen_address(node: str, node_addr: str) -> str:
    """Where this node's sshd listens: Slurm's NodeAddr when it differs from the node's name
    (several nodes on one host, or a dedicated network), else every address ("")."""
    return "" if not node_addr or node_addr == node else node_addr


def host_addrs(addrs: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """(name, address) for the container's /etc/hosts: the job's nodes whose NodeAddr is an
    IP address other than their name (a NodeAddr that is a host name resolves by itself)."""
    out = []
    for name, addr in addrs.items():
        if addr and addr != name:
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                continue
            out.append((name, addr))
    return tuple(out)


def job_port(first: int, count: int, job_id: int) -> int:
    """The job's sshd port: the same on every node of the job (each prolog works it out
    alone), and different for jobs sharing a node unless their ids differ by a multiple of
    `count` (sshd.port_count)."""
    return first + job_id % count


def _spellings(addrs: dict[str, str]) -> list[str]:
    """Each node's name and address, once each, in the job's order; only plain host names
    and addresses (a Slurm name never holds ssh_config's pattern characters or spaces)."""
    names: list[str] = []
    for name, addr in addrs.items():
        for spelling in (name, addr):
            if spelling and _HOST.fullmatch(spelling) and spelling not in names:
                names.append(spelling)
    return names


def known_hosts(addrs: dict[str, str], port: int, seed: bytes) -> str:
    """Every node of the job (by name and by address) with the job's host key, once as
    dropbear's client looks it up (the name as typed) and once as OpenSSH does for a port
    other than 22 (`[name]:port`)."""
    line = public_line(seed)
    out = []
    for spelling in _spellings(addrs):
        out.append(f"{spelling} {line}\n")
        out.append(f"[{spelling}]:{port} {line}\n")
    return "".join(out)


def ssh_config(job_id: int, addrs: dict[str, str], port: int) -> str:
    """The container's /etc/ssh/ssh_config: OpenSSH's client (the image's own ssh, and what
    pdsh, GNU parallel, mpirun, Spark or Dask start) reaches the job's sshd on each of the
    job's nodes with the job's port, the user's job key and the job's host keys, checked
    strictly. Other hosts keep the image's settings (its ssh_config.d)."""
    hosts = " ".join(_spellings(addrs))
    return (f"# written by shifter for job {job_id}: ssh to the job's nodes reaches the job's sshd\n"
            f"# in each node's container; /opt/udiImage/bin/ssh (dropbear) uses the same port, key, known hosts\n"
            f"Host {hosts}\n"
            f"    Port {port}\n"
            f"    IdentityFile {OPENSSH_KEY}\n"
            f"    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {KNOWN_HOSTS}\n"
            f"    GlobalKnownHostsFile {KNOWN_HOSTS}\n"
            f"    StrictHostKeyChecking yes\n"
            f"    CheckHostIP no\n"
            f"    BatchMode yes\n"
            f"    PasswordAuthentication no\n"
            f"    KbdInteractiveAuthentication no\n"
            f"    LogLevel ERROR\n"
            f"Host *\n"
            f"Include /etc/ssh/ssh_config.d/*.conf\n")
