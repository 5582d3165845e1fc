"""The image files contract: an image exists for readers exactly when its record exists."""

from __future__ import annotations

import hashlib

import pytest

from shifter_site import imagefiles
from shifter_site.access import AccessError, check_access
from shifter_site.imagefiles import ImageError, ImageRecord

ID = hashlib.sha256(b"manifest").hexdigest()


def test_publish_then_read_round_trips(tmp_path):
    sq = tmp_path / "work.squashfs"
    sq.write_bytes(b"hsqs")
    record = ImageRecord(id=ID, system="local", tag="ubuntu:22.04", env=["PATH=/bin"], cmd=["/bin/sh"])
    imagefiles.publish(str(tmp_path), record, sq)
    assert not sq.exists()
    assert imagefiles.read_record(str(tmp_path), ID) == record
    assert (tmp_path / f"{ID}.squashfs").stat().st_mode & 0o777 == 0o644
    assert [r.id for r in imagefiles.list_records(str(tmp_path))] == [ID]
    assert not list(tmp_path.glob(".*tmp"))


def test_squashfs_without_record_is_not_an_image(tmp_path):
    (tmp_path / f"{ID}.squashfs").write_bytes(b"hsqs")
    with pytest.raises(ImageError, match="is not in .*; pull it first"):
        imagefiles.read_record(str(tmp_path), ID)
    assert imagefiles.list_records(str(tmp_path)) == []


def test_record_without_squashfs_is_refused(tmp_path):
    (tmp_path / f"{ID}.json").write_bytes(b'{"id": "%s", "system": "x"}' % ID.encode())
    with pytest.raises(ImageError, match="squashfs is missing; re-pull"):
        imagefiles.read_record(str(tmp_path), ID)


@pytest.mark.parametrize("bad", ["", "abc", ID.upper(), ID[:-1] + "g", "sha256:" + ID, "../" + ID[3:], ID + "\n"])
def test_ids_are_checked_not_rewritten(bad):
    with pytest.raises(ImageError, match="is not an image id"):
        imagefiles.squashfs_path("/images", bad)


def test_private_images_only_for_their_users_and_groups():
    public = ImageRecord(id=ID, system="s")
    check_access(public, 1234, [1234])
    private = ImageRecord(id=ID, system="s", tag="lab/secret:1", user_acl=[1001], group_acl=[500])
    check_access(private, 1001, [1001])      # listed user
    check_access(private, 1002, [1002, 500])  # member of a listed group
    with pytest.raises(AccessError, match="lab/secret:1 is private and you are not on its access list"):
        check_access(private, 1002, [1002, 501])
