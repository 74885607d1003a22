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
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
from typing import Any

import ccxt
from ccxt.base.exchange import BaseExchange

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


def attach(exchange: Any, signer: Any, key: str) -> Any:
    """Make ``exchange`` (a ``ccxt`` or ``ccxt.async_support`` instance) sign with the enclave
    key ``key`` through ``signer``; returns ``exchange``.

    Any secret or passphrase on the instance is replaced by a placeholder. A sync exchange needs a
    blocking ``Signer``; an async one takes either (a ``Signer`` runs in a thread).
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
