"""Scheme names: the vocabulary shared by sealed bundles, the CLI and the enclave."""

from __future__ import annotations

__all__ = ["RAW_SCHEMES", "EXCHANGE_SCHEMES", "ASYMMETRIC_SCHEMES", "SCHEME_NAMES"]

RAW_SCHEMES = ("hmac-sha256", "hmac-sha512", "ed25519", "ecdsa-p256", "rsa-pkcs1v15-sha256")
# scheme -> exchange
EXCHANGE_SCHEMES = {
    "binance-hmac": "binance",
}
ASYMMETRIC_SCHEMES = frozenset({"ed25519", "ecdsa-p256", "rsa-pkcs1v15-sha256"})
SCHEME_NAMES = RAW_SCHEMES + tuple(EXCHANGE_SCHEMES)
