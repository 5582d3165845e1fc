"""Building the container request from the site config, the image record and the user.

Covers runtime/spec.py: from_config (no `import_accounts`, so no host lookups beyond the
node name), filter_groups, ContainerSpec.build_key.
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from runtime import spec as specs
from runtime.spec import Group, User
from runtime.volumes import parse
from shifter_site.errors import ShifterError
from shifter_site.imagefiles import ImageRecord

ID = "cd" * 32
RECORD = ImageRecord(id=ID, system="unit", env=["PATH=/usr/bin", "LANG=C"], entrypoint=["/ep"], cmd=None,
                     workdir="/work")
USER = User(name="alice", uid=1001, gid=1001, home="/home/alice", shell="/bin/bash",
            groups=(Group("proj", 2000, ("alice",)),))


def build(site, **kw):
    return specs.from_config(site, RECORD, USER, **kw)


def test_image_record_and_site_settings_are_carried(site):
    s = build(site, image_request="docker:x:1", env=("A=1",), workdir="", entrypoint="")
    assert s.image_id == ID and s.squashfs.startswith("/images/") and ID in s.squashfs
    assert s.image_env == ("PATH=/usr/bin", "LANG=C") and s.image_entrypoint == ("/ep",) and s.image_cmd is None
    assert s.image_workdir == "/work" and s.image_request == "docker:x:1"
    assert s.env == ("A=1",) and s.workdir == "" and s.entrypoint == ""
    assert s.user == USER
    assert s.cache_size_limit == 10 * 1024**3 and s.cache_allowed_fs == ("xfs",)


def test_default_modules_apply_when_none_are_asked(site):
    s = build(site)
    assert s.modules == ("mpich",)
    assert [dict(e.set).get("MPI") for e in s.site_env] == ["mpich", None]


def test_none_means_no_module_and_site_env_stays_last(site):
    s = build(site, module="none")
    assert s.modules == ()
    assert len(s.site_env) == 1 and dict(s.site_env[0].set) == {"SITE_SET": "global"}


def test_module_mounts_follow_the_site_mounts_and_module_env_precedes_global(site):
    s = build(site, module="gpu")
    assert [m.target for m in s.site_mounts] == ["/global/homes", "/global/scratch", "/opt/udiImage/modules/gpu/lib"]
    assert s.site_mounts[1].rec and s.site_mounts[1].propagation == "slave" and s.site_mounts[2].ro
    assert dict(s.site_env[0].set)["SITE_SET"] == "gpu" and dict(s.site_env[-1].set)["SITE_SET"] == "global"


@pytest.mark.parametrize("modules,words", [
    ("cuda", "cuda"), ("old", "old"), ("mpich,openmpi", "cannot be used together"),
])
def test_wrong_modules_are_refused_by_name(site, modules, words):
    from runtime.modules import ModuleError

    with pytest.raises(ModuleError, match=words) as err:  # a module error, not a volume error
        build(site, module=modules)
    assert "\n" not in str(err.value)


def test_per_node_cache_over_the_site_limit_is_refused(site):
    with pytest.raises(ShifterError, match="limit"):
        build(site, volumes=tuple(parse("/x:/cache:perNodeCache=size=11G")))
    with pytest.raises(ShifterError, match="fs"):
        build(site, volumes=tuple(parse("/x:/cache:perNodeCache=size=1G,fs=ext4")))
    assert build(site, volumes=tuple(parse("/x:/cache:perNodeCache=size=10G"))).volumes[0].cache.size == 10 * 1024**3


def test_build_key_depends_on_what_is_built_not_on_how_it_is_entered(site):
    base = build(site)
    assert base.build_key() == build(site).build_key()
    assert base.build_key() == build(site, env=("A=1",), workdir="/tmp", entrypoint="", clearenv=True).build_key()
    assert base.build_key() != build(site, volumes=tuple(parse("/a:/b"))).build_key()
    assert base.build_key() != build(site, module="gpu").build_key()
    assert base.build_key() != build(site, hosts=["n1", "n1"]).build_key()


@given(gids=st.lists(st.integers(0, 5000), max_size=50), primary=st.integers(0, 5000), limit=st.integers(0, 40))
def test_filter_groups_never_gives_gid_0_the_primary_or_more_than_allowed(gids, primary, limit):
    out = specs.filter_groups(gids, primary, limit)
    assert 0 not in out and primary not in out
    assert len(out) == len(set(out)) <= max(limit - 1, 0)
    assert set(out) <= set(gids)
    firsts = [g for i, g in enumerate(gids) if g not in (0, primary) and g not in gids[:i]]
    assert out == firsts[: len(out)]  # the first ones win, in order


def test_the_entering_spec_goes_through_the_job_record_unchanged(site):
    """One entering spec, one serialisation: what the prolog writes is what a step enters
    with (plus the step's own shifter options). The record as JSON, as jobs.write/read
    store it (reading needs a root-owned file: tests/test_slurm_jobs.py covers that)."""
    import json

    from runtime.cli import parse_args
    from runtime.frozen import replace
    from shifter_wlm import containers, jobs, task

    spec = build(site, module="gpu", image_request="docker:x:1", env=("A=1",))
    written = containers.job_record(7, USER.uid, spec, spec.build_key(), "ready")
    record = jobs.JobRecord(**json.loads(json.dumps(written.to_dict())))
    opts = parse_args(["-e", "B=2", "--workdir=/w", "true"])
    entering = task._entering(record, opts)
    assert isinstance(entering, specs.Entering)
    assert entering == replace(spec.entering(), env=("B=2",), workdir="/w")
    assert entering.site_env == spec.site_env and entering.user.gids == [2000]


def test_the_runtimes_container_record_has_the_job_records_style(site, tmp_path):
    """One record style: the runtime's record.json (written last, when the pinned container is
    ready) carries the same `state`, `key` and `entering` fields, in the same serialisation,
    as the Slurm job record that embeds the entering spec."""
    import json

    from runtime import pinned
    from shifter_wlm import containers

    spec = build(site, module="gpu", image_request="docker:x:1", env=("A=1",))
    key = spec.build_key()
    pinned.write_record(spec, str(tmp_path), key)
    written = json.loads((tmp_path / "record.json").read_text())
    job = containers.job_record(7, USER.uid, spec, key, "ready").to_dict()
    assert written == {name: job[name] for name in ("state", "key", "entering")}
    assert specs.Entering.from_data(written["entering"]) == spec.entering()
