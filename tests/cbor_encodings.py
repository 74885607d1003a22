"""Every valid CBOR encoding of a plain value, not just the preferred one.

RFC 8949 lets arrays, maps, byte strings and text strings be encoded with a definite length or
an indefinite one (``0x9f``/``0xbf``/``0x5f``/``0x7f`` … ``0xff``; strings as a sequence of
definite chunks), and any head may be wider than its argument needs. AWS switched the attestation
payload from one length form to the other in 2025. Tests use :func:`encode` to re-encode real and
emulated documents in any of these ways: ``choose(kind, depth)`` decides for each container or
string whether it gets an indefinite length, ``wide()`` for each head whether it is one size wider.

This is an independent encoder (it does not call cbor2 or ``enclave.protocol.cbor``), so tests
that compare against it do not check the project against itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["DEFINITE", "INDEFINITE", "NARROW", "Choose", "encode", "top_level_map_indefinite"]

Choose = Callable[[str, int], bool]  # (kind: "array" | "map" | "bytes" | "text", depth) -> indefinite?


def DEFINITE(kind: str, depth: int) -> bool:  # noqa: N802 - used like a constant
    return False


def INDEFINITE(kind: str, depth: int) -> bool:  # noqa: N802
    return True


def top_level_map_indefinite(kind: str, depth: int) -> bool:
    """What Nitro emits since about September 2025: only the payload's outer map is indefinite."""
    return kind == "map" and depth == 0


def NARROW() -> bool:  # noqa: N802
    return False


_WIDTHS = ((24, 1), (25, 2), (26, 4), (27, 8))


def _head(major: int, argument: int, wide: Callable[[], bool] = NARROW) -> bytes:
    widths = [(info, width) for info, width in _WIDTHS if argument < 1 << (8 * width)]
    if not widths:
        raise ValueError("argument beyond 64 bits")
    if argument < 24 and not wide():
        return bytes([major << 5 | argument])
    info, width = widths[1] if argument >= 24 and len(widths) > 1 and wide() else widths[0]
    return bytes([major << 5 | info]) + argument.to_bytes(width, "big")


def _string(major: int, data: bytes, indefinite: bool, chunk: int, wide: Callable[[], bool]) -> bytes:
    if not indefinite:
        return _head(major, len(data), wide) + data
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if data else []
    if major == 3:  # text chunks must each be valid UTF-8: split on character boundaries
        text = data.decode()
        pieces = [text[i : i + chunk].encode() for i in range(0, len(text), chunk)]
    return bytes([major << 5 | 31]) + b"".join(_head(major, len(p), wide) + p for p in pieces) + b"\xff"


def encode(value: Any, choose: Choose = DEFINITE, *, wide: Callable[[], bool] = NARROW, depth: int = 0, chunk: int = 7) -> bytes:
    """``value`` with definite or indefinite lengths as ``choose`` says, heads as narrow as they can be
    unless ``wide()`` says otherwise (so by default: the preferred encoding)."""
    inner = {"wide": wide, "depth": depth + 1, "chunk": chunk}
    if value is None:
        return b"\xf6"
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if isinstance(value, int):
        return _head(0, value, wide) if value >= 0 else _head(1, -1 - value, wide)
    if isinstance(value, bytes):
        return _string(2, value, choose("bytes", depth), chunk, wide)
    if isinstance(value, str):
        return _string(3, value.encode(), choose("text", depth), chunk, wide)
    if isinstance(value, list):
        items = b"".join(encode(item, choose, **inner) for item in value)
        return (b"\x9f" + items + b"\xff") if choose("array", depth) else _head(4, len(value), wide) + items
    if isinstance(value, dict):
        items = b"".join(encode(k, choose, **inner) + encode(v, choose, **inner) for k, v in value.items())
        return (b"\xbf" + items + b"\xff") if choose("map", depth) else _head(5, len(value), wide) + items
    raise TypeError(f"not a plain CBOR value: {type(value).__name__}")
