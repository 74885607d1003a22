"""The condition keys the emulated KMS puts in a request's context, and the check that a policy tests no other.

AWS fills a request context with many global and KMS condition keys; the emulator fills only the
ones below. A policy that tests any other key would see it as absent, so a Deny that tests it
would never fire: such policies are refused (``PutKeyPolicy``) or evaluated as allowing nothing
(identity policies, stored key policies) instead. Building the keys and listing them in one place
keeps the two from drifting apart.

* ``kms:CallerAccount``, ``aws:PrincipalAccount``: the caller's account.
* ``aws:PrincipalArn``: the caller's ARN as AWS puts it there — the account root's
  (``arn:aws:iam::<account>:root``), the IAM user's, or for a role session the *role's* ARN (path
  included), not the session's; absent for a session whose role IAM no longer knows.
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-principalarn
* ``kms:EncryptionContext:<key>`` and ``kms:EncryptionContextKeys``: the request's encryption
  context, or for ``CreateGrant`` the grant's encryption-context constraints (AWS documents both).
  https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-encryption-context
* ``kms:RecipientAttestation:ImageSha384`` and ``kms:RecipientAttestation:PCR<n>``: the verified
  attestation document of a ``Recipient``.
  https://docs.aws.amazon.com/kms/latest/developerguide/conditions-nitro-enclaves.html
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "KNOWN_CONDITION_PREFIXES",
    "account_keys",
    "principal_keys",
    "attestation_keys",
    "encryption_context_keys",
    "grant_constraint_keys",
    "unknown_condition_keys",
]

#: Lower-cased prefixes of every condition key the functions below put in a request context.
KNOWN_CONDITION_PREFIXES = (
    "kms:recipientattestation:",
    "kms:encryptioncontext:",
    "kms:encryptioncontextkeys",
    "kms:calleraccount",
    "aws:principalaccount",
    "aws:principalarn",
)


def unknown_condition_keys(policy: Any) -> list[str]:
    """The condition keys ``policy`` tests that no request context of the emulator carries, sorted."""
    return sorted(key for key in policy.condition_keys if not key.startswith(KNOWN_CONDITION_PREFIXES))


def account_keys(account_id: str) -> dict[str, str]:
    return {"kms:CallerAccount": account_id, "aws:PrincipalAccount": account_id}


def principal_keys(caller_arn: str, kind: str, role_arn: str) -> dict[str, str]:
    """``aws:PrincipalArn``: the root's or user's own ARN, a session's role ARN; none if that role is unknown."""
    principal = role_arn if kind == "session" else caller_arn
    return {"aws:PrincipalArn": principal} if principal else {}


def encryption_context_keys(context: Any) -> dict[str, Any]:
    """``kms:EncryptionContext:<key>`` for every pair and ``kms:EncryptionContextKeys``; none without a context."""
    if not isinstance(context, Mapping) or not context:
        return {}
    keys: dict[str, Any] = {f"kms:EncryptionContext:{key}": str(value) for key, value in context.items()}
    keys["kms:EncryptionContextKeys"] = sorted(str(key) for key in context)
    return keys


def grant_constraint_keys(constraints: Any) -> dict[str, Any]:
    """The encryption-context condition keys of a ``CreateGrant``, read from its ``Constraints``.

    AWS evaluates ``kms:EncryptionContext:*`` on ``CreateGrant`` against the grant's
    ``EncryptionContextEquals`` or ``EncryptionContextSubset``; given both, their pairs together.
    Raises ``ValueError`` if the two give one key different values: no single value is the one
    AWS would test, and any choice could let an Allow widen or a Deny miss.
    """
    if not isinstance(constraints, Mapping):
        return {}
    merged: dict[str, Any] = {}
    for name in ("EncryptionContextEquals", "EncryptionContextSubset"):
        for key, value in (constraints.get(name) or {}).items():
            if merged.get(key, value) != value:
                raise ValueError(f"EncryptionContextEquals and EncryptionContextSubset give {key!r} different values")
            merged[key] = value
    return encryption_context_keys(merged)


def attestation_keys(pcrs: Mapping[int, bytes]) -> dict[str, str]:
    """``kms:RecipientAttestation:PCR<n>`` for every PCR and ``...:ImageSha384`` (PCR0), hex."""
    keys = {f"kms:RecipientAttestation:PCR{index}": value.hex() for index, value in pcrs.items()}
    keys["kms:RecipientAttestation:ImageSha384"] = pcrs[0].hex()
    return keys
