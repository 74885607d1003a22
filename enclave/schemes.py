"""Signing schemes: how a loaded secret turns bytes or a request into a signature.

A scheme object is built once per key at provisioning (parsing the secret, precomputing what can
be precomputed) and then signs on the hot path without further checks. Secrets never appear in a
repr, an exception message or a log line.

Raw schemes sign arbitrary payloads. Exchange schemes additionally build the exchange's string to
sign from a request (:meth:`SigningKey.sign_http`), so the enclave — not the host — decides which
bytes are signed.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

__all__ = ["SchemeError", "SignedHttp", "SigningKey", "SCHEMES", "load_key", "generate_key"]

MAX_SECRET = 16 * 1024


class SchemeError(ValueError):
    """The secret does not fit the scheme, or the scheme cannot do what was asked."""


@dataclass(frozen=True, slots=True)
class SignedHttp:
    query: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


class SigningKey:
    name: ClassVar[str]
    asymmetric: ClassVar[bool] = False
    exchange: ClassVar[str | None] = None

    def __init__(self, secret: bytes, api_key: str) -> None:
        if not isinstance(secret, bytes) or not 0 < len(secret) <= MAX_SECRET:
            raise SchemeError(f"{self.name}: the secret must be 1 to {MAX_SECRET} bytes")
        self.api_key = api_key
        self._load(secret)

    def _load(self, secret: bytes) -> None:
        raise NotImplementedError

    def sign(self, payload: bytes) -> bytes:
        raise NotImplementedError

    def sign_http(self, method: str, path: str, params: tuple[tuple[str, str], ...], body: bytes, now_ms: int) -> SignedHttp:
        raise SchemeError(f"{self.name} signs raw payloads only; it has no request format")

    def public_key_pem(self) -> bytes | None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} scheme={self.name!r} secret=<hidden>>"


class _Hmac(SigningKey):
    digest: ClassVar[str]

    def _load(self, secret: bytes) -> None:
        self._secret = secret

    def sign(self, payload: bytes) -> bytes:
        return hmac.digest(self._secret, payload, self.digest)


class HmacSha256(_Hmac):
    name = "hmac-sha256"
    digest = "sha256"


class HmacSha512(_Hmac):
    name = "hmac-sha512"
    digest = "sha512"


def _load_private_pem(secret: bytes, scheme: str) -> object:
    try:
        return serialization.load_pem_private_key(secret, password=None)
    except Exception:  # ValueError, TypeError, UnsupportedAlgorithm: never echo the key bytes
        raise SchemeError(f"{scheme}: the secret must be an unencrypted PEM private key") from None


class _Asymmetric(SigningKey):
    asymmetric = True
    key_type: ClassVar[type]

    def _load(self, secret: bytes) -> None:
        key = _load_private_pem(secret, self.name)
        if not isinstance(key, self.key_type):
            raise SchemeError(f"{self.name}: the PEM key is not of the right type for this scheme")
        self._check(key)
        self._key = key

    def _check(self, key: object) -> None:
        pass

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class Ed25519(_Asymmetric):
    name = "ed25519"
    key_type = ed25519.Ed25519PrivateKey

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload)


class EcdsaP256(_Asymmetric):
    """ECDSA over P-256 with SHA-256; the signature is DER (as ``cryptography`` produces it)."""

    name = "ecdsa-p256"
    key_type = ec.EllipticCurvePrivateKey

    def _check(self, key: object) -> None:
        if not isinstance(key.curve, ec.SECP256R1):  # type: ignore[attr-defined]
            raise SchemeError(f"{self.name}: the key must be on curve P-256")

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload, ec.ECDSA(hashes.SHA256()))


class RsaPkcs1v15Sha256(_Asymmetric):
    name = "rsa-pkcs1v15-sha256"
    key_type = rsa.RSAPrivateKey

    def _check(self, key: object) -> None:
        if key.key_size < 2048:  # type: ignore[attr-defined]
            raise SchemeError(f"{self.name}: the RSA key must be at least 2048 bits")

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload, padding.PKCS1v15(), hashes.SHA256())


def _query_string(params: tuple[tuple[str, str], ...]) -> str:
    return "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in params)


class BinanceHmac(HmacSha256):
    """Binance REST/SAPI ``HMAC_SHA256``: hex HMAC of query string + body, key in ``X-MBX-APIKEY``."""

    name = "binance-hmac"
    exchange = "binance"

    def sign_http(self, method: str, path: str, params: tuple[tuple[str, str], ...], body: bytes, now_ms: int) -> SignedHttp:
        if not any(name == "timestamp" for name, _ in params):
            params = params + (("timestamp", str(now_ms)),)
        query = _query_string(params)
        signature = self.sign(query.encode() + body).hex()
        return SignedHttp(f"{query}&signature={signature}", body, (("X-MBX-APIKEY", self.api_key),))


SCHEMES: dict[str, type[SigningKey]] = {
    scheme.name: scheme for scheme in (HmacSha256, HmacSha512, Ed25519, EcdsaP256, RsaPkcs1v15Sha256, BinanceHmac)
}


def load_key(scheme: str, secret: bytes, api_key: str) -> SigningKey:
    try:
        kind = SCHEMES[scheme]
    except KeyError:
        raise SchemeError(f"unknown scheme {scheme!r}; known: {', '.join(sorted(SCHEMES))}") from None
    return kind(secret, api_key)


def generate_key(scheme: str) -> bytes:
    """A fresh private key (PEM) for an asymmetric scheme, generated inside the enclave."""
    kind = SCHEMES.get(scheme)
    if kind is None or not kind.asymmetric:
        raise SchemeError(f"{scheme!r} is not an asymmetric scheme; only those can generate keys")
    if issubclass(kind, Ed25519):
        key: object = ed25519.Ed25519PrivateKey.generate()
    elif issubclass(kind, EcdsaP256):
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
