"""Coinbase Ed25519 (EdDSA) JWT keys, in both forms Coinbase hands them out, against the official
SDK (coinbase-advanced-py, an optional test dependency: those tests skip when it is absent) and
against an independent verifier (``reference_signers.coinbase_eddsa_check``)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

import reference_signers as ref
from enclave.protocol.exchanges.coinbase import CoinbaseJwt
from enclave.schemes import SchemeError, load_key
from pytest_zerocopy.keys import make_secret

KEY_NAME = "organizations/3f2b7c1e-0000-4000-8000-000000000001/apiKeys/9d4e5f60-0000-4000-8000-000000000002"
NOW_MS = 1_718_000_000_123
PINNED_NONCE = "5e" * 32
ED25519_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SEED = ED25519_KEY.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
PUBLIC_RAW = ED25519_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
PORTAL_FORM = base64.b64encode(SEED + PUBLIC_RAW)  # as Coinbase's portal shows it: seed, then public key
PKCS8_PEM = ED25519_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
P256_PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
FORMS = {"portal-base64": PORTAL_FORM, "portal-base64-with-newline": PORTAL_FORM + b"\n", "bare-seed": base64.b64encode(SEED), "pkcs8-pem": PKCS8_PEM}


@pytest.fixture
def pinned(monkeypatch):
    """The clock and the JWT nonce pinned, for the SDK and the enclave's signer alike."""
    monkeypatch.setattr("time.time", lambda: NOW_MS / 1000)
    monkeypatch.setattr("secrets.token_hex", lambda nbytes=None: PINNED_NONCE)


def _token(key, method="GET", path="/api/v3/brokerage/accounts", now_ms=NOW_MS) -> str:
    ((name, value),) = key.sign_http(method, path, (), b"", now_ms).headers
    assert name == "Authorization"
    return value.removeprefix("Bearer ")


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_ed25519_form_signs_an_eddsa_jwt_that_verifies(form):
    key = load_key("coinbase-jwt", FORMS[form], KEY_NAME)
    header, claims = ref.coinbase_eddsa_check(ED25519_KEY.public_key(), KEY_NAME, "POST", "/api/v3/brokerage/orders", NOW_MS, _token(key, "POST", "/api/v3/brokerage/orders"))
    assert header["alg"] == "EdDSA" and claims["nbf"] == NOW_MS // 1000
    assert serialization.load_pem_public_key(key.public_key_pem()).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == PUBLIC_RAW


def test_the_raw_primitive_is_the_64_byte_ed25519_signature():
    key = load_key("coinbase-jwt", PORTAL_FORM, KEY_NAME)
    assert key.sign(b"payload") == ED25519_KEY.sign(b"payload")  # Ed25519 is deterministic


def test_both_forms_of_one_key_sign_the_same_token(pinned):
    tokens = {form: _token(load_key("coinbase-jwt", secret, KEY_NAME)) for form, secret in FORMS.items()}
    assert len(set(tokens.values())) == 1


def test_p256_keys_still_sign_es256(pinned):
    key = load_key("coinbase-jwt", P256_PEM, KEY_NAME)
    public = serialization.load_pem_private_key(P256_PEM, None).public_key()
    header, _ = ref.coinbase_check(public, KEY_NAME, "GET", "/api/v3/brokerage/accounts", NOW_MS, _token(key))
    assert header["alg"] == "ES256"


@pytest.mark.parametrize("form", sorted(FORMS))
def test_ed25519_tokens_are_byte_identical_to_the_official_sdks(form, pinned):
    jwt_generator = pytest.importorskip("coinbase.jwt_generator", reason="coinbase-advanced-py is an optional test dependency")
    uri = jwt_generator.format_jwt_uri("GET", "/api/v3/brokerage/accounts")
    theirs = jwt_generator.build_rest_jwt(uri, KEY_NAME, FORMS[form].decode())
    assert _token(load_key("coinbase-jwt", FORMS[form], KEY_NAME)) == theirs  # header, claims and signature


def test_es256_header_and_claims_are_byte_identical_to_the_official_sdks(pinned):
    jwt_generator = pytest.importorskip("coinbase.jwt_generator", reason="coinbase-advanced-py is an optional test dependency")
    uri = jwt_generator.format_jwt_uri("DELETE", "/api/v3/brokerage/orders")
    theirs = jwt_generator.build_rest_jwt(uri, KEY_NAME, P256_PEM.decode())
    ours = _token(load_key("coinbase-jwt", P256_PEM, KEY_NAME), "DELETE", "/api/v3/brokerage/orders")
    assert ours.rsplit(".", 1)[0] == theirs.rsplit(".", 1)[0]  # ECDSA signatures are randomized


SECRET_MARKER = PORTAL_FORM.decode()[:16]
BAD_ED25519 = [
    pytest.param(base64.b64encode(SEED + bytes(32)), "not the public key", id="wrong-public-half"),
    pytest.param(base64.b64encode(SEED + PUBLIC_RAW[:16]), "base64 Ed25519 key Coinbase shows", id="48-bytes"),
    pytest.param(PORTAL_FORM[:-2] + b"!!", "base64 Ed25519 key Coinbase shows", id="not-base64"),
    pytest.param(PORTAL_FORM.replace(b"+", b"-").replace(b"/", b"_") + b"A", "base64 Ed25519 key Coinbase shows", id="urlsafe-alphabet"),
]


@pytest.mark.parametrize(("secret", "fragment"), BAD_ED25519)
def test_damaged_ed25519_keys_are_refused_without_showing_them(secret, fragment):
    with pytest.raises(SchemeError) as caught:
        load_key("coinbase-jwt", secret, KEY_NAME)
    error = caught.value
    assert fragment in str(error) and str(error).startswith("coinbase-jwt:")
    assert error.__cause__ is None and error.__context__ is None
    shown = " ".join([str(error), repr(error), repr(error.args)])
    for piece in (secret.decode("ascii", "replace")[:16], SECRET_MARKER, SEED.hex(), base64.b64encode(SEED).decode()[:16]):
        assert piece not in shown


def test_an_ed25519_key_never_shows_in_its_repr():
    key = load_key("coinbase-jwt", PORTAL_FORM, KEY_NAME)
    assert SECRET_MARKER not in repr(key) and SEED.hex() not in repr(key) and "hidden" in repr(key)


def test_the_key_factory_offers_both_key_types():
    portal = make_secret("coinbase-jwt", key_kind="ed25519")
    assert len(base64.b64decode(portal, validate=True)) == 64
    assert isinstance(serialization.load_pem_private_key(make_secret("coinbase-jwt"), None), ec.EllipticCurvePrivateKey)
    assert isinstance(serialization.load_pem_private_key(make_secret("coinbase-jwt", key_kind="p256"), None), ec.EllipticCurvePrivateKey)
    load_key("coinbase-jwt", portal, KEY_NAME)
    with pytest.raises(ValueError, match="key_kind 'rsa' is not one coinbase-jwt offers"):
        make_secret("coinbase-jwt", key_kind="rsa")
    with pytest.raises(ValueError, match="binance-hmac offers"):
        make_secret("binance-hmac", key_kind="ed25519")
    with pytest.raises(SchemeError, match="key_kind must be one of"):
        CoinbaseJwt.fresh_secret(key_kind="rsa")


@pytest.mark.zerocopy
def test_the_enclave_signs_with_a_sealed_portal_form_key(zerocopy_key, zerocopy_signer):
    key = zerocopy_key("coinbase-jwt", secret=make_secret("coinbase-jwt", key_kind="ed25519"), api_key=KEY_NAME)
    signed = zerocopy_signer.sign_request(key.name, "GET", "/api/v3/brokerage/accounts")
    token = signed.headers["Authorization"].removeprefix("Bearer ")
    public = serialization.load_pem_public_key(key.public_key)
    header, claims = ref.coinbase_eddsa_check(public, KEY_NAME, "GET", "/api/v3/brokerage/accounts", claims_now_ms(token), token)
    assert header["kid"] == claims["sub"] == KEY_NAME


def claims_now_ms(token: str) -> int:
    return json.loads(ref.b64url_decode(token.split(".")[1]))["nbf"] * 1000
