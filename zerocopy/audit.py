"""The host's side of the audit log: fetch receipts into a file, and verify a file.

A log file is JSON lines of three kinds, in order:

* ``{"chain": {...}}`` starts the receipts of one enclave boot: its boot id, the genesis hash,
  and an attestation document whose ``public_key`` is the enclave's identity key;
* receipts, byte for byte as the enclave hashed them (canonical JSON, each naming the hash of the
  one before it);
* ``{"checkpoint": {...}}``: the identity key's signature over (boot id, sequence, head hash).

:func:`verify_log` recomputes every hash, checks that the chain is unbroken from its genesis, that
every receipt is covered by a checkpoint, and that each checkpoint was signed by the identity key
of an attestation document that verifies (against the AWS root, or the roots given). A removed,
reordered, inserted or edited line, or a forged checkpoint, is an :class:`AuditError` naming the
line.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from enclave.protocol.audit import FORMAT, canonical_line, checkpoint_message, entry_hash, genesis

from .errors import ZeroCopyError

__all__ = ["AuditError", "AuditReport", "fetch_into", "verify_log"]


class AuditError(ZeroCopyError):
    """The audit log does not verify; the message names the line and what is wrong."""


@dataclass
class AuditReport:
    chains: int = 0
    receipts: int = 0
    signed: int = 0
    refused: int = 0
    checkpoints: int = 0
    refusals_by_rule: dict[str, int] = field(default_factory=dict)


def _last_seq_per_boot(path: Path) -> dict[str, int]:
    last: dict[str, int] = {}
    boot = None
    if not path.exists():
        return last
    for line in path.read_bytes().splitlines():
        record = json.loads(line)
        if "chain" in record:
            boot = record["chain"]["boot_id"]
            last.setdefault(boot, 0)
        elif "seq" in record and boot is not None:
            last[boot] = record["seq"]
    return last


def fetch_into(signer: Any, path: str | os.PathLike) -> int:
    """Append the receipts the file does not have yet, then a checkpoint; returns how many."""
    path = Path(path)
    document = signer.attest(os.urandom(32))
    boot_id = signer.audit(after=_NEWEST, limit=1)["boot_id"]
    known = _last_seq_per_boot(path)
    after = known.get(boot_id, 0)
    lines: list[bytes] = []
    count = 0
    while True:
        log = signer.audit(after=after)
        if log["boot_id"] != boot_id:
            raise AuditError("the enclave restarted during the fetch; fetch again")
        if not lines and boot_id not in known:
            header = {"boot_id": boot_id, "genesis": log["genesis"], "format": FORMAT, "attestation": base64.b64encode(document).decode()}
            if log.get("missing_before") is not None:
                header["missing_before"] = log["missing_before"]
            lines.append(canonical_line({"chain": header}))
        receipts = log["receipts"]
        lines.extend(receipts)
        count += len(receipts)
        if receipts:
            after = json.loads(receipts[-1])["seq"]
        if not receipts or after >= log["checkpoint"]["seq"]:
            lines.append(canonical_line({"checkpoint": {"boot_id": boot_id, **log["checkpoint"]}}))
            break
    with open(path, "ab") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))
    return count


_NEWEST = 2**62


def _identity_key(document_b64: str, *, roots: Sequence[Any] | None, expected_pcrs: dict[int, bytes] | None, allow_debug: bool, line: int) -> Ed25519PublicKey:
    from .attestation import AttestationError, document_time, verify

    try:
        raw = base64.b64decode(document_b64, validate=True)
        # The log outlives the leaf certificate (three hours): verify the document as of its own time.
        document = verify(raw, roots=roots, now=document_time(raw), expected_pcrs=expected_pcrs, allow_debug=allow_debug)
    except (binascii.Error, ValueError, AttestationError) as exc:
        raise AuditError(f"line {line}: the chain's attestation document does not verify: {exc}") from None
    try:
        key = load_der_public_key(document.public_key or b"")
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError(f"line {line}: the attestation document carries no Ed25519 identity key")
    return key


def verify_log(
    lines: Iterable[bytes],
    *,
    roots: Sequence[Any] | None = None,
    expected_pcrs: dict[int, bytes] | None = None,
    allow_debug: bool = False,
) -> AuditReport:
    report = AuditReport()
    boot_id: bytes | None = None
    identity: Ed25519PublicKey | None = None
    head = ""
    seq = 0
    heads: dict[int, str] = {}
    uncovered_from: int | None = None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            raise AuditError(f"line {number}: not JSON") from None
        if not isinstance(record, dict):
            raise AuditError(f"line {number}: not a JSON object")
        if "chain" in record:
            if uncovered_from is not None:
                raise AuditError(f"line {number}: receipts from seq {uncovered_from} of the previous chain are not covered by a checkpoint")
            chain = record["chain"]
            try:
                boot_id = bytes.fromhex(chain["boot_id"])
            except (KeyError, TypeError, ValueError):
                raise AuditError(f"line {number}: malformed chain header") from None
            if chain.get("genesis") != genesis(boot_id):
                raise AuditError(f"line {number}: the chain's genesis does not match its boot id")
            identity = _identity_key(chain.get("attestation", ""), roots=roots, expected_pcrs=expected_pcrs, allow_debug=allow_debug, line=number)
            head, seq, heads = genesis(boot_id), 0, {}
            missing = chain.get("missing_before")
            report.chains += 1
            continue
        if boot_id is None or identity is None:
            raise AuditError(f"line {number}: a record before any chain header")
        if "checkpoint" in record:
            checkpoint = record["checkpoint"]
            try:
                at, claimed, signature = checkpoint["seq"], checkpoint["head"], base64.b64decode(checkpoint["signature"], validate=True)
            except (KeyError, TypeError, ValueError, binascii.Error):
                raise AuditError(f"line {number}: malformed checkpoint") from None
            if checkpoint.get("boot_id") != boot_id.hex():
                raise AuditError(f"line {number}: checkpoint of another chain")
            if at > seq:
                raise AuditError(f"line {number}: the checkpoint covers seq {at}, but the log stops at seq {seq} (receipts were removed)")
            expected_head = heads.get(at, genesis(boot_id) if at == 0 else None)
            if expected_head != claimed:
                raise AuditError(f"line {number}: the checkpoint's head does not match the receipts up to seq {at} (a receipt was edited)")
            try:
                identity.verify(signature, checkpoint_message(boot_id, at, claimed))
            except (InvalidSignature, ValueError):
                raise AuditError(f"line {number}: the checkpoint is not signed by the enclave's attested identity key") from None
            report.checkpoints += 1
            if at == seq:
                uncovered_from = None
            continue
        if canonical_line(record) != raw.strip():
            raise AuditError(f"line {number}: the receipt is not in canonical form (it was edited)")
        if record.get("prev") != head:
            first_after_gap = seq == 0 and missing is not None and record.get("seq") == missing
            if not first_after_gap:
                raise AuditError(f"line {number}: receipt seq {record.get('seq')} does not follow seq {seq} (a receipt was removed, inserted or edited)")
        if seq and record.get("seq") != seq + 1:
            raise AuditError(f"line {number}: receipt seq {record.get('seq')} where {seq + 1} was expected")
        seq = record["seq"]
        head = entry_hash(record)
        heads[seq] = head
        if uncovered_from is None:
            uncovered_from = seq
        report.receipts += 1
        if record.get("decision") == "signed":
            report.signed += 1
        else:
            report.refused += 1
            rule = str(record.get("rule"))
            report.refusals_by_rule[rule] = report.refusals_by_rule.get(rule, 0) + 1
    if uncovered_from is not None:
        raise AuditError(f"the receipts from seq {uncovered_from} on are not covered by a checkpoint (the end of the log was cut or edited)")
    if report.chains == 0:
        raise AuditError("the log holds no chain")
    return report
