"""Properties of the signing policy, with hypothesis.

(a) Generated fund-moving (and security, session, settings) requests are always refused, under
    the safe default and under a permissive policy, whatever endpoint the request claims to be.
(b) Generated orders within a policy's symbols, limits, freshness and rate are always authorized,
    and the signing scheme then signs exactly the authorized parameters or body.
(c) Garbage policy documents only ever raise PolicyError; garbage requests only ever raise Refusal,
    with a reason of at most a few hundred bytes, whatever their size.
(d) Enumerated parameters are signed only in the exchange's documented spellings; borrowing flags
    only in a documented spelling that does not borrow (unless the policy allows borrowing).
(e) An order the exchange could read more than one way is signed only if every reading is within
    the limits (checked against a model written from the exchanges' documentation).
(f) Symbols are compared in the exchange's canonical form: any capitalisation gets the symbol's cap.
(g) Unicode symbol values (any script, look-alikes, combining marks, invisible characters) never
    open a fund-moving endpoint, even under a policy listing them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.protocol.bundle import BundleError, policy_digest
from enclave.protocol.exchange import DANGEROUS_CATEGORIES, Flags
from enclave.protocol.exchanges import SCHEME_NAMES, exchange_for_scheme
from policy_helpers import CATALOGUES, EXCHANGES
from enclave.protocol.exchanges import DECIMAL_PARAMETERS as _DECIMAL_PARAMS
from enclave.protocol.policy import Authorized, PolicyError, Refusal, SigningPolicy, normalize_document
from enclave.schemes import SchemeError, load_key
from policy_helpers import ENUMERATED, NOW, SCHEME_FOR, catalogue_of, concrete_path, endpoint_fields, misspellings, permissive, request, state, window_total
from zerocopy.policy import explain, parse_policy_text

MAX_REASON_BYTES = 300

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRETS = {
    "binance-hmac": b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
    "binance-ws-hmac": b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
    "bybit-hmac": b"bybit-test-secret",
    "okx-hmac": json.dumps({"secret": "okx-test-secret", "passphrase": "Passphrase1"}).encode(),
    "kraken": base64.b64encode(bytes(range(64))),
}

# == strategies =================================================================================
token = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}", fullmatch=True)


def canonical_decimal(low: str, high: str, places: int) -> st.SearchStrategy[str]:
    return st.decimals(min_value=Decimal(low), max_value=Decimal(high), places=places).map(lambda d: format(d, "f"))


def canonical_value(name: str) -> st.SearchStrategy[str]:
    if name in {"timestamp", "nonce"}:
        return st.integers(NOW - 4000, NOW + 4000).map(str)
    if name == "recvWindow":
        return st.integers(1, 5000).map(str)
    if name in _DECIMAL_PARAMS or name in {"amount", "amt"}:
        return canonical_decimal("0", "1000000", 4)
    return token


DANGEROUS_ENDPOINTS = [(catalogue, e) for catalogue, endpoints in CATALOGUES.items() for e in endpoints if e.category in DANGEROUS_CATEGORIES]


@st.composite
def dangerous_requests(draw: st.DrawFn) -> tuple:
    catalogue, endpoint = draw(st.sampled_from(DANGEROUS_ENDPOINTS))
    optional = draw(st.lists(st.sampled_from(sorted(endpoint.optional)), unique=True)) if endpoint.optional else []
    names = sorted((endpoint.required | set(optional)) - ({"apiKey"} if catalogue == "binance-ws" else set()))
    if catalogue in {"binance", "binance-ws", "kraken"} and draw(st.booleans()):
        names = [name for name in names if name not in {"timestamp", "nonce"}]  # the scheme adds them
    fields = draw(st.permutations([(name, draw(canonical_value(name))) for name in names]))
    # Claimed as any endpoint of the exchange. A Coinbase JWT covers only method and path, so there
    # the path alone makes a request fund-moving: a body "claimed" as an order is just an order.
    claims = [e for e in CATALOGUES[catalogue] if catalogue != "coinbase" or e.category in DANGEROUS_CATEGORIES]
    claimed = draw(st.sampled_from([endpoint] + claims))
    return catalogue, endpoint, claimed, request(catalogue, claimed.method, concrete_path(claimed.path), list(fields))


def _another_endpoints_request(catalogue: str, claimed: Any, authorized: Any) -> bool:
    """Where the signature names the endpoint, the same fields sent elsewhere are that endpoint's
    request: an OKX login's (none) sent as GET orders-pending is a plain read, and signed as one."""
    return "path" in EXCHANGES[catalogue].covers and claimed.category not in DANGEROUS_CATEGORIES and authorized.endpoints == (claimed.name,)


# == (a) fund-moving requests are always refused ==============================================
@PROPERTY
@given(dangerous_requests(), st.booleans())
def test_fund_moving_requests_are_always_refused(generated: tuple, use_permissive: bool) -> None:
    catalogue, endpoint, claimed, (method, path, params, body) = generated
    document = permissive(catalogue, freshness={"enabled": False}) if use_permissive else None
    try:
        authorized = state(document, SCHEME_FOR[catalogue]).authorize_request(method, path, params, body, NOW)
    except Refusal as refusal:
        found = refusal
    else:
        if _another_endpoints_request(catalogue, claimed, authorized):
            return
        raise AssertionError(f"signed {endpoint.name} claimed as {claimed.name}: {authorized}")
    same_request = (
        catalogue in {"binance", "binance-ws"}  # the signature covers only the parameters
        or (catalogue == "bybit" and claimed.method == endpoint.method)  # ... and the format (GET query vs POST body)
        or claimed == endpoint
    )
    if same_request:
        assert found.rule in DANGEROUS_CATEGORIES, (endpoint.name, claimed.name, found.rule, str(found))
        assert "which the policy does not name" in str(found)
    if claimed == endpoint:
        assert found.rule == endpoint.category


# == (b) orders within the policy are always signed, exactly as authorized ===================
LIMITS = {"max_quantity": Decimal("2"), "max_notional": Decimal("50000")}
SYMBOLS = {"binance": ["BTCUSDT", "ETHUSDT"], "bybit": ["BTCUSDT", "ETHUSDT"], "okx": ["BTC-USDT", "ETH-USDT"], "kraken": ["XBTUSD", "ETHUSD"]}


def order_policy(catalogue: str, per_second: int, burst: int) -> dict:
    return {
        "symbols": SYMBOLS[catalogue],
        "max_quantity": str(LIMITS["max_quantity"]),
        "max_notional": str(LIMITS["max_notional"]),
        "per_symbol": {SYMBOLS[catalogue][1]: {"max_quantity": "1"}},
        "notional_window": {"seconds": 60, "max_notional": str(LIMITS["max_notional"] * 20)},
        "rate": {"per_second": str(per_second), "burst": burst},
    }


@st.composite
def orders(draw: st.DrawFn, catalogue: str) -> tuple[str, str, list[tuple[str, str]]]:
    symbol = draw(st.sampled_from(SYMBOLS[catalogue]))
    cap = Decimal("1") if symbol == SYMBOLS[catalogue][1] else LIMITS["max_quantity"]
    quantity = draw(st.decimals(min_value=Decimal("0.001"), max_value=cap, places=3))
    top = (LIMITS["max_notional"] / quantity).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
    price = format(draw(st.decimals(min_value=Decimal("0.01"), max_value=top, places=2)), "f")
    quantity_text = format(quantity, "f")
    side = draw(st.booleans())
    if catalogue == "binance":
        fields = [("symbol", symbol), ("side", "BUY" if side else "SELL"), ("type", "LIMIT"), ("timeInForce", draw(st.sampled_from(["GTC", "IOC", "FOK"]))), ("quantity", quantity_text), ("price", price)]
        if draw(st.booleans()):
            fields.append(("newClientOrderId", draw(token)))
        return "POST", "/api/v3/order", fields
    if catalogue == "bybit":
        fields = [("category", "linear"), ("symbol", symbol), ("side", "Buy" if side else "Sell"), ("orderType", "Limit"), ("qty", quantity_text), ("price", price)]
        if draw(st.booleans()):
            fields.append(("orderLinkId", draw(token)))
        return "POST", "/v5/order/create", fields
    if catalogue == "okx":
        fields = [("instId", symbol), ("tdMode", "cash"), ("side", "buy" if side else "sell"), ("ordType", draw(st.sampled_from(["limit", "post_only", "ioc"]))), ("sz", quantity_text), ("px", price)]
        if draw(st.booleans()):
            fields.append(("clOrdId", draw(st.from_regex(r"[A-Za-z0-9]{1,32}", fullmatch=True))))
        return "POST", "/api/v5/trade/order", fields
    fields = [("ordertype", "limit"), ("type", "buy" if side else "sell"), ("volume", quantity_text), ("pair", symbol), ("price", price)]
    if draw(st.booleans()):
        fields.append(("userref", str(draw(st.integers(0, 2**31 - 1)))))
    return "POST", "/0/private/AddOrder", fields


@st.composite
def order_streams(draw: st.DrawFn) -> tuple:
    catalogue = draw(st.sampled_from(["binance", "bybit", "okx", "kraken"]))
    per_second, burst = draw(st.integers(1, 50)), draw(st.integers(1, 5))
    stream = []
    now = NOW + draw(st.integers(0, 10**9))
    for index in range(draw(st.integers(1, 12))):
        if index >= burst or draw(st.booleans()):
            now += -(-1000 // per_second) + draw(st.integers(0, 50))  # at least one token's worth of time
        method, path, fields = draw(orders(catalogue))
        if catalogue == "binance" and draw(st.booleans()):
            fields.append(("timestamp", str(now + draw(st.integers(-5000, 5000)))))
            if draw(st.booleans()):
                fields.append(("recvWindow", str(draw(st.integers(1, 5000)))))
        stream.append((now, method, path, draw(st.permutations(fields))))
    return catalogue, per_second, burst, stream


def sign_and_check(catalogue: str, method: str, path: str, fields: list[tuple[str, str]], authorized: Authorized, now: int) -> None:
    scheme = SCHEME_FOR[catalogue]
    secret = SECRETS[scheme]
    signed = load_key(scheme, secret, API_KEY).sign_http(method, path, authorized.params, authorized.body, now)
    headers = dict(signed.headers)
    if catalogue == "binance":
        assert authorized.params == tuple(fields) and authorized.body == b""
        sent = parse_qsl(signed.query, keep_blank_values=True, strict_parsing=True)
        added = [] if any(name == "timestamp" for name, _ in fields) else [("timestamp", str(now))]
        assert sent[:-1] == list(fields) + added and sent[-1][0] == "signature"
        unsigned = signed.query.rsplit("&signature=", 1)[0]
        assert sent[-1][1] == hmac.new(secret, unsigned.encode(), hashlib.sha256).hexdigest()
        assert signed.body == b"" and headers["X-MBX-APIKEY"] == API_KEY
    elif catalogue in {"bybit", "okx"}:
        assert authorized.params == () and signed.query == "" and signed.body == authorized.body
        assert list(json.loads(signed.body).items()) == list(fields)
        if catalogue == "bybit":
            prehash = f"{headers['X-BAPI-TIMESTAMP']}{API_KEY}{headers['X-BAPI-RECV-WINDOW']}".encode() + signed.body
            assert headers["X-BAPI-TIMESTAMP"] == str(now)
            assert headers["X-BAPI-SIGN"] == hmac.new(secret, prehash, hashlib.sha256).hexdigest()
        else:
            prehash = f"{headers['OK-ACCESS-TIMESTAMP']}{method}{path}".encode() + signed.body
            expected = base64.b64encode(hmac.new(b"okx-test-secret", prehash, hashlib.sha256).digest()).decode()
            assert headers["OK-ACCESS-SIGN"] == expected
    else:  # kraken: the POST data is the nonce, then exactly the authorized fields
        assert authorized.params == tuple(fields)
        sent = parse_qsl(signed.body.decode(), keep_blank_values=True, strict_parsing=True)
        assert sent[0][0] == "nonce" and sent[1:] == list(fields)
        nonce = sent[0][1]
        message = path.encode() + hashlib.sha256(nonce.encode() + signed.body).digest()
        assert headers["API-Sign"] == base64.b64encode(hmac.new(base64.b64decode(secret), message, hashlib.sha512).digest()).decode()


@PROPERTY
@given(order_streams())
def test_orders_within_the_policy_are_signed_as_authorized(generated: tuple) -> None:
    catalogue, per_second, burst, stream = generated
    policy = state(order_policy(catalogue, per_second, burst), SCHEME_FOR[catalogue])
    for now, method, path, fields in stream:
        m, p, params, body = request(catalogue, method, path, list(fields))
        authorized = policy.authorize_request(m, p, params, body, now)
        assert authorized.kind == "order" and authorized.symbol in SYMBOLS[catalogue]
        assert authorized.quantity is not None and authorized.quantity <= LIMITS["max_quantity"]
        assert authorized.notional is not None and authorized.notional <= LIMITS["max_notional"]
        sign_and_check(catalogue, m, p, list(fields), authorized, now)


# == (c) garbage in, typed errors out ==========================================================
FIELDS = ["version", "scheme", "allow", "raw_signing", "symbols", "max_quantity", "max_notional", "per_symbol", "notional_window", "rate", "freshness"]
SUBFIELDS = ["seconds", "max_notional", "max_quantity", "per_second", "burst", "enabled", "max_skew_ms", "max_recv_window_ms", "BTCUSDT"]
ENDPOINT_NAMES = sorted({e.name for endpoints in CATALOGUES.values() for e in endpoints})

scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=12)
    | st.sampled_from(["0.5", "0.50", "1e3", "-1", "", "BTCUSDT", "binance-hmac", "hmac-sha256", "coinbase-jwt"] + ENDPOINT_NAMES)
    | st.integers(0, 100000)
)
json_like = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(SUBFIELDS) | st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)
plausible = {
    "version": st.sampled_from([1, 2, True, 1.0, "1"]),
    "scheme": st.sampled_from(SCHEME_NAMES + ("binance", "")),
    "allow": st.lists(st.sampled_from(ENDPOINT_NAMES) | st.text(max_size=20), max_size=4),
    "symbols": st.lists(st.sampled_from(["BTCUSDT", "BTC-USD", "XBTUSD", "bad symbol", ""]), max_size=3),
    "per_symbol": st.dictionaries(st.sampled_from(["BTCUSDT", "ETH-USDT", "x y"]), st.dictionaries(st.sampled_from(["max_quantity", "max_notional", "x"]), json_like, max_size=2), max_size=2),
    "notional_window": st.fixed_dictionaries({"seconds": json_like, "max_notional": json_like}),
    "rate": st.fixed_dictionaries({"per_second": json_like, "burst": json_like}),
    "freshness": st.dictionaries(st.sampled_from(["enabled", "max_skew_ms", "max_recv_window_ms", "other"]), json_like, max_size=3),
}
policy_documents = st.one_of(
    json_like,
    st.dictionaries(
        st.sampled_from(FIELDS) | st.text(max_size=8) | st.integers(),
        json_like,
        max_size=5,
    ),
    st.fixed_dictionaries({}, optional={name: plausible.get(name, json_like) | json_like for name in FIELDS}),
)


@PROPERTY
@given(policy_documents, st.sampled_from(SCHEME_NAMES))
def test_garbage_policy_documents_raise_only_policy_error(document: Any, scheme: str) -> None:
    try:
        normalized = normalize_document(document)
    except PolicyError:
        normalized = None
    else:
        assert normalize_document(normalized) == normalized  # the canonical form is a fixed point
        try:
            assert len(policy_digest(normalized)) == 64
        except BundleError:  # pragma: no cover - would mean normalize let a lone surrogate through
            raise AssertionError(f"normalized policy cannot be hashed: {normalized!r}") from None
    try:
        policy = SigningPolicy.parse(document, scheme=scheme)
    except PolicyError:
        return
    assert normalized is not None or document is None
    assert all(isinstance(line, str) for line in explain(policy))


@PROPERTY
@given(st.text(max_size=200) | st.sampled_from(['max_quantity = 0.5', '[rate]\nburst = 1e3', '{"rate": 1.5}', 'allow = ["GET /"]', "x = 1\nx = 2"]))
def test_garbage_policy_text_raises_only_policy_error(text: str) -> None:
    try:
        parse_policy_text(text)
    except PolicyError:
        pass


any_text = st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates too, as JSON "\ud800" decodes to
texts = any_text | st.sampled_from(["symbol", "quantity", "price", "timestamp", "recvWindow", "category", "qty", "sz", "instId", "nonce", "volume", "pair", "BTCUSDT", "1", "0.5", "1e3", "\x01", "a\x01b", "\ud800"])
param_lists = st.lists(st.tuples(texts, texts), max_size=8)
bodies = (
    st.binary(max_size=64)
    | json_like.map(lambda value: json.dumps(value).encode("utf-8", "surrogatepass"))
    | st.dictionaries(texts, json_like, max_size=6).map(lambda value: json.dumps(value).encode("utf-8", "surrogatepass"))
    | st.sampled_from([b'{"a":1,"a":2}', b'{"qty":1.5}', b'{"x":NaN}', b'[' * 5000, b'{"x":' + b"9" * 5000 + b"}", b'{"x":"\\ud800"}', b"\xff\xfe"])
)
methods = st.sampled_from(["GET", "POST", "DELETE", "WS"]) | st.sampled_from(["PUT", "get", "post", "PATCH", ""]) | st.text(max_size=6)
paths = st.sampled_from(sorted({concrete_path(e.path) for endpoints in CATALOGUES.values() for e in endpoints}) + ["/v2/accounts/../transactions", "", "/"]) | st.text(max_size=30)


@PROPERTY
@given(st.sampled_from(sorted(SCHEME_FOR.values()) + ["hmac-sha256"]), st.integers(0, 2), methods, paths, param_lists, bodies, st.integers(0, 2 * NOW))
def test_garbage_requests_raise_only_refusal(scheme: str, which: int, method: str, path: str, params: list, body: bytes, now: int) -> None:
    catalogue = catalogue_of(scheme)
    document = [None, permissive(catalogue, freshness={"enabled": False}) if catalogue else None, {"max_notional": "1000"} if catalogue not in {None, "coinbase"} else None][which]
    policy = state(document, scheme)
    try:
        authorized = policy.authorize_request(method, path, tuple(params), body, now)
    except Refusal as refusal:
        assert refusal.rule and len(str(refusal).encode()) <= MAX_REASON_BYTES
        return
    assert isinstance(authorized, Authorized)
    if scheme in SECRETS:  # what the policy lets through, the scheme signs or refuses with its own typed error
        try:
            load_key(scheme, SECRETS[scheme], API_KEY).sign_http(method, path, authorized.params, authorized.body, now)
        except SchemeError:
            pass


json_objects = st.dictionaries(texts, json_like | texts, max_size=8)


@PROPERTY
@given(st.sampled_from(["bybit-hmac", "okx-hmac"]), st.integers(0, 2), paths, json_objects | bodies, st.booleans())
def test_garbage_json_bodies_raise_only_refusal(scheme: str, which: int, path: str, body: Any, pretty: bool) -> None:
    """Bybit and OKX POST bodies are parsed and re-serialised by the enclave: nothing in them may crash it."""
    if not isinstance(body, bytes):
        body = json.dumps(body, indent=1 if pretty else None).encode("utf-8", "surrogatepass")
    catalogue = catalogue_of(scheme)
    assert catalogue is not None
    document = [None, permissive(catalogue, freshness={"enabled": False}), {"max_notional": "1000"}][which]
    try:
        authorized = state(document, scheme).authorize_request("POST", path, (), body, NOW)
    except Refusal as refusal:
        assert len(str(refusal).encode()) <= MAX_REASON_BYTES
        return
    assert authorized.params == () and json.loads(authorized.body) == json.loads(body)


long_name = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{40,63}", fullmatch=True)
# Up to 300 names: past the 64 that make a request too large, and 12 KB and more of long names when
# the reason's 300-byte bound is all that is checked (more would only slow the drawing, not the claim).
huge_params = st.integers(0, 300).flatmap(lambda count: st.lists(st.tuples(long_name | texts, texts), min_size=count // 2, max_size=count))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(sorted(SCHEME_FOR.values())), methods, paths | st.text(min_size=500, max_size=3000), huge_params, st.sampled_from([b"", b"{}", b"x" * 70_000]))
def test_requests_of_any_size_get_short_refusals(scheme: str, method: str, path: str, params: list, body: bytes) -> None:
    """The reason reaches the bot in one frame and the audit log in one receipt: its size must not
    follow the request's (a 14,000-name request used to get a 952 KB reason)."""
    try:
        state(None, scheme).authorize_request(method, path, tuple(params), body, NOW)
    except Refusal as refusal:
        assert len(str(refusal).encode()) <= MAX_REASON_BYTES
        if len(params) > 64 or len(body) > 64 * 1024 or len(path) > 1024:
            assert refusal.rule == "too_large"


# == untrusted policy text: typed errors at any depth ==========================================
OPENERS = ["[", "{", '{"a":', "x = [", "x = {a = ", "[a]\nb = [", "[[", "{a={", '{"per_symbol":{"X":']


@PROPERTY
@given(st.sampled_from(OPENERS), st.sampled_from(["[", "{a = ", '{"a":', "[[", "{", ""]), st.integers(0, 60_000), st.booleans(), st.text(max_size=8))
def test_policy_text_nested_to_any_depth_raises_only_policy_error(opener: str, nest: str, depth: int, close: bool, tail: str) -> None:
    closers = {"[": "]", "{a = ": "}", '{"a":': "}", "[[": "]]", "{": "}", "": ""}
    text = opener + nest * depth + "1" + (closers[nest] * depth if close else "") + tail
    try:
        parse_policy_text(text)
    except PolicyError as error:
        assert len(str(error).encode()) <= MAX_REASON_BYTES


# == (d) documented spellings only ===============================================================
def unlimited(catalogue: str, borrowing: bool = True) -> Any:
    document = permissive(catalogue, borrowing=borrowing, freshness={"enabled": False}, rate={"per_second": "1000000", "burst": 100000})
    return state(document, SCHEME_FOR[catalogue])


def with_value(catalogue: str, endpoint: Any, name: str, value: Any) -> tuple:
    fields = [(field, text) for field, text in endpoint_fields(catalogue, endpoint) if field != name]
    if catalogue in {"bybit", "okx"} and endpoint.method == "POST":  # a JSON value: string, number or boolean
        body = dict(fields)
        body[name] = value
        return endpoint.method, endpoint.path, (), json.dumps(body).encode()
    return request(catalogue, endpoint.method, concrete_path(endpoint.path), fields + [(name, str(value))])


def json_text(value: Any) -> str:
    """The text the engine reads a JSON value as."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def is_documented(spellings: frozenset[str], text: str) -> bool:
    if isinstance(spellings, Flags):
        flags = text.split(",")
        return len(set(flags)) == len(flags) and all(flag in spellings for flag in flags)
    return text in spellings


value_text = st.from_regex(r"[A-Za-z0-9._:,@/+-]{0,14}", fullmatch=True)


@st.composite
def spelled(draw: st.DrawFn, catalogue: str, endpoint: Any, name: str) -> Any:
    spellings = sorted(endpoint.values[name])
    near = draw(st.sampled_from(spellings))
    choice = st.sampled_from(spellings) | st.sampled_from(sorted(misspellings(near))) | value_text
    if catalogue in {"bybit", "okx"} and endpoint.method == "POST":
        choice = choice | st.integers(-3, 3) | st.booleans()
    if catalogue == "okx" and endpoint.method == "POST":
        # OKX reads "" as absent, not as a spelling: test_policy.py::test_okx_an_empty_field_never_skips_a_check
        choice = choice.filter(lambda value: value != "")
    return draw(choice)


@PROPERTY
@given(st.sampled_from([param.values for param in ENUMERATED]).flatmap(lambda case: st.tuples(st.just(case), spelled(*case))))
def test_enumerated_parameters_are_signed_only_in_documented_spellings(generated: tuple) -> None:
    (catalogue, endpoint, name), value = generated
    text = json_text(value)
    try:
        unlimited(catalogue).authorize_request(*with_value(catalogue, endpoint, name, value), NOW)
    except Refusal as refusal:
        assert not is_documented(endpoint.values[name], text), (name, value, str(refusal))
        assert refusal.rule == "non_canonical"
    else:
        assert is_documented(endpoint.values[name], text), (name, value)


BORROWING_FLAGS = {  # from the exchanges' docs: the spellings that make the exchange lend
    ("binance", "POST /sapi/v1/margin/order", "sideEffectType"): {"MARGIN_BUY", "AUTO_BORROW_REPAY"},
    ("bybit", "POST /v5/order/create", "isLeverage"): {"1"},
    ("okx", "POST /api/v5/trade/order", "tdMode"): {"cross", "isolated", "spot_isolated"},
    ("okx", "POST /api/v5/trade/order", "quickMgnType"): {"auto_borrow"},
}
BORROWING_CASES = [(catalogue, next(e for e in CATALOGUES[catalogue] if e.name == name), parameter) for catalogue, name, parameter in BORROWING_FLAGS]


@PROPERTY
@given(st.sampled_from(BORROWING_CASES).flatmap(lambda case: st.tuples(st.just(case), spelled(*case))), st.booleans())
def test_borrowing_flags_pass_only_in_a_documented_spelling_that_does_not_borrow(generated: tuple, borrowing: bool) -> None:
    (catalogue, endpoint, name), value = generated
    text = json_text(value)
    lends = BORROWING_FLAGS[(catalogue, endpoint.name, name)]
    try:
        unlimited(catalogue, borrowing).authorize_request(*with_value(catalogue, endpoint, name, value), NOW)
    except Refusal as refusal:
        if text not in endpoint.values[name]:
            assert refusal.rule == "non_canonical"
        else:
            assert refusal.rule == "borrowing" and text in lends and not borrowing
    else:
        assert text in endpoint.values[name] and (borrowing or text not in lends)


# == (e) the largest reading ======================================================================
def readings(catalogue: str, fields: dict) -> list[tuple[Decimal | None, Decimal | None]]:
    """(base quantity, notional) under every reading the exchange's documentation allows."""
    if catalogue == "binance":
        limit = fields["type"] in {"LIMIT", "LIMIT_MAKER"}
        found = []
        if "quantity" in fields:
            quantity = Decimal(fields["quantity"])
            found.append((quantity, quantity * Decimal(fields["price"]) if limit and "price" in fields else None))
        if "quoteOrderQty" in fields:
            found.append((None, Decimal(fields["quoteOrderQty"])))
        return found
    size = Decimal(fields["qty"] if catalogue == "bybit" else fields["volume"])
    price = Decimal(fields["price"]) if "price" in fields else None
    if catalogue == "bybit":
        # spot market orders: quote by default for buys; marketUnit on unified accounts only
        limit = fields["orderType"] == "Limit"
        units = {"base"}
        if fields["category"] == "spot" and not limit:
            default = "quote" if fields["side"] == "Buy" else "base"
            units = {default, {"baseCoin": "base", "quoteCoin": "quote"}.get(fields.get("marketUnit"), default)}
    else:  # kraken: viqc, volume in quote currency, "not always available"
        limit = fields["ordertype"] == "limit"
        units = {"base", "quote"} if "viqc" in fields.get("oflags", "").split(",") else {"base"}
    return [(size, size * price if limit and price is not None else None) if unit == "base" else (None, size) for unit in units]


def within(cap: Decimal | None, amounts: list[Decimal | None]) -> bool:
    return cap is None or (bool(amounts) and all(amount is not None and amount <= cap for amount in amounts))


amounts = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("100"), places=3).map(lambda d: format(d, "f"))
caps = st.none() | st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000"), places=2)


@st.composite
def ambiguous_orders(draw: st.DrawFn) -> tuple[str, dict]:
    catalogue = draw(st.sampled_from(["binance", "bybit", "kraken"]))
    if catalogue == "binance":
        order_type = draw(st.sampled_from(["LIMIT", "MARKET"]))
        fields = {"symbol": "BTCUSDT", "side": draw(st.sampled_from(["BUY", "SELL"])), "type": order_type}
        if order_type == "LIMIT":
            fields |= {"timeInForce": "GTC", "price": draw(amounts)}
        for name in ("quantity", "quoteOrderQty"):
            if draw(st.booleans()):
                fields[name] = draw(amounts)
        return catalogue, fields
    if catalogue == "bybit":
        fields = {"category": draw(st.sampled_from(["spot", "linear"])), "symbol": "BTCUSDT", "side": draw(st.sampled_from(["Buy", "Sell"])),
                  "orderType": draw(st.sampled_from(["Market", "Limit"])), "qty": draw(amounts)}
        if fields["orderType"] == "Limit":
            fields["price"] = draw(amounts)
        if draw(st.booleans()):
            fields["marketUnit"] = draw(st.sampled_from(["baseCoin", "quoteCoin"]))
        return catalogue, fields
    fields = {"ordertype": draw(st.sampled_from(["limit", "market"])), "type": draw(st.sampled_from(["buy", "sell"])), "volume": draw(amounts), "pair": "XBTUSD"}
    if fields["ordertype"] == "limit":
        fields["price"] = draw(amounts)
    if draw(st.booleans()):
        fields["oflags"] = draw(st.sampled_from(["viqc", "post,viqc", "post", "fciq"]))
    return catalogue, fields


@PROPERTY
@given(ambiguous_orders(), caps, caps)
def test_an_order_read_more_than_one_way_is_limited_by_its_largest_reading(generated: tuple, max_quantity: Decimal | None, max_notional: Decimal | None) -> None:
    catalogue, fields = generated
    document: dict = {"freshness": {"enabled": False}}
    if max_quantity is not None:
        document["max_quantity"] = format(max_quantity, "f")
    if max_notional is not None:
        document["max_notional"] = format(max_notional, "f")
    path = {"binance": "/api/v3/order", "bybit": "/v5/order/create", "kraken": "/0/private/AddOrder"}[catalogue]
    found = readings(catalogue, fields)
    expected = within(max_quantity, [quantity for quantity, _ in found]) and within(max_notional, [notional for _, notional in found])
    try:
        authorized = state(document, SCHEME_FOR[catalogue]).authorize_request(*request(catalogue, "POST", path, list(fields.items())), NOW)
    except Refusal as refusal:
        assert not expected, (fields, str(refusal))
        assert refusal.rule in {"max_quantity", "quantity_unknown", "max_notional", "notional_unknown"}
    else:
        assert expected, (fields, authorized)


# == (f) canonical symbols ========================================================================
@PROPERTY
@given(st.sampled_from([("binance", "BTCUSDT"), ("bybit", "BTCUSDT"), ("okx", "BTC-USDT"), ("kraken", "XBTUSD")]), st.data())
def test_any_capitalisation_of_a_symbol_gets_its_cap(case: tuple, data: st.DataObject) -> None:
    catalogue, symbol = case
    flips = data.draw(st.lists(st.booleans(), min_size=len(symbol), max_size=len(symbol)))
    written = "".join(char.lower() if flip else char for char, flip in zip(symbol, flips))
    fields = {
        "binance": [("symbol", written), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1"), ("price", "1")],
        "bybit": [("category", "spot"), ("symbol", written), ("side", "Buy"), ("orderType", "Limit"), ("qty", "1"), ("price", "1")],
        "okx": [("instId", written), ("tdMode", "cash"), ("side", "buy"), ("ordType", "limit"), ("sz", "1"), ("px", "1")],
        "kraken": [("ordertype", "limit"), ("type", "buy"), ("volume", "1"), ("pair", written), ("price", "1")],
    }[catalogue]
    path = {"binance": "/api/v3/order", "bybit": "/v5/order/create", "okx": "/api/v5/trade/order", "kraken": "/0/private/AddOrder"}[catalogue]
    policy = state({"max_quantity": "10", "per_symbol": {symbol: {"max_quantity": "0.5"}}, "freshness": {"enabled": False}}, SCHEME_FOR[catalogue])
    try:
        policy.authorize_request(*request(catalogue, "POST", path, fields), NOW)
    except Refusal as refusal:
        assert refusal.rule == "max_quantity" and "for " in str(refusal)
    else:
        raise AssertionError(f"{written} escaped the cap on {symbol}")


# == (g) Unicode symbols never open a fund-moving endpoint =========================================
LOOK_ALIKES = "АВЕКМНОРСТХΑΒΕΖΗΙΚΜΝΟΡΤΥΧＡＢ１２０"  # Cyrillic, Greek and full-width twins of Latin letters and digits
unicode_symbols = st.one_of(
    st.sampled_from(["１２３４５６", "币安人生USDT", "АBCUSDT", "ΟKBUSDT", "BTC\u200dUSDT", "E\u0301USDT"]),
    st.text(st.characters(categories=("Lu", "Lo", "Nd", "No")) | st.sampled_from(LOOK_ALIKES + "BTCUSD"), min_size=1, max_size=12),  # mostly symbol names
    st.text(
        st.characters(categories=("Lu", "Ll", "Lo", "Nd", "Nl", "No", "Mn", "Mc", "Cf", "Zs", "Cc"), codec="utf-8") | st.sampled_from(LOOK_ALIKES + "\u0301\u200d\u200f._-/"),
        min_size=1, max_size=12,
    ),
)


@st.composite
def unicode_dangerous_requests(draw: st.DrawFn) -> tuple:
    """A fund-moving request whose symbol parameter, and perhaps others, carry Unicode symbols (the
    parameter names are the endpoint's: an extra ``symbol`` would make it another endpoint's request)."""
    catalogue, endpoint, claimed, (method, path, params, body) = draw(dangerous_requests())
    symbol_param = exchange_for_scheme(SCHEME_FOR[catalogue]).order_fields.symbol
    fields = dict(params) if params else (json.loads(body) if body else {})
    if symbol_param in endpoint.optional and symbol_param not in fields:
        fields[symbol_param] = ""  # the endpoint takes a symbol: give it one
    for name in list(fields):
        if name == symbol_param or draw(st.integers(0, 4)) == 0:
            fields[name] = draw(unicode_symbols)
    return catalogue, endpoint, claimed, symbol_param, request(catalogue, claimed.method, concrete_path(claimed.path), list(fields.items()))


@PROPERTY
@given(unicode_dangerous_requests(), st.booleans())
def test_unicode_symbols_never_open_a_fund_moving_endpoint(generated: tuple, use_permissive: bool) -> None:
    catalogue, endpoint, claimed, symbol_param, (method, path, params, body) = generated
    fields = dict(params) if params else (json.loads(body) if body else {})
    listed = sorted({value for value in fields.values() if isinstance(value, str) and value and not value.isascii()})
    document = permissive(catalogue, freshness={"enabled": False}) if use_permissive else None
    if document is not None and listed and catalogue != "coinbase":
        try:
            document = {**document, "symbols": normalize_document({"symbols": listed})["symbols"]}
        except PolicyError:
            pass  # some drawn value is no symbol name: the request itself is then refused as non_canonical
    try:
        authorized = state(document, SCHEME_FOR[catalogue]).authorize_request(method, path, params, body, NOW)
    except Refusal as refusal:
        found = refusal
    else:
        if _another_endpoints_request(catalogue, claimed, authorized):
            return
        raise AssertionError(f"signed {endpoint.name} claimed as {claimed.name} with {fields!r}: {authorized}")
    only_symbols_non_ascii = all(value.isascii() for name, value in fields.items() if name != symbol_param)
    if claimed == endpoint and only_symbols_non_ascii and found.rule != "non_canonical":
        assert found.rule in DANGEROUS_CATEGORIES or found.rule in {"unknown_parameter", "symbol"}, (endpoint.name, found.rule, str(found))


# == the notional window: bounded, and never under-counted =======================================
@PROPERTY
@given(st.integers(1, 3 * 86400), st.lists(st.tuples(st.integers(-5_000, 2_000_000), st.integers(1, 1000)), min_size=1, max_size=300))
def test_the_notional_window_never_under_counts_and_stays_bounded(seconds: int, steps: list[tuple[int, int]]) -> None:
    from enclave.protocol.policy.limits import WINDOW_BUCKETS as _WINDOW_BUCKETS
    from enclave.protocol.policy.limits import NotionalWindow as _NotionalWindow

    window = _NotionalWindow(seconds)
    clock, latest, signed = NOW, None, []
    span = seconds * 1000
    for step, notional in steps:  # a clock that may read behind (threads, a stepped clock)
        clock += step
        latest = clock if latest is None else max(latest, clock)  # the window's time: the latest it has seen
        assert window.admit(clock, Decimal(notional), Decimal("Infinity")) is None  # counted
        signed.append((latest, notional))
        total = window_total(window, clock)
        assert total >= sum(amount for at, amount in signed if at > latest - span)
        # the excess is only orders within one bucket of the horizon
        assert total <= sum(amount for at, amount in signed if at > latest - span - window.bucket_ms)
        assert len(window) <= _WINDOW_BUCKETS + 2
