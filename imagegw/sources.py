"""Which registry a reference names, whether this site pulls from it, and where from.

One normalisation for every part (CLI, gateway, Slurm hooks): `canonical` makes the site's
defaults explicit, so `ubuntu`, `docker.io/library/ubuntu:latest`, `index.docker.io/ubuntu`
and (where the site declares a Docker Hub mirror) `<mirror>/library/ubuntu` are one image
under one key. The registries section of the site config is an allow-list: a reference that
names another registry is refused here, before anything contacts the network (a gateway that
fetched any host a user names would be a request forger and a port scanner).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from shifter_site.config import REGISTRY_HOST, Registries, registry_name

from imagegw.reference import HUB, HUB_API, Reference, ReferenceError


class RegistryNotAllowed(ReferenceError):
    """The reference names a registry this site does not pull from."""


def mirror_of(reg: Registries) -> dict[str, str]:
    """Mirror name -> upstream name: a reference naming a mirror means its upstream."""
    return {registry_name(url): registry_name(upstream) for upstream, urls in reg.mirrors.items() for url in urls}


def allowed(reg: Registries) -> list[str]:
    """The registry names this site pulls from, sorted."""
    names = {registry_name(reg.default), *(registry_name(h) for h in reg.hosts),
             *(registry_name(u) for u in reg.mirrors), *mirror_of(reg)}
    if reg.docker_hub:
        names.add(HUB)
    return sorted(names)


def canonical(reg: Registries, ref: Reference) -> Reference:
    """`ref` with the registry explicit (the default one, Docker Hub's aliases as docker.io, a
    mirror as its upstream), `library/` for Docker Hub official images, `latest` for no tag, a
    digest instead of a tag. `tag` stays the user's text. RegistryNotAllowed when the site
    does not pull from that registry."""
    if ref.itype != "docker":
        return ref
    host = registry_name(ref.host) if ref.host else registry_name(reg.default)
    host = mirror_of(reg).get(host, host)
    names = allowed(reg)
    if host not in names:
        raise RegistryNotAllowed(
            f"{ref.itype}:{ref.tag}: registry {ref.host or host} is not one this site pulls from "
            f"(allowed: {', '.join(names)}); ask the site admins to add it to registries.hosts")
    repository = ref.repository
    if host == HUB and "/" not in repository:
        repository = f"library/{repository}"
    version = None if ref.digest else (ref.version or "latest")
    return msgspec.structs.replace(ref, host=host, repository=repository, version=version)


def endpoints(reg: Registries, ref: Reference) -> list[str]:
    """Base URLs to fetch a canonical reference from, in order: the upstream's mirrors, else
    its hosts entry, else the default URL, else Docker Hub's API host (never docker.io itself,
    which serves no registry API)."""
    mirrors = {registry_name(u): list(urls) for u, urls in reg.mirrors.items()}
    hosts = {registry_name(h): url for h, url in reg.hosts.items()}
    if ref.host in mirrors:
        urls = mirrors[ref.host]
    elif ref.host in hosts:
        urls = [hosts[ref.host]]
    elif ref.host == registry_name(reg.default):
        urls = [reg.default]
    elif ref.host == HUB:
        urls = [HUB_API]
    else:  # canonical() refuses these; a caller that skipped it gets the same line
        raise RegistryNotAllowed(f"{ref.itype}:{ref.tag}: registry {ref.host} is not one this site pulls from")
    return [_api(str(u).rstrip("/")) for u in urls]


def _api(url: str) -> str:
    """Docker Hub's registry API answers at registry-1.docker.io, not at docker.io."""
    host = urlsplit(url).hostname or ""
    return HUB_API if host in ("docker.io", "index.docker.io") else url


def login_endpoint(reg: Registries, name: str) -> tuple[str, str]:
    """(canonical name, base URL) where `shifterimg login NAME` checks credentials: the
    registry itself (its hosts entry, the default URL, Docker Hub's API), never a mirror.
    RegistryNotAllowed for a registry this site does not pull from."""
    host = registry_name(name)
    if not REGISTRY_HOST.fullmatch(host):
        raise ReferenceError(f"{name!r} is not a registry host[:port] or URL, e.g. registry.example.org:5000")
    host = mirror_of(reg).get(host, host)
    if host not in allowed(reg):
        raise RegistryNotAllowed(f"registry {name} is not one this site pulls from (allowed: "
                                 f"{', '.join(allowed(reg))}); ask the site admins to add it to registries.hosts")
    hosts = {registry_name(h): url for h, url in reg.hosts.items()}
    if host in hosts:
        return host, _api(str(hosts[host]).rstrip("/"))
    if host == registry_name(reg.default):
        return host, _api(str(reg.default).rstrip("/"))
    return host, HUB_API
