"""From a request as an HTTP client library prepared it to what the enclave signs, and back.

Framework-free: the ``requests`` and ``httpx`` adapters hand in the method, URL, headers and body
the library built, get the arguments for :meth:`zerocopy.Signer.sign_request`, and then build the
request to send from the :class:`~zerocopy.SignedRequest`: the URL with exactly the signed query,
exactly the signed body bytes, the returned headers. Nothing is reordered after signing.

The signature covers only the path (never the host) where an exchange signs a path, so the request
can go to any base URL (a test server, a proxy) while the signature names the exchange's own.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from enclave.protocol.exchanges import exchange_for_scheme

from .._client import SignedRequest

__all__ = ["Outgoing", "SignArguments", "ToSend", "HttpFamily", "family_for_scheme", "KeyFamily", "sign_arguments", "signed_by_library", "to_send"]

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


@dataclass(frozen=True)
class HttpFamily:
    """What one exchange's HTTP API needs around the enclave's signature.

    ``owned_params``: parameters the enclave sets itself (a library's own are dropped, not signed
    twice); ``owned_headers``: header names (lower case; a trailing ``*`` is a prefix) the enclave
    returns; ``header_params``: a library's header that becomes a pseudo-parameter; ``form_params``:
    a form body is handed over as params (the enclave encodes it); ``body_type``: the Content-Type
    of a signed body; ``signature``: the parameter or header (lower case) a library signs with, so
    a request without it is public and is sent as built; ``implied_params``: ``(method, path,
    name, value)``, a parameter added when absent, to a request whose parameter set would
    otherwise also fit a riskier endpoint (same meaning: the exchange's default value);
    ``placed_params``: owned parameters whose place in the signed bytes the library chose: sent
    with an empty value where the library put them, and the enclave writes its own value there;
    ``boolean_params``: parameters the exchange documents as ``true``/``false``, where a library's
    Python spelling (``True``/``False``) is written in the documented one; ``dropped_defaults``:
    ``(name, value)``, a field a library sends stating the exchange's default under a name the
    catalogue does not know, dropped (absent means the same to the exchange).
    """

    owned_params: frozenset[str] = frozenset()
    owned_headers: tuple[str, ...] = ()
    header_params: tuple[tuple[str, str], ...] = ()  # (lower-case header, pseudo-parameter)
    form_params: bool = False
    body_type: str = JSON
    signature: str = ""
    implied_params: tuple[tuple[str, str, str, str], ...] = ()
    placed_params: frozenset[str] = frozenset()
    boolean_params: frozenset[str] = frozenset()
    dropped_defaults: frozenset[tuple[str, str]] = frozenset()

    def normalised(self, name: str, value: str) -> str:
        if name in self.placed_params:
            return ""
        if name in self.boolean_params and value in ("True", "False"):
            return value.lower()
        return value

    def owns_header(self, name: str) -> bool:
        name = name.lower()
        return any(name.startswith(owned[:-1]) if owned.endswith("*") else name == owned for owned in self.owned_headers)


# Keyed by exchange family (SigningKey.exchange); each entry restates its scheme's docstring in
# enclave/protocol/exchanges/. The enclave owns Binance's recvWindow: docs/policy.md says why.
# A bare-timestamp Binance account read would also fit enableFastWithdrawSwitch and be refused:
# omitZeroBalances=false (Binance's default) makes it the account read's alone (docs/policy.md).
_BINANCE_IMPLIED = (("GET", "/api/v3/account", "omitZeroBalances", "false"),)
FAMILIES: Mapping[str, HttpFamily] = MappingProxyType({
    "binance": HttpFamily(frozenset({"timestamp", "signature", "recvWindow"}), ("x-mbx-apikey",), form_params=True, body_type=FORM,
                          signature="signature", implied_params=_BINANCE_IMPLIED),
    "bybit": HttpFamily(owned_headers=("x-bapi-*",), header_params=(("x-bapi-recv-window", "recv_window"),), signature="x-bapi-sign"),
    "okx": HttpFamily(owned_headers=("ok-access-*",), signature="ok-access-sign"),
    # Kraken signs the form bytes in order: the enclave's nonce goes where the library put its own
    # (krakenex and python-kraken-sdk last, ccxt first), so only its value differs. python-kraken-sdk
    # writes booleans as Python does and sends stp_type=cancel-newest (Kraken's stptype default) on
    # every order: both normalised, not admitted by the policy (docs/policy.md).
    "kraken": HttpFamily(frozenset({"nonce"}), ("api-key", "api-sign"), form_params=True, body_type=FORM, signature="api-sign",
                         placed_params=frozenset({"nonce"}), dropped_defaults=frozenset({("stp_type", "cancel-newest")}),
                         boolean_params=frozenset({"validate", "reduce_only", "trades", "consolidate_taker", "cancel_response"})),
    "coinbase": HttpFamily(owned_headers=("authorization",), signature="authorization"),
})
_NOT_HTTP = frozenset({"binance-ws"})  # catalogues whose requests are not HTTP requests


def family_for_scheme(scheme: str) -> HttpFamily:
    """The HTTP family of a key's scheme; ``ValueError`` for a raw or non-HTTP scheme."""
    exchange = exchange_for_scheme(scheme)
    if exchange is None or exchange.name in _NOT_HTTP or exchange.family not in FAMILIES:
        raise ValueError(f"scheme {scheme!r} does not sign HTTP requests an auth adapter can send")
    return FAMILIES[exchange.family]


class KeyFamily:
    """A key's HTTP family, asked of the enclave once (``signer.keys()``) and cached."""

    def __init__(self, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise TypeError("key must be the name of a key loaded in the enclave")
        self.key = key
        self._family: HttpFamily | None = None
        self._lock = threading.Lock()

    @property
    def known(self) -> HttpFamily | None:
        return self._family

    def resolve(self, keys: Sequence[object]) -> HttpFamily:
        """Pick this key out of ``signer.keys()``; ``LookupError`` if the enclave has no such key."""
        with self._lock:
            if self._family is None:
                schemes = {getattr(info, "name", None): getattr(info, "scheme", None) for info in keys}
                if self.key not in schemes:
                    raise LookupError(f"the enclave has no key named {self.key!r}")
                self._family = family_for_scheme(schemes[self.key])
            return self._family


@dataclass(frozen=True)
class Outgoing:
    """A request as the client library prepared it."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class SignArguments:
    """The arguments for ``Signer.sign_request(key, method, path, params, body)``."""

    method: str
    path: str
    params: list[tuple[str, str]]
    body: bytes | None

    def call_args(self) -> dict:
        return {"method": self.method, "path": self.path, "params": self.params, "body": self.body}


@dataclass(frozen=True)
class ToSend:
    """The request to send: its URL, its headers (no Content-Length: the library sets it), its body."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


def _pairs(text: str) -> list[tuple[str, str]]:
    return parse_qsl(text, keep_blank_values=True, strict_parsing=False) if text else []


def _header_value(headers: Mapping[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name), None)


def sign_arguments(family: HttpFamily, request: Outgoing) -> SignArguments:
    """What the enclave is asked to sign for ``request``: its path (not its host), its query and, for
    a form-taking exchange, its form fields as params; the parameters the enclave owns left out."""
    url = urlsplit(request.url)
    params = _pairs(url.query)
    body: bytes | None = request.body or None
    if family.form_params and body is not None:
        try:
            params += _pairs(body.decode("ascii"))
        except UnicodeDecodeError:
            raise ValueError("a form body must be ASCII (percent-encoded)") from None
        body = None
    params = [(name, family.normalised(name, value)) for name, value in params
              if (name not in family.owned_params or name in family.placed_params) and (name, value) not in family.dropped_defaults]
    method, path = request.method.upper(), url.path or "/"
    for implied_method, implied_path, name, value in family.implied_params:
        if (method, path) == (implied_method, implied_path) and all(name != present for present, _ in params):
            params.append((name, value))
    for header, pseudo in family.header_params:
        value = _header_value(request.headers, header)
        if value is not None:
            params.append((pseudo, value))
    return SignArguments(method, path, params, body)


def signed_by_library(family: HttpFamily, request: Outgoing) -> bool:
    """Whether the library signed ``request`` (with its placeholder secret): the family's signature
    parameter is in the query or form body, or its signature header is set. Public requests are not."""
    if _header_value(request.headers, family.signature) is not None:
        return True
    names = [name for name, _ in _pairs(urlsplit(request.url).query)]
    if family.form_params and request.body:
        names += [name for name, _ in _pairs(request.body.decode("ascii", "replace"))]
    return family.signature in names


def to_send(family: HttpFamily, request: Outgoing, signed: SignedRequest) -> ToSend:
    """The request to send: the library's URL with exactly the signed query, the signed body bytes,
    the library's headers less those the enclave owns, plus the signed ones and a Content-Type."""
    url = urlsplit(request.url)
    body = signed.body.encode() if isinstance(signed.body, str) else bytes(signed.body)
    headers = {name: value for name, value in request.headers.items()
               if not family.owns_header(name) and name.lower() not in ("content-length", "content-type")}
    if body and not any(name.lower() == "content-type" for name in signed.headers):  # the enclave's own, where it returns one
        theirs = _header_value(request.headers, "content-type") or ""
        # the library's own spelling where it names the same type (python-kraken-sdk adds "; charset=utf-8")
        headers["Content-Type"] = theirs if theirs.partition(";")[0].strip().lower() == family.body_type else family.body_type
    headers.update(signed.headers)
    return ToSend(signed.method, urlunsplit((url.scheme, url.netloc, url.path or "/", signed.query, "")), headers, body)
