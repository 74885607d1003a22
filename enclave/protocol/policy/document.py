"""The policy document: its schema, checked field by field, and its canonical form.

The canonical form's JSON is hashed into the KMS encryption context, so the host cannot swap or
loosen a sealed policy. Checks that need the scheme happen in
:meth:`~enclave.protocol.policy.engine.SigningPolicy.parse`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ..errors import ZeroCopyError
from ..exchanges import SCHEME_NAMES

__all__ = ["PolicyError", "normalize_document", "VERSION", "bounded", "MAX_MESSAGE_BYTES", "symbol_problem"]

VERSION = 1
MAX_MESSAGE_BYTES = 300  # a refusal's reason or a policy error: it travels in a frame and a receipt
DECIMAL = re.compile(r"(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?")
_SYMBOL = re.compile(r"[A-Za-z0-9._:/-]{1,40}")  # the ASCII symbols (every symbol before issue 10): the fast path
_SYMBOL_PUNCTUATION = frozenset("._:/-")  # what exchanges' symbols use today: BTC-USDT, XBT/USD, BTC-29JUL22-25000-C
MAX_SYMBOL_CHARACTERS = 40
_ENDPOINT = re.compile(r"(GET|POST|PUT|DELETE|WS) [!-~]{1,200}")  # printable ASCII: every catalogue name is
_MAX_INT = 10**31
_LIMITS = {"max_quantity", "max_notional"}


def bounded(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``message`` as at most ``limit`` bytes of UTF-8 (lone surrogates escaped): its size must not
    depend on what the host sent."""
    data = message.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data.decode("utf-8")
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def symbol_problem(symbol: str) -> str | None:
    """Why ``symbol`` is not a symbol name, or ``None``. Letters and digits of any script (Unicode
    L* and N*) and the punctuation exchanges use; in NFC, so one symbol has one spelling; never
    control, format or separator characters (invisible ones would make look-alikes). A non-ASCII
    letter must be its own upper case: the symbol rules compare ``str.upper`` forms, which would
    merge ``ß`` with ``SS`` and ``ς`` with ``σ``. Letters in a compatibility form (full-width ``Ｂ``)
    are refused too; digits are not, as Binance's official example symbol is ``１２３４５６``."""
    if _SYMBOL.fullmatch(symbol):
        return None
    if not 1 <= len(symbol) <= MAX_SYMBOL_CHARACTERS:
        return f"a symbol has 1 to {MAX_SYMBOL_CHARACTERS} characters"
    if not unicodedata.is_normalized("NFC", symbol):
        return "a symbol must be in Unicode NFC"
    for character in symbol:
        if character in _SYMBOL_PUNCTUATION or character.isascii() and character.isalnum():
            continue
        category = unicodedata.category(character)
        if category[0] not in "LN":
            return f"a symbol has letters, digits and {''.join(sorted(_SYMBOL_PUNCTUATION))} only, not U+{ord(character):04X} ({category})"
        if character.upper() != character:
            return f"a non-ASCII letter in a symbol must be upper case (U+{ord(character):04X} is not)"
        if category[0] == "L" and unicodedata.normalize("NFKC", character) != character:
            return f"U+{ord(character):04X} is a compatibility form of a letter (full-width, half-width, ...): write the letter itself"
    return None


class PolicyError(ZeroCopyError, ValueError):
    """A policy document that does not parse; the message names the field."""

    def __init__(self, message: str) -> None:
        super().__init__(bounded(message))


# -- values -----------------------------------------------------------------------------------
def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PolicyError(f"{where} must be a decimal written as a string, e.g. \"0.5\"")
    if isinstance(value, int) and not 0 <= value < _MAX_INT:  # str() of a huge int raises ValueError
        raise PolicyError(f"{where} must be a plain non-negative decimal such as \"0.5\" (at most 31 digits)")
    text = str(value)
    if not DECIMAL.fullmatch(text):
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


def _table(value: Any, name: str, fields: set[str]) -> dict:
    if not isinstance(value, dict):
        raise PolicyError(f"{name} must be a table")
    _unknown_field(value, fields, name)
    return value


# -- fields, each normalized by one step ---------------------------------------------------------
def _scheme(value: Any, name: str) -> str:
    if value not in SCHEME_NAMES:
        raise PolicyError(f"scheme must be one of {', '.join(SCHEME_NAMES)}")
    return value


def _allow(allow: Any, name: str) -> list[str]:
    if not isinstance(allow, list) or not all(isinstance(item, str) for item in allow):
        raise PolicyError('allow must be a list of "METHOD path" strings')
    for item in allow:
        if not _ENDPOINT.fullmatch(item):
            raise PolicyError(f'allow entry {item[:60]!r} must look like "POST /api/v3/order" (or "WS order.place")')
    if len(set(allow)) != len(allow):
        raise PolicyError("allow lists an endpoint twice")
    return sorted(allow)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{name} must be true or false")
    return value


def _symbols(symbols: Any, name: str) -> list[str]:
    if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
        raise PolicyError("symbols must be a non-empty list of symbol names such as \"BTCUSDT\"")
    for symbol in symbols:
        problem = symbol_problem(symbol)
        if problem is not None:
            raise PolicyError(f"symbols: {symbol[:40]!r} is not a symbol name: {problem}")
    return sorted(set(symbols))


def _per_symbol(per_symbol: Any, name: str) -> dict[str, dict[str, str]]:
    if not isinstance(per_symbol, dict) or not per_symbol:
        raise PolicyError("per_symbol must be a table of symbol tables")
    result = {}
    for symbol, limits in per_symbol.items():
        if not isinstance(symbol, str) or not isinstance(limits, dict) or not limits:
            raise PolicyError("per_symbol must map symbol names to tables of max_quantity / max_notional")
        problem = symbol_problem(symbol)
        if problem is not None:
            raise PolicyError(f"per_symbol: {symbol[:40]!r} is not a symbol name: {problem}")
        _unknown_field(limits, _LIMITS, f"per_symbol.{symbol}")
        result[symbol] = {limit: _canonical_decimal(value, f"per_symbol.{symbol}.{limit}") for limit, value in limits.items()}
    return result


def _notional_window(value: Any, name: str) -> dict[str, Any]:
    window = _table(value, name, {"seconds", "max_notional"})
    if set(window) != {"seconds", "max_notional"}:
        raise PolicyError("notional_window needs seconds and max_notional")
    return {
        "seconds": _int(window["seconds"], "notional_window.seconds", minimum=1, maximum=31 * 86400),
        "max_notional": _canonical_decimal(window["max_notional"], "notional_window.max_notional"),
    }


def _rate(value: Any, name: str) -> dict[str, Any]:
    rate = _table(value, name, {"per_second", "burst"})
    if set(rate) != {"per_second", "burst"}:
        raise PolicyError("rate needs per_second and burst")
    per_second = _decimal(rate["per_second"], "rate.per_second")
    if per_second <= 0:
        raise PolicyError("rate.per_second must be above zero")
    return {"per_second": format(per_second.normalize(), "f"), "burst": _int(rate["burst"], "rate.burst", minimum=1, maximum=100000)}


def _freshness(value: Any, name: str) -> dict[str, Any]:
    freshness = _table(value, name, {"enabled", "max_skew_ms", "max_recv_window_ms"})
    normalized: dict[str, Any] = {}
    if "enabled" in freshness:
        if not isinstance(freshness["enabled"], bool):
            raise PolicyError("freshness.enabled must be true or false")
        normalized["enabled"] = freshness["enabled"]
    for field in ("max_skew_ms", "max_recv_window_ms"):
        if field in freshness:
            normalized[field] = _int(freshness[field], f"freshness.{field}", minimum=1, maximum=60000)
    return normalized


def _nonce(value: Any, name: str) -> dict[str, int]:
    """The unit of a nonce the enclave sets (Kraken): ticks per second of its clock, so a key
    migrated from a client counting in a finer unit gets nonces above those it has seen."""
    nonce = _table(value, name, {"per_second"})
    per_second = nonce.get("per_second")
    if type(per_second) is not int or per_second not in _NONCE_UNITS:  # not True, not 1000.0
        raise PolicyError("nonce.per_second must be a power of ten from 1000 (milliseconds) to 1000000000 (nanoseconds)")
    return {"per_second": per_second}


_NONCE_UNITS = frozenset(10**digits for digits in range(3, 10))

# Every field but version, in the order they are checked (the first bad one is the one named).
_STEPS: dict[str, Callable[[Any, str], Any]] = {
    "scheme": _scheme,
    "allow": _allow,
    "raw_signing": _flag,
    "borrowing": _flag,
    "symbols": _symbols,
    "max_quantity": _canonical_decimal,
    "max_notional": _canonical_decimal,
    "per_symbol": _per_symbol,
    "notional_window": _notional_window,
    "rate": _rate,
    "freshness": _freshness,
    "nonce": _nonce,
    "removable": _flag,
}
_FIELDS = {"version", *_STEPS}


def normalize_document(document: Any) -> dict:
    """The canonical form of a policy document: validated shape, decimals as normalized strings."""
    if not isinstance(document, dict):
        raise PolicyError("a policy must be a table / JSON object")
    _unknown_field(document, _FIELDS, "policy")
    result: dict[str, Any] = {"version": document.get("version", VERSION)}
    if type(result["version"]) is not int or result["version"] != VERSION:  # not True, not 1.0
        raise PolicyError(f"version must be {VERSION}")
    for name, normalize in _STEPS.items():
        if name in document:
            result[name] = normalize(document[name], name)
    return result
