"""Key policies that release a sealed secret only to an attested enclave image.

:func:`attested_key_policy` keeps key administration with the account and adds one Deny per
pinned measurement for ``kms:Decrypt``, ``kms:ReEncrypt*`` and ``kms:CreateGrant`` unless the
request carries a Recipient attestation document with that measurement. A negated condition on a
key that is absent is true (IAM semantics), so a plain ``Decrypt`` — say, by the host's own role —
is denied, and so is any grant that could sidestep the condition.

https://docs.aws.amazon.com/kms/latest/developerguide/conditions-nitro-enclaves.html
"""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = ["attested_key_policy", "render"]

GUARDED_ACTIONS = ["kms:Decrypt", "kms:ReEncrypt*", "kms:CreateGrant"]


def _check(value: bytes, what: str) -> str:
    if not isinstance(value, bytes) or len(value) != 48:
        raise ValueError(f"{what} must be 48 bytes (SHA-384)")
    if not any(value):
        raise ValueError(f"{what} is all zeros: that is a debug-mode enclave, which anyone can run; refusing to pin it")
    return value.hex()


def attested_key_policy(account_id: str, *, image_sha384: bytes, pcrs: Mapping[int, bytes] | None = None) -> dict:
    """A key policy pinning ``image_sha384`` (PCR0) and optionally further PCRs."""
    if not (isinstance(account_id, str) and account_id.isdigit() and len(account_id) == 12):
        raise ValueError("account_id must be a 12-digit AWS account id")
    pins = {"kms:RecipientAttestation:ImageSha384": _check(image_sha384, "image_sha384 (PCR0)")}
    for index, value in sorted((pcrs or {}).items()):
        if not isinstance(index, int) or not 0 <= index < 32:
            raise ValueError(f"PCR index {index!r} must be 0..31")
        pins[f"kms:RecipientAttestation:PCR{index}"] = _check(value, f"PCR{index}")
    statements: list[dict] = [
        {
            "Sid": "KeyAdministrationByTheAccount",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ]
    for condition_key, value in pins.items():
        measurement = condition_key.rsplit(":", 1)[1]
        statements.append(
            {
                "Sid": f"DenyUnlessAttested{measurement}",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": GUARDED_ACTIONS,
                "Resource": "*",
                "Condition": {"StringNotEqualsIgnoreCase": {condition_key: value}},
            }
        )
    return {"Version": "2012-10-17", "Id": "zerocopy-attested-key", "Statement": statements}


def render(policy: dict) -> str:
    return json.dumps(policy, indent=2)
