"""Hypothesis strategies for exchange requests, for property tests of strategies and policies.

Each strategy draws a :class:`Request` — method, path, parameters (in order) and body — shaped
like what a bot sends through ``Signer.sign_request``. ``orders(scheme, ...)`` draws orders that
fit the given symbols and limits; ``fund_moving_requests(scheme)`` draws withdrawals, transfers,
account-security changes and session logons from ZeroCopy's endpoint catalogue, which a policy
must refuse unless it names them.

>>> from hypothesis import given
>>> from pytest_zerocopy.strategies import orders
>>> @given(order=orders("binance-hmac", symbols=["BTCUSDT"], max_quantity="0.01"))
... def test_my_bot_signs(order, zerocopy_signer, my_key): ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Sequence

from hypothesis import strategies as st

from enclave.protocol.catalogue import CATALOGUES, DANGEROUS_CATEGORIES
from enclave.protocol.schemes import POLICY_CATALOGUE

__all__ = ["Request", "decimals", "orders", "fund_moving_requests", "requests"]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    body: str = ""
    meta: dict = field(default_factory=dict, compare=False)  # symbol, quantity, price drawn

    def call_args(self) -> dict[str, Any]:
        """Keyword arguments for ``Signer.sign_request(key, **request.call_args())``."""
        return {"method": self.method, "path": self.path, "params": list(self.params), "body": self.body or None}


def decimals(max_value: str | Decimal = "1000", *, places: int = 8, min_value: str | Decimal | None = None) -> st.SearchStrategy[str]:
    """Canonical decimal strings (no exponent, no leading zeros, no sign) in (min_value, max_value]."""
    low = Decimal(min_value) if min_value is not None else Decimal(1).scaleb(-places)
    return st.decimals(min_value=low, max_value=Decimal(max_value), places=places, allow_nan=False, allow_infinity=False).map(
        lambda d: format(d.normalize(), "f")
    )


_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "LTCBTC"]
_OKX_SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
_KRAKEN_PAIRS = ["XBTUSD", "ETHUSD", "SOLUSD"]


def _catalogue(scheme: str) -> str:
    catalogue = POLICY_CATALOGUE.get(scheme)
    if catalogue is None:
        raise ValueError(f"{scheme!r} is a raw scheme: it has no request format")
    return catalogue


@st.composite
def orders(
    draw: Any,
    scheme: str,
    *,
    symbols: Sequence[str] | None = None,
    max_quantity: str = "10",
    max_price: str = "100000",
    max_notional: str | None = None,
) -> Request:
    """A limit order (quantity and price drawn within the limits) in the scheme's exchange format."""
    catalogue = _catalogue(scheme)
    quantity = Decimal(draw(decimals(max_quantity, places=6)))
    price = Decimal(draw(decimals(max_price, places=2, min_value="0.01")))
    if max_notional is not None and quantity * price > Decimal(max_notional):
        price = (Decimal(max_notional) / quantity).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
        if price <= 0:
            quantity, price = Decimal("0.000001"), Decimal("0.01")
    qty, px = format(quantity.normalize(), "f"), format(price.normalize(), "f")
    side = draw(st.sampled_from(["BUY", "SELL"]))
    client_id = draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=20))
    meta = {"quantity": qty, "price": px}
    if catalogue in ("binance", "binance-ws"):
        symbol = draw(st.sampled_from(list(symbols or _SYMBOLS)))
        params = (("symbol", symbol), ("side", side), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", qty), ("price", px), ("newClientOrderId", client_id))
        if catalogue == "binance-ws":
            return Request("WS", "order.place", params, meta={**meta, "symbol": symbol})
        return Request("POST", "/api/v3/order", params, meta={**meta, "symbol": symbol})
    if catalogue == "bybit":
        symbol = draw(st.sampled_from(list(symbols or _SYMBOLS)))
        body = {"category": "spot", "symbol": symbol, "side": side.title(), "orderType": "Limit", "qty": qty, "price": px, "timeInForce": "GTC", "orderLinkId": client_id}
        return Request("POST", "/v5/order/create", body=json.dumps(body, separators=(",", ":")), meta={**meta, "symbol": symbol})
    if catalogue == "okx":
        symbol = draw(st.sampled_from(list(symbols or _OKX_SYMBOLS)))
        body = {"instId": symbol, "tdMode": "cash", "side": side.lower(), "ordType": "limit", "sz": qty, "px": px, "clOrdId": client_id}
        return Request("POST", "/api/v5/trade/order", body=json.dumps(body, separators=(",", ":")), meta={**meta, "symbol": symbol})
    if catalogue == "kraken":
        symbol = draw(st.sampled_from(list(symbols or _KRAKEN_PAIRS)))
        params = (("ordertype", "limit"), ("type", side.lower()), ("volume", qty), ("pair", symbol), ("price", px))
        return Request("POST", "/0/private/AddOrder", params, meta={**meta, "symbol": symbol})
    # Coinbase: the JWT covers the method and path only.
    product = draw(st.sampled_from(["BTC-USD", "ETH-USD"]))
    body = {"client_order_id": client_id, "product_id": product, "side": side, "order_configuration": {"limit_limit_gtc": {"base_size": qty, "limit_price": px}}}
    return Request("POST", "/api/v3/brokerage/orders", body=json.dumps(body), meta={**meta, "symbol": product})


_VALUE_FOR = {
    "coin": st.sampled_from(["BTC", "USDT", "ETH"]), "asset": st.sampled_from(["BTC", "USDT", "ETH"]), "ccy": st.sampled_from(["BTC", "USDT"]),
    "address": st.text("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", min_size=26, max_size=42),
    "toAddr": st.text("0123456789abcdef", min_size=40, max_size=40).map(lambda h: "0x" + h),
    "amount": decimals("100"), "amt": decimals("100"), "type": st.sampled_from(["MAIN_UMFUTURE", "1", "2", "MAIN_MARGIN"]),
}


def _value(name: str) -> st.SearchStrategy[str]:
    if name in _VALUE_FOR:
        return _VALUE_FOR[name]
    if name in ("timestamp", "nonce"):
        return st.integers(1_600_000_000_000, 1_900_000_000_000).map(str)
    return st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=16)


@st.composite
def fund_moving_requests(draw: Any, scheme: str) -> Request:
    """A request for a withdrawal, transfer, account-security change or session logon from the
    catalogue of the scheme's exchange: its required parameters plus some optional ones."""
    catalogue = _catalogue(scheme)
    endpoints = [endpoint for endpoint in CATALOGUES[catalogue] if endpoint.category in DANGEROUS_CATEGORIES]
    if not endpoints:
        raise ValueError(f"the {catalogue} catalogue has no fund-moving endpoint")
    endpoint = draw(st.sampled_from(endpoints))
    implicit = {"apiKey", "timestamp"} if catalogue == "binance-ws" else {"nonce"} if catalogue == "kraken" else set()
    names = sorted(endpoint.required - implicit) + sorted(draw(st.sets(st.sampled_from(sorted(endpoint.optional - implicit))) if endpoint.optional - implicit else st.just(set())))
    values = {name: draw(_value(name)) for name in names}
    path = endpoint.path.replace("{account_id}", draw(st.uuids()).hex)
    if catalogue in ("bybit", "okx") and endpoint.method == "POST":
        return Request(endpoint.method, path, body=json.dumps(values, separators=(",", ":")), meta={"endpoint": endpoint.name})
    return Request(endpoint.method, path, tuple(values.items()), meta={"endpoint": endpoint.name})


def requests(scheme: str, **order_limits: Any) -> st.SearchStrategy[Request]:
    """Orders within the limits, and fund-moving requests, mixed: what a bot and an attacker send."""
    return st.one_of(orders(scheme, **order_limits), fund_moving_requests(scheme))
