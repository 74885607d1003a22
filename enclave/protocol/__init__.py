"""The wire format shared by the enclave and its clients: frames (:mod:`.frames`), the control
messages they carry (:mod:`.messages`), addresses, sealed bundles.

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
    http_params,
    http_params_items,
    key_name,
    sign_http_body_with,
    sign_http_prefix,
)
from .messages import MessageError

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
    "MessageError",
    "MessageType",
    "ProtocolError",
    "RemoteProtocolError",
    "Role",
    "SessionAccepted",
    "Signature",
    "SignRequest",
    "http_params",
    "http_params_items",
    "key_name",
    "sign_http_body_with",
    "sign_http_prefix",
]
