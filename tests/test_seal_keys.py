"""The KMS keys the enclave seals generated keys to: fixed by the operator at launch, never by the host.

``--seal-key`` is a launch option (measured into PCR0), validated before the enclave starts;
``GENERATE`` refuses any other key before it talks to KMS. ``zerocopy kms-policy`` makes the key
policies for it: ``--locked`` to create a seal key before its image exists, then the attested
policy, which denies sealing without attestation to everyone but the sealers.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import cbor2
import pytest

from enclave.__main__ import main as enclave_main
from enclave.clock import Clock
from enclave.kms import KmsSettings, SealKeyError, check_seal_key
from enclave.protocol import ControlRequest, ErrorCode, ErrorResponse, MessageType
from enclave.protocol.address import parse_address
from enclave.service import EnclaveService
from zerocopy._cli import main
from zerocopy.kms_policy import SEALING_ACTIONS, attested_key_policy, locked_key_policy

ACCOUNT = "123456789012"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
MULTI_REGION_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/mrk-1234abcd12ab34cd56ef1234567890ab"
IMAGE = bytes.fromhex("ab" * 48)


@pytest.mark.parametrize("arn", [KEY, KEY.replace("arn:aws:", "arn:aws-cn:")])
def test_a_seal_key_is_a_key_arn(arn):
    assert check_seal_key(arn, "us-east-1") == arn


@pytest.mark.parametrize(
    ("arn", "words"),
    [
        (f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/zerocopy", "aliases can be repointed"),
        ("alias/zerocopy", "not a KMS key ARN"),
        ("1234abcd-12ab-34cd-56ef-1234567890ab", "not a KMS key ARN"),
        (KEY + "\n", "not a KMS key ARN"),
        (KEY.replace("us-east-1", "eu-west-1"), "is in eu-west-1, but this enclave reaches KMS in us-east-1"),
        (MULTI_REGION_KEY, "is a multi-Region key"),  # a replica would decrypt under a policy of its own
        (f"arn:aws:kms:us-east-1:{ACCOUNT}:key/mrk-1234abcd-12ab-34cd-56ef-1234567890ab", "is a multi-Region key"),  # as moto spells it
    ],
)
def test_anything_else_is_refused(arn, words):
    with pytest.raises(SealKeyError, match=words):
        check_seal_key(arn, "us-east-1")


def test_kms_settings_refuse_a_seal_key_named_twice():
    with pytest.raises(ValueError, match="named twice"):
        KmsSettings("us-east-1", parse_address("vsock://3:8000"), seal_keys=(KEY, KEY))


def test_the_enclave_does_not_start_with_a_bad_seal_key(capsys):
    assert enclave_main(["--seal-key", "alias/zerocopy", "--nsm", "/nonexistent/nsm"]) == 2
    assert "not a KMS key ARN" in capsys.readouterr().err


class _NoKms:
    """The enclave's KMS client, for requests that must be refused before KMS is asked."""

    def __init__(self, seal_keys: tuple[str, ...]) -> None:
        self.settings = KmsSettings("us-east-1", parse_address("vsock://3:8000"), seal_keys=seal_keys)

    def session(self, credentials):
        raise AssertionError("KMS must not be asked")


CREDENTIALS = {"access_key_id": "AKIAHOST", "secret_access_key": "host-secret"}


def _generate(seal_keys: tuple[str, ...], **fields) -> ErrorResponse:
    service = EnclaveService(nsm=None, kms=_NoKms(seal_keys), clock=Clock())  # type: ignore[arg-type]
    request = ControlRequest(1, MessageType.GENERATE, {"name": "k", "scheme": "ed25519", "credentials": CREDENTIALS, **fields})
    answer = service.handle(request)
    assert isinstance(answer, ErrorResponse) and answer.code is ErrorCode.PROVISIONING_FAILED
    return answer


def test_generate_refuses_a_key_that_is_not_a_seal_key_before_asking_kms():
    host_key = KEY.replace("1234abcd-", "9999abcd-")
    answer = _generate((KEY,), kms_key_id=host_key)
    assert "launched with (--seal-key)" in answer.message and host_key in answer.message


def test_generate_refuses_without_seal_keys_before_asking_kms():
    assert "launched without --seal-key" in _generate(()).message


def test_user_data_names_every_sealing_key_also_past_1024_bytes():
    service = EnclaveService(nsm=None, kms=_NoKms(()), clock=Clock())  # type: ignore[arg-type]

    def summary_of(keys: list[SimpleNamespace]) -> dict:
        service.keyring = SimpleNamespace(keys=lambda: keys)  # type: ignore[assignment]
        user_data = service.loaded_summary()
        assert len(user_data) <= 1024
        return cbor2.loads(user_data)

    def key(index: int, sealed_by: str) -> SimpleNamespace:
        return SimpleNamespace(name=f"key-{index:03}", scheme="ed25519", policy_sha256="ab" * 32, sealed_by=sealed_by)

    two = [key(0, MULTI_REGION_KEY), key(1, KEY)]
    assert summary_of(two) == {"keys": [["key-000", "ed25519", "ab" * 32, 1], ["key-001", "ed25519", "ab" * 32, 0]], "sealed_by": [KEY, MULTI_REGION_KEY]}
    many = [key(index, (KEY, MULTI_REGION_KEY)[index % 2]) for index in range(40)]
    assert summary_of(many) == {"keys_sha256": ANY_DIGEST, "count": 40, "sealed_by": [KEY, MULTI_REGION_KEY]}
    under_many_keys = [key(index, KEY.replace("1234abcd", f"{index:08x}")) for index in range(40)]
    assert summary_of(under_many_keys) == {"keys_sha256": ANY_DIGEST, "count": 40, "sealed_by_sha256": ANY_DIGEST}


class _AnyDigest:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, bytes) and len(other) == 32


ANY_DIGEST = _AnyDigest()


# -- key policies ------------------------------------------------------------------------------


def test_the_attested_policy_denies_sealing_without_attestation_except_to_the_sealers():
    operator = f"arn:aws:iam::{ACCOUNT}:role/team/operator"
    by_default = attested_key_policy(ACCOUNT, image_sha384=IMAGE)["Statement"]
    named = attested_key_policy(ACCOUNT, image_sha384=IMAGE, sealers=[operator])["Statement"]
    nobody = attested_key_policy(ACCOUNT, image_sha384=IMAGE, sealers=[])["Statement"]
    pinned = {"kms:RecipientAttestation:ImageSha384": "ab" * 48}
    for statements, sealers in ((by_default, [f"arn:aws:iam::{ACCOUNT}:root"]), (named, [operator])):
        (sealing,) = [s for s in statements if s["Sid"] == "DenySealingUnlessAttestedImageSha384"]
        assert sealing["Effect"] == "Deny" and sealing["Action"] == SEALING_ACTIONS == ["kms:GenerateDataKey*", "kms:Encrypt"]
        assert sealing["Condition"] == {"StringNotEqualsIgnoreCase": pinned, "StringNotEquals": {"aws:PrincipalArn": sealers}}
    (sealing,) = [s for s in nobody if s["Sid"] == "DenySealingUnlessAttestedImageSha384"]
    assert sealing["Condition"] == {"StringNotEqualsIgnoreCase": pinned}  # only the attested enclave seals


@pytest.mark.parametrize(
    "sealer",
    [f"arn:aws:sts::{ACCOUNT}:assumed-role/operator/laptop", "arn:aws:iam::999999999999:role/operator", "operator", "*"],
)
def test_a_sealer_is_a_role_user_or_root_of_the_account(sealer):
    with pytest.raises(ValueError, match="sealer"):
        attested_key_policy(ACCOUNT, image_sha384=IMAGE, sealers=[sealer])


def test_the_locked_policy_denies_every_use_and_keeps_administration():
    admin, locked, no_replicas = locked_key_policy(ACCOUNT)["Statement"]
    assert admin["Effect"] == "Allow" and admin["Action"] == "kms:*"
    assert locked["Effect"] == "Deny" and "Condition" not in locked
    assert set(locked["Action"]) == {"kms:Decrypt", "kms:ReEncrypt*", "kms:CreateGrant", "kms:GenerateDataKey*", "kms:Encrypt"}
    assert no_replicas == attested_key_policy(ACCOUNT, image_sha384=IMAGE)["Statement"][-1]


def test_both_policies_deny_replicas_to_everyone_whatever_the_attestation():
    """A multi-Region replica's key policy is its own: no condition could make one safe."""
    for policy in (locked_key_policy(ACCOUNT), attested_key_policy(ACCOUNT, image_sha384=IMAGE)):
        no_replicas = policy["Statement"][-1]
        assert no_replicas["Effect"] == "Deny" and no_replicas["Principal"] == {"AWS": "*"} and "Condition" not in no_replicas
        assert set(no_replicas["Action"]) == {"kms:ReplicateKey", "kms:UpdatePrimaryRegion"}


def test_kms_policy_cli_locked_sealers_and_enclave_only(capsys):
    assert main(["kms-policy", "--locked", "--account", ACCOUNT]) == 0
    assert json.loads(capsys.readouterr().out) == locked_key_policy(ACCOUNT)
    operator = f"arn:aws:iam::{ACCOUNT}:role/operator"
    assert main(["kms-policy", "--pcr0", "ab" * 48, "--account", ACCOUNT, "--sealer", operator]) == 0
    assert json.loads(capsys.readouterr().out) == attested_key_policy(ACCOUNT, image_sha384=IMAGE, sealers=[operator])
    assert main(["kms-policy", "--pcr0", "ab" * 48, "--account", ACCOUNT, "--enclave-only"]) == 0
    assert json.loads(capsys.readouterr().out) == attested_key_policy(ACCOUNT, image_sha384=IMAGE, sealers=[])
    for conflicting in (["--locked", "--pcr0", "ab" * 48], [], ["--pcr0", "ab" * 48, "--enclave-only", "--sealer", operator]):
        with pytest.raises(SystemExit) as exited:  # a usage error: exit 2, before anything runs
            main(["kms-policy", "--account", ACCOUNT, *conflicting])
        assert exited.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].startswith("zerocopy kms-policy: error: ")
