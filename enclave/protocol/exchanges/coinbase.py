"""Coinbase Advanced Trade (``coinbase``): the JWT covers the method and path, not the body.

``coinbase-jwt`` (CDP API keys)
    The secret is the P-256 private key PEM, ``api_key`` the key name
    ``organizations/{org_id}/apiKeys/{key_id}``. The enclave issues an ES256 JWT: header
    ``{alg: ES256, kid: api_key, nonce: 64 random hex digits, typ: JWT}``, claims ``{sub: api_key,
    iss: "cdp", nbf: now (s), exp: nbf + 120, uri: "METHOD api.coinbase.com/path"}`` (no query
    string in ``uri``), signature raw ``r||s`` base64url. Params become the query string, the body
    is sent as given. Header ``Authorization: Bearer <jwt>``.

A policy can restrict which requests get a JWT, but not what is in their bodies.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, ClassVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ..exchange import Exchange, PlainOrder, UnsignedBody, endpoint
from ..signing import EcdsaP256, Params, SignedHttp, b64url, check_method, check_params, check_path, checked_now, query_string


class CoinbaseJwt(EcdsaP256):
    """Coinbase Advanced Trade: a fresh ES256 JWT per request, sent as ``Authorization: Bearer``."""

    name = "coinbase-jwt"
    exchange = "coinbase"
    HOST: ClassVar[str] = "api.coinbase.com"
    LIFETIME_S: ClassVar[int] = 120

    def sign(self, payload: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(payload, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        check_method(self.name, method, ("GET", "POST", "PUT", "DELETE"))
        check_path(self.name, path)
        params = check_params(self.name, params)
        issued = checked_now(self.name, now_ms) // 1000
        header = {"alg": "ES256", "kid": self.api_key, "nonce": secrets.token_hex(32), "typ": "JWT"}
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


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


ENDPOINTS = (
    endpoint("POST", "/api/v3/brokerage/orders", "trade", "order"),
    endpoint("POST", "/api/v3/brokerage/orders/batch_cancel", "trade", "cancel"),
    endpoint("POST", "/api/v3/brokerage/orders/edit", "trade", "amend"),
    endpoint("GET", "/api/v3/brokerage/orders/historical/batch", "read", "read"),
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
