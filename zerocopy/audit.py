"""The host's side of the audit log: fetch receipts into a file, and verify a file.

A log file is JSON lines of four kinds, in order:

* ``{"chain": {...}}`` starts the receipts of one enclave boot: its boot id, the genesis hash, an
  attestation document whose ``public_key`` is the enclave's identity key, and ``start``: the
  enclave's signed statement of the oldest receipt it still held (seq 1 from the genesis hash,
  unless it had dropped receipts nobody fetched);
* receipts, byte for byte as the enclave hashed them (canonical JSON, each naming the hash of the
  one before it);
* ``{"checkpoint": {...}}``: the identity key's signature over (boot id, sequence, head hash);
* ``{"start": {...}}``: a later signed start, written when the enclave dropped receipts between
  two fetches.

:func:`verify_log` recomputes every hash, checks that the chain is unbroken, that every receipt is
covered by a checkpoint, and that each checkpoint and start was signed by the identity key of an
attestation document that verifies (against the AWS root, or the roots given) for the pinned image
(``expected_pcrs={0: PCR0}``; ``any_image=True`` to accept any). An edited, reordered or inserted
line, or a forged signature, is an :class:`AuditError` naming the line. Missing receipts are
*gaps*: verification goes on past them and :class:`AuditGap` lists every one, with what it knows of
the cause — removed from the file, dropped by the enclave unfetched (signed), fetched before the
enclave dropped them (signed), or fetched but cut from the tail (seen only against the enclave:
``enclave=signer``, an attested ``Signer`` of the log's last chain). Nothing unsigned explains a
gap. A log whose first chain does not start at the enclave's first receipt is refused unless
``expect_from`` says where it is expected to start.

Chains are independent: each boot's enclave knows nothing of the ones before it, so a whole chain
(an earlier boot) can be deleted without a trace in the others. The report lists every chain
(:class:`ChainInfo`: boot id, module id, attestation time) for the operator to confirm, and
``expect_chains`` / ``expect_boots`` make :func:`verify_log` refuse a log whose chains differ.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from enclave.protocol.audit import (
    BOOT_ID_BYTES,
    FORMAT,
    RECEIPT_FIELDS,
    canonical_line,
    checkpoint_message,
    fresh_checkpoint_message,
    genesis,
    legacy_start_message,
    start_message,
)

from .errors import AuditError, AuditGap, UnexpectedChains

__all__ = ["AuditError", "AuditGap", "UnexpectedChains", "AuditReport", "ChainInfo", "Gap", "fetch_into", "verify_log"]

REMOVED = "not in the log (receipts were removed from the file)"
UNVERIFIABLE = "in the log but not covered by a checkpoint, so not verifiable (what followed them was removed, or the end of the log was cut)"
DROPPED = "not in the log, and no longer in the enclave (its buffer was full; the enclave signed where its receipts now start, and that no fetch had returned them)"
DROPPED_UNATTRIBUTED = "not in the log, and no longer in the enclave (its buffer was full; an older image signed where its receipts now start, but not whether a fetch had returned them)"
FETCHED_THEN_DROPPED = "not in the log, though a fetch had returned them before the enclave's buffer dropped them (signed): whoever fetched them removed them, or keeps them in another file"
CUT = "fetched from the enclave but not in the log (its tail was cut)"

#: What a receipt records: a signing request signed or refused, a key bound (``BIND``) or removed
#: (``REMOVE``). Each is a count of :class:`AuditReport`.
DECISIONS = ("signed", "refused", "bound", "removed")
_NEWEST = 2**62
_SEQ_LIMIT = 2**63
_BOOT_PREFIX = 16  # hex digits of a boot id that name it in --expect-boots (64 bits: not guessable)


@dataclass(frozen=True)
class Gap:
    """Receipts ``first``..``last`` of one chain that the log does not vouch for, and why."""

    boot_id: str
    first: int
    last: int
    cause: str

    def __str__(self) -> str:
        return f"seq {self.first}..{self.last} of chain {self.boot_id[:16]}: {self.cause}"


@dataclass(frozen=True)
class ChainInfo:
    """One chain of the log — one boot of an enclave — as the operator confirms it."""

    boot_id: str
    module_id: str  # the enclave (on Nitro ``<instance id>-enc<16 hex>``, new at every launch)
    attested_at: dt.datetime  # when the chain header's attestation document was made
    identity_key: str  # the boot's Ed25519 identity key, raw, in hex
    receipts: int  # receipts of this chain the log vouches for
    first: int | None  # the first receipt's seq in the log (None: no receipt)
    last: int  # the last seq the log accounts for

    def __str__(self) -> str:
        held = f"{self.receipts} receipts, seq {self.first}..{self.last}" if self.first is not None else "no receipts"
        return f"boot {self.boot_id}: enclave {self.module_id}, attested {self.attested_at:%Y-%m-%dT%H:%M:%SZ}, {held}"


@dataclass
class AuditReport:
    chains: int = 0
    receipts: int = 0
    signed: int = 0
    refused: int = 0
    bound: int = 0  # BIND receipts: a generated key given its API key id
    removed: int = 0  # REMOVE receipts: a key unloaded
    checkpoints: int = 0
    refusals_by_rule: dict[str, int] = field(default_factory=dict)
    gaps: list[Gap] = field(default_factory=list)  # every gap, the expected ones included
    expected_gaps: list[Gap] = field(default_factory=list)  # the ones ``expect_from`` allows
    boots: list[ChainInfo] = field(default_factory=list)  # every chain, in the log's order
    chains_confirmed: bool = False  # whether expect_chains / expect_boots said which chains to expect
    enclave_seq: int | None = None  # the enclave's fresh checkpoint, when compared with it
    enclave_module_id: str | None = None  # the attested enclave it was compared with
    not_fetched: tuple[int, int] | None = None  # receipts the enclave has that nobody fetched yet


# -- typed reading of untrusted fields --------------------------------------------------------------


def _seq(value: Any, what: str, where: str, *, minimum: int = 1) -> int:
    if type(value) is not int or not minimum <= value < _SEQ_LIMIT:
        raise AuditError(f"{where}: {what} must be a sequence number")
    return value


def _hash(value: Any, what: str, where: str) -> str:
    if type(value) is not str or len(value) != 64 or value.strip("0123456789abcdef"):
        raise AuditError(f"{where}: {what} must be a SHA-256 hash in lowercase hex")
    return value


def _boot_id(value: Any, where: str) -> bytes:
    if type(value) is not str or len(value) != 2 * BOOT_ID_BYTES or value.strip("0123456789abcdef"):
        raise AuditError(f"{where}: the boot id must be {BOOT_ID_BYTES} bytes in lowercase hex")
    return bytes.fromhex(value)


def _signature(value: Any, where: str) -> bytes:
    try:
        signature = base64.b64decode(value, validate=True) if type(value) is str else b""
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        raise AuditError(f"{where}: malformed signature (an Ed25519 signature in base64)")
    return signature


def _map(value: Any, what: str, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise AuditError(f"{where}: {what} must be a JSON object")
    return value


def _check_signature(identity: Ed25519PublicKey, signature: bytes, message: bytes, what: str, where: str) -> None:
    try:
        identity.verify(signature, message)
    except InvalidSignature:
        raise AuditError(f"{where}: the {what} is not signed by the enclave's attested identity key") from None


# -- fetching ---------------------------------------------------------------------------------------


def fetch_into(signer: Any, path: str | os.PathLike) -> int:
    """Append the receipts the file does not have yet, then a checkpoint; returns how many."""
    path = Path(path)
    known = _last_seq_per_boot(path)
    document = signer.attest(os.urandom(32))
    boot_id = _page_boot(signer.audit(after=_NEWEST, limit=1))
    after = known.get(boot_id, 0)
    lines: list[bytes] = []
    count = 0
    while True:
        page = signer.audit(after=after)
        if _page_boot(page) != boot_id:
            raise AuditError("the enclave restarted during the fetch; fetch again")
        receipts, start, checkpoint = _page_parts(page)
        if boot_id not in known and not lines:
            header = {"boot_id": boot_id, "genesis": page.get("genesis"), "format": FORMAT, "attestation": base64.b64encode(document).decode(), "start": start}
            lines.append(canonical_line({"chain": header}))
        elif start["seq"] > after + 1:  # the enclave dropped receipts since the last fetch: say so, signed
            lines.append(canonical_line({"start": {"boot_id": boot_id, **start}}))
        lines.extend(receipts)
        count += len(receipts)
        if receipts:
            after = _receipt_seq(receipts[-1])
        if not receipts or after >= checkpoint["seq"]:
            lines.append(canonical_line({"checkpoint": {"boot_id": boot_id, **checkpoint}}))
            break
    with open(path, "ab") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))
    return count


def _page_boot(page: Any) -> str:
    boot_id = page.get("boot_id") if type(page) is dict else None
    _boot_id(boot_id, "the enclave's audit answer")
    return boot_id  # type: ignore[return-value]


def _page_parts(page: dict) -> tuple[list[bytes], dict[str, Any], dict[str, Any]]:
    receipts, start, checkpoint = page.get("receipts"), page.get("start"), page.get("checkpoint")
    where = "the enclave's audit answer"
    if type(receipts) is not list or not all(type(line) is bytes for line in receipts):
        raise AuditError(f"{where}: receipts must be a list of lines")
    return receipts, _page_start(_map(start, "start", where), where), _page_checkpoint(_map(checkpoint, "checkpoint", where), where)


def _page_start(start: dict[str, Any], where: str) -> dict[str, Any]:
    checked = {"seq": _seq(start.get("seq"), "start seq", where), "prev": _hash(start.get("prev"), "start prev", where), "signature": start.get("signature")}
    if "fetched_through" in start:  # absent from images that did not sign it yet
        checked["fetched_through"] = _seq(start["fetched_through"], "start fetched_through", where, minimum=0)
    return checked


def _page_checkpoint(checkpoint: dict[str, Any], where: str) -> dict[str, Any]:
    return {"seq": _seq(checkpoint.get("seq"), "checkpoint seq", where, minimum=0), "head": _hash(checkpoint.get("head"), "head", where), "signature": checkpoint.get("signature")}


def _receipt_seq(line: bytes) -> int:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        record = None
    return _seq(record.get("seq") if type(record) is dict else None, "a receipt's seq", "the enclave's audit answer")


def _last_seq_per_boot(path: Path) -> dict[str, int]:
    """The last receipt of each chain the file holds (so a fetch appends only what is new)."""
    last: dict[str, int] = {}
    if not path.exists():
        return last
    boot = None
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        record = _parse(line, where)
        if "chain" in record:
            boot = _boot_id(_map(record["chain"], "the chain header", where).get("boot_id"), where).hex()
            last.setdefault(boot, 0)
        elif "seq" in record and boot is not None:
            last[boot] = _seq(record["seq"], "seq", where)
    return last


def _parse(raw: bytes, where: str) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        raise AuditError(f"{where}: not JSON") from None
    return _map(record, "a line", where)


# -- verifying --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attested:
    """What a chain header's attestation document vouches for: the boot's identity key, and where
    and when that enclave ran."""

    identity: Ed25519PublicKey
    raw_key: bytes  # the identity key, raw (32 bytes)
    module_id: str
    timestamp: dt.datetime


class _Chain:
    """What the verifier knows of one chain while reading it."""

    def __init__(self, boot_id: bytes, attested: _Attested) -> None:
        self.boot_id, self.attested, self.identity = boot_id, attested, attested.identity
        self.hex = boot_id.hex()
        self.seq = 0  # the last sequence number the log accounts for (read or skipped as a gap)
        self.head = genesis(boot_id)  # hash at ``seq``
        self.run: list[tuple[int, str, str]] = []  # receipts not yet covered by a checkpoint
        self.run_heads: dict[int, str] = {}
        self.first_receipt: int | None = None
        self.covered = 0  # receipts a checkpoint vouches for

    def info(self) -> ChainInfo:
        attested = self.attested
        return ChainInfo(self.hex, attested.module_id, attested.timestamp, attested.raw_key.hex(), self.covered, self.first_receipt, self.seq)


class _Verifier:
    def __init__(self, *, roots: Sequence[Any] | None, expected_pcrs: dict[int, bytes] | None, allow_debug: bool) -> None:
        self.roots, self.expected_pcrs, self.allow_debug = roots, expected_pcrs, allow_debug
        self.report = AuditReport()
        self.chains: dict[str, _Chain] = {}
        self.chain: _Chain | None = None

    def feed(self, number: int, raw: bytes) -> None:
        where = f"line {number}"
        record = _parse(raw, where)
        if "chain" in record:
            self._end_chain()
            self._open_chain(_map(record["chain"], "the chain header", where), where)
            return
        chain = self.chain
        if chain is None:
            raise AuditError(f"{where}: a record before any chain header")
        if "checkpoint" in record:
            self._checkpoint(chain, _map(record["checkpoint"], "the checkpoint", where), where)
        elif "start" in record:
            start = _map(record["start"], "the start", where)
            if start.get("boot_id") != chain.hex:
                raise AuditError(f"{where}: a start of another chain")
            self._start(chain, start, where)
        else:
            self._receipt(chain, record, raw, where)

    # -- the four kinds of line --
    def _open_chain(self, header: dict[str, Any], where: str) -> None:
        boot_id = _boot_id(header.get("boot_id"), where)
        if header.get("genesis") != genesis(boot_id):
            raise AuditError(f"{where}: the chain's genesis does not match its boot id")
        if boot_id.hex() in self.chains:
            raise AuditError(f"{where}: a second header for chain {boot_id.hex()[:16]}")
        attested = self._attested(header.get("attestation"), where)
        self.chain = self.chains[boot_id.hex()] = _Chain(boot_id, attested)
        self.report.chains += 1
        # A header without a start (an older host) starts at seq 1 from the genesis: derived, so signed.
        # An unsigned claim such as "missing_before" explains nothing: the gap is reported.
        if header.get("start") is not None:
            self._start(self.chain, _map(header["start"], "the chain's start", where), where)

    def _start(self, chain: _Chain, start: dict[str, Any], where: str) -> None:
        seq, prev, fetched_through = _signed_start(chain, start, where)
        if seq == 1 and prev != genesis(chain.boot_id):
            raise AuditError(f"{where}: a start at seq 1 must name the genesis hash")
        if seq <= chain.seq + 1:
            return  # nothing was dropped since what the log already holds
        first = chain.seq + 1
        if fetched_through is not None and fetched_through >= first:
            # A fetch had returned these before the buffer dropped them: not the enclave's loss.
            fetched_last = min(fetched_through, seq - 1)
            self._gap(chain, first, fetched_last, FETCHED_THEN_DROPPED)
            first = fetched_last + 1
        if first < seq:
            self._gap(chain, first, seq - 1, DROPPED if fetched_through is not None else DROPPED_UNATTRIBUTED)
        chain.seq, chain.head = seq - 1, prev  # signed: the chain goes on from here

    def _checkpoint(self, chain: _Chain, checkpoint: dict[str, Any], where: str) -> None:
        if checkpoint.get("boot_id") != chain.hex:
            raise AuditError(f"{where}: checkpoint of another chain")
        at = _seq(checkpoint.get("seq"), "the checkpoint's seq", where, minimum=0)
        claimed = _hash(checkpoint.get("head"), "the checkpoint's head", where)
        signature = _signature(checkpoint.get("signature"), where)
        known = chain.run_heads.get(at, chain.head if at == chain.seq else None)
        if known is not None and known != claimed:
            raise AuditError(f"{where}: the checkpoint's head does not match the receipts up to seq {at} (a receipt was edited)")
        _check_signature(chain.identity, signature, checkpoint_message(chain.boot_id, at, claimed), "checkpoint", where)
        self.report.checkpoints += 1
        if at > chain.seq:  # it covers receipts the log does not hold: they were removed
            self._gap(chain, chain.seq + 1, at, REMOVED)
            chain.seq, chain.head = at, claimed  # signed: the chain goes on from here
        if at == chain.seq:
            self._cover(chain)

    def _receipt(self, chain: _Chain, record: dict[str, Any], raw: bytes, where: str) -> None:
        if set(record) != set(RECEIPT_FIELDS):
            raise AuditError(f"{where}: not a receipt (its fields are not the receipt fields)")
        try:
            canonical = canonical_line(record) == raw.strip()
        except UnicodeEncodeError:  # a lone surrogate, written as an escape
            canonical = False
        if not canonical:
            raise AuditError(f"{where}: the receipt is not in canonical form (it was edited)")
        seq, prev = _seq(record["seq"], "seq", where), _hash(record["prev"], "prev", where)
        decision, rule = record["decision"], record["rule"]
        if decision not in DECISIONS or type(rule) is not str:
            raise AuditError(f"{where}: malformed receipt (decision or rule)")
        if seq <= chain.seq:
            raise AuditError(f"{where}: receipt seq {seq} where {chain.seq + 1} was expected (receipts were reordered or repeated)")
        if seq > chain.seq + 1:
            self._gap(chain, chain.seq + 1, seq - 1, REMOVED)
        elif prev != chain.head:
            raise AuditError(f"{where}: receipt seq {seq} does not follow seq {chain.seq} (a receipt was edited or inserted)")
        chain.seq, chain.head = seq, _line_hash(raw.strip())
        chain.run.append((seq, decision, rule))
        chain.run_heads[seq] = chain.head
        if chain.first_receipt is None:
            chain.first_receipt = seq

    # -- gaps and coverage --
    def _gap(self, chain: _Chain, first: int, last: int, cause: str) -> None:
        if chain.run:  # receipts before a gap that no checkpoint covered can never be verified
            self.report.gaps.append(Gap(chain.hex, chain.run[0][0], chain.run[-1][0], UNVERIFIABLE))
            chain.run, chain.run_heads = [], {}
        self.report.gaps.append(Gap(chain.hex, first, last, cause))

    def _cover(self, chain: _Chain) -> None:
        report = self.report
        for _, decision, rule in chain.run:
            report.receipts += 1
            setattr(report, decision, getattr(report, decision) + 1)  # one of DECISIONS: a count of the report
            if decision == "refused":
                report.refusals_by_rule[rule] = report.refusals_by_rule.get(rule, 0) + 1
        chain.covered += len(chain.run)
        chain.run, chain.run_heads = [], {}

    def _end_chain(self) -> None:
        chain = self.chain
        if chain is not None and chain.run:
            self.report.gaps.append(Gap(chain.hex, chain.run[0][0], chain.run[-1][0], UNVERIFIABLE))
            chain.run, chain.run_heads = [], {}

    def last_chain(self) -> _Chain:
        return next(reversed(self.chains.values()))

    # -- the identity key --
    def _attested(self, document_b64: Any, where: str) -> _Attested:
        if type(document_b64) is not str:
            raise AuditError(f"{where}: the chain's attestation document must be base64 text")
        try:
            roots = tuple(self.roots) if self.roots is not None else None
            pcrs = tuple(sorted(self.expected_pcrs.items())) if self.expected_pcrs is not None else None
            hash((roots, pcrs))
        except TypeError:  # unhashable options: verify without the cache
            return _verified_attestation(document_b64, self.roots, self.expected_pcrs, self.allow_debug, where)
        return _cached_attestation(document_b64, roots, pcrs, self.allow_debug, where)


def _signed_start(chain: _Chain, start: dict[str, Any], where: str) -> tuple[int, str, int | None]:
    """(seq, prev, fetched_through) of a start statement whose signature checks out. An older
    image's start names no ``fetched_through`` (None); a current enclave never signs that form."""
    seq, prev = _seq(start.get("seq"), "the start's seq", where), _hash(start.get("prev"), "the start's prev", where)
    if "fetched_through" in start:
        fetched_through: int | None = _seq(start["fetched_through"], "the start's fetched_through", where, minimum=0)
        message = start_message(chain.boot_id, seq, prev, fetched_through)  # type: ignore[arg-type]
    else:
        fetched_through, message = None, legacy_start_message(chain.boot_id, seq, prev)
    _check_signature(chain.identity, _signature(start.get("signature"), where), message, "start", where)
    return seq, prev, fetched_through


@functools.lru_cache(maxsize=32)
def _cached_attestation(document_b64: str, roots: tuple | None, pcrs: tuple | None, allow_debug: bool, where: str) -> _Attested:
    """The verification below depends on nothing but its arguments (the time is the document's own),
    so a log verified again — or many mutated copies of one, when fuzzing — need not repeat it."""
    return _verified_attestation(document_b64, roots, dict(pcrs) if pcrs is not None else None, allow_debug, where)


def _verified_attestation(document_b64: str, roots: Sequence[Any] | None, expected_pcrs: dict[int, bytes] | None, allow_debug: bool, where: str) -> _Attested:
    from .attestation import AttestationError, document_time, verify

    try:
        raw = base64.b64decode(document_b64, validate=True)
        # The log outlives the leaf certificate (three hours): verify the document as of its own time.
        document = verify(raw, roots=roots, now=document_time(raw), expected_pcrs=expected_pcrs, allow_debug=allow_debug)
    except (binascii.Error, ValueError, OverflowError, OSError, AttestationError) as exc:  # the middle two: an absurd timestamp
        raise AuditError(f"{where}: the chain's attestation document does not verify: {exc}") from None
    key = _identity_key(document.public_key)
    if key is None:
        raise AuditError(f"{where}: the attestation document carries no Ed25519 identity key")
    return _Attested(key, key.public_bytes_raw(), document.module_id, document.timestamp)


def _identity_key(public_key: Any) -> Ed25519PublicKey | None:
    """The Ed25519 key of an attestation document's ``public_key`` (DER), or None."""
    try:
        key = load_der_public_key(public_key or b"")
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, Ed25519PublicKey) else None


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


# -- comparing with the enclave ---------------------------------------------------------------------


def _compare_with_enclave(verifier: _Verifier, signer: Any) -> None:
    """Ask the enclave for a checkpoint signed over our nonce: receipts it handed out in a fetch
    that the log does not hold show as a cut tail; newer ones as not fetched yet. Only the log's
    last chain can be compared (an enclave knows nothing of its earlier boots), and only with the
    enclave that wrote it, proven by an attested session."""
    attestation = _attested_session(signer, verifier.expected_pcrs)
    nonce = os.urandom(32)
    answer = signer.audit(after=_NEWEST, limit=1, nonce=nonce)
    where = "the enclave's fresh checkpoint"
    boot_hex = _page_boot(answer)
    chain = verifier.chains.get(boot_hex)
    if chain is None:
        raise AuditError(f"the log holds no chain of the enclave's current boot {boot_hex[:16]}: fetch into it first (if the enclave restarted, the tail of the previous chain cannot be compared)")
    if chain is not verifier.last_chain():
        raise AuditError(f"the enclave's current boot {boot_hex[:16]} is not the log's last chain: a chain written after it cannot be (another enclave's chain was appended, or the log rearranged)")
    _check_same_enclave(chain, attestation)
    checkpoint = _map(answer.get("checkpoint"), "checkpoint", where)
    if "fresh_signature" not in checkpoint:
        raise AuditError("the enclave does not sign fresh checkpoints (an older enclave image); cannot compare")
    seq, head = _seq(checkpoint.get("seq"), "seq", where, minimum=0), _hash(checkpoint.get("head"), "head", where)
    fetched_through = _seq(checkpoint.get("fetched_through"), "fetched_through", where, minimum=0)
    message = fresh_checkpoint_message(chain.boot_id, seq, head, fetched_through, nonce)
    _check_signature(chain.identity, _signature(checkpoint.get("fresh_signature"), where), message, "fresh checkpoint (over our nonce)", where)
    verifier.report.enclave_module_id = attestation.module_id
    _compare_tail(verifier, chain, seq, head, fetched_through, answer.get("start"))


def _attested_session(signer: Any, expected_pcrs: dict[int, bytes] | None) -> Any:
    """The attestation of the signer's session; refused unless the session is attested for the
    image the log was verified against. A plain connection could be a decoy enclave, or no enclave."""
    attestation = getattr(signer, "attestation", None) if getattr(signer, "attested", False) else None
    if attestation is None:
        raise AuditError("compare the log only with an attested enclave: connect with Signer(address, expected_pcrs={0: PCR0}, roots=...)")
    if expected_pcrs is not None and any(attestation.pcrs.get(index) != value for index, value in expected_pcrs.items()):
        raise AuditError("the enclave compared with does not run the image the log was verified against (its PCRs differ)")
    return attestation


def _check_same_enclave(chain: _Chain, attestation: Any) -> None:
    """The attested session must be with the enclave whose identity key signed the chain — not a
    decoy of the same image that the host runs beside it."""
    key = _identity_key(attestation.public_key)
    if key is None or key.public_bytes_raw() != chain.attested.raw_key or attestation.module_id != chain.attested.module_id:
        raise AuditError(f"the attested enclave ({attestation.module_id}) is not the one that wrote the log's last chain ({chain.attested.module_id}, boot {chain.hex[:16]})")


def _compare_tail(verifier: _Verifier, chain: _Chain, seq: int, head: str, fetched_through: int, start: Any) -> None:
    report = verifier.report
    report.enclave_seq = seq
    if seq < chain.seq or (seq == chain.seq and head != chain.head):
        raise AuditError(f"the log's chain does not match the enclave's checkpoint at seq {seq}")
    if fetched_through > chain.seq:
        verifier._gap(chain, chain.seq + 1, fetched_through, CUT)
    held_from = _signed_start(chain, _map(start, "start", "the enclave's start"), "the enclave's start")[0]
    unfetched_from = max(chain.seq, fetched_through) + 1
    if held_from > unfetched_from:
        verifier._gap(chain, unfetched_from, held_from - 1, DROPPED)
        unfetched_from = held_from
    if seq >= unfetched_from:
        report.not_fetched = (unfetched_from, seq)


def verify_log(
    lines: Iterable[bytes],
    *,
    roots: Sequence[Any] | None = None,
    expected_pcrs: dict[int, bytes] | None = None,
    allow_debug: bool = False,
    any_image: bool = False,
    expect_from: int | None = None,
    expect_chains: int | None = None,
    expect_boots: Sequence[str] | None = None,
    enclave: Any = None,
) -> AuditReport:
    """Verify a log; raise :class:`AuditError` for tampering and :class:`AuditGap` listing every gap.

    ``expected_pcrs``: at least ``{0: PCR0}`` of the image that wrote the log — without it any
    image's identity key would do, so it is required unless ``any_image=True`` says so knowingly.
    ``expect_from``: the first chain is expected to start at this receipt (an older part was
    archived, or the enclave dropped receipts before they were fetched); a gap before it is
    reported in ``expected_gaps`` instead of refused. ``expect_chains``: how many chains (enclave
    boots) the log must hold; ``expect_boots``: exactly which (boot ids, or a prefix of at least 16
    hex digits, or module ids) — otherwise :class:`UnexpectedChains`. ``enclave``: an attested
    :class:`~zerocopy.Signer` of the enclave that wrote the log's last chain; the log's tail is
    compared with a fresh checkpoint signed over a nonce, so receipts fetched but cut from the file show.
    """
    _check_options(expected_pcrs, any_image, expect_from, expect_chains, expect_boots)
    verifier = _Verifier(roots=roots, expected_pcrs=expected_pcrs, allow_debug=allow_debug)
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            verifier.feed(number, raw)
    verifier._end_chain()
    if verifier.report.chains == 0:
        raise AuditError("the log holds no chain")
    if enclave is not None:
        _compare_with_enclave(verifier, enclave)
    verifier.report.boots = [chain.info() for chain in verifier.chains.values()]
    _judge_chains(verifier.report, expect_chains, expect_boots)
    return _judge_gaps(verifier, expect_from)


def _check_options(expected_pcrs: Any, any_image: bool, expect_from: Any, expect_chains: Any, expect_boots: Any) -> None:
    if not any_image and not (isinstance(expected_pcrs, Mapping) and 0 in expected_pcrs):
        raise ValueError("expected_pcrs={0: PCR0} is required: without it a log written by any enclave image under the root verifies (any_image=True accepts that knowingly)")
    if expect_from is not None and (type(expect_from) is not int or expect_from < 1):
        raise ValueError("expect_from must be a sequence number")
    if expect_chains is not None and (type(expect_chains) is not int or expect_chains < 1):
        raise ValueError("expect_chains must be a number of chains (at least 1)")
    if expect_boots is not None and (isinstance(expect_boots, str) or not all(isinstance(name, str) for name in expect_boots)):
        raise ValueError("expect_boots must be a list of boot ids or module ids")


def _judge_chains(report: AuditReport, expect_chains: int | None, expect_boots: Sequence[str] | None) -> None:
    """Chains are independent, so nothing inside the log shows a whole chain removed: the operator
    says which to expect, and anything else is refused."""
    boots = report.boots
    if expect_chains is not None and len(boots) != expect_chains:
        why = "whole chains (enclave boots) were removed from it" if len(boots) < expect_chains else "it holds a chain not expected (a restart you did not know of, or another enclave's chain)"
        raise UnexpectedChains(report, f"the log holds {len(boots)} chain(s) where {expect_chains} were expected: {why}; it holds " + "; ".join(str(info) for info in boots))
    if expect_boots is not None:
        missing = [name for name in expect_boots if not any(_names(name, info) for info in boots)]
        extra = [info for info in boots if not any(_names(name, info) for name in expect_boots)]
        if missing:
            raise UnexpectedChains(report, f"expected chain(s) not in the log (removed): {', '.join(missing)}")
        if extra:
            raise UnexpectedChains(report, "chain(s) in the log that were not expected (a restart you did not know of, or another enclave's chain): " + "; ".join(str(info) for info in extra))
    report.chains_confirmed = expect_chains is not None or expect_boots is not None


def _names(name: str, info: ChainInfo) -> bool:
    """Whether an operator's ``name`` (a boot id, a prefix of at least 16 hex digits, or a module id) is this chain."""
    name = name.strip().lower()
    return name == info.module_id.lower() or (len(name) >= _BOOT_PREFIX and info.boot_id.startswith(name))


def _judge_gaps(verifier: _Verifier, expect_from: int | None) -> AuditReport:
    report = verifier.report
    first_chain = next(iter(verifier.chains))
    # Everything before ``expect_from`` in the first chain is not expected to be in the log.
    expected = [gap for gap in report.gaps if expect_from is not None and gap.boot_id == first_chain and gap.last < expect_from]
    report.expected_gaps = expected
    unexpected = [gap for gap in report.gaps if gap not in expected]
    if unexpected:
        raise AuditGap(report, unexpected)
    return report
