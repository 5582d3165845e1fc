"""The container's generated /etc files and /var/hostsfile, as text (pure functions).

The site, not the image, says who exists in the container: the user, their (filtered)
groups and the site's imported accounts. NSS inside reads only these files, so a lookup
never reaches the host's LDAP/sssd from inside an image whose libc may not match.
"""

from __future__ import annotations

TYPE_CHECKING = False  # a hot path: no `typing` import (docs/architecture.md, decision 13)
if TYPE_CHECKING:
    from runtime.spec import ContainerSpec

GENERATED = ("passwd", "group", "nsswitch.conf", "shadow", "hosts", "resolv.conf", "mtab")

NSSWITCH = """\
passwd:     files
group:      files
shadow:     files
hosts:      files dns
networks:   files
protocols:  files
services:   files
ethers:     files
rpc:        files
"""


def _field(value: str) -> str:
    """passwd/group fields cannot hold ':' or newlines; such a value is blanked, not guessed."""
    return "" if (":" in value or "\n" in value) else value


def passwd(spec: ContainerSpec) -> str:
    u = spec.user
    lines = [f"{_field(u.name)}:x:{u.uid}:{u.gid}:{_field(u.gecos)}:{_field(u.home)}:{_field(u.shell)}"]
    for a in spec.accounts:
        lines.append(f"{_field(a.name)}:x:{a.uid}:{a.gid}:{_field(a.gecos)}:{_field(a.home)}:{_field(a.shell)}")
    return "\n".join(lines) + "\n"


def group(spec: ContainerSpec, primary_name: str | None = None) -> str:
    """The user's primary group, their filtered groups, and the imported accounts' groups."""
    u = spec.user
    seen: set[int] = set()
    lines = []
    name = primary_name or u.name
    if u.gid != 0 or u.uid == 0:
        lines.append(f"{_field(name)}:x:{u.gid}:{_field(u.name)}")
        seen.add(u.gid)
    for g in (*u.groups, *spec.account_groups):
        if g.gid in seen or g.gid == 0:
            continue
        seen.add(g.gid)
        lines.append(f"{_field(g.name)}:x:{g.gid}:{','.join(_field(m) for m in g.members)}")
    return "\n".join(lines) + "\n"


def hostsfile(hosts: tuple[str, ...]) -> str:
    """One line per task: `hosts` already lists a host once per task on it."""
    return "".join(f"{h}\n" for h in hosts)


def host_lines(host_addrs: tuple[tuple[str, str], ...]) -> str:
    """/etc/hosts lines for the job's nodes (`address name`), after the host's own entries."""
    return "# the job's nodes (shifter)\n" + "".join(f"{addr} {name}\n" for name, addr in host_addrs)


def _json_string(text: str) -> str:
    """A JSON string (the json module costs a launch its import, docs/architecture.md decision 13)."""
    return '"' + "".join(("\\" + c) if c in '"\\' else (f"\\u{ord(c):04x}" if c < " " else c) for c in text) + '"'


def shifter_config(spec: ContainerSpec) -> str:
    """The original's /var/shifterConfig.json line (generateShifterConfigString): the keys in
    its order, the user's volume mappings sorted and joined by ';', each module followed by
    ','; a local: image's identifier is its path. Values are JSON-escaped (the original printed them raw; equal for plain values)."""
    fields = {"identifier": spec.local_root or spec.image_id, "user": spec.user.name,
              "volMap": ";".join(sorted(v.text() for v in spec.volumes)),
              "modules": "".join(f"{m}," for m in spec.modules)}
    return "{" + ",".join(f"{_json_string(k)}:{_json_string(v)}" for k, v in fields.items()) + "}"
