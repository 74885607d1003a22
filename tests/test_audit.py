"""The audit log: every decision becomes a receipt in a hash chain the host can fetch but not
rewrite; checkpoints are signed by the identity key in the enclave's attestation documents."""

from __future__ import annotations

import base64
import datetime as dt
import gc
import hashlib
import hmac
import json
import os
import tracemalloc
from typing import Any

import pytest
from attestation_builder import make_chain, sample_pcrs, timestamp_ms
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.audit import AuditLog
from enclave.protocol import Connection, ControlResponse, MessageType, Role
from enclave.protocol.audit import FIELD_LIMITS, MAX_RECEIPT_BYTES, canonical_line, clip, legacy_start_message, start_message
from zerocopy import PolicyRefused
from zerocopy.attestation import verify
from zerocopy.audit import DROPPED, DROPPED_UNATTRIBUTED, FETCHED_THEN_DROPPED, AuditError, AuditGap, fetch_into, verify_log

pytestmark = pytest.mark.zerocopy

POLICY = """
allow = ["POST /api/v3/order", "POST /api/v3/order/test", "POST /sapi/v1/margin/order"]
symbols = ["BTCUSDT"]
max_quantity = "1"
[freshness]
enabled = false
"""
ORDER = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("price", "100"), ("timestamp", "1700000000000")]


@pytest.fixture(scope="module")
def audit_log(zerocopy_emulator, zerocopy_key, zerocopy_signer, tmp_path_factory):
    """A log with signed and refused decisions, fetched twice (two checkpoints)."""
    raw = zerocopy_key("hmac-sha256")
    exchange = zerocopy_key("binance-hmac", policy=POLICY)
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    zerocopy_signer.sign(raw.name, b"first")
    zerocopy_signer.sign_request(exchange.name, "POST", "/api/v3/order", params=ORDER + [("quantity", "0.5")])
    for params in (ORDER + [("quantity", "5")], [("symbol", "ETHUSDT"), *ORDER[1:], ("quantity", "0.1")]):
        with pytest.raises(PolicyRefused):
            zerocopy_signer.sign_request(exchange.name, "POST", "/api/v3/order", params=params)
    fetch_into(zerocopy_signer, path)
    zerocopy_signer.sign(raw.name, b"second")
    fetch_into(zerocopy_signer, path)
    return path, exchange


def _pinned(emulator):
    return {"roots": [emulator.root_certificate], "expected_pcrs": {0: emulator.pcrs[0]}}


def _verify(path, emulator):
    lines = path.read_bytes().splitlines()
    return verify_log(lines, roots=[emulator.root_certificate], expected_pcrs={0: emulator.pcrs[0]}, expect_from=held_from(lines))


def held_from(lines):
    """Where the log's first chain starts: 1, unless the session's enclave had already dropped
    receipts nobody fetched (its buffer holds 65,536) when the file was first fetched."""
    return json.loads(lines[0])["chain"].get("start", {}).get("seq", 1)


def test_a_fetched_log_verifies_and_counts_the_decisions(audit_log, zerocopy_emulator):
    path, exchange = audit_log
    report = _verify(path, zerocopy_emulator)
    assert report.chains == 1 and report.checkpoints == 2
    assert report.refusals_by_rule.get("max_quantity", 0) >= 1 and report.refusals_by_rule.get("symbol", 0) >= 1
    receipts = [json.loads(line) for line in path.read_bytes().splitlines() if b'"decision"' in line]
    # The session's enclave has decided for other tests too: count this key's decisions.
    assert sorted(r["rule"] for r in receipts if r["key"] == exchange.name and r["decision"] == "refused") == ["max_quantity", "symbol"]
    signed_order = next(r for r in receipts if r["key"] == exchange.name and r["decision"] == "signed")
    assert signed_order["symbol"] == "BTCUSDT" and signed_order["quantity"] == "0.5" and signed_order["notional"] == "50.0"


def test_fetching_again_appends_only_what_is_new(audit_log, zerocopy_emulator, zerocopy_signer):
    path, _ = audit_log
    before = path.read_bytes().count(b'"decision"')
    assert fetch_into(zerocopy_signer, path) >= 0
    after = path.read_bytes().count(b'"decision"')
    assert after >= before
    seqs = [json.loads(line)["seq"] for line in path.read_bytes().splitlines() if b'"decision"' in line]
    assert seqs == sorted(set(seqs)), "no receipt is fetched twice"
    _verify(path, zerocopy_emulator)


def _lines(path):
    return path.read_bytes().splitlines()


def _receipt_indexes(lines):
    return [i for i, line in enumerate(lines) if b'"decision"' in line]


def test_a_removed_receipt_is_detected(audit_log, zerocopy_emulator):
    path, _ = audit_log
    lines = _lines(path)
    index = _receipt_indexes(lines)[1]
    with pytest.raises(AuditError, match="removed"):
        verify_log(lines[:index] + lines[index + 1 :], **_pinned(zerocopy_emulator))


def test_an_edited_receipt_is_detected(audit_log, zerocopy_emulator):
    path, _ = audit_log
    lines = _lines(path)
    index = _receipt_indexes(lines)[2]
    edited = json.loads(lines[index])
    edited["decision"] = "signed" if edited["decision"] == "refused" else "refused"
    lines[index] = json.dumps(edited, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(AuditError, match="edited|removed"):
        verify_log(lines, **_pinned(zerocopy_emulator))


def test_reformatting_a_receipt_counts_as_editing_it(audit_log, zerocopy_emulator):
    path, _ = audit_log
    lines = _lines(path)
    index = _receipt_indexes(lines)[0]
    lines[index] = json.dumps(json.loads(lines[index]), indent=1).replace("\n", " ").encode()
    with pytest.raises(AuditError, match="canonical"):
        verify_log(lines, **_pinned(zerocopy_emulator))


def test_receipts_without_their_checkpoint_are_detected(audit_log, zerocopy_emulator):
    path, _ = audit_log
    lines = _lines(path)
    last = _receipt_indexes(lines)[-1]
    with pytest.raises(AuditError, match="not covered by a checkpoint"):
        verify_log(lines[: last + 1], **_pinned(zerocopy_emulator))


def test_a_checkpoint_beyond_the_receipts_shows_receipts_were_removed(audit_log, zerocopy_emulator):
    path, _ = audit_log
    lines = _lines(path)
    last = _receipt_indexes(lines)[-1]
    with pytest.raises(AuditError, match="receipts were removed"):
        verify_log(lines[:last] + lines[last + 1 :], **_pinned(zerocopy_emulator))


def test_a_rewritten_chain_with_a_forged_checkpoint_is_detected(audit_log, zerocopy_emulator):
    """The host recomputes every hash after editing a receipt: only the signature can catch it."""
    from enclave.protocol.audit import canonical_line

    def entry_hash(receipt):  # a receipt's hash, recomputed as the host would (it includes `prev`)
        return hashlib.sha256(canonical_line(receipt)).hexdigest()

    path, _ = audit_log
    lines = _lines(path)
    head = None
    rewritten = []
    for line in lines:
        record = json.loads(line)
        if "chain" in record:
            head = record["chain"]["genesis"]
        elif "decision" in record:
            record["prev"] = head
            if record["decision"] == "refused":
                record["decision"], record["rule"], record["reason"] = "signed", "", ""
            head = entry_hash(record)
            line = canonical_line(record)
        elif "checkpoint" in record:
            record["checkpoint"]["head"] = head
            line = canonical_line(record)
        rewritten.append(line)
    with pytest.raises(AuditError, match="not signed by the enclave's attested identity key"):
        verify_log(rewritten, **_pinned(zerocopy_emulator))


def test_the_identity_key_must_come_from_a_trusted_attestation(audit_log, zerocopy_emulator):
    path, _ = audit_log
    # The default root is AWS's: the emulator's documents do not verify against it.
    with pytest.raises(AuditError, match="attestation document does not verify"):
        verify_log(_lines(path), expected_pcrs={0: zerocopy_emulator.pcrs[0]})


def test_receipts_hold_no_secret_material(audit_log, zerocopy_key, zerocopy_signer, tmp_path):
    key = zerocopy_key("hmac-sha256", secret=b"AUDIT-CANARY-0123456789")
    zerocopy_signer.sign(key.name, b"payload")
    path = tmp_path / "canary.jsonl"
    fetch_into(zerocopy_signer, path)
    text = path.read_bytes()
    assert b"AUDIT-CANARY" not in text and base64.b64encode(b"AUDIT-CANARY-0123456789") not in text
    assert hmac.new(b"AUDIT-CANARY-0123456789", b"payload", hashlib.sha256).hexdigest().encode() not in text


# -- bounded receipts and pages ----------------------------------------------------------------------

WORST = "\x01" * 2000  # past every limit, and a control character costs six bytes in JSON: the most any character costs


def _record_worst(log: AuditLog, count: int) -> None:
    for index in range(count):
        text = f"{WORST}{index}"  # distinct strings: nothing shared between receipts
        log.record(-(2**63), "k" * 300, "refused" * 9, text, text, text, symbol=text, quantity=text, notional=text, reason=text)


def test_a_receipt_never_exceeds_its_bound_whatever_the_request_held():
    log = AuditLog(Ed25519PrivateKey.generate())
    _record_worst(log, 1)
    (line,) = log.fetch()["receipts"]
    receipt = json.loads(line)
    assert len(line) <= MAX_RECEIPT_BYTES and canonical_line(receipt) == line
    assert len(json.dumps(receipt["reason"], ensure_ascii=False).encode()) - 2 <= FIELD_LIMITS["reason"] and receipt["reason"].endswith("…")


any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=400)  # surrogates included


@settings(max_examples=300, deadline=None)
@given(key=any_text, request=any_text, reason=any_text, symbol=st.none() | any_text)
def test_receipts_of_any_text_stay_canonical_and_bounded(key, request, reason, symbol):
    log = AuditLog(Ed25519PrivateKey.generate())
    log.record(1, key, "refused", "rule", request, "0" * 64, symbol=symbol, reason=reason)
    (line,) = log.fetch()["receipts"]
    assert len(line) <= MAX_RECEIPT_BYTES and canonical_line(json.loads(line)) == line


def test_an_audit_page_always_fits_in_a_frame_and_paging_returns_every_receipt():
    log = AuditLog(Ed25519PrivateKey.generate(), capacity=5000)
    _record_worst(log, 5000)
    after, seqs = 0, []
    while True:
        answer = log.fetch(after, 5000, nonce=os.urandom(32))
        Connection(Role.SERVER).send(ControlResponse(1, MessageType.AUDIT_LOG, answer))  # raises past the frame limit
        if not answer["receipts"]:
            break
        assert len(answer["receipts"]) < 5000
        seqs += [json.loads(line)["seq"] for line in answer["receipts"]]
        after = seqs[-1]
    assert seqs == list(range(1, 5001))


def test_the_audit_logs_memory_stays_under_its_stated_bound():
    """However large the requests, the log's receipts take at most ``max_bytes`` (SECURITY.md's
    worst case multiplies it out for the enclave's 65,536 receipts)."""
    gc.collect()
    tracemalloc.start()
    try:
        log = AuditLog(Ed25519PrivateKey.generate(), capacity=600)
        before = tracemalloc.get_traced_memory()[0]
        _record_worst(log, 600 - 100)  # unhashed tuples are largest while the buffer fills
        filling = tracemalloc.get_traced_memory()[0] - before
        _record_worst(log, 1500)  # then it drops the oldest
        gc.collect()
        full = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert max(filling, full) <= log.max_bytes and len(log.fetch(0, 5000)["receipts"]) > 0
    assert AuditLog(Ed25519PrivateKey.generate()).max_bytes < 90_000_000


def test_a_full_buffer_signs_where_its_receipts_now_start():
    identity = Ed25519PrivateKey.generate()
    log = AuditLog(identity, capacity=10)
    for index in range(15):
        log.record(index, "key", "signed", "", "raw", "0" * 64)
    fifteenth = log.fetch(14, 1)["receipts"][0]
    for index in range(10):
        log.record(index, "key", "signed", "", "raw", "0" * 64)
    answer = log.fetch(0, 1000)
    start = answer["start"]
    assert start["seq"] == 16 == json.loads(answer["receipts"][0])["seq"] and answer["missing_before"] == 16
    assert start["prev"] == hashlib.sha256(fifteenth).hexdigest() == json.loads(answer["receipts"][0])["prev"]
    # How far fetches had reached before this answer (seq 15), not counting the page it carries.
    assert start["fetched_through"] == 15 and answer["checkpoint"]["seq"] == 25
    identity.public_key().verify(base64.b64decode(start["signature"]), start_message(log.boot_id, 16, start["prev"], 15))


# -- an enclave's audit log in this process: dropped receipts, fresh checkpoints -----------------------


class _LocalEnclave:
    """The enclave's AuditLog in this process, attested by a chain the test controls, so a buffer
    can overflow without 65,536 requests."""

    def __init__(self, capacity: int) -> None:
        self.identity = identity = Ed25519PrivateKey.generate()
        self.log = AuditLog(identity, capacity=capacity)
        now = dt.datetime.now(dt.timezone.utc)
        self.chain = make_chain(now)
        public = identity.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        self.document = self.chain.document(public_key=public, timestamp_ms=timestamp_ms(now))
        self.pins = {"roots": [self.chain.root_cert], "expected_pcrs": {0: sample_pcrs()[0]}}
        # What an attested Signer of this enclave holds: its session's verified document.
        self.attested, self.attestation = True, verify(self.document, **self.pins, now=now)
        self.decisions = 0

    def decide(self, count: int) -> None:
        for _ in range(count):
            self.decisions += 1
            self.log.record(self.decisions, "key", "signed", "", "raw", hashlib.sha256(b"%d" % self.decisions).hexdigest())

    def attest(self, nonce: bytes) -> bytes:
        return self.document

    def audit(self, *, after: int = 0, limit: int = 1000, nonce: bytes | None = None) -> dict:
        return self.log.fetch(after, limit, nonce=nonce)


def test_receipts_the_enclave_dropped_are_a_signed_gap_refused_unless_expected(tmp_path):
    enclave = _LocalEnclave(capacity=10)
    path = tmp_path / "audit.jsonl"
    enclave.decide(25)  # nobody fetched: 1..15 left the buffer
    fetch_into(enclave, path)
    pins = enclave.pins
    with pytest.raises(AuditGap) as refused:
        verify_log(_lines(path), **pins)
    assert [(gap.first, gap.last, gap.cause) for gap in refused.value.gaps] == [(1, 15, DROPPED)]
    report = verify_log(_lines(path), **pins, expect_from=16, enclave=enclave)
    assert report.receipts == 10 and report.enclave_seq == 25 and report.not_fetched is None
    enclave.decide(30)  # 26..45 leave the buffer between two fetches
    fetch_into(enclave, path)
    assert b'{"start":' in path.read_bytes()
    with pytest.raises(AuditGap) as refused:
        verify_log(_lines(path), **pins, expect_from=16)
    assert [(gap.first, gap.last, gap.cause) for gap in refused.value.gaps] == [(26, 45, DROPPED)]


def test_receipts_fetched_before_the_buffer_dropped_them_are_not_the_buffers_loss(tmp_path):
    """The start signs how far fetches had reached: a fetched receipt missing from the log was
    removed by whoever fetched it, whatever the buffer did afterwards."""
    enclave = _LocalEnclave(capacity=10)
    path = tmp_path / "audit.jsonl"
    enclave.decide(4)
    fetch_into(enclave, path)
    _write_lines(path, _lines(path)[:1])  # the host deletes receipts 1..4 and their checkpoint
    enclave.decide(20)  # 1..14 leave the buffer; 5..14 were never fetched
    fetch_into(enclave, path)
    with pytest.raises(AuditGap) as refused:
        verify_log(_lines(path), **enclave.pins)
    assert [(gap.first, gap.last, gap.cause) for gap in refused.value.gaps] == [(1, 4, FETCHED_THEN_DROPPED), (5, 14, DROPPED)]


def test_a_start_stripped_of_fetched_through_does_not_verify_but_an_older_images_does(tmp_path):
    """Images before ``fetched_through`` signed starts without it; their logs still verify (their
    gaps as dropped, not saying by whom). A current enclave never signs that form, so stripping
    the field fails."""
    enclave = _LocalEnclave(capacity=10)
    path = tmp_path / "audit.jsonl"
    enclave.decide(25)
    fetch_into(enclave, path)
    lines = _lines(path)
    header = json.loads(lines[0])
    del header["chain"]["start"]["fetched_through"]
    with pytest.raises(AuditError, match="start is not signed"):
        verify_log([canonical_line(header), *lines[1:]], **enclave.pins, expect_from=16)
    start = header["chain"]["start"]
    older = enclave.identity.sign(legacy_start_message(enclave.log.boot_id, start["seq"], start["prev"]))
    start["signature"] = base64.b64encode(older).decode()
    with pytest.raises(AuditGap) as refused:
        verify_log([canonical_line(header), *lines[1:]], **enclave.pins)
    assert [(gap.first, gap.last, gap.cause) for gap in refused.value.gaps] == [(1, 15, DROPPED_UNATTRIBUTED)]


def _write_lines(path, lines):
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_receipts_not_covered_by_any_checkpoint_before_a_gap_are_reported_unverifiable(audit_log, zerocopy_emulator):
    path, _ = audit_log
    lines = _lines(path)
    first_checkpoint = next(index for index, line in enumerate(lines) if line.startswith(b'{"checkpoint"'))
    # Drop the receipt just before the first checkpoint: the ones before it can no longer be covered.
    lines = lines[: first_checkpoint - 1] + lines[first_checkpoint:]
    with pytest.raises(AuditGap) as refused:
        _verify_lines(lines, zerocopy_emulator)
    causes = [gap.cause for gap in refused.value.gaps]
    assert any("not covered by a checkpoint" in cause for cause in causes) and any("removed" in cause for cause in causes)


def _verify_lines(lines, emulator):
    return verify_log(lines, roots=[emulator.root_certificate], expected_pcrs={0: emulator.pcrs[0]})


def test_fetching_into_a_tampered_file_is_a_typed_error(zerocopy_signer, tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"chain":{"boot_id":["not","hex"]}}\n')
    with pytest.raises(AuditError, match="line 1"):
        fetch_into(zerocopy_signer, path)
    path.write_bytes(b"[" * 100_000 + b"\n")
    with pytest.raises(AuditError, match="not JSON"):
        fetch_into(zerocopy_signer, path)


@pytest.mark.parametrize("nonce", [b"", b"short", b"x" * 65, "text"])
def test_a_fresh_checkpoint_needs_a_nonce_of_16_to_64_bytes(zerocopy_signer, nonce):
    from zerocopy import ZeroCopyError

    with pytest.raises(ZeroCopyError, match="nonce"):
        zerocopy_signer.audit(after=2**62, limit=1, nonce=nonce)


# -- no pause: every receipt hashed as it is recorded, a full buffer a ring (issue 12) -------------------
_field = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    time_ms=st.integers(-(2**63), 2**63), seq=st.integers(1, 2**63), prev=st.binary(min_size=32, max_size=32).map(bytes.hex),
    texts=st.tuples(*[_field] * 6), optional=st.tuples(*[st.none() | _field] * 3),
)
def test_a_receipt_built_directly_is_byte_for_byte_its_canonical_line(time_ms, seq, prev, texts, optional):
    """The line is built from parts (half the cost of a dict and json.dumps) and must stay the
    bytes ``canonical_line`` gives, which the host's verifier recomputes."""
    from enclave.protocol.audit import receipt_parts

    key, decision, rule, request, digest, reason = (clip(text, 400) for text in texts)
    symbol, quantity, notional = (None if text is None else clip(text, 400) for text in optional)
    head, middle, tail = receipt_parts(time_ms, key, decision, rule, request, digest, symbol, quantity, notional, reason)
    receipt = {
        "seq": seq, "time_ms": time_ms, "key": key, "decision": decision, "rule": rule, "request": request,
        "symbol": symbol, "quantity": quantity, "notional": notional, "digest": digest, "reason": reason, "prev": prev,
    }
    assert head + prev.encode() + middle + str(seq).encode() + tail == canonical_line(receipt)


class _CountingHashlib:
    """``hashlib`` for the audit module, counting the lines it hashes."""

    def __init__(self) -> None:
        self.hashed = 0

    def sha256(self, data: bytes = b""):
        self.hashed += 1
        return hashlib.sha256(data)


def test_every_receipt_costs_one_hash_before_at_and_across_the_wrap_around(monkeypatch):
    """It hashed receipts in batches: every 256th request hashed 256 receipts, and one request
    after 65,536 unfetched receipts hashed all of them holding the lock (0.4-0.6 s); past the
    wrap-around each receipt also re-hashed the one it pushed out. Now each receipt is hashed once
    as it is recorded, and a full buffer drops the oldest for nothing more."""
    import enclave.audit

    counting = _CountingHashlib()
    monkeypatch.setattr(enclave.audit, "hashlib", counting)
    log = AuditLog(Ed25519PrivateKey.generate(), capacity=300)
    for index in range(1, 1001):
        before = counting.hashed
        log.record(index, "key", "signed", "", "raw", "0" * 64)
        assert counting.hashed - before == 1, index
    assert log.dropped == 700


def test_a_full_buffer_is_a_ring_whose_chain_verifies_across_the_wrap_around(tmp_path):
    """The stated policy (docs/protocol.md, "AUDIT"): the buffer holds the last ``capacity``
    receipts; each one past that pushes out exactly the oldest, and every fetch signs where the
    held chain now starts. A log fetched at, across and far past the wrap-around verifies with
    `zerocopy audit verify`'s code, the receipts pushed out unfetched a signed gap."""
    enclave = _LocalEnclave(capacity=40)
    path = tmp_path / "audit.jsonl"
    for decided in (39, 40, 41, 79, 80, 81, 200):  # just under, at, one past; twice; five times round
        enclave.decide(decided - enclave.decisions)
        answer = enclave.log.fetch(0, 1000)
        held = [json.loads(line) for line in answer["receipts"]]
        assert [receipt["seq"] for receipt in held] == list(range(max(1, decided - 39), decided + 1))
        assert enclave.log.dropped == max(0, decided - 40) == answer["start"]["seq"] - 1
        assert answer["start"]["prev"] == held[0]["prev"] and answer["checkpoint"]["seq"] == decided
        enclave.identity.public_key().verify(
            base64.b64decode(answer["start"]["signature"]),
            start_message(enclave.log.boot_id, answer["start"]["seq"], answer["start"]["prev"], answer["start"]["fetched_through"]),
        )
    fetch_into(enclave, path)
    report = verify_log(_lines(path), **enclave.pins, expect_from=161, enclave=enclave)
    assert report.receipts == 40 and report.enclave_seq == 200
    enclave.decide(45)  # the buffer wraps between two fetches: 201..205 pushed out unfetched
    fetch_into(enclave, path)
    with pytest.raises(AuditGap) as refused:
        verify_log(_lines(path), **enclave.pins, expect_from=161)
    assert [(gap.first, gap.last, gap.cause) for gap in refused.value.gaps] == [(201, 205, DROPPED)]


_receipt_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300) | st.sampled_from(["", "alice", 'a"b\\c', "\x01\x7f", "é" * 70])


@settings(max_examples=200, deadline=None)
@given(
    key=_receipt_text.filter(bool), request=_receipt_text, digest=st.sampled_from(["0" * 64, "ab" * 40, 'x"']),
    symbol=st.none() | _receipt_text, quantity=st.none() | st.decimals(allow_nan=False, allow_infinity=False) | _receipt_text,
    notional=st.none() | st.decimals(allow_nan=False, allow_infinity=False), time_ms=st.integers(0, 2**63 - 1),
)
def test_a_signed_receipt_by_the_fast_path_is_the_same_line(key: str, request: str, digest: str, symbol: Any, quantity: Any, notional: Any, time_ms: int) -> None:
    """``record_signed`` (the sign path's, its key and endpoint parts remembered) writes exactly the
    line ``record`` writes for the same receipt: twice each, so the remembered parts are used too."""
    log = AuditLog(Ed25519PrivateKey.generate())
    for _ in range(2):
        log.record(time_ms, key, "signed", "", request, digest, symbol=symbol, quantity=quantity, notional=notional)
        log.record_signed(time_ms, key, request, digest, symbol, quantity, notional)
    lines = [json.loads(line) for line in log.fetch(0, 10)["receipts"]]
    assert all(canonical_line(record) == line for record, line in zip(lines, log.fetch(0, 10)["receipts"]))
    for slow, fast in zip(lines[0::2], lines[1::2]):
        assert fast["seq"] == slow["seq"] + 1 and fast["prev"] != slow["prev"]
        assert {**fast, "seq": 0, "prev": ""} == {**slow, "seq": 0, "prev": ""}
    assert verify_log_chain(log)


def verify_log_chain(log: AuditLog) -> bool:
    """Each receipt names the hash of the line before it (the chain record_signed joins too)."""
    lines = log.fetch(0, 10)["receipts"]
    return all(json.loads(after)["prev"] == hashlib.sha256(before).hexdigest() for before, after in zip(lines, lines[1:]))
