"""Issue 13: upgrading the image under one key. ``zerocopy kms-policy --pcr0 OLD --pcr0 NEW`` lets an
attested enclave of either image decrypt, the emulated KMS enforces it as AWS would (a condition key
with several values holds if any matches; its negation if none does), a third image is refused, and
once the policy names only the new image the old one is refused too.

The images differ by a measured launch option (``--busy-poll-us``), as two releases would by code."""

from __future__ import annotations

import json

import pytest

from zerocopy import Signer
from zerocopy._cli import main
from zerocopy.kms_policy import pinned_images
from zerocopy.sealing import seal

pytestmark = pytest.mark.zerocopy


def _kms_policy(capsys, account: str, *images: bytes) -> str:
    """What ``zerocopy kms-policy --pcr0 … --account …`` prints, run in-process."""
    assert main(["kms-policy", *(word for image in images for word in ("--pcr0", image.hex())), "--account", account]) == 0
    return capsys.readouterr().out


def _loads(emulator, enclave, bundle) -> tuple[bool, str]:
    with Signer(enclave.address, expected_pcrs={0: enclave.pcrs[0]}, roots=[emulator.root_certificate]) as signer:
        (result,) = signer.provision([bundle.to_json()], credentials=emulator.credentials)
    return result.loaded, result.error or ""


def test_both_images_of_a_rollover_provision_a_third_does_not_and_the_old_one_not_after_it(zerocopy_emulator, capsys):
    emulator = zerocopy_emulator
    with emulator.launch(busy_poll_us=101) as old, emulator.launch(busy_poll_us=102) as new, emulator.launch(busy_poll_us=103) as other:
        assert len({old.pcrs[0], new.pcrs[0], other.pcrs[0]}) == 3
        rollover = _kms_policy(capsys, emulator.account_id, old.pcrs[0], new.pcrs[0])
        assert pinned_images(json.loads(rollover)) == [old.pcrs[0].hex(), new.pcrs[0].hex()]
        key = emulator.kms.create_key(Policy=rollover)["KeyMetadata"]["KeyId"]
        bundle = seal(emulator.kms, key_id=key, name="rollover", scheme="hmac-sha256", secret=b"rollover-test-secret", api_key="", policy=None)
        assert _loads(emulator, old, bundle) == (True, "")
        assert _loads(emulator, new, bundle) == (True, "")
        loaded, error = _loads(emulator, other, bundle)
        assert not loaded and "AccessDeniedException" in error and "explicit deny" in error
        emulator.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=_kms_policy(capsys, emulator.account_id, new.pcrs[0]))
        old.restart()  # fresh boots: each must ask KMS again
        new.restart()
        loaded, error = _loads(emulator, old, bundle)
        assert not loaded and "AccessDeniedException" in error and "explicit deny" in error
        assert _loads(emulator, new, bundle) == (True, "")


def test_seal_json_names_every_image_a_rollover_policy_pins(zerocopy_emulator, capsys, monkeypatch, tmp_path):
    """``zerocopy seal --json`` under a two-image key: ``pinned_pcr0s`` lists both, in the policy's
    order, and ``pinned_pcr0`` (kept for scripts written before rollovers) is the first."""
    import hashlib
    import io
    import sys

    emulator = zerocopy_emulator
    next_image = hashlib.sha384(b"the next release's image").digest()
    key = emulator.kms.create_key(Policy=_kms_policy(capsys, emulator.account_id, emulator.pcrs[0], next_image))["KeyMetadata"]["Arn"]
    operator = emulator.operator_credentials
    for name, value in (("ZEROCOPY_KMS_ENDPOINT", emulator.kms_endpoint_url), ("ZEROCOPY_KMS_CA", str(emulator.tls_ca_path)), ("AWS_REGION", emulator.region),
                        ("AWS_ACCESS_KEY_ID", operator["access_key_id"]), ("AWS_SECRET_ACCESS_KEY", operator["secret_access_key"])):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"rollover-test-secret")))
    output = tmp_path / "rollover.sealed.json"
    assert main(["seal", "--name", "rollover", "--scheme", "hmac-sha256", "--kms-key", key, "-o", str(output), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["pinned_pcr0s"] == [emulator.pcrs[0].hex(), next_image.hex()]
    assert summary["pinned_pcr0"] == emulator.pcrs[0].hex() and "WARNING" not in captured.err
    assert output.exists() and b"rollover-test-secret" not in output.read_bytes() and "rollover-test-secret" not in captured.out
