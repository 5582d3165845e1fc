"""`--volume` / `-V` specs as users write them: what parses, what it means, what is refused.

Covers runtime/volumes.py: parse, parse_mapping (user and site rules), Volume.text,
check_all, check_user_target, check_cache_limits.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, strategies as st

from runtime.volumes import FORBIDDEN_TARGETS, VolumeError, check_cache_limits, parse

component = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True).filter(lambda c: c not in (".", ".."))
paths = st.lists(component, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
# targets a user may use: not under what the site controls
targets = paths.filter(lambda p: not any(p == f or p.startswith(f + "/") for f in FORBIDDEN_TARGETS)
                       and p != "/opt")
sizes = st.sampled_from(["512M", "10G", "1g", "314572800"])   # sizes both xfs and ext4 can format


@given(source=paths, target=targets, ro=st.booleans())
def test_a_valid_mapping_means_what_it_says_and_round_trips(source, target, ro):
    text = f"{source}:{target}" + (":ro" if ro else "")
    [volume] = parse(text)
    assert (volume.source, volume.target, volume.ro, volume.cache) == (source, target, ro, None)
    assert volume.text() == text
    assert parse(volume.text()) == [volume]


@given(source=paths, target=targets, size=sizes, fs=st.sampled_from(["xfs", "ext4"]))
def test_per_node_cache_mapping(source, target, size, fs):
    [volume] = parse(f"{source}:{target}:perNodeCache=size={size},fs={fs}")
    assert volume.cache is not None and volume.cache.fs == fs and volume.cache.size > 0
    assert parse(volume.text()) == [volume]


@given(source=paths, target=targets, size=st.sampled_from(["1k", "4096", "64M", "299M"]))
def test_per_node_cache_too_small_for_xfs_is_refused_with_the_fix(source, target, size):
    with pytest.raises(VolumeError, match="too small for xfs .*fs=ext4"):
        parse(f"{source}:{target}:perNodeCache=size={size},fs=xfs")


@given(st.lists(st.tuples(paths, targets), min_size=1, max_size=6, unique_by=lambda m: m[1].rstrip("/")))
def test_mappings_joined_by_semicolons_all_arrive_in_order(mappings):
    volumes = parse(";".join(f"{s}:{t}" for s, t in mappings))
    assert [(v.source, v.target) for v in volumes] == mappings


@given(source=paths, target=targets, other=paths)
def test_the_same_target_twice_is_refused(source, target, other):
    with pytest.raises(VolumeError, match="twice"):
        parse(f"{source}:{target};{other}:{target}/")


@given(source=paths, forbidden=st.sampled_from(FORBIDDEN_TARGETS), below=st.lists(component, max_size=2))
def test_targets_under_site_controlled_directories_are_refused(source, forbidden, below):
    target = "/".join([forbidden, *below])
    assume(target != "/var/tmp")
    with pytest.raises(VolumeError, match="the site controls"):
        parse(f"{source}:{target}")


@pytest.mark.parametrize("target", ["/", "/opt"])
def test_targets_covering_the_container_or_opt_are_refused(target):
    with pytest.raises(VolumeError):
        parse(f"/a:{target}")


def test_var_tmp_itself_is_allowed():
    assert parse("/a:/var/tmp")[0].target == "/var/tmp"


@given(source=paths, target=targets, bad=st.sampled_from(["rec", "slave", "private", "rw", "nosuid", "RO"]))
def test_user_volumes_take_only_ro_and_per_node_cache(source, target, bad):
    with pytest.raises(VolumeError, match="not allowed for user volumes"):
        parse(f"{source}:{target}:{bad}")


def test_site_mounts_take_their_own_flags_and_no_cache():
    [volume] = parse("/global/scratch:/scratch:rec:slave", site=True)
    assert volume.rec and volume.propagation == "slave"
    with pytest.raises(VolumeError, match="site mounts"):
        parse("/a:/b:perNodeCache=size=1G", site=True)


@pytest.mark.parametrize("text", [
    "", "/a", "a:/b", "/a:b", "/a/../b:/c", "/a:/b/./c", "/a//b:/c", "/a:/b:", "/a:/b::ro", "/a:/b;", ";/a:/b",
    "/a:/b:ro:ro", "/a:/b:ro=1", "/a:/c:perNodeCache", "/a:/c:perNodeCache=fs=xfs", "/a:/c:perNodeCache=size=0",
    "/a:/c:perNodeCache=size=1G,fs=btrfs", "/a:/c:perNodeCache=size=1G,bs=3000", "/a:/c:perNodeCache=size=1G:ro",
    "/a:/c:perNodeCache=size=1G,size=2G", "/a\n:/b",
])
def test_mistakes_are_refused_in_one_line_naming_the_spec(text):
    with pytest.raises(VolumeError) as err:
        parse(text)
    message = str(err.value)
    assert "\n" not in message.replace(repr(text), "")
    assert message.startswith("volume")


@given(text=st.text(max_size=40))
def test_any_text_either_parses_or_is_a_volume_error(text):
    """Never a traceback: whatever a user types, the answer is volumes or one VolumeError."""
    try:
        volumes = parse(text)
    except VolumeError:
        return
    assert volumes and all(v.target.startswith("/") and v.source.startswith("/") for v in volumes)


def test_site_cache_limits_count_every_cache_together():
    volumes = parse("/a:/c1:perNodeCache=size=6G;/b:/c2:perNodeCache=size=6G")
    check_cache_limits(volumes[:1], 10 * 1024**3, ["xfs"])
    with pytest.raises(VolumeError, match="limit"):
        check_cache_limits(volumes, 10 * 1024**3, ["xfs"])


def test_each_volume_check_runs_once_per_request(site, tmp_path, monkeypatch):
    """check_all and the site's cache limits run once per request in a process: srun/sbatch's
    check (shifter_wlm.submit) and the spec a node builds (runtime.spec.from_config, which
    takes volumes already parsed) each check once, never again behind each other's back."""
    from runtime import spec as specs
    from runtime import volumes
    from shifter_site.imagefiles import ImageRecord
    from shifter_wlm import submit

    calls = {"check_all": 0, "check_cache_limits": 0}

    def counted(name):
        real = getattr(volumes, name)

        def wrapper(*args, **kw):
            calls[name] += 1
            return real(*args, **kw)
        return wrapper

    for name in calls:
        monkeypatch.setattr(volumes, name, counted(name))
    text = f"{tmp_path}:/data;/x:/cache:perNodeCache=size=1G"
    submit.check_volumes(text, site)
    assert calls == {"check_all": 1, "check_cache_limits": 1}
    parsed = tuple(volumes.parse(text))
    record = ImageRecord(id="ab" * 32, system="unit", env=[], entrypoint=None, cmd=None, workdir="")
    user = specs.User(name="u", uid=1000, gid=1000, home="/home/u", shell="/bin/sh", groups=())
    specs.from_config(site, record, user, volumes=parsed)
    assert calls == {"check_all": 2, "check_cache_limits": 2}
