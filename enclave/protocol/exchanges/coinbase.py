"""Coinbase Advanced Trade (``coinbase``): the JWT covers the method and path, not the body.

``coinbase-jwt`` (CDP API keys)
    ``api_key`` is the key name (``organizations/{org_id}/apiKeys/{key_id}``, or the key id the
    portal shows for Ed25519 keys). The secret is one of the key types the official SDK
    (coinbase-advanced-py 1.8) loads, and the key's type picks the JWT algorithm as it does there:

    * a P-256 private key, PEM (SEC 1 or PKCS#8) -> ``ES256``, signature raw ``r||s``;
    * an Ed25519 private key, PKCS#8 PEM, or the base64 form Coinbase's portal shows (64 bytes:
      the 32-byte seed, then the 32-byte public key, which must match; the bare 32-byte seed is
      taken too, as the SDK takes it) -> ``EdDSA``, signature the 64 raw Ed25519 bytes.

    The enclave issues a JWT per request: header ``{alg, kid: api_key, nonce: 64 random hex
    digits, typ: JWT}`` (keys sorted, as PyJWT writes them), claims ``{sub: api_key, iss: "cdp",
    nbf: now (s), exp: nbf + 120, uri: "METHOD api.coinbase.com/path"}`` (no query string in
    ``uri``), each part compact JSON, base64url without padding. Params become the query string,
    the body is sent as given. Header ``Authorization: Bearer <jwt>``. ``GENERATE`` makes a P-256
    key; the test key factory offers both (``fresh_secret(key_kind="ed25519")``).

A policy can restrict which requests get a JWT, but not what is in their bodies.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any, ClassVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ..exchange import Exchange, PlainOrder, UnsignedBody, endpoint
from ..signing import (
    EcdsaP256, Params, SchemeError, SignedHttp, b64, b64url, check_method, check_params, check_path, checked_now, load_private_pem, query_string,
)

_RAW = serialization.Encoding.Raw


class CoinbaseJwt(EcdsaP256):
    """Coinbase Advanced Trade: a fresh ES256 or EdDSA JWT per request, sent as ``Authorization: Bearer``."""

    name = "coinbase-jwt"
    exchange = "coinbase"
    HOST: ClassVar[str] = "api.coinbase.com"
    LIFETIME_S: ClassVar[int] = 120
    key_kinds: ClassVar[tuple[str, ...]] = ("p256", "ed25519")  # what fresh_secret(key_kind=...) makes

    @classmethod
    def fresh_secret(cls, passphrase: str | None = None, *, key_kind: str = "p256") -> bytes:
        """A new P-256 key (PEM, PKCS#8), or with ``key_kind="ed25519"`` an Ed25519 key in the
        base64 form Coinbase's portal shows (seed followed by public key)."""
        if key_kind not in cls.key_kinds:
            raise SchemeError(f"{cls.name}: key_kind must be one of {', '.join(cls.key_kinds)}")
        if key_kind == "p256":
            return super().fresh_secret()
        key = ed25519.Ed25519PrivateKey.generate()
        seed = key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return b64(seed + key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)).encode("ascii")

    def _load(self, secret: bytes) -> None:
        key = load_private_pem(secret, self.name) if secret.lstrip().startswith(b"-----") else _portal_ed25519(secret, self.name)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            self._key: Any = key
            self._algorithm = "EdDSA"
            return
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SchemeError(f"{self.name}: the PEM key is not of the right type for this scheme (P-256 or Ed25519)")
        self._check(key)
        self._key = key
        self._algorithm = "ES256"

    def sign(self, payload: bytes) -> bytes:
        if self._algorithm == "EdDSA":
            return self._key.sign(payload)
        r, s = decode_dss_signature(self._key.sign(payload, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        check_method(self.name, method, ("GET", "POST", "PUT", "DELETE"))
        check_path(self.name, path)
        params = check_params(self.name, params)
        issued = checked_now(self.name, now_ms) // 1000
        header = {"alg": self._algorithm, "kid": self.api_key, "nonce": secrets.token_hex(32), "typ": "JWT"}
        claims = {
            "sub": self.api_key,
            "iss": "cdp",
            "nbf": issued,
            "exp": issued + self.LIFETIME_S,
            "uri": f"{method} {self.HOST}{path}",
        }
        signing_input = f"{b64url(_compact_json(header))}.{b64url(_compact_json(claims))}"
        token = f"{signing_input}.{b64url(self.sign(signing_input.encode('ascii')))}"
        return SignedHttp(query_string(params), body, (("Authorization", f"Bearer {token}"),))


def _portal_ed25519(secret: bytes, scheme: str) -> ed25519.Ed25519PrivateKey:
    """The base64 Ed25519 key Coinbase's portal shows: seed ‖ public key (or the bare seed)."""
    try:
        raw: bytes | None = base64.b64decode(b"".join(secret.split()), validate=True)
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or len(raw) not in (32, 64):  # raised outside the except block: nothing chained
        raise SchemeError(f"{scheme}: the secret must be an unencrypted PEM private key (P-256 or Ed25519) or the base64 Ed25519 key Coinbase shows")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw) != raw[32:]:
        raise SchemeError(f"{scheme}: the base64 Ed25519 key's last 32 bytes are not the public key of its first 32 (a damaged key?)")
    return key


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


ENDPOINTS = (
    endpoint("POST", "/api/v3/brokerage/orders", "trade", "order"),
    endpoint("POST", "/api/v3/brokerage/orders/batch_cancel", "trade", "cancel"),
    endpoint("POST", "/api/v3/brokerage/orders/edit", "trade", "amend"),
    endpoint("GET", "/api/v3/brokerage/orders/historical/batch", "read", "read"),
    endpoint("GET", "/api/v3/brokerage/orders/historical/{order_id}", "read", "read"),  # Get Order (the SDK's get_order, ccxt's fetch_order)
    endpoint("GET", "/v2/accounts", "read", "read"),  # ccxt's fetch_balance (its default, v2)
    endpoint("GET", "/api/v3/brokerage/accounts", "read", "read"),
    endpoint("POST", "/api/v3/brokerage/portfolios/move_funds", "funds", "other"),
    endpoint("POST", "/v2/accounts/{account_id}/transactions", "funds", "other"),
)


def _limit_order(side: str, symbol: str, quantity: str, price: str, client_id: str) -> PlainOrder:
    body = {"client_order_id": client_id, "product_id": symbol, "side": side, "order_configuration": {"limit_limit_gtc": {"base_size": quantity, "limit_price": price}}}
    return PlainOrder("POST", "/api/v3/brokerage/orders", body=json.dumps(body))


COINBASE = Exchange(
    name="coinbase",
    family="coinbase",
    schemes=(CoinbaseJwt,),
    endpoints=ENDPOINTS,
    covers=frozenset({"method", "path", "no-body"}),
    unsigned_body=UnsignedBody(
        signature="the JWT",
        borrowing="Coinbase JWTs do not cover the body: an order's leverage and margin_type cannot be refused (turn margin and futures off for the key's portfolio).",
        limits="Coinbase JWTs do not cover the request body: sizes and symbols cannot be enforced for this key.",
    ),
    limit_order=_limit_order,
    example_symbols=("BTC-USD", "ETH-USD"),
)
EXCHANGES = (COINBASE,)
