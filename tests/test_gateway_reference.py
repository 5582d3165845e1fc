"""Image references: the forms users write, and one clear line for each malformed one."""

from __future__ import annotations

import pytest

from imagegw.reference import ReferenceError, parse, registry_url

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
    ("docker:docker.io/ubuntu", "docker", "docker.io", "library/ubuntu", None, None, "docker.io/library/ubuntu:latest"),
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


def test_registry_url_uses_site_default_mirror_and_https():
    hosts = {"127.0.0.1:5000": "http://127.0.0.1:5000"}
    assert registry_url(parse("app"), "http://reg:5000", hosts) == ("http://reg:5000", "app")
    assert registry_url(parse("ubuntu"), "https://registry-1.docker.io", hosts) == \
        ("https://registry-1.docker.io", "library/ubuntu")
    assert registry_url(parse("docker:127.0.0.1:5000/a/b"), "https://x", hosts) == ("http://127.0.0.1:5000", "a/b")
    assert registry_url(parse("docker:quay.io/a/b"), "https://x", hosts) == ("https://quay.io", "a/b")
