"""The site config and image records for a plain user's `shifter` launch, through the user's
own cache (shifter_site.usercache) when it is current, else the full validated loads.

What comes back from the cache is a read-only-by-convention view with the same attributes
the runtime reads from `config.Config` / `imagefiles.ImageRecord` (tests compare the two
field by field). Root never comes here (cli.py: euid 0 does the full, privileged load).
Standard library only, and cheap: this module exists to keep yaml/msgspec/re off the path.
"""

from __future__ import annotations

import os

from shifter_site import usercache

DEFAULT_PATH = "/etc/shifter/shifter.yaml"   # = config.DEFAULT_PATH (a test checks)
ENV_VAR = "SHIFTER_CONFIG"                    # = config.ENV_VAR
_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG_CODE = os.path.join(_HERE, "config.py")
_RECORD_CODE = os.path.join(_HERE, "imagefiles.py")
from shifter_site.configview import SimpleNamespace  # types', without importing it
from shifter_site.configview import view as config_view  # the one Config-like shape
from shifter_site.imageid import check_id


def squashfs_path(image_dir: str, image_id: str) -> str:
    """str(imagefiles.squashfs_path(...)) without pathlib."""
    return os.path.normpath(os.path.join(image_dir, f"{check_id(image_id)}.squashfs"))


# ---------------------------------------------------------------- the site config


def config_path() -> str:
    """The site config file a launch reads ($SHIFTER_CONFIG, else the default)."""
    return os.environ.get(ENV_VAR) or DEFAULT_PATH


def site_config(path: str | None = None):
    """The site config as this user sees it: the cached, validated view while the file is
    unchanged, else config.load (full parse and validation) and a fresh cache entry."""
    path = path or config_path()
    cached = usercache.get("config", path, _CONFIG_CODE)
    if cached is not None:
        try:
            return config_view(cached["config"], cached["size_limit_bytes"])
        except (KeyError, TypeError):
            pass  # an entry of another shape: load in full
    stamp = usercache.stamp(path, _CONFIG_CODE)
    import msgspec

    from shifter_site import config

    cfg = config.load(path, privileged=False)
    if stamp is not None:
        usercache.put("config", path, _CONFIG_CODE, {
            "config": msgspec.to_builtins(cfg), "size_limit_bytes": cfg.per_node_cache.size_limit_bytes}, stamp)
    return cfg


# ---------------------------------------------------------------- image records


def read_record(image_dir: str, image_id: str):
    """imagefiles.read_record for this user, through the cache; the squashfs must still be
    there (checked every time, as the full read does)."""
    check_id(image_id)
    path = os.path.join(image_dir, f"{image_id}.json")
    cached = usercache.get("record", path, _RECORD_CODE)
    if isinstance(cached, dict) and cached.get("id") == image_id and os.path.isfile(squashfs_path(image_dir, image_id)):
        return SimpleNamespace(**cached)
    stamp = usercache.stamp(path, _RECORD_CODE)
    import msgspec

    from shifter_site import imagefiles

    record = imagefiles.read_record(image_dir, image_id)
    if stamp is not None:
        usercache.put("record", path, _RECORD_CODE, msgspec.to_builtins(record), stamp)
    return record
