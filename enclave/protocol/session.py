"""Attested sessions: an ephemeral key exchange bound into the enclave's attestation document.

A pure object both sides use; it does no I/O. The handshake is one control round trip in the
clear, on a plain connection (the client sends nothing behind it until the answer)::

    client                                            enclave
    OPEN_SESSION {suite, nonce (32 random bytes),
                  public_key (X25519, 32 bytes)}  -->
                                                      server X25519 key pair, fresh for this connection
                                                      binding = SHA-256(LABEL || suite || 0 || nonce
                                                                        || client key || server key)
                                                      NSM document with nonce = binding and
                                                      user_data = {"session": binding, loaded keys}
                                                 <--  SESSION {public_key (server X25519), document}
    verify document: chain, PCRs, nonce == binding and user_data["session"] == binding
    (the binding recomputed from what it sent and got)

Both sides then derive ``HKDF-SHA256(X25519 shared secret, salt=binding, info=LABEL || "keys")``
into two AES-256-GCM keys, one per direction, and every later frame on the connection is sealed:
the 10-byte header (its length counting the 16-byte tag) is the associated data, the body is
encrypted, and the 96-bit nonce is the count of frames this side has sealed before (0, 1, 2, …).
Nothing travels with a frame to say which count it is: a frame that was dropped, replayed,
reordered, injected, spliced from another connection or altered fails to open, and the session
is then broken for good (fail closed; there is no resynchronisation).

The binding must be in ``user_data``, not only in ``nonce``: ``ATTEST`` puts any nonce the host
asks for into an equally genuine document, so a relay could compute a binding over a key of its
own and have the real enclave attest it. ``user_data`` is never the host's to choose — the enclave
fills it with its loaded-keys summary, and adds ``"session"`` only when it answers OPEN_SESSION for
a key pair it made itself — so a document that binds a session in ``user_data`` names a key only
the enclave holds, and a relay that forwards the handshake cannot read or forge anything that
follows: it holds neither private key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ZeroCopyError

__all__ = [
    "SUITE",
    "NONCE_SIZE",
    "PUBLIC_KEY_SIZE",
    "TAG_SIZE",
    "HandshakeError",
    "SessionBroken",
    "Session",
    "ClientHandshake",
    "Accepted",
    "accept",
    "binding",
    "check_bound",
    "USER_DATA_FIELD",
]

SUITE = "x25519-hkdf-sha256-aes256gcm"
LABEL = b"zerocopy session v1"
NONCE_SIZE = 32
PUBLIC_KEY_SIZE = 32
TAG_SIZE = 16
_HEADER_SIZE = 10
_LENGTH = struct.Struct(">I")
_NONCE = struct.Struct(">4xQ")  # 96 bits: the frame counter, big-endian
_MAX_COUNT = (1 << 64) - 1
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
#: The ``user_data`` entry in which the enclave, and only on OPEN_SESSION, names the binding.
USER_DATA_FIELD = "session"


class HandshakeError(ZeroCopyError, ValueError):
    """The handshake's fields are malformed (or the key exchange gave a degenerate secret)."""


class SessionBroken(Exception):
    """A sealed frame did not open: dropped, replayed, reordered, injected or altered on the way.

    The session stays broken: every later frame is refused too.
    """


def binding(nonce: bytes, client_public: bytes, server_public: bytes, suite: str = SUITE) -> bytes:
    """The 32 bytes the enclave's attestation document carries as its ``nonce`` for this handshake."""
    return hashlib.sha256(LABEL + suite.encode() + b"\0" + nonce + client_public + server_public).digest()


def check_bound(user_data: bytes | None, bound: bytes) -> None:
    """Raise :class:`HandshakeError` unless the document's ``user_data`` binds this session.

    ``nonce`` alone is not enough: ``ATTEST`` would attest any nonce a relay asks for.
    """
    from . import cbor

    try:
        fields = cbor.loads(user_data) if user_data is not None else None
    except cbor.CborError:
        fields = None
    named = fields.get(USER_DATA_FIELD) if isinstance(fields, dict) else None
    if not isinstance(named, bytes) or not hmac.compare_digest(named, bound):
        raise HandshakeError("the attestation document does not bind this session in its user_data (an ATTEST document relayed?)")


def _derive(private: X25519PrivateKey, peer_public: bytes, salt: bytes) -> tuple[bytes, bytes]:
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:  # a low-order point gives the all-zero secret, which cryptography refuses
        raise HandshakeError("the peer's X25519 key is degenerate") from None
    keys = HKDF(hashes.SHA256(), 64, salt=salt, info=LABEL + b" keys").derive(shared)
    return keys[:32], keys[32:]  # client to enclave, enclave to client


def _check(value: Any, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise HandshakeError(f"{what} must be {size} bytes")
    return value


class Session:
    """One side of an established session: seals what this side sends, opens what it receives.

    Not thread-safe (one per connection, like :class:`~enclave.protocol.frames.Connection`).
    """

    __slots__ = ("_seal", "_open", "sent", "received", "broken")

    def __init__(self, send_key: bytes, receive_key: bytes) -> None:
        self._seal = AESGCM(send_key).encrypt
        self._open = AESGCM(receive_key).decrypt
        self.sent = 0  # frames sealed so far: the nonce of the next one
        self.received = 0
        self.broken = False

    def seal(self, header: bytes, body: bytes) -> bytes:
        """``header`` (10 bytes, its length already counting the tag) and ``body`` as they go on
        the wire: the header in the clear and authenticated, the body encrypted, then the tag."""
        count = self.sent
        if count >= _MAX_COUNT:
            raise SessionBroken("this session has sealed its last frame; reconnect")
        self.sent = count + 1
        return header + self._seal(_NONCE.pack(count), body, header)

    def seal_frame(self, frame: bytes) -> bytes:
        """A plaintext frame (10-byte header + body) as it goes on the wire (:meth:`seal`)."""
        return self.seal(_LENGTH.pack(len(frame) - _HEADER_SIZE + TAG_SIZE) + frame[4:_HEADER_SIZE], frame[_HEADER_SIZE:])

    def open_body(self, header: Any, sealed: Any) -> bytes:
        """The plaintext body of the peer's next frame (bytes-like ``header`` and ``sealed``
        body); raises :class:`SessionBroken`."""
        if self.broken:
            raise SessionBroken("the session is broken")
        count = self.received
        try:
            body = self._open(_NONCE.pack(count), sealed, header)
        except InvalidTag:
            self.broken = True
            raise SessionBroken(f"frame #{count} from the peer failed authentication") from None
        self.received = count + 1
        return body

    def __repr__(self) -> str:
        return f"<Session sent={self.sent} received={self.received}{' broken' if self.broken else ''}>"


class ClientHandshake:
    """The client's half: ``fields()`` go in OPEN_SESSION; with the SESSION answer, ``binding()``
    is what the verified document's ``nonce`` must equal, and ``finish()`` gives the session."""

    def __init__(self, nonce: bytes | None = None) -> None:
        self.nonce = os.urandom(NONCE_SIZE) if nonce is None else _check(nonce, NONCE_SIZE, "nonce")
        self._private = X25519PrivateKey.generate()
        self.public_key = self._private.public_key().public_bytes(*_RAW)

    def fields(self) -> dict:
        return {"suite": SUITE, "nonce": self.nonce, "public_key": self.public_key}

    def binding(self, server_public: Any) -> bytes:
        return binding(self.nonce, self.public_key, _check(server_public, PUBLIC_KEY_SIZE, "the enclave's session key"))

    def finish(self, server_public: Any) -> Session:
        """The session keys, once the document binding ``server_public`` has been verified."""
        send, receive = _derive(self._private, _check(server_public, PUBLIC_KEY_SIZE, "the enclave's session key"), self.binding(server_public))
        return Session(send, receive)


@dataclass(frozen=True)
class Accepted:
    """The enclave's half, ready to answer: attest ``binding``, send ``public_key``, then seal."""

    public_key: bytes
    binding: bytes
    session: Session = field(repr=False, compare=False)


def accept(fields: Any) -> Accepted:
    """Check an OPEN_SESSION request and make this side's key pair and session for it."""
    if not isinstance(fields, dict) or set(fields) != {"suite", "nonce", "public_key"}:
        raise HandshakeError("OPEN_SESSION takes exactly suite, nonce and public_key")
    if fields["suite"] != SUITE:
        raise HandshakeError(f"unsupported session suite {str(fields['suite'])[:64]!r} (this enclave speaks {SUITE})")
    nonce = _check(fields["nonce"], NONCE_SIZE, "nonce")
    client_public = _check(fields["public_key"], PUBLIC_KEY_SIZE, "public_key")
    private = X25519PrivateKey.generate()
    server_public = private.public_key().public_bytes(*_RAW)
    bound = binding(nonce, client_public, server_public)
    to_enclave, to_client = _derive(private, client_public, bound)
    return Accepted(server_public, bound, Session(to_client, to_enclave))
