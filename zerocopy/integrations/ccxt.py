"""``attach(exchange, signer, key)``: an existing ccxt exchange instance signs through the enclave.

ccxt builds each request in its exchange class's ``sign()`` and sends it with ``fetch(url, method,
headers, body)``. ``attach`` gives the instance placeholder credentials (so ccxt's "requires
secret" checks pass and its ``sign()`` runs) and wraps the instance's ``fetch``: a request ccxt
signed is handed to the enclave through the same rules as the ``requests``/``httpx`` adapters
(:mod:`._adapt`: the parameters and headers the enclave owns are dropped, the enclave signs, the
request is rebuilt from exactly what it signed), and that is what goes out. Requests ccxt did not
sign (public market data) go out as built. ``fetch`` is the hook rather than ``sign()`` because
``sign()`` is synchronous in ``ccxt.async_support`` too, while ``fetch`` is a coroutine there:
an :class:`zerocopy.AsyncSigner` is awaited, a blocking :class:`zerocopy.Signer` runs in a thread.

A :class:`zerocopy.PolicyRefused` becomes ``ccxt.PermissionDenied`` (the rule in its message, the
refusal as ``__cause__``), which ccxt users already handle; nothing is sent then.

Where ccxt's defaults ask, unprompted, for a signature the enclave cannot give safely, ``attach``
answers as ccxt itself does when it cannot ask (docs/policy.md, "ccxt's defaults"): Bybit's account
type is taken as unified (ccxt reads it with two parameterless GETs, an empty signed payload), and
``load_markets`` skips the private currency list on Binance (a bare ``timestamp``, the fast-withdraw
switch's parameter set) and Bybit (an empty payload), building currencies from the markets as
ccxt does without credentials. Options the user set are kept. ccxt's Python port writes a boolean
in a form or query as ``True``/``False`` (its ``urlencode_nested``); the exchanges document
``true``/``false``, which is what gets signed.

On a ``ccxt.pro`` instance the WebSocket messages ccxt signs are signed by the enclave too (see the
ccxt.pro section below and docs/policy.md, "ccxt.pro's WebSocket signatures").
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import json
from decimal import Decimal
from typing import Any

import ccxt
from ccxt.base.exchange import BaseExchange

from enclave.protocol.exchanges import exchange_for_scheme

from ..errors import PolicyRefused
from ._adapt import HttpFamily, KeyFamily, Outgoing, sign_arguments, signed_by_library, to_send

__all__ = ["attach", "PLACEHOLDER_SECRET", "ACCOUNT_TYPE_ASSUMED"]

#: What ccxt signs with instead of the secret (base64, as Kraken's secrets are; ccxt decodes it).
#: Its signatures never leave the process: the enclave's replace them. It ends in "=", which makes
#: ccxt's Coinbase treat it as a CDP key and build a JWT: the Authorization header that marks the
#: request as one to sign.
PLACEHOLDER_SECRET = base64.b64encode(b"zerocopy placeholder: the secret is in the enclave").decode()
PLACEHOLDER_API_KEY = "zerocopy-placeholder-api-key"  # the enclave sends the key's own API key id

#: ccxt options attach sets where the user has not: what ccxt assumes where it cannot ask (demo
#: trading), a unified trading account (UTA). A classic Bybit account sets enableUnifiedAccount=False.
ACCOUNT_TYPE_ASSUMED = {"bybit": {"enableUnifiedMargin": False, "enableUnifiedAccount": True}}
# Exchanges whose private currency list no safe policy signs: load_markets goes without it.
_UNSIGNABLE_CURRENCIES = frozenset({"binance", "bybit"})
_PYTHON_BOOLEANS = {"True": "true", "False": "false"}


def attach(exchange: Any, signer: Any, key: str, *, ws_key: str | None = None) -> Any:
    """Make ``exchange`` (a ``ccxt`` or ``ccxt.async_support`` instance) sign with the enclave
    key ``key`` through ``signer``; returns ``exchange``.

    Any secret or passphrase on the instance is replaced by a placeholder. A sync exchange needs a
    blocking ``Signer``; an async one takes either (a ``Signer`` runs in a thread). On a ``ccxt.pro``
    instance, OKX's WebSocket ``login`` and Bybit's ``auth`` are signed with ``key`` (a session: the
    policy must name ``WS login`` / ``WS auth``), and ``ws_key`` names the ``binance-ws-hmac`` key
    that signs Binance's WebSocket API requests (``create_order_ws`` and the like).
    """
    if not isinstance(exchange, BaseExchange):  # ccxt's and ccxt.async_support's
        raise TypeError(f"attach takes a ccxt exchange instance, not {type(exchange).__name__}")
    family = KeyFamily(key)
    awaits = inspect.iscoroutinefunction(getattr(signer, "sign_request", None))
    is_async = inspect.iscoroutinefunction(exchange.fetch)
    if awaits and not is_async:
        raise TypeError("an async signer signs for ccxt.async_support exchanges only")
    if not awaits:
        family.resolve(signer.keys())  # an unknown key or a non-HTTP scheme fails here, not mid-trade
    if ws_key is not None:
        _check_ws_key(exchange, signer, ws_key, awaits)
    if exchange.has.get("ws"):  # ccxt.pro: its WebSocket logins and requests too
        exchange.client = _signing_clients(exchange, exchange.client, signer, key, ws_key, awaits)
    _set_placeholders(exchange)
    _answer_unsignable_reads(exchange, is_async)
    wrap = _async_fetch if is_async else _sync_fetch
    exchange.fetch = wrap(exchange, exchange.fetch, signer, family, awaits)
    return exchange


def _set_placeholders(exchange: Any) -> None:
    exchange.secret = PLACEHOLDER_SECRET
    if not exchange.apiKey:
        exchange.apiKey = PLACEHOLDER_API_KEY
    if exchange.requiredCredentials.get("password"):
        exchange.password = PLACEHOLDER_SECRET  # OKX's passphrase: the enclave holds the real one


def _answer_unsignable_reads(exchange: Any, is_async: bool) -> None:
    """Keep ccxt from asking for signatures no safe policy gives (see the module's docstring)."""
    for name, value in ACCOUNT_TYPE_ASSUMED.get(exchange.id, {}).items():
        if exchange.options.get(name) is None:
            exchange.options[name] = value
    if exchange.id in _UNSIGNABLE_CURRENCIES:
        async def no_currencies_async(params: Any = None) -> dict:
            return {}

        def no_currencies(params: Any = None) -> dict:
            return {}

        exchange.fetch_currencies = no_currencies_async if is_async else no_currencies


def _arguments(rules: HttpFamily, outgoing: Outgoing) -> dict:
    """``sign_request``'s arguments, with ccxt's Python booleans written as the exchanges document them."""
    arguments = sign_arguments(rules, outgoing).call_args()
    arguments["params"] = [(name, _PYTHON_BOOLEANS.get(value, value)) for name, value in arguments["params"]]
    return arguments


def _outgoing(url: str, method: str, headers: Any, body: Any) -> Outgoing:
    data = body.encode() if isinstance(body, str) else bytes(body or b"")
    return Outgoing(method, url, dict(headers or {}), data)


def _refused(exchange: Any, refusal: PolicyRefused) -> ccxt.PermissionDenied:
    """What a ccxt user already handles; raised ``from`` the refusal. Names the rule, no secret."""
    return ccxt.PermissionDenied(f"{exchange.id} {refusal}")


def _sync_fetch(exchange: Any, fetch: Any, signer: Any, family: KeyFamily, awaits: bool = False) -> Any:
    @functools.wraps(fetch)
    def fetch_through_enclave(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        rules = family.known or family.resolve(signer.keys())
        outgoing = _outgoing(url, method, headers, body)
        if not signed_by_library(rules, outgoing):
            return fetch(url, method, headers, body)
        try:
            signed = signer.sign_request(family.key, **_arguments(rules, outgoing))
        except PolicyRefused as refusal:
            raise _refused(exchange, refusal) from refusal
        sending = to_send(rules, outgoing, signed)
        return fetch(sending.url, sending.method, sending.headers, sending.body.decode() or None)

    return fetch_through_enclave


def _async_fetch(exchange: Any, fetch: Any, signer: Any, family: KeyFamily, awaits: bool) -> Any:
    async def resolve() -> HttpFamily:
        listed = await signer.keys() if awaits else await asyncio.to_thread(signer.keys)
        return family.resolve(listed)

    @functools.wraps(fetch)
    async def fetch_through_enclave(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        rules = family.known or await resolve()
        outgoing = _outgoing(url, method, headers, body)
        if not signed_by_library(rules, outgoing):
            return await fetch(url, method, headers, body)
        arguments = _arguments(rules, outgoing)
        try:
            if awaits:
                signed = await signer.sign_request(family.key, **arguments)
            else:
                signed = await asyncio.to_thread(signer.sign_request, family.key, **arguments)
        except PolicyRefused as refusal:
            raise _refused(exchange, refusal) from refusal
        sending = to_send(rules, outgoing, signed)
        return await fetch(sending.url, sending.method, sending.headers, sending.body.decode() or None)

    return fetch_through_enclave


# == ccxt.pro: WebSocket logins and the Binance WebSocket API =======================================
# ccxt.pro signs a WebSocket message as it builds it (Binance's ``sign_params`` without the method
# name, OKX's and Bybit's ``authenticate``) and sends it with its client's ``send`` (a coroutine):
# the hook is ``send``, as ``fetch`` is for REST. A Binance request is re-signed from its method
# and parameters (the enclave owns apiKey, timestamp and recvWindow); a login is the enclave's own.
# returnRateLimits (ccxt sends false) only decides whether the answer lists rate limits, and every
# method takes it, session.logon too: signed, it would make account.status's parameters a logon's.
# Left out, Binance's default (true) applies, and ccxt reads the answer as before.
_WS_OWNED = frozenset({"apiKey", "timestamp", "signature", "recvWindow", "returnRateLimits"})
_WS_IMPLIED = {"account.status": ("omitZeroBalances", "false")}  # else it is session.logon's parameter set
_WS_CATALOGUE = "binance-ws"
_LOGINS = {"okx": "login", "bybit": "auth"}  # exchange id -> the op of its signed login, which the enclave writes


def _check_ws_key(exchange: Any, signer: Any, ws_key: str, awaits: bool) -> None:
    if not exchange.has.get("ws") or not inspect.iscoroutinefunction(exchange.fetch):  # ccxt.pro's have "ws"
        raise TypeError("ws_key signs ccxt.pro WebSocket requests: attach it to a ccxt.pro exchange")
    if not isinstance(ws_key, str) or not ws_key:
        raise TypeError("ws_key must be the name of a key loaded in the enclave")
    if awaits:
        return  # an AsyncSigner cannot be asked here; a wrong key fails at the first request
    schemes = {getattr(info, "name", None): getattr(info, "scheme", None) for info in signer.keys()}
    if ws_key not in schemes:
        raise LookupError(f"the enclave has no key named {ws_key!r}")
    catalogue = exchange_for_scheme(schemes[ws_key] or "")
    if catalogue is None or catalogue.name != _WS_CATALOGUE:
        raise ValueError(f"ws_key {ws_key!r} has scheme {schemes[ws_key]!r}; WebSocket API requests need binance-ws-hmac")


def _signing_clients(exchange: Any, make_client: Any, signer: Any, key: str, ws_key: str | None, awaits: bool) -> Any:
    """ccxt.pro's ``client(url)``, whose clients send signed messages through the enclave."""

    async def sign(key_name: str, path: str, params: list[tuple[str, str]]) -> Any:
        if awaits:
            return await signer.sign_request(key_name, "WS", path, params)
        return await asyncio.to_thread(signer.sign_request, key_name, "WS", path, params)

    @functools.wraps(make_client)
    def client(url: str) -> Any:
        made = make_client(url)
        if not getattr(made, "_zerocopy_signing", False):
            made.send = _ws_send(exchange, made, made.send, sign, key, ws_key)
            made._zerocopy_signing = True
        return made

    return client


def _ws_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    return str(value)


def _ws_signed_request(message: Any) -> bool:
    return isinstance(message, dict) and isinstance(message.get("method"), str) and isinstance(message.get("params"), dict) and "signature" in message["params"]


def _ws_login(exchange_id: str, message: Any) -> str | None:
    op = _LOGINS.get(exchange_id)
    return op if isinstance(message, dict) and op is not None and message.get("op") == op else None


def _ws_request(message: Any, sign: Any, ws_key: str | None) -> Any:
    """The Binance WebSocket API request re-signed by the enclave (a coroutine to await)."""
    if ws_key is None:
        raise ccxt.AuthenticationError("a Binance WebSocket API request needs attach(..., ws_key=) naming a binance-ws-hmac key")
    method = message["method"]
    params = [(name, _ws_text(value)) for name, value in message["params"].items() if name not in _WS_OWNED]
    implied = _WS_IMPLIED.get(method)
    if implied is not None and all(name != implied[0] for name, _ in params):
        params.append(implied)
    return sign(ws_key, method, params)


def _ws_send(exchange: Any, client: Any, send: Any, sign: Any, key: str, ws_key: str | None) -> Any:
    @functools.wraps(send)
    async def send_through_enclave(message: Any) -> Any:
        login = _ws_login(exchange.id, message)
        if login is None and not (exchange.id == "binance" and _ws_signed_request(message)):
            return await send(message)
        try:
            if login is not None:
                signed = await sign(key, login, [])
                return await send({**message, **json.loads(signed.body)})
            signed = await _ws_request(message, sign, ws_key)
        except PolicyRefused as refusal:
            denied = _refused(exchange, refusal)
            denied.__cause__ = refusal
            return _fail(client, message, denied)
        except ccxt.AuthenticationError as no_key:
            return _fail(client, message, no_key)
        return await send({**message, "params": json.loads(signed.body)})

    return send_through_enclave


def _fail(client: Any, message: dict, error: Exception) -> None:
    """A request with an id fails alone and the connection stays up; a login (no id) raises, and
    ccxt fails the connection's waiters with it. Nothing is sent either way."""
    request_id = message.get("id")
    if isinstance(request_id, str) and request_id in client.futures:
        client.reject(error, request_id)
        return None
    raise error
