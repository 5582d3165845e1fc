"""The one cached shape of the site config: a read-only-by-convention view with the same
attributes as `config.Config` (tests compare the two field by field), made from
`msgspec.to_builtins(Config)`. Both caches of a validated config give it back: the user's
(shifter_site.quickload, a rootless launch) and root's snapshot (shifter_site.configcache, a
step joining its container). Standard library only: both are hot paths.
"""

from __future__ import annotations

import sys

# types.SimpleNamespace, which it is, without importing `types` (~0.2 ms of both hot paths,
# docs/architecture.md decision 13)
SimpleNamespace = type(sys.implementation)


def _ns(data: dict, **changed) -> SimpleNamespace:
    return SimpleNamespace(**{**data, **changed})


def _mount(data: dict) -> SimpleNamespace:
    return SimpleNamespace(from_=data["from"], to=data["to"], flags=list(data["flags"]))


def _module(data: dict) -> SimpleNamespace:
    return _ns(data, site_mounts=[_mount(m) for m in data["site_mounts"]], env=_ns(data["env"]),
               gpu=_ns(data["gpu"]) if data.get("gpu") else None)


def view(data: dict, size_limit_bytes: int) -> SimpleNamespace:
    """A Config-like view of msgspec.to_builtins(Config) (keys as in the YAML)."""
    return _ns(data, gateway=_ns(data["gateway"]), registries=_ns(data["registries"]),
               sshd=_ns(data["sshd"]), ccm=_ns(data["ccm"]),
               per_node_cache=_ns(data["per_node_cache"], size_limit_bytes=size_limit_bytes),
               site_mounts=[_mount(m) for m in data["site_mounts"]], site_env=_ns(data["site_env"]),
               modules={name: _module(m) for name, m in data["modules"].items()},
               gpu_module=next((name for name, m in data["modules"].items() if m.get("gpu")), None))
