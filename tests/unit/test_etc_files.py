"""The container's generated /etc/passwd, /etc/group, /var/hostsfile and /etc/hosts lines.

Covers runtime/etcfiles.py: passwd, group, hostsfile, host_lines.
"""

from __future__ import annotations

from hypothesis import given, strategies as st

from runtime import etcfiles
from runtime.spec import Account, ContainerSpec, Group, User

ids = st.integers(min_value=1, max_value=2**31 - 2)
# host fields, often with the separators that could forge an entry (':' and newlines)
texts = st.text(alphabet=st.one_of(st.sampled_from(":\n"), st.characters(codec="utf-8", exclude_characters="\0")),
                max_size=20)


def spec_for(user: User, accounts=(), account_groups=()) -> ContainerSpec:
    return ContainerSpec(image_id="0" * 64, squashfs="/images/x.squashfs", user=user,
                         accounts=tuple(accounts), account_groups=tuple(account_groups))


def user(uid=1001, gid=1001, groups=(), **kw) -> User:
    fields = {"name": "alice", "home": "/home/alice", "shell": "/bin/bash", "gecos": "Alice"} | kw
    return User(uid=uid, gid=gid, groups=tuple(groups), **fields)


def test_passwd_lists_the_user_first_then_site_accounts():
    spec = spec_for(user(), accounts=[Account("nobody", 65534, 65534, "", "/nonexistent", "/usr/sbin/nologin")])
    assert etcfiles.passwd(spec).splitlines() == [
        "alice:x:1001:1001:Alice:/home/alice:/bin/bash",
        "nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin",
    ]


@given(name=texts, gecos=texts, home=texts, shell=texts, uid=ids, gid=ids)
def test_passwd_always_has_seven_fields_and_one_line_per_account(name, gecos, home, shell, uid, gid):
    """A ':' or newline in a host field cannot forge a second entry or shift fields."""
    text = etcfiles.passwd(spec_for(user(uid, gid, name=name, gecos=gecos, home=home, shell=shell)))
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 2
    fields = lines[0].split(":")
    assert len(fields) == 7
    assert fields[1:4] == ["x", str(uid), str(gid)]


def test_group_has_primary_then_supplementary_then_account_groups_without_gid_0_or_repeats():
    u = user(groups=[Group("wheel", 0, ("alice",)), Group("proj", 2000, ("alice",)), Group("alice", 1001)])
    spec = spec_for(u, account_groups=[Group("proj", 2000), Group("nogroup", 65534)])
    assert etcfiles.group(spec, primary_name="alicegrp").splitlines() == [
        "alicegrp:x:1001:alice",
        "proj:x:2000:alice",
        "nogroup:x:65534:",
    ]


@given(gids=st.lists(st.integers(min_value=0, max_value=70000), max_size=40), primary=st.integers(0, 70000))
def test_group_never_has_gid_0_for_a_user_and_never_repeats_a_gid(gids, primary):
    u = user(uid=1001, gid=primary, groups=[Group(f"g{g}", g, ("alice",)) for g in gids])
    listed = [int(line.split(":")[2]) for line in etcfiles.group(spec_for(u)).splitlines() if line]
    assert 0 not in listed
    assert len(listed) == len(set(listed))
    assert set(listed) == ({*gids, primary} - {0})


def test_root_keeps_its_primary_group_0():
    root = user(uid=0, gid=0, name="root", home="/root")
    assert etcfiles.group(spec_for(root)).splitlines() == ["root:x:0:root"]


@given(hosts=st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True), max_size=30))
def test_hostsfile_is_one_line_per_task_in_order(hosts):
    assert etcfiles.hostsfile(tuple(hosts)).splitlines() == hosts


def test_host_lines_are_address_then_name():
    text = etcfiles.host_lines((("n1", "127.0.0.1"), ("n2", "127.0.0.2")))
    assert text.splitlines()[1:] == ["127.0.0.1 n1", "127.0.0.2 n2"]
    assert text.splitlines()[0].startswith("#")


def test_shifter_config_json_is_the_originals_line():
    """/var/shifterConfig.json: the original's keys in its order, volume mappings sorted and
    joined by ';', each module followed by ',' (generateShifterConfigString)."""
    import json

    from runtime.volumes import parse

    spec = ContainerSpec(image_id="ab" * 32, squashfs="/i/x.squashfs", user=user(name="alice"),
                         volumes=tuple(parse("/z:/data;/a:/b:ro")), modules=("mpich", "gpu"))
    text = etcfiles.shifter_config(spec)
    assert text == ('{"identifier":"' + "ab" * 32 + '","user":"alice","volMap":"/a:/b:ro;/z:/data",'
                    '"modules":"mpich,gpu,"}')
    bare = etcfiles.shifter_config(spec_for(user()))
    assert json.loads(bare) == {"identifier": "0" * 64, "user": "alice", "volMap": "", "modules": ""}


@given(name=texts)
def test_shifter_config_json_is_json_whatever_the_values(name):
    import json

    assert json.loads(etcfiles.shifter_config(spec_for(user(name=name))))["user"] == name
