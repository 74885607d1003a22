"""The audit log's format: hash-chained receipts and signed checkpoints.

Every decision the enclave makes about a signing request (signed or refused, and why) becomes a
receipt. Each receipt names the hash of the one before it, starting from a genesis value derived
from the enclave's boot id, so removing, reordering or editing a line breaks the chain. A
checkpoint is the enclave identity key's Ed25519 signature over (boot id, sequence number, head
hash); the identity key's public half is in the enclave's attestation documents, so a host that
holds the log cannot forge a checkpoint for a rewritten chain.

Where a chain starts is signed too. The enclave keeps a bounded number of receipts; a *start*
statement is its signature over (boot id, sequence number of the oldest receipt it still holds,
the hash that receipt names as ``prev``, and ``fetched_through``: the highest sequence number any
earlier fetch had returned), so a log that lacks its beginning can say truthfully "the enclave
dropped these before anyone fetched them" and cannot claim it for receipts a host fetched, then
flooded out of the buffer and deleted from its file. A *fresh* checkpoint is signed over a verifier's nonce as well, with the highest sequence
number the enclave has handed out in a fetch: a log that ends before that had its tail cut.

Receipts are JSON lines (canonical JSON: sorted keys, no spaces), written by the host as it
fetches them. A restart starts a new chain with a new boot id; a log file may hold several.
Every text field of a receipt is clipped in the enclave (:func:`clip`), so a receipt's line never
exceeds :data:`MAX_RECEIPT_BYTES` whatever a request held; the ``digest`` still names the whole
request.
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring  # what json.dumps(ensure_ascii=False) writes a str with
from typing import Any

__all__ = [
    "FORMAT",
    "RECEIPT_FIELDS",
    "BOOT_ID_BYTES",
    "FIELD_LIMITS",
    "MAX_RECEIPT_BYTES",
    "NONCE_SIZES",
    "genesis",
    "checkpoint_message",
    "start_message",
    "legacy_start_message",
    "fresh_checkpoint_message",
    "canonical_line",
    "receipt_parts",
    "clip",
]

FORMAT = "zerocopy-audit-v1"
RECEIPT_FIELDS = ("seq", "time_ms", "key", "decision", "rule", "request", "symbol", "quantity", "notional", "digest", "reason", "prev")
BOOT_ID_BYTES = 16
NONCE_SIZES = range(16, 65)  # a fresh checkpoint's nonce: 16 to 64 bytes

# The most bytes each text field of a receipt takes in its JSON line (escapes included).
FIELD_LIMITS = {"key": 64, "decision": 16, "rule": 64, "request": 200, "symbol": 64, "quantity": 64, "notional": 64, "digest": 64, "reason": 320}
# The limits above (920), their quotes (18), two integers of at most 20 characters, the prev hash
# (66) and the names, colons, commas and braces (119): 1163, rounded up.
MAX_RECEIPT_BYTES = 1280
_CLIPPED = "…"


def canonical_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def receipt_parts(
    time_ms: int, key: str, decision: str, rule: str, request: str, digest: str, symbol: str | None, quantity: str | None, notional: str | None, reason: str
) -> tuple[bytes, bytes, bytes]:
    """A receipt's canonical line around the two fields only the chain knows: ``(head, middle,
    tail)`` such that ``head + prev + middle + seq + tail`` (``prev`` the hex hash, ``seq`` in
    decimal, both ASCII) is exactly :func:`canonical_line` of the receipt — keys in sorted order,
    each value written as ``json.dumps`` writes it. Built directly, at half the cost of the dict
    and ``json.dumps``, and before the log's lock is taken."""
    head = f'{{"decision":{_json(decision)},"digest":{_json(digest)},"key":{_json(key)},"notional":{_json(notional)},"prev":"'
    middle = f'","quantity":{_json(quantity)},"reason":{_json(reason)},"request":{_json(request)},"rule":{_json(rule)},"seq":'
    tail = f',"symbol":{_json(symbol)},"time_ms":{time_ms if type(time_ms) is int else json.dumps(time_ms)}}}'
    return head.encode(), middle.encode(), tail.encode()


def _json(text: str | None) -> str:
    return "null" if text is None else encode_basestring(text)


def clip(text: str, limit: int) -> str:
    """``text`` cut (and marked with "…") so that its JSON encoding takes at most ``limit`` bytes.

    Measured encoded, not in characters: a control character costs six bytes as ``\\u0001``.
    Characters UTF-8 cannot encode (lone surrogates) become "?", so the line can always be written.
    """
    if len(text) <= limit and text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text  # the common case (names, digests, rules, short reasons): one byte a character
    head = text[: limit + 1]  # each character takes at least one byte: nothing past this can fit
    try:
        head.encode()
    except UnicodeEncodeError:
        head = head.encode("utf-8", "replace").decode()
    if len(text) <= limit and _json_size(head) <= limit:
        return head  # the common case: a short reason, measured once
    budget, size = limit - len(_CLIPPED.encode()), 0
    for index, char in enumerate(head):
        size += _json_size(char)
        if size > budget:
            return head[:index] + _CLIPPED
    return head  # not reached: the loop runs out of budget first


def _json_size(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def genesis(boot_id: bytes) -> str:
    return hashlib.sha256(FORMAT.encode() + b"\0genesis\0" + boot_id).hexdigest()


def checkpoint_message(boot_id: bytes, seq: int, head: str) -> bytes:
    """The bytes the identity key signs for a checkpoint."""
    return FORMAT.encode() + b"\0checkpoint\0" + boot_id + seq.to_bytes(8, "big") + bytes.fromhex(head)


def start_message(boot_id: bytes, seq: int, prev: str, fetched_through: int) -> bytes:
    """The bytes the identity key signs to say: the oldest receipt I hold is ``seq``, naming
    ``prev``; before this answer, fetches had handed out receipts up to ``fetched_through``. So a
    receipt before ``seq`` and at most ``fetched_through`` left the enclave in a fetch before it was
    dropped: if a log lacks it, whoever fetched it removed it."""
    return (
        FORMAT.encode() + b"\0start/fetched\0" + boot_id + seq.to_bytes(8, "big") + bytes.fromhex(prev)
        + fetched_through.to_bytes(8, "big")
    )


def legacy_start_message(boot_id: bytes, seq: int, prev: str) -> bytes:
    """What images before ``fetched_through`` signed for a start (their logs still verify, under
    their own PCR0; a current enclave never signs this, so a start cannot be stripped down to it)."""
    return FORMAT.encode() + b"\0start\0" + boot_id + seq.to_bytes(8, "big") + bytes.fromhex(prev)


def fresh_checkpoint_message(boot_id: bytes, seq: int, head: str, fetched_through: int, nonce: bytes) -> bytes:
    """A checkpoint signed for one verifier (``nonce``), with the highest seq any fetch has returned."""
    return (
        FORMAT.encode() + b"\0fresh-checkpoint\0" + boot_id + seq.to_bytes(8, "big") + bytes.fromhex(head)
        + fetched_through.to_bytes(8, "big") + nonce
    )
