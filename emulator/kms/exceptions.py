"""AWS KMS error codes the attesting front returns, one class per code (as moto does).

Each renders as AWS's JSON 1.1 error body, ``{"__type": <code>, "message": <text>}``. Where real
KMS answers differ from that shape the class says so: ``AccessDeniedException`` and
``SerializationException`` carry ``Message`` with a capital M (as in a raw KMS answer quoted in
aws/aws-nitro-enclaves-sdk-c#157, and as kinesalite records for AWS's JSON 1.1 front end), and
``UnknownOperationException`` carries no message at all. botocore reads either spelling.

See https://docs.aws.amazon.com/kms/latest/APIReference/CommonErrors.html and the Errors section
of each operation, e.g. https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "KmsException",
    "AccessDeniedException",
    "DisabledException",
    "DryRunOperationException",
    "ExpiredTokenException",
    "IncompleteSignatureException",
    "IncorrectKeyException",
    "InvalidSignatureException",
    "InvalidCiphertextException",
    "InvalidKeyUsageException",
    "KMSInternalException",
    "KMSInvalidStateException",
    "MalformedPolicyDocumentException",
    "MissingAuthenticationTokenException",
    "NotFoundException",
    "SerializationException",
    "UnknownOperationException",
    "UnrecognizedClientException",
    "UnsupportedOperationException",
    "CustomKeyStoreNotFoundException",
    "ValidationException",
]


class KmsException(Exception):
    code = "KMSInternalException"
    status = 500
    message_key: str | None = "message"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON error body; an empty message is left out, as KMS leaves it out
        (``InvalidCiphertextException``, ``KMSInvalidSignatureException``)."""
        body: dict[str, Any] = {"__type": self.code}
        if self.message_key is not None and self.message:
            body[self.message_key] = self.message
        return body


class KMSInternalException(KmsException):
    code = "KMSInternalException"


class AccessDeniedException(KmsException):
    """Refused by a key policy or an IAM policy. ``reason`` says which statement decided (the
    emulator's own diagnostics; AWS's message, in ``message``, does not name it)."""

    code = "AccessDeniedException"
    status = 400
    message_key = "Message"

    def __init__(self, message: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class DisabledException(KmsException):
    code = "DisabledException"
    status = 400


class CustomKeyStoreNotFoundException(KmsException):
    code = "CustomKeyStoreNotFoundException"
    status = 400


class DryRunOperationException(KmsException):
    code = "DryRunOperationException"
    status = 400


class ExpiredTokenException(KmsException):
    """Session credentials past their expiration ("The security token included in the request is expired")."""

    code = "ExpiredTokenException"
    status = 400


class IncompleteSignatureException(KmsException):
    code = "IncompleteSignatureException"
    status = 400


class IncorrectKeyException(KmsException):
    code = "IncorrectKeyException"
    status = 400


class InvalidCiphertextException(KmsException):
    code = "InvalidCiphertextException"
    status = 400


class InvalidSignatureException(KmsException):
    code = "InvalidSignatureException"
    status = 400


class InvalidKeyUsageException(KmsException):
    code = "InvalidKeyUsageException"
    status = 400


class KMSInvalidStateException(KmsException):
    code = "KMSInvalidStateException"
    status = 400


class MalformedPolicyDocumentException(KmsException):
    code = "MalformedPolicyDocumentException"
    status = 400


class MissingAuthenticationTokenException(KmsException):
    code = "MissingAuthenticationTokenException"
    status = 400


class NotFoundException(KmsException):
    code = "NotFoundException"
    status = 400


class SerializationException(KmsException):
    code = "SerializationException"
    status = 400
    message_key = "Message"


class UnknownOperationException(KmsException):
    code = "UnknownOperationException"
    status = 400
    message_key = None


class UnrecognizedClientException(KmsException):
    code = "UnrecognizedClientException"
    status = 400


class UnsupportedOperationException(KmsException):
    code = "UnsupportedOperationException"
    status = 400


class ValidationException(KmsException):
    code = "ValidationException"
    status = 400
