"""Signing policies on the operator's side: read (TOML or JSON), check, explain, simulate.

The rules themselves live in :mod:`enclave.protocol.policy`, the same code the enclave enforces,
so what ``zerocopy policy check`` and ``simulate`` say is what the enclave will do.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.protocol.bundle import policy_digest
from enclave.protocol.exchange import DANGEROUS_CATEGORIES, Exchange
from enclave.protocol.policy import PolicyError, PolicyState, Refusal, SigningPolicy, normalize_document

__all__ = ["PolicyError", "load_policy", "parse_policy_text", "checked_policy", "explain", "endpoint_verdicts", "EndpointVerdict", "simulate", "SimulatedDecision"]


def parse_policy_text(text: str) -> dict:
    """A policy document from TOML (or JSON) text, normalized; :class:`PolicyError` if it is not one
    (never another exception: a policy file is untrusted input)."""
    stripped = text.lstrip()
    try:
        if stripped.startswith("{"):
            document = json.loads(text, parse_float=_refuse_float)
        else:
            document = tomllib.loads(text, parse_float=_refuse_float)
    except PolicyError:
        raise
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise PolicyError(f"not valid TOML or JSON: {exc}") from None
    except RecursionError:  # both parsers recurse per nesting level; no policy nests more than two
        raise PolicyError("not a policy: nested too deeply") from None
    return normalize_document(document)


def _refuse_float(text: str) -> Any:
    raise PolicyError(f"write the number {text} as a string (\"{text}\"): decimals are exact only as strings")


def load_policy(source: str | Path | dict | None) -> dict | None:
    """A policy from a file (``Path``), TOML/JSON text (``str``) or a dict; ``None`` stays ``None``
    (the scheme's safe default)."""
    if source is None:
        return None
    if isinstance(source, dict):
        return normalize_document(source)
    if isinstance(source, Path):
        try:
            text = source.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError(f"{source.name} is not UTF-8 text") from None
        return parse_policy_text(text)
    return parse_policy_text(source)


def checked_policy(document: dict | None, scheme: str) -> SigningPolicy:
    """Parse ``document`` for ``scheme`` exactly as the enclave will at provisioning."""
    return SigningPolicy.parse(document, scheme=scheme)


def explain(policy: SigningPolicy) -> list[str]:
    """The policy in plain words, one statement per line."""
    lines = []
    if policy.document is None:
        lines.append(f"No policy was sealed with this key: the safe default for {policy.scheme} applies.")
    lines.append(
        "Raw payload signing (Signer.sign) is ALLOWED: the enclave signs any bytes the host sends, with no further checks."
        if policy.raw_signing and policy.exchange is not None
        else "Raw payload signing (Signer.sign) is allowed." if policy.raw_signing
        else "Raw payload signing (Signer.sign) is refused; requests must go through sign_request."
    )
    if policy.exchange is not None:
        lines += _explain_requests(policy, policy.exchange)
    if policy.rate is not None:
        metered = "orders and amends" + ("" if policy.exchange is not None else "; raw signatures")
        lines.append(f"Rate: {policy.rate[0]} signatures per second sustained, bursts of {policy.rate[1]} ({metered}).")
    if policy.removable:
        lines.append("Removable: the host may unload this key (Signer.remove), which restarts its rate and notional window when it is loaded again; for test keys, not production keys.")
    return lines


@dataclass(frozen=True)
class EndpointVerdict:
    """What the policy does with requests to one allowed endpoint, by their parameters alone.

    ``signable``: with only its required parameters. Otherwise ``with_any_of`` names the optional
    parameters that, added, make it signable (empty: none does), and ``refusal`` says what a
    request with only the required ones meets.
    """

    endpoint: str
    signable: bool
    with_any_of: tuple[str, ...] = ()
    refusal: str = ""


def endpoint_verdicts(policy: SigningPolicy) -> list[EndpointVerdict]:
    """For each endpoint the policy allows, whether a plain request to it is signed, judged by the
    enclave's own verdict on the request's shape (:meth:`PolicyState.endpoints_for`): where the
    signature does not cover the path, an allowed endpoint can share its parameters with a refused
    one, and is then signed only with a parameter the refused one does not take."""
    exchange = policy.exchange
    if exchange is None:
        return []
    state = PolicyState(policy)
    verdicts = []
    for endpoint in exchange.endpoints:
        if endpoint.name not in policy.allow:
            continue
        try:
            state.endpoints_for(endpoint, endpoint.required)
        except Refusal as refusal:
            rescued = tuple(sorted(name for name in endpoint.optional if _signable(state, endpoint, endpoint.required | {name})))
            verdicts.append(EndpointVerdict(endpoint.name, False, rescued, str(refusal)))
            continue
        verdicts.append(EndpointVerdict(endpoint.name, True))
    return verdicts


def _signable(state: PolicyState, endpoint: Any, names: frozenset[str]) -> bool:
    try:
        state.endpoints_for(endpoint, names)
    except Refusal:
        return False
    return True


def _explain_endpoints(policy: SigningPolicy) -> list[str]:
    verdicts = endpoint_verdicts(policy)
    plain = [verdict.endpoint for verdict in verdicts if verdict.signable]
    lines = [f"Requests that may be signed ({len(plain)}): " + ", ".join(plain) + "."]
    for verdict in verdicts:
        if verdict.signable:
            continue
        if verdict.with_any_of:
            lines.append(f"{verdict.endpoint} is signed only with {' or '.join(verdict.with_any_of)}: without, {verdict.refusal}.")
        else:
            lines.append(f"{verdict.endpoint} is allowed but never signed: {verdict.refusal}.")
    return lines


def _explain_requests(policy: SigningPolicy, exchange: Exchange) -> list[str]:
    allowed = [endpoint for endpoint in exchange.endpoints if endpoint.name in policy.allow]
    lines = _explain_endpoints(policy)
    dangerous = [endpoint.name for endpoint in allowed if endpoint.category in DANGEROUS_CATEGORIES]
    if dangerous:
        lines.append("WARNING: fund-moving, account-security, session or account-settings endpoints are allowed: " + ", ".join(dangerous) + ".")
    else:
        lines.append("Withdrawals, transfers, account-security changes, session logons and account-settings changes (leverage) are refused.")
    lines.append(_explain_borrowing(policy, exchange))
    if "path" not in exchange.covers:
        lines.append(f"{exchange.name} signatures do not cover the path: a request is signed only if every endpoint accepting its parameters is allowed.")
    lines.append(f"Symbols: {', '.join(sorted(policy.symbols))}." if policy.symbols else "Symbols: any.")
    lines += _explain_limits(policy)
    if exchange.unsigned_body is not None:
        lines.append(exchange.unsigned_body.limits)
    if policy.freshness:
        lines.append(f"Client timestamps must be within {policy.max_skew_ms} ms of the enclave clock; recvWindow at most {policy.max_recv_window_ms} ms.")
    else:
        lines.append("Timestamp freshness is NOT checked (for replaying documentation vectors; do not use in production).")
    if exchange.host_nonce_param is not None:
        per_second = (policy.document or {}).get("nonce", {}).get("per_second", 1000)
        lines.append(f"The enclave sets the {exchange.host_nonce_param} from its clock, {per_second} per second, always above the last one it signed.")
    return lines


def _explain_borrowing(policy: SigningPolicy, exchange: Exchange) -> str:
    if exchange.unsigned_body is not None:
        return exchange.unsigned_body.borrowing
    if policy.borrowing:
        return "Orders that borrow (margin side effects, margin trade modes, leverage flags) are ALLOWED."
    if not exchange.borrowing_words:
        return "Orders that make the exchange lend are refused."
    return f"Orders that make the exchange lend ({exchange.borrowing_words}) are refused."


def _explain_limits(policy: SigningPolicy) -> list[str]:
    lines = []
    if policy.limits.max_quantity is not None:
        lines.append(f"Each order: at most {policy.limits.max_quantity} in quantity.")
    if policy.limits.max_notional is not None:
        lines.append(f"Each order: at most {policy.limits.max_notional} in notional (price x quantity, in the symbol's quote currency: BTC for LTCBTC, USDT for BTCUSDT).")
    for symbol, limits in sorted(policy.per_symbol.items()):
        parts = [f"quantity {limits.max_quantity}" if limits.max_quantity is not None else "", f"notional {limits.max_notional}" if limits.max_notional is not None else ""]
        lines.append(f"{symbol} orders: at most {' and '.join(part for part in parts if part)}.")
    if policy.window_seconds is not None:
        lines.append(f"All orders together: at most {policy.window_max} notional in any {policy.window_seconds} s.")
    return lines


@dataclass(frozen=True)
class SimulatedDecision:
    line: int
    request: str
    signed: bool
    rule: str = ""
    reason: str = ""


def simulate(document: dict | None, scheme: str, requests: Iterable[dict]) -> list[SimulatedDecision]:
    """Replay recorded requests (dicts with ``time_ms``, ``method``, ``path``, ``params``, ``body``;
    or ``payload`` for raw signing) against a policy, in order, with the policy's rate state."""
    state = PolicyState(checked_policy(document, scheme))
    decisions = []
    clock = 0
    for line, request in enumerate(requests, start=1):
        label = "malformed request"
        try:
            if not isinstance(request, dict):
                raise TypeError("each request must be a JSON object")
            clock = int(request.get("time_ms", clock))
            if "payload" in request:
                label = "raw payload"
                state.authorize_raw(clock)
            else:
                method, path = str(request["method"]).upper(), str(request["path"])
                label = f"{method} {path}"[:200]
                params = request.get("params") or []
                pairs = tuple((str(k), _text(v)) for k, v in (params.items() if isinstance(params, dict) else params))
                body = request.get("body") or ""
                body_bytes = json.dumps(body, separators=(",", ":")).encode() if isinstance(body, dict) else str(body).encode()
                state.authorize_request(method, path, pairs, body_bytes, clock)
            decisions.append(SimulatedDecision(line, label, True))
        except Refusal as refusal:
            decisions.append(SimulatedDecision(line, label, False, refusal.rule, str(refusal)))
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            # a recorded request is untrusted too: its error says what, in a bounded message
            decisions.append(SimulatedDecision(line, label, False, "malformed", f"line {line}: {type(exc).__name__}: {str(exc)[:200]}"))
    return decisions


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def digest(document: dict | None) -> str:
    return policy_digest(document)
