"""Shared by test_policy.py and test_policy_properties.py: policy states and requests per exchange.

Requests are given as ``(method, path, params, body)`` exactly as ``PolicyState.authorize_request``
and ``SigningKey.sign_http`` take them: Binance, Binance WebSocket and Kraken carry their fields as
params; Bybit and OKX carry GET fields as params and POST fields as a JSON body.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from enclave.protocol.exchange import DANGEROUS_CATEGORIES, Endpoint
from enclave.protocol.exchanges import SCHEME_NAMES, exchange_for_scheme
from enclave.protocol.policy import PolicyState, Refusal, SigningPolicy
from enclave.protocol.policy.limits import NotionalWindow

# The registry, seen the way the tests need it (the image itself only looks descriptors up by scheme).
SCHEME_EXCHANGES = {scheme: exchange for scheme in SCHEME_NAMES if (exchange := exchange_for_scheme(scheme)) is not None}
EXCHANGES = {exchange.name: exchange for exchange in SCHEME_EXCHANGES.values()}
CATALOGUES = {name: exchange.endpoints for name, exchange in EXCHANGES.items()}
RAW_SCHEMES = tuple(scheme for scheme in SCHEME_NAMES if scheme not in SCHEME_EXCHANGES)

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z, the enclave clock in these tests

# one scheme per catalogue, to build policies with: the descriptor's first
SCHEME_FOR = {name: exchange.schemes[0].name for name, exchange in EXCHANGES.items()}
EXCHANGE_SCHEMES = sorted(SCHEME_EXCHANGES)
# parameters the scheme supplies itself when the caller leaves them out
IMPLICIT = {name: set(exchange.implicit) for name, exchange in EXCHANGES.items() if exchange.implicit}

DANGEROUS = [
    pytest.param(catalogue, endpoint, id=f"{catalogue}:{endpoint.name}")
    for catalogue, endpoints in CATALOGUES.items()
    for endpoint in endpoints
    if endpoint.category in DANGEROUS_CATEGORIES
]


def catalogue_of(scheme: str) -> str | None:
    """The name of the catalogue a scheme's requests are checked against (``None``: a raw scheme)."""
    exchange = exchange_for_scheme(scheme)
    return exchange.name if exchange is not None else None


def window_total(window: NotionalWindow, now_ms: int) -> Decimal:
    """The window's total now: what ``admit`` reports, counting nothing, for no more notional
    against a limit below zero."""
    total = window.admit(now_ms, Decimal(0), Decimal(-1), commit=False)
    assert total is not None
    return total


def state(document: dict | None, scheme: str) -> PolicyState:
    return PolicyState(SigningPolicy.parse(document, scheme=scheme))


def permissive(catalogue: str, **extra: Any) -> dict:
    """A policy naming every trade and read endpoint of the catalogue (and nothing dangerous)."""
    allow = [e.name for e in CATALOGUES[catalogue] if e.category in {"trade", "read"}]
    return {"allow": allow, **extra}


def request(catalogue: str, method: str, path: str, fields: list[tuple[str, str]]) -> tuple[str, str, tuple[tuple[str, str], ...], bytes]:
    """The request as the caller passes it, with ``fields`` where that exchange carries them."""
    if catalogue in {"bybit", "okx"} and method not in ("GET", "WS"):  # WS: their logins, without fields
        return method, path, (), json.dumps(dict(fields), separators=(",", ":")).encode()
    if catalogue == "coinbase":
        return method, path, (), json.dumps(dict(fields)).encode() if fields else b""
    return method, path, tuple(fields), b""


def concrete_path(path: str) -> str:
    """A real path for a templated catalogue path (``{account_id}`` → a UUID, as Coinbase uses)."""
    return path.replace("{account_id}", "8bfc20d7-f7c6-4422-bf07-8243ca4169fe")


def value_for(name: str, now: int = NOW) -> str:
    """A canonical, plausible value for a parameter name."""
    if name in {"timestamp", "nonce"}:
        return str(now)
    if name in {"symbol", "pair"}:
        return "BTCUSDT"
    if name == "instId":
        return "BTC-USDT"
    if name in {"amount", "amt", "qty", "quantity", "sz", "volume", "price", "px"}:
        return "1"
    return "x1"


def endpoint_fields(catalogue: str, endpoint: Endpoint, now: int = NOW) -> list[tuple[str, str]]:
    """The endpoint's required parameters with canonical values (a documented spelling for an
    enumerated one), leaving out what the scheme sets itself (the WebSocket apiKey, Kraken's nonce)."""
    skip = {"apiKey"} if catalogue == "binance-ws" else {"nonce"} if catalogue == "kraken" else set()
    return [(name, documented(endpoint, name) or value_for(name, now)) for name in sorted(endpoint.required - skip)]


def documented(endpoint: Endpoint, name: str) -> str | None:
    """The first of the spellings the exchange documents for ``name`` at ``endpoint`` (None: free-form)."""
    spellings = endpoint.values.get(name)
    return sorted(spellings)[0] if spellings else None


ENUMERATED = [
    pytest.param(catalogue, endpoint, name, id=f"{endpoint.name}:{name}")
    for catalogue, endpoints in CATALOGUES.items()
    for endpoint in endpoints
    for name in sorted(endpoint.values)
]


def misspellings(value: str) -> set[str]:
    """Ways a host could write ``value`` that an exchange might still read as it: case, signs,
    padding, separators, numeric forms."""
    candidates = {
        value.lower(), value.upper(), value.title(), value.swapcase(), value.capitalize(),
        "0" + value, "+" + value, value + ".0", value + ",", value + ",," , value.replace("_", "-"), value.replace("-", "_"),
        value.replace("_", ""), "-" + value, value + value, "", "0x" + value,
    }
    if value in {"true", "false"}:
        candidates |= {"1" if value == "true" else "0", "TRUE" if value == "true" else "FALSE", "True" if value == "true" else "False", "yes", "on"}
    if value.isdigit():
        candidates |= {f"0{value}", f"+{value}", f"{value}.0", f"{value}e0", "1" + value}
    return candidates


def refusal(state_: PolicyState, method: str, path: str, params: tuple = (), body: bytes = b"", now: int = NOW) -> Refusal:
    with pytest.raises(Refusal) as info:
        state_.authorize_request(method, path, tuple(params), body, now)
    return info.value


def binance_order(**overrides: str | None) -> tuple[tuple[str, str], ...]:
    """A Binance spot LIMIT order's params; ``name=None`` drops a field, others set or add it."""
    fields: dict[str, str | None] = {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
        "quantity": "0.01", "price": "30000", "timestamp": str(NOW),
    }
    fields.update(overrides)
    return tuple((name, value) for name, value in fields.items() if value is not None)


def json_body(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()
