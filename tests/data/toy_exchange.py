"""Toy: a made-up HMAC exchange in one module, to show that adding a module is enough.

``tests/test_toy_exchange.py`` copies it into ``enclave/protocol/exchanges/toy.py`` of a copy of the
enclave package; nothing else changes. Documented string to sign (hex HMAC-SHA256 of the secret)::

    <timestamp ms> "\\n" <METHOD> "\\n" <path> "\\n" <query string>

The signature covers the method and the path. Headers ``TOY-KEY``, ``TOY-TIMESTAMP``, ``TOY-SIGN``.
"""

from __future__ import annotations

from ..exchange import Exchange, LimitPrice, OrderFields, PlainOrder, endpoint, spellings
from ..signing import HmacSha256, Params, SchemeError, SignedHttp, check_method, check_params, check_path, checked_now, query_string


class ToyHmac(HmacSha256):
    """Toy: hex HMAC-SHA256 of timestamp, method, path and query string, one per line."""

    name = "toy-hmac"
    exchange = "toy"

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        check_method(self.name, method, ("GET", "POST"))
        check_path(self.name, path, prefix="/v1/")
        if body:
            raise SchemeError(f"{self.name}: pass the fields as params")
        query = query_string(check_params(self.name, params))
        timestamp = str(checked_now(self.name, now_ms))
        signature = self.sign(f"{timestamp}\n{method}\n{path}\n{query}".encode()).hex()
        return SignedHttp(query, b"", (("TOY-KEY", self.api_key), ("TOY-TIMESTAMP", timestamp), ("TOY-SIGN", signature)))


ENDPOINTS = (
    endpoint("POST", "/v1/order", "trade", "order", "symbol side type qty", "price client_id", spellings(side="buy sell", type="limit market")),
    endpoint("GET", "/v1/orders", "read", "read", "", "symbol"),
    endpoint("POST", "/v1/withdraw", "funds", "other", "asset amount address"),
)


def _limit_order(side: str, symbol: str, quantity: str, price: str, client_id: str) -> PlainOrder:
    return PlainOrder("POST", "/v1/order", (("symbol", symbol), ("side", side.lower()), ("type", "limit"), ("qty", quantity), ("price", price), ("client_id", client_id)))


TOY = Exchange(
    name="toy",
    family="toy",
    schemes=(ToyHmac,),
    endpoints=ENDPOINTS,
    covers=frozenset({"method", "path"}),
    order_fields=OrderFields(symbol="symbol", quantity="qty", price="price"),
    limit_price=LimitPrice("type", frozenset({"limit"})),
    borrowing_words="",
    decimal_params=frozenset({"qty", "price", "amount"}),
    limit_order=_limit_order,
    example_symbols=("TOYUSD", "BTCUSD"),
)
EXCHANGES = (TOY,)
