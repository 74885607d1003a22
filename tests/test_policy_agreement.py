"""``zerocopy policy check`` and ``policy simulate`` agree, over every catalogued endpoint of every
exchange (issue 11: check listed ``GET /api/v3/account`` as signable while simulate refused it —
Binance's signature does not cover the path, and with only ``timestamp`` the same signature is
good for ``POST /sapi/v1/account/enableFastWithdrawSwitch``).

For each endpoint, a request with its required parameters (and one with each optional parameter
check says makes it signable) is simulated. Where check says signable, simulate may still refuse
it by a rule on the values (the filler values here are not a real order): never by a rule on the
request's shape. Where check says not, simulate refuses it by a shape rule, in the same words.
"""

from __future__ import annotations

import json

import pytest

from enclave.protocol.exchange import DANGEROUS_CATEGORIES, Endpoint, Exchange
from enclave.protocol.exchanges import SCHEME_NAMES, exchange_for_scheme
from zerocopy.policy import checked_policy, endpoint_verdicts, explain, load_policy, simulate

SHAPE_RULES = frozenset({"endpoint", "unknown_parameter"}) | DANGEROUS_CATEGORIES
NOW_MS = 1_700_000_000_000


def _one_scheme_per_exchange() -> list[str]:
    chosen: dict[str, str] = {}
    for scheme in SCHEME_NAMES:
        exchange = exchange_for_scheme(scheme)
        if exchange is not None:
            chosen.setdefault(exchange.name, scheme)
    return sorted(chosen.values())


def _policies(scheme: str) -> list[tuple[str, dict | None]]:
    exchange = exchange_for_scheme(scheme)
    assert exchange is not None
    everything_safe = [endpoint.name for endpoint in exchange.endpoints if endpoint.category not in DANGEROUS_CATEGORIES]
    return [("default", None), ("every-safe-endpoint", load_policy({"scheme": scheme, "allow": everything_safe, "freshness": {"enabled": False}}))]


CASES = [pytest.param(scheme, label, document, id=f"{scheme}-{label}") for scheme in _one_scheme_per_exchange() for label, document in _policies(scheme)]


def _value(exchange: Exchange, endpoint: Endpoint, name: str) -> str:
    documented = endpoint.values.get(name)
    if isinstance(documented, frozenset) and documented:
        return sorted(documented)[0]
    return str(NOW_MS) if name == exchange.timestamp_param else "1"


def _request(exchange: Exchange, endpoint: Endpoint, names: frozenset[str]) -> dict:
    fields = {name: _value(exchange, endpoint, name) for name in sorted(names)}
    request: dict = {"time_ms": NOW_MS, "method": endpoint.method, "path": endpoint.path.replace("{", "").replace("}", "")}
    if endpoint.batch:
        request["body"] = json.dumps([fields])
    elif endpoint.method in exchange.json_body_methods:
        request["body"] = fields
    else:
        request["params"] = fields
    return request


def _simulated(document: dict | None, scheme: str, exchange: Exchange, endpoint: Endpoint, names: frozenset[str]):
    (decision,) = simulate(document, scheme, [_request(exchange, endpoint, names)])
    return decision


@pytest.mark.parametrize(("scheme", "label", "document"), CASES)
def test_check_and_simulate_agree_on_every_endpoint(scheme: str, label: str, document: dict | None) -> None:
    exchange = exchange_for_scheme(scheme)
    assert exchange is not None
    verdicts = {verdict.endpoint: verdict for verdict in endpoint_verdicts(checked_policy(document, scheme))}
    for endpoint in exchange.endpoints:
        decision = _simulated(document, scheme, exchange, endpoint, endpoint.required)
        verdict = verdicts.get(endpoint.name)
        if verdict is None:  # not allowed: check does not list it, and simulate refuses it by its shape
            assert not decision.signed and decision.rule in SHAPE_RULES, (endpoint.name, decision)
        elif verdict.signable:
            assert decision.signed or decision.rule not in SHAPE_RULES, (endpoint.name, decision)
        else:
            assert not decision.signed and decision.rule in SHAPE_RULES and decision.reason == verdict.refusal, (endpoint.name, decision, verdict)
            for name in verdict.with_any_of:
                rescued = _simulated(document, scheme, exchange, endpoint, endpoint.required | {name})
                assert rescued.signed or rescued.rule not in SHAPE_RULES, (endpoint.name, name, rescued)


def test_check_says_get_account_needs_a_parameter_that_tells_it_apart() -> None:
    policy = checked_policy(None, "binance-hmac")
    (account,) = [verdict for verdict in endpoint_verdicts(policy) if verdict.endpoint == "GET /api/v3/account"]
    assert not account.signable and account.with_any_of == ("omitZeroBalances",)
    assert "enableFastWithdrawSwitch" in account.refusal
    text = "\n".join(explain(policy))
    assert "GET /api/v3/account is signed only with omitZeroBalances" in text
    signable_line = next(line for line in text.splitlines() if line.startswith("Requests that may be signed"))
    assert "GET /api/v3/account" not in signable_line
    exchange = exchange_for_scheme("binance-hmac")
    assert exchange is not None
    (endpoint,) = [each for each in exchange.endpoints if each.name == "GET /api/v3/account"]
    assert _simulated(None, "binance-hmac", exchange, endpoint, endpoint.required).rule == "security"
