"""ed25519 keys for the job's sshd (dropbear): the public key of a seed, and the key file
formats dropbear and OpenSSH read. Used by shifter_wlm.sshd."""

from __future__ import annotations

import base64
import hashlib
import struct

# ---------------------------------------------------------------- ed25519 (RFC 8032)
# Only the public key of a seed is computed here (dropbear does the signing), so a few
# lines of integer arithmetic replace a crypto dependency. Checked against dropbearkey.

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P


def _recover_x(y: int, sign: int) -> int:
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    if x & 1 != sign:
        x = _P - x
    return x


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY, 0)
_G = (_GX, _GY, 1, _GX * _GY % _P)


def _add(p, q):
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def public_key(seed: bytes) -> bytes:
    """The ed25519 public key (32 bytes) of a 32-byte seed."""
    h = hashlib.sha512(seed).digest()
    s = (int.from_bytes(h[:32], "little") & ((1 << 254) - 8)) | (1 << 254)
    point, q = (0, 1, 1, 0), _G
    while s:
        if s & 1:
            point = _add(point, q)
        q = _add(q, q)
        s >>= 1
    zinv = pow(point[2], _P - 2, _P)
    x, y = point[0] * zinv % _P, point[1] * zinv % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def dropbear_private(seed: bytes) -> bytes:
    """A private key file in dropbear's format (what `dropbearkey -t ed25519` writes)."""
    return _string(b"ssh-ed25519") + _string(seed + public_key(seed))


def public_line(seed: bytes, comment: str = "") -> str:
    """`ssh-ed25519 AAAA... comment`: for authorized_keys, known_hosts and id_dropbear.pub."""
    blob = _string(b"ssh-ed25519") + _string(public_key(seed))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()}" + (f" {comment}" if comment else "")


def openssh_private(seed: bytes, comment: str = "") -> str:
    """The same key as OpenSSH's client reads it (`openssh-key-v1`, unencrypted, what
    `ssh-keygen -t ed25519 -N ''` writes): an image's own ssh uses it (ssh_config's
    IdentityFile). The check words are fixed, as the file is not encrypted."""
    pub = public_key(seed)
    blob = _string(b"ssh-ed25519") + _string(pub)
    check = b"shif"
    private = check + check + blob + _string(seed + pub) + _string(comment.encode())
    private += bytes(range(1, 1 + (-len(private) % 8)))
    data = (b"openssh-key-v1\0" + _string(b"none") + _string(b"none") + _string(b"")
            + struct.pack(">I", 1) + _string(blob) + _string(private))
    text = base64.b64encode(data).decode()
    lines = [text[i:i + 70] for i in range(0, len(text), 70)]
    return "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END OPENSSH PRIVATE KEY-----\n"
