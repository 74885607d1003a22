"""The errors of the whole distribution start here, so the enclave's protocol and the host's tools
share one hierarchy (after pyca/cryptography's ``exceptions`` module): every error ZeroCopy raises on
purpose derives from :class:`ZeroCopyError`. ``zerocopy.errors`` exports them all.

Protocol errors are split by who got it wrong (after h11's Local/RemoteProtocolError).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ZeroCopyError", "ProtocolError", "LocalProtocolError", "RemoteProtocolError"]


class ZeroCopyError(Exception):
    """Base class of every error ZeroCopy raises on purpose."""


class ProtocolError(ZeroCopyError):
    """A frame did not follow the wire protocol (either side)."""


class LocalProtocolError(ProtocolError, ValueError):
    """This side tried to send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed.

    ``code`` is the :class:`~enclave.protocol.frames.ErrorCode` to answer with, ``request_id`` the
    id of the offending frame (0 if unknown). ``fatal`` means the frame boundary is lost and the
    connection must be closed.
    """

    def __init__(self, message: str, *, code: Any, request_id: int = 0, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id
        self.fatal = fatal
