"""The control messages, one frozen dataclass each (after h11's ``_events``).

A control frame's body is a CBOR map (:class:`~enclave.protocol.frames.ControlRequest` /
:class:`~enclave.protocol.frames.ControlResponse` carry it as ``fields``). Both sides turn it into
a message here and nowhere else: ``Message.from_fields(fields)`` checks the names (an unknown one
is refused, a missing required one too), the types and the sizes, and raises
:class:`MessageError`; ``message.to_fields()`` gives the map to send.

Field order is wire order (CBOR maps keep it), so the bytes stay what they were. A field with a
default may be absent (``nonce?`` in docs/protocol.md, which ``tests/test_messages.py`` checks
against these classes); one whose default is ``None`` is left out when it is ``None``. A field
typed ``X | None`` without a default is always sent, ``null`` included.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from .audit import NONCE_SIZES
from .errors import RemoteProtocolError
from .frames import ErrorCode, MessageType

__all__ = [
    "MessageError",
    "Message",
    "Attest",
    "Attestation",
    "Keys",
    "KeyInfo",
    "KeyList",
    "Provision",
    "ProvisionedBundle",
    "Provisioned",
    "Audit",
    "AuditPage",
    "Generate",
    "Generated",
    "OpenSession",
    "SessionOpened",
    "Remove",
    "Removed",
    "Bind",
    "Bound",
    "REQUESTS",
    "ANSWERS",
    "MAX_BUNDLES",
    "MAX_NONCE",
]

MAX_BUNDLES = 64
MAX_NONCE = 1024  # an attestation document's nonce field
MAX_AUDIT_LIMIT = 5000
MAX_API_KEY = 256  # an exchange API key id (the signers take at most 256 printable ASCII characters)


class MessageError(RemoteProtocolError):
    """A control message's fields are malformed: the peer's fault, answered ``BAD_REQUEST``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=ErrorCode.BAD_REQUEST)


_WIRE_NAMES = {bytes: "bytes", str: "text", int: "an integer", bool: "a boolean", dict: "a map"}


def _matches(hint: Any, value: Any, where: str) -> Any:
    """``value`` as ``hint`` types it (arrays become tuples, maps of records become records)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (hint,) = [option for option in options if option is not type(None)]
        return _matches(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise MessageError(f"{where} must be an array")
        item = typing.get_args(hint)[0]
        return tuple(_matches(item, element, where + "[]") for element in value)
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, Message):
        return hint.from_fields(value, where=where)
    if not isinstance(value, hint):
        raise MessageError(f"{where} must be {_WIRE_NAMES[hint]}")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Message):
        return value.to_fields()
    if type(value) is tuple:
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class Message:
    """Base of every control message; subclasses set ``TYPE`` and may add :meth:`check`."""

    TYPE: ClassVar[MessageType | None] = None
    _hints: ClassVar[dict[str, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._hints = {}  # resolved on first use: the annotations name classes defined later

    @classmethod
    def _fields(cls) -> dict[str, Any]:
        if not cls._hints:
            hints = typing.get_type_hints(cls)
            cls._hints = {item.name: hints[item.name] for item in dataclasses.fields(cls)}
        return cls._hints

    @classmethod
    def from_fields(cls, fields: Any, *, where: str | None = None) -> Any:
        """The message a decoded CBOR map carries; :class:`MessageError` says what is wrong."""
        where = where or (cls.TYPE.name if cls.TYPE is not None else cls.__name__)
        if not isinstance(fields, dict):
            raise MessageError(f"{where} must be a map")
        hints = cls._fields()
        unknown = sorted((name for name in fields if name not in hints), key=str)
        if unknown:
            raise MessageError(f"unknown field {str(unknown[0])[:64]!r}")
        values = {}
        for item in dataclasses.fields(cls):
            if item.name in fields:
                values[item.name] = _matches(hints[item.name], fields[item.name], f"{where}: {item.name}")
            elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                raise MessageError(f"{where}: missing field {item.name!r}")
        message = cls(**values)
        message.check()
        return message

    def check(self) -> None:
        """Sizes and ranges beyond the types (raise :class:`MessageError`)."""

    def to_fields(self) -> dict[str, Any]:
        """The CBOR map to send, in field order; optional fields that are ``None`` are left out."""
        fields = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is None and item.default is None:
                continue
            fields[item.name] = _plain(value)
        return fields


# -- ATTEST ---------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Attest(Message):
    """A fresh attestation document binding ``nonce``."""

    TYPE = MessageType.ATTEST
    nonce: bytes | None = None

    def check(self) -> None:
        if self.nonce is not None and len(self.nonce) > MAX_NONCE:
            raise MessageError(f"nonce must be at most {MAX_NONCE} bytes")


@dataclass(frozen=True, kw_only=True)
class Attestation(Message):
    TYPE = MessageType.ATTESTATION
    document: bytes = field(repr=False)


# -- KEYS -----------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Keys(Message):
    TYPE = MessageType.KEYS


@dataclass(frozen=True)
class KeyInfo(Message):
    """One loaded key, as ``KEY_LIST`` describes it (``zerocopy.KeyInfo``)."""

    name: str
    scheme: str
    api_key: str
    policy_sha256: str
    sealed_by: str  # ARN of the KMS key that sealed the key, as KMS told the enclave
    public_key: str | None = None  # PEM, for asymmetric schemes


@dataclass(frozen=True, kw_only=True)
class KeyList(Message):
    TYPE = MessageType.KEY_LIST
    keys: tuple[KeyInfo, ...]


# -- PROVISION ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Provision(Message):
    """Sealed bundles to unseal through KMS with the host's credentials (never in a repr)."""

    TYPE = MessageType.PROVISION
    bundles: tuple[bytes, ...] = field(repr=False)
    credentials: dict = field(repr=False)
    region: str | None = None

    def check(self) -> None:
        if not 0 < len(self.bundles) <= MAX_BUNDLES:
            raise MessageError(f"bundles must be a list of 1 to {MAX_BUNDLES} sealed bundles")


@dataclass(frozen=True, kw_only=True)
class ProvisionedBundle(Message):
    """What became of one bundle: ``name`` is null if the bundle did not parse, ``error`` if it
    loaded; ``new`` (only when loaded) is false when the same key was already loaded."""

    index: int
    name: str | None
    loaded: bool
    new: bool | None = None
    error: str | None


@dataclass(frozen=True, kw_only=True)
class Provisioned(Message):
    TYPE = MessageType.PROVISIONED
    results: tuple[ProvisionedBundle, ...]


# -- AUDIT ----------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Audit(Message):
    """Receipts after ``after`` and a checkpoint (signed over ``nonce`` too, if given)."""

    TYPE = MessageType.AUDIT
    after: int = 0
    limit: int = 1000
    nonce: bytes | None = None

    def check(self) -> None:
        if self.after < 0 or not 1 <= self.limit <= MAX_AUDIT_LIMIT:
            raise MessageError(f"after must be a sequence number and limit 1..{MAX_AUDIT_LIMIT}")
        if self.nonce is not None and len(self.nonce) not in NONCE_SIZES:
            raise MessageError(f"nonce must be {NONCE_SIZES.start} to {NONCE_SIZES.stop - 1} bytes")


@dataclass(frozen=True, kw_only=True)
class AuditPage(Message):
    """A page of receipts; ``zerocopy.audit`` verifies what ``start`` and ``checkpoint`` sign."""

    TYPE = MessageType.AUDIT_LOG
    format: str
    boot_id: str
    genesis: str
    receipts: tuple[bytes, ...] = field(repr=False)
    missing_before: int | None
    start: dict
    checkpoint: dict


# -- GENERATE -------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Generate(Message):
    """A key pair made inside the enclave for an asymmetric scheme, sealed to a launch seal key."""

    TYPE = MessageType.GENERATE
    name: str
    scheme: str
    api_key: str | None = None
    credentials: dict = field(repr=False)
    kms_key_id: str | None = None
    policy: dict | None = None
    region: str | None = None


@dataclass(frozen=True, kw_only=True)
class Generated(Message):
    TYPE = MessageType.GENERATED
    bundle: bytes = field(repr=False)
    public_key: bytes


# -- OPEN_SESSION ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class OpenSession(Message):
    """The attested-session handshake; :func:`enclave.protocol.session.accept` checks the values."""

    TYPE = MessageType.OPEN_SESSION
    suite: str
    nonce: bytes
    public_key: bytes


@dataclass(frozen=True, kw_only=True)
class SessionOpened(Message):
    TYPE = MessageType.SESSION
    public_key: bytes
    document: bytes = field(repr=False)


# -- REMOVE ---------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Remove(Message):
    """Unload a key whose sealed policy says ``removable = true`` (test keys); others are refused."""

    TYPE = MessageType.REMOVE
    name: str


@dataclass(frozen=True, kw_only=True)
class Removed(Message):
    TYPE = MessageType.REMOVED
    name: str


# -- BIND -----------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Bind(Message):
    """Bind the exchange's API key id to a loaded key that has none yet (one generated before the
    exchange issued it); the enclave re-seals the key with it. Once only: a bound key stays bound."""

    TYPE = MessageType.BIND
    name: str
    api_key: str
    credentials: dict = field(repr=False)
    region: str | None = None

    def check(self) -> None:
        if not 0 < len(self.api_key) <= MAX_API_KEY:
            raise MessageError(f"api_key must be 1 to {MAX_API_KEY} characters")


@dataclass(frozen=True, kw_only=True)
class Bound(Message):
    TYPE = MessageType.BOUND
    bundle: bytes = field(repr=False)  # the key re-sealed with its API key id, for the next boot


REQUESTS: dict[MessageType, type[Message]] = {
    kind.TYPE: kind for kind in (Attest, Keys, Provision, Audit, Generate, OpenSession, Remove, Bind)  # type: ignore[misc]
}
ANSWERS: dict[MessageType, type[Message]] = {
    kind.TYPE: kind for kind in (Attestation, KeyList, Provisioned, AuditPage, Generated, SessionOpened, Removed, Bound)  # type: ignore[misc]
}
