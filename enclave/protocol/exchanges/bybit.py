"""Bybit v5 (``bybit``): the signature covers the parameters and their format, not the method or path.

``bybit-hmac`` / ``bybit-rsa``
    GET: params form the query string, body empty. POST: the raw JSON body, no params. String to
    sign = timestamp + api key + recv window + (query string | body); HMAC-SHA256 hex or RSA PKCS#1
    v1.5 SHA-256 base64. The timestamp is always the enclave clock (``X-BAPI-TIMESTAMP``). The recv
    window is ``RECV_WINDOW.default`` (5000, Bybit's default) unless the caller passes the
    pseudo-parameter ``recv_window`` (a positive integer of at most 6 digits), which is removed
    from the parameters and sent only as ``X-BAPI-RECV-WINDOW`` (Bybit v5 has no query parameter
    of that name). Where the policy caps the window below the default, the policy engine passes
    the cap as ``recv_window`` itself. Headers ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP``, ``X-BAPI-SIGN``, ``X-BAPI-RECV-WINDOW``,
    ``X-BAPI-SIGN-TYPE: 2``, and on POST ``Content-Type: application/json``.

    WebSocket auth (method ``WS``, path ``auth``, no params but the recv window): expires = enclave
    clock + recv window (ms); signature over ``GET/realtime`` + expires, encoded as for REST; the
    body is the message to send, ``{"op":"auth","args":[api key, expires, signature]}``. A payload
    that starts with ``GET/realtime`` is no REST string to sign (those start with the timestamp).

Parameter names and spellings: Bybit v5 "Place Order" (order/create-order), "Enums Definitions"
(enum), 2025; JSON true/false and integers are compared as the text "true", "false", "1".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from ..exchange import BASE, Exchange, HeaderRecvWindow, LimitPrice, OrderFields, PlainOrder, endpoint, spellings
from ..signing import HmacSha256, Params, RsaPkcs1v15Sha256, SchemeError, SignedHttp, SigningKey, b64, check_method, check_params, check_path, checked_now, query_string

_RECV_WINDOW = re.compile(r"[1-9][0-9]{0,5}")


def recv_window_ms(text: str) -> int | None:
    """The recv window the ``recv_window`` pseudo-parameter asks for, or ``None`` unless it is a
    positive whole number of milliseconds of at most 6 digits, written canonically."""
    return int(text) if _RECV_WINDOW.fullmatch(text) else None


RECV_WINDOW = HeaderRecvWindow("recv_window", recv_window_ms, default="5000")  # Bybit's own default


# -- signers ------------------------------------------------------------------------------------
class _BybitV5(SigningKey):
    exchange = "bybit"

    def encode_signature(self, signature: bytes) -> str:
        return b64(signature)

    def _split_recv_window(self, params: Params) -> tuple[str, list[tuple[str, str]]]:
        recv_window = RECV_WINDOW.default
        rest = []
        for name, value in params:
            if name == RECV_WINDOW.name:
                if recv_window_ms(value) is None:
                    raise SchemeError(f"{self.name}: recv_window must be a positive number of milliseconds (at most 6 digits)")
                recv_window = value
            else:
                rest.append((name, value))
        return recv_window, rest

    def _ws_auth(self, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        recv_window, rest = self._split_recv_window(check_params(self.name, params))
        if path != "auth" or rest or body:
            raise SchemeError(f"{self.name}: the WebSocket request the enclave signs is 'auth', without params or body")
        expires = str(checked_now(self.name, now_ms) + int(recv_window))
        signature = self.encode_signature(self.sign(f"GET/realtime{expires}".encode()))
        return SignedHttp("", json.dumps({"op": "auth", "args": [self.api_key, expires, signature]}, separators=(",", ":")).encode(), ())

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        check_method(self.name, method, ("GET", "POST", "WS"))
        if method == "WS":
            return self._ws_auth(path, params, body, now_ms)
        check_path(self.name, path)
        recv_window, rest = self._split_recv_window(check_params(self.name, params))
        if method == "GET":
            if body:
                raise SchemeError(f"{self.name}: a GET request has no body; pass the parameters as params")
            query = query_string(rest)
            payload = query.encode()
        else:
            if rest:
                raise SchemeError(f"{self.name}: POST parameters go in the JSON body, not in params")
            query = ""
            payload = body
        timestamp = str(checked_now(self.name, now_ms))
        signature = self.encode_signature(self.sign(f"{timestamp}{self.api_key}{recv_window}".encode() + payload))
        headers = (
            ("X-BAPI-API-KEY", self.api_key),
            ("X-BAPI-TIMESTAMP", timestamp),
            ("X-BAPI-SIGN", signature),
            ("X-BAPI-RECV-WINDOW", recv_window),
            ("X-BAPI-SIGN-TYPE", "2"),  # as Bybit's own examples and pybit send it, for HMAC and RSA keys
        )
        if method == "POST":
            headers += (("Content-Type", "application/json"),)
        return SignedHttp(query, body, headers)


class BybitHmac(_BybitV5, HmacSha256):
    """Bybit v5 with a system-generated (HMAC) key: hex HMAC-SHA256."""

    name = "bybit-hmac"

    def encode_signature(self, signature: bytes) -> str:
        return signature.hex()


class BybitRsa(_BybitV5, RsaPkcs1v15Sha256):
    """Bybit v5 with a self-generated RSA key: base64 RSASSA-PKCS1-v1_5 SHA-256."""

    name = "bybit-rsa"


# -- catalogue ------------------------------------------------------------------------------------
_ORDER = (
    "isLeverage marketUnit price triggerDirection orderFilter triggerPrice triggerBy orderIv timeInForce positionIdx "
    "orderLinkId takeProfit stopLoss tpTriggerBy slTriggerBy reduceOnly closeOnTrigger smpType mmp tpslMode "
    "tpLimitPrice slLimitPrice tpOrderType slOrderType"
)
_TRIGGER = "LastPrice IndexPrice MarkPrice"
_CATEGORY = spellings(category="spot linear inverse option")
_FILTER = spellings(orderFilter="Order tpslOrder StopOrder")
_ORDER_VALUES = spellings(
    category="spot linear inverse option",
    side="Buy Sell",
    orderType="Market Limit",
    isLeverage="0 1",
    marketUnit="baseCoin quoteCoin",
    triggerDirection="1 2",
    orderFilter="Order tpslOrder StopOrder",
    triggerBy=_TRIGGER, tpTriggerBy=_TRIGGER, slTriggerBy=_TRIGGER,
    timeInForce="GTC IOC FOK PostOnly RPI",
    positionIdx="0 1 2",
    reduceOnly="true false", closeOnTrigger="true false", mmp="true false",
    smpType="None CancelMaker CancelTaker CancelBoth",
    tpslMode="Full Partial",
    tpOrderType="Market Limit", slOrderType="Market Limit",
)
_AMEND_VALUES = {name: _ORDER_VALUES[name] for name in ("category", "tpslMode", "triggerBy", "tpTriggerBy", "slTriggerBy")}
ENDPOINTS = (
    endpoint("POST", "/v5/order/create", "trade", "order", "category symbol side orderType qty", _ORDER, _ORDER_VALUES),
    endpoint("POST", "/v5/order/amend", "trade", "amend", "category symbol",
             "orderId orderLinkId orderIv triggerPrice qty price tpslMode takeProfit stopLoss tpTriggerBy slTriggerBy triggerBy tpLimitPrice slLimitPrice", _AMEND_VALUES),
    endpoint("POST", "/v5/order/cancel", "trade", "cancel", "category symbol", "orderId orderLinkId orderFilter", {**_CATEGORY, **_FILTER}),
    endpoint("POST", "/v5/order/cancel-all", "trade", "cancel", "category", "symbol baseCoin settleCoin orderFilter stopOrderType", {**_CATEGORY, **_FILTER}),
    endpoint("GET", "/v5/order/realtime", "read", "read", "category", "symbol baseCoin settleCoin orderId orderLinkId openOnly orderFilter limit cursor",
             {**_CATEGORY, **_FILTER, **spellings(openOnly="0 1 2")}),
    endpoint("GET", "/v5/order/history", "read", "read", "category", "symbol baseCoin settleCoin orderId orderLinkId orderFilter orderStatus startTime endTime limit cursor",
             {**_CATEGORY, **_FILTER}),
    endpoint("GET", "/v5/account/wallet-balance", "read", "read", "accountType", "coin"),
    endpoint("GET", "/v5/position/list", "read", "read", "category", "symbol baseCoin settleCoin limit cursor", _CATEGORY),
    endpoint("POST", "/v5/position/set-leverage", "settings", "other", "category symbol buyLeverage sellLeverage"),
    # The WebSocket auth: after it, a trade connection places orders with no signature (order.create).
    endpoint("WS", "auth", "session", "other"),
    endpoint("POST", "/v5/asset/transfer/inter-transfer", "funds", "other", "transferId coin amount fromAccountType toAccountType"),
    endpoint("POST", "/v5/asset/transfer/universal-transfer", "funds", "other", "transferId coin amount fromMemberId toMemberId fromAccountType toAccountType"),
    endpoint("POST", "/v5/asset/withdraw/create", "funds", "other", "coin address amount timestamp", "chain tag forceChain accountType feeType beneficiary"),
)


# -- what the policy engine reads -----------------------------------------------------------------
def size_units(values: Mapping[str, str]) -> frozenset[str]:
    """A spot market order's qty is in the quote currency by default for buys; ``marketUnit`` picks
    the unit on unified accounts, and classic accounts ignore it: both readings count."""
    if values.get("category") != "spot" or values.get("orderType") != "Market":
        return BASE
    default = "quote" if values.get("side") == "Buy" else "base"
    chosen = {"baseCoin": "base", "quoteCoin": "quote"}.get(values.get("marketUnit", ""), default)
    return frozenset({default, chosen})


def _limit_order(side: str, symbol: str, quantity: str, price: str, client_id: str) -> PlainOrder:
    body = {"category": "spot", "symbol": symbol, "side": side.title(), "orderType": "Limit", "qty": quantity, "price": price, "timeInForce": "GTC", "orderLinkId": client_id}
    return PlainOrder("POST", "/v5/order/create", body=json.dumps(body, separators=(",", ":")))


BYBIT = Exchange(
    name="bybit",
    family="bybit",
    schemes=(BybitHmac, BybitRsa),
    endpoints=ENDPOINTS,
    covers=frozenset({"format"}),
    order_fields=OrderFields(symbol="symbol", quantity="qty", price="price"),
    limit_price=LimitPrice("orderType", frozenset({"Limit"})),
    borrowing={"isLeverage": frozenset({"1"})},
    borrowing_words="Bybit isLeverage=1",
    size_units=size_units,
    json_body_methods=frozenset({"POST"}),
    decimal_params=frozenset("qty price triggerPrice takeProfit stopLoss tpLimitPrice slLimitPrice amount".split()),
    header_recv_window=RECV_WINDOW,
    limit_order=_limit_order,
    example_symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT", "LTCBTC"),
)
EXCHANGES = (BYBIT,)
