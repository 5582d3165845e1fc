"""The pull request body: ours is byte for byte the original client's shape, and the gateway
reads it strictly (pure logic; the wire tests are in tests/test_gateway_trust.py)."""

from __future__ import annotations

import os
import pwd

import pytest
from fastapi import HTTPException

from imagegw import api, client, identity

ME = pwd.getpwuid(os.getuid())
WHO = identity.Caller(uid=ME.pw_uid, gid=ME.pw_gid, gids=frozenset({ME.pw_gid}))


def test_our_body_is_the_original_clients():
    # the original's _prepare_pull_payload: "{\"allowed_uids\":\"%s\",\"allowed_gids\":\"%s\"}", "%d," joined
    assert client.pull_body(([1001, 1002], [100])) == b'{"allowed_uids":"1001,1002","allowed_gids":"100"}'
    assert client.pull_body(([1001], [])) == b'{"allowed_uids":"1001"}'
    assert client.pull_body(None) is None and client.pull_body(([], [])) is None


def test_the_gateway_reads_it_and_adds_the_requester():
    acl, creds = api.pull_request(f'{{"allowed_gids":"{ME.pw_gid}"}}'.encode(), WHO)
    assert acl == ([ME.pw_uid], [ME.pw_gid]) and creds is None
    assert api.pull_request(b"", WHO) == (None, None)
    acl, creds = api.pull_request(b'{"registry_auth":{"username":"u","password":"p"}}', WHO)
    assert acl is None and (creds.username, creds.password) == ("u", "p")


@pytest.mark.parametrize("body", [b'{"allowed_uids":"0, 1"}', b'{"allowed_uids":"0,"}', b'{"allowed_uids":1}',
                                  b'{"x":"1"}', b"[1]", b"{", b'{"registry_auth":{"username":"u"}}'])
def test_odd_bodies_are_one_line_400s(body):
    with pytest.raises(HTTPException) as err:
        api.pull_request(body, WHO)
    assert err.value.status_code == 400 and "\n" not in err.value.detail


def test_private_rule():
    other = identity.Caller(uid=ME.pw_uid + 1, gid=12345, gids=frozenset({12345}))
    assert WHO.can_read([], []) and other.can_read([], [])
    assert WHO.can_read([ME.pw_uid], []) and not other.can_read([ME.pw_uid], [])
    assert other.can_read([ME.pw_uid], [12345])
    assert identity.Caller(uid=999999, gid=1, admin=True).can_read([ME.pw_uid], [])
