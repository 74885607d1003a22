"""The audit log's format: hash-chained receipts and signed checkpoints.

Every decision the enclave makes about a signing request (signed or refused, and why) becomes a
receipt. Each receipt names the hash of the one before it, starting from a genesis value derived
from the enclave's boot id, so removing, reordering or editing a line breaks the chain. A
checkpoint is the enclave identity key's Ed25519 signature over (boot id, sequence number, head
hash); the identity key's public half is in the enclave's attestation documents, so a host that
holds the log cannot forge a checkpoint for a rewritten chain.

Receipts are JSON lines (canonical JSON: sorted keys, no spaces), written by the host as it
fetches them. A restart starts a new chain with a new boot id; a log file may hold several.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["FORMAT", "genesis", "entry_hash", "checkpoint_message", "canonical_line", "RECEIPT_FIELDS"]

FORMAT = "zerocopy-audit-v1"
RECEIPT_FIELDS = ("seq", "time_ms", "key", "decision", "rule", "request", "symbol", "quantity", "notional", "digest", "reason", "prev")


def canonical_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def genesis(boot_id: bytes) -> str:
    return hashlib.sha256(FORMAT.encode() + b"\0genesis\0" + boot_id).hexdigest()


def entry_hash(receipt: dict[str, Any]) -> str:
    """Hash of one receipt (which includes ``prev``, the hash of the receipt before it)."""
    return hashlib.sha256(canonical_line(receipt)).hexdigest()


def checkpoint_message(boot_id: bytes, seq: int, head: str) -> bytes:
    """The bytes the identity key signs for a checkpoint."""
    return FORMAT.encode() + b"\0checkpoint\0" + boot_id + seq.to_bytes(8, "big") + bytes.fromhex(head)
