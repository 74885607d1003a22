"""The wire format shared by the enclave and its clients: frames, addresses, sealed bundles.

This is the only part of ``enclave`` the host package imports.
"""

from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .frames import (
    DEFAULT_MAX_FRAME_SIZE,
    NEED_DATA,
    VERSION,
    Connection,
    ControlRequest,
    ControlResponse,
    ErrorCode,
    ErrorResponse,
    HttpSignature,
    HttpSignRequest,
    MessageType,
    Role,
    SessionAccepted,
    Signature,
    SignRequest,
    encode_http_sign_request,
    encode_sign_request,
)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "NEED_DATA",
    "VERSION",
    "Connection",
    "ControlRequest",
    "ControlResponse",
    "ErrorCode",
    "ErrorResponse",
    "HttpSignature",
    "HttpSignRequest",
    "LocalProtocolError",
    "MessageType",
    "ProtocolError",
    "RemoteProtocolError",
    "Role",
    "SessionAccepted",
    "Signature",
    "SignRequest",
    "encode_http_sign_request",
    "encode_sign_request",
]
