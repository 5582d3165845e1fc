"""Images built by buildah from ordinary Dockerfiles, pushed to the local registry, pulled
through the cluster's gateway as a plain user, and compared entry by entry (type, mode, owner,
size, content hash, link target, hard-link groups, extended attributes) with buildah's own
view of the same image (`buildah mount`): hard links broken by a later `rm`, by a rewrite, by
removing their directory, across three layers; the image's owners and `user.*` attributes;
gzip, zstd and uncompressed layers in one image; and what a job sees of it at run time."""

from __future__ import annotations

import grp
import io
import json
import os
import pwd
import shutil
import tarfile
import uuid

import pytest

import buildahtools as bt
import gatewaytools as gt
import imagebuilder as ib
import jobtools as jt
from conftest import localcluster, need, run_as
from imagegw import registry, squash

USER = "testuser"
SHIFTERIMG = str(localcluster.PREFIX / "bin/shifterimg")
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # vfs_cap_data v2: cap_net_raw

LINKS = r"""FROM scratch
ADD rootfs.tar /
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
ARG ME
ARG SHADOW
RUN mkdir -p /hl/rm /hl/rw /hl/dir/sub /hl/keep /hl/three /own && \
    echo rm > /hl/rm/a && ln /hl/rm/a /hl/rm/b && ln /hl/rm/a /hl/rm/c && \
    echo rw > /hl/rw/a && ln /hl/rw/a /hl/rw/b && \
    echo dir > /hl/dir/sub/a && ln /hl/dir/sub/a /hl/dir/b && ln /hl/dir/sub/a /hl/dir/c && \
    echo keep > /hl/keep/a && ln /hl/keep/a /hl/keep/b && \
    echo three > /hl/three/a && ln /hl/three/a /hl/three/b && ln /hl/three/a /hl/three/c && \
    echo secret > /own/secret && chown 0:$SHADOW /own/secret && chmod 640 /own/secret && \
    echo open > /own/open && chown 4242:4343 /own/open && \
    mkdir /own/app && echo app > /own/app/file && chown -R 4242:4242 /own/app && chmod 750 /own/app && \
    echo mine > /own/mine && chown $ME /own/mine && chmod 600 /own/mine && \
    cp /bin/busybox /own/suid && chmod 4755 /own/suid && ln /own/suid /own/suid-link
ADD attrs.tar /
RUN rm /hl/rm/a && echo more >> /hl/rw/a && rm -r /hl/dir/sub && rm /hl/three/a
RUN echo again >> /hl/three/b
"""

PERL = """FROM scratch
ADD rootfs.tar /
RUN rm {first_names}
"""


def attrs_tar() -> bytes:
    """Files with extended attributes, extracted by buildah's ADD with them."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("attrs")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name, mode, xattrs in (("attrs/user", 0o644, {"user.mime_type": b"text/plain", "user.origin": b"lab"}),
                                   ("attrs/cap", 0o755, {"security.capability": CAPABILITY, "user.kept": b"1"})):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 4, mode
            info.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()}
            tar.addfile(info, io.BytesIO(b"data"))
    return buf.getvalue()


def expected_view(root) -> tuple[dict, set, dict, dict]:
    """buildah's view with the documented neutralisations applied: device nodes dropped,
    setuid/setgid cleared on files, extended attributes other than user.* dropped."""
    entries = gt.tree_entries(root)
    groups, xattrs = gt.tree_links_and_xattrs(root)
    expected = {}
    for path, e in entries.items():
        if e[0] in "cb":
            continue
        if e[0] != "d" and e[1] & 0o6000:
            e = (e[0], e[1] & ~0o6000, *e[2:])
        expected[path] = e
    kept = {p: {k: v for k, v in x.items() if k.startswith("user.")} for p, x in xattrs.items()}
    dropped = {"file_capability": sum("security.capability" in x for x in xattrs.values()),
               "xattr": sum(1 for x in xattrs.values() for k in x if not k.startswith("user.") and k != "security.capability")}
    return expected, groups, {p: x for p, x in kept.items() if x}, dropped


def compare(squashfs, expected) -> None:
    entries, groups, xattrs, _ = expected
    ours = gt.squashfs_entries(squashfs)
    our_groups, our_xattrs = gt.squashfs_links_and_xattrs(squashfs)
    missing, extra = sorted(set(entries) - set(ours)), sorted(set(ours) - set(entries))
    differ = sorted(p for p in set(ours) & set(entries) if ours[p] != entries[p])
    assert (missing, extra, differ[:5]) == ([], [], []), [(p, ours[p], entries[p]) for p in differ[:5]]
    assert our_groups == groups
    assert our_xattrs == xattrs


def pull_as_user(repo: str, tag: str, digest: str) -> dict:
    result = run_as(USER, [SHIFTERIMG, "pull", f"docker:{repo}:{tag}"], timeout=600)
    assert result.returncode == 0, result.stderr
    image_id = digest.split(":", 1)[1]
    record = json.loads((gt.STATE / "images" / f"{image_id}.json").read_text())
    assert record["digest"] == digest
    return record


@pytest.fixture(scope="module")
def bh(cluster):
    need(os.geteuid() == 0, "buildah builds as root here")
    need(shutil.which("buildah") is not None, "buildah is not installed (Debian package buildah)")
    b = bt.Buildah()
    yield b
    b.close()


@pytest.fixture(scope="module")
def links(bh):
    """The hard-link/owner/attribute image: built, pushed by buildah (zstd), buildah's view."""
    me = pwd.getpwnam(USER)
    shadow = grp.getgrnam("shadow").gr_gid
    assert shadow not in os.getgrouplist(USER, me.pw_gid)  # so the job below must be refused it
    bh.build("links", LINKS, {"rootfs.tar": bt.busybox_rootfs_tar(), "attrs.tar": attrs_tar()},
             {"ME": str(me.pw_uid), "SHADOW": str(shadow)})
    tag = uuid.uuid4().hex[:12]
    digest = bh.push_registry("links", gt.REGISTRY, "test/buildah-links", tag, compression="zstd")
    container, root = bh.rootfs("links")
    try:
        view = expected_view(root)
    finally:
        bh.release(container)
    return {"tag": tag, "digest": digest, "view": view, "uid": me.pw_uid, "shadow": shadow}


def test_hard_links_owners_and_attributes_match_buildah(links):
    record = pull_as_user("test/buildah-links", links["tag"], links["digest"])
    squashfs = gt.STATE / "images" / f"{record['id']}.squashfs"
    compare(squashfs, links["view"])
    entries, groups, xattrs, dropped = links["view"]
    # the cases really happened, as buildah sees them
    assert "hl/rm/a" not in entries and frozenset({"hl/rm/b", "hl/rm/c"}) in groups
    assert entries["hl/rw/a"][6] != entries["hl/rw/b"][6] and "hl/dir/sub" not in entries
    assert frozenset({"hl/dir/b", "hl/dir/c"}) in groups and frozenset({"hl/keep/a", "hl/keep/b"}) in groups
    assert not any("hl/three/c" in g for g in groups) and entries["hl/three/b"][6] != entries["hl/three/c"][6]
    assert entries["own/secret"][1:4] == (0o640, 0, links["shadow"]) and entries["own/mine"][2] == links["uid"]
    assert entries["own/suid"][1] == 0o755 and xattrs["attrs/cap"] == {"user.kept": b"1"}
    # counted in the record: capabilities and setuid bits neutralised; no link lost
    neutralised = record["neutralised"]
    assert dropped["file_capability"] == 1 and neutralised.get("file_capability") == 1
    assert neutralised.get("setuid_setgid", 0) >= 1 and "hardlink_unresolved" not in neutralised
    assert neutralised.get("xattr", 0) == dropped["xattr"]


def test_names_of_broken_links_are_rewritten_from_the_lower_layer(links, tmp_path):
    """The same layers converted here: the flattener re-read the content of hidden first names
    (how many depends on which name each layer's tar lists first)."""
    client = registry.Client(f"http://{gt.REGISTRY}", "test/buildah-links")
    try:
        resolved = client.resolve(links["tag"])
        assert {l.media_type for l in resolved.layers} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
        paths = registry.fetch_layers(client, resolved.layers, registry.LayerCache(tmp_path / "cache"))
    finally:
        client.close()
    flat = squash.convert(paths, tmp_path / "image.squashfs")
    assert flat.relinked > 0
    compare(tmp_path / "image.squashfs", links["view"])


def test_gzip_zstd_and_uncompressed_layers_in_one_image(bh, links):
    # buildah compresses every layer of one push alike: the mixed image takes buildah's own
    # blobs from three `dir:` pushes of the same build, layer i from compression i % 3
    dirs = {c: bh.push_dir("links", c) for c in bt.COMPRESSIONS}
    manifest, config, layers = bt.mixed_image(dirs, [bt.COMPRESSIONS[i % 3] for i in range(
        len(json.loads((dirs["gzip"] / "manifest.json").read_text())["layers"]))])
    types = {media for _, media in layers}
    assert types == {"application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
                     "application/vnd.oci.image.layer.v1.tar+zstd"}
    repo, tag = "test/buildah-mixed", uuid.uuid4().hex[:12]
    for blob in (config, *(b for b, _ in layers)):
        ib.push_blob(gt.REGISTRY, repo, blob)
    digest = ib.push_manifest(gt.REGISTRY, repo, tag, manifest, ib.OCI_MANIFEST)
    record = pull_as_user(repo, tag, digest)
    compare(gt.STATE / "images" / f"{record['id']}.squashfs", links["view"])


JOB = """#!/bin/bash
#SBATCH -N 1 -n 1 -t 5
#SBATCH --image=docker:test/buildah-links:{tag}
srun shifter sh -c 'stat -c "%n %u:%g %a" /own/secret /own/open /own/app /own/mine /own/suid /hl/rm/b
cat /own/open /own/mine /hl/rm/b /hl/three/c
cat /own/secret 2>/dev/null || echo secret-refused
ls /own/app 2>/dev/null || echo app-refused'
"""


def test_job_sees_the_image_owners_without_privilege(links):
    """Owners that are no account in the container are fine; the kernel applies them as in
    Docker (the user's own file readable, others' 0640/0750 refused); no setuid bit left."""
    pull_as_user("test/buildah-links", links["tag"], links["digest"])
    job = jt.write_job(USER, "owners.sl", JOB.format(tag=links["tag"]))
    _, output, _ = jt.sbatch_wait(USER, job)
    uid = links["uid"]
    assert output.splitlines() == [
        f"/own/secret 0:{links['shadow']} 640", "/own/open 4242:4343 644", "/own/app 4242:4242 750",
        f"/own/mine {uid}:0 600", "/own/suid 0:0 755", "/hl/rm/b 0:0 644",
        "open", "mine", "rm", "three", "secret-refused", "app-refused"], output


def test_debian_base_perl_keeps_its_second_name(bh):
    """The issue's own case: Debian ships a program under two hard-linked names; removing the
    first one in a later layer must leave the other one whole."""
    need(shutil.which("debootstrap") is not None, "debootstrap is not installed")
    tree = ib.debian_tree()
    pairs = sorted(sorted(g) for g in gt.tree_links_and_xattrs(tree)[0])  # perl + perl5.36.0 among them
    assert pairs
    bh.build("perl", PERL.format(first_names=" ".join("/" + g[0] for g in pairs)), {"rootfs.tar": bt.tree_tar(tree)})
    tag = uuid.uuid4().hex[:12]
    digest = bh.push_registry("perl", gt.REGISTRY, "test/buildah-perl", tag, compression="gzip")
    container, root = bh.rootfs("perl")
    try:
        view = expected_view(root)
    finally:
        bh.release(container)
    entries = view[0]
    for names in pairs:  # what buildah shows: the first name gone, the others whole
        assert names[0] not in entries and all(entries[n][0] == "f" and entries[n][4] > 0 for n in names[1:])
    record = pull_as_user("test/buildah-perl", tag, digest)
    compare(gt.STATE / "images" / f"{record['id']}.squashfs", view)
    assert "hardlink_unresolved" not in record["neutralised"]
