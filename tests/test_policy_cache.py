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


# -- the service's shapes: a key signs a query-only request of a shape it signed before by its values alone --
from enclave.clock import Clock  # noqa: E402
from enclave.keyring import LoadedKey  # noqa: E402
from enclave.protocol import ErrorResponse, HttpSignRequest, HttpSignature  # noqa: E402
from enclave.service import MAX_KEY_SHAPES, EnclaveService  # noqa: E402

_SECRET = b"s" * 64


def _service_key(service: EnclaveService, name: str, policy: dict, *, api_key: str = "api-key") -> LoadedKey:
    from enclave.schemes import load_key

    key = LoadedKey(name, "binance-hmac", api_key, "0" * 64, "arn:test", PolicyState(SigningPolicy.parse(policy, scheme="binance-hmac")), load_key("binance-hmac", _SECRET, api_key), name)
    service.keyring.add(key)
    return key


def _new_service() -> EnclaveService:
    return EnclaveService(nsm=None, kms=None, clock=Clock(fixed_ms=NOW))  # type: ignore[arg-type]


def _answer(service: EnclaveService, key: str, method: str, path: str, params: tuple, now: int) -> tuple:
    service.clock = Clock(fixed_ms=now)
    answer = service.handle(HttpSignRequest(7, key, method, path, params))
    if type(answer) is HttpSignature:
        return ("signed", answer.query, answer.body, answer.headers)
    assert type(answer) is ErrorResponse
    return ("refused", answer.code, answer.rule, answer.message)


def _forget_shapes(key: LoadedKey) -> None:
    """What makes a key judge and sign every request from scratch: nothing remembered anywhere."""
    key.shapes.clear()
    key.signing_key.__dict__.pop("_shapes", None)
    key.policy_state._plans = Verdicts(max_bytes=0)


def _receipts(service: EnclaveService) -> list[dict]:
    import json

    return [{name: value for name, value in json.loads(line).items() if name != "prev"} for line in service.audit.fetch(0, 1000)["receipts"]]


_ORDER = (("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1"), ("price", "100"))


@settings(max_examples=300, deadline=None)
@given(request_streams().filter(lambda generated: generated[0] == "binance-hmac"))
def test_a_key_signs_a_remembered_shape_as_a_key_that_remembers_nothing(generated: tuple[str, list]) -> None:
    """Answers (signatures, refusals word for word), receipts and the rate and window left behind
    are those of a key that judges and signs every request from scratch."""
    _, stream = generated
    remembering_service, fresh_service = _new_service(), _new_service()
    remembering, fresh = _service_key(remembering_service, "k", POLICY), _service_key(fresh_service, "k", POLICY)
    for method, path, params, now in stream * 2:  # each shape seen, then seen again
        _forget_shapes(fresh)
        assert _answer(remembering_service, "k", method, path, params, now) == _answer(fresh_service, "k", method, path, params, now)
    assert _receipts(remembering_service) == _receipts(fresh_service)
    last = stream[-1][3]
    assert remembering.policy_state._bucket.take(last) == fresh.policy_state._bucket.take(last)
    assert remembering.policy_state._window._total == fresh.policy_state._window._total
    assert len(remembering.shapes) <= len(SHAPES["binance-hmac"]) and not fresh.shapes


def test_a_repeated_shape_takes_the_short_way_and_judges_its_values() -> None:
    """The remembered path is the one taken (else the property above compares a path with itself),
    and it still refuses what the policy refuses: size, symbol, spelling, staleness."""
    service = _new_service()
    key = _service_key(service, "k", POLICY)
    assert _answer(service, "k", "POST", "/api/v3/order", _ORDER, NOW)[0] == "signed"
    assert list(key.shapes) == [("POST", "/api/v3/order", *(name for name, _ in _ORDER))]
    key.policy_state._plans = Verdicts(max_bytes=0)  # forgotten there: only the key's shape can judge it now
    key.signing_key.__dict__.pop("_shapes")
    assert _answer(service, "k", "POST", "/api/v3/order", _ORDER, NOW + 1000)[0] == "signed"
    refusals = {
        "max_quantity": _ORDER[:4] + (("quantity", "6"), ("price", "100")),
        "symbol": (("symbol", "ETHUSDT"),) + _ORDER[1:],
        "non_canonical": _ORDER[:1] + (("side", "buy"),) + _ORDER[2:],
        "max_notional": _ORDER[:4] + (("quantity", "5"), ("price", "999.99")),
    }
    for rule, params in refusals.items():
        answer = _answer(service, "k", "POST", "/api/v3/order", params, NOW + 2000)
        assert answer[:3] == ("refused", 11, rule), (rule, answer)
    stale = _ORDER + (("timestamp", str(NOW - 60_000)),)
    assert _answer(service, "k", "POST", "/api/v3/order", stale, NOW)[2] == "freshness"


def test_another_key_or_a_replaced_one_does_not_reuse_a_shape() -> None:
    """Shapes belong to one loaded key: a key with another policy refuses what the first signed,
    and a key loaded again under the same name (another policy) starts with none."""
    service = _new_service()
    wide = _service_key(service, "wide", POLICY)
    narrow = _service_key(service, "narrow", {**POLICY, "symbols": ["LTCBTC"], "removable": True})
    assert _answer(service, "wide", "POST", "/api/v3/order", _ORDER, NOW)[0] == "signed"
    assert _answer(service, "wide", "POST", "/api/v3/order", _ORDER, NOW + 1)[0] == "signed"
    assert _answer(service, "narrow", "POST", "/api/v3/order", _ORDER, NOW + 2)[:3] == ("refused", 11, "symbol")
    assert wide.shapes and not narrow.shapes
    assert service.keyring.remove(narrow)
    reloaded = _service_key(service, "narrow", {**POLICY, "max_quantity": "0.5"})
    assert not reloaded.shapes
    assert _answer(service, "narrow", "POST", "/api/v3/order", _ORDER, NOW + 3)[:3] == ("refused", 11, "max_quantity")


def test_another_order_path_or_method_is_another_shape() -> None:
    """The names in another order, another path or another method are judged the long way (their
    own shape), and sign as a fresh key signs them."""
    service, fresh_service = _new_service(), _new_service()
    key, fresh = _service_key(service, "k", POLICY), _service_key(fresh_service, "k", POLICY)
    variants = [
        ("POST", "/api/v3/order", _ORDER),
        ("POST", "/api/v3/order", _ORDER[::-1]),
        ("POST", "/api/v3/order/test", _ORDER),
        ("DELETE", "/api/v3/order", (("symbol", "BTCUSDT"), ("origClientOrderId", "abc"))),
        ("GET", "/api/v3/order", (("symbol", "BTCUSDT"), ("origClientOrderId", "abc"))),
    ]
    for round_ in range(2):
        for index, (method, path, params) in enumerate(variants):
            now = NOW + 10 * index + round_
            _forget_shapes(fresh)
            assert _answer(service, "k", method, path, params, now) == _answer(fresh_service, "k", method, path, params, now)
    assert len(key.shapes) == len(variants)


def test_a_value_to_percent_encode_takes_the_long_way() -> None:
    """A remembered shape whose values need percent-encoding (":" passes the policy, not RFC 3986's
    unreserved set) is signed as the scheme signs it from scratch."""
    service, fresh_service = _new_service(), _new_service()
    _service_key(service, "k", POLICY)
    fresh = _service_key(fresh_service, "k", POLICY)
    for client_id in ["plain", "with:colon", "a/b+c", "plain"]:
        params = _ORDER + (("newClientOrderId", client_id),)
        _forget_shapes(fresh)
        signed = _answer(service, "k", "POST", "/api/v3/order", params, NOW)
        assert signed == _answer(fresh_service, "k", "POST", "/api/v3/order", params, NOW) and signed[0] == "signed"
        assert ("newClientOrderId=" + client_id.replace(":", "%3A").replace("/", "%2F").replace("+", "%2B")) in signed[1]


def test_a_key_keeps_a_bounded_number_of_shapes() -> None:
    """The host chooses the path: endless distinct shapes cost the long way, not memory."""
    service = _new_service()
    key = _service_key(service, "k", {"rate": {"per_second": "1000000", "burst": 100000}})
    params = (("symbol", "BTCUSDT"), ("orderId", "1"))
    most = 0
    for index in range(3 * MAX_KEY_SHAPES):
        assert _answer(service, "k", "GET", f"/api/v3/order/{index}", params, NOW)[0] == "signed"
        most = max(most, len(key.shapes))
        assert len(key.shapes) <= MAX_KEY_SHAPES
    assert most == MAX_KEY_SHAPES


@settings(max_examples=500, deadline=None)
@given(
    values=st.lists(st.text(alphabet="Az09._:,@/+-é ~&=\x00", max_size=8) | st.sampled_from(["a" * 256, "b" * 257, "BTCUSDT"]), max_size=6),
    word=st.text(max_size=4),
)
def test_the_character_checks_at_c_speed_answer_as_the_patterns_and_sets_they_replace(values: list, word: str) -> None:
    """The policy's values (allowed characters, at most 256 each) and the schemes' unreserved
    characters, checked by deleting allowed bytes, answer what the regular expression and the
    frozenset did."""
    import re

    from enclave.protocol.policy.engine import _plain_values
    from enclave.protocol.signing import _UNRESERVED, all_unreserved, plain_query

    pattern = re.compile(r"(?:[A-Za-z0-9._:,@/+-]{0,256}\x01)*[A-Za-z0-9._:,@/+-]{0,256}")
    joined = "\x01".join(values)
    assert _plain_values(joined) == bool(pattern.fullmatch(joined))
    for text in [*values, word, joined]:
        assert all_unreserved(text) == _UNRESERVED.issuperset(text)
    pairs = tuple(zip(values[0::2], values[1::2]))
    query = "&".join(map("=".join, pairs))
    counted = query.count("=") == len(pairs) and query.count("&") == len(pairs) - 1
    assert plain_query(query, len(pairs)) == ((_UNRESERVED | {"=", "&"}).issuperset(query) and counted)
