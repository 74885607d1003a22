"""The signing base: keys, the raw schemes, and the encoding every exchange scheme shares.

A scheme object is built once per key at provisioning (parsing the secret, precomputing what can
be precomputed) and then signs on the hot path without further checks. Secrets never appear in a
repr, an exception message or a log line, and no exception raised here carries another exception
(which could quote the secret) as its ``__cause__`` or ``__context__``.

Raw schemes sign arbitrary payloads. Exchange schemes (one module per exchange in
:mod:`enclave.protocol.exchanges`) subclass these and additionally build the exchange's string to
sign from a request (:meth:`SigningKey.sign_http`), so the enclave — not the host — decides which
bytes are signed. ``sign_http(method, path, params, body, now_ms)`` takes the request in parts
(``params`` are ``(name, value)`` pairs in the caller's order, ``body`` the bytes to send, ``now_ms``
the enclave clock) and returns what to send: the query string (without ``?``), the body and the
headers to add.

Rules shared by every exchange scheme
-------------------------------------
* **Bound to an API key id.** An exchange key signs only once it has its API key id. An
  asymmetric one may load without (the exchange issues the id only after it has seen the public
  key): it is *unbound* (``SigningKey.bound`` false), the enclave refuses to sign with it under the
  rule :data:`API_KEY_RULE`, and ``BIND`` gives it its id, once.
* **Encoding.** Parameter names and values are UTF-8, percent-encoded with only the RFC 3986
  unreserved characters (``A-Z a-z 0-9 - . _ ~``) left as they are (a space is ``%20``). The string
  the enclave signs is byte for byte the string it returns to send, so the exchange sees what was
  signed.
* **Refusals** (:class:`SchemeError`): an empty or repeated parameter name (a repeated name could
  let the exchange act on a value the policy never saw), a parameter the enclave sets itself
  (``signature``, ``apiKey``), a method the exchange does not sign, a path that is not an absolute
  printable-ASCII path without ``?``/``#``, and an API key that is not 1–256 printable ASCII
  characters (it goes into a header).

:meth:`SigningKey.sign` of an exchange scheme returns the raw bytes of its primitive over the
payload: the HMAC digest, the RSA or Ed25519 signature, ``r||s`` (64 bytes) for a ``coinbase-jwt``
P-256 key (the 64-byte Ed25519 signature for an Ed25519 one).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import string
from datetime import datetime, timedelta, timezone
from itertools import chain
from collections.abc import Mapping
from typing import Any, ClassVar, Iterable, NamedTuple
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from .errors import ZeroCopyError

__all__ = [
    "API_KEY_RULE", "MAX_SECRET", "MAX_NOW_MS", "Params", "SchemeError", "SignedHttp", "SigningKey", "HmacSha256", "HmacSha512",
    "Ed25519", "EcdsaP256", "RsaPkcs1v15Sha256", "RAW_SIGNERS",
]

MAX_SECRET = 16 * 1024
#: The rule an unbound exchange key's signing requests are refused under (``PolicyRefused.rule``).
API_KEY_RULE = "api-key"
MAX_NOW_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z

Params = tuple[tuple[str, str], ...]

_API_KEY = re.compile(r"[!-~]{1,256}")
_PATH = re.compile(r"/[!-~]*")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SECRET_ALPHABET = string.ascii_letters + string.digits


class SchemeError(ZeroCopyError, ValueError):
    """The secret does not fit the scheme, or the scheme cannot do what was asked."""


class SignedHttp(NamedTuple):  # a NamedTuple: built once per signature, on the hot path
    query: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


class SigningKey:
    name: ClassVar[str]
    asymmetric: ClassVar[bool] = False
    exchange: ClassVar[str | None] = None  # the exchange family ("binance" for both Binance APIs)
    # what a fresh key of an asymmetric scheme is: "ed25519", "p256" or "rsa"
    key_kind: ClassVar[str | None] = None
    # signs a query-only request of a shape it signed before from the query alone (known_query_shape)
    signs_known_queries: ClassVar[bool] = False

    def __init__(self, secret: bytes, api_key: str) -> None:
        if not isinstance(secret, bytes) or not 0 < len(secret) <= MAX_SECRET:
            raise SchemeError(f"{self.name}: the secret must be 1 to {MAX_SECRET} bytes")
        if not isinstance(api_key, str):
            raise SchemeError(f"{self.name}: the API key must be a string")
        # An exchange key pair made in the enclave may wait for its API key id (the exchange issues
        # it for the public key): it loads unbound and signs nothing until BIND gives it one.
        self.bound = bool(api_key) or self.exchange is None
        if self.exchange is not None and not (_API_KEY.fullmatch(api_key) or (self.asymmetric and not api_key)):
            raise SchemeError(f"{self.name}: the API key must be 1 to 256 printable ASCII characters without spaces")
        self.api_key = api_key
        self._load(secret)

    @classmethod
    def fresh_secret(cls, passphrase: str | None = None) -> bytes:
        """A new random secret in the form the scheme's exchange hands out (64 letters and digits
        for an HMAC key). ``passphrase`` matters only to schemes that seal one with the secret."""
        return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(64)).encode()

    @classmethod
    def with_passphrase(cls, secret: bytes, passphrase: str) -> bytes:
        """``secret`` with ``passphrase`` sealed alongside, for schemes that have one (OKX)."""
        return secret

    @classmethod
    def passphrase_of(cls, secret: bytes) -> str | None:
        return None

    def _load(self, secret: bytes) -> None:
        raise NotImplementedError

    def apply_policy(self, document: Mapping[str, Any]) -> None:
        """Take the sealed policy fields the signer itself reads (Kraken's ``nonce``); the policy
        engine has already refused those that do not apply to the scheme."""

    def sign(self, payload: bytes) -> bytes:
        raise NotImplementedError

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        raise SchemeError(f"{self.name} signs raw payloads only; it has no request format")

    def known_query_shape(self, method: str, path: str, names: tuple[str, ...]) -> Any:
        """For a scheme that signs a query-only request of a shape it has signed before from the
        query string alone (:meth:`sign_known_query`): what it remembered of the shape; None if it
        does not (then only :meth:`sign_http` signs it)."""
        return None

    def sign_known_query(self, query: str, shape: Any, now_ms: int) -> SignedHttp:
        """``sign_http(method, path, params, b"", now_ms)`` for a request of a shape that
        :meth:`known_query_shape` knows, ``query`` its parameters joined as ``name=value`` by
        ``&``, every name and value unreserved (nothing to percent-encode)."""
        raise SchemeError(f"{self.name} has no request shapes to sign from")

    def public_key_pem(self) -> bytes | None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} scheme={self.name!r} secret=<hidden>>"

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} holds a secret and cannot be pickled or copied")


# -- raw schemes ------------------------------------------------------------------------------
class _Hmac(SigningKey):
    digest: ClassVar[str]

    def _load(self, secret: bytes) -> None:
        self._secret = secret
        self._inner, self._outer = hmac_pads(secret, self.digest)

    def sign(self, payload: bytes) -> bytes:
        # HMAC (RFC 2104) from the keyed inner and outer states made once: a third of hmac.digest's cost.
        inner = self._inner.copy()
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def hmac_pads(secret: bytes, digest: str) -> tuple[Any, Any]:
    """The hash states after absorbing ``secret`` XOR ipad and XOR opad (RFC 2104): an HMAC is then
    two copies, two updates and two digests. They are as secret as the key and live only with it."""
    inner, outer = hashlib.new(digest), hashlib.new(digest)
    block = inner.block_size
    key = hashlib.new(digest, secret).digest() if len(secret) > block else secret
    key = key.ljust(block, b"\0")
    inner.update(key.translate(_IPAD))
    outer.update(key.translate(_OPAD))
    return inner, outer


_IPAD, _OPAD = bytes(byte ^ 0x36 for byte in range(256)), bytes(byte ^ 0x5C for byte in range(256))


class HmacSha256(_Hmac):
    name = "hmac-sha256"
    digest = "sha256"


class HmacSha512(_Hmac):
    name = "hmac-sha512"
    digest = "sha512"


def load_private_pem(secret: bytes, scheme: str) -> object:
    try:
        key: object = serialization.load_pem_private_key(secret, password=None)
    except Exception:  # ValueError, TypeError, UnsupportedAlgorithm: never echo or chain the key bytes
        key = None
    if key is None:  # raised outside the except block, so no __context__ refers to the parse error
        raise SchemeError(f"{scheme}: the secret must be an unencrypted PEM private key")
    return key


class _Asymmetric(SigningKey):
    asymmetric = True
    key_type: ClassVar[type]

    @classmethod
    def fresh_secret(cls, passphrase: str | None = None) -> bytes:
        """A new private key (PEM, PKCS#8) of the scheme's kind."""
        key = cls._new_private_key()
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    @classmethod
    def _new_private_key(cls) -> Any:
        raise NotImplementedError

    def _load(self, secret: bytes) -> None:
        key = load_private_pem(secret, self.name)
        if not isinstance(key, self.key_type):
            raise SchemeError(f"{self.name}: the PEM key is not of the right type for this scheme")
        self._check(key)
        self._key: Any = key

    def _check(self, key: Any) -> None:
        pass

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class Ed25519(_Asymmetric):
    name = "ed25519"
    key_type = ed25519.Ed25519PrivateKey
    key_kind = "ed25519"

    @classmethod
    def _new_private_key(cls) -> Any:
        return ed25519.Ed25519PrivateKey.generate()

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload)


class EcdsaP256(_Asymmetric):
    """ECDSA over P-256 with SHA-256; the signature is DER (as ``cryptography`` produces it)."""

    name = "ecdsa-p256"
    key_type = ec.EllipticCurvePrivateKey
    key_kind = "p256"

    @classmethod
    def _new_private_key(cls) -> Any:
        return ec.generate_private_key(ec.SECP256R1())

    def _check(self, key: Any) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise SchemeError(f"{self.name}: the key must be on curve P-256")

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload, ec.ECDSA(hashes.SHA256()))


class RsaPkcs1v15Sha256(_Asymmetric):
    name = "rsa-pkcs1v15-sha256"
    key_type = rsa.RSAPrivateKey
    key_kind = "rsa"

    @classmethod
    def _new_private_key(cls) -> Any:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def _check(self, key: Any) -> None:
        if key.key_size < 2048:
            raise SchemeError(f"{self.name}: the RSA key must be at least 2048 bits")

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload, padding.PKCS1v15(), hashes.SHA256())


RAW_SIGNERS: tuple[type[SigningKey], ...] = (HmacSha256, HmacSha512, Ed25519, EcdsaP256, RsaPkcs1v15Sha256)


# -- what exchange schemes share ----------------------------------------------------------------
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def encode(text: str) -> str:
    """Percent-encoded, only the RFC 3986 unreserved characters left as they are."""
    # Most names and values are unreserved already; quote() costs a microsecond each.
    return text if all_unreserved(text) else quote(text, safe="")


def all_unreserved(text: str) -> bool:
    """Every character of ``text`` RFC 3986 unreserved (``_UNRESERVED.issuperset(text)``, at a
    fraction of its cost: ASCII text's bytes, those unreserved deleted in C, leave nothing)."""
    return text.isascii() and not text.encode().translate(None, _UNRESERVED_BYTES)


def plain_query(query: str, pairs: int) -> bool:
    """``query`` is ``pairs`` pairs ``name=value`` joined by ``&``, every name and value unreserved
    (so nothing in it needed percent-encoding, and no "=" or "&" came from a name or a value)."""
    return (
        query.isascii() and not query.encode().translate(None, _QUERY_BYTES)
        and query.count("=") == pairs and query.count("&") == pairs - 1
    )


def query_string(params: Iterable[tuple[str, str]]) -> str:
    params = tuple(params)
    # The usual case, nothing to encode, at C speed: every character unreserved but the separators,
    # and exactly one "=" a pair and one "&" between pairs (so none came from a name or a value,
    # and no pair had other than two items).
    query = "&".join(map("=".join, params))
    if plain_query(query, len(params)):
        return query
    return "&".join(f"{encode(name)}={encode(value)}" for name, value in params)


def string_pairs(params: tuple) -> bool:
    """Every item a tuple of two strings (what ``"=".join`` must be given to mean a pair)."""
    return _TUPLE.issuperset(map(type, params)) and _TWO.issuperset(map(len, params)) and _STR.issuperset(map(type, chain.from_iterable(params)))


_UNRESERVED_BYTES = "".join(sorted(_UNRESERVED)).encode()
_QUERY_BYTES = _UNRESERVED_BYTES + b"=&"
_TUPLE, _TWO, _STR = frozenset({tuple}), frozenset({2}), frozenset({str})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def check_method(scheme: str, method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise SchemeError(f"{scheme}: the method must be {' or '.join(allowed)}")


def check_path(scheme: str, path: str, prefix: str = "/") -> None:
    if not isinstance(path, str) or not _PATH.fullmatch(path) or "?" in path or "#" in path or not path.startswith(prefix):
        raise SchemeError(
            f"{scheme}: the path must be an absolute path starting with {prefix!r}, printable ASCII, "
            "without '?' or '#' (parameters go in params)"
        )


def check_params(scheme: str, params: Params, reserved: tuple[str, ...] = ()) -> Params:
    params = tuple(params)
    if not string_pairs(params):  # one pass at C speed: this runs for every request
        raise SchemeError(f"{scheme}: params must be (name, value) pairs of strings")
    names = [name for name, _ in params]
    if not all(names):
        raise SchemeError(f"{scheme}: a parameter name is empty")
    if not utf8_ok("".join(chain.from_iterable(params))):
        raise SchemeError(f"{scheme}: parameter names and values must be valid Unicode text")
    for name in reserved:
        if name in names:
            raise SchemeError(f"{scheme}: the enclave sets {name!r} itself; do not pass it")
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise SchemeError(f"{scheme}: parameter {duplicate[:64]!r} appears more than once")
    return params


def utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def checked_now(scheme: str, now_ms: int) -> int:
    """The enclave clock reading, refused if it is out of range."""
    if type(now_ms) is not int or not 0 <= now_ms < MAX_NOW_MS:
        raise SchemeError(f"{scheme}: the enclave clock reading is out of range")
    return now_ms


def iso_ms(now_ms: int) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``."""
    stamp = _EPOCH + timedelta(milliseconds=now_ms)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{now_ms % 1000:03d}Z"
