"""Kraken Spot REST, private endpoints (``kraken``): the signature covers the path.

``kraken``
    The secret is the base64 private key Kraken shows. POST to ``/0/private/...``; the POST fields
    are passed as params (body empty) and the enclave returns the encoded POST data as ``body``.
    If the caller gives no ``nonce`` field the enclave puts ``nonce=<n>`` first; an empty ``nonce``
    field (``nonce=``) marks another place for it (krakenex and python-kraken-sdk put it last), and
    the enclave writes its own value there. Either way
    ``n = max(now × per_second, previous enclave nonce + 1)``: strictly increasing per loaded key,
    and across enclave restarts too, since it follows the clock (not a counter that a restart would
    reset). ``per_second`` is the key's sealed ``[nonce] per_second`` (default 1000: milliseconds,
    krakenex's unit). Kraken refuses a nonce not above the last one it saw for the key, so a key
    used before with python-kraken-sdk (``int(time.time() * 100_000_000)``, about 1.7e17) needs
    ``per_second = 100000000``, or every enclave nonce would be too small.
    API-Sign = base64(HMAC-SHA512(base64decode(secret), path + SHA256(nonce + postdata))). Headers ``API-Key``, ``API-Sign``.

Parameter names and spellings: Kraken REST "Add Order", "Edit Order", "Get Open Orders", "Query
Orders Info", 2025. ``leverage`` takes a number (or "2:1"), not an enumeration: the borrowing rule
refuses it whatever its value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from ..exchange import BASE, EITHER, Exchange, Flags, LimitPrice, OrderFields, PlainOrder, endpoint, spellings
from ..signing import Params, SchemeError, SignedHttp, SigningKey, b64, check_method, check_params, check_path, checked_now, query_string

_DIGITS = re.compile(r"[0-9]{1,20}")


# -- signer ---------------------------------------------------------------------------------------
def _b64decode_strict(text: bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class Kraken(SigningKey):
    """Kraken Spot REST: API-Sign = base64(HMAC-SHA512(key, path + SHA256(nonce + postdata)))."""

    name = "kraken"
    exchange = "kraken"

    @classmethod
    def fresh_secret(cls, passphrase: str | None = None) -> bytes:
        return base64.b64encode(os.urandom(64))  # as Kraken shows it

    def _load(self, secret: bytes) -> None:
        key = _b64decode_strict(secret.strip(b" \t\r\n"))
        if not key:
            raise SchemeError(f"{self.name}: the secret must be the base64 private key Kraken shows (standard alphabet, padded)")
        self._secret = key
        self._nonce_lock = threading.Lock()
        self._last_nonce = 0
        self._nonce_per_ms = 1

    def apply_policy(self, document: Mapping[str, Any]) -> None:
        """The key's nonce unit: ``[nonce] per_second`` is a power of ten from 1000 (checked by the
        policy document's schema), so a nonce is the clock's milliseconds times a whole number."""
        self._nonce_per_ms = document.get("nonce", {}).get("per_second", 1000) // 1000

    def sign(self, payload: bytes) -> bytes:
        return hmac.digest(self._secret, payload, "sha512")

    def _next_nonce(self, now_ms: int, supplied: str | None) -> str:
        with self._nonce_lock:
            if supplied is not None:
                self._last_nonce = max(self._last_nonce, int(supplied))
                return supplied
            self._last_nonce = max(now_ms * self._nonce_per_ms, self._last_nonce + 1)
            return str(self._last_nonce)

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        check_method(self.name, method, ("POST",))
        check_path(self.name, path, prefix="/0/private/")
        if body:
            raise SchemeError(f"{self.name}: pass the POST fields as params; the enclave encodes the body")
        params = check_params(self.name, params)
        supplied = dict(params).get("nonce")
        if supplied and not _DIGITS.fullmatch(supplied):
            raise SchemeError(f"{self.name}: nonce must be an unsigned decimal integer")
        nonce = self._next_nonce(checked_now(self.name, now_ms), supplied or None)
        if supplied is None:
            params = (("nonce", nonce),) + params
        elif not supplied:  # an empty nonce marks where the caller's library puts it: the enclave's value goes there
            params = tuple((name, nonce if name == "nonce" else value) for name, value in params)
        postdata = query_string(params).encode()
        message = path.encode() + hashlib.sha256(nonce.encode() + postdata).digest()
        return SignedHttp("", postdata, (("API-Key", self.api_key), ("API-Sign", b64(self.sign(message)))))


# -- catalogue ------------------------------------------------------------------------------------
_FLAGS = Flags("post fcib fciq nompp viqc".split())
_ORDER_VALUES = spellings(
    ordertype="market limit iceberg stop-loss take-profit stop-loss-limit take-profit-limit trailing-stop trailing-stop-limit settle-position",
    type="buy sell",
    trigger="index last",
    reduce_only="true false",
    stptype="cancel-newest cancel-oldest cancel-both",
    oflags=_FLAGS,
    timeinforce="GTC IOC GTD",
    validate="true false",
)
ENDPOINTS = (
    endpoint("POST", "/0/private/AddOrder", "trade", "order", "nonce ordertype type volume pair",
             "userref cl_ord_id displayvol price price2 trigger leverage reduce_only stptype oflags timeinforce starttm expiretm validate deadline", _ORDER_VALUES),
    endpoint("POST", "/0/private/EditOrder", "trade", "amend", "nonce txid pair", "userref volume displayvol price price2 oflags deadline cancel_response validate",
             spellings(oflags=_FLAGS, cancel_response="true false", validate="true false")),
    # "Amend Order" (what ccxt's edit_order sends): in place, no pair; sizes under names of its own.
    endpoint("POST", "/0/private/AmendOrder", "trade", "amend", "nonce", "txid cl_ord_id order_qty display_qty limit_price trigger_price post_only deadline",
             spellings(post_only="true false"), fields=OrderFields(new_quantity="order_qty", new_price="limit_price")),
    endpoint("POST", "/0/private/CancelOrder", "trade", "cancel", "nonce", "txid cl_ord_id"),
    endpoint("POST", "/0/private/CancelAll", "trade", "cancel", "nonce"),
    endpoint("POST", "/0/private/Balance", "read", "read", "nonce"),
    # "Get Extended Balance" (what ccxt's fetch_balance asks): balances with credit and held amounts.
    endpoint("POST", "/0/private/BalanceEx", "read", "read", "nonce", "rebase_multiplier", spellings(rebase_multiplier="rebased base")),
    endpoint("POST", "/0/private/OpenOrders", "read", "read", "nonce", "trades userref cl_ord_id", spellings(trades="true false")),
    endpoint("POST", "/0/private/QueryOrders", "read", "read", "nonce txid", "trades userref consolidate_taker", spellings(trades="true false", consolidate_taker="true false")),
    endpoint("POST", "/0/private/Withdraw", "funds", "other", "nonce asset key amount", "address max_fee"),
    endpoint("POST", "/0/private/WalletTransfer", "funds", "other", "nonce asset from to amount"),
    endpoint("POST", "/0/private/WithdrawCancel", "funds", "other", "nonce asset refid"),
)


# -- what the policy engine reads -----------------------------------------------------------------
def pair_form(pair: str) -> str:
    """One name per Kraken pair: the API takes the pair id (XXBTZUSD), its altname (XBTUSD) and the
    slash form (XBT/USD), and calls bitcoin XBT (dogecoin XDG) where others say BTC (DOGE)."""
    pair = pair.upper().replace("/", "")
    legacy = re.fullmatch(r"[XZ]([A-Z]{3})[XZ]([A-Z]{3})", pair)  # X: crypto, Z: fiat, before 4-letter codes
    if legacy:
        pair = legacy.group(1) + legacy.group(2)
    for kraken, common in (("XBT", "BTC"), ("XDG", "DOGE")):
        if pair.startswith(kraken):
            pair = common + pair[len(kraken):]
        if pair.endswith(kraken):
            pair = pair[: -len(kraken)] + common
    return pair


def size_units(values: Mapping[str, str]) -> frozenset[str]:
    """``oflags=viqc`` asks for the volume in the quote currency; Kraken documents it as not always
    available, so the base reading counts too."""
    return EITHER if "viqc" in values.get("oflags", "").split(",") else BASE


def _limit_order(side: str, symbol: str, quantity: str, price: str, client_id: str) -> PlainOrder:
    return PlainOrder("POST", "/0/private/AddOrder", (("ordertype", "limit"), ("type", side.lower()), ("volume", quantity), ("pair", symbol), ("price", price)))


KRAKEN = Exchange(
    name="kraken",
    family="kraken",
    schemes=(Kraken,),
    endpoints=ENDPOINTS,
    covers=frozenset({"path"}),
    order_fields=OrderFields(symbol="pair", quantity="volume", price="price"),
    limit_price=LimitPrice("ordertype", frozenset({"limit", "iceberg"})),
    implicit=frozenset({"nonce"}),
    borrowing={"leverage": None},
    borrowing_words="Kraken leverage",
    symbol_form=pair_form,
    size_units=size_units,
    # AmendOrder's prices also take relative forms ("+5", "2%"): refused, only plain decimals are judged.
    decimal_params=frozenset("volume price price2 displayvol amount order_qty display_qty limit_price trigger_price".split()),
    host_nonce_param="nonce",
    limit_order=_limit_order,
    example_symbols=("XBTUSD", "ETHUSD", "SOLUSD"),
)
EXCHANGES = (KRAKEN,)
