"""The policy engine's remembered shapes never change a verdict.

A request whose shape (method, path, parameter names in order) was judged before is judged by its
values alone (``PolicyState._plans``). Streams of requests that share a few shapes but differ in
the values that matter (symbol, size, price, spellings, timestamps, the notional window, the rate)
get the same answers, refusals word for word, from a state that remembers shapes and from one
that cannot remember any, and the two end in the same rate and window state.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.protocol.policy import PolicyState, Refusal, SigningPolicy
from enclave.protocol.policy.limits import Verdicts
from policy_helpers import NOW

POLICY = {
    "symbols": ["BTCUSDT", "LTCBTC"],
    "max_quantity": "5",
    "max_notional": "1000",
    "per_symbol": {"LTCBTC": {"max_quantity": "1"}},
    "notional_window": {"seconds": 5, "max_notional": "4000"},
    "rate": {"per_second": "3", "burst": 4},
}
# Shapes that repeat: names in a fixed order per shape (an order two ways, a cancel, a read, an unknown field).
SHAPES = {
    "binance-hmac": [
        ("POST", "/api/v3/order", ("symbol", "side", "type", "timeInForce", "quantity", "price", "timestamp")),
        ("POST", "/api/v3/order", ("symbol", "side", "type", "quantity", "quoteOrderQty", "recvWindow")),
        ("POST", "/api/v3/order", ("symbol", "side", "type", "quantity", "price", "pegPriceType")),
        ("DELETE", "/api/v3/order", ("symbol", "origClientOrderId", "timestamp")),
        ("GET", "/api/v3/order", ("symbol", "orderId")),
        ("POST", "/api/v3/order", ("symbol", "side", "type", "sideEffectType", "quantity")),
    ],
    "binance-ws-hmac": [
        ("WS", "order.place", ("symbol", "side", "type", "timeInForce", "quantity", "price")),
        ("WS", "order.cancel", ("symbol", "orderId", "recvWindow")),
        ("WS", "account.status", ("omitZeroBalances",)),
    ],
}
VALUES = {
    "symbol": ["BTCUSDT", "LTCBTC", "ltcbtc", "ETHUSDT", "BTC\u00e9", "BTC USDT"],
    "side": ["BUY", "SELL", "buy"],
    "type": ["LIMIT", "MARKET", "LIMIT_MAKER", "limit"],
    "timeInForce": ["GTC", "IOC", "gtc"],
    "quantity": ["0.5", "1", "2", "6", "1e3", "01", "-1", ""],
    "quoteOrderQty": ["10", "5000", "x"],
    "price": ["100", "400", "999.99", "0.1", "1,5"],
    "recvWindow": ["5000", "6000", "50a"],
    "pegPriceType": ["PRIMARY_PEG", "PEG"],
    "origClientOrderId": ["abc", "a\x01b"],
    "orderId": ["12", "x y"],
    "sideEffectType": ["NO_SIDE_EFFECT", "MARGIN_BUY", "margin_buy"],
    "omitZeroBalances": ["true", "TRUE"],
}


@st.composite
def request_streams(draw: st.DrawFn) -> tuple[str, list]:
    scheme = draw(st.sampled_from(sorted(SHAPES)))
    stream, now = [], NOW
    for _ in range(draw(st.integers(1, 25))):
        method, path, names = draw(st.sampled_from(SHAPES[scheme]))
        params = []
        for name in names:
            if name == "timestamp":
                value = str(now + draw(st.sampled_from([0, -3000, 9000])))
            else:
                value = draw(st.sampled_from(VALUES[name]))
            params.append((name, value))
        now += draw(st.sampled_from([0, 1, 200, 1500, 6000]))
        stream.append((method, path, tuple(params), now))
    return scheme, stream


def _outcome(state: PolicyState, method: str, path: str, params: tuple, now: int) -> tuple:
    try:
        return ("signed", *state.authorize_request(method, path, params, b"", now))
    except Refusal as refusal:
        return ("refused", refusal.rule, str(refusal))


@settings(max_examples=300, deadline=None)
@given(request_streams())
def test_remembered_shapes_judge_as_a_fresh_evaluation(generated: tuple[str, list]) -> None:
    scheme, stream = generated
    policy = SigningPolicy.parse(POLICY, scheme=scheme)
    remembering, fresh = PolicyState(policy), PolicyState(policy)
    fresh._plans = Verdicts(max_bytes=0)  # remembers no shape: every request judged from scratch
    for method, path, params, now in stream:
        assert _outcome(remembering, method, path, params, now) == _outcome(fresh, method, path, params, now)
    assert len(fresh._plans) == 0
    last = stream[-1][3]
    assert remembering._bucket.take(last) == fresh._bucket.take(last)
    assert remembering._window.admit(last, Decimal(0), Decimal(10**9)) == fresh._window.admit(last, Decimal(0), Decimal(10**9)) is None
    assert remembering._window._total == fresh._window._total


def test_a_repeated_shape_is_judged_from_its_plan() -> None:
    """The remembered path is the one taken (else the property above would compare a path with itself)."""
    state = PolicyState(SigningPolicy.parse(POLICY, scheme="binance-hmac"))
    params = (("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1"), ("price", "100"))
    first = state.authorize_request("POST", "/api/v3/order", params, b"", NOW)
    assert len(state._plans) == 2  # the verdict and the plan
    second = state.authorize_request("POST", "/api/v3/order", params, b"", NOW + 1000)
    assert first == second and first.notional == Decimal(100)
    too_big = params[:4] + (("quantity", "6"), ("price", "100"))
    try:
        state.authorize_request("POST", "/api/v3/order", too_big, b"", NOW + 2000)
    except Refusal as refusal:
        assert refusal.rule == "max_quantity"
    else:
        raise AssertionError("a remembered shape let a quantity above the cap through")


def test_remembered_shapes_stay_bounded() -> None:
    """A host sending endless distinct shapes (new paths: Binance's signature does not cover the
    path) costs recomputation, not memory: plans share the remembered verdicts' bound."""
    state = PolicyState(SigningPolicy.parse({"rate": {"per_second": "1000000", "burst": 100000}}, scheme="binance-hmac"))
    params = (("symbol", "BTCUSDT"), ("orderId", "1"), ("timestamp", str(NOW)))
    for index in range(5000):
        state.authorize_request("GET", f"/api/v3/order/{index}", params, b"", NOW)
    plans = state._plans
    assert 0 < len(plans) <= plans.max_entries < 5000 and plans.bytes <= plans.max_bytes


_SCHEME_NAMES = ["symbol", "side", "quantity", "price", "timestamp", "recvWindow", "orderId"]


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["binance-hmac", "binance-ed25519"]),
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    requests=st.lists(
        st.lists(st.tuples(st.sampled_from(_SCHEME_NAMES), st.sampled_from(["BTCUSDT", "1", "0.5", "a b", "x&y=z", "é", ""])), max_size=5),
        min_size=1, max_size=8,
    ),
)
def test_a_binance_key_signs_a_remembered_shape_as_a_new_one(scheme: str, method: str, requests: list) -> None:
    """A REST key remembers the shapes it signed; what it signs for a remembered shape is what a
    key that never saw it signs, refusals included, whatever the values."""
    from enclave.schemes import generate_key, load_key

    secret = b"s" * 64 if scheme == "binance-hmac" else generate_key(scheme)
    remembering = load_key(scheme, secret, "api-key")
    for params in [tuple(each) for each in requests] * 2:  # each shape seen, then seen again
        fresh = load_key(scheme, secret, "api-key")
        assert _signed(remembering, method, params) == _signed(fresh, method, params)
    assert len(remembering.__dict__.get("_shapes", {})) <= 32


def _signed(key: object, method: str, params: tuple) -> object:
    from enclave.schemes import SchemeError

    try:
        return key.sign_http(method, "/api/v3/order", params, b"", NOW)  # type: ignore[attr-defined]
    except SchemeError as exc:
        return ("refused", str(exc))
