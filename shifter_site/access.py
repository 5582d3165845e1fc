"""Who may use an image: the one check, for the `shifter` command and the Slurm prolog.

No dependencies on purpose: a user's launch path imports it without msgspec.
"""

from __future__ import annotations

from shifter_site.errors import ShifterError


class AccessError(ShifterError):
    """The image is private and not shared with this user."""

    exit_code = 77  # EX_NOPERM


def check_access(record, uid: int, gids: list[int]) -> None:
    """A private image (user or group ACL set on its record) is used only by the users and
    groups it was pulled for. Public images (both ACLs empty) are for everyone."""
    if not record.user_acl and not record.group_acl:
        return
    if uid in record.user_acl or set(gids) & set(record.group_acl):
        return
    raise AccessError(f"image {record.tag or record.id[:12]} is private and you are not on its access list")
