"""OKX v5 (``okx``): the signature covers the method and the path.

``okx-hmac``
    The sealed secret is UTF-8 JSON ``{"secret": "...", "passphrase": "..."}`` — exactly these two
    non-empty strings — so the passphrase is sealed and policy-bound with the key. Prehash =
    timestamp (ISO 8601 UTC, milliseconds, ``Z``, from the enclave clock) + method + requestPath
    (path, plus ``?query`` for GET) + body; base64 HMAC-SHA256. GET takes params and no body, POST
    a body and no params. Headers ``OK-ACCESS-KEY``, ``OK-ACCESS-SIGN``, ``OK-ACCESS-TIMESTAMP``,
    ``OK-ACCESS-PASSPHRASE`` (OKX sends the passphrase in clear: the host sees it), and on POST
    ``Content-Type: application/json``.

    WebSocket login (method ``WS``, path ``login``, no params): sign = base64 HMAC-SHA256 of
    timestamp (Unix seconds, enclave clock) + ``GET/users/self/verify``; the body is the message to
    send, ``{"op":"login","args":[{"apiKey","passphrase","timestamp","sign"}]}``. A prehash that
    starts with seconds and ``GET/users`` is no REST prehash (those start with an ISO timestamp).

Parameter names and spellings: OKX v5 "Place order", "Amend order", "Get order List", "Get
positions", 2025; JSON true/false compare as text.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from ..exchange import BASE, Exchange, LimitPrice, OrderFields, PlainOrder, endpoint, spellings
from ..signing import (
    Params, SchemeError, SignedHttp, SigningKey, b64, check_method, check_params, check_path, checked_now, iso_ms, query_string, utf8_ok,
)

_PASSPHRASE = re.compile(r"[!-~](?:[ -~]{0,126}[!-~])?")
_SEALED_FORM = (
    '{scheme}: the secret must be UTF-8 JSON {{"secret": "...", "passphrase": "..."}} with exactly '
    "those two non-empty string fields (the passphrase printable ASCII)"
)


# -- signer ---------------------------------------------------------------------------------------
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key")
        result[key] = value
    return result


def _utf8(secret: bytes) -> str | None:
    try:
        return secret.decode("utf-8")
    except UnicodeDecodeError:  # it carries the secret (.object): never chain it
        return None


def _okx_secret(secret: bytes) -> tuple[bytes, str] | None:
    """(key, passphrase) of the sealed form, or ``None``; raises nothing, so nothing quotes the secret."""
    text = _utf8(secret)
    if text is None:
        return None
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):  # JSONDecodeError quotes the document: never chain it
        return None
    if not isinstance(document, dict) or set(document) != {"secret", "passphrase"}:
        return None
    key, passphrase = document["secret"], document["passphrase"]
    if not (isinstance(key, str) and key and utf8_ok(key)):
        return None
    if not (isinstance(passphrase, str) and _PASSPHRASE.fullmatch(passphrase)):
        return None
    return key.encode("utf-8"), passphrase


class OkxHmac(SigningKey):
    """OKX v5: base64 HMAC-SHA256 of timestamp + method + requestPath + body; passphrase sealed with the key."""

    name = "okx-hmac"
    exchange = "okx"

    @classmethod
    def fresh_secret(cls, passphrase: str | None = None) -> bytes:
        secret = super().fresh_secret().decode()
        return json.dumps({"secret": secret, "passphrase": passphrase or secrets.token_urlsafe(12)}).encode()

    @classmethod
    def with_passphrase(cls, secret: bytes, passphrase: str) -> bytes:
        if secret.lstrip().startswith(b"{"):  # sealed form already
            return secret
        text = _utf8(secret)
        if text is None:  # raised here, outside any handler: no __context__ quoting the secret
            raise SchemeError(f"{cls.name}: the secret must be UTF-8 text")
        return json.dumps({"secret": text, "passphrase": passphrase}).encode()

    @classmethod
    def passphrase_of(cls, secret: bytes) -> str | None:
        parsed = _okx_secret(secret)
        if parsed is None:
            raise SchemeError(_SEALED_FORM.format(scheme=cls.name))
        return parsed[1]

    def _load(self, secret: bytes) -> None:
        parsed = _okx_secret(secret)
        if parsed is None:
            raise SchemeError(_SEALED_FORM.format(scheme=self.name))
        self._secret, self._passphrase = parsed

    def sign(self, payload: bytes) -> bytes:
        return hmac.digest(self._secret, payload, "sha256")

    def _ws_login(self, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        if path != "login" or params or body:
            raise SchemeError(f"{self.name}: the WebSocket request the enclave signs is 'login', without params or body")
        timestamp = str(checked_now(self.name, now_ms) // 1000)
        sign = b64(self.sign(f"{timestamp}GET/users/self/verify".encode()))
        login = {"apiKey": self.api_key, "passphrase": self._passphrase, "timestamp": timestamp, "sign": sign}
        return SignedHttp("", json.dumps({"op": "login", "args": [login]}, separators=(",", ":")).encode(), ())

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        check_method(self.name, method, ("GET", "POST", "WS"))
        if method == "WS":
            return self._ws_login(path, params, body, now_ms)
        check_path(self.name, path)
        params = check_params(self.name, params)
        if method == "GET":
            if body:
                raise SchemeError(f"{self.name}: a GET request has no body; pass the parameters as params")
            query = query_string(params)
            request_path = f"{path}?{query}" if query else path
        else:
            if params:
                raise SchemeError(f"{self.name}: POST parameters go in the JSON body, not in params")
            query = ""
            request_path = path
        timestamp = iso_ms(checked_now(self.name, now_ms))
        signature = b64(self.sign(f"{timestamp}{method}{request_path}".encode() + body))
        headers = (
            ("OK-ACCESS-KEY", self.api_key),
            ("OK-ACCESS-SIGN", signature),
            ("OK-ACCESS-TIMESTAMP", timestamp),
            ("OK-ACCESS-PASSPHRASE", self._passphrase),
        )
        if method == "POST":  # OKX: "Content-Type: application/json" on requests with a body
            headers += (("Content-Type", "application/json"),)
        return SignedHttp(query, body, headers)


# -- catalogue ------------------------------------------------------------------------------------
_ORDER = "clOrdId tag posSide px reduceOnly tgtCcy banAmend pxUsd pxVol quickMgnType stpId stpMode attachAlgoOrds ccy"
_AMEND = "ordId clOrdId cxlOnFail reqId newSz newPx newPxUsd newPxVol"
_ORDER_TYPES = "market limit post_only fok ioc optimal_limit_ioc mmp mmp_and_post_only op_fok"
_ORDER_VALUES = spellings(
    tdMode="cross isolated cash spot_isolated",
    side="buy sell",
    posSide="long short net",
    ordType=_ORDER_TYPES,
    reduceOnly="true false",
    tgtCcy="base_ccy quote_ccy",
    banAmend="true false",
    quickMgnType="manual auto_borrow auto_repay",
    stpMode="cancel_maker cancel_taker cancel_both",
)
ENDPOINTS = (
    endpoint("POST", "/api/v5/trade/order", "trade", "order", "instId tdMode side ordType sz", _ORDER, _ORDER_VALUES),
    endpoint("POST", "/api/v5/trade/amend-order", "trade", "amend", "instId", _AMEND, spellings(cxlOnFail="true false")),
    endpoint("POST", "/api/v5/trade/cancel-order", "trade", "cancel", "instId", "ordId clOrdId"),
    # "Place multiple orders", "Cancel multiple orders", "Amend multiple orders": up to 20 per request
    endpoint("POST", "/api/v5/trade/batch-orders", "trade", "order", "instId tdMode side ordType sz", _ORDER, _ORDER_VALUES, batch=20),
    endpoint("POST", "/api/v5/trade/amend-batch-orders", "trade", "amend", "instId", _AMEND, spellings(cxlOnFail="true false"), batch=20),
    endpoint("POST", "/api/v5/trade/cancel-batch-orders", "trade", "cancel", "instId", "ordId clOrdId", batch=20),
    endpoint("GET", "/api/v5/trade/order", "read", "read", "instId", "ordId clOrdId"),
    endpoint("GET", "/api/v5/trade/orders-pending", "read", "read", "", "instType uly instFamily instId ordType state after before limit",
             spellings(instType="SPOT MARGIN SWAP FUTURES OPTION", ordType=_ORDER_TYPES, state="live partially_filled")),
    endpoint("GET", "/api/v5/account/balance", "read", "read", "", "ccy"),
    endpoint("GET", "/api/v5/asset/currencies", "read", "read", "", "ccy"),  # ccxt's fetch_currencies, in load_markets
    endpoint("GET", "/api/v5/account/positions", "read", "read", "", "instType instId posId", spellings(instType="MARGIN SWAP FUTURES OPTION")),
    endpoint("POST", "/api/v5/account/set-leverage", "settings", "other", "lever mgnMode", "instId ccy posSide"),
    # The WebSocket login: after it, the connection places orders with no signature (OKX's "order" op).
    endpoint("WS", "login", "session", "other"),
    endpoint("POST", "/api/v5/asset/transfer", "funds", "other", "ccy amt from to", "subAcct type loanTrans omitPosRisk clientId"),
    endpoint("POST", "/api/v5/asset/withdrawal", "funds", "other", "ccy amt dest toAddr", "chain areaCode rcvrInfo clientId fee"),
)


# -- what the policy engine reads -----------------------------------------------------------------
def size_units(values: Mapping[str, str]) -> frozenset[str]:
    """A SPOT market order's sz is in the quote currency by default for buys (``tgtCcy`` picks it);
    a spot instrument is BASE-QUOTE, derivatives have more parts (and count contracts)."""
    if values.get("ordType") != "market" or values.get("instId", "").count("-") != 1:
        return BASE
    default = "quote" if values.get("side") == "buy" else "base"
    chosen = {"base_ccy": "base", "quote_ccy": "quote"}.get(values.get("tgtCcy", ""), default)
    margin = {"base"} if values.get("tdMode") != "cash" else set()  # "only applicable to SPOT": margin may ignore it
    return frozenset({chosen} | margin)


def _limit_order(side: str, symbol: str, quantity: str, price: str, client_id: str) -> PlainOrder:
    body = {"instId": symbol, "tdMode": "cash", "side": side.lower(), "ordType": "limit", "sz": quantity, "px": price, "clOrdId": client_id}
    return PlainOrder("POST", "/api/v5/trade/order", body=json.dumps(body, separators=(",", ":")))


OKX = Exchange(
    name="okx",
    family="okx",
    schemes=(OkxHmac,),
    endpoints=ENDPOINTS,
    covers=frozenset({"method", "path"}),
    order_fields=OrderFields(symbol="instId", quantity="sz", price="px", new_quantity="newSz", new_price="newPx"),
    limit_price=LimitPrice("ordType", frozenset({"limit", "post_only", "fok", "ioc", "mmp", "mmp_and_post_only"})),
    # Every order names a margin mode: anything but cash trades on margin (derivatives always do),
    # and quickMgnType=auto_borrow borrows outright.
    borrowing={"tdMode": frozenset({"cross", "isolated", "spot_isolated"}), "quickMgnType": frozenset({"auto_borrow"})},
    borrowing_words="OKX tdMode other than cash or quickMgnType=auto_borrow",
    size_units=size_units,
    json_body_methods=frozenset({"POST"}),
    empty_means_absent=True,  # python-okx sends "px": "" and "attachAlgoOrds": null on every market order
    decimal_params=frozenset("sz px newSz newPx amt".split()),
    limit_order=_limit_order,
    example_symbols=("BTC-USDT", "ETH-USDT", "SOL-USDT"),
)
EXCHANGES = (OKX,)
