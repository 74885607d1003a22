"""Strict CBOR for untrusted bytes.

Everything that crosses the enclave boundary is decoded here, so one set of rules about *meaning*
holds for wire messages, NSM responses and attestation documents: a single top-level item and no
trailing bytes, no duplicate map keys, no tags (except those the caller names, at the top level
only), only the plain types below, integers within 64 bits, nesting within :data:`MAX_DEPTH`.

How a value is *encoded* is checked only where we wrote the bytes ourselves. By default an item must
be in its one preferred form (shortest heads, definite lengths), as our own peers send it. Bytes that
AWS produces (attestation documents, NSM responses) are read with ``any_encoding=True``: since about
September 2025 Nitro encodes the attestation payload as an indefinite-length map, before that as a
definite one, and RFC 8949 gives every value several valid encodings (indefinite-length arrays, maps
and chunked strings; heads wider than needed) that all mean the same. A signature covers the bytes
as sent, so accepting any encoding cannot change what was signed.

The decoder is a small recursive reader of RFC 8949 heads rather than cbor2's, because the checks
above are about the encoding (argument widths, where lengths are indefinite), which a decoder
that returns only values cannot report. cbor2 encodes (:func:`dumps`).
"""

from __future__ import annotations

from typing import Any

import cbor2

from .errors import ZeroCopyError

__all__ = ["CborError", "loads", "dumps"]

MAX_DEPTH = 16
_PLAIN = (bytes, str, bool, type(None), int, list, dict)
_INT_MIN, _INT_MAX = -(2**64), 2**64 - 1
_ARGUMENT_WIDTHS = {24: 1, 25: 2, 26: 4, 27: 8}
_INDEFINITE = 31
_BREAK = 0xFF
_SIMPLE = {20: False, 21: True, 22: None}
_BYTES, _TEXT, _ARRAY, _MAP, _TAG, _SIMPLE_OR_FLOAT = 2, 3, 4, 5, 6, 7


class CborError(ZeroCopyError, ValueError):
    """Bytes that are not strict, well-formed CBOR of the expected shape."""


def loads(data: bytes, *, top_level_tags: frozenset[int] = frozenset(), any_encoding: bool = False) -> Any:
    """Decode exactly one strict CBOR item from ``data``; raise :class:`CborError` otherwise.

    ``top_level_tags``: tags accepted on the outermost item only (and then ignored).
    ``any_encoding``: accept every valid encoding of the value — indefinite lengths, chunked
    strings, wider heads — as AWS's encoders have produced; otherwise only the preferred one.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CborError(f"expected bytes, got {type(data).__name__}")
    reader = _Reader(bytes(data), any_encoding)
    value = reader.top_level(top_level_tags)
    if reader.position != len(reader.data):
        raise CborError(f"{len(reader.data) - reader.position} trailing bytes after the CBOR item")
    return value


def dumps(value: Any) -> bytes:
    """Encode ``value`` (plain types only) as CBOR in preferred encoding, lengths definite."""
    _check_types(value)
    return cbor2.dumps(value)


class _Reader:
    """One pass over ``data``; ``position`` is the next unread byte."""

    def __init__(self, data: bytes, any_encoding: bool) -> None:
        self.data = data
        self.position = 0
        self.any_encoding = any_encoding

    def top_level(self, tags: frozenset[int]) -> Any:
        if tags and self.data[:1] and self.data[0] >> 5 == _TAG:
            try:
                _, tag = self._head()
            except CborError as exc:
                raise CborError(f"malformed CBOR tag: {exc}") from None
            if tag not in tags:
                raise CborError(f"unexpected CBOR tag {tag}")
        return self.item(0)

    def item(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise CborError("CBOR nested too deeply")
        start = self.position
        major, argument = self._head()
        if major == 0:
            return argument
        if major == 1:
            return -1 - argument
        if major in (_BYTES, _TEXT):
            return self._string(major, argument)
        if major == _ARRAY:
            return self._array(argument, depth)
        if major == _MAP:
            return self._map(argument, depth)
        if major == _TAG:
            raise CborError(f"unexpected CBOR tag {argument}")
        return self._simple(self.data[start] & 0x1F, argument)

    # -- heads -----------------------------------------------------------------------------------
    def _take(self, count: int) -> bytes:
        end = self.position + count
        if end > len(self.data):
            raise CborError("malformed CBOR: premature end of data")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def _head(self) -> tuple[int, int | None]:
        """(major type, argument); the argument is None for an indefinite length."""
        initial = self._take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info
        if info in _ARGUMENT_WIDTHS:
            width = _ARGUMENT_WIDTHS[info]
            argument = int.from_bytes(self._take(width), "big")
            # Preferred encoding: the narrowest head that holds the argument. Major type 7's
            # one-byte form is a simple value (refused below), its wider forms are floats.
            narrower = argument < (24 if width == 1 else 1 << (4 * width))
            if narrower and major != _SIMPLE_OR_FLOAT and not self.any_encoding:
                raise CborError("CBOR item is not in preferred (shortest) encoding")
            return major, argument
        if info == _INDEFINITE:
            if major == _SIMPLE_OR_FLOAT:
                raise CborError("malformed CBOR: unexpected break")
            if major in (0, 1, _TAG):
                raise CborError("malformed CBOR: reserved additional information")
            if not self.any_encoding:
                raise CborError("indefinite-length CBOR items are not accepted here")
            return major, None
        raise CborError("malformed CBOR: reserved additional information")

    def _at_break(self) -> bool:
        if self.position >= len(self.data):
            raise CborError("malformed CBOR: premature end of data (no break)")
        if self.data[self.position] == _BREAK:
            self.position += 1
            return True
        return False

    # -- items -----------------------------------------------------------------------------------
    def _string(self, major: int, length: int | None) -> bytes | str:
        if length is None:
            chunks = []
            while not self._at_break():
                chunk_major, chunk_length = self._head()
                if chunk_major != major or chunk_length is None:
                    raise CborError("malformed CBOR: an indefinite string chunk must be a definite string of its type")
                chunks.append(self._string(major, chunk_length))
            return b"".join(chunks) if major == _BYTES else "".join(chunks)  # type: ignore[arg-type]
        raw = self._take(length)
        if major == _BYTES:
            return raw
        try:
            return raw.decode("utf-8")  # strict: refuses invalid sequences and encoded surrogates
        except UnicodeDecodeError:
            raise CborError("malformed CBOR: text string is not valid UTF-8") from None

    def _array(self, length: int | None, depth: int) -> list:
        if length is None:
            items = []
            while not self._at_break():
                items.append(self.item(depth + 1))
            return items
        # No preallocation: each item takes at least one byte, so the input bounds the work.
        return [self.item(depth + 1) for _ in range(length)]

    def _map(self, length: int | None, depth: int) -> dict:
        result: dict = {}
        count = 0
        while (not self._at_break()) if length is None else count < length:
            key = self.item(depth + 1)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise CborError(f"unexpected CBOR map key of type {_type_name(key)}")
            if key in result:
                raise CborError("duplicate CBOR map key")
            result[key] = self.item(depth + 1)
            count += 1
        return result

    @staticmethod
    def _simple(info: int, argument: int | None) -> Any:
        if info < 24 and argument in _SIMPLE:
            return _SIMPLE[argument]
        if info in (25, 26, 27):
            raise CborError("unexpected CBOR item of type float")
        raise CborError("unexpected CBOR simple value")


def _type_name(value: Any) -> str:
    return {list: "array", dict: "map"}.get(type(value), type(value).__name__)


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
