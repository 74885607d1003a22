"""The signing-policy language and its decision function.

A policy is sealed with its secret (its SHA-256 is part of the KMS encryption context), so the
host cannot swap or loosen it. This module is pure — no I/O, and time is passed in — so the
enclave enforces exactly what the host tools (``zerocopy policy check`` / ``simulate``) predict.

The decision depends only on what the signature covers (see :mod:`.catalogue`). For Binance and
Bybit that is the parameter set, so the engine finds *every* endpoint that would accept the
request's parameters and refuses unless the policy allows all of them; fund-moving, account
security and session endpoints must be named explicitly. Parameters must be known, unique and in
canonical form (enumerated ones in a spelling the exchange documents), JSON bodies are parsed
strictly and re-serialised by the enclave, and the enclave builds the string to sign itself.
Symbols are compared in the exchange's canonical form, and an order the exchange could read more
than one way must be within the limits under every reading. What a request can cost — its
refusal's size, what is remembered about it — is bounded, whatever the host sends.

Document (JSON; ``zerocopy seal --policy`` also reads TOML) — every field is optional::

    version = 1
    scheme = "binance-hmac"       # optional: the scheme the policy is written for
    allow = ["POST /api/v3/order", "DELETE /api/v3/order"]   # endpoints ("METHOD path")
    raw_signing = false           # Signer.sign() of arbitrary bytes
    symbols = ["BTCUSDT"]         # allowlist for orders, amends and cancels
    max_quantity = "0.5"          # per order, in base units
    max_notional = "25000"        # per order, price x quantity (quote units)
    [per_symbol.BTCUSDT]          # tighter limits for one symbol
    max_quantity = "0.1"
    [notional_window]             # cumulative notional of signed orders
    seconds = 3600
    max_notional = "100000"
    [rate]                        # token bucket over orders and amends
    per_second = "5"
    burst = 10
    [freshness]                   # client-supplied timestamps (Binance)
    enabled = true
    max_skew_ms = 5000
    max_recv_window_ms = 5000
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, NamedTuple

from .catalogue import CATALOGUES, DANGEROUS_CATEGORIES, SIGNATURE_COVERS, Endpoint, Flags, endpoint_name
from .errors import ZeroCopyError

__all__ = [
    "PolicyError",
    "Refusal",
    "SigningPolicy",
    "PolicyState",
    "Authorized",
    "normalize_document",
    "catalogue_for_scheme",
]

VERSION = 1
_FIELDS = {
    "version", "scheme", "allow", "borrowing", "raw_signing", "symbols", "max_quantity", "max_notional", "per_symbol",
    "notional_window", "rate", "freshness",
}
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_NAMES = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(?:\x01[A-Za-z_][A-Za-z0-9_]{0,63})*")  # one or more names
_VALUE = re.compile(r"[A-Za-z0-9._:,@/+-]{0,256}")
_VALUES = re.compile(r"(?:[A-Za-z0-9._:,@/+-]{0,256}\x01)*[A-Za-z0-9._:,@/+-]{0,256}")  # all values at once
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,127}")  # a templated path segment: ids and UUIDs, never "." or ".."
_SYMBOL = re.compile(r"[A-Za-z0-9._:/-]{1,40}")
_ENDPOINT = re.compile(r"(GET|POST|PUT|DELETE|WS) [!-~]{1,200}")  # printable ASCII: every catalogue name is
_MAX_INT = 10**31
_DEFAULT_RATE = (Decimal(10), 20)
_DEFAULT_SKEW_MS = 5000
_DEFAULT_RECV_WINDOW_MS = 5000
# Sizes: whatever the host sends, what the engine keeps and answers is bounded.
_MAX_BODY = 64 * 1024
_MAX_PARAMETERS = 64  # twice the most any catalogued endpoint takes (Bybit's order: 29)
_MAX_PATH = 1024
_MAX_MESSAGE_BYTES = 300  # a refusal's reason or a policy error: it travels in a frame and a receipt
_VERDICT_BYTES = 1 << 20  # remembered verdicts, per key
_MAX_REMEMBERED_SHAPES = 4096
_WINDOW_BUCKETS = 4096  # the notional window keeps at most this many sums

# Which parameters carry the order facts, per catalogue: symbol, base quantity, quote quantity,
# price, and (for amends) the new size and price.
_ORDER_FIELDS = {
    "binance": {"symbol": "symbol", "quantity": "quantity", "quote_quantity": "quoteOrderQty", "price": "price"},
    "binance-ws": {"symbol": "symbol", "quantity": "quantity", "quote_quantity": "quoteOrderQty", "price": "price"},
    "bybit": {"symbol": "symbol", "quantity": "qty", "price": "price"},
    "okx": {"symbol": "instId", "quantity": "sz", "price": "px", "new_quantity": "newSz", "new_price": "newPx"},
    "kraken": {"symbol": "pair", "quantity": "volume", "price": "price"},
}
# Per catalogue: the order-type parameter, the types whose price is a limit the order executes at or
# better than (only then does price x quantity bound the notional), and a parameter that makes the
# exchange choose the price itself (Binance pegged orders).
_BINANCE_LIMITS = ("type", frozenset({"LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"}), "pegPriceType")
_LIMIT_PRICE: dict[str, tuple[str, frozenset[str], str | None]] = {
    "binance": _BINANCE_LIMITS,
    "binance-ws": _BINANCE_LIMITS,
    "bybit": ("orderType", frozenset({"Limit"}), None),
    "okx": ("ordType", frozenset({"limit", "post_only", "fok", "ioc", "mmp", "mmp_and_post_only"}), None),
    "kraken": ("ordertype", frozenset({"limit", "iceberg"}), None),
}
# Parameters whose values must be canonical decimals.
_DECIMAL_PARAMS = frozenset(
    "quantity quoteOrderQty price stopPrice icebergQty trailingDelta qty triggerPrice takeProfit stopLoss "
    "tpLimitPrice slLimitPrice sz px newSz newPx volume price2 displayvol amount amt".split()
)


def _bounded(message: str, limit: int = _MAX_MESSAGE_BYTES) -> str:
    """``message`` as at most ``limit`` bytes of UTF-8 (lone surrogates escaped): its size must not
    depend on what the host sent."""
    data = message.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data.decode("utf-8")
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


class PolicyError(ZeroCopyError, ValueError):
    """A policy document that does not parse; the message names the field."""

    def __init__(self, message: str) -> None:
        super().__init__(_bounded(message))


class Refusal(Exception):
    """A request the policy does not allow. ``rule`` names the rule that refused it; the message is
    at most a few hundred bytes."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(_bounded(message))
        self.rule = rule


def catalogue_for_scheme(scheme: str) -> str | None:
    from .schemes import POLICY_CATALOGUE

    return POLICY_CATALOGUE.get(scheme)


# -- parsing ------------------------------------------------------------------------------------
def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PolicyError(f"{where} must be a decimal written as a string, e.g. \"0.5\"")
    if isinstance(value, int) and not 0 <= value < _MAX_INT:  # str() of a huge int raises ValueError
        raise PolicyError(f"{where} must be a plain non-negative decimal such as \"0.5\" (at most 31 digits)")
    text = str(value)
    if not _DECIMAL.fullmatch(text):
        raise PolicyError(f"{where} must be a plain non-negative decimal such as \"0.5\", not {text[:40]!r}")
    return Decimal(text)


def _canonical_decimal(value: Any, where: str) -> str:
    number = _decimal(value, where).normalize()
    return format(number, "f")


def _int(value: Any, where: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise PolicyError(f"{where} must be a whole number from {minimum} to {maximum}")
    return value


def _unknown_field(table: dict, fields: set[str] | frozenset[str], where: str) -> None:
    """Refuse keys that are not field names (a dict built in Python may have any keys) or unknown."""
    for key in table:
        if not isinstance(key, str):
            raise PolicyError(f"{where}: field names must be strings, not {type(key).__name__}")
    unknown = sorted(set(table) - fields)
    if unknown:
        raise PolicyError(f"unknown policy field {unknown[0][:40]!r}" if where == "policy" else f"unknown field {where}.{unknown[0][:40]}")


def _table(document: dict, name: str, fields: set[str]) -> dict:
    table = document.get(name, {})
    if not isinstance(table, dict):
        raise PolicyError(f"{name} must be a table")
    _unknown_field(table, fields, name)
    return table


def normalize_document(document: Any) -> dict:
    """The canonical form of a policy document: validated shape, decimals as normalized strings.

    Its canonical JSON is what gets hashed into the encryption context. Semantic checks that need
    the scheme happen in :meth:`SigningPolicy.parse`.
    """
    if not isinstance(document, dict):
        raise PolicyError("a policy must be a table / JSON object")
    _unknown_field(document, _FIELDS, "policy")
    result: dict[str, Any] = {"version": document.get("version", VERSION)}
    if type(result["version"]) is not int or result["version"] != VERSION:  # not True, not 1.0
        raise PolicyError(f"version must be {VERSION}")
    if "scheme" in document:
        from .schemes import SCHEME_NAMES

        if document["scheme"] not in SCHEME_NAMES:
            raise PolicyError(f"scheme must be one of {', '.join(SCHEME_NAMES)}")
        result["scheme"] = document["scheme"]
    if "allow" in document:
        allow = document["allow"]
        if not isinstance(allow, list) or not all(isinstance(item, str) for item in allow):
            raise PolicyError('allow must be a list of "METHOD path" strings')
        for item in allow:
            if not _ENDPOINT.fullmatch(item):
                raise PolicyError(f'allow entry {item[:60]!r} must look like "POST /api/v3/order" (or "WS order.place")')
        if len(set(allow)) != len(allow):
            raise PolicyError("allow lists an endpoint twice")
        result["allow"] = sorted(allow)
    for flag in ("raw_signing", "borrowing"):
        if flag in document:
            if not isinstance(document[flag], bool):
                raise PolicyError(f"{flag} must be true or false")
            result[flag] = document[flag]
    if "symbols" in document:
        symbols = document["symbols"]
        if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) and _SYMBOL.fullmatch(s) for s in symbols):
            raise PolicyError("symbols must be a non-empty list of symbol names such as \"BTCUSDT\"")
        result["symbols"] = sorted(set(symbols))
    for limit in ("max_quantity", "max_notional"):
        if limit in document:
            result[limit] = _canonical_decimal(document[limit], limit)
    if "per_symbol" in document:
        per_symbol = document["per_symbol"]
        if not isinstance(per_symbol, dict) or not per_symbol:
            raise PolicyError("per_symbol must be a table of symbol tables")
        result["per_symbol"] = {}
        for symbol, limits in per_symbol.items():
            if not isinstance(symbol, str) or not _SYMBOL.fullmatch(symbol) or not isinstance(limits, dict) or not limits:
                raise PolicyError("per_symbol must map symbol names to tables of max_quantity / max_notional")
            _unknown_field(limits, {"max_quantity", "max_notional"}, f"per_symbol.{symbol}")
            result["per_symbol"][symbol] = {name: _canonical_decimal(value, f"per_symbol.{symbol}.{name}") for name, value in limits.items()}
    if "notional_window" in document:
        window = _table(document, "notional_window", {"seconds", "max_notional"})
        if set(window) != {"seconds", "max_notional"}:
            raise PolicyError("notional_window needs seconds and max_notional")
        result["notional_window"] = {
            "seconds": _int(window["seconds"], "notional_window.seconds", minimum=1, maximum=31 * 86400),
            "max_notional": _canonical_decimal(window["max_notional"], "notional_window.max_notional"),
        }
    if "rate" in document:
        rate = _table(document, "rate", {"per_second", "burst"})
        if set(rate) != {"per_second", "burst"}:
            raise PolicyError("rate needs per_second and burst")
        per_second = _decimal(rate["per_second"], "rate.per_second")
        if per_second <= 0:
            raise PolicyError("rate.per_second must be above zero")
        result["rate"] = {"per_second": format(per_second.normalize(), "f"), "burst": _int(rate["burst"], "rate.burst", minimum=1, maximum=100000)}
    if "freshness" in document:
        freshness = _table(document, "freshness", {"enabled", "max_skew_ms", "max_recv_window_ms"})
        normalized: dict[str, Any] = {}
        if "enabled" in freshness:
            if not isinstance(freshness["enabled"], bool):
                raise PolicyError("freshness.enabled must be true or false")
            normalized["enabled"] = freshness["enabled"]
        for name in ("max_skew_ms", "max_recv_window_ms"):
            if name in freshness:
                normalized[name] = _int(freshness[name], f"freshness.{name}", minimum=1, maximum=60000)
        result["freshness"] = normalized
    return result


@dataclass(frozen=True)
class _Limits:
    max_quantity: Decimal | None = None
    max_notional: Decimal | None = None


@dataclass(frozen=True)
class SigningPolicy:
    """A parsed policy for one key (scheme known)."""

    scheme: str
    catalogue: str | None
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

    @classmethod
    def parse(cls, document: dict | None, *, scheme: str) -> "SigningPolicy":
        catalogue = catalogue_for_scheme(scheme)
        normalized = normalize_document(document) if document is not None else None
        doc = normalized or {}
        if doc.get("scheme", scheme) != scheme:
            raise PolicyError(f"this policy is written for {doc['scheme']}, not {scheme}")
        if catalogue is None:
            extra = sorted(set(doc) - {"version", "scheme", "raw_signing", "rate"})
            if extra:
                raise PolicyError(f"{scheme} signs raw payloads only; {extra[0]!r} does not apply (only raw_signing and rate do)")
        endpoints = CATALOGUES.get(catalogue or "", ())
        known = {endpoint.name for endpoint in endpoints}
        if "allow" in doc:
            unknown = sorted(set(doc["allow"]) - known)
            if unknown:
                raise PolicyError(f"allow: {unknown[0]!r} is not an endpoint ZeroCopy knows for {scheme}; see docs/policy.md for the catalogue")
            allow = frozenset(doc["allow"])
        else:
            allow = frozenset(endpoint.name for endpoint in endpoints if endpoint.category in {"trade", "read"})
        if catalogue == "coinbase":
            # borrowing too: an order body's leverage and margin_type are the host's to write
            constrained = sorted(set(doc) & {"symbols", "max_quantity", "max_notional", "per_symbol", "notional_window", "borrowing"})
            if constrained:
                raise PolicyError(
                    f"{constrained[0]!r} cannot be enforced for coinbase-jwt: the JWT covers the method and path, not the body, "
                    "so the host can send any order body with it. Restrict endpoints and rate instead."
                )
        window = doc.get("notional_window")
        rate = doc.get("rate")
        freshness = doc.get("freshness", {})
        canonical = _SYMBOL_FORMS.get(catalogue or "", str.upper)
        return cls(
            scheme=scheme,
            catalogue=catalogue,
            document=normalized,
            raw_signing=doc.get("raw_signing", catalogue is None),
            borrowing=doc.get("borrowing", False),
            allow=allow,
            symbols=frozenset(map(canonical, doc["symbols"])) if "symbols" in doc else None,
            limits=_Limits(_opt_decimal(doc.get("max_quantity")), _opt_decimal(doc.get("max_notional"))),
            per_symbol=_per_symbol_limits(doc.get("per_symbol", {}), canonical),
            window_seconds=window["seconds"] if window else None,
            window_max=Decimal(window["max_notional"]) if window else None,
            rate=(Decimal(rate["per_second"]), rate["burst"]) if rate else (None if catalogue is None else _DEFAULT_RATE),
            freshness=freshness.get("enabled", True),
            max_skew_ms=freshness.get("max_skew_ms", _DEFAULT_SKEW_MS),
            max_recv_window_ms=freshness.get("max_recv_window_ms", _DEFAULT_RECV_WINDOW_MS),
        )

    def explain(self) -> list[str]:
        """The policy in plain words, one statement per line."""
        lines = []
        if self.document is None:
            lines.append(f"No policy was sealed with this key: the safe default for {self.scheme} applies.")
        lines.append(
            "Raw payload signing (Signer.sign) is ALLOWED: the enclave signs any bytes the host sends, with no further checks."
            if self.raw_signing and self.catalogue is not None
            else "Raw payload signing (Signer.sign) is allowed." if self.raw_signing
            else "Raw payload signing (Signer.sign) is refused; requests must go through sign_request."
        )
        if self.catalogue is not None:
            endpoints = CATALOGUES[self.catalogue]
            allowed = [endpoint for endpoint in endpoints if endpoint.name in self.allow]
            lines.append(f"Requests that may be signed ({len(allowed)}): " + ", ".join(endpoint.name for endpoint in allowed) + ".")
            dangerous = [endpoint.name for endpoint in allowed if endpoint.category in DANGEROUS_CATEGORIES]
            if dangerous:
                lines.append("WARNING: fund-moving, account-security, session or account-settings endpoints are allowed: " + ", ".join(dangerous) + ".")
            else:
                lines.append("Withdrawals, transfers, account-security changes, session logons and account-settings changes (leverage) are refused.")
            lines.append(
                "Coinbase JWTs do not cover the body: an order's leverage and margin_type cannot be refused (turn margin and futures off for the key's portfolio)."
                if self.catalogue == "coinbase"
                else "Orders that borrow (margin side effects, margin trade modes, leverage flags) are ALLOWED." if self.borrowing
                else "Orders that make the exchange lend (Binance sideEffectType MARGIN_BUY/AUTO_BORROW_REPAY, Bybit isLeverage=1, "
                "OKX tdMode other than cash or quickMgnType=auto_borrow, Kraken leverage) are refused."
            )
            if not SIGNATURE_COVERS[self.catalogue] & {"path"}:
                lines.append(
                    f"{self.catalogue} signatures do not cover the path: a request is signed only if every endpoint accepting "
                    "its parameters is allowed."
                )
            lines.append(f"Symbols: {', '.join(sorted(self.symbols))}." if self.symbols else "Symbols: any.")
            if self.limits.max_quantity is not None:
                lines.append(f"Each order: at most {self.limits.max_quantity} in quantity.")
            if self.limits.max_notional is not None:
                lines.append(f"Each order: at most {self.limits.max_notional} in notional (price x quantity).")
            for symbol, limits in sorted(self.per_symbol.items()):
                parts = [f"quantity {limits.max_quantity}" if limits.max_quantity is not None else "", f"notional {limits.max_notional}" if limits.max_notional is not None else ""]
                lines.append(f"{symbol} orders: at most {' and '.join(p for p in parts if p)}.")
            if self.window_seconds is not None:
                lines.append(f"All orders together: at most {self.window_max} notional in any {self.window_seconds} s.")
            if self.catalogue == "coinbase":
                lines.append("Coinbase JWTs do not cover the request body: sizes and symbols cannot be enforced for this key.")
            if self.freshness:
                lines.append(f"Client timestamps must be within {self.max_skew_ms} ms of the enclave clock; recvWindow at most {self.max_recv_window_ms} ms.")
            else:
                lines.append("Timestamp freshness is NOT checked (for replaying documentation vectors; do not use in production).")
        if self.rate is not None:
            lines.append(f"Rate: {self.rate[0]} signatures per second sustained, bursts of {self.rate[1]} (orders and amends{'' if self.catalogue else '; raw signatures'}).")
        return lines


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


def _strict_json_object(body: bytes) -> dict:
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
    if not isinstance(parsed, dict):
        raise Refusal("non_canonical", "the body must be a JSON object")
    if len(parsed) > _MAX_PARAMETERS:
        raise Refusal("too_large", f"the JSON body has {len(parsed)} fields; no endpoint the policy engine knows takes more than {_MAX_PARAMETERS}")
    return parsed


def _refuse_float(text: str) -> Any:
    raise Refusal("non_canonical", f"write the number {text[:20]} as a string: floats lose precision")


class PolicyState:
    """One key's policy plus its mutable state (rate bucket, notional window, remembered verdicts),
    thread-safe and bounded in memory whatever the host sends.

    The state lives in enclave memory: an enclave restart refills the bucket and empties the
    window.
    """

    def __init__(self, policy: SigningPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        # Floats are exact enough for a rate limit, and several times cheaper than Decimal here.
        self._rate = (float(policy.rate[0]), float(policy.rate[1])) if policy.rate else None
        self._tokens = self._rate[1] if self._rate else 0.0
        self._last_refill_ms: int | None = None
        self._window = _NotionalWindow(policy.window_seconds) if policy.window_seconds is not None else None
        self._verdicts = _Verdicts(max_entries=_MAX_REMEMBERED_SHAPES, max_bytes=_VERDICT_BYTES)

    # raw -------------------------------------------------------------------------------------
    def authorize_raw(self, now_ms: int) -> None:
        if not self.policy.raw_signing:
            raise Refusal("raw_signing", "raw payload signing is off for this key; use sign_request")
        if self.policy.rate is not None and self.policy.catalogue is None:
            with self._lock:
                self._take_token(now_ms)

    # requests --------------------------------------------------------------------------------
    def authorize_request(self, method: str, path: str, params: tuple[tuple[str, str], ...], body: bytes, now_ms: int) -> Authorized:
        policy = self.policy
        catalogue = policy.catalogue
        if catalogue is None:
            raise Refusal("scheme", f"{policy.scheme} signs raw payloads only")
        _check_request_size(path, params, body)
        method = method.upper()
        header_params: tuple[tuple[str, str], ...] = ()
        if catalogue == "bybit":
            params, header_params = self._bybit_recv_window(params)
        checked, body = self._canonical_parameters(catalogue, method, params, body)
        names = frozenset(name for name, _ in checked) | _IMPLICIT.get(catalogue, frozenset())
        matches, kind, documented = self._verdict(catalogue, method, path, names)
        values = dict(checked)
        _check_documented_values(values, documented)
        self._check_freshness(values, now_ms)
        fields = _ORDER_FIELDS.get(catalogue, {})
        symbol = values.get(fields.get("symbol", ""))
        # Every symbol rule compares the exchange's canonical form: btcusdt is BTCUSDT's order.
        canonical = _SYMBOL_FORMS.get(catalogue, str.upper)(symbol) if symbol is not None else None
        if kind in {"order", "amend", "cancel"} and canonical is not None and policy.symbols is not None and canonical not in policy.symbols:
            raise Refusal("symbol", f"symbol {symbol[:40]!r} is not in the policy's allowlist")
        quantity = notional = None
        sized = False
        if kind in {"order", "amend"}:
            self._check_borrowing(catalogue, values)
            size = _order_size(catalogue, fields, values, kind)
            if size is not None:
                sized, (quantity, notional, quoted) = True, size
                self._check_size(canonical, quantity, notional, quoted, kind)
        with self._lock:
            if kind in {"order", "amend"}:
                if sized:
                    self._check_window(now_ms, notional)
                if kind == "order" or sized:  # a size-less "amend" is a cancel's twin: cancels stay unmetered
                    self._take_token(now_ms)
                if self._window is not None and notional is not None:
                    self._window.add(now_ms, notional)
        # A JSON body is signed as the body: its fields were checked, but are not query parameters.
        signed_params = header_params + (() if _json_body(catalogue, method) else checked)
        return Authorized(signed_params, body, tuple(endpoint.name for endpoint in matches), kind, symbol, quantity, notional)

    def _verdict(self, catalogue: str, method: str, path: str, names: frozenset[str]) -> "_Verdict":
        """Which endpoints a request could reach, whether the policy allows all of them, and the
        documented spellings of their enumerated parameters.

        Depends only on what the signature covers, so it is computed once per distinct shape and
        remembered (a bot sends the same few shapes over and over).
        """
        covers = SIGNATURE_COVERS[catalogue]
        shape = ("method" in covers and method, ("path" in covers or method == "WS") and path, method == "GET", names)
        verdict = self._verdicts.get(shape)
        if verdict is None:
            try:
                verdict = self._judge(catalogue, method, path, names)
            except Refusal as refusal:
                # Remember the words, not the exception: its traceback would keep every frame of
                # this request (and the request itself) alive for as long as the verdict.
                verdict = _Refused(refusal.rule, str(refusal))
            self._verdicts.remember(shape, verdict, _shape_cost(shape, verdict))
        if isinstance(verdict, _Refused):
            raise Refusal(verdict.rule, verdict.message)
        return verdict

    def _judge(self, catalogue: str, method: str, path: str, names: frozenset[str]) -> _Verdict:
        matches = self._matching_endpoints(catalogue, method, path, names)
        # Dangerous endpoints first, so the refusal names the worst thing the signature could do.
        for endpoint in sorted(matches, key=lambda endpoint: endpoint.category not in DANGEROUS_CATEGORIES):
            if endpoint.name not in self.policy.allow:
                if endpoint.category in DANGEROUS_CATEGORIES:
                    reach = (
                        f"the request is for {endpoint.name}" if "path" in SIGNATURE_COVERS[catalogue]
                        else f"a signature for these parameters would also be valid for {endpoint.name}"
                    )
                    raise Refusal(endpoint.category, f"{reach} ({_CATEGORY_WORDS[endpoint.category]}), which the policy does not name")
                also = "" if endpoint.name == endpoint_name(method, path) else " (the signature does not cover the path, and that endpoint takes the same parameters)"
                raise Refusal("endpoint", f"the policy does not allow {endpoint.name}{also}")
        kinds = {endpoint.kind for endpoint in matches}
        kind = "order" if "order" in kinds else "amend" if "amend" in kinds else "cancel" if "cancel" in kinds else "read"
        return _Verdict(tuple(matches), kind, _documented_values(tuple(matches)))

    def _canonical_parameters(self, catalogue: str, method: str, params: tuple[tuple[str, str], ...], body: bytes) -> tuple[tuple[tuple[str, str], ...], bytes]:
        if _json_body(catalogue, method):
            if params:
                raise Refusal("non_canonical", f"{catalogue} POST requests carry their parameters in the JSON body, not the query")
            parsed = _strict_json_object(body) if body else {}
            pairs = []
            for name, value in parsed.items():
                if isinstance(value, bool):
                    text = "true" if value else "false"
                elif isinstance(value, (str, int)):
                    text = str(value)
                else:
                    raise Refusal("non_canonical", f"the value of {name[:40]!r} must be a string, number or boolean (nested values are not supported)")
                pairs.append((name, text))
            _check_names(pairs)
            _check_values(pairs)  # before serialising: a lone surrogate cannot be encoded
            canonical = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
            return tuple(pairs), canonical
        if body and catalogue in ("binance", "binance-ws", "bybit", "okx", "kraken"):
            raise Refusal("non_canonical", "send the parameters as params; the enclave builds the string to sign itself")
        _check_names(params)
        _check_values(params)
        return params, body

    @staticmethod
    def _matching_endpoints(catalogue: str, method: str, path: str, names: frozenset[str]) -> list[Endpoint]:
        covers = SIGNATURE_COVERS[catalogue]
        endpoints = CATALOGUES[catalogue]
        if "path" in covers:
            candidates = [e for e in endpoints if _path_matches(e.path, path) and ("method" not in covers or e.method == method)]
            if not candidates:
                raise Refusal("endpoint", f"{endpoint_name(method, path)[:120]} is not an endpoint the policy engine knows")
            if "no-body" in covers:
                return candidates
            matches = [e for e in candidates if e.accepts(names)]
            if not matches:
                raise Refusal("unknown_parameter", _parameter_problem(candidates[0], names))
            return matches
        if "format" in covers:
            endpoints = tuple(e for e in endpoints if (e.method == "GET") == (method == "GET"))
        matches = [e for e in endpoints if e.accepts(names)]
        if not matches:
            requested = [e for e in endpoints if e.path == path and (e.method == method or method == "WS")]
            detail = _parameter_problem(requested[0], names) if requested else _no_endpoint_takes(catalogue, names)
            raise Refusal("unknown_parameter", detail)
        return matches

    def _bybit_recv_window(self, params: tuple[tuple[str, str], ...]) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
        """Bybit's recv window travels in a signed header; the scheme takes it as a ``recv_window`` pseudo-parameter."""
        windows = [value for name, value in params if name == "recv_window"]
        if not windows:
            return params, ()
        if len(windows) > 1:
            raise Refusal("duplicate_parameter", "parameter 'recv_window' appears twice")
        window = windows[0]
        if not window.isdigit() or not 0 < int(window) < 10**6:
            raise Refusal("non_canonical", "recv_window must be a whole number of milliseconds")
        if self.policy.freshness and int(window) > self.policy.max_recv_window_ms:
            raise Refusal("recv_window", f"recv_window must be at most {self.policy.max_recv_window_ms} ms")
        return tuple(pair for pair in params if pair[0] != "recv_window"), (("recv_window", window),)

    def _check_freshness(self, values: dict[str, str], now_ms: int) -> None:
        policy = self.policy
        if not policy.freshness:
            return
        if policy.catalogue == "kraken" and "nonce" in values:
            raise Refusal("freshness", "the enclave sets Kraken's nonce from its own clock; a nonce chosen by the host could be signed now and used much later")
        timestamp = values.get("timestamp")
        if timestamp is not None:
            if not timestamp.isdigit() or len(timestamp) > 16:
                raise Refusal("non_canonical", "timestamp must be milliseconds since the epoch")
            skew = abs(int(timestamp) - now_ms)
            if skew > policy.max_skew_ms:
                raise Refusal("freshness", f"timestamp is {skew} ms away from the enclave clock (at most {policy.max_skew_ms} allowed)")
        recv_window = values.get("recvWindow")
        if recv_window is not None:
            if not recv_window.isdigit() or int(recv_window) > policy.max_recv_window_ms:
                raise Refusal("recv_window", f"recvWindow must be at most {policy.max_recv_window_ms} ms")

    def _check_borrowing(self, catalogue: str, values: dict[str, str]) -> None:
        """Only documented spellings get here (``_check_documented_values``), so exact matches are
        exactly the exchange's own reading."""
        if self.policy.borrowing:
            return
        for name, borrowing_values in _BORROWING.get(catalogue, {}).items():
            value = values.get(name)
            if value is not None and (borrowing_values is None or value in borrowing_values):
                raise Refusal("borrowing", f"{name}={value[:20]} makes the exchange lend to this order; the policy does not allow borrowing")

    def _check_size(self, symbol: str | None, quantity: Decimal | None, notional: Decimal | None, quoted: bool, kind: str) -> None:
        """``symbol`` in canonical form; ``quoted``: some reading of the order sizes it in the quote currency."""
        for scope, limits in (("", self.policy.limits), (f" for {symbol}", self.policy.per_symbol.get(symbol or "", _Limits()))):
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

    def _check_window(self, now_ms: int, notional: Decimal | None) -> None:
        policy = self.policy
        if self._window is None or policy.window_max is None:
            return
        if notional is None:
            raise Refusal("notional_unknown", "the policy caps notional per window, and this order's notional cannot be computed")
        total = self._window.total(now_ms)
        if total + notional > policy.window_max:
            raise Refusal(
                "notional_window",
                f"this order would bring the notional signed in the last {policy.window_seconds} s to {total + notional}, above {policy.window_max}",
            )

    def _take_token(self, now_ms: int) -> None:
        if self._rate is None:
            return
        per_second, burst = self._rate
        if self._last_refill_ms is not None and now_ms > self._last_refill_ms:
            self._tokens = min(burst, self._tokens + per_second * (now_ms - self._last_refill_ms) / 1000)
        if self._last_refill_ms is None or now_ms > self._last_refill_ms:
            self._last_refill_ms = now_ms
        if self._tokens < 1:
            raise Refusal("rate", f"more than {self.policy.rate[0]} orders per second (bursts of {self.policy.rate[1]}); try again shortly")
        self._tokens -= 1


class _Verdict(NamedTuple):
    endpoints: tuple[Endpoint, ...]
    kind: str
    documented: Mapping[str, frozenset[str]]  # enumerated parameter -> documented spellings, over all endpoints


class _Refused(NamedTuple):
    rule: str
    message: str


class _Verdicts:
    """Verdicts remembered per request shape, bounded in entries and in (estimated) bytes.

    Full, it forgets the oldest shapes: a host cycling through junk shapes costs the bot a
    recomputation (microseconds), never memory. Lookups take no lock (a dict read is atomic).
    """

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[tuple, tuple[Any, int]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, shape: tuple) -> Any:
        entry = self._entries.get(shape)
        return None if entry is None else entry[0]

    def remember(self, shape: tuple, verdict: Any, cost: int) -> None:
        if cost > self.max_bytes:
            return
        with self._lock:
            if shape in self._entries:
                return
            while self._entries and (len(self._entries) >= self.max_entries or self.bytes + cost > self.max_bytes):
                self.bytes -= self._entries.pop(next(iter(self._entries)))[1]
            self._entries[shape] = (verdict, cost)
            self.bytes += cost


def _shape_cost(shape: tuple, verdict: Any) -> int:
    """A generous estimate of what remembering ``shape`` keeps alive: the key (a tuple, a frozenset,
    the name strings), the dict slot, and a refusal's message. Endpoints and documented spellings
    are shared (see ``_documented_values``)."""
    names = shape[3]
    cost = 640 + sum(120 + len(name) for name in names)
    if isinstance(verdict, _Refused):
        cost += 200 + len(verdict.message)
    return cost


class _NotionalWindow:
    """The notional signed in the last ``seconds``, as at most ``_WINDOW_BUCKETS`` sums.

    Orders close in time share a bucket, which leaves the window only when its newest order has:
    the total can only be over-counted (by at most one bucket's span), never under-counted. Time
    is the latest the window has seen: a clock read that is behind (two threads, a stepped clock)
    counts as that time, so nothing that left the window comes back or is missed.
    """

    def __init__(self, seconds: int) -> None:
        self.span_ms = seconds * 1000
        self.bucket_ms = max(1000, self.span_ms // _WINDOW_BUCKETS)
        self._buckets: deque[list] = deque()  # [first_ms, last_ms, sum]
        self._total = Decimal(0)
        self._now_ms: int | None = None

    def __len__(self) -> int:
        return len(self._buckets)

    def _advance(self, now_ms: int) -> int:
        self._now_ms = now_ms if self._now_ms is None else max(self._now_ms, now_ms)
        return self._now_ms

    def total(self, now_ms: int) -> Decimal:
        horizon = self._advance(now_ms) - self.span_ms
        while self._buckets and self._buckets[0][1] <= horizon:
            self._total -= self._buckets.popleft()[2]
        return self._total

    def add(self, now_ms: int, notional: Decimal) -> None:
        now_ms = self._advance(now_ms)
        last = self._buckets[-1] if self._buckets else None
        if last is not None and now_ms < last[0] + self.bucket_ms:  # buckets begin a span apart
            last[1] = now_ms
            last[2] += notional
        else:
            self._buckets.append([now_ms, now_ms, notional])
        self._total += notional


# -- per exchange ---------------------------------------------------------------------------------
# What the engine reads in each exchange's requests. (The catalogue says what each exchange's
# signature covers and which spellings it documents.)

# Parameters the scheme adds when the caller leaves them out; they are part of what gets signed.
_IMPLICIT = {
    "binance": frozenset({"timestamp"}),
    "binance-ws": frozenset({"apiKey", "timestamp"}),
    "kraken": frozenset({"nonce"}),
}

# Order parameters (and values; None: any value) that make the exchange lend: refused unless the
# policy sets borrowing = true. OKX names a margin mode on every order: anything but cash trades on
# margin (derivatives always do), and quickMgnType=auto_borrow borrows outright.
_BORROWING: dict[str, dict[str, frozenset[str] | None]] = {
    "binance": {"sideEffectType": frozenset({"MARGIN_BUY", "AUTO_BORROW_REPAY"})},
    "bybit": {"isLeverage": frozenset({"1"})},
    "okx": {"tdMode": frozenset({"cross", "isolated", "spot_isolated"}), "quickMgnType": frozenset({"auto_borrow"})},
    "kraken": {"leverage": None},
}


def _kraken_pair(pair: str) -> str:
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


# The exchange's canonical form of a symbol (str.upper for the others: their symbols are upper case).
_SYMBOL_FORMS: dict[str, Callable[[str], str]] = {"kraken": _kraken_pair}

_BASE, _QUOTE, _EITHER = frozenset({"base"}), frozenset({"quote"}), frozenset({"base", "quote"})


def _bybit_units(values: Mapping[str, str]) -> frozenset[str]:
    """A spot market order's qty is in the quote currency by default for buys; ``marketUnit`` picks
    the unit on unified accounts, and classic accounts ignore it: both readings count."""
    if values.get("category") != "spot" or values.get("orderType") != "Market":
        return _BASE
    default = "quote" if values.get("side") == "Buy" else "base"
    chosen = {"baseCoin": "base", "quoteCoin": "quote"}.get(values.get("marketUnit", ""), default)
    return frozenset({default, chosen})


def _okx_units(values: Mapping[str, str]) -> frozenset[str]:
    """A SPOT market order's sz is in the quote currency by default for buys (``tgtCcy`` picks it);
    a spot instrument is BASE-QUOTE, derivatives have more parts (and count contracts)."""
    if values.get("ordType") != "market" or values.get("instId", "").count("-") != 1:
        return _BASE
    default = "quote" if values.get("side") == "buy" else "base"
    chosen = {"base_ccy": "base", "quote_ccy": "quote"}.get(values.get("tgtCcy", ""), default)
    margin = {"base"} if values.get("tdMode") != "cash" else set()  # "only applicable to SPOT": margin may ignore it
    return frozenset({chosen} | margin)


def _kraken_units(values: Mapping[str, str]) -> frozenset[str]:
    """``oflags=viqc`` asks for the volume in the quote currency; Kraken documents it as not always
    available, so the base reading counts too."""
    return _EITHER if "viqc" in values.get("oflags", "").split(",") else _BASE


# In which currency the main size field may be: readings the limits must all survive.
_SIZE_UNITS: dict[str, Callable[[Mapping[str, str]], frozenset[str]]] = {"bybit": _bybit_units, "okx": _okx_units, "kraken": _kraken_units}

_CATEGORY_WORDS = {"funds": "it moves funds", "security": "it changes account security", "session": "it opens an unsigned session", "settings": "it changes account settings"}


# -- sizes --------------------------------------------------------------------------------------
def _order_size(catalogue: str, fields: dict[str, str], values: dict[str, str], kind: str) -> tuple[Decimal | None, Decimal | None, bool] | None:
    """(quantity, notional, quoted) of an order or amend under its largest reading, or ``None`` if it
    sets neither size nor price. ``None`` for quantity or notional: unknown (unbounded).

    An order can often be read more than one way — a Binance order with both ``quantity`` and
    ``quoteOrderQty``, a Bybit spot market order whose unit depends on the account — and the
    exchange, not the engine, picks the reading, so every limit applies to the largest one. The
    price counts towards the notional only for order types that execute at or better than it
    (limit orders): a market order ignores ``price`` (Bybit, OKX, Kraken say so), so
    ``qty=100, price=1, orderType=Market`` must not pass as a notional of 100.
    """

    def number(key: str) -> Decimal | None:
        name = fields.get(key)
        return Decimal(values[name]) if name and name in values else None

    if kind == "amend" and ("new_quantity" in fields or "new_price" in fields):
        size, price = number("new_quantity"), number("new_price")
    else:
        size, price = number("quantity"), number("price")
    quote = number("quote_quantity")
    if kind == "amend" and size is None and price is None and quote is None:
        # Changes neither size nor price: e.g. a Bybit cancel, whose parameters also fit /v5/order/amend.
        return None
    if price is not None and kind == "order":
        type_field, limit_types, overrides = _LIMIT_PRICE[catalogue]
        if values.get(type_field) not in limit_types or (overrides is not None and overrides in values):
            price = None
    units = _SIZE_UNITS[catalogue](values) if catalogue in _SIZE_UNITS else _BASE
    if quote is None and units is _BASE:  # the usual order, read one way (the hot path: no lists)
        return size, (size * price if size is not None and price is not None else None), False
    readings: list[tuple[Decimal | None, Decimal | None]] = []  # (base quantity, notional)
    if size is not None:
        for unit in units:
            readings.append((size, size * price if price is not None else None) if unit == "base" else (None, size))
    if quote is not None:
        readings.append((None, quote))
    quoted = any(quantity is None for quantity, _ in readings)
    return _largest(quantity for quantity, _ in readings), _largest(notional for _, notional in readings), quoted


def _largest(amounts: Iterable[Decimal | None]) -> Decimal | None:
    """The largest of the readings; ``None`` (unknown, so unbounded) if any is, or if there are none."""
    largest: Decimal | None = None
    for amount in amounts:
        if amount is None:
            return None
        largest = amount if largest is None or amount > largest else largest
    return largest


# -- checks -------------------------------------------------------------------------------------
def _json_body(catalogue: str, method: str) -> bool:
    return catalogue in ("bybit", "okx") and method == "POST"


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


def _check_values(params: Any) -> None:
    joined = "\x01".join([value for _, value in params])
    # The separator must not occur inside a value, or "a\x01b" would pass as two values. (With no
    # params the count test fails harmlessly: the loop below finds nothing to refuse.)
    if joined.count("\x01") + 1 != len(params) or not _VALUES.fullmatch(joined):
        for name, value in params:
            if not _VALUE.fullmatch(value):
                raise Refusal("non_canonical", f"the value of {name!r} has characters outside [A-Za-z0-9._:,@/+-] or is too long")
    for name, value in params:
        if name in _DECIMAL_PARAMS and not _DECIMAL.fullmatch(value):
            raise Refusal("non_canonical", f"{name} must be a plain decimal such as 0.5, not {value[:30]!r}")


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
