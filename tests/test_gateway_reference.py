"""Image references: the forms users write, and one clear line for each malformed one; one
canonical name for equal references; the site's registries as an allow-list with mirrors."""

from __future__ import annotations

import pytest

from imagegw import sources
from imagegw.reference import ReferenceError, name_of, parse
from shifter_site import config

D = "a" * 64


@pytest.mark.parametrize("text,itype,host,repo,version,digest,key", [
    ("docker:ubuntu:14.04", "docker", None, "ubuntu", "14.04", None, "ubuntu:14.04"),
    ("ubuntu:14.04", "docker", None, "ubuntu", "14.04", None, "ubuntu:14.04"),
    ("docker:ubuntu", "docker", None, "ubuntu", None, None, "ubuntu:latest"),
    ("docker:org/app", "docker", None, "org/app", None, None, "org/app:latest"),
    ("docker:host:5000/org/app:tag", "docker", "host:5000", "org/app", "tag", None, "host:5000/org/app:tag"),
    ("docker:registry.example.org/org/app:1.1", "docker", "registry.example.org", "org/app", "1.1", None,
     "registry.example.org/org/app:1.1"),
    (f"docker:app@sha256:{D}", "docker", None, "app", None, f"sha256:{D}", f"app@sha256:{D}"),
    (f"localhost/app:v1@sha256:{D}", "docker", "localhost", "app", "v1", f"sha256:{D}", f"localhost/app:v1@sha256:{D}"),
    ("docker:docker.io/ubuntu", "docker", "docker.io", "ubuntu", None, None, "docker.io/ubuntu:latest"),
])
def test_valid_references(text, itype, host, repo, version, digest, key):
    ref = parse(text)
    assert (ref.itype, ref.host, ref.repository, ref.version, ref.digest, ref.key) == \
        (itype, host, repo, version, digest, key)
    assert ref.tag == text.removeprefix("docker:")  # the user's string is kept as written


def test_id_reference():
    assert parse(f"id:{D}").itype == "id"


@pytest.mark.parametrize("text,fragment", [
    ("", "empty image reference"),
    ("docker:", "names no image"),
    ("docker:Ubuntu:22.04", "uppercase letters are not allowed"),
    ("docker:ubuntu:22.04 ", "whitespace"),
    ("docker:ubuntu:-bad", "tag '-bad' is not valid"),
    ("docker:app@sha256:1234", "sha256:<64 lowercase hex digits>"),
    ("docker:app@md5:" + D, "sha256:<64 lowercase hex digits>"),
    ("docker:org//app", "is not valid"),
    ("docker:a..b", "is not valid"),
    ("docker:host:5000/", "names no image"),
    ("id:xyz", "64 lowercase hex"),
    ("local:/some/dir", "docker images only"),
    ("docker:ubuntu\n", "control characters"),
])
def test_malformed_references_say_what_is_wrong(text, fragment):
    with pytest.raises(ReferenceError) as err:
        parse(text)
    message = str(err.value)
    assert fragment in message and "\n" not in message
    assert err.value.exit_code == 2


SITE = """\
system: s
image_dir: /i
gateway: {urls: ["http://g"]}
registries:
  default: https://registry-1.docker.io
  mirrors: {docker.io: ["http://127.0.0.1:5000", "https://registry-1.docker.io"]}
  hosts: {quay.io: "https://quay.io", "reg.example:5000": "http://reg.example:5000"}
"""


def site(text: str = SITE):
    return config.parse(text).registries


def key(text: str, registries=None) -> str:
    return sources.canonical(registries or site(), parse(text)).key


@pytest.mark.parametrize("spellings,canonical", [
    (["ubuntu", "docker:ubuntu", "ubuntu:latest", "library/ubuntu", "docker.io/ubuntu", "docker.io/library/ubuntu:latest",
      "index.docker.io/ubuntu", "registry-1.docker.io/library/ubuntu", "Docker.IO/ubuntu",
      "127.0.0.1:5000/library/ubuntu:latest", "127.0.0.1:5000/ubuntu"],
     "docker.io/library/ubuntu:latest"),
    (["demo/pyapp:1.0", "docker:demo/pyapp:1.0", "docker.io/demo/pyapp:1.0", "docker:127.0.0.1:5000/demo/pyapp:1.0"],
     "docker.io/demo/pyapp:1.0"),
    ([f"app@sha256:{D}", f"app:v1@sha256:{D}", f"docker.io/library/app@sha256:{D}"], f"docker.io/library/app@sha256:{D}"),
    (["quay.io/org/app", "QUAY.io/org/app:latest"], "quay.io/org/app:latest"),
])
def test_equal_references_have_one_canonical_key(spellings, canonical):
    """The default registry made explicit, Docker Hub's aliases as docker.io, a declared mirror
    as its upstream, library/ for official images, latest for no tag, a digest over a tag."""
    assert {key(s) for s in spellings} == {canonical}
    for s in spellings:  # the user's text is kept for messages
        assert sources.canonical(site(), parse(s)).tag == s.removeprefix("docker:")
    assert name_of(canonical) == canonical.split("@")[0].rsplit(":", 1)[0]


def test_a_site_whose_default_is_its_own_registry():
    own = site(SITE.replace("default: https://registry-1.docker.io", "default: http://reg.example:5000"))
    assert key("demo/pyapp:1.0", own) == key("docker:reg.example:5000/demo/pyapp:1.0", own) == \
        "reg.example:5000/demo/pyapp:1.0"
    assert key("ubuntu", own) == "reg.example:5000/ubuntu:latest"  # library/ belongs to Docker Hub only
    assert key("docker.io/ubuntu", own) == "docker.io/library/ubuntu:latest"


def test_where_each_registry_is_fetched_from():
    reg = site()
    where = lambda text: sources.endpoints(reg, sources.canonical(reg, parse(text)))  # noqa: E731
    assert where("ubuntu:14.04") == ["http://127.0.0.1:5000", "https://registry-1.docker.io"]  # mirrors, in order
    assert where("quay.io/a/b") == ["https://quay.io"]
    assert where("reg.example:5000/a/b") == ["http://reg.example:5000"]
    bare = site(SITE.replace('  mirrors: {docker.io: ["http://127.0.0.1:5000", "https://registry-1.docker.io"]}\n', ""))
    # Docker Hub's registry API is registry-1.docker.io, whichever of its names is written
    for text in ("docker:docker.io/library/ubuntu", "index.docker.io/ubuntu", "ubuntu"):
        assert sources.endpoints(bare, sources.canonical(bare, parse(text))) == ["https://registry-1.docker.io"]
    hub_url = site(SITE.replace("default: https://registry-1.docker.io", "default: https://docker.io")
                   .replace('  mirrors: {docker.io: ["http://127.0.0.1:5000", "https://registry-1.docker.io"]}\n', ""))
    assert sources.endpoints(hub_url, sources.canonical(hub_url, parse("ubuntu"))) == ["https://registry-1.docker.io"]


@pytest.mark.parametrize("text", ["docker:169.254.169.254/x", "docker:127.0.0.1:1/x", "localhost/app",
                                  "docker:ghcr.io/org/app:1", "[::1]:5000/a"])
def test_unlisted_registry_is_refused_in_one_line(text):
    with pytest.raises(sources.RegistryNotAllowed) as err:
        key(text)
    message = str(err.value)
    assert "is not one this site pulls from" in message and "registries.hosts" in message
    assert text in message and "\n" not in message and err.value.exit_code == 2


def test_docker_hub_can_be_taken_off_the_list():
    own = site(SITE.replace("default: https://registry-1.docker.io", "default: http://reg.example:5000")
               .replace('  mirrors: {docker.io: ["http://127.0.0.1:5000", "https://registry-1.docker.io"]}\n', "")
               + "  docker_hub: false\n")
    with pytest.raises(sources.RegistryNotAllowed):
        key("docker.io/library/ubuntu", own)
    assert key("ubuntu", own) == "reg.example:5000/ubuntu:latest"


@pytest.mark.parametrize("snippet,fragment", [
    ("mirrors: {docker.io: []}", "non-empty list"),
    ("mirrors: {docker.io: [\"ftp://m\"]}", "not a URL"),
    ("mirrors: {Docker.io: [\"http://m\"]}", "is not a registry host"),
    ("mirrors: {docker.io: [\"http://m:5000\"]}\n  hosts: {\"m:5000\": \"http://m:5000\"}", "declared a mirror of docker.io"),
])
def test_bad_registry_settings_are_one_line(snippet, fragment):
    text = f"system: s\nimage_dir: /i\ngateway: {{urls: [\"http://g\"]}}\nregistries:\n  default: https://r\n  {snippet}\n"
    with pytest.raises(config.ConfigError) as err:
        config.parse(text)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_rows_filed_under_old_keys_are_rekeyed(tmp_path):
    """A gateway upgraded from non-canonical keys files its rows under the canonical ones; of
    two rows that meet, the READY one stays; a row it cannot place is left alone."""
    from imagegw.store import Store

    store = Store(tmp_path / "images.db")
    reg = site()
    for key, status in (("test/a:1", "READY"), ("docker.io/test/a:1", "FAILURE"), ("ubuntu:latest", "FAILURE"),
                        ("ghcr.io/x/y:1", "READY")):
        store.claim("s", "docker", key, key)
        store.update("s", "docker", key, status=status, image_id="1" * 64 if status == "READY" else None)

    def canonical(itype: str, key: str) -> str | None:
        try:
            return sources.canonical(reg, parse(f"{itype}:{key}")).key
        except ReferenceError:
            return None

    assert store.rekey(canonical) == 2
    assert {(r.key, r.status) for r in store.list("s")} == {
        ("docker.io/test/a:1", "READY"), ("docker.io/library/ubuntu:latest", "FAILURE"), ("ghcr.io/x/y:1", "READY")}
    assert store.rekey(canonical) == 0
