"""Kraken nonces for keys migrated from other clients: the sealed ``[nonce] per_second`` unit, checked
against krakenex's and python-kraken-sdk's own nonce functions (optional test dependencies: those
tests skip when absent), and strictly increasing across a restart of the real enclave."""

from __future__ import annotations

import base64
import json

import pytest

import reference_signers as ref
from enclave.protocol.policy import PolicyError, PolicyState, Refusal, SigningPolicy
from enclave.schemes import SchemeError, load_key
from zerocopy import Signer
from zerocopy.kms_policy import attested_key_policy
from zerocopy.policy import load_policy
from zerocopy.sealing import seal

SECRET = base64.b64encode(bytes(range(64)))
NOW = 1_760_000_000.25  # seconds: late 2025
NOW_MS = int(NOW * 1000)
SDK_UNIT = {"nonce": {"per_second": 100_000_000}}


def _kraken(document: dict | None = None):
    key = load_key("kraken", SECRET, "kraken-public-key")
    key.apply_policy(SigningPolicy.parse(document, scheme="kraken").document or {})
    return key


def _nonce(key, now_ms: int, params=()) -> int:
    body = key.sign_http("POST", "/0/private/Balance", params, b"", now_ms).body.decode()
    name, _, value = body.partition("&")[0].partition("=")
    assert name == "nonce"
    return int(value)


# -- the policy field ---------------------------------------------------------------------------
@pytest.mark.parametrize("per_second", [10**digits for digits in range(3, 10)])
def test_nonce_units_from_milliseconds_to_nanoseconds_are_taken(per_second):
    document = load_policy({"nonce": {"per_second": per_second}})
    assert document["nonce"] == {"per_second": per_second}
    assert _nonce(_kraken(document), NOW_MS) == NOW_MS * per_second // 1000


@pytest.mark.parametrize("per_second", [1, 100, 999, 1500, 10**10, True, 1000.0, "1000", None])
def test_other_nonce_units_are_refused(per_second):
    with pytest.raises(PolicyError, match="nonce.per_second must be a power of ten from 1000"):
        load_policy({"nonce": {"per_second": per_second}})


def test_the_nonce_table_takes_only_per_second():
    with pytest.raises(PolicyError, match="unknown field nonce.floor"):
        load_policy({"nonce": {"per_second": 1000, "floor": 5}})
    with pytest.raises(PolicyError, match="nonce.per_second must be"):
        load_policy({"nonce": {}})


@pytest.mark.parametrize(("scheme", "message"), [
    ("binance-hmac", "'nonce' does not apply to binance-hmac"),
    ("coinbase-jwt", "'nonce' does not apply to coinbase-jwt"),
    ("hmac-sha256", "signs raw payloads only; 'nonce' does not apply"),
])
def test_only_a_scheme_whose_nonce_the_enclave_sets_takes_a_nonce_unit(scheme, message):
    with pytest.raises(PolicyError, match=message):
        SigningPolicy.parse(SDK_UNIT, scheme=scheme)


def test_the_unit_is_sealed_with_the_key():
    from enclave.protocol.bundle import encryption_context

    assert encryption_context("k", "kraken", "AK", load_policy(SDK_UNIT)) != encryption_context("k", "kraken", "AK", None)


# -- the signer ---------------------------------------------------------------------------------
def test_nonces_in_a_finer_unit_still_increase_strictly_within_one_millisecond():
    key = _kraken(SDK_UNIT)
    nonces = [_nonce(key, NOW_MS) for _ in range(3)] + [_nonce(key, NOW_MS + 1)]
    assert nonces == [NOW_MS * 100_000, NOW_MS * 100_000 + 1, NOW_MS * 100_000 + 2, (NOW_MS + 1) * 100_000]


def test_the_request_is_signed_over_the_scaled_nonce():
    key = _kraken(SDK_UNIT)
    params = (("ordertype", "limit"), ("type", "buy"), ("volume", "1.25"), ("pair", "XBTUSD"), ("price", "37500"))
    signed = key.sign_http("POST", "/0/private/AddOrder", params, b"", NOW_MS)
    expected = ref.kraken(SECRET, "kraken-public-key", "/0/private/AddOrder", (("nonce", str(NOW_MS * 100_000)),) + params, NOW_MS)
    assert (signed.query, signed.body, signed.headers) == (expected.query, expected.body, expected.headers)


# -- where the nonce goes: the enclave's value, the caller's place ------------------------------
ORDER = (("ordertype", "limit"), ("type", "buy"), ("volume", "0.01"), ("pair", "XBTUSD"), ("price", "30000"))


def test_an_empty_nonce_marks_where_the_enclave_writes_its_own():
    """krakenex and python-kraken-sdk put the nonce last, ccxt and Kraken's examples first: Kraken
    signs the body bytes, so the enclave writes its nonce where the caller's empty one stands."""
    key = _kraken(SDK_UNIT)
    signed = key.sign_http("POST", "/0/private/AddOrder", ORDER + (("nonce", ""),), b"", NOW_MS)
    expected = ref.kraken(SECRET, "kraken-public-key", "/0/private/AddOrder", ORDER + (("nonce", str(NOW_MS * 100_000)),), 0)
    assert (signed.body, signed.headers) == (expected.body, expected.headers)
    middle = key.sign_http("POST", "/0/private/AddOrder", ORDER[:2] + (("nonce", ""),) + ORDER[2:], b"", NOW_MS).body.decode()
    assert middle.split("&")[2] == f"nonce={NOW_MS * 100_000 + 1}"  # still the enclave's, still increasing
    assert _nonce(key, NOW_MS) == NOW_MS * 100_000 + 2  # no field at all: first


@pytest.mark.parametrize("nonce", ["-1", "1e5", " 1", "x"])
def test_a_nonce_that_is_neither_empty_nor_digits_is_refused(nonce):
    with pytest.raises(SchemeError, match="nonce must be an unsigned decimal integer"):
        _kraken().sign_http("POST", "/0/private/Balance", (("nonce", nonce),), b"", NOW_MS)


def test_the_policy_takes_an_empty_nonce_and_refuses_a_chosen_one():
    policy = PolicyState(SigningPolicy.parse(None, scheme="kraken"))
    assert policy.authorize_request("POST", "/0/private/AddOrder", ORDER + (("nonce", ""),), b"", NOW_MS).kind == "order"
    with pytest.raises(Refusal) as refused:
        policy.authorize_request("POST", "/0/private/AddOrder", ORDER + (("nonce", str(NOW_MS)),), b"", NOW_MS)
    assert refused.value.rule == "freshness"


def test_python_kraken_sdk_nonces_are_above_milliseconds_and_the_unit_continues_above_them(monkeypatch):
    kraken_spot = pytest.importorskip("kraken.spot", reason="python-kraken-sdk is an optional test dependency")
    monkeypatch.setattr("time.time", lambda: NOW)
    theirs = int(kraken_spot.User().get_nonce())
    assert theirs == ref.python_kraken_sdk_nonce(NOW)
    later_ms = NOW_MS + 1
    assert _nonce(_kraken(), later_ms) < theirs  # the problem: Kraken would refuse every one
    assert _nonce(_kraken(SDK_UNIT), later_ms) > theirs


def test_krakenex_counts_milliseconds_as_the_default_unit_does(monkeypatch):
    krakenex = pytest.importorskip("krakenex", reason="krakenex is an optional test dependency")
    monkeypatch.setattr("time.time", lambda: NOW)
    theirs = krakenex.API()._nonce()
    assert theirs == NOW_MS == _nonce(_kraken(), NOW_MS)
    assert _nonce(_kraken(), NOW_MS + 1) > theirs


# -- through the real enclave, across a restart ---------------------------------------------------
@pytest.mark.zerocopy
def test_the_enclave_nonce_increases_across_a_restart(zerocopy_emulator):
    kms_key = zerocopy_emulator.kms.create_key(Policy=json.dumps(attested_key_policy(zerocopy_emulator.account_id, image_sha384=zerocopy_emulator.pcrs[0])))["KeyMetadata"]["Arn"]
    bundle = seal(zerocopy_emulator.kms, key_id=kms_key, name="kraken-migrated", scheme="kraken", secret=SECRET, api_key="kraken-public-key", policy=load_policy(SDK_UNIT))
    nonces = []
    for _boot in range(2):
        with zerocopy_emulator.launch() as enclave, Signer(enclave.address) as signer:
            (loaded,) = signer.provision([bundle.to_json()], credentials=zerocopy_emulator.credentials)
            assert loaded.loaded, loaded.error
            for _ in range(2):
                signed = signer.sign_request("kraken-migrated", "POST", "/0/private/Balance")
                nonce = signed.body.removeprefix("nonce=")
                expected = ref.kraken(SECRET, "kraken-public-key", "/0/private/Balance", (("nonce", nonce),), 0)
                assert dict(signed.headers)["API-Sign"] == dict(expected.headers)["API-Sign"]
                nonces.append(int(nonce))
    assert nonces == sorted(set(nonces))  # strictly increasing, the restart included
    assert nonces[0] > ref.python_kraken_sdk_nonce(NOW)  # in the SDK's unit, above what it sent in 2025
