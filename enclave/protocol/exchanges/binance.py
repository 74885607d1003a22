"""Binance: Spot REST and SAPI (``binance``), and the WebSocket API (``binance-ws``).

Neither signature covers the method or the path: REST signs the query string + form body, the
WebSocket API every param sorted by name, ``apiKey`` included.

``binance-hmac`` / ``binance-rsa`` / ``binance-ed25519`` (REST, SIGNED endpoints)
    Payload = query string + body, concatenated without a separator (Binance "totalParams"); the
    body, if any (not for GET), is the ``application/x-www-form-urlencoded`` ASCII text to send; a
    name may not appear both in params and in the body. If no ``timestamp`` parameter is given (in
    params or the body) the enclave appends ``timestamp=<now_ms>`` to the last non-empty part.
    ``signature`` (HMAC-SHA256 hex; RSA PKCS#1 v1.5 SHA-256 base64; Ed25519 base64 — base64
    percent-encoded) is appended to the body when there is one, else to the query, as in Binance's
    examples. Header ``X-MBX-APIKEY``.
``binance-ws-hmac`` (WebSocket API)
    ``method="WS"``, ``path`` = the WebSocket method name (``order.place``), params = the request's
    ``params`` as strings, body empty. The enclave adds ``apiKey`` and, if absent, ``timestamp``;
    the payload is every param sorted by name (code-point order) as ``name=value`` joined by ``&``,
    UTF-8, not percent-encoded; HMAC-SHA256 hex. Returned: empty query, ``body`` = the params object
    as compact UTF-8 JSON (caller's order, then ``apiKey``, ``timestamp`` if added, ``signature``),
    no headers.

Parameter names and spellings: Binance Spot API (rest-api.md, enums.md), SAPI, WebSocket API, 2025.
"""

from __future__ import annotations

import json
import re
from itertools import chain
from typing import ClassVar

from ..exchange import Exchange, LimitPrice, OrderFields, PlainOrder, endpoint, spellings
from ..signing import (
    Ed25519, HmacSha256, Params, RsaPkcs1v15Sha256, SchemeError, SignedHttp, SigningKey, b64, check_method, check_params, check_path,
    all_unreserved, checked_now, encode, query_string, string_pairs,
)

_WS_METHOD = re.compile(r"[A-Za-z][A-Za-z0-9._]{0,63}")
_MAX_SHAPES = 32  # request shapes a REST key remembers (a bot sends a handful): under 100 KiB
_NO_SHAPES: dict = {}


# -- signers ------------------------------------------------------------------------------------
def _form_keys(scheme: str, body: bytes) -> list[str]:
    """Names in an ``application/x-www-form-urlencoded`` body, as written (still percent-encoded)."""
    if not body:
        return []
    if not body.isascii():
        raise SchemeError(f"{scheme}: the body must be application/x-www-form-urlencoded ASCII (percent-encode other characters)")
    keys = []
    for field in body.decode("ascii").split("&"):
        key = field.split("=", 1)[0]
        if not key:
            raise SchemeError(f"{scheme}: the body has an empty field name")
        keys.append(key)
    return keys


class _BinanceRest(SigningKey):
    exchange = "binance"
    signs_known_queries = True
    methods: ClassVar[tuple[str, ...]] = ("GET", "POST", "PUT", "DELETE")

    def encode_signature(self, signature: bytes) -> str:
        return b64(signature)

    def _signature_text(self, payload: bytes) -> str:
        """The signature of ``payload`` as it goes into the query or body, percent-encoded."""
        return encode(self.encode_signature(self.sign(payload)))

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        if type(body) is bytes and not body and type(params) is tuple and string_pairs(params):
            flat = list(chain.from_iterable(params))
            stamped = self.__dict__.get("_shapes", _NO_SHAPES).get((method, path, *flat[0::2]))
            if stamped is not None and all_unreserved("".join(flat[1::2])):
                return self._sign_query("&".join(map("=".join, params)), stamped, now_ms)
        signed = self._sign_checked(method, path, params, body, now_ms)
        if type(body) is bytes and not body:
            self._remember_shape(method, path, params)
        return signed

    def _remember_shape(self, method: str, path: str, params: Params) -> None:
        """A query-only request's shape, once it was signed: its method, path and names passed every
        check, so a request of the same shape (its values unreserved) needs only the query built
        and signed. At most ``_MAX_SHAPES`` small shapes per key, the oldest forgotten first."""
        names = [name for name, _ in params]
        if len(names) > 32 or len(path) + sum(map(len, names)) > 512 or not all_unreserved("".join(names)):
            return
        shapes = self.__dict__.setdefault("_shapes", {})
        if len(shapes) >= _MAX_SHAPES:
            try:
                shapes.pop(next(iter(shapes)), None)
            except (RuntimeError, StopIteration):  # another thread changed it meanwhile: no matter
                pass
        shapes[(method, path, *names)] = "timestamp" in names

    def known_query_shape(self, method: str, path: str, names: tuple[str, ...]) -> bool | None:
        """Whether a query-only request of this shape (signed before) carries its own ``timestamp``; None: not a known shape."""
        return self.__dict__.get("_shapes", _NO_SHAPES).get((method, path, *names))  # type: ignore[no-any-return]

    def _sign_query(self, query: str, stamped: bool, now_ms: int) -> SignedHttp:
        """Sign a query of a known shape (nothing in it to encode), adding the enclave's timestamp unless ``stamped``."""
        if not stamped:
            stamp = f"timestamp={checked_now(self.name, now_ms)}"
            query = f"{query}&{stamp}" if query else stamp
        signature = self._signature_text(query.encode())
        return SignedHttp(f"{query}&signature={signature}", b"", (("X-MBX-APIKEY", self.api_key),))

    sign_known_query = _sign_query  # the shape remembered is whether the request has its own timestamp

    def _sign_checked(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        check_method(self.name, method, self.methods)
        check_path(self.name, path)
        if method == "GET" and body:
            raise SchemeError(f"{self.name}: a GET request has no body; pass the parameters as params")
        params = check_params(self.name, params, reserved=("signature",))
        names = [name for name, _ in params]
        if body:
            names = [encode(name) for name in names] + _form_keys(self.name, body)
            if len(set(names)) != len(names):
                raise SchemeError(f"{self.name}: a parameter appears both in the query and in the body")
            if "signature" in names:
                raise SchemeError(f"{self.name}: the enclave sets 'signature' itself; do not pass it")
        query = query_string(params)
        if "timestamp" not in names:
            stamp = f"timestamp={checked_now(self.name, now_ms)}"
            if body:
                body = body + b"&" + stamp.encode()
            else:
                query = f"{query}&{stamp}" if query else stamp
        signature = self._signature_text(query.encode() + body)
        if body:
            body = body + b"&signature=" + signature.encode()
        else:
            query = f"{query}&signature={signature}"
        return SignedHttp(query, body, (("X-MBX-APIKEY", self.api_key),))


class BinanceHmac(_BinanceRest, HmacSha256):
    """Binance REST/SAPI ``HMAC_SHA256``: hex HMAC of query string + body, key in ``X-MBX-APIKEY``."""

    name = "binance-hmac"

    def encode_signature(self, signature: bytes) -> str:
        return signature.hex()

    def _signature_text(self, payload: bytes) -> str:
        return self.sign(payload).hex()  # hex digits: nothing to percent-encode


class BinanceRsa(_BinanceRest, RsaPkcs1v15Sha256):
    """Binance REST with an RSA key: base64 RSASSA-PKCS1-v1_5 SHA-256 over query string + body."""

    name = "binance-rsa"


class BinanceEd25519(_BinanceRest, Ed25519):
    """Binance REST with an Ed25519 key: base64 Ed25519 signature over query string + body."""

    name = "binance-ed25519"


class BinanceWsHmac(HmacSha256):
    """Binance WebSocket API, HMAC key: signs the sorted ``params`` including ``apiKey``."""

    name = "binance-ws-hmac"
    exchange = "binance"

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        if method != "WS":
            raise SchemeError(f"{self.name}: the method must be 'WS' (and the path the WebSocket API method, e.g. 'order.place')")
        if not isinstance(path, str) or not _WS_METHOD.fullmatch(path):
            raise SchemeError(f"{self.name}: the path must be a WebSocket API method name such as 'order.place'")
        if body:
            raise SchemeError(f"{self.name}: pass the request params as params; the enclave writes the JSON")
        fields = dict(check_params(self.name, params, reserved=("apiKey", "signature")))
        fields["apiKey"] = self.api_key
        if "timestamp" not in fields:
            fields["timestamp"] = str(checked_now(self.name, now_ms))
        payload = "&".join(f"{name}={fields[name]}" for name in sorted(fields))
        fields["signature"] = self.sign(payload.encode("utf-8")).hex()
        return SignedHttp("", json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), ())


# -- Spot REST and SAPI catalogue -----------------------------------------------------------------
_TIME = " timestamp"
_OPTIONAL_TIME = " recvWindow"
_NEW_ORDER = (
    "timeInForce quantity quoteOrderQty price newClientOrderId strategyId strategyType stopPrice "
    "trailingDelta icebergQty newOrderRespType selfTradePreventionMode pegPriceType pegOffsetValue pegOffsetType" + _OPTIONAL_TIME
)
# Spot API enums.md and the endpoint pages (rest-api.md); SAPI "Margin Account New Order (TRADE)".
_ORDER_VALUES = spellings(
    side="BUY SELL",
    type="LIMIT MARKET STOP_LOSS STOP_LOSS_LIMIT TAKE_PROFIT TAKE_PROFIT_LIMIT LIMIT_MAKER",
    timeInForce="GTC IOC FOK",
    newOrderRespType="ACK RESULT FULL",
    selfTradePreventionMode="NONE EXPIRE_TAKER EXPIRE_MAKER EXPIRE_BOTH DECREMENT TRANSFER",
    pegPriceType="PRIMARY_PEG MARKET_PEG",
    pegOffsetType="PRICE_LEVEL",
)
_TEST_VALUES = {**_ORDER_VALUES, **spellings(computeCommissionRates="true false")}
_MARGIN_VALUES = {
    **{name: _ORDER_VALUES[name] for name in ("side", "type", "timeInForce", "newOrderRespType")},
    **spellings(
        selfTradePreventionMode="NONE EXPIRE_TAKER EXPIRE_MAKER EXPIRE_BOTH",
        sideEffectType="NO_SIDE_EFFECT MARGIN_BUY AUTO_REPAY AUTO_BORROW_REPAY",
        isIsolated="TRUE FALSE",
        autoRepayAtCancel="true false",
    ),
}
_CANCEL_VALUES = spellings(cancelRestrictions="ONLY_NEW ONLY_PARTIALLY_FILLED")
# "Cancel an Existing Order and Send a New Order" (rest-api.md): a new order, so judged as one;
# cancelReplaceMode is required, so no other catalogued endpoint takes its parameter sets.
_CANCEL_REPLACE_VALUES = {
    **_ORDER_VALUES, **_CANCEL_VALUES,
    **spellings(cancelReplaceMode="STOP_ON_FAILURE ALLOW_FAILURE", orderRateLimitExceededMode="DO_NOTHING CANCEL_ONLY"),
}
_ACCOUNT_VALUES = spellings(omitZeroBalances="true false")
REST_ENDPOINTS = (
    endpoint("POST", "/api/v3/order", "trade", "order", "symbol side type" + _TIME, _NEW_ORDER, _ORDER_VALUES),
    endpoint("POST", "/api/v3/order/test", "trade", "order", "symbol side type" + _TIME, _NEW_ORDER + " computeCommissionRates", _TEST_VALUES),
    endpoint("POST", "/sapi/v1/margin/order", "trade", "order", "symbol side type" + _TIME,
             "isIsolated timeInForce quantity quoteOrderQty price stopPrice newClientOrderId icebergQty newOrderRespType "
             "sideEffectType selfTradePreventionMode autoRepayAtCancel" + _OPTIONAL_TIME, _MARGIN_VALUES),
    endpoint("POST", "/api/v3/order/cancelReplace", "trade", "order", "symbol side type cancelReplaceMode" + _TIME,
             _NEW_ORDER + " cancelNewClientOrderId cancelOrigClientOrderId cancelOrderId cancelRestrictions orderRateLimitExceededMode", _CANCEL_REPLACE_VALUES),
    endpoint("DELETE", "/api/v3/order", "trade", "cancel", "symbol" + _TIME, "orderId origClientOrderId newClientOrderId cancelRestrictions" + _OPTIONAL_TIME, _CANCEL_VALUES),
    endpoint("GET", "/api/v3/order", "read", "read", "symbol" + _TIME, "orderId origClientOrderId" + _OPTIONAL_TIME),
    # "Order Amend Keep Priority": newQty only lowers the quantity (binance-sdk-spot's order_amend_keep_priority).
    endpoint("PUT", "/api/v3/order/amend/keepPriority", "trade", "amend", "symbol newQty" + _TIME, "orderId origClientOrderId newClientOrderId" + _OPTIONAL_TIME),
    endpoint("DELETE", "/api/v3/openOrders", "trade", "cancel", "symbol" + _TIME, _OPTIONAL_TIME),
    endpoint("GET", "/api/v3/openOrders", "read", "read", _TIME, "symbol" + _OPTIONAL_TIME),
    endpoint("GET", "/api/v3/allOrders", "read", "read", "symbol" + _TIME, "orderId startTime endTime limit" + _OPTIONAL_TIME),
    endpoint("GET", "/api/v3/myTrades", "read", "read", "symbol" + _TIME, "orderId startTime endTime fromId limit" + _OPTIONAL_TIME),
    endpoint("GET", "/api/v3/account", "read", "read", _TIME, "omitZeroBalances" + _OPTIONAL_TIME, _ACCOUNT_VALUES),
    endpoint("GET", "/api/v3/rateLimit/order", "read", "read", _TIME, _OPTIONAL_TIME),
    # Account security: a bare timestamp is a valid signature for these.
    endpoint("POST", "/sapi/v1/account/enableFastWithdrawSwitch", "security", "other", _TIME, _OPTIONAL_TIME),
    endpoint("POST", "/sapi/v1/account/disableFastWithdrawSwitch", "security", "other", _TIME, _OPTIONAL_TIME),
    # Fund-moving.
    endpoint("POST", "/sapi/v1/capital/withdraw/apply", "funds", "other", "coin address amount" + _TIME,
             "withdrawOrderId network addressTag transactionFeeFlag name walletType" + _OPTIONAL_TIME),
    endpoint("POST", "/sapi/v1/asset/transfer", "funds", "other", "type asset amount" + _TIME, "fromSymbol toSymbol" + _OPTIONAL_TIME),
    endpoint("POST", "/sapi/v1/futures/transfer", "funds", "other", "asset amount type" + _TIME, _OPTIONAL_TIME),
    endpoint("POST", "/sapi/v1/sub-account/universalTransfer", "funds", "other", "fromAccountType toAccountType asset amount" + _TIME,
             "fromEmail toEmail clientTranId symbol" + _OPTIONAL_TIME),
    endpoint("POST", "/sapi/v1/sub-account/transfer/subToMaster", "funds", "other", "asset amount" + _TIME, _OPTIONAL_TIME),
    endpoint("POST", "/sapi/v1/margin/borrow-repay", "funds", "other", "asset isIsolated symbol amount type" + _TIME, _OPTIONAL_TIME),
    endpoint("POST", "/sapi/v1/asset/dust", "funds", "other", "asset" + _TIME, "accountType" + _OPTIONAL_TIME),
)

# -- WebSocket API catalogue ----------------------------------------------------------------------
_WS_TIME = " apiKey timestamp"
WS_ENDPOINTS = (
    endpoint("WS", "order.place", "trade", "order", "symbol side type" + _WS_TIME, _NEW_ORDER, _ORDER_VALUES),
    endpoint("WS", "order.test", "trade", "order", "symbol side type" + _WS_TIME, _NEW_ORDER + " computeCommissionRates", _TEST_VALUES),
    # As REST's cancelReplace: judged as the new order it places; its required cancelReplaceMode
    # is a parameter no other method here takes (session.logon's and account.status's included).
    endpoint("WS", "order.cancelReplace", "trade", "order", "symbol side type cancelReplaceMode" + _WS_TIME,
             _NEW_ORDER + " cancelNewClientOrderId cancelOrigClientOrderId cancelOrderId cancelRestrictions orderRateLimitExceededMode", _CANCEL_REPLACE_VALUES),
    endpoint("WS", "order.cancel", "trade", "cancel", "symbol" + _WS_TIME, "orderId origClientOrderId newClientOrderId cancelRestrictions" + _OPTIONAL_TIME, _CANCEL_VALUES),
    endpoint("WS", "order.status", "read", "read", "symbol" + _WS_TIME, "orderId origClientOrderId" + _OPTIONAL_TIME),
    endpoint("WS", "openOrders.cancelAll", "trade", "cancel", "symbol" + _WS_TIME, _OPTIONAL_TIME),
    endpoint("WS", "openOrders.status", "read", "read", _WS_TIME, "symbol" + _OPTIONAL_TIME),
    endpoint("WS", "account.status", "read", "read", _WS_TIME, "omitZeroBalances" + _OPTIONAL_TIME, _ACCOUNT_VALUES),
    # After a logon the session sends requests without signatures: the whole key, unchecked.
    endpoint("WS", "session.logon", "session", "other", _WS_TIME, _OPTIONAL_TIME),
)


# -- what the policy engine reads -----------------------------------------------------------------
_ORDER_FIELDS = OrderFields(symbol="symbol", quantity="quantity", quote_quantity="quoteOrderQty", price="price")
_REST_ORDER_FIELDS = OrderFields(symbol="symbol", quantity="quantity", quote_quantity="quoteOrderQty", price="price", new_quantity="newQty")
# A pegged order's price is the exchange's choice, not a limit.
_LIMIT_PRICE = LimitPrice("type", frozenset({"LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"}), overridden_by="pegPriceType")
_ORDER_DECIMALS = frozenset("quantity quoteOrderQty price stopPrice icebergQty trailingDelta".split())
_DECIMALS = _ORDER_DECIMALS | {"amount", "newQty"}  # REST also moves funds; the WebSocket API only trades
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "LTCBTC")


def _limit_order_params(side: str, symbol: str, quantity: str, price: str, client_id: str) -> tuple[tuple[str, str], ...]:
    return (("symbol", symbol), ("side", side), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", quantity), ("price", price), ("newClientOrderId", client_id))


def _rest_limit_order(side: str, symbol: str, quantity: str, price: str, client_id: str) -> PlainOrder:
    return PlainOrder("POST", "/api/v3/order", _limit_order_params(side, symbol, quantity, price, client_id))


def _ws_limit_order(side: str, symbol: str, quantity: str, price: str, client_id: str) -> PlainOrder:
    return PlainOrder("WS", "order.place", _limit_order_params(side, symbol, quantity, price, client_id))


BINANCE = Exchange(
    name="binance",
    family="binance",
    schemes=(BinanceHmac, BinanceRsa, BinanceEd25519),
    endpoints=REST_ENDPOINTS,
    order_fields=_REST_ORDER_FIELDS,
    limit_price=_LIMIT_PRICE,
    implicit=frozenset({"timestamp"}),
    borrowing={"sideEffectType": frozenset({"MARGIN_BUY", "AUTO_BORROW_REPAY"})},
    borrowing_words="Binance sideEffectType MARGIN_BUY/AUTO_BORROW_REPAY",
    decimal_params=_DECIMALS,
    limit_order=_rest_limit_order,
    example_symbols=SYMBOLS,
)
BINANCE_WS = Exchange(
    name="binance-ws",
    family="binance",
    schemes=(BinanceWsHmac,),
    endpoints=WS_ENDPOINTS,
    order_fields=_ORDER_FIELDS,
    limit_price=_LIMIT_PRICE,
    implicit=frozenset({"apiKey", "timestamp"}),
    decimal_params=_ORDER_DECIMALS,
    limit_order=_ws_limit_order,
    example_symbols=SYMBOLS,
)
EXCHANGES = (BINANCE, BINANCE_WS)
