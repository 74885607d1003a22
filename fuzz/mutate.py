"""Mutations of seed inputs: bytes-level for binary formats, value-level for JSON.

Deterministic for a given ``random.Random``, so a run is reproduced by its seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["mutate_bytes", "mutate_json", "random_json"]

# Bytes that tend to matter to parsers: CBOR breaks and indefinite heads, length extremes, NUL.
_INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x9f", b"\xbf", b"\x5f", b"\x1b", b"\xff" * 8, b"\x00" * 8]


def _flip(rnd: random.Random, data: bytearray) -> None:
    if data:
        data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)


def _set_byte(rnd: random.Random, data: bytearray) -> None:
    if data:
        data[rnd.randrange(len(data))] = rnd.randrange(256)


def _insert(rnd: random.Random, data: bytearray) -> None:
    chunk = rnd.choice(_INTERESTING) if rnd.random() < 0.5 else rnd.randbytes(rnd.randint(1, 16))
    position = rnd.randint(0, len(data))
    data[position:position] = chunk


def _delete(rnd: random.Random, data: bytearray) -> None:
    if data:
        start = rnd.randrange(len(data))
        del data[start : start + rnd.randint(1, 64)]


def _duplicate(rnd: random.Random, data: bytearray) -> None:
    if data:
        start = rnd.randrange(len(data))
        chunk = data[start : start + rnd.randint(1, 64)]
        position = rnd.randint(0, len(data))
        data[position:position] = chunk


def _truncate(rnd: random.Random, data: bytearray) -> None:
    if data:
        del data[rnd.randrange(len(data)) :]


_BYTE_MUTATIONS: list[Callable[[random.Random, bytearray], None]] = [_flip, _set_byte, _insert, _delete, _duplicate, _truncate]


def mutate_bytes(rnd: random.Random, seeds: Sequence[bytes]) -> bytes:
    """A seed with 1–8 random mutations, another seed spliced in, or (rarely) random bytes."""
    roll = rnd.random()
    if roll < 0.03:
        return rnd.randbytes(rnd.randint(0, 512))
    data = bytearray(rnd.choice(seeds))
    if roll < 0.10 and len(seeds) > 1:
        other = rnd.choice(seeds)
        cut = rnd.randint(0, len(data))
        data[cut:] = other[rnd.randint(0, len(other)) :]
    for _ in range(rnd.randint(1, 8)):
        rnd.choice(_BYTE_MUTATIONS)(rnd, data)
    return bytes(data)


def random_json(rnd: random.Random, depth: int = 0) -> Any:
    """A JSON value of any shape, including the awkward ones (deep nesting, huge numbers, odd text)."""
    choice = rnd.randrange(12 if depth < 4 else 8)
    if choice == 0:
        return None
    if choice == 1:
        return rnd.random() < 0.5
    if choice == 2:
        return rnd.choice([0, -1, 1, 2**63, -(2**64), 10**40, 7])
    if choice == 3:
        return rnd.choice([0.5, -0.0, 1e308, 3.0])
    if choice in (4, 5):
        return rnd.choice(["", "a", "\u0000", "\ud800", "é" * 3, "x" * 5000, "BTCUSDT", "arn:aws:kms:us-east-1:123456789012:key/x", "*"])
    if choice in (6, 7):
        return rnd.randbytes(rnd.randint(0, 12)).hex()
    if choice == 8:
        return [random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    if choice == 9:
        return {rnd.choice(["a", "KeyId", "Plaintext", "allow", ""]): random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}
    if choice == 10:
        nested: Any = 1
        for _ in range(rnd.choice([50, 500, 5000])):
            nested = [nested]
        return nested
    return {"k": random_json(rnd, depth + 1)}


def mutate_json(rnd: random.Random, value: Any) -> Any:
    """``value`` with one place replaced, removed or given an extra member."""
    if isinstance(value, dict) and value and rnd.random() < 0.8:
        key = rnd.choice(list(value))
        copy = dict(value)
        roll = rnd.random()
        if roll < 0.2:
            del copy[key]
        elif roll < 0.35:
            copy[rnd.choice(["extra", key.upper(), key + " "])] = random_json(rnd)
        else:
            copy[key] = mutate_json(rnd, copy[key])
        return copy
    if isinstance(value, list) and value and rnd.random() < 0.8:
        copy = list(value)
        index = rnd.randrange(len(copy))
        copy[index] = mutate_json(rnd, copy[index])
        return copy
    return random_json(rnd)


def json_bytes(value: Any) -> bytes:
    try:
        return json.dumps(value).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError):
        return b"[" * 10000
