"""Build EIF files for tests, straight from the format description (nothing from zerocopy.eif)."""

from __future__ import annotations

import struct
import zlib

HEADER = ">4sHHQQHH32Q32QII"


def build_eif(sections: list[tuple[int, bytes]], *, version: int = 4, corrupt_crc: bool = False) -> bytes:
    header_size = struct.calcsize(HEADER)
    offsets, sizes, body, position = [], [], b"", header_size
    for kind, data in sections:
        offsets.append(position)
        sizes.append(len(data))
        chunk = struct.pack(">HHQ", kind, 0, len(data)) + data
        body += chunk
        position += len(chunk)
    offsets += [0] * (32 - len(offsets))
    sizes += [0] * (32 - len(sizes))
    head = struct.pack(HEADER[:-1], b".eif", version, 0, 512 << 20, 2, 0, len(sections), *offsets, *sizes, 0)
    crc = zlib.crc32(head + body) & 0xFFFFFFFF
    return head + struct.pack(">I", crc ^ (1 if corrupt_crc else 0)) + body
