"""Key policies that release a sealed secret only to an attested enclave image.

:func:`attested_key_policy` keeps key administration with the account and adds, per pinned
measurement, two Deny statements that hold unless the request carries a Recipient attestation
document with that measurement:

* ``kms:Decrypt``, ``kms:ReEncrypt*`` and ``kms:CreateGrant``, for everyone: a plain ``Decrypt`` —
  say, by the host's own role — is denied, and so is any grant that could sidestep the condition;
* ``kms:GenerateDataKey*`` and ``kms:Encrypt`` — what makes a bundle under the key — for everyone but
  the *sealers* (``aws:PrincipalArn``; the account root by default), so the host cannot seal bundles
  of its own choosing under the key. The enclave's ``GENERATE`` asks ``GenerateDataKey`` with a
  Recipient, so the host role's ``kms:GenerateDataKey`` is usable only through the enclave.

A negated condition on a key that is absent is true (IAM semantics), so a request without an
attestation document fails the measurement condition.

Two Allow statements name principals so that they need no IAM grant of their own (same account):

* ``role`` — the parent instance's role: ``kms:Decrypt``, ``kms:GenerateDataKey`` and
  ``kms:GenerateDataKeyPair`` *only* with ``StringEqualsIgnoreCase`` on every pinned measurement,
  that is, only with the enclave's attestation document as ``Recipient``;
* ``operators`` — who seals (``zerocopy seal``): ``kms:Encrypt`` and ``kms:GenerateDataKey``
  without ``Recipient``; they are sealers, exempt from the sealing Deny, and still cannot decrypt.

(``kms:GenerateRandom`` takes no key, so no key policy governs it: only IAM does.)

Both policies also deny ``kms:ReplicateKey`` and ``kms:UpdatePrimaryRegion`` to everyone, attested
or not: a replica of a multi-Region key decrypts the same ciphertexts under a key policy of its
own, which nothing pins to the image (the enclave also refuses an ``mrk-`` seal key at launch).

:func:`locked_key_policy` is the policy to create a seal key with before the image that names it
exists (its PCR0 depends on the key's ARN): administration only, every use denied. Then measure the
image and ``PutKeyPolicy`` the attested policy.

https://docs.aws.amazon.com/kms/latest/developerguide/conditions-nitro-enclaves.html
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["attested_key_policy", "locked_key_policy", "pinned_image", "pinned_images", "render", "GUARDED_ACTIONS", "SEALING_ACTIONS", "REPLICATION_ACTIONS", "ENCLAVE_ACTIONS", "OPERATOR_ACTIONS"]

#: Denied to every caller without the pinned attestation: they release what a bundle holds.
GUARDED_ACTIONS = ["kms:Decrypt", "kms:ReEncrypt*", "kms:CreateGrant"]
#: Denied to every caller but the sealers without the pinned attestation: they make bundles.
SEALING_ACTIONS = ["kms:GenerateDataKey*", "kms:Encrypt"]
#: Denied to everyone, always: a replica's key policy is its own, so it would escape the pin.
REPLICATION_ACTIONS = ["kms:ReplicateKey", "kms:UpdatePrimaryRegion"]
#: Allowed to the host role, only with the pinned attestation (the enclave's calls through it).
ENCLAVE_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyPair"]
#: Allowed to the operators without attestation: sealing a bundle.
OPERATOR_ACTIONS = ["kms:Encrypt", "kms:GenerateDataKey"]
# aws:PrincipalArn is the role's ARN for a role session, never the session's.
_SEALER = re.compile(r"arn:aws(?:-cn|-us-gov)?:iam::([0-9]{12}):(?:root|(?:user|role)/[A-Za-z0-9_+=,.@/-]+)")


def _check(value: bytes, what: str) -> str:
    if not isinstance(value, bytes) or len(value) != 48:
        raise ValueError(f"{what} must be 48 bytes (SHA-384)")
    if not any(value):
        raise ValueError(f"{what} is all zeros: that is a debug-mode enclave, which anyone can run; refusing to pin it")
    return value.hex()


def _check_images(image_sha384: bytes | Sequence[bytes]) -> str | list[str]:
    """One image's PCR0 as a hex string; several as a list of them (in order, each once)."""
    if isinstance(image_sha384, bytes):
        return _check(image_sha384, "image_sha384 (PCR0)")
    if isinstance(image_sha384, str) or not isinstance(image_sha384, Sequence) or not image_sha384:
        raise ValueError("image_sha384 must be a PCR0 (48 bytes) or a non-empty list of them")
    images = list(dict.fromkeys(_check(value, f"image_sha384[{index}] (PCR0)") for index, value in enumerate(image_sha384)))
    return images[0] if len(images) == 1 else images


def _check_account(account_id: str) -> None:
    if not (isinstance(account_id, str) and account_id.isdigit() and len(account_id) == 12):
        raise ValueError("account_id must be a 12-digit AWS account id")


def _check_sealers(account_id: str, sealers: Iterable[str] | None, *, what: str = "sealer") -> list[str]:
    if sealers is None:
        return [f"arn:aws:iam::{account_id}:root"]
    checked = []
    for arn in sealers:
        match = _SEALER.fullmatch(arn) if isinstance(arn, str) else None
        if match is None:
            raise ValueError(f"{what} {str(arn)[:120]!r} must be the ARN of the account root, an IAM user or an IAM role (a role's, not a session's)")
        if match[1] != account_id:
            raise ValueError(f"{what} {arn!r} is not in account {account_id}")
        checked.append(arn)
    return sorted(set(checked))


def _administration(account_id: str) -> dict:
    return {
        "Sid": "KeyAdministrationByTheAccount",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }


def attested_key_policy(
    account_id: str,
    *,
    image_sha384: bytes | Sequence[bytes],
    pcrs: Mapping[int, bytes] | None = None,
    sealers: Iterable[str] | None = None,
    role: str | None = None,
    operators: Iterable[str] = (),
) -> dict:
    """A key policy pinning ``image_sha384`` (PCR0) and optionally further PCRs.

    ``image_sha384``: one PCR0, or several during an image rollover: then each condition lists them
    all, and a condition key with several values holds if the request's value is any of them (for
    the negated operator of the Deny statements: if it is none of them), so an attested enclave of
    any listed image may decrypt and every other request is denied as with one image.

    ``sealers``: ARNs of the principals that may seal bundles under the key without attestation
    (``zerocopy seal``); ``None`` means the account root, an empty list no one but the enclave.
    ``role``: the host role's ARN, allowed the enclave's calls with the attestation only.
    ``operators``: ARNs allowed to seal (Encrypt, GenerateDataKey) without attestation; sealers too.
    """
    _check_account(account_id)
    operators = _check_sealers(account_id, list(operators), what="operator")
    if sealers is None:  # the account root by default; named operators instead of it
        allowed_sealers = operators or _check_sealers(account_id, None)
    else:
        sealers = list(sealers)
        if operators and not sealers:
            raise ValueError("operators seal without attestation, so they cannot go with sealers=[] (only the enclave seals)")
        allowed_sealers = sorted(set(_check_sealers(account_id, sealers) + operators))
    host_role = _check_sealers(account_id, [role], what="role")[0] if role is not None else None
    pins: dict[str, str | list[str]] = {"kms:RecipientAttestation:ImageSha384": _check_images(image_sha384)}
    for index, value in sorted((pcrs or {}).items()):
        if not isinstance(index, int) or not 0 <= index < 32:
            raise ValueError(f"PCR index {index!r} must be 0..31")
        pins[f"kms:RecipientAttestation:PCR{index}"] = _check(value, f"PCR{index}")
    statements: list[dict] = [_administration(account_id)]
    if host_role is not None:
        attested = {"StringEqualsIgnoreCase": dict(pins)}
        statements.append(_allow("EnclaveThroughTheHostRoleWithAttestation", host_role, ENCLAVE_ACTIONS, attested))
    if operators:
        statements.append(_allow("SealingByTheOperators", operators, OPERATOR_ACTIONS, None))
    for condition_key, value in pins.items():
        measurement = condition_key.rsplit(":", 1)[1]
        unattested = {"StringNotEqualsIgnoreCase": {condition_key: value}}
        statements.append(_deny(f"DenyUnlessAttested{measurement}", GUARDED_ACTIONS, unattested))
        sealing = dict(unattested, StringNotEquals={"aws:PrincipalArn": allowed_sealers}) if allowed_sealers else unattested
        statements.append(_deny(f"DenySealingUnlessAttested{measurement}", SEALING_ACTIONS, sealing))
    statements.append(_no_replicas())
    return {"Version": "2012-10-17", "Id": "zerocopy-attested-key", "Statement": statements}


def locked_key_policy(account_id: str) -> dict:
    """Administration by the account and every use denied: a seal key before its image is measured."""
    _check_account(account_id)
    locked = _deny("DenyEveryUseUntilAnImageIsPinned", GUARDED_ACTIONS + SEALING_ACTIONS, None)
    return {"Version": "2012-10-17", "Id": "zerocopy-locked-key", "Statement": [_administration(account_id), locked, _no_replicas()]}


def _no_replicas() -> dict:
    return _deny("DenyReplicasWithPoliciesOfTheirOwn", REPLICATION_ACTIONS, None)


def _allow(sid: str, principals: str | list[str], actions: list[str], condition: dict | None) -> dict:
    statement = {"Sid": sid, "Effect": "Allow", "Principal": {"AWS": principals}, "Action": list(actions), "Resource": "*"}
    if condition is not None:
        statement["Condition"] = condition
    return statement


def _deny(sid: str, actions: list[str], condition: dict | None) -> dict:
    statement = {"Sid": sid, "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": list(actions), "Resource": "*"}
    if condition is not None:
        statement["Condition"] = condition
    return statement


_IMAGE_KEYS = ("kms:recipientattestation:imagesha384", "kms:recipientattestation:pcr0")


def pinned_image(policy: Mapping) -> str | None:
    """The PCR0 (hex) a key policy pins, or ``None`` when it pins none.

    Pinned means what :func:`attested_key_policy` writes: a statement denying ``kms:Decrypt`` to
    everyone unless the request's attestation has that ImageSha384 (or PCR0), via a negated string
    condition. An Allow conditioned on the image pins nothing while any other statement (the
    account's ``kms:*``, say) allows Decrypt without one, so only a Deny counts. A policy that lets
    several images decrypt (a rollover) pins them all: this is the first, :func:`pinned_images`
    gives each.
    """
    images = pinned_images(policy)
    return images[0] if images else None


def pinned_images(policy: Mapping) -> list[str]:
    """Every PCR0 (hex) the first pinning Deny of the policy allows (see :func:`pinned_image`);
    empty when none pins. A list that names the all-zero PCR0 of a debug enclave pins nothing."""
    statements = policy.get("Statement") if isinstance(policy, Mapping) else None
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Deny" or not _covers_decrypt(statement.get("Action")):
            continue
        if statement.get("Principal") not in ("*", {"AWS": "*"}):
            continue
        for operator, tests in (statement.get("Condition") or {}).items():
            if not (isinstance(operator, str) and operator.startswith("StringNotEquals") and isinstance(tests, Mapping)):
                continue
            for key, value in tests.items():
                values = value if isinstance(value, list) else [value]
                if isinstance(key, str) and key.lower() in _IMAGE_KEYS and values and all(isinstance(each, str) and each.strip("0") for each in values):
                    return [each.lower() for each in values]
    return []


def _covers_decrypt(action: object) -> bool:
    actions = action if isinstance(action, list) else [action]
    return any(isinstance(each, str) and each.lower() in ("*", "kms:*", "kms:decrypt") for each in actions)


def render(policy: dict) -> str:
    return json.dumps(policy, indent=2)
