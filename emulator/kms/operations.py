"""What each KMS operation touches, as AWS documents it: the IAM action, the key, the key state.

* Permissions: the IAM action of an operation is ``kms:<Operation>``, except ``ReEncrypt``, which
  needs ``kms:ReEncryptFrom`` on the source key and ``kms:ReEncryptTo`` on the destination key.
  Operations on a key are authorized by its key policy (and, where it delegates to the account,
  by IAM); operations on no key (``CreateKey``, ``ListKeys``, ``ListAliases``, ``GenerateRandom``,
  the custom key store calls, ...) by IAM policies alone. Alias operations also need the action
  on the alias, which only IAM policies can grant.
  https://docs.aws.amazon.com/kms/latest/developerguide/kms-api-permissions-reference.html
* Key state: cryptographic operations need an ``Enabled`` key (``DisabledException: <key ARN> is
  disabled.``, ``KMSInvalidStateException: <key ARN> is pending deletion.``); management calls
  refuse a key pending deletion; ``CancelKeyDeletion`` refuses a key that is not.
  https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html
* Key usage: e.g. ``InvalidKeyUsageException: <key ARN> key usage is SIGN_VERIFY which is not
  valid for Encrypt.`` (the wording of real KMS answers recorded by LocalStack's snapshot tests).
* Encryption algorithm: an ``EncryptionAlgorithm`` the key's spec does not support (``DescribeKey``'s
  ``EncryptionAlgorithms``) is ``InvalidKeyUsageException``, as AWS documents that exception ("The
  encryption algorithm or signing algorithm specified for the operation is incompatible with the
  type of key material in the KMS key"). The words are those real KMS uses for a MAC algorithm
  that does not fit the key (LocalStack's snapshot: "Algorithm HMAC_SHA_256 is incompatible with
  key spec HMAC_224."); AWS's words for encryption algorithms are not recorded anywhere public.
"""

from __future__ import annotations

from collections.abc import Mapping

from .exceptions import DisabledException, InvalidKeyUsageException, KmsException, KMSInvalidStateException

__all__ = [
    "IAM_ONLY",
    "RECIPIENT_OPERATIONS",
    "encryption_algorithm_error",
    "key_state_error",
    "key_usage_error",
]

#: The five operations that take ``Recipient`` (an attestation document) and answer ``CiphertextForRecipient``.
RECIPIENT_OPERATIONS = frozenset({"Decrypt", "GenerateDataKey", "GenerateDataKeyPair", "GenerateRandom", "DeriveSharedSecret"})

#: Operations authorized by IAM policies alone: they name no key (a ``KeyId`` of ``ListAliases``
#: only filters the list; ``RetireGrant`` without one names a grant token).
IAM_ONLY = frozenset(
    {
        "CreateKey",
        "ListKeys",
        "ListAliases",
        "ListRetirableGrants",
        "GenerateRandom",
        "CreateCustomKeyStore",
        "ConnectCustomKeyStore",
        "DeleteCustomKeyStore",
        "DescribeCustomKeyStores",
        "DisconnectCustomKeyStore",
        "UpdateCustomKeyStore",
    }
)

#: Operations that need the key Enabled.
_CRYPTOGRAPHIC = frozenset(
    {
        "Decrypt",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "ReEncrypt",
        "Sign",
        "Verify",
        "GenerateMac",
        "VerifyMac",
        "GetPublicKey",
        "DeriveSharedSecret",
        "Encapsulate",
        "Decapsulate",
        "CreateGrant",
        "EnableKeyRotation",
        "DisableKeyRotation",
        "RotateKeyOnDemand",
    }
)

#: Operations that refuse a key pending deletion but accept a disabled one.
_NOT_PENDING_DELETION = frozenset(
    {
        "CreateAlias",
        "UpdateAlias",
        "DisableKey",
        "EnableKey",
        "ScheduleKeyDeletion",
        "TagResource",
        "UntagResource",
        "UpdateKeyDescription",
        "ReplicateKey",
        "UpdatePrimaryRegion",
        "ImportKeyMaterial",
        "GetParametersForImport",
        "DeleteImportedKeyMaterial",
    }
)

#: The key usage each cryptographic operation needs.
_USAGE: Mapping[str, str] = {
    "Encrypt": "ENCRYPT_DECRYPT",
    "Decrypt": "ENCRYPT_DECRYPT",
    "ReEncrypt": "ENCRYPT_DECRYPT",
    "GenerateDataKey": "ENCRYPT_DECRYPT",
    "GenerateDataKeyWithoutPlaintext": "ENCRYPT_DECRYPT",
    "GenerateDataKeyPair": "ENCRYPT_DECRYPT",
    "GenerateDataKeyPairWithoutPlaintext": "ENCRYPT_DECRYPT",
    "Sign": "SIGN_VERIFY",
    "Verify": "SIGN_VERIFY",
    "GenerateMac": "GENERATE_VERIFY_MAC",
    "VerifyMac": "GENERATE_VERIFY_MAC",
    "DeriveSharedSecret": "KEY_AGREEMENT",
}


def key_state_error(operation: str, key_arn: str, state: str) -> KmsException | None:
    """AWS's answer to ``operation`` on a key in ``state``, or ``None`` if the state allows it."""
    if operation == "CancelKeyDeletion":
        return None if state == "PendingDeletion" else KMSInvalidStateException(f"{key_arn} is not pending deletion.")
    if operation in _CRYPTOGRAPHIC:
        if state == "Enabled":
            return None
        if state == "Disabled":
            return DisabledException(f"{key_arn} is disabled.")
        return KMSInvalidStateException(f"{key_arn} is {_state_words(state)}.")
    if operation in _NOT_PENDING_DELETION and state == "PendingDeletion":
        return KMSInvalidStateException(f"{key_arn} is pending deletion.")
    return None


def key_usage_error(operation: str, key_arn: str, usage: str | None) -> KmsException | None:
    needed = _USAGE.get(operation)
    if needed is None or usage == needed:
        return None
    return InvalidKeyUsageException(f"{key_arn} key usage is {usage} which is not valid for {operation}.")


def encryption_algorithm_error(algorithm: str, key_spec: str | None, supported: tuple[str, ...]) -> KmsException | None:
    """AWS's answer to an encryption algorithm the key cannot use, or ``None``."""
    if algorithm in supported:
        return None
    return InvalidKeyUsageException(f"Algorithm {algorithm} is incompatible with key spec {key_spec}.")


def _state_words(state: str) -> str:
    # "PendingDeletion" -> "pending deletion", as in AWS's messages
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in state).strip()
    return words
