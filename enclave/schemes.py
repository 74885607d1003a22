"""The signing schemes the enclave loads keys for: one registry, built from the exchange modules.

The signers themselves live with the wire protocol — the shared base and the raw schemes in
:mod:`enclave.protocol.signing`, each exchange's in its module under
:mod:`enclave.protocol.exchanges` (which also documents its string to sign) — so that what one
exchange is stays in one place.
"""

from __future__ import annotations

from .protocol.exchanges import SCHEMES
from .protocol.signing import SchemeError, SignedHttp, SigningKey

__all__ = ["SchemeError", "SignedHttp", "SigningKey", "SCHEMES", "load_key", "generate_key"]


def load_key(scheme: str, secret: bytes, api_key: str) -> SigningKey:
    kind = SCHEMES.get(scheme)
    if kind is None:
        raise SchemeError(f"unknown scheme {str(scheme)[:64]!r}; known: {', '.join(sorted(SCHEMES))}")
    return kind(secret, api_key)


def generate_key(scheme: str) -> bytes:
    """A fresh private key (PEM, PKCS#8) for an asymmetric scheme, generated inside the enclave:
    of the kind the scheme's signer names (Ed25519, P-256 or RSA-2048)."""
    kind = SCHEMES.get(scheme)
    if kind is None or not kind.asymmetric:
        raise SchemeError(f"{str(scheme)[:64]!r} is not an asymmetric scheme; only those can generate keys")
    return kind.fresh_secret()
