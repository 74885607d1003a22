"""Scheme names: the vocabulary shared by sealed bundles, the CLI and the enclave.

``enclave.schemes`` checks at import that its registry implements exactly these names.
"""

from __future__ import annotations

__all__ = ["RAW_SCHEMES", "EXCHANGE_SCHEMES", "ASYMMETRIC_SCHEMES", "SCHEME_NAMES", "EXCHANGES", "POLICY_CATALOGUE"]

RAW_SCHEMES = ("hmac-sha256", "hmac-sha512", "ed25519", "ecdsa-p256", "rsa-pkcs1v15-sha256")
# scheme -> exchange
EXCHANGE_SCHEMES = {
    "binance-hmac": "binance",
    "binance-rsa": "binance",
    "binance-ed25519": "binance",
    "binance-ws-hmac": "binance",
    "bybit-hmac": "bybit",
    "bybit-rsa": "bybit",
    "okx-hmac": "okx",
    "kraken": "kraken",
    "coinbase-jwt": "coinbase",
}
EXCHANGES = frozenset(EXCHANGE_SCHEMES.values())
# scheme -> the endpoint catalogue (enclave.protocol.catalogue.CATALOGUES) its requests are checked
# against: the exchange, except Binance's WebSocket API, whose methods and signature differ from REST
POLICY_CATALOGUE = {scheme: exchange for scheme, exchange in EXCHANGE_SCHEMES.items()} | {"binance-ws-hmac": "binance-ws"}
# the secret is a private key PEM (and the enclave can generate one)
ASYMMETRIC_SCHEMES = frozenset(
    {"ed25519", "ecdsa-p256", "rsa-pkcs1v15-sha256", "binance-rsa", "binance-ed25519", "bybit-rsa", "coinbase-jwt"}
)
SCHEME_NAMES = RAW_SCHEMES + tuple(EXCHANGE_SCHEMES)
