"""Errors raised by the ZeroCopy client and tools.

Everything derives from :class:`ZeroCopyError` (defined with the wire protocol, in
``enclave.protocol.errors``, so the enclave's protocol errors, policy and bundle errors share the
hierarchy). Refusals that come from the enclave carry the
enclave's error code; policy refusals name the rule that refused (``PolicyRefused.rule``), so a
strategy can branch on it.
"""

from __future__ import annotations

from enclave.protocol.address import AddressError
from enclave.protocol.bundle import BundleError
from enclave.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError, ZeroCopyError
from enclave.protocol.policy import PolicyError

__all__ = [
    "ZeroCopyError",
    "ConnectionFailed",
    "ConnectionClosed",
    "Timeout",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "SessionError",
    "EnclaveError",
    "UnknownKey",
    "PolicyRefused",
    "ProvisioningError",
    "UnsupportedOperation",
    "EnclaveBusy",
    "SealError",
    "ConfigurationError",
    "PolicyError",
    "BundleError",
    "AddressError",
]


class ConnectionFailed(ZeroCopyError):
    """The enclave could not be reached."""


class ConnectionClosed(ConnectionFailed):
    """The enclave closed the connection, possibly with requests still unanswered."""


class Timeout(ConnectionFailed):
    """The enclave did not answer in time."""


class SessionError(ProtocolError):
    """An attested session failed: a frame did not authenticate (the connection was relayed,
    spliced, replayed or altered), or the enclave's handshake answer was malformed. The
    connection is closed; nothing it carried after the failure was used."""


class EnclaveError(ZeroCopyError):
    """The enclave answered a request with an error. ``code`` is its :class:`ErrorCode`."""

    def __init__(self, message: str, *, code: object = None) -> None:
        super().__init__(message)
        self.code = code


class UnknownKey(EnclaveError):
    """No key of that name is provisioned in the enclave (for instance, after it restarted)."""


class PolicyRefused(EnclaveError):
    """The enclave's signing policy refused the request; ``rule`` names the rule."""

    def __init__(self, message: str, *, rule: str, code: object = None) -> None:
        super().__init__(message, code=code)
        self.rule = rule


class ProvisioningError(EnclaveError):
    """A sealed bundle could not be loaded into the enclave."""


class UnsupportedOperation(EnclaveError):
    """The key's scheme does not support that operation (e.g. raw signing of an exchange key)."""


class EnclaveBusy(EnclaveError):
    """The enclave refused the connection or request because it is at capacity."""


class SealError(ZeroCopyError):
    """A secret could not be sealed (KMS refused, bad input)."""


class ConfigurationError(ZeroCopyError):
    """The environment or options configure something unsafe or malformed (say, an attestation
    root without the PCR0 to pin); the message names the variable or option and what to set."""
