"""AWS KMS error codes the attesting front returns, one class per code (as moto does).

See https://docs.aws.amazon.com/kms/latest/APIReference/CommonErrors.html and the Errors section
of https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html.
"""

from __future__ import annotations

__all__ = [
    "KmsException",
    "AccessDeniedException",
    "IncorrectKeyException",
    "ValidationException",
    "MalformedPolicyDocumentException",
    "InvalidCiphertextException",
    "NotFoundException",
    "UnsupportedOperationException",
]


class KmsException(Exception):
    code = "KMSInternalException"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AccessDeniedException(KmsException):
    code = "AccessDeniedException"
    status = 400


class IncorrectKeyException(KmsException):
    code = "IncorrectKeyException"
    status = 400


class ValidationException(KmsException):
    code = "ValidationException"
    status = 400


class MalformedPolicyDocumentException(KmsException):
    code = "MalformedPolicyDocumentException"
    status = 400


class InvalidCiphertextException(KmsException):
    code = "InvalidCiphertextException"
    status = 400


class NotFoundException(KmsException):
    code = "NotFoundException"
    status = 400


class UnsupportedOperationException(KmsException):
    code = "UnsupportedOperationException"
    status = 400
