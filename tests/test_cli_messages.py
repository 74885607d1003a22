"""Issue 11: errors that say what was wrong and what to do, and ``--json`` output scripts can parse.

The commands run in-process (``main(argv)``); those that need an enclave or KMS run against an
emulator of this module's own (it loads keys, and the session's enclave is at its key limit).
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator import Emulator
from zerocopy._cli import _write_file, main
from zerocopy.kms_policy import attested_key_policy, locked_key_policy, pinned_image

ATTESTATION = Path(__file__).parent / "data" / "attestation"
REAL_DOCUMENT = str(ATTESTATION / "nitro-2024-09-07.b64")
REAL_DOCUMENT_TIME = "1725719859545"
BINANCE_SECRET = b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
PCR0 = "ab" * 48


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


# -- errors without an enclave ---------------------------------------------------------------------
@pytest.mark.parametrize("command", [["attest", "verify", REAL_DOCUMENT], ["stethoscope"], ["audit", "verify", "log.jsonl"], ["kms-policy", "--account", "123456789012"]], ids=" ".join)
def test_a_pcr0_of_the_wrong_length_is_a_usage_error_naming_the_flag(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    error = _usage_error([*command, "--pcr0", "00" + PCR0], capsys)
    assert "argument --pcr0" in error and "96 hex digits" in error and "expected_pcrs" not in error


@pytest.mark.parametrize(("pcr0", "says"), [
    (PCR0[:-1], "96 hex digits expected, this has 95"),  # a digit lost in pasting
    (PCR0 + "a", "96 hex digits expected, this has 97"),
    (PCR0[:10] + "g" + PCR0[11:], "is not hex: 'g' at position 11"),  # a typo
])
def test_a_mistyped_pcr0_says_what_is_wrong_with_it(pcr0: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    error = _usage_error(["attest", "verify", REAL_DOCUMENT, "--pcr0", pcr0], capsys)
    assert f"zerocopy attest verify: error: argument --pcr0: {pcr0!r}" in error and says in error


def test_an_option_a_subcommand_lacks_is_reported_with_that_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    # `audit fetch` takes --log FILE; `audit verify` takes the file as its argument.
    error = _usage_error(["audit", "verify", "--log", "audit.jsonl", "--pcr0", PCR0], capsys)
    assert error.startswith("usage: zerocopy audit verify ") and "FILE" in error
    assert error.endswith("zerocopy audit verify: error: unrecognized arguments: --log\n")


@pytest.mark.parametrize("command", [
    ["provision", "{missing}"], ["policy", "check", "{missing}"], ["attest", "verify", "{missing}", "--pcr0", PCR0],
    ["audit", "verify", "{missing}", "--pcr0", PCR0], ["policy", "simulate", "--scheme", "binance-hmac", "--requests", "{missing}", "{policy}"],
], ids=lambda command: " ".join(command[:2]))
def test_a_file_that_does_not_exist_is_named_in_one_line(command: list[str], tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("ZEROCOPY_ATTESTATION_ROOT", raising=False)
    missing, policy = tmp_path / "nothere.json", tmp_path / "policy.toml"
    policy.write_text('allow = ["POST /api/v3/order"]\n')
    assert main([part.format(missing=missing, policy=policy) for part in command]) == 1
    error = capsys.readouterr().err
    assert error == f"zerocopy: error: {missing}: no such file or directory\n"


def test_seal_checks_its_policy_file_and_output_directory_before_asking_for_the_secret(tmp_path: Path, capsys, monkeypatch) -> None:
    _stdin(monkeypatch, b"")  # had it read the secret first, the error would be "no secret given"
    argv = ["seal", "--name", "k", "--scheme", "binance-hmac", "--api-key", "AK", "--kms-key", "alias/zerocopy", "--region", "us-east-1", "--kms-endpoint", "https://127.0.0.1:9"]
    assert main([*argv, "--policy", str(tmp_path / "nothere.toml")]) == 1
    assert capsys.readouterr().err == f"zerocopy: error: {tmp_path / 'nothere.toml'}: no such file or directory\n"
    assert main([*argv, "-o", str(tmp_path / "nodir" / "k.json")]) == 1
    assert capsys.readouterr().err == f"zerocopy: error: cannot write {tmp_path / 'nodir' / 'k.json'}: the directory {tmp_path / 'nodir'} does not exist\n"


def test_cannot_connect_says_what_to_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["keys", "--enclave", f"unix://{tmp_path}/vsock-16-5000.sock"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "cannot connect to the enclave" in error and "Is `zerocopy emulator up` running?" in error
    assert main(["keys", "--enclave", "tcp://127.0.0.1:9"]) == 1
    assert "listening on 127.0.0.1 port 9" in capsys.readouterr().err


def test_seal_refuses_an_exchange_key_without_its_api_key_before_calling_kms(capsys, monkeypatch) -> None:
    _stdin(monkeypatch, BINANCE_SECRET)
    # No KMS endpoint answers at port 9: the refusal comes before any call.
    argv = ["seal", "--name", "k", "--scheme", "binance-hmac", "--kms-key", "alias/zerocopy", "--region", "us-east-1", "--kms-endpoint", "https://127.0.0.1:9"]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--api-key" in error and BINANCE_SECRET.decode() not in error


@pytest.mark.parametrize("scheme", ["ed25519", "binance-ed25519", "bybit-rsa", "ecdsa-p256"])
def test_seal_refuses_a_secret_that_is_not_a_key_of_the_scheme(scheme: str, capsys, monkeypatch) -> None:
    _stdin(monkeypatch, b"not-a-key")
    argv = ["seal", "--name", "k", "--scheme", scheme, "--api-key", "AK", "--kms-key", "alias/zerocopy", "--region", "us-east-1", "--kms-endpoint", "https://127.0.0.1:9"]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "PEM private key" in error and "nothing was sealed" in error and "not-a-key" not in error


def test_pinned_image_reads_what_kms_policy_writes() -> None:
    assert pinned_image(attested_key_policy("123456789012", image_sha384=bytes.fromhex(PCR0))) == PCR0
    assert pinned_image(locked_key_policy("123456789012")) is None
    default = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"}]}
    assert pinned_image(default) is None
    # An Allow conditioned on the image pins nothing while the account's kms:* allows Decrypt anyway.
    allow_only = {"Statement": [*default["Statement"], {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": PCR0}}}]}
    assert pinned_image(allow_only) is None
    assert pinned_image({"Statement": "not a list"}) is None and pinned_image([]) is None


def test_attest_verify_without_a_pin_says_it_checked_only_the_chain(capsys) -> None:
    assert main(["attest", "verify", REAL_DOCUMENT, "--at", REAL_DOCUMENT_TIME]) == 0
    captured = capsys.readouterr()
    assert "VERIFIED" in captured.out and "only the signature and the certificate chain were checked" in captured.err and "--pcr0" in captured.err
    assert main(["attest", "verify", REAL_DOCUMENT, "--at", REAL_DOCUMENT_TIME, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checked"] == {"chain": True, "pcrs": [], "nonce": False}


def test_a_pcr_mismatch_shows_expected_and_actual(capsys) -> None:
    assert main(["attest", "verify", REAL_DOCUMENT, "--at", REAL_DOCUMENT_TIME, "--pcr0", PCR0, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["error"] == "PCRMismatch" and f"expected {PCR0}, the document has " in result["message"]
    actual = result["message"].rsplit(" ", 1)[1]
    assert len(bytes.fromhex(actual)) == 48 and actual != PCR0


def test_policy_check_json(capsys) -> None:
    policy = Path(__file__).parent / "data" / "policies" / "binance-spot.toml"
    assert main(["policy", "check", str(policy), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["valid"] is True and result["scheme"] == "binance-hmac" and len(result["sha256"]) == 64
    assert any(line.startswith("Requests that may be signed") for line in result["explanation"])


def test_an_output_file_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "bundle.json"
    with pytest.raises(TypeError):
        _write_file(str(target), "text, not bytes")  # type: ignore[arg-type]  # fails halfway, as an interrupt would
    assert list(tmp_path.iterdir()) == []
    _write_file(str(target), b"{}")
    assert target.read_bytes() == b"{}" and [path.name for path in tmp_path.iterdir()] == ["bundle.json"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# -- against an emulator -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as running:
        yield running


@pytest.fixture
def operator_env(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The shell `zerocopy emulator up` prints, as the operator (who seals) — the account root."""
    monkeypatch.setenv("ZEROCOPY_ENCLAVE", emulator.address)
    monkeypatch.setenv("ZEROCOPY_KMS_ENDPOINT", emulator.kms_endpoint_url)
    monkeypatch.setenv("ZEROCOPY_KMS_CA", str(emulator.tls_ca_path))
    monkeypatch.setenv("AWS_REGION", emulator.region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", emulator.operator_credentials["access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", emulator.operator_credentials["secret_access_key"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return emulator


def _host(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    host = emulator.credentials
    for name, field in (("AWS_ACCESS_KEY_ID", "access_key_id"), ("AWS_SECRET_ACCESS_KEY", "secret_access_key"), ("AWS_SESSION_TOKEN", "session_token")):
        monkeypatch.setenv(name, host[field])


def _seal(monkeypatch, name: str, key: str, output: Path, *extra: str) -> int:
    _stdin(monkeypatch, BINANCE_SECRET)
    return main(["seal", "--name", name, "--scheme", "binance-hmac", "--api-key", "AK", "--kms-key", key, "-o", str(output), *extra])


def test_seal_warns_when_the_key_policy_pins_no_image(operator_env: Emulator, tmp_path: Path, capsys, monkeypatch) -> None:
    unpinned = operator_env.kms.create_key()["KeyMetadata"]["Arn"]  # the default key policy: the account's IAM decides
    assert _seal(monkeypatch, "unpinned", unpinned, tmp_path / "unpinned.json", "--json") == 0
    captured = capsys.readouterr()
    assert "WARNING: the key policy of" in captured.err and "zerocopy kms-policy --pcr0" in captured.err
    summary = json.loads(captured.out)
    assert summary["pinned_pcr0"] is None and summary["pinned_pcr0s"] == [] and summary["kms_key_id"] == unpinned and summary["output"] == str(tmp_path / "unpinned.json")
    pinned = operator_env.kms.create_key(Policy=json.dumps(attested_key_policy(operator_env.account_id, image_sha384=operator_env.pcrs[0])))["KeyMetadata"]["Arn"]
    assert _seal(monkeypatch, "pinned", pinned, tmp_path / "pinned.json", "--json") == 0
    captured = capsys.readouterr()
    assert "WARNING" not in captured.err and json.loads(captured.out)["pinned_pcr0"] == operator_env.pcrs[0].hex()
    assert json.loads(captured.out)["pinned_pcr0s"] == [operator_env.pcrs[0].hex()]


def test_seal_with_the_host_roles_credentials_says_why_it_cannot_check_the_key_policy(operator_env: Emulator, tmp_path: Path, capsys, monkeypatch) -> None:
    """`zerocopy emulator up`'s shell holds the host role's credentials, which may seal under
    alias/zerocopy but not read its policy: the warning says so and how to check."""
    from emulator.account import HOST_ROLE_ARN

    sealers = [f"arn:aws:iam::{operator_env.account_id}:root", HOST_ROLE_ARN]
    policy = attested_key_policy(operator_env.account_id, image_sha384=operator_env.pcrs[0], sealers=sealers)
    key = operator_env.kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]
    _host(monkeypatch, operator_env)
    assert _seal(monkeypatch, "by-host", key, tmp_path / "by-host.json", "--json") == 0
    captured = capsys.readouterr()
    error = captured.err
    summary = json.loads(captured.out)  # unread is not "pins none": null, not []
    assert summary["pinned_pcr0"] is None and summary["pinned_pcr0s"] is None
    assert "may not call kms:GetKeyPolicy" in error and f"aws kms get-key-policy --key-id {key} --policy-name default" in error
    assert "policy: none given, so the scheme's safe default" in error and "policy sha256: default" not in error
    assert (tmp_path / "by-host.json").exists()


def test_stethoscope_pins_the_exported_pcr0_and_without_it_says_how_to_pin(operator_env: Emulator, tmp_path: Path, capsys, monkeypatch) -> None:
    """In `zerocopy emulator up`'s shell, ZEROCOPY_EXPECTED_PCR0 is set: stethoscope pins it."""
    root = tmp_path / "root.pem"
    root.write_bytes(operator_env.root_certificate)
    monkeypatch.setenv("ZEROCOPY_EXPECTED_PCR0", operator_env.pcrs[0].hex())
    assert main(["stethoscope", "--root", str(root), "--samples", "5"]) == 0
    captured = capsys.readouterr()
    assert "PCR0 not pinned" not in captured.out and "pinning the image in $ZEROCOPY_EXPECTED_PCR0" in captured.err
    monkeypatch.delenv("ZEROCOPY_EXPECTED_PCR0")
    assert main(["stethoscope", "--root", str(root), "--samples", "5"]) == 0
    assert "PCR0 not pinned: any image under the root verifies; compare PCR0 below with your image's, or pass --pcr0 (or set $ZEROCOPY_EXPECTED_PCR0)" in capsys.readouterr().out


def test_provision_keys_sign_and_audit_print_json(operator_env: Emulator, tmp_path: Path, capsys, monkeypatch) -> None:
    key = operator_env.kms.create_key(Policy=json.dumps(attested_key_policy(operator_env.account_id, image_sha384=operator_env.pcrs[0])))["KeyMetadata"]["Arn"]
    assert _seal(monkeypatch, "json-key", key, tmp_path / "b.json") == 0
    _host(monkeypatch, operator_env)
    capsys.readouterr()
    assert main(["provision", str(tmp_path / "b.json"), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result == {"bundle": str(tmp_path / "b.json"), "name": "json-key", "loaded": True, "error": None, "hint": None}
    assert main(["keys", "--json"]) == 0
    listed = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert listed["json-key"]["scheme"] == "binance-hmac" and listed["json-key"]["sealed_by"] == key and listed["json-key"]["api_key"] == "AK"
    # a raw signature on an exchange key: the error names the CLI's way to sign a request
    assert main(["sign", "--key", "json-key", "payload"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "raw_signing" in error and "--request METHOD PATH" in error
    log = tmp_path / "audit.jsonl"
    assert main(["audit", "fetch", "--log", str(log), "--json"]) == 0
    fetched = json.loads(capsys.readouterr().out)
    assert fetched["log"] == str(log) and fetched["appended"] >= 1
    root = tmp_path / "root.pem"
    root.write_bytes(operator_env.root_certificate)
    assert main(["audit", "verify", str(log), "--root", str(root), "--pcr0", operator_env.pcrs[0].hex(), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] is True and report["receipts"] == fetched["appended"] and report["refused"] >= 1
    assert report["refusals_by_rule"].get("raw_signing", 0) >= 1 and len(report["boots"]) == report["chains"] == 1


def test_generate_prints_json(operator_env: Emulator, tmp_path: Path, capsys, monkeypatch) -> None:
    _host(monkeypatch, operator_env)
    assert main(["generate", "--name", "json-generated", "--scheme", "ed25519", "-o", str(tmp_path / "g.json"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sealed_by"] == operator_env.seal_key and result["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert result["output"] == str(tmp_path / "g.json") and result["name"] == "json-generated"


def test_a_bundle_from_an_earlier_emulator_says_its_key_is_gone(operator_env: Emulator, tmp_path: Path, capsys, monkeypatch) -> None:
    with Emulator(seal_key=False) as earlier:
        policy = json.dumps(attested_key_policy(earlier.account_id, image_sha384=earlier.pcrs[0]))
        old_key = earlier.kms.create_key(Policy=policy)["KeyMetadata"]["Arn"]
        monkeypatch.setenv("ZEROCOPY_KMS_ENDPOINT", earlier.kms_endpoint_url)
        monkeypatch.setenv("ZEROCOPY_KMS_CA", str(earlier.tls_ca_path))
        assert _seal(monkeypatch, "stale", old_key, tmp_path / "stale.json") == 0
    _host(monkeypatch, operator_env)
    capsys.readouterr()
    assert main(["provision", str(tmp_path / "stale.json")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "AccessDeniedException: The ciphertext refers to a customer master key that does not exist" in error
    assert f"the KMS key it was sealed under, {old_key}, does not exist" in error and "Seal the secret again" in error
