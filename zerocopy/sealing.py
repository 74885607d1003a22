"""Seal a secret for the enclave: KMS envelope encryption bound to the bundle's own fields.

The operator runs this where the secret already is (their laptop), with credentials that may call
``GenerateDataKey`` on the key. The data key encrypts the secret with AES-256-GCM; the encryption
context and the associated data both come from :func:`enclave.protocol.bundle.encryption_context`,
the function the enclave uses to unseal. The plaintext data key is dropped right after use and
nothing but the bundle is written.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.protocol.bundle import BundleError, SealedBundle, associated_data, check_name, encryption_context
from enclave.protocol.exchanges import SCHEME_NAMES, SCHEMES
from enclave.protocol.signing import SchemeError

from .errors import SealError

__all__ = ["seal", "check_secret", "MAX_SECRET"]

MAX_SECRET = 16 * 1024


def check_secret(scheme: str, secret: bytes, api_key: str) -> None:
    """Raise :class:`SealError` unless the enclave would load ``secret`` and ``api_key`` as a key of
    ``scheme``: checked by the scheme's own signer class, the one the enclave loads it with, so a
    bundle that cannot work is refused now rather than at provisioning. The message never quotes
    the secret."""
    kind = SCHEMES[scheme]
    if kind.exchange is not None and not api_key:
        raise SealError(f"{scheme} signs for an exchange, which identifies the key by its API key id: give the API key (zerocopy seal --api-key KEY)")
    try:
        kind(secret, api_key)
    except SchemeError as exc:
        raise SealError(f"{exc}; nothing was sealed") from None


def seal(kms: Any, *, key_id: str, name: str, scheme: str, secret: bytes, api_key: str = "", policy: dict | None = None) -> SealedBundle:
    """Seal ``secret`` under the KMS key ``key_id``; returns the bundle (write it with ``to_json()``)."""
    if scheme not in SCHEME_NAMES:
        raise SealError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEME_NAMES)}")
    if not isinstance(secret, bytes):
        raise TypeError(f"secret must be bytes, not {type(secret).__name__}")
    if not 0 < len(secret) <= MAX_SECRET:
        raise SealError(f"the secret must be 1 to {MAX_SECRET} bytes")
    check_secret(scheme, secret, api_key)
    try:
        check_name(name)
        context = encryption_context(name, scheme, api_key, policy)
    except BundleError as exc:
        raise SealError(str(exc)) from None
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=context)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise SealError(f"KMS refused GenerateDataKey: {error.get('Code')}: {error.get('Message')}") from None
    except BotoCoreError as exc:
        raise SealError(f"KMS could not be reached: {exc}") from None
    data_key, blob, key_arn = response["Plaintext"], response["CiphertextBlob"], response["KeyId"]
    del response
    nonce = os.urandom(12)
    try:
        ciphertext = AESGCM(data_key).encrypt(nonce, secret, associated_data(context))
    finally:
        del data_key
    try:
        return SealedBundle(
            name=name,
            scheme=scheme,
            api_key=api_key,
            policy=policy,
            kms_key_id=key_arn,  # the ARN: the enclave names the exact key, so a swapped key is IncorrectKey
            encrypted_data_key=blob,
            nonce=nonce,
            ciphertext=ciphertext,
        )
    except BundleError as exc:
        raise SealError(str(exc)) from None
