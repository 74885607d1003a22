"""The sign path's short ways, attacked as the host would: SIGN_HTTP requests of its choosing.

A key remembers the query-only shapes it signed (policy plan, scheme shape, receipt parts) and
signs the next one of a shape by its values alone. The host chooses every byte of a request, so it
tries to make a remembered shape answer for a request it does not fit — values to percent-encode,
separators, unicode, empty values, another case of method or path, names in another order or twice,
a timestamp of its own — or to get more signed than the rate and the notional window allow by
switching shapes from many threads at once. Each property compares against a key that remembers
nothing and against the reference signer (tests/reference_signers.py), byte for byte, receipts
included. Also: the policy's plans under the schemes that sign otherwise (Kraken, OKX, Bybit,
Binance WebSocket), the byte-table character checks, the client's kept SIGN_HTTP prefixes (bounded
in bytes), and raw frames to a real enclave.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import threading
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import event as event_stat
from hypothesis import strategies as st

import reference_signers as reference
from enclave.clock import Clock
from enclave.keyring import LoadedKey
from enclave.protocol import ErrorResponse, HttpSignature, HttpSignRequest
from enclave.protocol.frames import HEADER, VERSION, Connection, MessageType, Role, http_params, sign_http_body_with, sign_http_prefix
from enclave.protocol.policy import PolicyState, SigningPolicy
from enclave.protocol.policy.limits import Verdicts
from enclave.schemes import SchemeError, generate_key, load_key
from enclave.service import EnclaveService

NOW = 1_700_000_000_000
API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
ORDER = "/api/v3/order"

# Secrets around the HMAC block size (64): shorter ones are padded, longer ones hashed first.
HMAC_SECRETS = [b"s" * 64, b"k" * 65, b"long" * 50, b"short"]
ASYMMETRIC_SECRETS = {scheme: generate_key(scheme) for scheme in ("binance-ed25519", "binance-rsa")}

POLICIES = [
    {"rate": {"per_second": "1000", "burst": 1000}},
    {
        "symbols": ["BTCUSDT"],
        "max_quantity": "5",
        "max_notional": "1000",
        "notional_window": {"seconds": 5, "max_notional": "2500"},
        "rate": {"per_second": "2", "burst": 6},
    },
]
# Shapes a bot repeats, and the host's variations on them (order, case, a name twice, no names).
SHAPES = [
    ("POST", ORDER, ("symbol", "side", "type", "timeInForce", "quantity", "price")),
    ("POST", ORDER, ("symbol", "side", "type", "timeInForce", "quantity", "price", "timestamp")),
    ("POST", ORDER, ("price", "quantity", "timeInForce", "type", "side", "symbol")),
    ("POST", ORDER, ("symbol", "side", "type", "quantity", "newClientOrderId")),
    ("POST", ORDER, ("symbol", "side", "symbol", "type", "quantity")),
    ("POST", ORDER, ("symbol", "side", "type", "quantity")),
    ("post", ORDER, ("symbol", "side", "type", "quantity")),
    ("PUT", ORDER, ("symbol", "side", "type", "quantity")),
    ("POST", "/sapi/v1/margin/order", ("symbol", "side", "type", "quantity")),
    ("POST", "/API/v3/order", ("symbol", "side", "type", "quantity")),
    ("POST", "/api/v3/order/test", ("symbol", "side", "type", "quantity")),
    ("DELETE", ORDER, ("symbol", "origClientOrderId")),
    ("GET", ORDER, ("symbol", "orderId", "recvWindow")),
    ("GET", "/api/v3/account", ()),
]
PLAIN = {
    "symbol": ["BTCUSDT", "ETHUSDT"],
    "side": ["BUY", "SELL"],
    "type": ["LIMIT", "MARKET"],
    "timeInForce": ["GTC"],
    "quantity": ["1", "0.5", "6", "2"],
    "price": ["100", "400", "0.1"],
    "newClientOrderId": ["abc", "A-1_x.y~z"],
    "origClientOrderId": ["abc"],
    "orderId": ["12"],
    "recvWindow": ["5000"],
}
# What the host puts in a value to make the query differ from the one the shape was signed with.
HOSTILE = ["", "a b", "x&y=z", "=", "&", "a=b", "%41", "a+b", "é", "\u00a0", "ＢＴＣ", "BTC\u200bUSDT", "1e3", "-1", "buy", "a/b:c", "~", "x" * 300, "\x01", "\x7f"]


def _service(scheme: str, secret: bytes, policy: dict) -> tuple[EnclaveService, LoadedKey]:
    service = EnclaveService(nsm=None, kms=None, clock=Clock(fixed_ms=NOW))  # type: ignore[arg-type]
    state = PolicyState(SigningPolicy.parse(policy, scheme=scheme))
    key = LoadedKey("k", scheme, API_KEY, "0" * 64, "arn:test", state, load_key(scheme, secret, API_KEY), "k")
    service.keyring.add(key)
    return service, key


def _forget(key: LoadedKey) -> None:
    """Nothing remembered anywhere: the key judges and signs the next request from scratch."""
    key.shapes.clear()
    key.signing_key.__dict__.pop("_shapes", None)
    key.policy_state._plans = Verdicts(max_bytes=0)


def _from_the_wire(method: str, path: str, params: tuple) -> HttpSignRequest:
    """The request as the enclave decodes it from the host's SIGN_HTTP frame."""
    body = sign_http_body_with(sign_http_prefix(b"k", method.encode(), path.encode()), http_params(params), b"")
    server = Connection(Role.SERVER)
    server.receive_data(HEADER.pack(len(body), VERSION, MessageType.SIGN_HTTP, 7) + body)
    event = server.next_event()
    assert type(event) is HttpSignRequest and event.params == params
    return event


def _answer(service: EnclaveService, event: HttpSignRequest, now: int) -> tuple:
    service.clock = Clock(fixed_ms=now)
    answer = service.handle(event)
    if type(answer) is HttpSignature:
        return ("signed", answer.query, answer.body, answer.headers)
    assert type(answer) is ErrorResponse
    return ("refused", answer.code, answer.rule, answer.message)


def _lines(service: EnclaveService) -> list[bytes]:
    return [line.encode() if isinstance(line, str) else line for line in service.audit.fetch(0, 1000)["receipts"]]


def _assert_signed_receipt(line: bytes, method: str, path: str, params: tuple, now: int) -> None:
    """The receipt's line is the canonical JSON of its fields (sorted, compact, UTF-8: the form
    receipts had before the short way) and names this request: its digest, method, path and time."""
    receipt = json.loads(line)
    assert line == json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    digest = hashlib.sha256(("\0".join(item for pair in params for item in pair) + "\0\0").encode()).hexdigest()
    assert (receipt["decision"], receipt["digest"], receipt["key"], receipt["request"], receipt["reason"], receipt["rule"], receipt["time_ms"]) == (
        "signed", digest, "k", f"{method} {path}", "", "", now
    )
    for field in ("quantity", "notional"):
        assert receipt[field] is None or str(Decimal(receipt[field])) == receipt[field]


def _unchained(lines: list[bytes]) -> list[bytes]:
    """The lines byte for byte but for ``prev`` (each boot's chain starts from its own genesis)."""
    assert _chained(lines)
    return [re.sub(rb'"prev":"[0-9a-f]{64}"', b'"prev":""', line, count=1) for line in lines]


@st.composite
def attacks(draw: st.DrawFn) -> tuple[str, bytes, dict, list]:
    scheme = draw(st.sampled_from(["binance-hmac", "binance-hmac", "binance-ed25519", "binance-rsa"]))
    secret = draw(st.sampled_from(HMAC_SECRETS)) if scheme == "binance-hmac" else ASYMMETRIC_SECRETS[scheme]
    policy = draw(st.sampled_from(POLICIES))
    # Often a shape and its siblings: the same names under another method or path.
    siblings = st.sampled_from([shape for shape in SHAPES if shape[2] == ("symbol", "side", "type", "quantity")])
    shapes = draw(st.lists(st.sampled_from(SHAPES) | siblings, min_size=1, max_size=4, unique=True))
    stream, now = [], NOW
    for _ in range(draw(st.integers(2, 14))):
        method, path, names = draw(st.sampled_from(shapes))
        params = []
        for name in names:
            if name == "timestamp":
                value = str(now + draw(st.sampled_from([0, -2000, -60_000])))
            else:
                value = draw(st.sampled_from(PLAIN[name]) | st.sampled_from(HOSTILE)) if draw(st.integers(0, 9)) == 0 else draw(st.sampled_from(PLAIN[name]))
            params.append((name, value))
        now += draw(st.sampled_from([0, 1, 700, 6000]))
        stream.append((method, path, tuple(params), now))
    return scheme, secret, policy, stream


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attacks())
def test_a_remembered_shape_signs_judges_and_records_as_a_key_that_remembers_nothing(attack: tuple) -> None:
    """Every answer (signature or refusal, word for word), every receipt line (byte for byte but
    for ``prev``, each chain checked) and the rate and window left behind are a forgetful key's;
    every signature is the reference signer's."""
    scheme, secret, policy, stream = attack
    remembering_service, remembering = _service(scheme, secret, policy)
    fresh_service, fresh = _service(scheme, secret, policy)
    scheme_key, scheme_fresh = load_key(scheme, secret, API_KEY), load_key(scheme, secret, API_KEY)
    for method, path, params, now in stream * 2:  # each shape seen, then seen again
        event = _from_the_wire(method, path, params)
        event_stat("short way" if (method, path, *(name for name, _ in params)) in remembering.shapes else "long way")
        _forget(fresh)
        answer = _answer(remembering_service, event, now)
        assert answer == _answer(fresh_service, event, now)
        if answer[0] == "signed":
            expected = reference.binance_rest(scheme, secret, API_KEY, params, b"", now)
            assert (answer[1], answer[2], answer[3]) == (expected.query, expected.body, expected.headers)
            _assert_signed_receipt(_lines(remembering_service)[-1], method, path, params, now)
        # The scheme alone (no policy to refuse "&" or "=" first) keeps shapes of its own.
        by_scheme = _scheme_signed(scheme_key, method, path, params, now)
        scheme_fresh.__dict__.pop("_shapes", None)
        assert by_scheme == _scheme_signed(scheme_fresh, method, path, params, now)
        if by_scheme[0] == "signed":
            expected = reference.binance_rest(scheme, secret, API_KEY, params, b"", now)
            assert by_scheme[1:] == (expected.query, expected.body, expected.headers)
    assert _unchained(_lines(remembering_service)) == _unchained(_lines(fresh_service))
    last = stream[-1][3] + 1
    mine, theirs = remembering.policy_state, fresh.policy_state
    assert (mine._bucket is None) == (theirs._bucket is None)
    if mine._bucket is not None:
        assert (mine._bucket._tokens, mine._bucket.take(last)) == (theirs._bucket._tokens, theirs._bucket.take(last))
    if mine._window is not None:
        assert mine._window._total == theirs._window._total


def _scheme_signed(key: object, method: str, path: str, params: tuple, now: int) -> tuple:
    try:
        signed = key.sign_http(method, path, params, b"", now)  # type: ignore[attr-defined]
    except SchemeError as exc:
        return ("refused", str(exc))
    return ("signed", signed.query, signed.body, signed.headers)


BUY = (("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1"), ("price", "100"))


def test_a_remembered_shape_is_taken_and_still_signs_what_the_reference_signs() -> None:
    """The short way is the one the property above exercises: the shape is remembered after the
    first signature, and the policy's and scheme's own memories are not needed for the next."""
    service, key = _service("binance-hmac", HMAC_SECRETS[2], POLICIES[0])
    assert _answer(service, _from_the_wire("POST", ORDER, BUY), NOW)[0] == "signed"
    assert list(key.shapes) == [("POST", ORDER, *(name for name, _ in BUY))]
    key.signing_key.__dict__.pop("_shapes")
    key.policy_state._plans = Verdicts(max_bytes=0)
    for value in ["2", "x&quantity=500", "a b", "é"]:
        params = BUY[:4] + (("quantity", value),) + BUY[5:]
        answer = _answer(service, _from_the_wire("POST", ORDER, params), NOW + 1)
        if value == "2":
            expected = reference.binance_rest("binance-hmac", HMAC_SECRETS[2], API_KEY, params, b"", NOW + 1)
            assert answer[:2] == ("signed", expected.query)
        else:  # the policy refuses a quantity that is not a decimal, the short way or not
            assert answer[:3] == ("refused", 11, "non_canonical"), answer


def test_a_shape_is_not_reused_by_a_key_loaded_again_under_its_name() -> None:
    """REMOVE and PROVISION again (same name, same secret, a narrower policy): the new key signs
    nothing the old one's remembered shape allowed and its own policy refuses."""
    service, key = _service("binance-hmac", HMAC_SECRETS[0], POLICIES[0])
    for now in (NOW, NOW + 1):
        assert _answer(service, _from_the_wire("POST", ORDER, BUY), now)[0] == "signed"
    assert key.shapes
    assert service.keyring.remove(key)
    narrow = PolicyState(SigningPolicy.parse({"symbols": ["ETHUSDT"]}, scheme="binance-hmac"))
    service.keyring.add(LoadedKey("k", "binance-hmac", API_KEY, "1" * 64, "arn:test", narrow, load_key("binance-hmac", HMAC_SECRETS[0], API_KEY), "k2"))
    assert _answer(service, _from_the_wire("POST", ORDER, BUY), NOW + 2)[:3] == ("refused", 11, "symbol")


def _hammer(service: EnclaveService, secret: bytes, shapes: list[HttpSignRequest], threads: int, each: int) -> list[tuple]:
    answers: list[tuple] = []
    start = threading.Barrier(threads)

    def run(offset: int) -> None:
        start.wait()
        mine = [service.handle(shapes[(offset + index) % len(shapes)]) for index in range(each)]
        answers.extend(("signed", answer.query) if type(answer) is HttpSignature else ("refused", answer.rule) for answer in mine)

    workers = [threading.Thread(target=run, args=(offset,)) for offset in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not any(worker.is_alive() for worker in workers)
    # Every signature made from the key's shared pad states, threads at once, is the reference's.
    expected = {reference.binance_rest("binance-hmac", secret, API_KEY, shape.params, b"", NOW).query for shape in shapes}
    assert {answer[1] for answer in answers if answer[0] == "signed"} <= expected
    return [answer[:1] if answer[0] == "signed" else answer for answer in answers]


def _switching_shapes(size: str) -> list[HttpSignRequest]:
    """One order three ways (the same notional): the host switches shapes between requests."""
    base = (("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", size), ("price", "100"))
    return [
        _from_the_wire("POST", ORDER, base),
        _from_the_wire("POST", ORDER, base[::-1]),
        _from_the_wire("POST", ORDER, base + (("newClientOrderId", "c"),)),
    ]


def _chained(lines: list[bytes]) -> bool:
    receipts = [json.loads(line) for line in lines]
    return [receipt["seq"] for receipt in receipts] == list(range(1, len(receipts) + 1)) and all(
        receipt["prev"] == hashlib.sha256(previous).hexdigest() for previous, receipt in zip(lines, receipts[1:])
    )


def test_the_rate_holds_under_threads_switching_shapes() -> None:
    """A burst of 40, a clock that does not move: 4 threads × 60 orders of three shapes get
    exactly 40 signatures, and the receipts form one chain."""
    service, key = _service("binance-hmac", HMAC_SECRETS[2], {"rate": {"per_second": "1", "burst": 40}})
    answers = _hammer(service, HMAC_SECRETS[2], _switching_shapes("1"), threads=4, each=60)
    assert answers.count(("signed",)) == 40 and answers.count(("refused", "rate")) == 200
    assert key.shapes and key.policy_state._bucket._tokens < 1
    lines = _lines(service)
    assert len(lines) == 240 and _chained(lines)


def test_the_notional_window_holds_under_threads_switching_shapes() -> None:
    """A window of 2050 (orders of 100): exactly 20 signed, the window's total exactly 2000, and
    each refused order gives its token back."""
    policy = {"max_notional": "1000", "notional_window": {"seconds": 60, "max_notional": "2050"}, "rate": {"per_second": "1", "burst": 1000}}
    service, key = _service("binance-hmac", HMAC_SECRETS[1], policy)
    answers = _hammer(service, HMAC_SECRETS[1], _switching_shapes("1"), threads=4, each=50)
    assert answers.count(("signed",)) == 20 and answers.count(("refused", "notional_window")) == 180
    state = key.policy_state
    assert state._window._total == Decimal(2000) and state._bucket._tokens == 1000 - 20
    assert _chained(_lines(service))


# -- the byte-table character checks: the sets and patterns they replaced, for any text --------------
# Written out here, as RFC 3986 and the policy's value rule state them (not read from the code under test).
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_VALUES = re.compile(r"(?:[A-Za-z0-9._:,@/+-]{0,256}\x01)*[A-Za-z0-9._:,@/+-]{0,256}")
_NEAR = st.sampled_from(list("aZ09-._~=&\x01:,@/+%# \x00\x7f\x80éＡ\ud800") + ["x" * 255, "y" * 256, "z" * 257])
_TEXTS = st.lists(_NEAR, max_size=8).map("".join) | st.text(max_size=12)


@settings(max_examples=400, deadline=None)
@given(text=_TEXTS, pairs=st.integers(0, 4))
def test_the_byte_table_checks_are_the_character_sets_they_replaced(text: str, pairs: int) -> None:
    from enclave.protocol.policy.engine import _plain_values
    from enclave.protocol.signing import all_unreserved, plain_query

    assert all_unreserved(text) == _UNRESERVED.issuperset(text)
    query_characters = _UNRESERVED | {"=", "&"}
    assert plain_query(text, pairs) == (query_characters.issuperset(text) and text.count("=") == pairs and text.count("&") == pairs - 1)
    assert _plain_values(text) == bool(_VALUES.fullmatch(text))


@settings(max_examples=400, deadline=None)
@given(params=st.lists(st.tuples(*[st.text(alphabet=sorted(_UNRESERVED), max_size=6) | _TEXTS] * 2), max_size=5))
def test_a_plain_querys_digest_is_the_request_digest(params: list[tuple[str, str]]) -> None:
    """The receipt's digest of a remembered shape's request, made from its query's bytes, is the
    digest of its params joined by NUL whenever the query is plain (names and values holding "=",
    "&", NUL or anything else make it not plain: those take the long way)."""
    from enclave.service import _plain_query_digest, _request_digest
    from enclave.protocol.signing import plain_query

    query = "&".join(map("=".join, params))
    if plain_query(query, len(params)):
        event_stat("plain")
        assert _plain_query_digest(query) == hashlib.sha256("\0".join(part for pair in params for part in pair).encode() + b"\0\0").hexdigest()
        assert _plain_query_digest(query) == _request_digest(tuple(params), b"")


# -- the client's remembered SIGN_HTTP prefixes -------------------------------------------------------
def test_the_client_keeps_little_of_long_paths() -> None:
    """A path may be 64 KiB (an id in it, a long query the bot put in the path): a client calling
    many such endpoints must not hold hundreds of them, twice over, for the life of the process."""
    from zerocopy import _client

    saved = dict(_client._PREFIXES)
    _client._PREFIXES.clear()
    try:
        most = 0
        for index in range(300):
            path = f"/api/v3/order/{index:04d}/" + "p" * 60_000
            body = _client._sign_http_request("k", "GET", path, {"symbol": "BTCUSDT"}, None)
            assert body == sign_http_body_with(sign_http_prefix(b"k", b"GET", path.encode()), http_params((("symbol", "BTCUSDT"),)), b"")
            most = max(most, sum(len("".join(names)) + len(b"".join(prefix)) for names, prefix in _client._PREFIXES.items()))
        assert most <= 1 << 20, f"{most} bytes of prefixes held"
    finally:
        _client._PREFIXES.clear()
        _client._PREFIXES.update(saved)


# -- the policy's remembered plans under the schemes that sign differently ----------------------------
from policy_helpers import CATALOGUES, catalogue_of, concrete_path, endpoint_fields, permissive, request  # noqa: E402

from enclave.schemes import SCHEMES  # noqa: E402

OTHER_SCHEMES = ["kraken", "okx-hmac", "bybit-hmac", "binance-ws-hmac"]
OTHER_SECRETS = {scheme: SCHEMES[scheme].fresh_secret() for scheme in OTHER_SCHEMES}


def _query_only_requests(scheme: str) -> list[tuple[str, str, tuple]]:
    """The catalogue's trade and read endpoints whose fields go in params (no body), as a bot sends them."""
    catalogue = catalogue_of(scheme)
    found = []
    for endpoint in CATALOGUES[catalogue]:
        if endpoint.category in {"trade", "read"}:
            method, path, params, body = request(catalogue, endpoint.method, concrete_path(endpoint.path), endpoint_fields(catalogue, endpoint))
            if not body:
                found.append((method, path, params))
    return found


QUERY_ONLY = {scheme: _query_only_requests(scheme) for scheme in OTHER_SCHEMES}


@st.composite
def other_scheme_attacks(draw: st.DrawFn) -> tuple[str, dict, list]:
    scheme = draw(st.sampled_from(OTHER_SCHEMES))
    policy = permissive(catalogue_of(scheme), **draw(st.sampled_from([{}, {"max_quantity": "5", "rate": {"per_second": "2", "burst": 5}}])))
    bases = draw(st.lists(st.sampled_from(QUERY_ONLY[scheme]), min_size=1, max_size=3))
    stream, now = [], NOW
    for _ in range(draw(st.integers(2, 10))):
        method, path, params = draw(st.sampled_from(bases))
        params = list(params)
        if params and draw(st.booleans()):  # a value the host chose
            index = draw(st.integers(0, len(params) - 1))
            params[index] = (params[index][0], draw(st.sampled_from(HOSTILE + ["7", "0.5", "BUY", "sell", "true"])))
        if draw(st.integers(0, 3)) == 0:  # an extra name: Kraken's nonce marker, a duplicate, an unknown one
            params.append(draw(st.sampled_from([("nonce", ""), ("nonce", "5"), params[0] if params else ("x", "1"), ("otp", "1")])))
        if draw(st.integers(0, 3)) == 0:
            params.reverse()
        now += draw(st.sampled_from([0, 1, 700, 6000]))
        stream.append((method, path, tuple(params), now))
    return scheme, policy, stream


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(other_scheme_attacks())
def test_remembered_plans_judge_other_schemes_as_a_fresh_policy(attack: tuple) -> None:
    """Kraken (nonce marker), OKX, Bybit and Binance WebSocket keys judge a request of a shape
    their policy planned exactly as a policy that plans nothing: the same signatures (deterministic
    for a fixed clock), refusals and receipts."""
    scheme, policy, stream = attack
    secret = OTHER_SECRETS[scheme]
    remembering_service, remembering = _other_service(scheme, secret, policy)
    fresh_service, fresh = _other_service(scheme, secret, policy)
    for method, path, params, now in stream * 2:
        event = HttpSignRequest(7, "k", method, path, params)
        _forget(fresh)
        answer = _answer(remembering_service, event, now)
        event_stat(f"{scheme} {answer[0]}")
        assert answer == _answer(fresh_service, event, now)
    assert _unchained(_lines(remembering_service)) == _unchained(_lines(fresh_service))
    assert not remembering.shapes  # only a Binance REST key signs by a remembered shape


def _other_service(scheme: str, secret: bytes, policy: dict) -> tuple[EnclaveService, LoadedKey]:
    service = EnclaveService(nsm=None, kms=None, clock=Clock(fixed_ms=NOW))  # type: ignore[arg-type]
    state = PolicyState(SigningPolicy.parse(policy, scheme=scheme))
    signing_key = load_key(scheme, secret, "a" * 40)
    signing_key.apply_policy(policy)
    key = LoadedKey("k", scheme, "a" * 40, "0" * 64, "arn:test", state, signing_key, "k")
    service.keyring.add(key)
    return service, key


# -- over the wire: raw SIGN_HTTP frames to a real enclave, its first answer the long way -------------
import pytest  # noqa: E402
from pytest_zerocopy import factories  # noqa: E402
from raw_host import send_frames  # noqa: E402

# Not marked ``zerocopy`` (as test_attack_review.py): the fixtures start this module's own emulator.
fast_emulator = factories.emulator_proc(scope="module", clock=f"fixed:{NOW}")
fast_signer = factories.signer("fast_emulator", scope="module")
fast_key = factories.key_maker("fast_emulator", "fast_signer", scope="module")

WIRE_VARIANTS = [
    BUY,
    BUY[:4] + (("quantity", "2"),) + BUY[5:],
    BUY[:4] + (("quantity", "6"),) + BUY[5:],  # above the cap
    (("symbol", "ETHUSDT"),) + BUY[1:],  # not listed
    BUY[:4] + (("quantity", "1&quantity=500"),) + BUY[5:],
    BUY[:4] + (("quantity", "1"), ("price", "1%30")),
    (("symbol", "BTC USDT"),) + BUY[1:],
    BUY[::-1],
    BUY + (("timestamp", str(NOW)),),
    BUY + (("timestamp", str(NOW - 60_000)),),
    BUY + (("newClientOrderId", "a:b"),),
]


def _pipelined_sign_http(address: str, key: str, requests: list[tuple[str, str, tuple]]) -> list:
    """``requests`` as SIGN_HTTP frames pipelined on one plain connection, no ``Signer`` involved."""
    return send_frames(address, lambda conn: [
        conn.send_sign_http(number, sign_http_body_with(sign_http_prefix(key.encode(), method.encode(), path.encode()), http_params(params), b""))
        for number, (method, path, params) in enumerate(requests, 1)
    ])  # fmt: skip


def test_raw_frames_of_a_remembered_shape_get_the_first_answers_again(fast_emulator, fast_key) -> None:
    """Each request three times, pipelined: the first answered the long way, the others by the
    shapes it left (no window, a fixed clock, a rate not reached): the same answers, byte for byte,
    and every signature the reference signer's."""
    key = fast_key("binance-hmac", policy={"symbols": ["BTCUSDT"], "max_quantity": "5", "rate": {"per_second": "1", "burst": 1000}})
    answers = _pipelined_sign_http(fast_emulator.address, key.name, [("POST", ORDER, params) for params in WIRE_VARIANTS] * 3)
    seen = [("signed", answer.query) if type(answer) is HttpSignature else ("refused", answer.rule, answer.message) for answer in answers]
    count = len(WIRE_VARIANTS)
    assert seen[:count] == seen[count : 2 * count] == seen[2 * count :]
    for params, answer in zip(WIRE_VARIANTS, seen):
        if answer[0] == "signed":
            assert answer[1] == reference.binance_rest("binance-hmac", bytes(key.secret), key.api_key, params, b"", NOW).query
    assert [answer[:2] for answer in seen[:4]] == [("signed", seen[0][1]), ("signed", seen[1][1]), ("refused", "max_quantity"), ("refused", "symbol")]
