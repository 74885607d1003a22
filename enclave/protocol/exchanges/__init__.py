"""The registry: every exchange module in this package, found at import.

Each module exports ``EXCHANGES = (...)``, its :class:`~enclave.protocol.exchange.Exchange`
descriptors; adding an exchange is adding one module here. Two descriptors that claim one
catalogue name or one scheme name are refused at import (:class:`ExchangeError`), so there is one
source of truth for every name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from types import MappingProxyType

from ..exchange import Exchange, ExchangeError
from ..signing import RAW_SIGNERS, SigningKey

__all__ = [
    "SCHEMES", "SCHEME_NAMES", "ASYMMETRIC_SCHEMES", "DECIMAL_PARAMETERS", "ExchangeError",
    "exchange_for_scheme", "register",
]


def _discovered() -> list[Exchange]:
    found: list[Exchange] = []
    for module in pkgutil.iter_modules(__path__):
        exported = getattr(importlib.import_module(f"{__name__}.{module.name}"), "EXCHANGES", None)
        if not isinstance(exported, tuple) or not all(isinstance(item, Exchange) for item in exported):
            raise ExchangeError(f"{__name__}.{module.name} must export EXCHANGES, a tuple of Exchange descriptors")
        found.extend(exported)
    return found


def register(exchanges: list[Exchange], raw: tuple[type[SigningKey], ...] = RAW_SIGNERS) -> tuple[dict[str, Exchange], dict[str, type[SigningKey]], dict[str, Exchange]]:
    """The descriptors by catalogue name, every scheme by name, and each exchange scheme's descriptor;
    :class:`ExchangeError` if two claim one name."""
    by_name: dict[str, Exchange] = {}
    schemes: dict[str, type[SigningKey]] = {}
    by_scheme: dict[str, Exchange] = {}
    for kind in raw:
        if kind.name in schemes or kind.exchange is not None:
            raise ExchangeError(f"raw scheme {kind.name!r} is listed twice or names an exchange")
        schemes[kind.name] = kind
    for exchange in exchanges:
        if exchange.name in by_name:
            raise ExchangeError(f"two exchange descriptors claim the catalogue name {exchange.name!r}")
        by_name[exchange.name] = exchange
        for kind in exchange.schemes:
            if kind.name in schemes:
                raise ExchangeError(f"two descriptors claim the scheme {kind.name!r}")
            schemes[kind.name] = kind
            by_scheme[kind.name] = exchange
    return by_name, schemes, by_scheme


_BY_NAME, _SCHEMES, _BY_SCHEME = register(_discovered())

SCHEMES: Mapping[str, type[SigningKey]] = MappingProxyType(_SCHEMES)
SCHEME_NAMES: tuple[str, ...] = tuple(_SCHEMES)
ASYMMETRIC_SCHEMES = frozenset(name for name, kind in _SCHEMES.items() if kind.asymmetric)
# Values that some exchange reads as a decimal must be canonical decimals, whichever the exchange:
# the union over all descriptors, not the key's own, keeps the refusal rules as they were before
# each exchange had a module (a non-canonical ``amount`` was refused for every key, and still is).
DECIMAL_PARAMETERS = frozenset().union(*(exchange.decimal_params for exchange in _BY_NAME.values()))


def exchange_for_scheme(scheme: str) -> Exchange | None:
    """The descriptor of ``scheme``'s exchange API; ``None`` for a raw (or unknown) scheme."""
    return _BY_SCHEME.get(scheme)
