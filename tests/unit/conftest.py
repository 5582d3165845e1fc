"""Unit-layer settings: nothing here needs root, the network or a writable checkout.

Hypothesis keeps no example database (the checkout is root-owned and read-only to the
non-root user `make unit` runs as) and has no deadline (a loaded 2-core CI machine).
Profiles: "full" (the default: `make test`, and any plain pytest run) tries 150 examples of
each property, the hostile-input files their own counts; "unit" (`make unit`, which sets
SHIFTER_TEST_PROFILE=unit: the fast layer, under 30 s on a 2-core machine) tries
UNIT_EXAMPLES of each, the same properties and assertions. FUZZ_EXAMPLES=N overrides the
hostile-input files' counts in either.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from shifter_site import config

UNIT_EXAMPLES = 25

settings.register_profile("full", database=None, deadline=None, max_examples=150,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("unit", settings.get_profile("full"), max_examples=UNIT_EXAMPLES)
settings.load_profile(os.environ.get("SHIFTER_TEST_PROFILE", "full"))

SITE = """\
system: unit
image_dir: /images
gateway: {urls: ["http://127.0.0.1:1"]}
registries: {default: "http://127.0.0.1:5000"}
site_mounts:
  - {from: /global/homes, to: /global/homes}
  - {from: /global/scratch, to: /global/scratch, flags: [rec, slave]}
site_env:
  set: {SITE_SET: global}
  append: {PATH: /opt/udiImage/bin}
  prepend: {LD_LIBRARY_PATH: /opt/udiImage/lib}
  unset: [LOADEDMODULES]
per_node_cache: {dir: /tmp, size_limit: 10G, allowed_fs: [xfs]}
modules:
  gpu:
    site_mounts: [{from: /usr/lib/nvidia, to: /opt/udiImage/modules/gpu/lib, flags: [ro]}]
    env: {set: {SITE_SET: gpu, GPU_ON: "1"}, prepend: {PATH: /opt/udiImage/modules/gpu/bin}}
  mpich: {conflict: [openmpi], env: {set: {MPI: mpich}}}
  openmpi: {conflict: [mpich], env: {set: {MPI: openmpi}}}
  old: {enabled: false}
default_modules: [mpich]
"""


@pytest.fixture(scope="session")
def site() -> config.Config:
    """A small parsed site configuration: two site mounts, site env, three modules and a
    disabled one, a 10G perNodeCache limit."""
    return config.parse(SITE, "unit-site.yaml")
