"""Strict CBOR for untrusted bytes.

cbor2 is lenient by default: it ignores trailing bytes, accepts non-minimal integers and decodes
semantic tags into datetimes, decimals and sets. Everything that crosses the enclave boundary is
decoded here instead, so one set of rules holds for wire messages, NSM responses and attestation
documents: a single top-level item, definite lengths, no duplicate map keys, no tags (except those
the caller names, at the top level only), only the plain types below, and preferred (shortest)
encoding, checked by re-encoding.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

__all__ = ["CborError", "loads", "dumps"]

MAX_DEPTH = 16
_PLAIN = (bytes, str, bool, type(None), int, list, dict)
_INT_MIN, _INT_MAX = -(2**64), 2**64 - 1


class CborError(ValueError):
    """Bytes that are not strict, well-formed CBOR of the expected shape."""


def _refuse_tag(decoder: Any, tag: Any) -> Any:
    raise CborError(f"unexpected CBOR tag {tag.tag}")


def _check_types(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise CborError("CBOR nested too deeply")
    if not isinstance(value, _PLAIN):
        raise CborError(f"unexpected CBOR item of type {type(value).__name__}")
    if isinstance(value, int) and not isinstance(value, bool):
        if not _INT_MIN <= value <= _INT_MAX:
            raise CborError("CBOR integer out of 64-bit range")
    elif isinstance(value, list):
        for item in value:
            _check_types(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise CborError(f"unexpected CBOR map key of type {type(key).__name__}")
            _check_types(key, depth + 1)
            _check_types(item, depth + 1)


def loads(data: bytes, *, top_level_tags: frozenset[int] = frozenset()) -> Any:
    """Decode exactly one strict CBOR item from ``data``; raise :class:`CborError` otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CborError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    body = data
    tag = None
    if top_level_tags and data[:1] and data[0] >> 5 == 6:  # major type 6: a tag
        tag, body = _split_tag(data)
        if tag not in top_level_tags:
            raise CborError(f"unexpected CBOR tag {tag}")
    stream = io.BytesIO(body)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            tag_hook=_refuse_tag,
            max_depth=MAX_DEPTH + 2,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
        value = decoder.decode()
    except CborError:
        raise
    except Exception as exc:  # cbor2 raises CBORDecodeError, ValueError, TypeError, OverflowError, ...
        raise CborError(f"malformed CBOR: {_describe(exc)}") from None
    if stream.tell() != len(body):
        raise CborError(f"{len(body) - stream.tell()} trailing bytes after the CBOR item")
    _check_types(value)
    try:
        canonical = cbor2.dumps(value)
    except Exception as exc:
        raise CborError(f"malformed CBOR: {_describe(exc)}") from None
    if canonical != body:
        raise CborError("CBOR item is not in preferred (shortest) encoding")
    return value


def dumps(value: Any) -> bytes:
    """Encode ``value`` (plain types only) as CBOR in preferred encoding."""
    _check_types(value)
    return cbor2.dumps(value)


def _split_tag(data: bytes) -> tuple[int, bytes]:
    info = data[0] & 0x1F
    if info < 24:
        return info, data[1:]
    widths = {24: 1, 25: 2, 26: 4, 27: 8}
    if info not in widths or len(data) < 1 + widths[info]:
        raise CborError("malformed CBOR tag")
    width = widths[info]
    tag = int.from_bytes(data[1 : 1 + width], "big")
    if tag < 24 or (width > 1 and tag < 1 << (4 * width)):
        raise CborError("CBOR tag is not in preferred (shortest) encoding")
    return tag, data[1 + width :]


def _describe(exc: BaseException) -> str:
    # cbor2 messages describe structure, never content bytes; keep them short.
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
