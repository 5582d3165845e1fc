"""Image references as users type them (`--image`, `shifterimg pull`).

Covers imagegw/reference.py: parse (and Reference.tag, .version, .digest, .manifest_ref,
.key for "same image, same key"). Normalisation details of `key` are left to the gateway's
own tests; here only what a user relies on.
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from imagegw.reference import ReferenceError, parse

component = st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)?", fullmatch=True)
# the first component has no '.': `a.b/c` names the registry host a.b (Docker's rule)
first = st.from_regex(r"[a-z0-9]+(?:[_-][a-z0-9]+)?", fullmatch=True).filter(lambda c: c != "localhost")
names = st.tuples(first, st.lists(component, max_size=2)).map(lambda t: "/".join([t[0], *t[1]]))
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
digests = st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)


@given(name=names, tag=tags)
def test_name_and_tag_are_understood_and_kept_as_typed(name, tag):
    ref = parse(f"docker:{name}:{tag}")
    assert ref.itype == "docker" and ref.tag == f"{name}:{tag}"
    assert ref.repository.endswith(name) and ref.version == tag and ref.digest is None
    assert ref.manifest_ref == tag


@given(name=names, tag=tags)
def test_docker_is_the_default_type(name, tag):
    assert parse(f"{name}:{tag}") == parse(f"docker:{name}:{tag}")


@given(name=names)
def test_no_tag_means_latest(name):
    ref = parse(f"docker:{name}")
    assert ref.version is None and ref.manifest_ref == "latest"
    assert ref.key == parse(f"docker:{name}:latest").key


@given(name=names, digest=digests)
def test_a_digest_is_what_is_fetched(name, digest):
    ref = parse(f"docker:{name}@{digest}")
    assert ref.digest == digest and ref.manifest_ref == digest


@given(name=names, tag=tags, port=st.integers(1, 65535))
def test_a_registry_host_with_port_is_separated_from_the_name(name, tag, port):
    ref = parse(f"docker:registry.example.org:{port}/{name}:{tag}")
    assert ref.host == f"registry.example.org:{port}" and ref.repository == name and ref.version == tag


def test_id_references():
    assert parse("id:" + "a" * 64).itype == "id"
    with pytest.raises(ReferenceError, match="64"):
        parse("id:abc")


@pytest.mark.parametrize("text", [
    "", "docker:", "Ubuntu:22.04", "docker:ubuntu:22 04", "ubuntu:-bad", "docker:ubuntu@sha256:abc",
    "docker:a//b", "docker:bad_host:99999999/x", "local:/some/dir", "docker:ubuntu\n",
])
def test_malformed_references_are_one_line_with_how_to_write_them(text):
    with pytest.raises(ReferenceError) as err:
        parse(text)
    assert "\n" not in str(err.value).replace(repr(text), "")


@given(text=st.text(max_size=40))
def test_any_text_either_parses_or_is_a_reference_error(text):
    try:
        ref = parse(text)
    except ReferenceError:
        return
    assert ref.itype in ("docker", "id") and ref.tag and not any(c.isspace() for c in ref.tag)


@given(name=names, tag=tags, upper=st.sampled_from("ABCXYZ"))
def test_uppercase_in_a_name_is_refused_not_lowercased(name, tag, upper):
    with pytest.raises(ReferenceError, match="uppercase"):
        parse(f"docker:{name}{upper}:{tag}")
