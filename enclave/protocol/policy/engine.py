"""The decision function: may the enclave sign this request for this key?

Pure — no I/O, and time is passed in — so the enclave enforces exactly what the host tools
(``zerocopy policy check`` / ``simulate``) predict. What it reads in a request comes from the key's
exchange descriptor (:mod:`enclave.protocol.exchange`), resolved once when the policy is parsed.

The decision depends only on what the signature covers. Where that is the parameter set (Binance,
Bybit), the engine finds *every* endpoint that would accept the request's parameters and refuses
unless the policy allows all of them; fund-moving, account security and session endpoints must be
named explicitly. Parameters must be known, unique and in canonical form (enumerated ones in a
spelling the exchange documents), JSON bodies are parsed strictly and re-serialised by the
enclave, and the enclave builds the string to sign itself. Symbols are compared in the exchange's
canonical form, and an order the exchange could read more than one way must be within the limits
under every reading. What a request can cost — its refusal's size, what is remembered about it —
is bounded, whatever the host sends.
"""

from __future__ import annotations

import functools
import json
import operator
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any, NamedTuple

from ..errors import ZeroCopyError
from ..exchange import BASE, DANGEROUS_CATEGORIES, Endpoint, Exchange, Flags, OrderFields, endpoint_name
from ..exchanges import DECIMAL_PARAMETERS, exchange_for_scheme
from .document import DECIMAL, PolicyError, bounded, normalize_document, symbol_problem
from .limits import EXACT, NotionalWindow, TokenBucket, Verdicts

__all__ = ["Refusal", "SigningPolicy", "PolicyState", "Authorized"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_NAMES = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(?:\x01[A-Za-z_][A-Za-z0-9_]{0,63})*")  # one or more names
_VALUE = re.compile(r"[A-Za-z0-9._:,@/+-]{0,256}")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,127}")  # a templated path segment: ids and UUIDs, never "." or ".."
_DEFAULT_RATE = (Decimal(10), 20)
_DEFAULT_SKEW_MS = 5000
_DEFAULT_RECV_WINDOW_MS = 5000
# Sizes: whatever the host sends, what the engine keeps and answers is bounded.
_MAX_BODY = 64 * 1024
_MAX_PARAMETERS = 64  # twice the most any catalogued endpoint takes (Bybit's order: 29)
_MAX_PATH = 1024
_SIZED = frozenset({"order", "amend"})
_PLAN = object()  # marks a remembered plan's key among the remembered verdicts
_FUSED_COST = 2560  # a plan's fused checks: a function, its closure's cells and tuples (1.8 KB by tracemalloc for a Binance order)
_CATEGORY_WORDS = {"funds": "it moves funds", "security": "it changes account security", "session": "it opens an unsigned session", "settings": "it changes account settings"}
# Fields a policy cannot enforce where the signature leaves the body out (borrowing too: the body says it).
_BODY_FIELDS = frozenset({"symbols", "max_quantity", "max_notional", "per_symbol", "notional_window", "borrowing"})


class Refusal(ZeroCopyError):
    """A request the policy does not allow. ``rule`` names the rule that refused it; the message is
    at most a few hundred bytes."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(bounded(message))
        self.rule = rule


# -- the parsed policy --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Limits:
    max_quantity: Decimal | None = None
    max_notional: Decimal | None = None


_NO_LIMITS = _Limits()


@dataclass(frozen=True)
class SigningPolicy:
    """A parsed policy for one key (scheme known, its exchange resolved)."""

    scheme: str
    exchange: Exchange | None  # None: a raw scheme
    document: dict | None
    raw_signing: bool
    borrowing: bool
    allow: frozenset[str]
    symbols: frozenset[str] | None
    limits: _Limits
    per_symbol: dict[str, _Limits]
    window_seconds: int | None
    window_max: Decimal | None
    rate: tuple[Decimal, int] | None
    freshness: bool
    max_skew_ms: int
    max_recv_window_ms: int
    removable: bool  # the host may unload the key (REMOVE): test keys; never by default

    @classmethod
    def parse(cls, document: dict | None, *, scheme: str) -> "SigningPolicy":
        exchange = exchange_for_scheme(scheme)
        normalized = normalize_document(document) if document is not None else None
        doc = normalized or {}
        if doc.get("scheme", scheme) != scheme:
            raise PolicyError(f"this policy is written for {doc['scheme']}, not {scheme}")
        _check_applicable(doc, scheme, exchange)
        canonical = exchange.symbol_form if exchange is not None else str.upper
        window, rate, freshness = doc.get("notional_window"), doc.get("rate"), doc.get("freshness", {})
        return cls(
            scheme=scheme,
            exchange=exchange,
            document=normalized,
            raw_signing=doc.get("raw_signing", exchange is None),
            borrowing=doc.get("borrowing", False),
            allow=_allowed(doc, scheme, exchange),
            symbols=frozenset(map(canonical, doc["symbols"])) if "symbols" in doc else None,
            limits=_Limits(_opt_decimal(doc.get("max_quantity")), _opt_decimal(doc.get("max_notional"))),
            per_symbol=_per_symbol_limits(doc.get("per_symbol", {}), canonical),
            window_seconds=window["seconds"] if window else None,
            window_max=Decimal(window["max_notional"]) if window else None,
            rate=(Decimal(rate["per_second"]), rate["burst"]) if rate else (None if exchange is None else _DEFAULT_RATE),
            freshness=freshness.get("enabled", True),
            max_skew_ms=freshness.get("max_skew_ms", _DEFAULT_SKEW_MS),
            max_recv_window_ms=freshness.get("max_recv_window_ms", _DEFAULT_RECV_WINDOW_MS),
            removable=doc.get("removable", False),
        )


def _check_applicable(doc: dict, scheme: str, exchange: Exchange | None) -> None:
    """Refuse fields the key's scheme cannot enforce."""
    if exchange is None:
        extra = sorted(set(doc) - {"version", "scheme", "raw_signing", "rate", "removable"})
        if extra:
            raise PolicyError(f"{scheme} signs raw payloads only; {extra[0]!r} does not apply (only raw_signing, rate and removable do)")
    elif exchange.unsigned_body is not None:
        constrained = sorted(set(doc) & _BODY_FIELDS)
        if constrained:
            raise PolicyError(
                f"{constrained[0]!r} cannot be enforced for {scheme}: {exchange.unsigned_body.signature} covers the method and path, "
                "not the body, so the host can send any order body with it. Restrict endpoints and rate instead."
            )
    if "nonce" in doc and (exchange is None or exchange.host_nonce_param is None):
        raise PolicyError(f"'nonce' does not apply to {scheme}: the enclave sets no nonce in its requests")


def _allowed(doc: dict, scheme: str, exchange: Exchange | None) -> frozenset[str]:
    """The endpoints the policy names; by default every trade and read endpoint."""
    endpoints = exchange.endpoints if exchange is not None else ()
    if "allow" not in doc:
        return frozenset(endpoint.name for endpoint in endpoints if endpoint.category in {"trade", "read"})
    unknown = sorted(set(doc["allow"]) - {endpoint.name for endpoint in endpoints})
    if unknown:
        raise PolicyError(f"allow: {unknown[0]!r} is not an endpoint ZeroCopy knows for {scheme}; see docs/policy.md for the catalogue")
    return frozenset(doc["allow"])


def _opt_decimal(value: str | None) -> Decimal | None:
    return Decimal(value) if value is not None else None


def _per_symbol_limits(per_symbol: dict, canonical: Callable[[str], str]) -> dict[str, _Limits]:
    """Limits by the exchange's canonical symbol: ``btcusdt`` is BTCUSDT's order, so it gets its cap."""
    limits: dict[str, _Limits] = {}
    written: dict[str, str] = {}
    for symbol, table in per_symbol.items():
        key = canonical(symbol)
        if key in limits:
            raise PolicyError(f"per_symbol names {written[key]!r} and {symbol!r}, which are one symbol ({key}) on this exchange")
        written[key] = symbol
        limits[key] = _Limits(_opt_decimal(table.get("max_quantity")), _opt_decimal(table.get("max_notional")))
    return limits


# -- sizes --------------------------------------------------------------------------------------
def _order_size(exchange: Exchange, values: dict[str, str], kind: str, fields: OrderFields | None = None) -> tuple[Decimal | None, Decimal | None, bool] | None:
    """(quantity, notional, quoted) of an order or amend under its largest reading, or ``None`` if it
    sets neither size nor price. ``None`` for quantity or notional: unknown (unbounded).

    An order can often be read more than one way — a Binance order with both ``quantity`` and
    ``quoteOrderQty``, a Bybit spot market order whose unit depends on the account — and the
    exchange, not the engine, picks the reading, so every limit applies to the largest one. The
    price counts towards the notional only for order types that execute at or better than it
    (limit orders): a market order ignores ``price`` (Bybit, OKX, Kraken say so), so
    ``qty=100, price=1, orderType=Market`` must not pass as a notional of 100.
    """
    fields = fields if fields is not None else exchange.order_fields
    if kind == "amend" and (fields.new_quantity or fields.new_price):
        size_name, price_name = fields.new_quantity, fields.new_price
    else:
        size_name, price_name = fields.quantity, fields.price
    # _number's reading, inline (this runs for every order): a field absent, or one the exchange has not, is None
    quote_name = fields.quote_quantity
    size_text, price_text, quote_text = values.get(size_name) if size_name else None, values.get(price_name) if price_name else None, values.get(quote_name) if quote_name else None
    size = None if size_text is None else Decimal(size_text)
    price = None if price_text is None else Decimal(price_text)
    quote = None if quote_text is None else Decimal(quote_text)
    if kind == "amend" and size is None and price is None and quote is None:
        # Changes neither size nor price: e.g. a Bybit cancel, whose parameters also fit /v5/order/amend.
        return None
    if price is not None and kind == "order" and not _is_limit_price(exchange, values):
        price = None
    units = exchange.size_units(values)
    if quote is None and units is BASE:  # the usual order, read one way (the hot path: no lists)
        return size, (_times(size, price) if size is not None and price is not None else None), False
    readings: list[tuple[Decimal | None, Decimal | None]] = []  # (base quantity, notional)
    if size is not None:
        for unit in units:
            readings.append((size, _times(size, price) if price is not None else None) if unit == "base" else (None, size))
    if quote is not None:
        readings.append((None, quote))
    quoted = any(quantity is None for quantity, _ in readings)
    return _largest(quantity for quantity, _ in readings), _largest(notional for _, notional in readings), quoted


# Exact (limits.EXACT): the default context rounds to 28 digits, which could bring a notional under a cap.
_times = EXACT.multiply


def _exact_sum(amounts: Iterable[Decimal]) -> Decimal:
    return functools.reduce(EXACT.add, amounts, Decimal(0))


def _number(values: dict[str, str], name: str | None) -> Decimal | None:
    text = values.get(name) if name else None  # type: ignore[arg-type]
    return None if text is None else Decimal(text)


def _is_limit_price(exchange: Exchange, values: dict[str, str]) -> bool:
    rule = exchange.limit_price
    if rule is None:
        return False
    return values.get(rule.type_field) in rule.limit_types and (rule.overridden_by is None or rule.overridden_by not in values)


def _largest(amounts: Iterable[Decimal | None]) -> Decimal | None:
    """The largest of the readings; ``None`` (unknown, so unbounded) if any is, or if there are none."""
    largest: Decimal | None = None
    for amount in amounts:
        if amount is None:
            return None
        largest = amount if largest is None or amount > largest else largest
    return largest


# -- checks of the request's form -----------------------------------------------------------------
def _check_request_size(path: str, params: tuple, body: bytes) -> None:
    """Refuse early what no catalogued endpoint could take: the cost of judging, remembering and
    answering a request must not grow with what the host sends."""
    if len(params) > _MAX_PARAMETERS:
        raise Refusal("too_large", f"the request has {len(params)} parameters; no endpoint the policy engine knows takes more than {_MAX_PARAMETERS}")
    if len(body) > _MAX_BODY:
        raise Refusal("too_large", f"the body is {len(body)} bytes; the policy engine judges bodies of at most {_MAX_BODY}")
    if len(path) > _MAX_PATH:
        raise Refusal("too_large", f"the path is {len(path)} characters; no endpoint the policy engine knows has more than {_MAX_PATH}")


@functools.lru_cache(maxsize=256)
def _documented_values(endpoints: tuple[Endpoint, ...]) -> Mapping[str, frozenset[str]]:
    """The documented spellings of every enumerated parameter over ``endpoints`` (the union: the
    signature is good for each of them, and a spelling one documents is understood). Cached per
    combination, so remembered verdicts share them."""
    merged: dict[str, frozenset[str]] = {}
    for endpoint in endpoints:
        for name, spellings in endpoint.values.items():
            merged[name] = type(spellings)(merged.get(name, frozenset()) | spellings)
    return merged


def _check_documented_values(values: Mapping[str, str], documented: Mapping[str, frozenset[str]]) -> None:
    """Enumerated parameters take only the exchange's documented spellings: an exchange that also
    accepts ``margin_buy`` or ``01`` would act on a value the engine read differently."""
    for name, spellings in documented.items():
        value = values.get(name)
        if value is None or value in spellings:
            continue
        if isinstance(spellings, Flags):
            flags = value.split(",")
            if len(set(flags)) == len(flags) and all(flag in spellings for flag in flags):
                continue
            raise Refusal("non_canonical", f"{name}={value[:40]!r} is not a list of distinct documented flags ({', '.join(sorted(spellings))})")
        shown = ", ".join(sorted(spellings)[:8]) + (", ..." if len(spellings) > 8 else "")
        raise Refusal("non_canonical", f"{name}={value[:40]!r} is not one of the exchange's documented values ({shown})")


def _check_names(params: Any) -> None:
    names = [name for name, _ in params]
    if not names:
        return
    joined = "\x01".join(names)
    if joined.count("\x01") + 1 != len(names) or not _NAMES.fullmatch(joined):
        bad = next(name for name in names if not _NAME.fullmatch(name))
        raise Refusal("non_canonical", f"parameter name {bad[:40]!r} is not a plain identifier")
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise Refusal("duplicate_parameter", f"parameter {duplicate!r} appears twice")


def _check_values(params: Any, symbol_param: str | None) -> None:
    """Values are plain ASCII, but for the symbol, which may be a Unicode symbol name
    (:func:`~.document.symbol_problem`): other free-form values need no more (no client library sends them)."""
    _check_plain_values(params, symbol_param, [index for index, (name, _) in enumerate(params) if name in DECIMAL_PARAMETERS])


def _plain_values(joined: str) -> bool:
    """Every value of ``joined`` (separated by ``\\x01``) 0 to 256 characters of ``_VALUE``'s set,
    at C speed: ASCII, nothing left once the allowed bytes and the separator are deleted, and no
    value longer than 256 characters."""
    return joined.isascii() and not joined.encode().translate(None, _VALUE_BYTES) and (len(joined) <= 256 or max(map(len, joined.split("\x01"))) <= 256)


_VALUE_OF = operator.itemgetter(1)
_VALUE_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:,@/+-\x01"


def _check_plain_values(params: Any, symbol_param: str | None, decimals: Iterable[int]) -> None:
    """:func:`_check_values`, told which parameters (by index) must be decimals."""
    joined = "\x01".join(map(_VALUE_OF, params))
    # The separator must not occur inside a value, or "a\x01b" would pass as two values. (With no
    # params the count test fails harmlessly: the loop below finds nothing to refuse.)
    if joined.count("\x01") + 1 != len(params) or not _plain_values(joined):
        for name, value in params:
            if _VALUE.fullmatch(value):
                continue
            if name == symbol_param and not value.isascii():
                problem = symbol_problem(value)
                if problem is None:
                    continue
                raise Refusal("non_canonical", f"the value of {name!r} is not a symbol name: {problem}")
            raise Refusal("non_canonical", f"the value of {name!r} has characters outside [A-Za-z0-9._:,@/+-] or is too long")
    for index in decimals:
        name, value = params[index]
        if not DECIMAL.fullmatch(value):
            raise Refusal("non_canonical", f"{name} must be a plain decimal such as 0.5, not {value[:30]!r}")


def _strict_json_object(body: bytes) -> dict:
    parsed = _strict_json(body)
    if not isinstance(parsed, dict):
        raise Refusal("non_canonical", "the body must be a JSON object")
    return _bounded_object(parsed)


def _bounded_object(parsed: dict) -> dict:
    if len(parsed) > _MAX_PARAMETERS:
        raise Refusal("too_large", f"the JSON body has {len(parsed)} fields; no endpoint the policy engine knows takes more than {_MAX_PARAMETERS}")
    return parsed


def _strict_json_items(body: bytes, endpoint: Endpoint) -> list[dict]:
    """A batch's orders: a JSON array of 1 to ``endpoint.batch`` objects (one object alone is a batch of one)."""
    parsed = _strict_json(body) if body else None
    items = [parsed] if isinstance(parsed, dict) else parsed
    if not isinstance(items, list) or not items:
        raise Refusal("non_canonical", f"{endpoint.name} takes a JSON array of 1 to {endpoint.batch} orders")
    if len(items) > endpoint.batch:
        raise Refusal("too_large", f"{endpoint.name} takes at most {endpoint.batch} orders; the batch has {len(items)}")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Refusal("non_canonical", f"order {index} of the batch must be a JSON object")
        _bounded_object(item)
    return items


def _strict_json(body: bytes) -> Any:
    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict:
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise Refusal("duplicate_parameter", f"the JSON body repeats the key {key[:40]!r}")
            seen[key] = value
        return seen

    def no_constants(name: str) -> Any:
        raise Refusal("non_canonical", f"the JSON body contains {name}")

    try:
        parsed = json.loads(body.decode("utf-8"), object_pairs_hook=pairs_hook, parse_constant=no_constants, parse_float=_refuse_float)
    except Refusal:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refusal("non_canonical", "the body is not a valid JSON object") from None
    return parsed


def _refuse_float(text: str) -> Any:
    raise Refusal("non_canonical", f"write the number {text[:20]} as a string: floats lose precision")


def _json_pairs(parsed: dict) -> list[tuple[str, str]]:
    """A flat JSON object's fields as text: JSON true/false and integers compare as "true", "1"."""
    pairs = []
    for name, value in parsed.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (str, int)):
            text = str(value)
        else:
            raise Refusal("non_canonical", f"the value of {name[:40]!r} must be a string, number or boolean (nested values are not supported)")
        pairs.append((name, text))
    return pairs


def _without_empty_fields(parsed: dict) -> dict:
    """The fields an exchange that reads null and "" as absent acts on: the others are dropped, not
    judged and not signed, so no check is skipped that the exchange would apply to what it gets."""
    return {name: value for name, value in parsed.items() if value is not None and value != ""}


def _checked_object(exchange: Exchange, parsed: dict) -> tuple[dict, tuple[tuple[str, str], ...]]:
    """A JSON object as the exchange reads it, and its fields as checked text."""
    if exchange.empty_means_absent:
        parsed = _without_empty_fields(parsed)
    pairs = _json_pairs(parsed)
    _check_names(pairs)
    _check_values(pairs, exchange.order_fields.symbol)  # before serialising: a lone surrogate cannot be encoded
    return parsed, tuple(pairs)


@functools.lru_cache(maxsize=64)
def _batch_endpoints(exchange: Exchange) -> Mapping[tuple[str, str], Endpoint]:
    return {(endpoint.method, endpoint.path): endpoint for endpoint in exchange.endpoints if endpoint.batch}


def _canonical_parameters(exchange: Exchange, method: str, params: tuple[tuple[str, str], ...], body: bytes) -> tuple[tuple[tuple[str, str], ...], bytes]:
    """The request's fields, checked, and the body to sign (a JSON body re-serialised canonically)."""
    if method in exchange.json_body_methods:
        if params:
            raise Refusal("non_canonical", f"{exchange.name} POST requests carry their parameters in the JSON body, not the query")
        parsed, pairs = _checked_object(exchange, _strict_json_object(body) if body else {})
        return pairs, json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    if body and "no-body" not in exchange.covers:
        raise Refusal("non_canonical", "send the parameters as params; the enclave builds the string to sign itself")
    _check_names(params)
    _check_values(params, exchange.order_fields.symbol)
    return params, body


# -- which endpoints a request reaches -----------------------------------------------------------
def _parameter_problem(endpoint: Endpoint, names: frozenset[str]) -> str:
    missing = sorted(endpoint.required - names)
    unknown = sorted(names - endpoint.required - endpoint.optional)
    if unknown:
        return f"{endpoint.name} does not take the parameter {unknown[0]!r}"
    if missing:
        return f"{endpoint.name} needs the parameter {missing[0]!r}"
    return f"the parameters do not fit {endpoint.name}"


def _no_endpoint_takes(catalogue: str, names: frozenset[str]) -> str:
    shown = sorted(names)[:6]
    return f"no {catalogue} endpoint the policy engine knows takes exactly the parameters {', '.join(shown)}{', ...' if len(names) > 6 else ''}"


def _path_matches(pattern: str, path: str) -> bool:
    if "{" not in pattern:
        return pattern == path
    parts, actual = pattern.split("/"), path.split("/")
    return len(parts) == len(actual) and all(p == a or (p.startswith("{") and _SEGMENT.fullmatch(a) is not None) for p, a in zip(parts, actual))


def _matching_endpoints(exchange: Exchange, method: str, path: str, names: frozenset[str], batch: bool = False) -> list[Endpoint]:
    """Every catalogued endpoint a signature for this request would be good for (a batch's item:
    only batch endpoints; anything else: none of them)."""
    covers = exchange.covers
    if "path" in covers:
        return _endpoints_at_path(exchange, method, path, names, batch)
    endpoints = exchange.endpoints  # no batch endpoints here: a descriptor has them only where the path is covered
    if "format" in covers:  # a query string, a JSON body and a WebSocket message are different bytes
        endpoints = tuple(e for e in endpoints if _signed_format(e.method) == _signed_format(method))
    matches = [e for e in endpoints if e.accepts(names)]
    if not matches:
        requested = [e for e in endpoints if e.path == path and (e.method == method or method == "WS")]
        detail = _parameter_problem(requested[0], names) if requested else _no_endpoint_takes(exchange.name, names)
        raise Refusal("unknown_parameter", detail)
    return matches


def _signed_format(method: str) -> str:
    return method if method in ("GET", "WS") else "body"


def _endpoints_at_path(exchange: Exchange, method: str, path: str, names: frozenset[str], batch: bool) -> list[Endpoint]:
    covers = exchange.covers
    candidates = [e for e in exchange.endpoints if _path_matches(e.path, path) and ("method" not in covers or e.method == method) and bool(e.batch) == batch]
    if not candidates:
        raise Refusal("endpoint", f"{endpoint_name(method, path)[:120]} is not an endpoint the policy engine knows")
    if "no-body" in covers:
        return candidates
    matches = [e for e in candidates if e.accepts(names)]
    if not matches:
        raise Refusal("unknown_parameter", _parameter_problem(candidates[0], names))
    return matches


def _shape_cost(shape: tuple, verdict: Any) -> int:
    """A generous estimate of what remembering ``shape`` keeps alive: the key (a tuple, a frozenset,
    the name strings), the dict slot, and a refusal's message. Endpoints and documented spellings
    are shared (see ``_documented_values``)."""
    names = shape[3]
    # per name: the string (49 bytes + its length, rounded up by the allocator) and its share of
    # the frozenset's table, which is sized for up to four slots of 16 bytes per name
    cost = 1024 + sum(176 + len(name) for name in names)
    if isinstance(verdict, _Refused):
        cost += 256 + 2 * len(verdict.message)
    return cost


class _Verdict(NamedTuple):
    endpoints: tuple[Endpoint, ...]
    kind: str
    documented: Mapping[str, frozenset[str]]  # enumerated parameter -> documented spellings, over all endpoints


class _Plan(NamedTuple):
    """A request shape judged once: its verdict, and what reading its values needs."""

    endpoints: tuple[str, ...]  # the names of the endpoints the signature reaches
    kind: str
    documented: Mapping[str, frozenset[str]]  # the verdict's spellings, of the parameters present only
    fields: OrderFields
    decimals: tuple[int, ...]  # the parameters, by index, whose values must be decimals
    # The value checks fused for this shape (``_fused_judge``): a _Judged when every check passes,
    # None for anything else, which the general checks then judge (and word the refusal).
    fused: Callable[[Any, int], "_Judged | None"] | None = None


class _Judged(NamedTuple):
    """One order (or read) judged by every rule but the window and the rate."""

    endpoints: tuple[str, ...]
    kind: str
    symbol: str | None
    quantity: Decimal | None
    notional: Decimal | None
    sized: bool  # it sets a size or price, so the window and the rate count it


# A NamedTuple's own __new__ is Python; the sign path builds its two directly, every field given.
_new_tuple = tuple.__new__


# -- a remembered shape's value checks, fused --------------------------------------------------
def _fused_judge(policy: SigningPolicy, exchange: Exchange, plan: _Plan, names: list[str]) -> Callable[[Any, int], _Judged | None] | None:
    """The checks :meth:`PolicyState._judge_values` (and ``_check_plain_values``) make of a request
    of this shape, fused into one function over the parameters by position: ``None`` where a shape
    needs more than the common case (an amend, a quote quantity, readings that depend on values,
    flag lists, a host nonce, a borrowing parameter), so the general checks judge it.

    It accepts only what every general check accepts (each of its tests is the general one, or
    stricter) and returns the same facts; anything else is ``None``, and the general checks then
    judge the request, refusing it in their words. ``tests/test_policy_fused.py`` compares both."""
    kind, fields, position = plan.kind, plan.fields, {name: index for index, name in enumerate(names)}
    if kind not in ("order", "cancel", "read") or any(isinstance(spellings, Flags) for spellings in plan.documented.values()):
        return None
    if exchange.host_nonce_param in position or (not policy.borrowing and any(name in position for name in exchange.borrowing)):
        return None
    if kind == "order" and (fields.quote_quantity in position or exchange.size_units is not Exchange.size_units):  # the class default: base units only
        return None
    if any(name in position and position[name] not in plan.decimals for name in (fields.quantity, fields.price)):
        return None  # an amount read as a Decimal must have been checked as one
    rule = exchange.limit_price
    priced = rule is not None and rule.overridden_by not in position and rule.type_field in position and fields.price in position
    fresh = policy.freshness
    return _fused_checks(
        policy, exchange.symbol_form, plan, len(names),
        tuple((position[name], spellings) for name, spellings in plan.documented.items()),
        position.get(exchange.timestamp_param or "") if fresh else None, position.get(exchange.recv_window_param or "") if fresh else None,
        position.get(fields.symbol or ""), position.get(fields.quantity or "") if kind == "order" else None,
        (position[fields.price], position[rule.type_field], rule.limit_types) if priced and kind == "order" else None,  # type: ignore[index, union-attr]
    )


def _fused_checks(
    policy: SigningPolicy, symbol_form: Callable[[str], str], plan: _Plan, count: int, documented: tuple, stamp_at: int | None, window_at: int | None,
    symbol_at: int | None, size_at: int | None, priced: tuple[int, int, frozenset[str]] | None,
) -> Callable[[Any, int], _Judged | None]:
    """:func:`_fused_judge`'s function, its shape's positions given (``None``: absent)."""
    endpoints, kind, decimals, separators = plan.endpoints, plan.kind, plan.decimals, count - 1
    skew, max_window, decimal, symbols = policy.max_skew_ms, policy.max_recv_window_ms, DECIMAL.fullmatch, policy.symbols
    symbols = symbols if kind != "read" else None  # reads are not held to the symbol allowlist
    limits, per_symbol = policy.limits, policy.per_symbol

    def judge(params: Any, now_ms: int) -> _Judged | None:
        joined = "\x01".join(map(_VALUE_OF, params))
        if joined.count("\x01") != separators or not _plain_values(joined):
            return None
        for index in decimals:
            if not decimal(params[index][1]):
                return None
        for index, spellings in documented:
            if params[index][1] not in spellings:
                return None
        if stamp_at is not None:
            stamp = params[stamp_at][1]
            if not stamp.isdigit() or len(stamp) > 16 or abs(int(stamp) - now_ms) > skew:
                return None
        if window_at is not None:
            window = params[window_at][1]
            if not window.isdigit() or int(window) > max_window:
                return None
        symbol = params[symbol_at][1] if symbol_at is not None else None
        canonical = symbol_form(symbol) if symbol is not None else None
        if symbols is not None and canonical is not None and canonical not in symbols:
            return None
        if kind != "order":
            return _new_tuple(_Judged, (endpoints, kind, symbol, None, None, False))  # type: ignore[no-any-return]
        if canonical is None and (symbols is not None or per_symbol):
            return None  # an order that names no symbol, under limits by symbol: refused by the general checks
        quantity = Decimal(params[size_at][1]) if size_at is not None else None
        notional = None
        if priced is not None and quantity is not None and params[priced[1]][1] in priced[2]:
            notional = _times(quantity, Decimal(params[priced[0]][1]))
        if not (_within(limits, quantity, notional) and _within(per_symbol.get(canonical or "", _NO_LIMITS), quantity, notional)):
            return None
        return _new_tuple(_Judged, (endpoints, kind, symbol, quantity, notional, True))  # type: ignore[no-any-return]

    return judge


def _within(limits: _Limits, quantity: Decimal | None, notional: Decimal | None) -> bool:
    """An order's size within ``limits`` as ``_check_size`` judges it: a capped amount must be known."""
    cap_quantity, cap_notional = limits.max_quantity, limits.max_notional
    return (cap_quantity is None or (quantity is not None and quantity <= cap_quantity)) and (cap_notional is None or (notional is not None and notional <= cap_notional))


class _Refused(NamedTuple):
    rule: str
    message: str


# -- decisions ----------------------------------------------------------------------------------
class Authorized(NamedTuple):
    """What the enclave will sign: the canonical parameters and body, and the facts for the receipt."""

    params: tuple[tuple[str, str], ...]
    body: bytes
    endpoints: tuple[str, ...]
    kind: str
    symbol: str | None = None
    quantity: Decimal | None = None
    notional: Decimal | None = None


class PolicyState:
    """One key's policy plus what it remembers (rate bucket, notional window, verdicts), thread-safe
    and bounded in memory whatever the host sends."""

    def __init__(self, policy: SigningPolicy) -> None:
        self.policy = policy
        # One lock for the rate bucket and the notional window: an order is metered in one step.
        self._meter_lock = threading.Lock()
        self._bucket = TokenBucket(*policy.rate, lock=self._meter_lock) if policy.rate else None
        self._window = NotionalWindow(policy.window_seconds, lock=self._meter_lock) if policy.window_seconds is not None else None
        self._verdicts = Verdicts()
        # Shapes seen with their parameters in order (_remember_plan) share the verdicts' room and bound.
        self._plans = self._verdicts

    # raw -------------------------------------------------------------------------------------
    def authorize_raw(self, now_ms: int) -> None:
        if not self.policy.raw_signing:
            raise Refusal("raw_signing", "raw payload signing is off for this key; use sign_request")
        if self._bucket is not None and self.policy.exchange is None and not self._bucket.take(now_ms):
            raise self._rate_refusal()

    # requests --------------------------------------------------------------------------------
    def authorize_request(self, method: str, path: str, params: tuple[tuple[str, str], ...], body: bytes, now_ms: int) -> Authorized:
        policy = self.policy
        exchange = policy.exchange
        if exchange is None:
            raise Refusal("scheme", f"{policy.scheme} signs raw payloads only")
        _check_request_size(path, params, body)
        method = method.upper()
        if not body and exchange.header_recv_window is None and method not in exchange.json_body_methods:
            plan = self._plans.get((_PLAN, method, path, *[name for name, _ in params]))
            if plan is not None:  # a shape seen before: only its values are judged
                return self.authorize_planned(plan, params, now_ms)
        params, header_params = self._header_recv_window(exchange, params)
        batch = _batch_endpoints(exchange).get((method, path))
        if batch is not None:
            return self._authorize_batch(exchange, batch, header_params, params, body, now_ms)
        checked, body = _canonical_parameters(exchange, method, params, body)
        judged = self._judge_fields(exchange, method, path, checked, now_ms)
        if judged.kind in _SIZED:
            self._meter(now_ms, judged.kind, judged.sized, judged.notional)
        # A JSON body is signed as the body: its fields were checked, but are not query parameters.
        signed_params = header_params + (() if method in exchange.json_body_methods else checked)
        return Authorized(signed_params, body, judged.endpoints, judged.kind, judged.symbol, judged.quantity, judged.notional)

    def _judge_fields(self, exchange: Exchange, method: str, path: str, checked: tuple[tuple[str, str], ...], now_ms: int, batch: bool = False) -> _Judged:
        """Every rule but the notional window and the rate, for one order (or read) of checked fields."""
        names = frozenset(name for name, _ in checked) | exchange.implicit
        verdict = self._verdict(exchange, method, path, names, batch)
        if not batch:
            self._remember_plan(exchange, method, path, checked, verdict)
        names_of = tuple(endpoint.name for endpoint in verdict.endpoints)
        return self._judge_values(exchange, names_of, verdict.kind, verdict.documented, exchange.order_fields_of(verdict.endpoints), dict(checked), now_ms)

    def _remember_plan(self, exchange: Exchange, method: str, path: str, checked: tuple[tuple[str, str], ...], verdict: _Verdict) -> None:
        """Remember what judging this shape found (its names passed, its verdict is an allowed
        one) for a request that :meth:`authorize_request` can judge by its values alone: the
        parameters are the query, in this order, with no body and no header window."""
        if exchange.header_recv_window is not None or method in exchange.json_body_methods:
            return
        names = [name for name, _ in checked]
        documented = tuple((name, spellings) for name, spellings in verdict.documented.items() if name in names)
        decimals = tuple(index for index, name in enumerate(names) if name in DECIMAL_PARAMETERS)
        plan = _Plan(tuple(endpoint.name for endpoint in verdict.endpoints), verdict.kind, MappingProxyType(dict(documented)), exchange.order_fields_of(verdict.endpoints), decimals)
        plan = plan._replace(fused=_fused_judge(self.policy, exchange, plan, names))
        shape = (_PLAN, method, path, *names)  # a key no verdict's shape can be
        fused_cost = 0 if plan.fused is None else _FUSED_COST + 64 * len(documented)  # the function, its cells, the positions
        self._plans.remember(shape, plan, 1024 + len(path) + sum(176 + len(name) for name in names) + 128 * len(documented) + fused_cost)

    def plan_for(self, method: str, path: str, names: tuple[str, ...]) -> _Plan | None:
        """The plan remembered for a query-only request (no body) of this shape — its method, path
        and parameter names in this order — if :meth:`authorize_request` would judge such a
        request by its values alone; else None. For :meth:`authorize_planned`."""
        exchange = self.policy.exchange
        method = method.upper()
        if exchange is None or exchange.header_recv_window is not None or method in exchange.json_body_methods:
            return None
        return self._plans.get((_PLAN, method, path, *names))  # type: ignore[no-any-return]

    def authorize_planned(self, plan: _Plan, params: tuple[tuple[str, str], ...], now_ms: int) -> Authorized:
        """``authorize_request(method, path, params, b"", now_ms)`` for a request whose shape has
        ``plan`` (from :meth:`plan_for` on this state, for exactly these names in this order):
        the same checks of the values, in the same order, as for a request judged from scratch."""
        exchange: Exchange = self.policy.exchange  # type: ignore[assignment]  # a plan exists only for an exchange's policy
        fused = plan.fused
        judged = fused(params, now_ms) if fused is not None else None
        if judged is None:  # not the common case, or refused: the general checks decide and say why
            _check_plain_values(params, exchange.order_fields.symbol, plan.decimals)
            judged = self._judge_values(exchange, plan.endpoints, plan.kind, plan.documented, plan.fields, dict(params), now_ms)
        if judged.kind in _SIZED:
            self._meter(now_ms, judged.kind, judged.sized, judged.notional)
        return _new_tuple(Authorized, (params, b"", *judged[:5]))  # type: ignore[no-any-return]

    def _judge_values(
        self, exchange: Exchange, endpoints: tuple[str, ...], kind: str, documented: Mapping[str, frozenset[str]], fields: OrderFields, values: dict[str, str], now_ms: int
    ) -> _Judged:
        """The rules that read values, for a request whose shape (the ``endpoints`` it reaches, by name, and its ``kind``) was judged."""
        policy = self.policy
        _check_documented_values(values, documented)
        self._check_freshness(exchange, values, now_ms)
        symbol = values.get(fields.symbol or "")
        # Every symbol rule compares the exchange's canonical form: btcusdt is BTCUSDT's order.
        canonical = exchange.symbol_form(symbol) if symbol is not None else None
        if kind in {"order", "amend", "cancel"} and canonical is not None and policy.symbols is not None and canonical not in policy.symbols:
            raise Refusal("symbol", f"symbol {symbol[:40]!r} is not in the policy's allowlist")
        if kind == "amend" and canonical is None and policy.symbols is not None:
            # Kraken's AmendOrder names no pair: moving a stop's trigger_price alone fires an order of any pair.
            raise Refusal("symbol", "the policy lists symbols, and this amend does not name the symbol of the order it changes")
        quantity = notional = size = None
        if kind in _SIZED:
            if exchange.borrowing and not policy.borrowing:
                self._check_borrowing(exchange, values)
            size = _order_size(exchange, values, kind, fields)
            if size is not None:
                if canonical is None and (policy.symbols is not None or policy.per_symbol):
                    # Kraken's AmendOrder names no pair: which symbol's limits would apply is unknown.
                    raise Refusal("symbol", "the policy limits symbols, and this request changes an order's size or price without naming its symbol")
                quantity, notional, quoted = size
                self._check_size(canonical, quantity, notional, quoted, kind)
        return _new_tuple(_Judged, (endpoints, kind, symbol, quantity, notional, size is not None))  # type: ignore[no-any-return]

    def _authorize_batch(self, exchange: Exchange, endpoint: Endpoint, header_params: tuple, params: tuple, body: bytes, now_ms: int) -> Authorized:
        """Every order of a batch judged by every rule, each counted against the window and the
        rate; one refused refuses the batch (naming it by index). What is signed is the array re-serialised."""
        if params:
            raise Refusal("non_canonical", f"{exchange.name} POST requests carry their parameters in the JSON body, not the query")
        items, judged = [], []
        for index, item in enumerate(_strict_json_items(body, endpoint)):
            try:
                parsed, checked = _checked_object(exchange, item)
                judged.append(self._judge_fields(exchange, endpoint.method, endpoint.path, checked, now_ms, batch=True))
            except Refusal as refusal:
                raise Refusal(refusal.rule, f"order {index} of the batch: {refusal}") from None
            items.append(parsed)
        if endpoint.kind in _SIZED:
            self._meter_batch(now_ms, judged)
        symbols = {each.symbol for each in judged}
        quantities, notionals = [each.quantity for each in judged], [each.notional for each in judged]
        return Authorized(
            header_params, json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode(), judged[0].endpoints, endpoint.kind,
            symbols.pop() if len(symbols) == 1 else None,
            _exact_sum(quantities) if None not in quantities else None, _exact_sum(notionals) if None not in notionals else None,  # type: ignore[arg-type]
        )

    def _meter_batch(self, now_ms: int, judged: list[_Judged]) -> None:
        """A batch counts as its orders would one by one, all or none: the window admits their
        total at once, and the bucket gives a token for each (or takes none)."""
        policy = self.policy
        window = self._window if policy.window_max is not None else None
        sized = [each for each in judged if each.sized]
        if window is not None:
            unknown = next((index for index, each in enumerate(judged) if each.sized and each.notional is None), None)
            if unknown is not None:
                raise Refusal("notional_unknown", f"order {unknown} of the batch: the policy caps notional per window, and this order's notional cannot be computed")
        counted = sum(1 for each in judged if each.kind == "order" or each.sized)
        taken = 0
        while self._bucket is not None and taken < counted and self._bucket.take(now_ms):
            taken += 1
        took = self._bucket is None or taken == counted
        total = window.admit(now_ms, _exact_sum([each.notional for each in sized]), policy.window_max, commit=took) if window is not None and sized else None  # type: ignore[arg-type, misc]
        if total is not None or not took:
            for _ in range(taken if self._bucket is not None else 0):
                self._bucket.give_back()  # type: ignore[union-attr]
        if total is not None:
            raise Refusal("notional_window", f"the batch's {len(judged)} orders would bring the notional signed in the last {policy.window_seconds} s to {total}, above {policy.window_max}")
        if not took:
            raise Refusal("rate", f"a batch of {counted} orders is more than the policy's rate allows now ({policy.rate[0]} per second, bursts of {policy.rate[1]})")  # type: ignore[index]

    def endpoints_for(self, endpoint: Endpoint, names: Iterable[str]) -> tuple[str, ...]:
        """The endpoints a request to ``endpoint`` with parameters ``names`` (of each item, for a
        batch) could reach, when the policy allows them all; else the :class:`Refusal` signing it
        would meet. The request's shape only, the same verdict signing reaches first: the host's
        ``policy check`` lists with it what is signable."""
        exchange = self.policy.exchange
        if exchange is None:
            raise Refusal("scheme", f"{self.policy.scheme} signs raw payloads only")
        path = re.sub(r"\{[^/]*\}", "id", endpoint.path)  # a templated segment, filled as a request fills it
        matches, _, _ = self._verdict(exchange, endpoint.method, path, frozenset(names) | exchange.implicit, bool(endpoint.batch))
        return tuple(each.name for each in matches)

    def _verdict(self, exchange: Exchange, method: str, path: str, names: frozenset[str], batch: bool = False) -> _Verdict:
        """Which endpoints a request could reach, whether the policy allows all of them, and the
        documented spellings of their enumerated parameters.

        Depends only on what the signature covers, so it is computed once per distinct shape and
        remembered (a bot sends the same few shapes over and over).
        """
        covers = exchange.covers
        shape = ("method" in covers and method, ("path" in covers or method == "WS") and path, _signed_format(method), names)
        if batch:  # only then: a longer key for every shape would cost every remembered verdict
            shape += (batch,)
        verdict = self._verdicts.get(shape)
        if verdict is None:
            try:
                verdict = self._judge(exchange, method, path, names, batch)
            except Refusal as refusal:
                # Remember the words, not the exception: its traceback would keep every frame of
                # this request (and the request itself) alive for as long as the verdict.
                verdict = _Refused(refusal.rule, str(refusal))
            self._verdicts.remember(shape, verdict, _shape_cost(shape, verdict))
        if isinstance(verdict, _Refused):
            raise Refusal(verdict.rule, verdict.message)
        return verdict

    def _judge(self, exchange: Exchange, method: str, path: str, names: frozenset[str], batch: bool) -> _Verdict:
        matches = _matching_endpoints(exchange, method, path, names, batch)
        # Dangerous endpoints first, so the refusal names the worst thing the signature could do.
        for endpoint in sorted(matches, key=lambda endpoint: endpoint.category not in DANGEROUS_CATEGORIES):
            if endpoint.name not in self.policy.allow:
                if endpoint.category in DANGEROUS_CATEGORIES:
                    reach = (
                        f"the request is for {endpoint.name}" if "path" in exchange.covers
                        else f"a signature for these parameters would also be valid for {endpoint.name}"
                    )
                    raise Refusal(endpoint.category, f"{reach} ({_CATEGORY_WORDS[endpoint.category]}), which the policy does not name")
                also = "" if endpoint.name == endpoint_name(method, path) else " (the signature does not cover the path, and that endpoint takes the same parameters)"
                raise Refusal("endpoint", f"the policy does not allow {endpoint.name}{also}")
        kinds = {endpoint.kind for endpoint in matches}
        kind = "order" if "order" in kinds else "amend" if "amend" in kinds else "cancel" if "cancel" in kinds else "read"
        return _Verdict(tuple(matches), kind, _documented_values(tuple(matches)))

    def _header_recv_window(self, exchange: Exchange, params: tuple[tuple[str, str], ...]) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
        """A recv window that rides in a signed header (Bybit's) is passed to the scheme as a
        pseudo-parameter: take it out of the parameters, and check it as the scheme reads it.
        Where the request names none and the scheme's default is above the cap, name the cap."""
        header = exchange.header_recv_window
        if header is None:
            return params, ()
        windows = [value for name, value in params if name == header.name]
        if not windows:
            cap, default = self.policy.max_recv_window_ms, header.parse(header.default)
            if self.policy.freshness and (default is None or default > cap):
                return params, ((header.name, str(cap)),)
            return params, ()
        if len(windows) > 1:
            raise Refusal("duplicate_parameter", f"parameter {header.name!r} appears twice")
        milliseconds = header.parse(windows[0])
        if milliseconds is None:
            raise Refusal("non_canonical", f"{header.name} must be a whole number of milliseconds")
        if self.policy.freshness and milliseconds > self.policy.max_recv_window_ms:
            raise Refusal("recv_window", f"{header.name} must be at most {self.policy.max_recv_window_ms} ms")
        return tuple(pair for pair in params if pair[0] != header.name), ((header.name, windows[0]),)

    def _check_freshness(self, exchange: Exchange, values: dict[str, str], now_ms: int) -> None:
        policy = self.policy
        if not policy.freshness:
            return
        nonce = exchange.host_nonce_param
        if nonce is not None and values.get(nonce):  # an empty one only marks where the enclave's goes
            raise Refusal("freshness", f"the enclave sets {exchange.family.title()}'s {nonce} from its own clock; a {nonce} chosen by the host could be signed now and used much later")
        timestamp = values.get(exchange.timestamp_param or "")
        if timestamp is not None:
            if not timestamp.isdigit() or len(timestamp) > 16:
                raise Refusal("non_canonical", "timestamp must be milliseconds since the epoch")
            skew = abs(int(timestamp) - now_ms)
            if skew > policy.max_skew_ms:
                raise Refusal("freshness", f"timestamp is {skew} ms away from the enclave clock (at most {policy.max_skew_ms} allowed)")
        recv_window = values.get(exchange.recv_window_param or "")
        if recv_window is not None:
            if not recv_window.isdigit() or int(recv_window) > policy.max_recv_window_ms:
                raise Refusal("recv_window", f"{exchange.recv_window_param} must be at most {policy.max_recv_window_ms} ms")

    def _check_borrowing(self, exchange: Exchange, values: dict[str, str]) -> None:
        """Only documented spellings get here (``_check_documented_values``), so exact matches are
        exactly the exchange's own reading."""
        if self.policy.borrowing:
            return
        for name, borrowing_values in exchange.borrowing.items():
            value = values.get(name)
            if value is not None and (borrowing_values is None or value in borrowing_values):
                raise Refusal("borrowing", f"{name}={value[:20]} makes the exchange lend to this order; the policy does not allow borrowing")

    def _check_size(self, symbol: str | None, quantity: Decimal | None, notional: Decimal | None, quoted: bool, kind: str) -> None:
        """``symbol`` in canonical form; ``quoted``: some reading of the order sizes it in the quote currency."""
        for limits in (self.policy.limits, self.policy.per_symbol.get(symbol or "", _NO_LIMITS)):
            if limits is _NO_LIMITS:
                continue
            scope = "" if limits is self.policy.limits else f" for {symbol}"  # words for a refusal only
            if limits.max_quantity is not None:
                if quantity is None:
                    if kind == "order":  # an amend without a new quantity keeps the order's own
                        why = "it can be read as a quote quantity, which buys any amount" if quoted else "it gives none"
                        raise Refusal("quantity_unknown", f"the policy caps quantity{scope}, and this order's base quantity is unknown: {why}")
                elif quantity > limits.max_quantity:
                    raise Refusal("max_quantity", f"quantity {quantity} is above the policy's maximum{scope} of {limits.max_quantity}")
            if limits.max_notional is not None:
                if notional is None:
                    raise Refusal("notional_unknown", f"the policy caps notional{scope}, and this order's notional cannot be computed (give a price, or a quote quantity)")
                if notional > limits.max_notional:
                    raise Refusal("max_notional", f"notional {notional} is above the policy's maximum{scope} of {limits.max_notional}")

    def _meter(self, now_ms: int, kind: str, sized: bool, notional: Decimal | None) -> None:
        """Count an order or amend against the notional window and the rate bucket: both, or (refused)
        neither. A size-less "amend" is a cancel's twin: cancels stay unmetered."""
        policy = self.policy
        window = self._window if sized and policy.window_max is not None else None
        if window is not None and notional is None:
            raise Refusal("notional_unknown", "the policy caps notional per window, and this order's notional cannot be computed")
        bucket = self._bucket if kind == "order" or sized else None
        with self._meter_lock:  # the bucket's and the window's: taken once for both
            took = bucket.take_locked(now_ms) if bucket is not None else True
            total = window.admit_locked(now_ms, notional, policy.window_max, commit=took) if window is not None else None  # type: ignore[arg-type]
            if total is not None and bucket is not None and took:
                bucket.give_back_locked()
        if total is not None:
            raise Refusal("notional_window", f"this order would bring the notional signed in the last {policy.window_seconds} s to {total}, above {policy.window_max}")
        if not took:
            raise self._rate_refusal()

    def _rate_refusal(self) -> Refusal:
        rate = self.policy.rate
        assert rate is not None  # called only where the bucket is, and the bucket is made from the rate
        return Refusal("rate", f"more than {rate[0]} orders per second (bursts of {rate[1]}); try again shortly")
