"""Attacks on the audit log by the host that stores it and relays every answer.

The host holds the log file and sits between the verifier and the enclave. It tries to hide what
it asked for: cut the beginning of a log and explain the hole with an unsigned note, cut the tail
after a checkpoint so the log looks like an older complete one, replay an old checkpoint, make the
enclave write a receipt too large to fetch, and feed the verifier fields of the wrong type. It
restarts the enclave and deletes the earlier boot's whole chain, runs a decoy enclave of the same
image and has the verifier compare with that, pushes receipts it fetched out of the enclave's
buffer and deletes them, and signs a log with an image of its own. Each test runs the real enclave
on the emulator and asserts the attacker gets nothing: the verifier names every gap and every
chain, the bot gets its typed refusal, and only typed errors come out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import enclave as enclave_package
from enclave.protocol.audit import canonical_line
from zerocopy import PolicyRefused, Signer
from zerocopy._cli import main
from zerocopy.audit import DROPPED, FETCHED_THEN_DROPPED, AuditError, AuditGap, UnexpectedChains, fetch_into, verify_log
from zerocopy.kms_policy import attested_key_policy
from zerocopy.sealing import seal

pytestmark = pytest.mark.zerocopy

BINANCE_POLICY = 'allow = ["POST /api/v3/order"]\n[freshness]\nenabled = false\n'


# -- a real log, fetched three times from the enclave ---------------------------------------------


@pytest.fixture(scope="module")
def audited_key(zerocopy_key):
    return zerocopy_key("hmac-sha256")


@pytest.fixture(scope="module")
def three_fetches(zerocopy_signer, audited_key, tmp_path_factory):
    """A log file with three checkpoints, three receipts between each."""
    path = tmp_path_factory.mktemp("attack-audit") / "audit.jsonl"
    for round_ in range(3):
        for index in range(3):
            zerocopy_signer.sign(audited_key.name, f"order {round_}.{index}".encode())
        fetch_into(zerocopy_signer, path)
    return path.read_bytes().splitlines()


def _verify(lines, emulator, **options):
    return verify_log(lines, roots=[emulator.root_certificate], expected_pcrs={0: emulator.pcrs[0]}, **options)


def _held_from(lines):
    """Where the log's first chain starts: 1, unless the session's enclave had already dropped
    receipts nobody fetched (its buffer holds 65,536) when the file was first fetched."""
    return json.loads(lines[0])["chain"].get("start", {}).get("seq", 1)


def _as_held(lines):
    """Options telling the verifier where the log's enclave buffer started (none when at seq 1)."""
    held_from = _held_from(lines)
    return {"expect_from": held_from} if held_from > 1 else {}


def _as_held_cli(lines):
    held_from = _held_from(lines)
    return ["--expect-from", str(held_from)] if held_from > 1 else []


def _checkpoints(lines):
    return [index for index, line in enumerate(lines) if line.startswith(b'{"checkpoint"')]


def _seq(line):
    return json.loads(line)["seq"]


def _without_beginning(lines):
    """The header, then everything after the first checkpoint: the first receipts and the first
    checkpoint are gone."""
    return lines[:1] + lines[_checkpoints(lines)[0] + 1 :]


def _cli_verify(path, emulator, tmp_path, *extra):
    root = tmp_path / "root.pem"
    root.write_bytes(emulator.root_certificate)
    return main(["audit", "verify", str(path), "--root", str(root), "--pcr0", emulator.pcrs[0].hex(), *extra])


# -- item 2: the beginning --------------------------------------------------------------------------


def test_a_log_without_its_beginning_is_refused_even_with_an_unsigned_missing_before(three_fetches, zerocopy_emulator, tmp_path, capsys):
    """The attack as found: delete the first receipts and the first checkpoint, and add an
    unsigned "missing_before" to the chain header. It verified ("VERIFIED 3 receipts")."""
    lines = _without_beginning(three_fetches)
    first_left = _seq(lines[1])
    header = json.loads(lines[0])
    header["chain"]["missing_before"] = first_left
    forged = [canonical_line(header), *lines[1:]]
    held_from = _held_from(lines)
    with pytest.raises(AuditError) as refused:
        _verify(forged, zerocopy_emulator, **_as_held(lines))
    assert f"seq {held_from}..{first_left - 1} " in str(refused.value) and "removed" in str(refused.value)
    path = tmp_path / "forged.jsonl"
    path.write_bytes(b"\n".join(forged) + b"\n")
    assert _cli_verify(path, zerocopy_emulator, tmp_path, *_as_held_cli(lines)) == 1
    captured = capsys.readouterr()
    assert "VERIFIED" not in captured.out and f"seq {held_from}..{first_left - 1} " in captured.err


def test_a_start_the_enclave_did_not_sign_cannot_explain_a_cut_beginning(three_fetches, zerocopy_emulator):
    """Where a chain starts is signed: moving the header's start to the first receipt left fails."""
    lines = _without_beginning(three_fetches)
    header = json.loads(lines[0])
    first_left = json.loads(lines[1])
    header["chain"]["start"].update(seq=first_left["seq"], prev=first_left["prev"])  # keeps seq 1's signature
    with pytest.raises(AuditError, match="start is not signed by the enclave's attested identity key"):
        _verify([canonical_line(header), *lines[1:]], zerocopy_emulator, **_as_held(lines))


def test_every_gap_is_reported_not_only_the_first(three_fetches, zerocopy_emulator):
    lines = _without_beginning(three_fetches)
    last_section = _checkpoints(lines)[0] + 1
    removed = _seq(lines[last_section])  # and the first receipt after the second checkpoint
    lines = lines[:last_section] + lines[last_section + 1 :]
    held_from = _held_from(lines)
    with pytest.raises(AuditError) as refused:
        _verify(lines, zerocopy_emulator, **_as_held(lines))
    message = str(refused.value)
    assert f"seq {held_from}..{_seq(lines[1]) - 1} " in message and f"seq {removed}..{removed} " in message
    assert [(gap.first, gap.last) for gap in refused.value.gaps] == [(held_from, _seq(lines[1]) - 1), (removed, removed)]


def test_a_log_that_starts_later_verifies_only_when_told_where_it_starts(three_fetches, zerocopy_emulator, tmp_path, capsys):
    lines = _without_beginning(three_fetches)
    first_left, held_from = _seq(lines[1]), _held_from(lines)
    with pytest.raises(AuditError, match=re.escape(f"seq {held_from}..{first_left - 1} ")):
        _verify(lines, zerocopy_emulator)
    report = _verify(lines, zerocopy_emulator, expect_from=first_left)
    assert [(gap.first, gap.last) for gap in report.expected_gaps][-1] == (held_from, first_left - 1)
    assert report.receipts == 6 and report.checkpoints == 2
    with pytest.raises(AuditError, match=re.escape(f"seq {held_from}..{first_left - 1} ")):  # told a later start: still refused
        _verify(lines, zerocopy_emulator, expect_from=first_left - 1)
    path = tmp_path / "later.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert _cli_verify(path, zerocopy_emulator, tmp_path, "--expect-from", str(first_left)) == 0
    assert f"expected (--expect-from {first_left}): seq {held_from}..{first_left - 1} " in capsys.readouterr().out


# -- item 2: the tail ------------------------------------------------------------------------------


def test_a_tail_cut_after_a_checkpoint_shows_against_the_enclave(zerocopy_emulator, zerocopy_signer, audited_key, tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    zerocopy_signer.sign(audited_key.name, b"kept")
    fetch_into(zerocopy_signer, path)
    kept = path.read_bytes()
    zerocopy_signer.sign(audited_key.name, b"the host wants this forgotten")
    zerocopy_signer.sign(audited_key.name, b"and this")
    fetch_into(zerocopy_signer, path)
    last_kept = _seq(kept.splitlines()[-2])
    path.write_bytes(kept)  # cut after the first checkpoint: it looks like an older complete log
    _verify(kept.splitlines(), zerocopy_emulator, **_as_held(kept.splitlines()))  # the file alone cannot tell
    assert _cli_verify(path, zerocopy_emulator, tmp_path, *_as_held_cli(kept.splitlines()), "--enclave", zerocopy_emulator.address) == 1
    err = capsys.readouterr().err
    assert f"seq {last_kept + 1}..{last_kept + 2}" in err and "tail was cut" in err


def test_a_complete_log_matches_the_enclave_and_newer_receipts_are_only_not_fetched_yet(zerocopy_emulator, zerocopy_signer, audited_key, tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    zerocopy_signer.sign(audited_key.name, b"one")
    fetch_into(zerocopy_signer, path)
    lines = path.read_bytes().splitlines()
    assert _cli_verify(path, zerocopy_emulator, tmp_path, *_as_held_cli(lines), "--enclave", zerocopy_emulator.address) == 0
    assert "the last chain matches the fresh checkpoint of enclave" in capsys.readouterr().out
    zerocopy_signer.sign(audited_key.name, b"two")
    report = _verify(lines, zerocopy_emulator, enclave=zerocopy_signer, **_as_held(lines))
    assert report.not_fetched is not None and report.not_fetched[0] == report.not_fetched[1] == report.enclave_seq


class _ReplayingHost:
    """The host between the verifier and the enclave, answering AUDIT with an answer it kept —
    as if it could get past the attested session too (it cannot: frames are sealed), to show the
    nonce alone refuses a replay."""

    def __init__(self, kept: dict, session: object) -> None:
        self.kept = kept
        self.attested, self.attestation = True, session

    def audit(self, **_: object) -> dict:
        return self.kept


def test_a_replayed_checkpoint_cannot_hide_a_cut_tail(zerocopy_emulator, zerocopy_signer, audited_key, tmp_path):
    path = tmp_path / "audit.jsonl"
    zerocopy_signer.sign(audited_key.name, b"kept")
    fetch_into(zerocopy_signer, path)
    kept = path.read_bytes().splitlines()
    old_answer = zerocopy_signer.audit(after=2**62, limit=1, nonce=os.urandom(32))  # matched the log then
    zerocopy_signer.sign(audited_key.name, b"hidden")
    fetch_into(zerocopy_signer, path)
    with pytest.raises(AuditError, match="fresh checkpoint .over our nonce. is not signed"):
        _verify(kept, zerocopy_emulator, enclave=_ReplayingHost(old_answer, zerocopy_signer.attestation), **_as_held(kept))


# -- item 3: a refusal too large to fetch -----------------------------------------------------------


def _long_names(prefix: str, count: int) -> list[tuple[str, str]]:
    return [(f"{prefix}{index:05d}".ljust(64, "x"), "1") for index in range(count)]


def _request_digest(params, body=b""):
    """What the enclave's receipt names: SHA-256 over the parameters as the enclave received them."""
    digest = hashlib.sha256("\0".join(item for pair in params for item in pair).encode())
    digest.update(b"\0\0" + body)
    return digest.hexdigest()


def test_a_refusal_quoting_a_megabyte_reaches_the_bot_as_policy_refused(zerocopy_emulator, zerocopy_signer, zerocopy_key):
    """15,600 parameter names of 64 characters fit in a request frame; the refusal quoting them
    all did not fit in an answer frame, so the bot got ConnectionClosed instead of PolicyRefused."""
    key = zerocopy_key("binance-hmac", policy=BINANCE_POLICY)
    params = _long_names("a", 15600)
    before = zerocopy_signer.audit(after=2**62, limit=1)["checkpoint"]["seq"]
    with pytest.raises(PolicyRefused) as refused:
        zerocopy_signer.sign_request(key.name, "POST", "/api/v3/unlisted", params=params)
    assert len(str(refused.value).encode()) < 1024
    page = zerocopy_signer.audit(after=before, limit=1)  # died with ConnectionClosed, even with limit=1
    (line,) = page["receipts"]
    receipt = json.loads(line)
    assert receipt["key"] == key.name and receipt["decision"] == "refused"
    assert receipt["digest"] == _request_digest(params) and len(line) < 2048


def test_receipts_of_huge_refusals_fit_in_an_audit_fetch(zerocopy_emulator, zerocopy_signer, zerocopy_key, tmp_path):
    """The attack as found: 14,000 long names got a 952 KB refusal, kept in the receipt; two such
    receipts made every `audit fetch` die with ConnectionClosed."""
    key = zerocopy_key("binance-hmac", policy=BINANCE_POLICY)
    before = zerocopy_signer.audit(after=2**62, limit=1)["checkpoint"]["seq"]
    for prefix in ("b", "c"):
        with pytest.raises(PolicyRefused):
            zerocopy_signer.sign_request(key.name, "POST", "/api/v3/unlisted", params=_long_names(prefix, 14000))
    page = zerocopy_signer.audit(after=before)
    assert len(page["receipts"]) == 2 and all(len(line) < 2048 for line in page["receipts"])
    path = tmp_path / "audit.jsonl"
    assert fetch_into(zerocopy_signer, path) > 0
    lines = path.read_bytes().splitlines()
    _verify(lines, zerocopy_emulator, **_as_held(lines))


# -- item 7: fields of the wrong type ---------------------------------------------------------------

WRONG_TYPES = [
    None, True, 0, -1, 2**63, 2**64, -(2**63), 1.5, float("inf"), float("nan"), "", "x" * 100, "0" * 64, "A" * 88, "\ud800",
    "not hex", [], [1], {}, {"seq": 1},
]


def _fields(value, path=()):
    """Every path to a value inside a JSON line (nested objects included)."""
    yield path
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _fields(item, (*path, name))


def _replace(record, path, value):
    if not path:
        return value
    record = dict(record)
    record[path[0]] = _replace(record[path[0]], path[1:], value) if len(path) > 1 else value
    return record


@pytest.fixture(scope="module")
def small_log(three_fetches, zerocopy_emulator):
    """A real log to mutate, small however many decisions the session's enclave made before this
    module: the whole log if it is short, else its last two fetches, told where they start."""
    if len(three_fetches) <= 64:
        lines, options = three_fetches, _as_held(three_fetches)
    else:
        lines = _without_beginning(three_fetches)
        options = {"expect_from": _seq(lines[1])}
    _verify(lines, zerocopy_emulator, **options)
    return lines, options


def _only_typed_errors(lines, emulator, options):
    try:
        _verify(lines, emulator, **options)
    except AuditError:
        pass


def test_every_field_of_every_line_with_a_wrong_type_is_a_typed_error(small_log, zerocopy_emulator):
    """The attack as found: 111 of 10,000 fuzzed logs made `audit verify` raise TypeError."""
    lines, options = small_log
    logs = 0
    for index, line in enumerate(lines):
        record = json.loads(line)
        for path in _fields(record):
            for value in WRONG_TYPES:
                mutated = list(lines)
                mutated[index] = json.dumps(_replace(record, path, value), sort_keys=True, separators=(",", ":")).encode()
                _only_typed_errors(mutated, zerocopy_emulator, options)
                logs += 1
    for garbage in (b"[" * 100_000, b'{"chain":' * 50_000, b"\xff\xfe", b'{"seq":1e999}', b"NaN"):  # deep nesting, bad UTF-8
        _only_typed_errors([*lines, garbage], zerocopy_emulator, options)
        _only_typed_errors([garbage, *lines], zerocopy_emulator, options)
    assert logs >= 2000


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=70),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _record(line):
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record else None


def _get(record, path):
    for name in path:
        record = record[name]
    return record


def _mutate_field(draw, record):
    path = draw(st.sampled_from(list(_fields(record))[1:]))
    parent = _get(record, path[:-1])
    kind = draw(st.sampled_from(["replace", "drop", "add"]))
    if kind == "replace":
        return _replace(record, path, draw(json_values))
    if kind == "drop":
        return _replace(record, path[:-1], {name: value for name, value in parent.items() if name != path[-1]})
    return _replace(record, (*path[:-1], draw(st.text(max_size=10))), draw(json_values))


@st.composite
def mutated_logs(draw, lines):
    lines = list(lines)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["field", "field", "field", "line", "byte", "remove", "duplicate", "swap"]))
        record = _record(lines[index])
        if kind == "field" and record is not None:
            lines[index] = json.dumps(_mutate_field(draw, record), sort_keys=True, separators=(",", ":")).encode()
        elif kind == "line":
            lines[index] = json.dumps(draw(json_values)).encode()
        elif kind == "byte" and lines[index]:
            data = bytearray(lines[index])
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
            lines[index] = bytes(data)
        elif kind == "remove" and len(lines) > 1:
            del lines[index]
        elif kind == "duplicate":
            lines.insert(index, lines[index])
        elif kind == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
    return lines


def test_mutated_logs_raise_only_audit_errors(small_log, zerocopy_emulator):
    """Thousands of mutated copies of a real log: AuditError or a report, never anything else."""
    lines, options = small_log

    @settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutated_logs(lines))
    def check(mutated):
        _only_typed_errors(mutated, zerocopy_emulator, options)

    check()


# -- whole chains: a restart, a decoy enclave -------------------------------------------------------


@pytest.fixture(scope="module")
def pinned_kms_key(zerocopy_emulator):
    """The operator's KMS key, pinned to the image's PCR0: every enclave launched here may load it."""
    policy = attested_key_policy(zerocopy_emulator.account_id, image_sha384=zerocopy_emulator.pcrs[0])
    return zerocopy_emulator.kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]


def _attested(emulator, address):
    """What the operator (and a bot) connects with: an attested session of the pinned image."""
    return Signer(address, expected_pcrs={0: emulator.pcrs[0]}, roots=[emulator.root_certificate])


def _a_boot(emulator, enclave, kms_key, payloads, path) -> str:
    """One boot as the host runs it: load a key, have the payloads signed, fetch into ``path``.
    Returns the enclave's module id, as its attested session reports it."""
    bundle = seal(emulator.kms, key_id=kms_key, name="audited-bot", scheme="hmac-sha256", secret=os.urandom(32))
    with _attested(emulator, enclave.address) as signer:
        assert signer.provision([bundle.to_json()], credentials=emulator.credentials)[0].loaded
        for payload in payloads:
            signer.sign("audited-bot", payload)
        fetch_into(signer, path)
        return signer.attestation.module_id


def _write(path, lines):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_a_whole_earlier_chain_removed_is_refused_once_the_chains_are_confirmed(zerocopy_emulator, pinned_kms_key, tmp_path, capsys):
    """The attack as found: restart the enclave, re-provision, delete the first boot's header,
    receipts and checkpoints. The log verified ("VERIFIED 1 chain(s), 3 receipts, gaps=[]"), with
    --pcr0 and --enclave. Nothing inside the log can show it (a boot knows nothing of the ones
    before it): verify lists every chain, says it is not confirmed, and refuses once told."""
    path = tmp_path / "audit.jsonl"
    with zerocopy_emulator.launch() as enclave:
        first_boot = _a_boot(zerocopy_emulator, enclave, pinned_kms_key, [b"incriminating order %d" % i for i in range(5)], path)
        first_chain = len(path.read_bytes().splitlines())
        enclave.restart()
        second_boot = _a_boot(zerocopy_emulator, enclave, pinned_kms_key, [b"benign order %d" % i for i in range(3)], path)
        full = path.read_bytes().splitlines()
        cut = full[first_chain:]
        with _attested(zerocopy_emulator, enclave.address) as live:
            report = _verify(cut, zerocopy_emulator, enclave=live)  # the file and the enclave alone cannot tell
            assert report.receipts == 3 and not report.gaps and not report.chains_confirmed
            assert [info.module_id for info in report.boots] == [second_boot] != [first_boot]
            with pytest.raises(UnexpectedChains, match=r"holds 1 chain\(s\) where 2 were expected: whole chains .* were removed"):
                _verify(cut, zerocopy_emulator, enclave=live, expect_chains=2)
            with pytest.raises(UnexpectedChains, match=f"not in the log .removed.: {first_boot}"):
                _verify(cut, zerocopy_emulator, enclave=live, expect_boots=[first_boot, second_boot])
            honest = _verify(full, zerocopy_emulator, enclave=live, expect_boots=[first_boot, second_boot])
            assert honest.receipts == 8 and [info.receipts for info in honest.boots] == [5, 3] and honest.chains_confirmed
        cut_path = _write(tmp_path / "cut.jsonl", cut)
        assert _cli_verify(cut_path, zerocopy_emulator, tmp_path, "--enclave", enclave.address) == 0
        out = capsys.readouterr().out
        assert "NOT CONFIRMED that these 1 chain(s) are every boot" in out and f"enclave {second_boot}" in out
        assert _cli_verify(cut_path, zerocopy_emulator, tmp_path, "--enclave", enclave.address, "--chains", "2") == 1
        assert "whole chains (enclave boots) were removed" in capsys.readouterr().err
        assert _cli_verify(path, zerocopy_emulator, tmp_path, "--enclave", enclave.address, "--chains", "2") == 0
        out = capsys.readouterr().out
        assert f"chain 1: boot {json.loads(full[0])['chain']['boot_id']}: enclave {first_boot}" in out and f"chain 2: boot" in out
        assert "the chains are the ones expected (--chains 2)" in out


@pytest.fixture(scope="module")
def decoy(zerocopy_emulator, pinned_kms_key, tmp_path_factory):
    """A second enclave of the same image (same PCR0) the host runs beside the real one, with a
    chain of harmless receipts in a log of its own: (enclave, its log's lines, its module id)."""
    path = tmp_path_factory.mktemp("decoy") / "decoy.jsonl"
    with zerocopy_emulator.launch() as enclave:
        assert enclave.pcrs[0] == zerocopy_emulator.pcrs[0]
        module_id = _a_boot(zerocopy_emulator, enclave, pinned_kms_key, [b"harmless %d" % i for i in range(3)], path)
        yield enclave, path.read_bytes().splitlines(), module_id


def _real_log_with_a_cut_tail(signer, key, path):
    """The real enclave's chain as the host keeps it: fetched, then its tail cut after a checkpoint."""
    signer.sign(key.name, b"kept")
    fetch_into(signer, path)
    kept = path.read_bytes().splitlines()
    signer.sign(key.name, b"the host wants this forgotten")
    fetch_into(signer, path)
    return kept


def test_the_enclave_compared_with_is_attested_and_wrote_the_logs_last_chain(zerocopy_emulator, zerocopy_signer, audited_key, decoy, tmp_path):
    """Variant: the host puts a decoy's chain in the log and points --enclave at the decoy (which
    matched: the comparison took any chain of the log, over a plain connection), so the real
    chain's cut tail was never compared. Now only the last chain is compared, and only with the
    attested enclave that wrote it."""
    decoy_enclave, decoy_lines, _ = decoy
    real = _real_log_with_a_cut_tail(zerocopy_signer, audited_key, tmp_path / "real.jsonl")
    options = _as_held(real)
    with _attested(zerocopy_emulator, decoy_enclave.address) as at_decoy:
        with pytest.raises(AuditError, match="is not the log's last chain"):
            _verify(decoy_lines + real, zerocopy_emulator, enclave=at_decoy, **options)
    with Signer(zerocopy_emulator.address) as plain:  # the real enclave, but nothing proves it is
        with pytest.raises(AuditError, match="only with an attested enclave"):
            _verify(real, zerocopy_emulator, enclave=plain, **options)
    path = _write(tmp_path / "decoy-first.jsonl", decoy_lines + real)
    assert _cli_verify(path, zerocopy_emulator, tmp_path, *_as_held_cli(real), "--enclave", decoy_enclave.address) == 1
    with pytest.raises(AuditGap, match="tail was cut"):  # against the enclave that wrote it, the cut shows
        _verify(real, zerocopy_emulator, enclave=zerocopy_signer, **options)


def test_a_decoys_chain_appended_to_the_log_is_refused_when_the_operator_names_the_enclave(zerocopy_emulator, zerocopy_signer, audited_key, decoy, tmp_path, capsys):
    """The host appends the decoy's chain after the real one (cut) and points --enclave at the
    decoy: a restart, as far as the log can tell. The chain list names the decoy's module id, not
    the one the bots' attested sessions report; told which enclave to expect, verify refuses."""
    decoy_enclave, decoy_lines, decoy_module = decoy
    bots_enclave = zerocopy_signer.attestation.module_id  # what the bot's attested session reports
    real = _real_log_with_a_cut_tail(zerocopy_signer, audited_key, tmp_path / "real.jsonl")
    path = _write(tmp_path / "decoy-last.jsonl", real + decoy_lines)
    held = _as_held_cli(real)
    assert _cli_verify(path, zerocopy_emulator, tmp_path, *held, "--enclave", decoy_enclave.address) == 0
    out = capsys.readouterr().out
    assert f"enclave {decoy_module}" in out and f"enclave {bots_enclave}" in out and "NOT CONFIRMED" in out
    for expectation in (["--expect-boots", bots_enclave], ["--chains", "1"]):
        assert _cli_verify(path, zerocopy_emulator, tmp_path, *held, "--enclave", decoy_enclave.address, *expectation) == 1
        assert "not expected" in capsys.readouterr().err
    with pytest.raises(UnexpectedChains, match=f"not expected .*{decoy_module}"):
        _verify(real + decoy_lines, zerocopy_emulator, expect_boots=[bots_enclave], **_as_held(real))


# -- fetched, pushed out of the buffer, deleted -----------------------------------------------------


def test_receipts_fetched_then_flooded_out_and_deleted_are_not_blamed_on_the_enclaves_buffer(zerocopy_emulator, pinned_kms_key, tmp_path):
    """The host fetches receipts, deletes them (and their checkpoint) from its file, then floods
    the enclave past its 65,536-receipt buffer: the enclave's signed start said only "my buffer
    starts at S", so the deleted receipts read as dropped by a full buffer. The start now also
    signs how far fetches had reached: fetched receipts missing from the log are the host's doing."""
    path = tmp_path / "audit.jsonl"
    with zerocopy_emulator.launch() as enclave:
        _a_boot(zerocopy_emulator, enclave, pinned_kms_key, [b"incriminating order %d" % i for i in range(5)], path)
        header = path.read_bytes().splitlines()[0]
        _write(path, [header])  # receipts 1..5 and their checkpoint deleted
        with Signer(enclave.address) as host:
            for _ in range(70):  # 70,000 receipts: the oldest 4,469 leave the 65,536-receipt buffer
                host.sign_many([("audited-bot", b"flood")] * 1_000)
            fetch_into(host, path)
    lines = path.read_bytes().splitlines()
    held_from = next(json.loads(line)["start"]["seq"] for line in lines if line.startswith(b'{"start"'))
    assert held_from > 6
    with pytest.raises(AuditGap) as refused:
        _verify(lines, zerocopy_emulator)
    assert [(gap.first, gap.last, gap.cause) for gap in refused.value.gaps] == [(1, 5, FETCHED_THEN_DROPPED), (6, held_from - 1, DROPPED)]
    assert "buffer was full" not in FETCHED_THEN_DROPPED and "fetch had returned them" in str(refused.value)


# -- a log signed by an image of the host's own -----------------------------------------------------


@pytest.fixture(scope="module")
def other_image(zerocopy_emulator, tmp_path_factory):
    """An enclave running other code (the host's own image): a genuine document, another PCR0."""
    source = tmp_path_factory.mktemp("other-image") / "enclave"
    shutil.copytree(Path(enclave_package.__file__).parent, source, ignore=shutil.ignore_patterns("__pycache__"))
    with open(source / "service.py", "a") as file:
        file.write("\n# the host's own code: it signs what it likes\n")
    with zerocopy_emulator.launch(enclave_dir=source) as enclave:
        assert enclave.pcrs[0] != zerocopy_emulator.pcrs[0]
        yield enclave


def test_a_log_signed_by_another_image_verifies_only_with_pcr0_pinned(zerocopy_emulator, other_image, tmp_path, capsys):
    """`audit verify` without --pcr0 accepted a log whose chain the host's own image signed."""
    path = tmp_path / "other.jsonl"
    with Signer(other_image.address) as host:
        fetch_into(host, path)
    root = tmp_path / "root.pem"
    root.write_bytes(zerocopy_emulator.root_certificate)
    with pytest.raises(SystemExit) as exited:  # a usage error
        main(["audit", "verify", str(path), "--root", str(root)])
    assert exited.value.code == 2
    assert "pass --pcr0" in capsys.readouterr().err
    assert _cli_verify(path, zerocopy_emulator, tmp_path) == 1  # pinned to the real image: refused
    assert "PCR0 does not match" in capsys.readouterr().err
    with pytest.raises(ValueError, match="expected_pcrs"):
        verify_log(path.read_bytes().splitlines(), roots=[zerocopy_emulator.root_certificate])
    # Said out loud, it verifies, with a warning that it proves nothing about the image.
    assert main(["audit", "verify", str(path), "--root", str(root), "--any-image"]) == 0
    assert "WARNING: --any-image" in capsys.readouterr().err
