"""Hypothesis strategies for exchange requests, for property tests of strategies and policies.

Each strategy draws a :class:`Request` — method, path, parameters (in order) and body — shaped
like what a bot sends through ``Signer.sign_request``. ``orders(scheme, ...)`` draws orders that
fit the given symbols and limits; ``fund_moving_requests(scheme)`` draws withdrawals, transfers,
account-security changes and session logons from ZeroCopy's endpoint catalogue, which a policy
must refuse unless it names them; ``requests(scheme, ...)`` mixes both. Every request says what it
is: ``.endpoint`` (the catalogue's name, ``"POST /api/v3/order"``), ``.category`` (``"trade"`` for
orders; ``"funds"``, ``"security"``, ``"session"`` or ``"settings"`` for the others) and
``.fund_moving`` (``True`` for those: what the safe-default policy refuses).

>>> from hypothesis import given
>>> from pytest_zerocopy.strategies import orders
>>> @given(order=orders("binance-hmac", symbols=["BTCUSDT"], max_quantity="0.01"))
... def test_my_bot_signs(order, zerocopy_signer, my_key): ...
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Sequence

from hypothesis import strategies as st

from enclave.protocol.exchange import DANGEROUS_CATEGORIES, Exchange, endpoint_name
from enclave.protocol.exchanges import exchange_for_scheme

__all__ = ["Request", "decimals", "orders", "fund_moving_requests", "requests"]

_TEMPLATED_SEGMENT = re.compile(r"\{[^/{}]+\}")


@dataclass(frozen=True)
class Request:
    """A drawn request. ``endpoint`` is its catalogue name, ``category`` the catalogue's category
    (``"trade"`` for orders), and ``fund_moving`` says whether it is a withdrawal, transfer,
    account-security change or session logon — what a policy refuses unless it names it."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    body: str = ""
    meta: dict = field(default_factory=dict, compare=False)  # symbol, quantity, price drawn
    endpoint: str = ""
    category: str = ""

    @property
    def fund_moving(self) -> bool:
        return self.category in DANGEROUS_CATEGORIES

    def call_args(self) -> dict[str, Any]:
        """Keyword arguments for ``Signer.sign_request(key, **request.call_args())``."""
        return {"method": self.method, "path": self.path, "params": list(self.params), "body": self.body or None}


def decimals(max_value: str | Decimal = "1000", *, places: int = 8, min_value: str | Decimal | None = None) -> st.SearchStrategy[str]:
    """Canonical decimal strings (no exponent, no leading zeros, no sign) in (min_value, max_value]."""
    low = Decimal(min_value) if min_value is not None else Decimal(1).scaleb(-places)
    return st.decimals(min_value=low, max_value=Decimal(max_value), places=places, allow_nan=False, allow_infinity=False).map(
        lambda d: format(d.normalize(), "f")
    )


def _exchange(scheme: str) -> Exchange:
    exchange = exchange_for_scheme(scheme)
    if exchange is None:
        raise ValueError(f"{scheme!r} is a raw scheme: it has no request format")
    return exchange


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
    exchange = _exchange(scheme)
    if exchange.limit_order is None:
        raise ValueError(f"the {exchange.name} descriptor says nothing of how to write a limit order")
    quantity = Decimal(draw(decimals(max_quantity, places=6)))
    price = Decimal(draw(decimals(max_price, places=2, min_value="0.01")))
    if max_notional is not None and quantity * price > Decimal(max_notional):
        price = (Decimal(max_notional) / quantity).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
        if price <= 0:
            quantity, price = Decimal("0.000001"), Decimal("0.01")
    qty, px = format(quantity.normalize(), "f"), format(price.normalize(), "f")
    side = draw(st.sampled_from(["BUY", "SELL"]))
    client_id = draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=20))
    symbol = draw(st.sampled_from(list(symbols or exchange.example_symbols)))
    order = exchange.limit_order(side, symbol, qty, px, client_id)
    meta = {"quantity": qty, "price": px, "symbol": symbol}
    return Request(order.method, order.path, order.params, order.body, meta=meta, endpoint=endpoint_name(order.method, order.path), category="trade")


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
    exchange = _exchange(scheme)
    endpoints = [endpoint for endpoint in exchange.endpoints if endpoint.category in DANGEROUS_CATEGORIES]
    if not endpoints:
        raise ValueError(f"the {exchange.name} catalogue has no fund-moving endpoint")
    endpoint = draw(st.sampled_from(endpoints))
    required, optional = endpoint.required - exchange.implicit, endpoint.optional - exchange.implicit
    names = sorted(required) + sorted(draw(st.sets(st.sampled_from(sorted(optional))) if optional else st.just(set())))
    values = {name: draw(_value(name)) for name in names}
    path = _TEMPLATED_SEGMENT.sub(draw(st.uuids()).hex, endpoint.path)
    described = {"meta": {"endpoint": endpoint.name}, "endpoint": endpoint.name, "category": endpoint.category}
    if endpoint.method in exchange.json_body_methods:
        return Request(endpoint.method, path, body=json.dumps(values, separators=(",", ":")), **described)
    return Request(endpoint.method, path, tuple(values.items()), **described)


def requests(scheme: str, **order_limits: Any) -> st.SearchStrategy[Request]:
    """Orders within the limits, and fund-moving requests, mixed: what a bot and an attacker send.
    Tell them apart by ``request.fund_moving`` (or ``.category`` / ``.endpoint``)."""
    return st.one_of(orders(scheme, **order_limits), fund_moving_requests(scheme))
