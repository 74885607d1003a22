"""The attesting KMS: key policies evaluated on every call, and ``Decrypt`` with ``Recipient``.

moto keeps the keys and does the cryptography of ordinary KMS calls; this model sits in front of
it and adds what moto lacks: it evaluates each key's policy for every call that names a key (moto
does not — its plain ``Decrypt`` returns the plaintext to anyone), verifies ``Recipient``
attestation documents with the same verifier bots use (:func:`zerocopy.attestation.verify`, here
against the emulator's root), exposes their measurements as the
``kms:RecipientAttestation:ImageSha384`` / ``kms:RecipientAttestation:PCR<n>`` condition keys, and
returns the plaintext only as ``CiphertextForRecipient`` (CMS EnvelopedData, as real KMS does).

https://docs.aws.amazon.com/kms/latest/developerguide/services-nitro-enclaves.html
https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html
"""

from __future__ import annotations

import base64
import binascii
import threading
from typing import Any

from zerocopy.attestation import AttestationError, verify

from .cms import build_ciphertext_for_recipient
from .exceptions import (
    AccessDeniedException,
    IncorrectKeyException,
    KmsException,
    MalformedPolicyDocumentException,
    NotFoundException,
    ValidationException,
)
from .policy import AuthorizationRequest, KeyPolicy, MalformedPolicyDocument

__all__ = ["AttestingKms", "MotoError"]

RECIPIENT_ALGORITHM = "RSAES_OAEP_SHA_256"
# Request fields that name a key, and the action evaluated against that key's policy.
_KEY_FIELDS = ("KeyId", "TargetKeyId", "DestinationKeyId")
_KNOWN_CONDITION_PREFIXES = ("kms:recipientattestation:", "kms:encryptioncontext:", "kms:encryptioncontextkeys")


class MotoError(KmsException):
    """An error moto returned, passed on with its own code."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class AttestingKms:
    """One emulator's KMS state: moto underneath, the attestation roots, the account."""

    def __init__(self, moto_endpoint: str, *, attestation_roots: list[bytes], account_id: str = "123456789012", region: str = "us-east-1") -> None:
        import boto3
        from botocore.config import Config

        self.attestation_roots = list(attestation_roots)
        self.account_id = account_id
        self.region = region
        self.moto_endpoint = moto_endpoint
        self._moto = boto3.session.Session(
            aws_access_key_id="emulator", aws_secret_access_key="emulator", region_name=region
        ).client("kms", endpoint_url=moto_endpoint, config=Config(retries={"max_attempts": 1}))
        self._lock = threading.Lock()

    # -- moto underneath -------------------------------------------------------------------
    def _call_moto(self, operation: str, **params: Any) -> dict:
        from botocore.exceptions import ClientError

        try:
            return getattr(self._moto, operation)(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise MotoError(str(error.get("Code", "KMSInternalException")), str(error.get("Message", "")), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)) from None

    def key_arn(self, key_id: str) -> str:
        return self._call_moto("describe_key", KeyId=key_id)["KeyMetadata"]["Arn"]

    def key_policy(self, key_arn: str) -> KeyPolicy:
        text = self._call_moto("get_key_policy", KeyId=key_arn, PolicyName="default")["Policy"]
        try:
            return KeyPolicy.parse(text)
        except MalformedPolicyDocument as exc:
            # fail closed: a policy we cannot evaluate allows nothing
            raise AccessDeniedException(f"the key policy of {key_arn} cannot be evaluated: {exc}") from None

    # -- authorization ---------------------------------------------------------------------
    def authorize(self, action: str, key_arn: str, context: dict[str, Any] | None = None) -> None:
        decision = self.key_policy(key_arn).evaluate(
            AuthorizationRequest(action=action, resource=key_arn, account_id=self.account_id, context=context or {})
        )
        if not decision.allowed:
            raise AccessDeniedException(
                f"User: arn:aws:iam::{self.account_id}:root is not authorized to perform: {action} on resource: {key_arn} ({decision.reason})"
            )

    def authorize_request(self, operation: str, params: dict) -> None:
        """Evaluate the policy of every key a passed-through request names."""
        if operation in ("CreateKey", "PutKeyPolicy") and params.get("Policy") is not None:
            self.validate_policy(params["Policy"])
        context = _context_keys(params.get("EncryptionContext"))
        for field in _KEY_FIELDS:
            key_id = params.get(field)
            if isinstance(key_id, str):
                action = "kms:ReEncryptTo" if field == "DestinationKeyId" else f"kms:{operation}"
                self.authorize(action, self.key_arn(key_id), context)
        if operation == "ReEncrypt":
            source_arn, _ = self._moto_decrypt(params.get("CiphertextBlob"), params.get("SourceEncryptionContext"))
            self.authorize("kms:ReEncryptFrom", source_arn, _context_keys(params.get("SourceEncryptionContext")))

    @staticmethod
    def validate_policy(policy: Any) -> None:
        try:
            parsed = KeyPolicy.parse(policy if isinstance(policy, str) else "")
        except MalformedPolicyDocument as exc:
            raise MalformedPolicyDocumentException(f"The key policy is not valid: {exc}") from None
        # A condition on a key the emulator never supplies would silently never match: refuse it.
        unknown = sorted(key for key in parsed.condition_keys if not key.startswith(_KNOWN_CONDITION_PREFIXES))
        if unknown:
            raise MalformedPolicyDocumentException(f"the emulator cannot evaluate the condition key {unknown[0]!r}")

    # -- Decrypt -----------------------------------------------------------------------------
    def _moto_decrypt(self, ciphertext_b64: Any, context: Any) -> tuple[str, bytes]:
        blob = _b64(ciphertext_b64, "CiphertextBlob")
        params: dict[str, Any] = {"CiphertextBlob": blob}
        if context:
            params["EncryptionContext"] = context
        response = self._call_moto("decrypt", **params)
        return response["KeyId"], response["Plaintext"]

    def decrypt(self, params: dict) -> dict:
        recipient = params.get("Recipient")
        attestation: dict[str, str] = {}
        public_key = None
        if recipient is not None:
            public_key, attestation = self._check_recipient(recipient)
        context = params.get("EncryptionContext")
        key_arn, plaintext = self._moto_decrypt(params.get("CiphertextBlob"), context)
        if isinstance(params.get("KeyId"), str) and self.key_arn(params["KeyId"]) != key_arn:
            raise IncorrectKeyException("The key ID in the request does not identify a KMS key that can perform this operation.")
        self.authorize("kms:Decrypt", key_arn, {**_context_keys(context), **attestation})
        response = {"KeyId": key_arn, "EncryptionAlgorithm": params.get("EncryptionAlgorithm", "SYMMETRIC_DEFAULT")}
        if public_key is None:
            response["Plaintext"] = base64.b64encode(plaintext).decode()
        else:
            response["CiphertextForRecipient"] = base64.b64encode(build_ciphertext_for_recipient(plaintext, public_key)).decode()
        return response

    def generate_data_key(self, params: dict) -> dict:
        """``GenerateDataKey`` with ``Recipient``: the data key only as ``CiphertextForRecipient``.

        https://docs.aws.amazon.com/kms/latest/APIReference/API_GenerateDataKey.html
        """
        public_key, attestation = self._check_recipient(params.get("Recipient"))
        key_id = params.get("KeyId")
        if not isinstance(key_id, str):
            raise ValidationException("KeyId is required")
        context = params.get("EncryptionContext")
        key_arn = self.key_arn(key_id)
        self.authorize("kms:GenerateDataKey", key_arn, {**_context_keys(context), **attestation})
        forwarded = {name: value for name, value in params.items() if name in ("KeyId", "EncryptionContext", "KeySpec", "NumberOfBytes")}
        response = self._call_moto("generate_data_key", **forwarded)
        return {
            "KeyId": response["KeyId"],
            "CiphertextBlob": base64.b64encode(response["CiphertextBlob"]).decode(),
            "CiphertextForRecipient": base64.b64encode(build_ciphertext_for_recipient(response["Plaintext"], public_key)).decode(),
        }

    def _check_recipient(self, recipient: Any) -> tuple[bytes, dict[str, str]]:
        if not isinstance(recipient, dict):
            raise ValidationException("Recipient must be a structure")
        algorithm = recipient.get("KeyEncryptionAlgorithm")
        if algorithm != RECIPIENT_ALGORITHM:
            raise ValidationException(f"Recipient KeyEncryptionAlgorithm must be {RECIPIENT_ALGORITHM}")
        document = _b64(recipient.get("AttestationDocument"), "Recipient.AttestationDocument")
        try:
            # Debug documents are accepted as on AWS: their zero PCRs simply fail pinned policies.
            verified = verify(document, roots=self.attestation_roots, allow_debug=True)
        except AttestationError as exc:
            raise ValidationException(f"Recipient AttestationDocument is not valid: {exc}") from None
        if not verified.public_key:
            raise ValidationException("Recipient AttestationDocument has no public key to encrypt the response to")
        conditions = {f"kms:RecipientAttestation:PCR{index}": value.hex() for index, value in verified.pcrs.items()}
        conditions["kms:RecipientAttestation:ImageSha384"] = verified.pcrs[0].hex()
        return verified.public_key, conditions

    def reset(self) -> None:
        """Drop every key (moto's reset endpoint)."""
        import urllib.request

        with self._lock:
            urllib.request.urlopen(urllib.request.Request(f"{self.moto_endpoint}/moto-api/reset", method="POST"), timeout=10).close()


def _b64(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ValidationException(f"{field} is required")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationException(f"{field} is not valid base64") from None


def _context_keys(context: Any) -> dict[str, Any]:
    if not isinstance(context, dict):
        return {}
    keys = {f"kms:EncryptionContext:{key}": str(value) for key, value in context.items()}
    keys["kms:EncryptionContextKeys"] = sorted(str(key) for key in context)
    return keys
