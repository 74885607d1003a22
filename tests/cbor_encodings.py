"""Every valid CBOR encoding of a plain value, not just the preferred one.

RFC 8949 lets arrays, maps, byte strings and text strings be encoded with a definite length or
an indefinite one (``0x9f``/``0xbf``/``0x5f``/``0x7f`` … ``0xff``; strings as a sequence of
definite chunks). AWS switched the attestation payload from one to the other in 2025. Tests use
:func:`encode` to re-encode real and emulated documents either way; ``choose(kind, depth)``
decides for each container or string whether it gets an indefinite length.

This is an independent encoder (it does not call cbor2 or ``enclave.protocol.cbor``), so tests
that compare against it do not check the project against itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["DEFINITE", "INDEFINITE", "Choose", "encode", "top_level_map_indefinite"]

Choose = Callable[[str, int], bool]  # (kind: "array" | "map" | "bytes" | "text", depth) -> indefinite?


def DEFINITE(kind: str, depth: int) -> bool:  # noqa: N802 - used like a constant
    return False


def INDEFINITE(kind: str, depth: int) -> bool:  # noqa: N802
    return True


def top_level_map_indefinite(kind: str, depth: int) -> bool:
    """What Nitro emits since about September 2025: only the payload's outer map is indefinite."""
    return kind == "map" and depth == 0


def _head(major: int, argument: int) -> bytes:
    if argument < 24:
        return bytes([major << 5 | argument])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if argument < 1 << (8 * width):
            return bytes([major << 5 | info]) + argument.to_bytes(width, "big")
    raise ValueError("argument beyond 64 bits")


def _string(major: int, data: bytes, indefinite: bool, chunk: int) -> bytes:
    if not indefinite:
        return _head(major, len(data)) + data
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if data else []
    if major == 3:  # text chunks must each be valid UTF-8: split on character boundaries
        text = data.decode()
        pieces = [text[i : i + chunk].encode() for i in range(0, len(text), chunk)]
    return bytes([major << 5 | 31]) + b"".join(_head(major, len(p)) + p for p in pieces) + b"\xff"


def encode(value: Any, choose: Choose = DEFINITE, *, depth: int = 0, chunk: int = 7) -> bytes:
    """``value`` encoded with shortest heads; lengths definite or indefinite as ``choose`` says."""
    if value is None:
        return b"\xf6"
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, bytes):
        return _string(2, value, choose("bytes", depth), chunk)
    if isinstance(value, str):
        return _string(3, value.encode(), choose("text", depth), chunk)
    if isinstance(value, list):
        items = b"".join(encode(item, choose, depth=depth + 1, chunk=chunk) for item in value)
        return (b"\x9f" + items + b"\xff") if choose("array", depth) else _head(4, len(value)) + items
    if isinstance(value, dict):
        items = b"".join(
            encode(k, choose, depth=depth + 1, chunk=chunk) + encode(v, choose, depth=depth + 1, chunk=chunk)
            for k, v in value.items()
        )
        return (b"\xbf" + items + b"\xff") if choose("map", depth) else _head(5, len(value)) + items
    raise TypeError(f"not a plain CBOR value: {type(value).__name__}")
