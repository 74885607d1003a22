"""The audit log: every decision becomes a receipt in a hash chain the host can fetch but not
rewrite; checkpoints are signed by the identity key in the enclave's attestation documents."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from zerocopy import PolicyRefused
from zerocopy.audit import AuditError, fetch_into, verify_log

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


def _verify(path, emulator):
    return verify_log(path.read_bytes().splitlines(), roots=[emulator.root_certificate], expected_pcrs={0: emulator.pcrs[0]})


def test_a_fetched_log_verifies_and_counts_the_decisions(audit_log, zerocopy_emulator):
    path, exchange = audit_log
    report = _verify(path, zerocopy_emulator)
    assert report.chains == 1 and report.checkpoints == 2
    assert report.refusals_by_rule.get("max_quantity") == 1 and report.refusals_by_rule.get("symbol") == 1
    receipts = [json.loads(line) for line in path.read_bytes().splitlines() if b'"decision"' in line]
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
        verify_log(lines[:index] + lines[index + 1 :], roots=[zerocopy_emulator.root_certificate])


def test_an_edited_receipt_is_detected(audit_log, zerocopy_emulator):
    path, _ = audit_log
    lines = _lines(path)
    index = _receipt_indexes(lines)[2]
    edited = json.loads(lines[index])
    edited["decision"] = "signed" if edited["decision"] == "refused" else "refused"
    lines[index] = json.dumps(edited, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(AuditError, match="edited|removed"):
        verify_log(lines, roots=[zerocopy_emulator.root_certificate])


def test_reformatting_a_receipt_counts_as_editing_it(audit_log, zerocopy_emulator):
    path, _ = audit_log
    lines = _lines(path)
    index = _receipt_indexes(lines)[0]
    lines[index] = json.dumps(json.loads(lines[index]), indent=1).replace("\n", " ").encode()
    with pytest.raises(AuditError, match="canonical"):
        verify_log(lines, roots=[zerocopy_emulator.root_certificate])


def test_receipts_without_their_checkpoint_are_detected(audit_log, zerocopy_emulator):
    path, _ = audit_log
    lines = _lines(path)
    last = _receipt_indexes(lines)[-1]
    with pytest.raises(AuditError, match="not covered by a checkpoint"):
        verify_log(lines[: last + 1], roots=[zerocopy_emulator.root_certificate])


def test_a_checkpoint_beyond_the_receipts_shows_receipts_were_removed(audit_log, zerocopy_emulator):
    path, _ = audit_log
    lines = _lines(path)
    last = _receipt_indexes(lines)[-1]
    with pytest.raises(AuditError, match="receipts were removed"):
        verify_log(lines[:last] + lines[last + 1 :], roots=[zerocopy_emulator.root_certificate])


def test_a_rewritten_chain_with_a_forged_checkpoint_is_detected(audit_log, zerocopy_emulator):
    """The host recomputes every hash after editing a receipt: only the signature can catch it."""
    from enclave.protocol.audit import canonical_line, entry_hash

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
        verify_log(rewritten, roots=[zerocopy_emulator.root_certificate])


def test_the_identity_key_must_come_from_a_trusted_attestation(audit_log):
    path, _ = audit_log
    # The default root is AWS's: the emulator's documents do not verify against it.
    with pytest.raises(AuditError, match="attestation document does not verify"):
        verify_log(_lines(path))


def test_receipts_hold_no_secret_material(audit_log, zerocopy_key, zerocopy_signer, tmp_path):
    key = zerocopy_key("hmac-sha256", secret=b"AUDIT-CANARY-0123456789")
    zerocopy_signer.sign(key.name, b"payload")
    path = tmp_path / "canary.jsonl"
    fetch_into(zerocopy_signer, path)
    text = path.read_bytes()
    assert b"AUDIT-CANARY" not in text and base64.b64encode(b"AUDIT-CANARY-0123456789") not in text
    assert hmac.new(b"AUDIT-CANARY-0123456789", b"payload", hashlib.sha256).hexdigest().encode() not in text
