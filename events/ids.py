"""Name-based (uuid5) event ids as text, without building ``uuid.UUID`` objects.

Deterministic ids are computed for every ingested row, and ``str(uuid.UUID(bytes=..., version=5))``
costs about four times the SHA-1 itself; setting the version and variant bits on the digest and
formatting its hex gives the same text.
"""

from __future__ import annotations

import hashlib


def sha1_uuid_text(data: bytes) -> str:
    """The uuid5 whose SHA-1 input is ``data`` (namespace bytes followed by the name), as canonical text.

    Equal to ``str(uuid.UUID(bytes=sha1(data).digest()[:16], version=5))``.
    """
    digest = bytearray(hashlib.sha1(data, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
