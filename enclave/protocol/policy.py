"""The signing-policy language and its decision function.

A policy is sealed with its secret (its SHA-256 is part of the KMS encryption context), so the
host cannot swap or loosen it. This module is pure — no I/O, and time is passed in — so the
enclave enforces exactly what the host tools (``zerocopy policy check`` / ``simulate``) predict.

The decision depends only on what the signature covers (see :mod:`.catalogue`). For Binance and
Bybit that is the parameter set, so the engine finds *every* endpoint that would accept the
request's parameters and refuses unless the policy allows all of them; fund-moving, account
security and session endpoints must be named explicitly. Parameters must be known, unique and in
canonical form, JSON bodies are parsed strictly and re-serialised by the enclave, and the enclave
builds the string to sign itself.

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

import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from .catalogue import CATALOGUES, DANGEROUS_CATEGORIES, SIGNATURE_COVERS, Endpoint, endpoint_name

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
_MAX_BODY = 64 * 1024

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


class PolicyError(ValueError):
    """A policy document that does not parse; the message names the field."""


class Refusal(Exception):
    """A request the policy does not allow. ``rule`` names the rule that refused it."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
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
            constrained = sorted(set(doc) & {"symbols", "max_quantity", "max_notional", "per_symbol", "notional_window"})
            if constrained:
                raise PolicyError(
                    f"{constrained[0]!r} cannot be enforced for coinbase-jwt: the JWT covers the method and path, not the body, "
                    "so the host can send any order body with it. Restrict endpoints and rate instead."
                )
        window = doc.get("notional_window")
        rate = doc.get("rate")
        freshness = doc.get("freshness", {})
        return cls(
            scheme=scheme,
            catalogue=catalogue,
            document=normalized,
            raw_signing=doc.get("raw_signing", catalogue is None),
            borrowing=doc.get("borrowing", False),
            allow=allow,
            symbols=frozenset(doc["symbols"]) if "symbols" in doc else None,
            limits=_Limits(_opt_decimal(doc.get("max_quantity")), _opt_decimal(doc.get("max_notional"))),
            per_symbol={
                symbol: _Limits(_opt_decimal(limits.get("max_quantity")), _opt_decimal(limits.get("max_notional")))
                for symbol, limits in doc.get("per_symbol", {}).items()
            },
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
                "Orders that borrow (margin side effects, leverage flags) are ALLOWED." if self.borrowing
                else "Orders that make the exchange lend (Binance sideEffectType MARGIN_BUY/AUTO_BORROW_REPAY, Bybit isLeverage=1, Kraken leverage) are refused."
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

    if len(body) > _MAX_BODY:
        raise Refusal("non_canonical", "the body is too large")
    try:
        parsed = json.loads(body.decode("utf-8"), object_pairs_hook=pairs_hook, parse_constant=no_constants, parse_float=_refuse_float)
    except Refusal:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refusal("non_canonical", "the body is not a valid JSON object") from None
    if not isinstance(parsed, dict):
        raise Refusal("non_canonical", "the body must be a JSON object")
    return parsed


def _refuse_float(text: str) -> Any:
    raise Refusal("non_canonical", f"write the number {text[:20]} as a string: floats lose precision")


class PolicyState:
    """One key's policy plus its mutable state (rate bucket, notional window), thread-safe.

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
        self._window: deque[tuple[int, Decimal]] = deque()
        self._window_total = Decimal(0)
        self._verdicts: dict[tuple, Any] = {}

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
        method = method.upper()
        header_params: tuple[tuple[str, str], ...] = ()
        if catalogue == "bybit":
            params, header_params = self._bybit_recv_window(params)
        checked, body = self._canonical_parameters(catalogue, method, params, body)
        names = frozenset(name for name, _ in checked) | _IMPLICIT.get(catalogue, frozenset())
        matches, kind = self._verdict(catalogue, method, path, names)
        values = dict(checked)
        self._check_freshness(values, now_ms)
        fields = _ORDER_FIELDS.get(catalogue, {})
        symbol = values.get(fields.get("symbol", ""))
        if kind in {"order", "amend", "cancel"} and symbol is not None and policy.symbols is not None and symbol not in policy.symbols:
            raise Refusal("symbol", f"symbol {symbol[:40]!r} is not in the policy's allowlist")
        quantity = notional = None
        sized = False
        if kind in {"order", "amend"}:
            self._check_borrowing(catalogue, values)
            quantity, notional, sized = self._order_size(catalogue, fields, values, kind)
            if sized:
                self._check_size(symbol, quantity, notional, kind)
        with self._lock:
            if kind in {"order", "amend"}:
                if sized:
                    self._check_window(now_ms, notional)
                if kind == "order" or sized:  # a size-less "amend" is a cancel's twin: cancels stay unmetered
                    self._take_token(now_ms)
                if policy.window_seconds is not None and notional is not None:
                    self._window.append((now_ms, notional))
                    self._window_total += notional
        # A JSON body is signed as the body: its fields were checked, but are not query parameters.
        signed_params = header_params + (() if _json_body(catalogue, method) else checked)
        return Authorized(signed_params, body, tuple(endpoint.name for endpoint in matches), kind, symbol, quantity, notional)

    def _verdict(self, catalogue: str, method: str, path: str, names: frozenset[str]) -> tuple[tuple[Endpoint, ...], str]:
        """Which endpoints a request could reach and whether the policy allows all of them.

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
                verdict = refusal
            if len(self._verdicts) < _MAX_REMEMBERED_SHAPES:
                self._verdicts[shape] = verdict
        if isinstance(verdict, Refusal):
            raise Refusal(verdict.rule, str(verdict))
        return verdict

    def _judge(self, catalogue: str, method: str, path: str, names: frozenset[str]) -> tuple[tuple[Endpoint, ...], str]:
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
        return tuple(matches), kind

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
            detail = _parameter_problem(requested[0], names) if requested else f"no {catalogue} endpoint the policy engine knows takes exactly the parameters {sorted(names)}"
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
        if self.policy.borrowing:
            return
        rule = _BORROWING.get(catalogue)
        if rule is not None:
            name, borrowing_values = rule
            value = values.get(name)
            if value is not None and (borrowing_values is None or value in borrowing_values):
                raise Refusal("borrowing", f"{name}={value[:20]} makes the exchange lend to this order; the policy does not allow borrowing")

    @staticmethod
    def _order_size(catalogue: str, fields: dict[str, str], values: dict[str, str], kind: str) -> tuple[Decimal | None, Decimal | None, bool]:
        """Quantity and notional of an order or amend, and whether it sets a size or price at all.

        The price counts towards the notional only for order types that execute at or better than
        it (limit orders): a market order ignores ``price`` (Bybit, OKX, Kraken say so), so
        ``qty=100, price=1, orderType=Market`` must not pass as a notional of 100.
        """
        def number(key: str) -> Decimal | None:
            name = fields.get(key)
            return Decimal(values[name]) if name and name in values else None

        if kind == "amend" and ("new_quantity" in fields or "new_price" in fields):
            quantity, price = number("new_quantity"), number("new_price")
        else:
            quantity, price = number("quantity"), number("price")
        quote = number("quote_quantity")
        if kind == "amend" and quantity is None and price is None and quote is None:
            # Changes neither size nor price: e.g. a Bybit cancel, whose parameters also fit /v5/order/amend.
            return None, None, False
        if price is not None and kind == "order":
            type_field, limit_types, overrides = _LIMIT_PRICE[catalogue]
            if values.get(type_field) not in limit_types or (overrides is not None and overrides in values):
                price = None
        if quote is not None:
            return quantity, quote, True
        return quantity, (quantity * price if quantity is not None and price is not None else None), True

    def _check_size(self, symbol: str | None, quantity: Decimal | None, notional: Decimal | None, kind: str) -> None:
        for scope, limits in (("", self.policy.limits), (f" for {symbol}", self.policy.per_symbol.get(symbol or "", _Limits()))):
            if limits.max_quantity is not None:
                if quantity is None:
                    if kind == "order":  # an amend without a new quantity keeps the order's own
                        raise Refusal("quantity_unknown", f"the policy caps quantity{scope}, and this order gives none (a quote quantity can buy any amount)")
                elif quantity > limits.max_quantity:
                    raise Refusal("max_quantity", f"quantity {quantity} is above the policy's maximum{scope} of {limits.max_quantity}")
            if limits.max_notional is not None:
                if notional is None:
                    raise Refusal("notional_unknown", f"the policy caps notional{scope}, and this order's notional cannot be computed (give a price, or a quote quantity)")
                if notional > limits.max_notional:
                    raise Refusal("max_notional", f"notional {notional} is above the policy's maximum{scope} of {limits.max_notional}")

    def _check_window(self, now_ms: int, notional: Decimal | None) -> None:
        policy = self.policy
        if policy.window_seconds is None or policy.window_max is None:
            return
        if notional is None:
            raise Refusal("notional_unknown", "the policy caps notional per window, and this order's notional cannot be computed")
        horizon = now_ms - policy.window_seconds * 1000
        while self._window and self._window[0][0] <= horizon:
            self._window_total -= self._window.popleft()[1]
        if self._window_total + notional > policy.window_max:
            raise Refusal(
                "notional_window",
                f"this order would bring the notional signed in the last {policy.window_seconds} s to {self._window_total + notional}, above {policy.window_max}",
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


_MAX_REMEMBERED_SHAPES = 4096
# Parameters the scheme adds when the caller leaves them out; they are part of what gets signed.
# Order parameters (and values; None: any value) that make the exchange lend: refused unless the
# policy sets borrowing = true.
_BORROWING: dict[str, tuple[str, frozenset[str] | None]] = {
    "binance": ("sideEffectType", frozenset({"MARGIN_BUY", "AUTO_BORROW_REPAY"})),
    "bybit": ("isLeverage", frozenset({"1"})),
    "kraken": ("leverage", None),
}
_IMPLICIT = {
    "binance": frozenset({"timestamp"}),
    "binance-ws": frozenset({"apiKey", "timestamp"}),
    "kraken": frozenset({"nonce"}),
}
_CATEGORY_WORDS = {"funds": "it moves funds", "security": "it changes account security", "session": "it opens an unsigned session", "settings": "it changes account settings"}


def _json_body(catalogue: str, method: str) -> bool:
    return catalogue in ("bybit", "okx") and method == "POST"


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


def _path_matches(pattern: str, path: str) -> bool:
    if "{" not in pattern:
        return pattern == path
    parts, actual = pattern.split("/"), path.split("/")
    return len(parts) == len(actual) and all(p == a or (p.startswith("{") and _SEGMENT.fullmatch(a) is not None) for p, a in zip(parts, actual))
