"""The enclave's audit log: an append-only, hash-chained list of receipts in enclave memory.

Every receipt is hashed as it is recorded, and costs the same whatever the buffer holds: its
canonical line is built before the lock is taken (:func:`~enclave.protocol.audit.receipt_parts`),
and under the lock only the sequence number and the previous hash are put in and the line hashed
and appended. (Hashing in batches once cost the request that triggered one: 0.4-0.6 s for 65,536
pending receipts, then a few milliseconds every 256.)

The buffer holds ``capacity`` receipts of at most ``MAX_RECEIPT_BYTES`` each, kept as the canonical
lines the chain hashes. Full, it is a ring: each new receipt pushes the oldest out, at no extra
cost (nothing is re-hashed), and signing never waits for a fetch. A host that fetches less often
than that loses the oldest ones, and every fetch carries a signed *start* statement saying which
receipt the enclave's buffer now starts with and how far earlier fetches had reached, so the
loss is attributable: to a full buffer, or to whoever fetched them. A
fetch page never exceeds ``page_bytes``, so it always fits in one frame. A restart begins a new
chain.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import threading
from collections import deque
from decimal import Decimal
from json.encoder import encode_basestring  # as receipt_parts writes a str
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .protocol.audit import (
    BOOT_ID_BYTES,
    FIELD_LIMITS,
    FORMAT,
    MAX_RECEIPT_BYTES,
    checkpoint_message,
    clip,
    fresh_checkpoint_message,
    genesis,
    receipt_parts,
    start_message,
)

__all__ = ["AuditLog", "PAGE_BYTES", "LINE_MEMORY", "signed_parts"]

# Half the default frame limit: the rest of the answer (checkpoint, start, CBOR heads) is small.
PAGE_BYTES = 512 * 1024
# Memory per held receipt: the line, a bytes object's header, its deque slot.
LINE_MEMORY = MAX_RECEIPT_BYTES + 64
# (key, request) pairs whose receipt parts are remembered, at most: under 2 KB each, so under 0.5 MiB.
SIGNED_FIXED_ENTRIES = 256


class AuditLog:
    def __init__(self, identity: Ed25519PrivateKey, *, capacity: int = 65536, page_bytes: int = PAGE_BYTES) -> None:
        if page_bytes < MAX_RECEIPT_BYTES:
            raise ValueError("a page must hold at least one receipt")
        self.identity = identity
        self.boot_id = os.urandom(BOOT_ID_BYTES)
        self.capacity = capacity
        self.page_bytes = page_bytes
        self._lock = threading.Lock()
        self._lines: deque[bytes] = deque()  # canonical receipts, oldest first
        self._first_held = 1  # seq of self._lines[0]
        self._start_signature: tuple[int, int, str] | None = None  # (seq, fetched_through, base64) of the last start
        self._next_seq = 1
        self._head = genesis(self.boot_id)
        self._fetched_through = 0  # highest seq any fetch has returned
        self.dropped = 0
        self._signed_fixed: dict[tuple[str, str], tuple[str, str]] = {}  # (key, request) -> their JSON, clipped

    @property
    def max_bytes(self) -> int:
        """The most memory this log's receipts take (the worst case SECURITY.md states: 65,536
        receipts take at most about 88 MB (84 MiB), typically a third of it)."""
        return self.capacity * LINE_MEMORY

    def record(self, time_ms: int, key: str, decision: str, rule: str, request: str, digest: str, *, symbol: str | None = None, quantity: Any = None, notional: Any = None, reason: str = "") -> None:
        # Clipped before they are kept: a refusal quoting a megabyte of request must not cost one.
        head, middle, tail = receipt_parts(
            time_ms, clip(key, FIELD_LIMITS["key"]), clip(decision, FIELD_LIMITS["decision"]), clip(rule, FIELD_LIMITS["rule"]),
            clip(request, FIELD_LIMITS["request"]), clip(digest, FIELD_LIMITS["digest"]), _clip_optional(symbol, "symbol"),
            _clip_optional(quantity, "quantity"), _clip_optional(notional, "notional"), clip(reason, FIELD_LIMITS["reason"]),
        )
        self._append(head, middle, tail)

    def record_signed(self, time_ms: int, key: str, request: str, digest: str, symbol: str | None, quantity: Any, notional: Any) -> None:
        """``record(time_ms, key, "signed", "", request, digest, symbol=…, quantity=…, notional=…)``,
        the same line, with the parts that depend only on the key and the endpoint made once (a
        bounded memo: the host chooses the request's path)."""
        fixed = self._signed_fixed.get((key, request))
        if fixed is None:
            fixed = signed_parts(key, request)
            if len(self._signed_fixed) >= SIGNED_FIXED_ENTRIES:
                self._signed_fixed.clear()
            self._signed_fixed[(key, request)] = fixed
        self.record_signed_as(fixed, time_ms, digest, symbol, quantity, notional)

    def record_signed_as(self, fixed: tuple[str, str], time_ms: int, digest: str, symbol: str | None, quantity: Any, notional: Any) -> None:
        """:meth:`record_signed` with its key and request parts made by :func:`signed_parts` (kept
        by the caller with what else it knows of the request's shape)."""
        # A hex digest (the service's) is written as it is: what clip and encode_basestring give it.
        digest_json = f'"{digest}"' if len(digest) <= _DIGEST_LIMIT and digest.isascii() and digest.isalnum() else encode_basestring(clip(digest, _DIGEST_LIMIT))
        notional_json, quantity_json, symbol_json = _amount_json(notional, "notional"), _amount_json(quantity, "quantity"), _optional_json(symbol, "symbol")
        time_json = time_ms if type(time_ms) is int else json.dumps(time_ms)
        with self._lock:  # as _append, the line made in one piece: receipt_parts' head + prev + middle + seq + tail
            self._chain(
                f'{{"decision":"signed","digest":{digest_json},"key":{fixed[0]},"notional":{notional_json},"prev":"{self._head}",'
                f'"quantity":{quantity_json},"reason":"","request":{fixed[1]},"rule":"","seq":{self._next_seq},"symbol":{symbol_json},"time_ms":{time_json}}}'.encode()
            )

    def _chain(self, line: bytes) -> None:
        """Under the lock: ``line`` (naming the head and the next seq) hashed, held and counted."""
        self._head = hashlib.sha256(line).hexdigest()
        self._lines.append(line)
        self._next_seq += 1
        if len(self._lines) > self.capacity:  # full: a ring, the oldest receipt makes room
            self._lines.popleft()
            self._first_held += 1
            self.dropped += 1

    def _append(self, head: bytes, middle: bytes, tail: bytes) -> None:
        with self._lock:  # the same few steps for every receipt, the buffer full or not
            self._chain(b"%s%s%s%d%s" % (head, self._head.encode(), middle, self._next_seq, tail))

    def _start_prev(self) -> str:
        """The hash the oldest held receipt names as ``prev`` (read from its line once per fetch,
        rather than hashing each receipt a second time as it leaves the buffer)."""
        return json.loads(self._lines[0])["prev"] if self._lines else self._head

    def fetch(self, after_seq: int = 0, limit: int = 1000, *, nonce: bytes | None = None) -> dict[str, Any]:
        """Receipts with ``seq > after_seq`` (at most ``limit``, and at most ``page_bytes`` of them),
        a checkpoint over the head, and the signed start of what the enclave still holds. With a
        ``nonce``, the checkpoint is also signed fresh for that verifier."""
        with self._lock:
            first_seq = max(after_seq + 1, self._first_held)
            start = self._start()  # signed before this page counts as fetched: it speaks of what was dropped before it
            receipts = self._page(first_seq, limit)
            if receipts:
                self._fetched_through = max(self._fetched_through, first_seq + len(receipts) - 1)
            seq = self._next_seq - 1
            return {
                "format": FORMAT,
                "boot_id": self.boot_id.hex(),
                "genesis": genesis(self.boot_id),
                "receipts": receipts,
                "missing_before": self._first_held if after_seq + 1 < self._first_held else None,  # kept for older hosts
                "start": start,
                "checkpoint": self._checkpoint(seq, nonce),
            }

    def _page(self, first_seq: int, limit: int) -> list[bytes]:
        # Runs under the lock record() — the sign path — needs: references are copied and sized
        # at C speed (about 0.1 ms for a full page, against 0.5-2 ms line by line in Python); the
        # page is encoded later, outside the lock.
        lines = self._held_from(first_seq - self._first_held, limit)
        return lines[: _fitting(lines, self.page_bytes)]

    def _held_from(self, first_index: int, count: int) -> list[bytes]:
        """References to up to ``count`` held lines from ``first_index``, walking the deque from
        its nearer end (a host fetching what is new asks for the tail)."""
        held = len(self._lines)
        if first_index >= held:
            return []
        stop = min(held, first_index + count)
        if first_index <= held - stop:
            return list(itertools.islice(self._lines, first_index, stop))
        lines = list(itertools.islice(reversed(self._lines), held - stop, held - first_index))
        lines.reverse()
        return lines

    def _start(self) -> dict[str, Any]:
        # fetched_through is signed so that receipts a host fetched, then pushed out of the buffer
        # and deleted from its file, cannot pass for receipts the enclave dropped unfetched.
        seq, fetched_through, prev = self._first_held, self._fetched_through, self._start_prev()
        if self._start_signature is None or self._start_signature[:2] != (seq, fetched_through):
            signature = self.identity.sign(start_message(self.boot_id, seq, prev, fetched_through))
            self._start_signature = (seq, fetched_through, base64.b64encode(signature).decode())
        return {"seq": seq, "prev": prev, "fetched_through": fetched_through, "signature": self._start_signature[2]}

    def _checkpoint(self, seq: int, nonce: bytes | None) -> dict[str, Any]:
        signature = self.identity.sign(checkpoint_message(self.boot_id, seq, self._head))
        checkpoint: dict[str, Any] = {"seq": seq, "head": self._head, "signature": base64.b64encode(signature).decode()}
        if nonce is not None:
            fresh = self.identity.sign(fresh_checkpoint_message(self.boot_id, seq, self._head, self._fetched_through, nonce))
            checkpoint.update(nonce=nonce, fetched_through=self._fetched_through, fresh_signature=base64.b64encode(fresh).decode())
        return checkpoint


def _fitting(lines: list[bytes], page_bytes: int, chunk: int = 64) -> int:
    """How many of ``lines``, from the first, fit in ``page_bytes`` (each costs its length and the
    5-byte CBOR head of a byte string): summed a chunk at a time, then line by line in the last."""
    size = count = 0
    while count < len(lines):
        part = lines[count : count + chunk]
        part_size = sum(map(len, part)) + 5 * len(part)
        if size + part_size > page_bytes:
            break
        size, count = size + part_size, count + len(part)
    for line in lines[count : count + chunk]:
        size += len(line) + 5
        if size > page_bytes:
            break
        count += 1
    return count


def signed_parts(key: str, request: str) -> tuple[str, str]:
    """The JSON of a signed receipt's key and request fields, clipped (:meth:`AuditLog.record_signed_as`)."""
    return encode_basestring(clip(key, FIELD_LIMITS["key"])), encode_basestring(clip(request, FIELD_LIMITS["request"]))


def _optional_json(value: Any, field: str) -> str:
    return "null" if value is None else encode_basestring(clip(str(value), FIELD_LIMITS[field]))


def _amount_json(value: Any, field: str) -> str:
    """:func:`_optional_json` of a quantity or notional: a Decimal's text is digits, a point, a sign
    and an exponent, so a short one is written as it is (what clip and encode_basestring give it)."""
    if type(value) is Decimal:
        text = str(value)
        if len(text) <= _AMOUNT_LIMIT:
            return f'"{text}"'
    return _optional_json(value, field)


_DIGEST_LIMIT, _AMOUNT_LIMIT = FIELD_LIMITS["digest"], min(FIELD_LIMITS["quantity"], FIELD_LIMITS["notional"])


def _clip_optional(value: Any, field: str) -> str | None:
    return None if value is None else clip(str(value), FIELD_LIMITS[field])
