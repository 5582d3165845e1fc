"""Volume specs: the reference syntax, user vs site rules, perNodeCache options, and a corpus
of bad specs each rejected with a message naming the wrong part (never silently altered)."""

from __future__ import annotations

import pytest

from runtime.volumes import CacheOptions, Volume, VolumeError, check_cache_limits, parse

GOOD = [
    ("/a:/b", [Volume("/a", "/b")]),
    ("/a:/b:ro", [Volume("/a", "/b", ro=True)]),
    ("/a:/b;/c:/d:ro", [Volume("/a", "/b"), Volume("/c", "/d", ro=True)]),
    ("/x:/var/tmp", [Volume("/x", "/var/tmp")]),
    ("/x:/opt/tools", [Volume("/x", "/opt/tools")]),
    ("/x:/etcetera", [Volume("/x", "/etcetera")]),
    ("/a b:/c d", [Volume("/a b", "/c d")]),
    ("/scratch/c:/cache:perNodeCache=size=100G",
     [Volume("/scratch/c", "/cache", cache=CacheOptions(size=100 * 1024**3))]),
    ("/x:/c:perNodeCache=size=1g,fs=ext4,bs=4k,method=loop",
     [Volume("/x", "/c", cache=CacheOptions(size=1024**3, fs="ext4", bs=4096))]),
]


@pytest.mark.parametrize("text,expected", GOOD)
def test_good_specs(text, expected):
    assert parse(text) == expected


def test_site_flags():
    assert parse("/g:/g:rec:slave:ro", site=True) == [Volume("/g", "/g", ro=True, rec=True, propagation="slave")]
    assert parse("/proc/x:/etc/site", site=True)[0].target == "/etc/site"  # the site may cover /etc


def test_spec_text_round_trip():
    for text, expected in GOOD:
        for volume in expected:
            assert parse(volume.text()) == [volume]


# (spec, a fragment the message must contain: the part that is wrong)
BAD = [
    ("", "empty"),
    (";", "empty mapping"),
    ("/a:/b;", "empty mapping"),
    (";/a:/b", "empty mapping"),
    ("/a:/b;;/c:/d", "empty mapping"),
    ("/a", "from:to"),
    ("a:/b", "source 'a' is a relative path"),
    ("/a:b", "target 'b' is a relative path"),
    (":/b", "source path is empty"),
    ("/a:", "target path is empty"),
    ("/a/../b:/c", "'..'"),
    ("/a:/c/../etc", "'..'"),
    ("/a:/c/./d", "'.'"),
    ("/a//b:/c", "empty component"),
    ("/a:/c\n", "control character"),
    ("/a\t:/c", "control character"),
    ("/a:/etc", "under /etc"),
    ("/a:/etc/foo", "under /etc"),
    ("/a:/var", "under /var"),
    ("/a:/var/lib", "under /var"),
    ("/a:/var/tmp/x", "under /var"),
    ("/a:/opt/udiImage", "under /opt/udiImage"),
    ("/a:/opt/udiImage/bin", "under /opt/udiImage"),
    ("/a:/opt", "'/opt'"),
    ("/a:/proc", "under /proc"),
    ("/a:/proc/1", "under /proc"),
    ("/a:/sys", "under /sys"),
    ("/a:/dev", "under /dev"),
    ("/a:/dev/shm", "under /dev"),
    ("/a:/", "target '/'"),
    ("/a:/b:rw", "flag 'rw'"),
    ("/a:/b:RO", "flag 'RO'"),
    ("/a:/b:rec", "flag 'rec' is not allowed for user volumes"),
    ("/a:/b:slave", "flag 'slave' is not allowed for user volumes"),
    ("/a:/b:private", "flag 'private' is not allowed for user volumes"),
    ("/a:/b:ro:ro", "flag 'ro' is given twice"),
    ("/a:/b:ro:", "empty flag"),
    ("/a:/b::ro", "empty flag"),
    ("/a:/b:ro=1", "takes no arguments"),
    ("/a:/b:perNodeCache", "perNodeCache needs arguments"),
    ("/a:/b:perNodeCache=", "perNodeCache needs arguments"),
    ("/a:/b:perNodeCache=fs=xfs", "needs size"),
    ("/a:/b:perNodeCache=size=10Q", "size: '10Q' is not a size"),
    ("/a:/b:perNodeCache=size=-1G", "size: '-1G' is not a size"),
    ("/a:/b:perNodeCache=size=1.5G", "size: '1.5G' is not a size"),
    ("/a:/b:perNodeCache=size=0", "size is 0"),
    ("/a:/b:perNodeCache=size=", "key 'size' has an empty value"),
    ("/a:/b:perNodeCache=size=1G,size=2G", "key 'size' is given twice"),
    ("/a:/b:perNodeCache=size=1G,fs=btrfs", "fs 'btrfs' is not supported"),
    ("/a:/b:perNodeCache=size=1G,bs=3k", "bs '3k' must be a power of two"),
    ("/a:/b:perNodeCache=size=1G,bs=128k", "bs '128k' must be a power of two"),
    ("/a:/b:perNodeCache=size=1G,bs=512,fs=ext4", "below ext4's minimum"),
    ("/a:/b:perNodeCache=size=1G,method=nfs", "method 'nfs'"),
    ("/a:/b:perNodeCache=size=1G,colour=red", "key 'colour' is unknown"),
    ("/a:/b:perNodeCache=size=1G,nokey", "'nokey' is not key=value"),
    ("/a:/b:perNodeCache=size=1G:perNodeCache=size=2G", "flag 'perNodeCache' is given twice"),
    ("/a:/b:perNodeCache=size=1G:ro", "remove 'ro'"),
    ("/a:/b:perNodeCache=size=1G:/c", "flag '/c'"),
    ("/a:/b;/c:/b", "target '/b' is given twice"),
    ("/a:/b;/c:/b/", "is given twice"),
    ("/a:/var/tmp;/c:/var/tmp", "is given twice"),
    ("/a:/b:perNodeCache=size=1G;/c:/b:ro", "is given twice"),
]


def test_corpus_is_big_enough():
    assert len(BAD) >= 40


@pytest.mark.parametrize("text,fragment", BAD)
def test_bad_specs(text, fragment):
    with pytest.raises(VolumeError) as err:
        parse(text)
    message = str(err.value)
    assert fragment in message, message
    assert "\n" not in message.replace(repr("\n")[1:-1], "") or "control" in message


BAD_SITE = [
    ("/g:/g:slave:private", "exclude each other"),
    ("/g:/g:perNodeCache=size=1G", "not allowed for site mounts"),
    ("/g:/", "target '/'"),
    ("g:/g", "relative"),
]


@pytest.mark.parametrize("text,fragment", BAD_SITE)
def test_bad_site_specs(text, fragment):
    with pytest.raises(VolumeError, match=fragment):
        parse(text, site=True)


def test_cache_limits_enforced():
    vols = parse("/x:/c:perNodeCache=size=2G;/y:/d:perNodeCache=size=2G")
    check_cache_limits(vols, 4 * 1024**3, ["xfs"])
    with pytest.raises(VolumeError, match="exceeds this system's limit"):
        check_cache_limits(vols, 3 * 1024**3, ["xfs"])
    with pytest.raises(VolumeError, match="fs 'ext4' is not allowed"):
        check_cache_limits(parse("/x:/c:perNodeCache=size=1G,fs=ext4"), 10 * 1024**3, ["xfs"])


def test_spec_is_never_rewritten():
    """Characters the original dropped silently are kept (and mounted) exactly as written."""
    [volume] = parse("/data-1/x_y+z@w:/mnt/a=b,c")
    assert (volume.source, volume.target) == ("/data-1/x_y+z@w", "/mnt/a=b,c")


@pytest.mark.parametrize("text,fragment", [
    ("/x:/c:perNodeCache=size=200m", "size=200m is too small for xfs (at least 300M); ask for size=300M or more, "
                                     "or add fs=ext4"),
    ("/x:/c:perNodeCache=size=299M,fs=xfs", "too small for xfs"),
    ("/x:/c:perNodeCache=size=1G,bs=512", "below xfs's minimum block size 1k"),
    ("/x:/c:perNodeCache=size=512k,fs=ext4", "size=512k is too small for ext4 (at least 1M); ask for size=1M"),
    ("/x:/c:perNodeCache=size=2M,fs=ext4,bs=64k", "too small for ext4 (at least 4M with bs=65536)"),
])
def test_cache_sizes_mkfs_cannot_make_are_refused(text, fragment):
    """Measured with mkfs.xfs 6.1 and mkfs.ext4 1.47 on sparse files: xfs needs 300 MiB and
    1k blocks; ext4 needs 1 MiB and 64 blocks."""
    with pytest.raises(VolumeError) as err:
        parse(text)
    assert fragment in str(err.value)


@pytest.mark.parametrize("text", ["/x:/c:perNodeCache=size=300M", "/x:/c:perNodeCache=size=1M,fs=ext4",
                                  "/x:/c:perNodeCache=size=4M,fs=ext4,bs=64k"])
def test_smallest_cache_sizes_mkfs_makes_are_accepted(text):
    assert parse(text)[0].cache is not None


def test_volumes_given_in_several_places_accumulate():
    from runtime.volumes import combine

    assert combine("/a:/a", "/b:/b") == "/a:/a;/b:/b"
    assert combine("/a:/a;/b:/b", "/b:/b", "", "/c:/c") == "/a:/a;/b:/b;/c:/c"  # Slurm repeats the last one
    assert combine("", "") == ""
    # an empty mapping is kept, for parse to refuse: nothing is silently fixed
    with pytest.raises(VolumeError, match="empty mapping"):
        parse(combine("/a:/a;", "/b:/b"))
    with pytest.raises(VolumeError, match="given twice"):
        parse(combine("/a:/data", "/b:/data"))
