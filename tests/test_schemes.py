"""Signing schemes, byte for byte as the exchanges document them.

Three layers, as in cryptography's own test suite:

* published vectors (``tests/data/exchange-vectors/*.json``, sources in ``tests/data/PROVENANCE.md``)
  give the exact query, body and headers for each scheme; the independent reference signers in
  ``tests/reference_signers.py`` must reproduce them too;
* hypothesis properties: for generated requests (symbols, sides, decimal quantities as strings,
  timestamps, Unicode where the exchange allows it) every scheme's output equals the reference
  (HMAC, RSA PKCS#1 v1.5 and Ed25519 are deterministic) or, for ECDSA/ES256, verifies with the
  public key and decodes to the documented header and claims;
* negative cases: malformed secrets and requests raise :class:`SchemeError` with messages that
  never contain the secret and no chained exception that could.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pickle
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference_signers as ref
from pytest_zerocopy import factories
from zerocopy import PolicyRefused
from enclave.protocol import signing as schemes
from enclave.protocol.exchange import Exchange, ExchangeError, HeaderRecvWindow, LimitPrice, OrderFields, endpoint
from enclave.protocol.exchanges import ASYMMETRIC_SCHEMES, SCHEME_NAMES, register
from policy_helpers import EXCHANGES, RAW_SCHEMES, SCHEME_EXCHANGES
from enclave.protocol.exchanges.kraken import Kraken
from enclave.schemes import SCHEMES, SchemeError, SignedHttp, generate_key, load_key

VECTORS = Path(__file__).parent / "data" / "exchange-vectors"
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _json_vectors(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8"))["vectors"]


def load_vectors_from_file(name: str, loader: Callable[[Path], Any] = _json_vectors) -> Any:
    return loader(VECTORS / name)


def _all_vectors() -> list[Any]:
    cases = []
    for path in sorted(VECTORS.glob("*.json")):
        for vector in load_vectors_from_file(path.name):
            cases.append(pytest.param(vector, id=f"{path.stem}:{vector['id']}"))
    return cases


ALL_VECTORS = _all_vectors()
DETERMINISTIC_VECTORS = [case for case in ALL_VECTORS if case.values[0]["scheme"] != "coinbase-jwt"]
COINBASE_VECTORS = [case for case in ALL_VECTORS if case.values[0]["scheme"] == "coinbase-jwt"]


def _request(vector: dict) -> tuple[str, str, tuple[tuple[str, str], ...], bytes, int]:
    r = vector["request"]
    return r["method"], r["path"], tuple((name, value) for name, value in r["params"]), r["body"].encode("utf-8"), r["now_ms"]


def _key(vector: dict) -> schemes.SigningKey:
    return load_key(vector["scheme"], vector["secret"].encode("utf-8"), vector["api_key"])


# -- keys used by the properties ---------------------------------------------------------------
RSA_PEM = next(v for v in load_vectors_from_file("binance-rest.json") if v["id"] == "rsa-binance-connector-python")["secret"].encode()
ED25519_PEM = ed25519.Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
P256_PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
HMAC_SECRET = b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
KRAKEN_SECRET = base64.b64encode(bytes(range(64)))
OKX_SECRET = json.dumps({"secret": "22582BD0CFF14C41EDBF1AB98506286D", "passphrase": "Pass phrase-1!"}).encode()
API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
COINBASE_KEY_NAME = "organizations/3f2b7c1e-0000-4000-8000-000000000001/apiKeys/9d4e5f60-0000-4000-8000-000000000002"

VALID_SECRETS: dict[str, bytes] = {
    "hmac-sha256": HMAC_SECRET,
    "hmac-sha512": HMAC_SECRET,
    "ed25519": ED25519_PEM,
    "ecdsa-p256": P256_PEM,
    "rsa-pkcs1v15-sha256": RSA_PEM,
    "binance-hmac": HMAC_SECRET,
    "binance-rsa": RSA_PEM,
    "binance-ed25519": ED25519_PEM,
    "binance-ws-hmac": HMAC_SECRET,
    "bybit-hmac": HMAC_SECRET,
    "bybit-rsa": RSA_PEM,
    "okx-hmac": OKX_SECRET,
    "kraken": KRAKEN_SECRET,
    "coinbase-jwt": P256_PEM,
}
KEYS = {name: load_key(name, secret, COINBASE_KEY_NAME if name == "coinbase-jwt" else API_KEY) for name, secret in VALID_SECRETS.items()}


# -- strategies -------------------------------------------------------------------------------
UNICODE = st.characters(codec="utf-8")
NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,11}", fullmatch=True)
SYMBOLS = st.sampled_from(["BTCUSDT", "ETHBTC", "LTCBTC", "BNBUSDT", "XBTUSD", "BTC-USDT", "１２３４５６"]) | st.text(UNICODE, min_size=1, max_size=10)
SIDES = st.sampled_from(["BUY", "SELL", "Buy", "Sell", "buy", "sell"])
QUANTITIES = st.decimals(min_value=Decimal(0), max_value=Decimal(10) ** 7, places=8, allow_nan=False, allow_infinity=False).map(lambda d: format(d, "f"))
TIMESTAMPS = st.integers(min_value=1_500_000_000_000, max_value=4_102_444_800_000)  # 2017 .. 2100, ms
VALUES = QUANTITIES | SYMBOLS | st.text(UNICODE, max_size=16)
PATHS = st.from_regex(r"(/[A-Za-z0-9_.-]{1,12}){1,4}", fullmatch=True)


@st.composite
def orders(draw: Any, reserved: tuple[str, ...] = (), timestamp: bool = True) -> tuple[tuple[str, str], ...]:
    """Order-like parameters with unique names, in a drawn order."""
    params = [
        ("symbol", draw(SYMBOLS)),
        ("side", draw(SIDES)),
        ("type", draw(st.sampled_from(["LIMIT", "MARKET", "limit"]))),
        ("quantity", draw(QUANTITIES)),
        ("price", draw(QUANTITIES)),
    ]
    taken = {name for name, _ in params} | set(reserved) | {"timestamp", "signature", "nonce", "recv_window"}
    for name, value in draw(st.lists(st.tuples(NAMES, VALUES), max_size=4, unique_by=lambda pair: pair[0])):
        if name not in taken:
            params.append((name, value))
    if timestamp and draw(st.booleans()):
        params.append(("timestamp", str(draw(TIMESTAMPS))))
    return tuple(draw(st.permutations(params)))


def _json_body(params: tuple[tuple[str, str], ...]) -> bytes:
    return json.dumps(dict(params), ensure_ascii=False).encode("utf-8")


def _as_tuple(signed: SignedHttp) -> tuple[str, bytes, tuple[tuple[str, str], ...]]:
    return signed.query, signed.body, signed.headers


def _ref_tuple(signed: ref.Signed) -> tuple[str, bytes, tuple[tuple[str, str], ...]]:
    return signed.query, signed.body, signed.headers


# -- registry -----------------------------------------------------------------------------------
def test_the_registry_implements_exactly_the_protocol_names():
    assert set(SCHEMES) == set(SCHEME_NAMES) and len(SCHEMES) == len(SCHEME_NAMES)
    assert set(SCHEME_NAMES) == {
        "hmac-sha256", "hmac-sha512", "ed25519", "ecdsa-p256", "rsa-pkcs1v15-sha256", "binance-hmac", "binance-rsa", "binance-ed25519",
        "binance-ws-hmac", "bybit-hmac", "bybit-rsa", "okx-hmac", "kraken", "coinbase-jwt",
    }
    for name, kind in SCHEMES.items():
        assert kind.name == name
        assert kind.exchange == (SCHEME_EXCHANGES[name].family if name in SCHEME_EXCHANGES else None)
        assert kind.asymmetric == (name in ASYMMETRIC_SCHEMES) == (kind.key_kind is not None)
    assert set(RAW_SCHEMES) == {name for name, kind in SCHEMES.items() if kind.exchange is None}
    assert {name: exchange.family for name, exchange in SCHEME_EXCHANGES.items()} == {
        "binance-hmac": "binance", "binance-rsa": "binance", "binance-ed25519": "binance", "binance-ws-hmac": "binance",
        "bybit-hmac": "bybit", "bybit-rsa": "bybit", "okx-hmac": "okx", "kraken": "kraken", "coinbase-jwt": "coinbase",
    }
    assert ASYMMETRIC_SCHEMES >= {"binance-rsa", "binance-ed25519", "bybit-rsa", "coinbase-jwt"}
    assert SCHEME_EXCHANGES["binance-ws-hmac"].name == "binance-ws" and SCHEME_EXCHANGES["binance-hmac"].name == "binance"


def test_two_descriptors_claiming_one_name_are_refused_at_registration():
    kraken = EXCHANGES["kraken"]
    with pytest.raises(ExchangeError, match="scheme 'kraken'"):
        register([kraken, Exchange(name="kraken-2", family="kraken", schemes=(Kraken,), endpoints=())])
    with pytest.raises(ExchangeError, match="catalogue name 'kraken'"):
        register([kraken, Exchange(name="kraken", family="kraken", schemes=(), endpoints=())])
    with pytest.raises(ExchangeError, match="names another exchange"):
        Exchange(name="kraken-2", family="binance", schemes=(Kraken,), endpoints=())
    assert set(register(list(EXCHANGES.values()))[1]) == set(SCHEME_NAMES)


MISSPELT_PARAMETERS = [
    pytest.param("bybit", {"borrowing": {"isLeverge": frozenset({"1"})}}, "borrowing names 'isLeverge'", id="borrowing"),
    pytest.param("okx", {"order_fields": OrderFields(symbol="instId", quantity="size", price="px")}, "order_fields.quantity names 'size'", id="order-field"),
    pytest.param("binance", {"order_fields": OrderFields(symbol="symbol", quantity="quantity", new_price="newPrice")}, "order_fields.new_price", id="new-price"),
    pytest.param("kraken", {"limit_price": LimitPrice("orderType", frozenset({"limit"}))}, "limit_price.type_field names 'orderType'", id="limit-type"),
    pytest.param("binance", {"limit_price": LimitPrice("type", frozenset({"LIMIT"}), "pegPrice")}, "limit_price.overridden_by", id="overridden-by"),
    pytest.param("kraken", {"decimal_params": frozenset({"volume", "vol"})}, "decimal_params names 'vol'", id="decimal"),
    pytest.param("coinbase", {"decimal_params": frozenset({"base_size"})}, "decimal_params names 'base_size'", id="no-parameters-catalogued"),
    pytest.param("bybit", {"header_recv_window": HeaderRecvWindow("symbol", int, "5000")}, "header_recv_window.name 'symbol'", id="header-window"),
    pytest.param("kraken", {"endpoints": EXCHANGES["kraken"].endpoints + (
        endpoint("POST", "/0/private/AmendOrder2", "trade", "amend", "nonce", "order_qty", fields=OrderFields(symbol="pair", new_quantity="order_qty")),)},
        "AmendOrder2's order fields name 'pair'", id="endpoint-fields"),
    # Where several endpoints share a signature (Bybit: not the path), one endpoint's own reading would not do.
    pytest.param("bybit", {"endpoints": EXCHANGES["bybit"].endpoints + (
        endpoint("POST", "/v5/order/amend2", "trade", "amend", "category symbol", "qty", fields=OrderFields(new_quantity="qty")),)},
        "does not cover the path", id="endpoint-fields-uncovered"),
]


@pytest.mark.parametrize(("catalogue", "changes", "message"), MISSPELT_PARAMETERS)
def test_a_descriptor_naming_a_parameter_its_catalogue_lacks_is_refused(catalogue, changes, message):
    # A misspelt name would never be found in a request: its rule (borrowing, a size cap) would never apply.
    with pytest.raises(ExchangeError, match=re.escape(message)):
        dataclasses.replace(EXCHANGES[catalogue], **changes)
    assert dataclasses.replace(EXCHANGES[catalogue]).borrowing == EXCHANGES[catalogue].borrowing  # the real one builds


KEY_TYPES = {"ed25519": ed25519.Ed25519PrivateKey, "p256": ec.EllipticCurvePrivateKey, "rsa": rsa.RSAPrivateKey}


@pytest.mark.parametrize("scheme", sorted(ASYMMETRIC_SCHEMES))
def test_generate_key_makes_a_key_the_scheme_loads(scheme):
    pem = generate_key(scheme)
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, KEY_TYPES[SCHEMES[scheme].key_kind])
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert isinstance(key.curve, ec.SECP256R1)
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.key_size == 2048
    loaded = load_key(scheme, pem, COINBASE_KEY_NAME)
    assert loaded.public_key_pem() == key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("scheme", sorted(set(SCHEME_NAMES) - ASYMMETRIC_SCHEMES) + ["nope"])
def test_generate_key_refuses_schemes_without_a_private_key(scheme):
    with pytest.raises(SchemeError, match="not an asymmetric scheme"):
        generate_key(scheme)


def test_unknown_scheme_is_refused_by_name():
    with pytest.raises(SchemeError, match="unknown scheme 'nope'"):
        load_key("nope", b"x", "k")


# -- published vectors ----------------------------------------------------------------------------
@pytest.mark.parametrize("vector", DETERMINISTIC_VECTORS)
def test_vector_exact_query_body_and_headers(vector):
    signed = _key(vector).sign_http(*_request(vector))
    expected = vector["expected"]
    assert signed.query == expected["query"]
    assert signed.body == expected["body"].encode("utf-8")
    assert signed.headers == tuple(tuple(header) for header in expected["headers"])


@pytest.mark.parametrize("vector", DETERMINISTIC_VECTORS)
def test_vector_raw_signature_is_the_primitive_over_the_string_to_sign(vector):
    if vector["scheme"] == "kraken":  # the Kraken string to sign is binary (path + SHA-256 digest)
        method, path, params, _, now_ms = _request(vector)
        message = ref.kraken(vector["secret"].encode(), vector["api_key"], path, params, now_ms).string_to_sign
    else:
        message = vector["string_to_sign"].encode("utf-8")
    raw = _key(vector).sign(message)
    signature = vector["signature"]
    assert raw.hex() == signature or base64.b64encode(raw).decode() == signature


@pytest.mark.parametrize("vector", DETERMINISTIC_VECTORS)
def test_the_reference_signers_reproduce_the_published_vectors(vector):
    method, path, params, body, now_ms = _request(vector)
    secret, api_key, scheme = vector["secret"].encode(), vector["api_key"], vector["scheme"]
    if scheme.startswith("binance-") and scheme != "binance-ws-hmac":
        signed = ref.binance_rest(scheme, secret, api_key, params, body, now_ms)
    elif scheme == "binance-ws-hmac":
        signed = ref.binance_ws(secret, api_key, params, now_ms)
    elif scheme.startswith("bybit-"):
        signed = ref.bybit(scheme, secret, api_key, method, params, body, now_ms)
    elif scheme == "okx-hmac":
        signed = ref.okx(secret, api_key, method, path, params, body, now_ms)
    else:
        signed = ref.kraken(secret, api_key, path, params, now_ms)
    expected = vector["expected"]
    assert _ref_tuple(signed) == (expected["query"], expected["body"].encode(), tuple(tuple(h) for h in expected["headers"]))
    if scheme != "kraken":
        assert signed.string_to_sign == vector["string_to_sign"].encode("utf-8")


@pytest.mark.parametrize("vector", COINBASE_VECTORS)
def test_coinbase_vector_verifies_and_carries_the_documented_claims(vector):
    method, path, params, body, now_ms = _request(vector)
    key = _key(vector)
    signed = key.sign_http(method, path, params, body, now_ms)
    expected = vector["expected"]
    assert signed.query == expected["query"] and signed.body == expected["body"].encode()
    ((name, value),) = signed.headers
    assert name == "Authorization" and value.startswith("Bearer ")
    public = serialization.load_pem_public_key(key.public_key_pem())
    header, claims = ref.coinbase_check(public, vector["api_key"], method, path, now_ms, value.removeprefix("Bearer "))
    assert {k: v for k, v in header.items() if k != "nonce"} == expected["jwt_header"]
    assert len(header["nonce"]) == expected["jwt_nonce_hex_digits"]
    assert claims == expected["jwt_claims"]


def test_coinbase_jwts_differ_per_request_in_nonce_and_signature():
    key = KEYS["coinbase-jwt"]
    first, second = (key.sign_http("GET", "/api/v3/brokerage/accounts", (), b"", 1718000000000).headers[0][1] for _ in range(2))
    assert first != second
    assert first.split(".")[0] != second.split(".")[0]  # the header's nonce


# -- properties: exchange schemes against the reference signers -----------------------------------
@PROPERTY
@given(now_ms=TIMESTAMPS, window=st.sampled_from([None, "1", "5000", "999999"]), scheme=st.sampled_from(["okx-hmac", "bybit-hmac", "bybit-rsa"]))
def test_websocket_logins_match_the_reference(now_ms, window, scheme):
    """OKX's login and Bybit's auth: the whole message to send. Bybit's expires is the clock plus the recv window."""
    if scheme == "okx-hmac":
        signed, expected = KEYS[scheme].sign_http("WS", "login", (), b"", now_ms), ref.okx_ws_login(OKX_SECRET, API_KEY, now_ms)
    else:
        params = (("recv_window", window),) if window else ()
        signed = KEYS[scheme].sign_http("WS", "auth", params, b"", now_ms)
        expected = ref.bybit_ws_auth(scheme, VALID_SECRETS[scheme], API_KEY, now_ms + int(window or "5000"))
    assert json.loads(signed.body) == expected and (signed.query, signed.headers) == ("", ())


@PROPERTY
@given(
    scheme=st.sampled_from(["binance-hmac", "binance-rsa", "binance-ed25519"]),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    params=orders(),
    split=st.integers(min_value=0, max_value=8),
    now_ms=TIMESTAMPS,
)
def test_binance_rest_matches_the_reference(scheme, method, params, split, now_ms):
    query_params, body_params = params[:split], params[split:]
    body = ref.form(body_params).encode("ascii") if method != "GET" and body_params else b""
    if not body:
        query_params = params
    signed = KEYS[scheme].sign_http(method, "/api/v3/order", query_params, body, now_ms)
    expected = ref.binance_rest(scheme, VALID_SECRETS[scheme], API_KEY, query_params, body, now_ms)
    assert _as_tuple(signed) == _ref_tuple(expected)


@PROPERTY
@given(method=st.sampled_from(["order.place", "order.test", "order.cancel", "account.status"]), params=orders(reserved=("apiKey",)), now_ms=TIMESTAMPS)
def test_binance_ws_matches_the_reference(method, params, now_ms):
    signed = KEYS["binance-ws-hmac"].sign_http("WS", method, params, b"", now_ms)
    expected = ref.binance_ws(HMAC_SECRET, API_KEY, params, now_ms)
    assert _as_tuple(signed) == _ref_tuple(expected)
    sent = json.loads(signed.body)
    assert all(isinstance(value, str) for value in sent.values())
    assert sent["apiKey"] == API_KEY and list(sent)[-1] == "signature"


@PROPERTY
@given(
    scheme=st.sampled_from(["bybit-hmac", "bybit-rsa"]),
    method=st.sampled_from(["GET", "POST"]),
    params=orders(timestamp=False),
    recv_window=st.none() | st.integers(min_value=1, max_value=999_999).map(str),
    path=PATHS,
    now_ms=TIMESTAMPS,
)
def test_bybit_matches_the_reference(scheme, method, params, recv_window, path, now_ms):
    window = (("recv_window", recv_window),) if recv_window else ()
    if method == "GET":
        request_params, body = params + window, b""
    else:
        request_params, body = window, _json_body(params)
    signed = KEYS[scheme].sign_http(method, path, request_params, body, now_ms)
    expected = ref.bybit(scheme, VALID_SECRETS[scheme], API_KEY, method, request_params, body, now_ms)
    assert _as_tuple(signed) == _ref_tuple(expected)
    assert dict(signed.headers)["X-BAPI-RECV-WINDOW"] == (recv_window or "5000")
    assert "recv_window" not in signed.query


@PROPERTY
@given(
    secret=st.text(UNICODE, min_size=1, max_size=40),
    passphrase=st.from_regex(r"[!-~]([ -~]{0,20}[!-~])?", fullmatch=True),
    method=st.sampled_from(["GET", "POST"]),
    params=orders(timestamp=False),
    path=PATHS,
    now_ms=st.integers(min_value=0, max_value=schemes.MAX_NOW_MS - 1),
)
def test_okx_matches_the_reference(secret, passphrase, method, params, path, now_ms):
    document = json.dumps({"passphrase": passphrase, "secret": secret}, ensure_ascii=bool(now_ms % 2)).encode("utf-8")
    key = load_key("okx-hmac", document, API_KEY)
    request_params, body = (params, b"") if method == "GET" else ((), _json_body(params))
    signed = key.sign_http(method, path, request_params, body, now_ms)
    expected = ref.okx(document, API_KEY, method, path, request_params, body, now_ms)
    assert _as_tuple(signed) == _ref_tuple(expected)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", dict(signed.headers)["OK-ACCESS-TIMESTAMP"])


@PROPERTY
@given(params=orders(timestamp=False), nonce=st.none() | TIMESTAMPS.map(str), path=st.from_regex(r"/0/private/[A-Za-z]{1,16}", fullmatch=True), now_ms=TIMESTAMPS)
def test_kraken_matches_the_reference(params, nonce, path, now_ms):
    key = load_key("kraken", KRAKEN_SECRET, "kraken-public-key")  # fresh key: its first own nonce is now_ms
    if nonce is not None:
        params = (("nonce", nonce),) + params
    signed = key.sign_http("POST", path, params, b"", now_ms)
    expected = ref.kraken(KRAKEN_SECRET, "kraken-public-key", path, params, now_ms)
    assert _as_tuple(signed) == _ref_tuple(expected)


@PROPERTY
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.from_regex(r"/api/v3/brokerage(/[A-Za-z0-9_-]{1,12}){0,3}", fullmatch=True),
    params=orders(timestamp=False),
    with_body=st.booleans(),
    now_ms=TIMESTAMPS,
)
def test_coinbase_jwt_verifies_and_decodes_to_the_documented_claims(method, path, params, with_body, now_ms):
    key = KEYS["coinbase-jwt"]
    body = _json_body(params) if with_body else b""
    query_params = () if with_body else params
    signed = key.sign_http(method, path, query_params, body, now_ms)
    assert signed.query == ref.form(query_params) and signed.body == body
    ((name, value),) = signed.headers
    assert name == "Authorization"
    public = serialization.load_pem_public_key(key.public_key_pem())
    ref.coinbase_check(public, COINBASE_KEY_NAME, method, path, now_ms, value.removeprefix("Bearer "))


# -- properties: raw primitives -----------------------------------------------------------------
RAW_REFERENCE: dict[str, Callable[[bytes], bytes]] = {
    "hmac-sha256": lambda m: ref.hmac_sha256(HMAC_SECRET, m),
    "hmac-sha512": lambda m: ref.hmac_sha512(HMAC_SECRET, m),
    "ed25519": lambda m: ref.ed25519_sign(ED25519_PEM, m),
    "rsa-pkcs1v15-sha256": lambda m: ref.rsa_pkcs1v15_sha256(RSA_PEM, m),
    "binance-hmac": lambda m: ref.hmac_sha256(HMAC_SECRET, m),
    "binance-rsa": lambda m: ref.rsa_pkcs1v15_sha256(RSA_PEM, m),
    "binance-ed25519": lambda m: ref.ed25519_sign(ED25519_PEM, m),
    "binance-ws-hmac": lambda m: ref.hmac_sha256(HMAC_SECRET, m),
    "bybit-hmac": lambda m: ref.hmac_sha256(HMAC_SECRET, m),
    "bybit-rsa": lambda m: ref.rsa_pkcs1v15_sha256(RSA_PEM, m),
    "okx-hmac": lambda m: ref.hmac_sha256(b"22582BD0CFF14C41EDBF1AB98506286D", m),
    "kraken": lambda m: ref.hmac_sha512(bytes(range(64)), m),
}


@PROPERTY
@given(scheme=st.sampled_from(sorted(RAW_REFERENCE)), payload=st.binary(max_size=512))
def test_deterministic_raw_signatures_match_the_reference(scheme, payload):
    assert KEYS[scheme].sign(payload) == RAW_REFERENCE[scheme](payload)


@PROPERTY
@given(payload=st.binary(max_size=512))
def test_ecdsa_signatures_verify_der_and_raw(payload):
    public = ref.private_key(P256_PEM).public_key()
    public.verify(KEYS["ecdsa-p256"].sign(payload), payload, ec.ECDSA(hashes.SHA256()))
    raw = KEYS["coinbase-jwt"].sign(payload)
    assert len(raw) == 64
    der = ref.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, payload, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(der, payload + b"!", ec.ECDSA(hashes.SHA256()))


def test_rsa_signature_verifies_with_the_public_key():
    public = serialization.load_pem_public_key(KEYS["bybit-rsa"].public_key_pem())
    public.verify(KEYS["bybit-rsa"].sign(b"payload"), b"payload", padding.PKCS1v15(), hashes.SHA256())


# -- request rules --------------------------------------------------------------------------------
ORDER = (("symbol", "BTCUSDT"), ("side", "BUY"), ("quantity", "1"))


@pytest.mark.parametrize(
    ("scheme", "method", "path", "params", "body", "message"),
    [
        ("binance-hmac", "GET", "/api/v3/order", ORDER + (("side", "SELL"),), b"", "appears more than once"),
        ("binance-hmac", "POST", "/api/v3/order", ORDER, b"side=SELL", "both in the query and in the body"),
        ("binance-hmac", "GET", "/api/v3/order", ORDER + (("signature", "00"),), b"", "sets 'signature' itself"),
        ("binance-hmac", "POST", "/api/v3/order", (), b"symbol=X&signature=00", "sets 'signature' itself"),
        ("binance-rsa", "POST", "/api/v3/order", (), "symbol=１２３".encode(), "ASCII"),
        ("binance-ed25519", "POST", "/api/v3/order", (), b"symbol=X&&side=BUY", "empty field name"),
        ("binance-hmac", "PATCH", "/api/v3/order", ORDER, b"", "method must be"),
        ("binance-rsa", "GET", "/api/v3/order", ORDER, b"price=1", "GET request has no body"),
        ("binance-hmac", "GET", "/api/v3/order?symbol=X", (), b"", "path must be"),
        ("binance-hmac", "GET", "api/v3/order", (), b"", "path must be"),
        ("binance-hmac", "GET", "/api/v3/order", (("", "x"),), b"", "name is empty"),
        ("binance-hmac", "GET", "/api/v3/order", (("symbol", "\ud800"),), b"", "valid Unicode"),
        ("binance-ws-hmac", "GET", "order.place", ORDER, b"", "method must be 'WS'"),
        ("binance-ws-hmac", "WS", "/order.place", ORDER, b"", "WebSocket API method name"),
        ("binance-ws-hmac", "WS", "order.place", ORDER + (("apiKey", "other"),), b"", "sets 'apiKey' itself"),
        ("binance-ws-hmac", "WS", "order.place", ORDER, b"{}", "pass the request params as params"),
        ("bybit-hmac", "POST", "/v5/order/create", ORDER, b"{}", "POST parameters go in the JSON body"),
        ("bybit-rsa", "GET", "/v5/order/realtime", ORDER, b"x", "GET request has no body"),
        ("bybit-hmac", "GET", "/v5/order/realtime", (("recv_window", "0"),), b"", "recv_window must be"),
        ("bybit-hmac", "GET", "/v5/order/realtime", (("recv_window", "5000000"),), b"", "recv_window must be"),
        ("bybit-hmac", "DELETE", "/v5/order/realtime", (), b"", "method must be"),
        ("okx-hmac", "GET", "/api/v5/account/balance", (), b"{}", "GET request has no body"),
        ("okx-hmac", "POST", "/api/v5/trade/order", ORDER, b"{}", "POST parameters go in the JSON body"),
        ("okx-hmac", "WS", "/users/self/verify", (), b"", "'login', without params or body"),
        ("okx-hmac", "WS", "login", (("x", "1"),), b"", "'login', without params or body"),
        ("bybit-hmac", "WS", "auth", (("x", "1"),), b"", "'auth', without params or body"),
        ("bybit-rsa", "WS", "/realtime", (), b"", "'auth', without params or body"),
        ("bybit-hmac", "WS", "auth", (), b"{}", "'auth', without params or body"),
        ("kraken", "GET", "/0/private/Balance", (), b"", "method must be POST"),
        ("kraken", "POST", "/0/public/Time", (), b"", "starting with '/0/private/'"),
        ("kraken", "POST", "/0/private/AddOrder", (), b"nonce=1", "pass the POST fields as params"),
        ("kraken", "POST", "/0/private/AddOrder", (("nonce", "12a"),), b"", "unsigned decimal integer"),
        ("coinbase-jwt", "PATCH", "/api/v3/brokerage/orders", (), b"", "method must be"),
        ("hmac-sha256", "GET", "/", (), b"", "signs raw payloads only"),
        ("ecdsa-p256", "GET", "/", (), b"", "signs raw payloads only"),
    ],
)
def test_requests_the_schemes_refuse(scheme, method, path, params, body, message):
    with pytest.raises(SchemeError, match=re.escape(message)):
        KEYS[scheme].sign_http(method, path, params, body, 1_700_000_000_000)


@pytest.mark.parametrize("now_ms", [-1, schemes.MAX_NOW_MS, 1.5e12, True])
def test_clock_readings_out_of_range_are_refused(now_ms):
    with pytest.raises(SchemeError, match="clock"):
        KEYS["okx-hmac"].sign_http("GET", "/api/v5/account/balance", (), b"", now_ms)


def test_binance_timestamp_goes_into_the_body_when_there_is_one():
    signed = KEYS["binance-hmac"].sign_http("POST", "/api/v3/order", (("symbol", "BTCUSDT"),), b"side=BUY", 1_700_000_000_123)
    assert signed.query == "symbol=BTCUSDT"
    assert signed.body.startswith(b"side=BUY&timestamp=1700000000123&signature=")


def test_kraken_enclave_nonces_increase_strictly_per_key():
    key = load_key("kraken", KRAKEN_SECRET, "kraken-public-key")
    nonces = [key.sign_http("POST", "/0/private/Balance", (), b"", 1_700_000_000_000).body for _ in range(3)]
    assert nonces == [b"nonce=1700000000000", b"nonce=1700000000001", b"nonce=1700000000002"]
    key.sign_http("POST", "/0/private/Balance", (("nonce", "1800000000000"),), b"", 1_700_000_000_000)
    assert key.sign_http("POST", "/0/private/Balance", (), b"", 1_700_000_000_000).body == b"nonce=1800000000001"


def test_okx_timestamp_format_at_the_epoch_and_far_ahead():
    assert schemes.iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert schemes.iso_ms(1607418537715) == "2020-12-08T09:08:57.715Z"
    assert schemes.iso_ms(schemes.MAX_NOW_MS - 1) == "9999-12-31T23:59:59.999Z"


# -- secrets stay secret --------------------------------------------------------------------------
OTHER_RSA_1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
P384_PEM = ec.generate_private_key(ec.SECP384R1()).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
ENCRYPTED_PEM = ed25519.Ed25519PrivateKey.generate().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw-Zq81")
)
OKX_SECRET_TEXT = "S3CR3T-0F-0KX-5b2c"
OKX_PASSPHRASE_TEXT = "PA55-Phrase-7y"

BAD_SECRETS = [
    # (scheme, secret, message fragment)
    ("binance-rsa", ED25519_PEM, "not of the right type"),
    ("bybit-rsa", P256_PEM, "not of the right type"),
    ("bybit-rsa", OTHER_RSA_1024, "at least 2048 bits"),
    ("binance-ed25519", RSA_PEM, "not of the right type"),
    ("coinbase-jwt", RSA_PEM, "not of the right type"),
    ("coinbase-jwt", P384_PEM, "curve P-256"),
    ("coinbase-jwt", ENCRYPTED_PEM, "unencrypted PEM private key"),
    ("coinbase-jwt", HMAC_SECRET, "unencrypted PEM private key"),
    ("binance-ed25519", ED25519_PEM.replace(b"MC4CAQAw", b"MC4CAQAx"), "unencrypted PEM private key"),
    ("rsa-pkcs1v15-sha256", b"-----BEGIN PRIVATE KEY-----\nTOPSECRETnotbase64!!\n-----END PRIVATE KEY-----\n", "unencrypted PEM private key"),
    ("kraken", b"not base64 at all: TOPSECRET!", "base64 private key"),
    ("kraken", b"TOPSECRETab", "base64 private key"),
    ("kraken", b"TOPSECRET-_a==", "base64 private key"),
    ("kraken", b"   \n", "base64 private key"),
    ("okx-hmac", OKX_SECRET_TEXT.encode(), "UTF-8 JSON"),
    ("okx-hmac", f'{{"secret": "{OKX_SECRET_TEXT}", "passphrase": "{OKX_PASSPHRASE_TEXT}"'.encode(), "UTF-8 JSON"),
    ("okx-hmac", f'{{"secret": "{OKX_SECRET_TEXT}"}}'.encode(), "UTF-8 JSON"),
    ("okx-hmac", f'{{"secret": "{OKX_SECRET_TEXT}", "passphrase": "{OKX_PASSPHRASE_TEXT}", "x": 1}}'.encode(), "UTF-8 JSON"),
    ("okx-hmac", f'{{"secret": "{OKX_SECRET_TEXT}", "secret": "{OKX_SECRET_TEXT}", "passphrase": "{OKX_PASSPHRASE_TEXT}"}}'.encode(), "UTF-8 JSON"),
    ("okx-hmac", f'{{"secret": "", "passphrase": "{OKX_PASSPHRASE_TEXT}"}}'.encode(), "UTF-8 JSON"),
    ("okx-hmac", f'{{"secret": "{OKX_SECRET_TEXT}", "passphrase": ""}}'.encode(), "UTF-8 JSON"),
    ("okx-hmac", f'{{"secret": "{OKX_SECRET_TEXT}", "passphrase": "{OKX_PASSPHRASE_TEXT}\\r\\nX-Evil: 1"}}'.encode(), "UTF-8 JSON"),
    ("okx-hmac", f'{{"secret": 12345, "passphrase": "{OKX_PASSPHRASE_TEXT}"}}'.encode(), "UTF-8 JSON"),
    ("okx-hmac", f'["{OKX_SECRET_TEXT}", "{OKX_PASSPHRASE_TEXT}"]'.encode(), "UTF-8 JSON"),
    ("okx-hmac", f'{{"secret": "{OKX_SECRET_TEXT}\\ud800", "passphrase": "{OKX_PASSPHRASE_TEXT}"}}'.encode(), "UTF-8 JSON"),
    ("okx-hmac", b"\xff\xfe" + OKX_SECRET_TEXT.encode(), "UTF-8 JSON"),
    ("okx-hmac", b"[" * 10_000 + OKX_SECRET_TEXT.encode(), "UTF-8 JSON"),
] + [(scheme, b"", "1 to 16384 bytes") for scheme in sorted(SCHEME_NAMES)]


def _fragments(secret: bytes) -> list[str]:
    """Recognisable pieces of a secret: its distinctive markers, and 12-character runs of a PEM's base64."""
    text = secret.decode("utf-8", "replace")
    pieces = [marker for marker in ("TOPSECRET", OKX_SECRET_TEXT, OKX_PASSPHRASE_TEXT) if marker in text]
    if text.startswith("-----BEGIN"):
        body = "".join(line for line in text.splitlines() if not line.startswith("-----"))
        pieces += [body[i : i + 12] for i in range(0, max(len(body) - 12, 0), 12)]
    elif text and not pieces:
        pieces.append(text)
    return pieces


@pytest.mark.parametrize(("scheme", "secret", "fragment"), BAD_SECRETS)
def test_bad_secrets_raise_scheme_error_without_the_secret(scheme, secret, fragment):
    with pytest.raises(SchemeError) as caught:
        load_key(scheme, secret, COINBASE_KEY_NAME)
    error = caught.value
    assert fragment in str(error)
    assert str(error).startswith(f"{scheme}:")
    assert error.__cause__ is None and error.__context__ is None  # nothing chained that could quote the secret
    for piece in _fragments(secret):
        assert piece not in str(error) and piece not in repr(error)


OKX_UNREADABLE = [
    pytest.param("with_passphrase", b"\xff\xfe" + OKX_SECRET_TEXT.encode(), id="with_passphrase-not-utf8"),
    pytest.param("passphrase_of", b"\xff\xfe" + OKX_SECRET_TEXT.encode(), id="passphrase_of-not-utf8"),
    pytest.param("passphrase_of", f"secret={OKX_SECRET_TEXT} passphrase={OKX_PASSPHRASE_TEXT}".encode(), id="passphrase_of-not-json"),
    pytest.param("passphrase_of", f'{{"secret": "{OKX_SECRET_TEXT}", "passphrase": "{OKX_PASSPHRASE_TEXT}"'.encode(), id="passphrase_of-truncated"),
    pytest.param("passphrase_of", f'["{OKX_SECRET_TEXT}", "{OKX_PASSPHRASE_TEXT}"]'.encode(), id="passphrase_of-not-an-object"),
]


@pytest.mark.parametrize(("method", "secret"), OKX_UNREADABLE)
def test_okx_secret_helpers_raise_scheme_error_without_the_secret(method, secret):
    # UnicodeDecodeError.object and JSONDecodeError.doc are the whole secret: nothing may carry one.
    with pytest.raises(SchemeError) as caught:
        getattr(SCHEMES["okx-hmac"], method)(secret, *([OKX_PASSPHRASE_TEXT] if method == "with_passphrase" else []))
    error = caught.value
    assert error.__cause__ is None and error.__context__ is None
    shown = " ".join([str(error), repr(error), repr(error.args), repr(vars(error))])
    for piece in (OKX_SECRET_TEXT, OKX_PASSPHRASE_TEXT, secret.decode("utf-8", "replace"), repr(secret)):
        assert piece not in shown


@pytest.mark.parametrize("api_key", ["", "has space", "line\r\nX-Injected: 1", "ключ", "x" * 257])
def test_exchange_api_keys_must_be_header_safe(api_key):
    with pytest.raises(SchemeError, match="API key must be"):
        load_key("binance-hmac", HMAC_SECRET, api_key)
    load_key("hmac-sha256", HMAC_SECRET, api_key)  # raw schemes send no header: any string


@pytest.mark.parametrize("scheme", sorted(SCHEME_NAMES))
def test_repr_and_pickling_never_show_the_secret(scheme):
    key = KEYS[scheme]
    secret = VALID_SECRETS[scheme]
    for text in (repr(key), str(key)):
        assert scheme in text and "hidden" in text
        for piece in _fragments(secret) + ["22582BD0CFF14C41", "Pass phrase-1!"]:
            assert piece not in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)


def test_okx_passphrase_is_sent_only_in_its_header():
    signed = KEYS["okx-hmac"].sign_http("GET", "/api/v5/account/balance", (("ccy", "BTC"),), b"", 1607418537715)
    assert dict(signed.headers)["OK-ACCESS-PASSPHRASE"] == "Pass phrase-1!"
    assert "22582BD0CFF14C41EDBF1AB98506286D" not in repr(signed)


# -- the official non-ASCII vectors, end to end on the emulator -------------------------------------
NON_ASCII_VECTORS = [case for case in ALL_VECTORS if case.values[0]["id"] == "hmac-non-ascii-symbol"]
# An enclave of this module's own: the session's holds as many keys as an enclave will by then.
vectors_emulator = factories.emulator_proc(scope="module")
vectors_signer = factories.signer("vectors_emulator", scope="module")
vectors_key = factories.key_maker("vectors_emulator", "vectors_signer", scope="module")


@pytest.mark.zerocopy
@pytest.mark.parametrize("vector", NON_ASCII_VECTORS)
def test_the_official_non_ascii_vectors_sign_byte_identically_through_the_enclave(vector, vectors_key, vectors_signer):
    # A policy listing the symbol; the examples' timestamps are from 2017 and 2022, so freshness is off.
    policy = 'symbols = ["１２３４５６"]\n[freshness]\nenabled = false\n'
    key = vectors_key(vector["scheme"], secret=vector["secret"].encode(), api_key=vector["api_key"], policy=policy)
    method, path, params, body, _ = _request(vector)
    signed = vectors_signer.sign_request(key.name, method, path, params=list(params), body=body)
    expected = vector["expected"]
    assert (signed.query, signed.body) == (expected["query"], expected["body"].encode("utf-8"))
    assert vector["signature"] in (expected["query"] + expected["body"])
    listing_ascii = vectors_key(vector["scheme"], secret=vector["secret"].encode(), api_key=vector["api_key"], policy=policy.replace("１２３４５６", "123456"))
    with pytest.raises(PolicyRefused) as refused:  # full-width digits are not ASCII 123456
        vectors_signer.sign_request(listing_ascii.name, method, path, params=list(params), body=body)
    assert refused.value.rule == "symbol"


@PROPERTY
@given(
    scheme=st.sampled_from(["hmac-sha256", "hmac-sha512", "binance-hmac", "bybit-hmac"]),
    # around the block sizes (64, 128): a longer key is hashed first, a shorter one padded
    secret=st.integers(1, 300).flatmap(lambda size: st.binary(min_size=size, max_size=size)),
    payload=st.binary(max_size=3000),
)
def test_hmac_from_the_precomputed_pads_is_the_standard_hmac(scheme: str, secret: bytes, payload: bytes) -> None:
    """The HMAC schemes sign from inner and outer hash states made at load (RFC 2104): the same
    bytes as ``hmac.digest`` for every key length, and a second signature is the same as the first."""
    import hmac

    key = load_key(scheme, secret, "" if scheme.startswith("hmac") else API_KEY)
    digest = "sha512" if scheme == "hmac-sha512" else "sha256"
    assert key.sign(payload) == hmac.digest(secret, payload, digest) == key.sign(payload)
