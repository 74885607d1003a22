"""Issue 8, item 1: the host tries to recover a private key the enclave generated.

The attack as it worked: the host — its own AWS credentials (the host role's session,
``Emulator.credentials``) and a KMS key of its own with a permissive policy — asks the real enclave
to ``GENERATE`` a key sealed to *that* KMS key, then calls plain ``Decrypt`` on the bundle's data
key and opens the private key. Now the enclave seals only to the seal keys measured into its launch
configuration (``--seal-key``, part of PCR0), whose policy denies the host; ``KEYS`` and the
attestation's ``user_data`` name the sealing KMS key of every loaded key, so a key the host sealed
itself shows; and a launch with another seal key is another image.

The README's claim under test: "the private key never exists outside the enclave".
"""

from __future__ import annotations

import json
import os

import cbor2
import pytest
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.protocol.bundle import SealedBundle, associated_data
from zerocopy import Signer
from zerocopy.attestation import AttestationError, verify
from zerocopy.errors import ZeroCopyError
from zerocopy.kms_policy import attested_key_policy
from zerocopy.sealing import seal

pytestmark = pytest.mark.zerocopy


def _recover_private_key(kms, bundle_json: bytes) -> bytes | None:
    """What the host does with a bundle: plain KMS Decrypt of its data key, then AES-GCM. None if KMS refuses."""
    bundle = SealedBundle.from_json(bundle_json)
    context = bundle.encryption_context()
    try:
        data_key = kms.decrypt(CiphertextBlob=bundle.encrypted_data_key, EncryptionContext=context)["Plaintext"]
    except ClientError:
        return None
    try:
        return AESGCM(data_key).decrypt(bundle.nonce, bundle.ciphertext, associated_data(context))
    except InvalidTag:
        return None


def _hosts_own_key(emulator) -> str:
    """A KMS key "of the host's": the account's default policy, so the host role's kms:Decrypt reaches it."""
    return emulator.kms.create_key(Description="the host's own key, permissive")["KeyMetadata"]["Arn"]


def _generate(signer: Signer, emulator, name: str, **kwargs) -> bytes | None:
    """GENERATE as the host asks for it; None if the enclave refuses."""
    try:
        bundle, _ = signer.generate(name, "ed25519", credentials=emulator.credentials, **kwargs)
    except ZeroCopyError:
        return None
    return bundle


def test_the_host_cannot_recover_a_generated_private_key(zerocopy_emulator):
    host_key = _hosts_own_key(zerocopy_emulator)
    host_kms = zerocopy_emulator.host_kms()
    try:
        with zerocopy_emulator.signer() as signer:
            to_hosts_key = _generate(signer, zerocopy_emulator, "attack-generate-hosts-key", kms_key_id=host_key)
            recovered = None if to_hosts_key is None else _recover_private_key(host_kms, to_hosts_key)
            assert recovered is None, "the host recovered the private key the enclave generated"
            # The host's key is not a measured seal key: nothing was generated or sealed to it.
            assert to_hosts_key is None and "attack-generate-hosts-key" not in {info.name for info in signer.keys()}
            to_seal_key = _generate(signer, zerocopy_emulator, "attack-generate-seal-key")
        # The measured seal key's policy refuses the host's plain Decrypt, and the operator's too.
        assert to_seal_key is not None and SealedBundle.from_json(to_seal_key).kms_key_id == zerocopy_emulator.seal_key
        assert _recover_private_key(host_kms, to_seal_key) is None
        assert _recover_private_key(zerocopy_emulator.kms, to_seal_key) is None
    finally:
        host_kms.close()


def test_generate_names_only_a_measured_seal_key(zerocopy_emulator):
    """An alias, a bare key id or another key's ARN are all "not one of them", whatever KMS would say."""
    seal_key = zerocopy_emulator.seal_key
    key_id = seal_key.rsplit("/", 1)[1]
    zerocopy_emulator.kms.create_alias(AliasName="alias/attack-generate", TargetKeyId=seal_key)
    with zerocopy_emulator.signer() as signer:
        for named in (key_id, "alias/attack-generate", seal_key.upper(), _hosts_own_key(zerocopy_emulator)):
            with pytest.raises(ZeroCopyError, match=r"launched with \(--seal-key\)"):
                signer.generate("attack-generate-named", "ed25519", kms_key_id=named, credentials=zerocopy_emulator.credentials)
        bundle, _ = signer.generate("attack-generate-named", "ed25519", kms_key_id=seal_key, credentials=zerocopy_emulator.credentials)
    assert SealedBundle.from_json(bundle).kms_key_id == seal_key


def test_the_host_cannot_seal_a_bundle_of_its_own_under_a_pinned_key(zerocopy_emulator):
    """The host role holds kms:GenerateDataKey for GENERATE; `zerocopy kms-policy`'s policy lets it
    work only with the enclave's attestation — on the emulator's seal key and on any key so pinned."""
    pinned = zerocopy_emulator.kms.create_key(Policy=json.dumps(attested_key_policy(zerocopy_emulator.account_id, image_sha384=zerocopy_emulator.pcrs[0])))
    context = {"zerocopy:format": "1", "zerocopy:name": "host-made"}
    host_kms = zerocopy_emulator.host_kms()
    try:
        _host_cannot_seal_under(host_kms, pinned["KeyMetadata"]["Arn"], context)
        _host_cannot_seal_under(host_kms, zerocopy_emulator.seal_key, context)
    finally:
        host_kms.close()


def _host_cannot_seal_under(host_kms, key: str, context: dict[str, str]) -> None:
    for call in (
        lambda: host_kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=context),
        lambda: host_kms.generate_data_key_without_plaintext(KeyId=key, KeySpec="AES_256", EncryptionContext=context),
        lambda: host_kms.encrypt(KeyId=key, Plaintext=os.urandom(32), EncryptionContext=context),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
        assert "explicit deny in a resource-based policy" in refused.value.response["Error"]["Message"]


def test_keys_and_user_data_name_the_sealing_key_of_every_loaded_key(zerocopy_emulator):
    """Provisioned (by the operator, or by the host under its own key) and generated: each names its KMS key."""
    emulator = zerocopy_emulator
    host_key = _hosts_own_key(emulator)
    host_kms = emulator.host_kms()  # the host role may GenerateDataKey under a key that lets it: its own
    try:
        by_operator = seal(emulator.kms, key_id=emulator.seal_key, name="by-operator", scheme="hmac-sha256", secret=b"operator-secret")
        by_host = seal(host_kms, key_id=host_key, name="by-host", scheme="hmac-sha256", secret=b"host-chosen-secret")
    finally:
        host_kms.close()
    with emulator.launch() as fresh, Signer(fresh.address, expected_pcrs={0: emulator.pcrs[0]}, roots=[emulator.root_certificate]) as signer:
        results = signer.provision([by_operator.to_json(), by_host.to_json()], credentials=emulator.credentials)
        assert [result.loaded for result in results] == [True, True]
        signer.generate("generated", "ed25519", credentials=emulator.credentials)
        listed = {info.name: info.sealed_by for info in signer.keys()}
        nonce = os.urandom(16)
        document = verify(signer.attest(nonce), roots=[emulator.root_certificate], nonce=nonce, expected_pcrs={0: emulator.pcrs[0]})
    expected = {"by-operator": emulator.seal_key, "by-host": host_key, "generated": emulator.seal_key}
    assert listed == expected
    summary = cbor2.loads(document.user_data)
    assert {name: summary["sealed_by"][index] for name, _, _, index in summary["keys"]} == expected


def test_changing_the_seal_key_changes_pcr0(zerocopy_emulator):
    """A launch naming the host's key is another image: the bot's Signer and the seal key's policy refuse it."""
    emulator = zerocopy_emulator
    host_key = _hosts_own_key(emulator)
    operator_bundle = seal(emulator.kms, key_id=emulator.seal_key, name="for-the-real-image", scheme="hmac-sha256", secret=b"real-image-secret")
    with emulator.launch(seal_keys=(host_key,)) as swapped:
        assert f"--seal-key {host_key}" in " ".join(swapped.measured_argv)
        assert swapped.pcrs[0] != emulator.pcrs[0] and swapped.pcrs[2] == emulator.pcrs[2]  # same code, other launch configuration
        with pytest.raises(AttestationError):
            Signer(swapped.address, expected_pcrs={0: emulator.pcrs[0]}, roots=[emulator.root_certificate])
        with Signer(swapped.address) as signer:
            (result,) = signer.provision([operator_bundle.to_json()], credentials=emulator.credentials)
        assert not result.loaded and "AccessDeniedException" in result.error
    for other in ((), (emulator.seal_key, host_key)):
        with emulator.launch(seal_keys=other) as relaunched:
            assert relaunched.pcrs[0] not in (emulator.pcrs[0], swapped.pcrs[0])


def test_a_new_seal_key_allows_nothing_until_an_image_is_pinned(zerocopy_emulator):
    """The production order: create the key locked, build the image naming it, then pin its PCR0."""
    from zerocopy.kms_policy import locked_key_policy  # new with the fix; imported here so the other tests run on old code

    locked = zerocopy_emulator.kms.create_key(Policy=json.dumps(locked_key_policy(zerocopy_emulator.account_id)))["KeyMetadata"]["Arn"]
    with zerocopy_emulator.launch(seal_keys=(locked,)) as enclave, Signer(enclave.address) as signer:
        with pytest.raises(ZeroCopyError, match="AccessDeniedException"):
            signer.generate("before-pinning", "ed25519", credentials=zerocopy_emulator.credentials)
    host_kms = zerocopy_emulator.host_kms()
    try:
        for client in (zerocopy_emulator.kms, host_kms):
            with pytest.raises(ClientError, match="AccessDeniedException"):
                client.generate_data_key(KeyId=locked, KeySpec="AES_256")
    finally:
        host_kms.close()


def test_an_attestation_document_from_attest_is_no_recipient_for_the_host(zerocopy_emulator):
    """Held: the document ATTEST returns carries the enclave's identity key, not a key KMS encrypts to."""
    host_kms = zerocopy_emulator.host_kms()
    try:
        with zerocopy_emulator.signer() as signer:
            bundle = SealedBundle.from_json(signer.generate("attack-generate-recipient", "ed25519", credentials=zerocopy_emulator.credentials)[0])
            document = signer.attest(os.urandom(16))
        recipient = {"AttestationDocument": document, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}
        with pytest.raises(ClientError) as refused:
            host_kms.decrypt(CiphertextBlob=bundle.encrypted_data_key, EncryptionContext=bundle.encryption_context(), Recipient=recipient)
        assert refused.value.response["Error"]["Code"] in {"ValidationException", "AccessDeniedException"}
    finally:
        host_kms.close()


# -- multi-Region seal keys ---------------------------------------------------------------------------

AWS_MULTI_REGION_KEY = "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"


def test_a_multi_region_seal_key_is_refused_at_launch(zerocopy_emulator, capsys):
    """A replica of a multi-Region key (another Region, same key material) decrypts what the key
    sealed, under a key policy of its own that pins no image: a seal key must be single-Region."""
    from enclave.__main__ import main as enclave_main
    from enclave.kms import check_seal_key
    from emulator.launcher import LaunchError
    from zerocopy.kms_policy import locked_key_policy

    with pytest.raises(ValueError, match="multi-Region") as refused:
        check_seal_key(AWS_MULTI_REGION_KEY, "us-east-1")
    assert type(refused.value).__name__ == "SealKeyError"
    assert enclave_main(["--seal-key", AWS_MULTI_REGION_KEY, "--nsm", "/nonexistent/nsm"]) == 2  # before the NSM is opened
    assert "is a multi-Region key (mrk-)" in capsys.readouterr().err
    policy = json.dumps(locked_key_policy(zerocopy_emulator.account_id))
    multi_region = zerocopy_emulator.kms.create_key(Policy=policy, MultiRegion=True)["KeyMetadata"]["Arn"]
    with pytest.raises(LaunchError, match="multi-Region"):
        zerocopy_emulator.launch(seal_keys=(multi_region,))


def test_pinned_and_locked_keys_cannot_be_replicated_to_a_policy_of_their_own(zerocopy_emulator):
    """``kms:ReplicateKey`` under the pinned or locked policy made a replica with a permissive
    policy of the caller's choosing (the emulated KMS evaluates the policy as AWS does): now both
    policies deny it, and ``kms:UpdatePrimaryRegion``, to everyone — the key's administrators too."""
    from zerocopy.kms_policy import locked_key_policy

    kms, account = zerocopy_emulator.kms, zerocopy_emulator.account_id
    permissive = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "kms:*", "Resource": "*"}]})  # fmt: skip
    for policy in (attested_key_policy(account, image_sha384=zerocopy_emulator.pcrs[0]), locked_key_policy(account)):
        key = kms.create_key(Policy=json.dumps(policy), MultiRegion=True)["KeyMetadata"]["Arn"]
        for call in (
            lambda: kms.replicate_key(KeyId=key, ReplicaRegion="eu-west-1", Policy=permissive),
            lambda: kms.update_primary_region(KeyId=key, PrimaryRegion="eu-west-1"),
        ):
            with pytest.raises(ClientError) as refused:
                call()
            assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
            assert "explicit deny in a resource-based policy" in refused.value.response["Error"]["Message"]
