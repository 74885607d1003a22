"""What one exchange API is, as data: the descriptor every exchange module exports.

One :class:`Exchange` per API whose signature and catalogue differ (Binance REST and Binance
WebSocket are two, in one module). The policy engine, the signers' registry, the hypothesis
strategies and the test key factory read descriptors; nothing outside an exchange's own module
matches on its name.

What a signature covers decides what the policy engine judges. Binance and Bybit sign only the
parameters (Binance: query string + form body; Bybit: timestamp, API key, recv window and the
query string or JSON body) — not the method and not the path. A signature is therefore valid for
*every* endpoint that accepts the same parameter set: the parameters of a ``GET /api/v3/order``
also cancel an order with ``DELETE``, those of ``POST /api/v3/order/test`` also place a real order,
and a bare ``timestamp`` also flips Binance's fast-withdraw switch. The engine decides on the
parameter set: it finds every catalogued endpoint that accepts it and applies the strictest rule
among them. Parameter sets no catalogued endpoint accepts are refused, so an endpoint missing from
a catalogue can never be reached with a signature from the enclave. OKX and Kraken sign the path
(OKX also the method), so there the endpoint itself decides. Coinbase's JWT covers the method and
path but not the body: a policy can restrict which requests get a JWT, but not what is in their
bodies (see ``docs/policy.md``).

Each endpoint also lists the documented spellings of its enumerated parameters (``values``): the
engine reads some of them (order types, margin flags, size units), and an exchange that accepts
``margin_buy`` for ``MARGIN_BUY`` would otherwise act on a value the engine misread. A value not
listed is refused as non-canonical. Sources are named in ``docs/policy.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from .errors import ZeroCopyError

if TYPE_CHECKING:
    from .signing import SigningKey

__all__ = [
    "DANGEROUS_CATEGORIES", "COVERS", "BASE", "EITHER", "Flags", "Endpoint", "endpoint", "endpoint_name", "spellings",
    "OrderFields", "LimitPrice", "HeaderRecvWindow", "UnsignedBody", "PlainOrder", "Exchange", "ExchangeError",
]

# Categories that are refused unless a policy names the endpoint explicitly (and that a refusal
# names as its rule). Settings (leverage) are here too: they change what every later order risks.
DANGEROUS_CATEGORIES = frozenset({"funds", "security", "session", "settings"})
# What a signature may cover besides the parameters: the method, the path, the format (Bybit: a GET
# query string and a POST JSON body differ in bytes), and "no-body" (the body is not covered at all).
COVERS = frozenset({"method", "path", "format", "no-body"})
# The currencies an order's main size field may be read in.
BASE, EITHER = frozenset({"base"}), frozenset({"base", "quote"})


class ExchangeError(ZeroCopyError, ValueError):
    """An exchange descriptor that contradicts itself or another one (raised at import)."""


class Flags(frozenset):
    """Documented flags of a comma-separated list parameter (Kraken's ``oflags``): each at most once."""


_NO_VALUES: Mapping[str, frozenset[str]] = MappingProxyType({})


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    category: str  # "trade", "read", "funds", "security", "session", "settings"
    kind: str  # "order", "amend", "cancel", "read", "other"
    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    name: str = ""  # "METHOD path", filled in by endpoint()
    # enumerated parameter -> its documented spellings (a Flags: a comma-separated list of them)
    values: Mapping[str, frozenset[str]] = field(default_factory=lambda: _NO_VALUES, compare=False, repr=False)
    # >0: the body is a JSON array of at most this many items, each taking required/optional (a batch)
    batch: int = 0
    # Where this endpoint names an order's facts otherwise than the exchange's other endpoints
    # (Kraken's AmendOrder: order_qty, limit_price, no pair); only where the signature covers the path.
    fields: OrderFields | None = field(default=None, compare=False, repr=False)

    def accepts(self, names: frozenset[str]) -> bool:
        return self.required <= names and names <= self.required | self.optional


def endpoint_name(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


def endpoint(method: str, path: str, category: str, kind: str, required: str = "", optional: str = "", values: Mapping[str, frozenset[str]] = _NO_VALUES, *,
             batch: int = 0, fields: OrderFields | None = None) -> Endpoint:
    """A catalogue entry; ``required`` and ``optional`` are parameter names separated by spaces
    (of each item, for a ``batch`` endpoint); ``fields``: its own order fields (see Endpoint)."""
    built = Endpoint(method, path, category, kind, frozenset(required.split()), frozenset(optional.split()), endpoint_name(method, path), MappingProxyType(dict(values)), batch, fields)
    if not set(built.values) <= built.required | built.optional:
        raise ExchangeError(f"{built.name}: documented values for parameters it does not take")
    return built


def spellings(**documented: str | Flags) -> dict[str, frozenset[str]]:
    """``name="A B"`` -> ``{name: {"A", "B"}}``: the spellings an exchange documents for a parameter."""
    return {name: values if isinstance(values, Flags) else frozenset(values.split()) for name, values in documented.items()}


@dataclass(frozen=True)
class OrderFields:
    """Which parameters carry an order's facts (``None``: the exchange has no such parameter)."""

    symbol: str | None = None
    quantity: str | None = None  # in base units, unless the exchange's size units say otherwise
    quote_quantity: str | None = None
    price: str | None = None
    new_quantity: str | None = None  # an amend's new size and price, where they have names of their own
    new_price: str | None = None


class LimitPrice(NamedTuple):
    """When an order's price bounds its notional: only for order types that execute at the price or
    better; ``overridden_by`` names a parameter that makes the exchange choose the price itself."""

    type_field: str
    limit_types: frozenset[str]
    overridden_by: str | None = None


class HeaderRecvWindow(NamedTuple):
    """A recv window that travels in a signed header, passed to the scheme as the pseudo-parameter
    ``name``; ``parse`` reads it (``None``: not a canonical window). Signer and policy share it:
    the signer sends ``default`` when the request names no window, and the policy engine names one
    itself where ``default`` is above the policy's cap."""

    name: str
    parse: Callable[[str], int | None]
    default: str


class UnsignedBody(NamedTuple):
    """How to say that a signature leaves the body out: the words the policy parser and
    ``zerocopy.policy.explain`` use."""

    signature: str  # "the JWT"
    borrowing: str  # why borrowing cannot be refused
    limits: str  # why sizes and symbols cannot be enforced


class PlainOrder(NamedTuple):
    """A request as a bot passes it to ``Signer.sign_request``."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    body: str = ""


# side ("BUY"/"SELL"), symbol, quantity, price, client order id -> the exchange's plain limit order
LimitOrderBuilder = Callable[[str, str, str, str, str], PlainOrder]
_NO_BORROWING: Mapping[str, frozenset[str] | None] = MappingProxyType({})


def _no_units(values: Mapping[str, str]) -> frozenset[str]:
    return BASE


@dataclass(frozen=True, eq=False)
class Exchange:
    """One exchange API: its catalogue, its signers, and what the policy engine reads in its requests."""

    name: str  # the catalogue name policies and refusals report ("binance-ws")
    family: str  # the exchange ("binance"), as SigningKey.exchange says
    schemes: tuple[type[SigningKey], ...]
    endpoints: tuple[Endpoint, ...]
    covers: frozenset[str] = frozenset()  # see COVERS
    order_fields: OrderFields = OrderFields()
    limit_price: LimitPrice | None = None
    # parameters the scheme adds when the caller leaves them out; they are part of what gets signed
    implicit: frozenset[str] = frozenset()
    # order parameter -> the values that make the exchange lend (None: any value)
    borrowing: Mapping[str, frozenset[str] | None] = field(default_factory=lambda: _NO_BORROWING)
    borrowing_words: str = ""  # the same, in words ("Bybit isLeverage=1")
    symbol_form: Callable[[str], str] = str.upper  # the exchange's canonical form of a symbol
    size_units: Callable[[Mapping[str, str]], frozenset[str]] = _no_units  # readings of the main size field
    json_body_methods: frozenset[str] = frozenset()  # methods whose parameters travel as a JSON body
    # A JSON field whose value is null or "" is absent to the exchange (OKX): the engine drops it
    # before judging, so the body it signs lacks it too and what is signed is what was judged.
    empty_means_absent: bool = False
    # Parameters whose values must be canonical decimals; the engine checks the union over all
    # exchanges (``DECIMAL_PARAMETERS``), as before descriptors were split, so no refusal changed.
    decimal_params: frozenset[str] = frozenset()
    timestamp_param: str | None = "timestamp"  # client timestamps freshness checks
    recv_window_param: str | None = "recvWindow"
    host_nonce_param: str | None = None  # a nonce the enclave sets itself (one from the host is refused)
    header_recv_window: HeaderRecvWindow | None = None
    unsigned_body: UnsignedBody | None = None  # with "no-body" in covers
    limit_order: LimitOrderBuilder | None = None  # for the hypothesis strategies
    example_symbols: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "borrowing", MappingProxyType(dict(self.borrowing)))
        names = [entry.name for entry in self.endpoints]
        if len(set(names)) != len(names):
            raise ExchangeError(f"{self.name}: the catalogue lists an endpoint twice")
        if not self.covers <= COVERS:
            raise ExchangeError(f"{self.name}: covers {sorted(self.covers - COVERS)}, which the policy engine does not know")
        if ("no-body" in self.covers) != (self.unsigned_body is not None):
            raise ExchangeError(f"{self.name}: a signature that leaves the body out needs the words to say so, and only then")
        if any(scheme.exchange != self.family for scheme in self.schemes):
            raise ExchangeError(f"{self.name}: a scheme names another exchange than {self.family!r}")
        self._check_parameter_names()
        if any(entry.batch and ("path" not in self.covers or entry.method not in self.json_body_methods) for entry in self.endpoints):
            # An array's items are judged as the endpoint's orders only where the signature names the endpoint.
            raise ExchangeError(f"{self.name}: a batch endpoint needs a signature that covers the path and a JSON body")

    def order_fields_of(self, matches: tuple[Endpoint, ...]) -> OrderFields:
        """The order fields of a request that reaches ``matches``: an endpoint's own where it is the
        only one (only where the path is covered), else the exchange's."""
        own = matches[0].fields if len(matches) == 1 else None
        return own if own is not None else self.order_fields

    def _check_parameter_names(self) -> None:
        """Every parameter the engine is told to read must be one the catalogue takes: a misspelt
        one would never be found in a request, and its rule would silently never apply. (A
        catalogue that lists no parameters, as Coinbase's, can name none.)"""
        taken = frozenset().union(*(entry.required | entry.optional for entry in self.endpoints))
        named: list[tuple[str, str | None]] = [(f"order_fields.{each.name}", getattr(self.order_fields, each.name)) for each in fields(OrderFields)]
        named += [("borrowing", name) for name in self.borrowing]
        named += [("decimal_params", name) for name in sorted(self.decimal_params)]
        if self.limit_price is not None:
            named += [("limit_price.type_field", self.limit_price.type_field), ("limit_price.overridden_by", self.limit_price.overridden_by)]
        for where, name in named:
            if name is not None and name not in taken:
                raise ExchangeError(f"{self.name}: {where} names {name!r}, a parameter no endpoint of the catalogue takes")
        for entry in self.endpoints:
            if entry.fields is None:
                continue
            if "path" not in self.covers:  # elsewhere several endpoints share a signature: one reading each would not do
                raise ExchangeError(f"{self.name}: {entry.name} has order fields of its own, but the signature does not cover the path")
            own = [getattr(entry.fields, each.name) for each in fields(OrderFields)]
            stray = sorted(name for name in own if name is not None and name not in entry.required | entry.optional)
            if stray:
                raise ExchangeError(f"{self.name}: {entry.name}'s order fields name {stray[0]!r}, a parameter it does not take")
        # The header window is a pseudo-parameter the engine takes out before matching endpoints:
        # a catalogued parameter of that name would be taken out with it.
        header = self.header_recv_window
        if header is not None and header.name in taken:
            raise ExchangeError(f"{self.name}: header_recv_window.name {header.name!r} is a catalogued parameter")
        if header is not None and header.parse(header.default) is None:
            raise ExchangeError(f"{self.name}: header_recv_window.default {header.default!r} is not a window its parse accepts")
