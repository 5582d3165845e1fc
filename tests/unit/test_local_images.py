"""`local:/path` images and `--ccm` without --image: which requests are refused, before
anything is built, with one line.

Covers runtime/localimage.py (path rules, the site's permission, the trust walk of
runtime/trusted.py on the host's own root-owned paths), runtime.spec.from_config for a local
record, and shifter_wlm/submit.py ccm_image.
"""

from __future__ import annotations

import os
import pwd

import pytest

from runtime import localimage
from runtime.spec import User, from_config
from shifter_site import config
from shifter_site.errors import ImageError
from shifter_wlm import submit
from shifter_wlm.dispatch import RawOptions

BASE = """\
system: unit
image_dir: /images
gateway: {urls: ["http://127.0.0.1:1"]}
registries: {default: "http://127.0.0.1:5000"}
"""
ALLOWED = config.parse(BASE + "allow_local_images: true\n")
FORBIDDEN = config.parse(BASE + "ccm: {root: /usr}\n")


def refused(cfg, ref: str) -> str:
    with pytest.raises(ImageError) as err:
        localimage.check(cfg, ref)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"image {ref!r}")
    return str(err.value)


@pytest.mark.parametrize("ref,words", [
    ("local:", "give the image's directory"),
    ("local:usr", "not an absolute path"),
    ("local:/usr/../etc", "not an absolute path without '..'"),
    ("local:/nonexistent-local-image", "No such file or directory"),
    ("local:/etc/passwd", "is not a directory"),
    ("local:/tmp", "/tmp is writable by others"),          # sticky, world-writable: never the image itself
])
def test_bad_local_paths_are_refused(ref, words):
    assert words in refused(ALLOWED, ref)


def test_a_tree_owned_by_a_user_is_refused(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    if os.geteuid() == 0:
        os.chown(tree, pwd.getpwnam("nobody").pw_uid, -1)
    owner = os.stat(tree).st_uid
    assert owner != 0
    message = refused(ALLOWED, f"local:{tree}")
    # the first component the user owns is named: the tree, or (not root) a directory above it
    assert f"is owned by uid {owner}, not root" in message


def test_local_images_where_the_site_forbids_them():
    assert "not allowed on this site" in refused(FORBIDDEN, "local:/etc")
    assert "not allowed on this site" in refused(config.parse(BASE), "local:/usr")   # no ccm.root either


def test_the_ccm_root_is_allowed_and_paths_are_normalised():
    assert localimage.check(FORBIDDEN, "local:/usr") == "/usr"
    assert localimage.check(FORBIDDEN, "local://usr/./") == "/usr"
    assert localimage.check(ALLOWED, "local:/usr/lib") == "/usr/lib"


def test_a_local_image_id_is_its_paths_and_is_checked():
    record = localimage.record(ALLOWED, "local:/usr")
    assert record.id == localimage.local_id("/usr") and len(record.id) == 64
    assert record.itype == "local" and record.tag == "/usr" and record.env == [] and record.entrypoint is None
    assert localimage.local_id("/usr") != localimage.local_id("/usr/lib")
    with pytest.raises(ImageError, match="does not have the id"):
        localimage.record(ALLOWED, "local:/usr", "0" * 64)


def test_spec_of_a_local_image_binds_the_tree_not_a_squashfs():
    me = pwd.getpwuid(os.getuid())
    user = User(name=me.pw_name, uid=me.pw_uid, gid=me.pw_gid, home=me.pw_dir, shell="/bin/sh")
    spec = from_config(ALLOWED, localimage.record(ALLOWED, "local:/usr"), user, image_request="local:/usr")
    assert spec.local_root == "/usr" and spec.squashfs == ""
    other = from_config(ALLOWED, localimage.record(ALLOWED, "local:/usr/lib"), user)
    assert spec.build_key() != other.build_key()


def test_ccm_without_image_uses_the_sites_ccm_root():
    options = submit.ccm_image(RawOptions(ccm=True, volume="/a:/b"), FORBIDDEN)
    assert (options.image, options.volume, options.ccm) == ("local:/usr", "/a:/b", True)
    same = RawOptions(image="docker:a:1", ccm=True)
    assert submit.ccm_image(same, FORBIDDEN) is same
    with pytest.raises(submit.OptionError, match="--ccm needs --image on this site .it sets no ccm.root."):
        submit.ccm_image(RawOptions(ccm=True), ALLOWED)
