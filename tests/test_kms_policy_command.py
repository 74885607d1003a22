"""``zerocopy kms-policy (--eif FILE | --pcr0 HEX …) [--role ARN] [--operator ARN]``: the statements
the issue lists. That the emulator enforces them as AWS would:
tests/test_kms_fidelity.py::test_kms_policy_role_and_operator_are_enforced_as_aws_would."""

from __future__ import annotations

import hashlib
import json

import pytest

from zerocopy._cli import main
from zerocopy.eif import write_eif

ACCOUNT = "123456789012"
HOST = f"arn:aws:iam::{ACCOUNT}:role/zerocopy-host"
OPERATOR = f"arn:aws:iam::{ACCOUNT}:role/team/zerocopy-operator"
KERNEL, CMDLINE, RAMDISK = b"kernel" * 64, b"console=ttyS0", b"ramdisk" * 64


def image_sha384() -> str:
    """PCR0 of the EIF below, from the specification's formula (not zerocopy.eif)."""
    return hashlib.sha384(bytes(48) + hashlib.sha384(KERNEL + CMDLINE + RAMDISK).digest()).hexdigest()


def policy(capsys, *argv: str) -> dict:
    assert main(["kms-policy", *argv, "--account", ACCOUNT]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def eif(tmp_path):
    path = tmp_path / "zerocopy.eif"
    path.write_bytes(write_eif(KERNEL, CMDLINE, [RAMDISK]))
    return path


def by_sid(document: dict) -> dict[str, dict]:
    return {statement["Sid"]: statement for statement in document["Statement"]}


def test_the_eif_s_pcr0_is_pinned_for_the_role_and_the_operator_seals(eif, capsys):
    statements = by_sid(policy(capsys, "--eif", str(eif), "--role", HOST, "--operator", OPERATOR, "--pcr", f"8={'ab' * 48}"))
    pins = {"kms:RecipientAttestation:ImageSha384": image_sha384(), "kms:RecipientAttestation:PCR8": "ab" * 48}
    assert statements["EnclaveThroughTheHostRoleWithAttestation"] == {
        "Sid": "EnclaveThroughTheHostRoleWithAttestation", "Effect": "Allow", "Principal": {"AWS": HOST},
        "Action": ["kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyPair"], "Resource": "*", "Condition": {"StringEqualsIgnoreCase": pins},
    }  # fmt: skip
    assert statements["SealingByTheOperators"] == {
        "Sid": "SealingByTheOperators", "Effect": "Allow", "Principal": {"AWS": [OPERATOR]}, "Action": ["kms:Encrypt", "kms:GenerateDataKey"], "Resource": "*",
    }  # fmt: skip
    for measurement, value in (("ImageSha384", image_sha384()), ("PCR8", "ab" * 48)):
        unattested = {"StringNotEqualsIgnoreCase": {f"kms:RecipientAttestation:{measurement}": value}}
        guarded = statements[f"DenyUnlessAttested{measurement}"]
        assert (guarded["Effect"], guarded["Principal"], guarded["Condition"]) == ("Deny", {"AWS": "*"}, unattested)
        assert {"kms:Decrypt", "kms:ReEncrypt*", "kms:CreateGrant"} <= set(guarded["Action"])
        sealing = statements[f"DenySealingUnlessAttested{measurement}"]
        assert sealing["Condition"] == dict(unattested, StringNotEquals={"aws:PrincipalArn": [OPERATOR]})  # the operator only, not the root
    assert statements["DenyReplicasWithPoliciesOfTheirOwn"]["Effect"] == "Deny"


def test_without_role_and_operator_the_policy_is_as_before(capsys):
    statements = by_sid(policy(capsys, "--pcr0", image_sha384()))
    assert "EnclaveThroughTheHostRoleWithAttestation" not in statements and "SealingByTheOperators" not in statements
    assert statements["DenySealingUnlessAttestedImageSha384"]["Condition"]["StringNotEquals"] == {"aws:PrincipalArn": [f"arn:aws:iam::{ACCOUNT}:root"]}


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--pcr0", "00" * 48], "debug-mode enclave"),
        (["--pcr0", "ab" * 48, "--pcr", f"1={'00' * 48}"], "PCR1 is all zeros"),
        (["--pcr0", "ab" * 48, "--role", "arn:aws:sts::123456789012:assumed-role/zerocopy-host/i-1"], "role 'arn:aws:sts"),
        (["--pcr0", "ab" * 48, "--operator", "arn:aws:iam::999999999999:role/op"], "not in account 123456789012"),
    ],
)
def test_refusals_are_one_line(argv, words, capsys):
    assert main(["kms-policy", *argv, "--account", ACCOUNT]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and words in captured.err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], "give --eif FILE or --pcr0 HEX"),
        (["--locked", "--role", HOST], "takes no --role"),
        (["--pcr0", "ab" * 48, "--enclave-only", "--operator", OPERATOR], "--enclave-only means no sealers"),
    ],
)
def test_usage_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["kms-policy", *argv, "--account", ACCOUNT])
    assert exit.value.code == 2 and words in capsys.readouterr().err


def test_a_damaged_eif_is_not_pinned(eif, capsys):
    data = bytearray(eif.read_bytes())
    data[-1] ^= 1
    eif.write_bytes(bytes(data))
    assert main(["kms-policy", "--eif", str(eif), "--account", ACCOUNT]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "CRC-32 does not match" in captured.err


def test_a_rollover_pins_every_image_given_in_each_condition(eif, capsys):
    from zerocopy.kms_policy import pinned_image, pinned_images

    old = "cd" * 48
    document = policy(capsys, "--pcr0", old, "--eif", str(eif), "--role", HOST)
    statements = by_sid(document)
    images = [old, image_sha384()]
    assert statements["EnclaveThroughTheHostRoleWithAttestation"]["Condition"] == {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": images}}
    assert statements["DenyUnlessAttestedImageSha384"]["Condition"] == {"StringNotEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": images}}
    assert statements["DenySealingUnlessAttestedImageSha384"]["Condition"]["StringNotEqualsIgnoreCase"] == {"kms:RecipientAttestation:ImageSha384": images}
    assert pinned_images(document) == images and pinned_image(document) == old
    assert policy(capsys, "--pcr0", old, "--pcr0", old.upper()) == policy(capsys, "--pcr0", old)  # the same image twice is one


def test_a_rollover_list_with_a_debug_measurement_is_refused_and_pins_nothing(capsys):
    from zerocopy.kms_policy import pinned_images

    assert main(["kms-policy", "--pcr0", "ab" * 48, "--pcr0", "00" * 48, "--account", ACCOUNT]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "debug-mode enclave" in captured.err
    deny = {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*"}
    with_debug = {"Statement": [dict(deny, Condition={"StringNotEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": ["ab" * 48, "00" * 48]}})]}
    assert pinned_images(with_debug) == []
