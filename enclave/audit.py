"""The enclave's audit log: an append-only, hash-chained list of receipts in enclave memory.

Recording is cheap (a tuple appended under a lock); hashing happens when the host fetches or when
old receipts leave the buffer. The buffer holds ``capacity`` receipts; a host that fetches less
often than that loses the oldest ones, and the fetch says so (the chain still verifies from the
first receipt it holds). A restart begins a new chain.
"""

from __future__ import annotations

import base64
import os
import threading
from collections import deque
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .protocol.audit import FORMAT, checkpoint_message, entry_hash, genesis

__all__ = ["AuditLog"]


class AuditLog:
    def __init__(self, identity: Ed25519PrivateKey, *, capacity: int = 65536) -> None:
        self.identity = identity
        self.boot_id = os.urandom(16)
        self.capacity = capacity
        self._lock = threading.Lock()
        self._pending: list[tuple] = []  # recorded, not yet hashed
        self._hashed: deque[dict[str, Any]] = deque()
        self._next_seq = 1
        self._head = genesis(self.boot_id)
        self.dropped = 0

    def record(self, time_ms: int, key: str, decision: str, rule: str, request: str, digest: str, *, symbol: str | None = None, quantity: Any = None, notional: Any = None, reason: str = "") -> None:
        with self._lock:
            self._pending.append((self._next_seq, time_ms, key, decision, rule, request, symbol, quantity, notional, digest, reason))
            self._next_seq += 1
            if len(self._pending) + len(self._hashed) > self.capacity:
                self._hash_pending()
                while len(self._hashed) > self.capacity:
                    self._hashed.popleft()
                    self.dropped += 1

    def _hash_pending(self) -> None:
        for seq, time_ms, key, decision, rule, request, symbol, quantity, notional, digest, reason in self._pending:
            receipt = {
                "seq": seq, "time_ms": time_ms, "key": key, "decision": decision, "rule": rule, "request": request,
                "symbol": symbol, "quantity": None if quantity is None else str(quantity),
                "notional": None if notional is None else str(notional), "digest": digest, "reason": reason, "prev": self._head,
            }
            self._head = entry_hash(receipt)
            self._hashed.append(receipt)
        self._pending.clear()

    def fetch(self, after_seq: int = 0, limit: int = 1000) -> dict[str, Any]:
        """Receipts with ``seq > after_seq`` (at most ``limit``), and a checkpoint over the head."""
        with self._lock:
            self._hash_pending()
            receipts = [receipt for receipt in self._hashed if receipt["seq"] > after_seq][:limit]
            seq = self._next_seq - 1
            signature = self.identity.sign(checkpoint_message(self.boot_id, seq, self._head))
            first_held = self._hashed[0]["seq"] if self._hashed else self._next_seq
            return {
                "format": FORMAT,
                "boot_id": self.boot_id.hex(),
                "genesis": genesis(self.boot_id),
                "receipts": receipts,
                "missing_before": first_held if after_seq + 1 < first_held and self.dropped else None,
                "checkpoint": {"seq": seq, "head": self._head, "signature": base64.b64encode(signature).decode()},
            }
