"""Errors raised by the ZeroCopy client and tools.

Everything derives from :class:`ZeroCopyError` (defined with the wire protocol, in
``enclave.protocol.errors``, so the enclave's protocol errors, policy and bundle errors share the
hierarchy). Refusals that come from the enclave carry the
enclave's error code; policy refusals name the rule that refused (``PolicyRefused.rule``), so a
strategy can branch on it.

Every error class the host can meet is exported here (and so from ``zerocopy``): the ones the
host's tools raise are defined here, so this module imports nothing heavier than the protocol
package (every command imports it), and their tools' modules re-export them
(``zerocopy.attestation.AttestationError`` and the like stay where they were).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enclave.protocol.address import AddressError
from enclave.protocol.bundle import BundleError
from enclave.protocol.cbor import CborError
from enclave.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError, ZeroCopyError
from enclave.protocol.exchange import ExchangeError
from enclave.protocol.messages import MessageError
from enclave.protocol.policy import PolicyError, Refusal
from enclave.protocol.session import HandshakeError
from enclave.protocol.signing import SchemeError

if TYPE_CHECKING:
    from .audit import AuditReport, Gap

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
    "KeyNotBound",
    "ProvisioningError",
    "UnsupportedOperation",
    "EnclaveBusy",
    "SealError",
    "ConfigurationError",
    "PolicyError",
    "BundleError",
    "AddressError",
    "CborError",
    "MessageError",
    "HandshakeError",
    "ExchangeError",
    "SchemeError",
    "Refusal",
    "AttestationError",
    "MalformedDocument",
    "SignatureInvalid",
    "CertificateChainInvalid",
    "CertificateExpired",
    "PinnedRootInvalid",
    "PCRMismatch",
    "NonceMismatch",
    "DebugModeRefused",
    "AuditError",
    "AuditGap",
    "UnexpectedChains",
    "EifError",
    "AllowlistConfigError",
    "HostAgentError",
    "HostToolError",
    "ProvisioningFailed",
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


class KeyNotBound(PolicyRefused):
    """The key was made before the exchange issued its API key id, so it signs nothing yet: bind the
    id first (:meth:`zerocopy.Signer.bind`, ``zerocopy bind``). ``rule`` is ``"api-key"``."""


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


# -- attestation (raised by zerocopy.attestation.verify) ------------------------------------------


class AttestationError(ZeroCopyError):
    """An attestation document was refused. Subclasses say which check failed."""


class MalformedDocument(AttestationError):
    """The bytes are not an attestation document of the shape AWS specifies."""


class SignatureInvalid(AttestationError):
    """The COSE signature does not verify under the leaf certificate's key."""


class CertificateChainInvalid(AttestationError):
    """The certificates do not chain from the leaf to a trusted root."""


class CertificateExpired(AttestationError):
    """A certificate in the chain is not valid at the time of verification (expired or not yet)."""


class PinnedRootInvalid(AttestationError):
    """The AWS root shipped with ZeroCopy does not match its pinned fingerprint (broken install)."""


class PCRMismatch(AttestationError):
    """A PCR differs from the expected value or is absent; ``index`` names it."""

    def __init__(self, message: str, *, index: int) -> None:
        super().__init__(message)
        self.index = index


class NonceMismatch(AttestationError):
    """The document's nonce is not the one the verifier asked for."""


class DebugModeRefused(AttestationError):
    """The enclave runs in debug mode (PCR0–2 zero), whose memory the host can read."""


# -- the audit log (raised by zerocopy.audit.verify_log) ------------------------------------------


class AuditError(ZeroCopyError):
    """The audit log does not verify; the message names the line and what is wrong."""


class AuditGap(AuditError):
    """The log verifies except that receipts are missing; ``gaps`` lists every one."""

    def __init__(self, report: AuditReport, unexpected: list[Gap]) -> None:
        self.report, self.gaps = report, unexpected
        super().__init__(f"{len(unexpected)} gap(s) in the log: " + "; ".join(str(gap) for gap in unexpected))


class UnexpectedChains(AuditError):
    """The log's chains are not the ones the operator expected: a whole chain (an enclave boot) was
    removed, or one nobody expected is there. ``report.boots`` lists the chains it holds."""

    def __init__(self, report: AuditReport, message: str) -> None:
        self.report = report
        super().__init__(message)


# -- production tools -------------------------------------------------------------------------------


class EifError(ZeroCopyError):
    """The file is not a well-formed EIF; the message says what is wrong."""


class AllowlistConfigError(ZeroCopyError, ValueError):
    """A region, address or port that does not belong in a vsock-proxy allowlist."""


# -- the host agent (zerocopy host) ------------------------------------------------------------------


class HostAgentError(ZeroCopyError):
    """``zerocopy host`` could not bring up or keep up the enclave; the message says which step."""


class HostToolError(HostAgentError):
    """An external tool the agent drives (nitro-cli, the vsock-proxy, the instance metadata
    service) is missing or failed; the message names the tool and what it said."""


class ProvisioningFailed(HostAgentError):
    """The sealed bundles could not be loaded after ``attempts`` tries (KMS unreachable, refused);
    the message carries the enclave's last reason."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts
