"""Sealed bundles (enclave.protocol.bundle): the JSON format, its strict parser and the derived
KMS encryption context. Bundles are built directly; no KMS is involved."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.protocol.bundle import (
    FORMAT,
    MAX_BUNDLE_SIZE,
    MAX_POLICY_SIZE,
    BundleError,
    SealedBundle,
    associated_data,
    canonical_json,
    check_name,
    encryption_context,
    policy_digest,
)

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

POLICY = {"symbols": ["BTCUSDT", "ETHUSDT"], "max_notional": "1000.50", "endpoints": {"withdraw": False}, "rate": 10}
FIELDS = [
    "format",
    "name",
    "scheme",
    "api_key",
    "policy",
    "kms_key_id",
    "encrypted_data_key",
    "nonce",
    "ciphertext",
    "encryption_context",
]
BASE64_FIELDS = ["encrypted_data_key", "nonce", "ciphertext"]


def make(**overrides: Any) -> SealedBundle:
    fields: dict[str, Any] = {
        "name": "binance-main",
        "scheme": "binance-hmac",
        "api_key": "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
        "policy": POLICY,
        "kms_key_id": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "encrypted_data_key": bytes(range(184)),
        "nonce": b"\x07" * 12,
        "ciphertext": b"\xaa" * 64 + b"\x10" * 16,
    }
    fields.update(overrides)
    return SealedBundle(**fields)


BUNDLE = make()
DOCUMENT = json.loads(BUNDLE.to_json())


def edited(**changes: Any) -> bytes:
    document = json.loads(BUNDLE.to_json())
    document.update(changes)
    return json.dumps(document).encode()


def refused(data: bytes | str, *words: str) -> BundleError:
    with pytest.raises(BundleError) as info:
        SealedBundle.from_json(data)
    for word in words:
        assert word in str(info.value)
    return info.value


# -- round trip and format --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bundle",
    [
        BUNDLE,
        make(policy=None),
        make(policy={}),
        make(api_key=""),
        make(name="a", scheme="x", kms_key_id="alias/zerocopy"),
        make(name="A" + "b" * 63, scheme="s" * 32, api_key="~" * 256),
        make(policy={"note": "ünïcödé ✓", "nested": [[{"k": None}]], "big": 2**70}),
        make(encrypted_data_key=b"\x01", ciphertext=b"\x00" * 17),
        make(encrypted_data_key=b"\x01" * 4096, ciphertext=b"\x00" * (64 * 1024)),
    ],
    ids=["full", "no-policy", "empty-policy", "empty-api-key", "shortest", "longest-names", "unicode-policy", "smallest", "largest"],
)
def test_round_trip(bundle):
    data = bundle.to_json()
    assert SealedBundle.from_json(data) == bundle
    assert SealedBundle.from_json(data.decode()) == bundle
    assert data.endswith(b"\n")


def test_json_shape():
    assert list(DOCUMENT) == FIELDS
    assert DOCUMENT["format"] == FORMAT == "zerocopy-sealed-v1"
    assert base64.b64decode(DOCUMENT["nonce"]) == BUNDLE.nonce
    assert DOCUMENT["encryption_context"] == BUNDLE.encryption_context()


# -- encryption context --------------------------------------------------------------------------
def test_encryption_context_is_derived_from_the_fields():
    assert BUNDLE.encryption_context() == {
        "zerocopy:format": "1",
        "zerocopy:name": "binance-main",
        "zerocopy:scheme": "binance-hmac",
        "zerocopy:api-key": BUNDLE.api_key,
        "zerocopy:policy-sha256": policy_digest(POLICY),
    }
    assert BUNDLE.encryption_context() == encryption_context(BUNDLE.name, BUNDLE.scheme, BUNDLE.api_key, BUNDLE.policy)
    assert BUNDLE.policy_sha256 == policy_digest(POLICY)


@pytest.mark.parametrize(
    "change",
    [
        {"name": "binance-other"},
        {"scheme": "binance-rsa"},
        {"api_key": "other-key"},
        {"api_key": ""},
        {"policy": {**POLICY, "rate": 11}},
        {"policy": {**POLICY, "extra": None}},
        {"policy": {}},
        {"policy": None},
    ],
    ids=repr,
)
def test_encryption_context_changes_with_each_bound_field(change):
    assert make(**change).encryption_context() != BUNDLE.encryption_context()
    assert associated_data(make(**change).encryption_context()) != associated_data(BUNDLE.encryption_context())


@pytest.mark.parametrize(
    "change",
    [{"kms_key_id": "alias/other"}, {"encrypted_data_key": b"\x02" * 10}, {"nonce": b"\x00" * 12}, {"ciphertext": b"\x01" * 40}],
    ids=lambda change: next(iter(change)),
)
def test_encryption_context_ignores_the_sealed_material(change):
    assert make(**change).encryption_context() == BUNDLE.encryption_context()


def test_policy_digest():
    assert policy_digest(None) == "default"
    assert make(policy=None).encryption_context()["zerocopy:policy-sha256"] == "default"
    assert policy_digest({}) == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # sha256(b"{}")
    assert policy_digest({"a": 1}) != policy_digest({"a": "1"})
    assert len(policy_digest(POLICY)) == 64


def test_associated_data_is_the_canonical_context():
    context = BUNDLE.encryption_context()
    assert associated_data(context) == canonical_json(context)
    assert associated_data(dict(reversed(list(context.items())))) == associated_data(context)


def test_informational_context_in_the_file_is_ignored():
    for context in ({**DOCUMENT["encryption_context"], "zerocopy:scheme": "hmac-sha256"}, {}, {"anything": ["goes", 1]}):
        bundle = SealedBundle.from_json(edited(encryption_context=context))
        assert bundle == BUNDLE
        assert bundle.encryption_context() == BUNDLE.encryption_context()
        assert json.loads(bundle.to_json())["encryption_context"] == BUNDLE.encryption_context()


# -- canonical JSON --------------------------------------------------------------------------------
def test_canonical_json_bytes():
    assert canonical_json({"b": [True, None, "x"], "a": 1}) == b'{"a":1,"b":[true,null,"x"]}'
    assert canonical_json({"k": "é✓"}) == '{"k":"é✓"}'.encode()
    assert canonical_json([]) == b"[]"


def test_canonical_json_is_key_order_independent():
    one = {"a": 1, "b": {"x": [1, 2], "y": "z"}, "c": None}
    two = {"c": None, "b": {"y": "z", "x": [1, 2]}, "a": 1}
    assert canonical_json(one) == canonical_json(two)
    assert policy_digest(one) == policy_digest(two)
    assert canonical_json({"a": [1, 2]}) != canonical_json({"a": [2, 1]})  # lists keep their order


@pytest.mark.parametrize(
    ("value", "word"),
    [
        (0.5, "float"),
        ({"a": 1.0}, "float"),
        ({"a": [1, 2.5]}, "float"),
        ({"a": float("nan")}, "float"),
        ({"a": float("inf")}, "float"),
        ({1: "int key"}, "keys must be strings"),
        ({"a": b"bytes"}, "bytes"),
        ({"a": (1, 2)}, "tuple"),
        ({"a": {1, 2}}, "set"),
        ({"a": "\ud800"}, "Unicode"),
        ({"\udfff": 1}, "Unicode"),
    ],
    ids=repr,
)
def test_canonical_json_refuses(value, word):
    with pytest.raises(BundleError, match=word):
        canonical_json(value)
    if isinstance(value, dict):
        with pytest.raises(BundleError, match=word):
            policy_digest(value)


# -- the strict parser ------------------------------------------------------------------------------
def test_unknown_field():
    refused(edited(extra=1), "unknown", "'extra'")
    refused(edited(Name="x"), "unknown", "'Name'")


@pytest.mark.parametrize("field", FIELDS)
def test_missing_field(field):
    document = dict(DOCUMENT)
    del document[field]
    refused(json.dumps(document), f"'{field}'", "missing")


@pytest.mark.parametrize(
    "text",
    [
        BUNDLE.to_json().decode().replace('"name": "binance-main",', '"name": "binance-main", "name": "binance-main",'),
        BUNDLE.to_json().decode().replace('"name": "binance-main",', '"name": "binance-main", "name": "other",'),
        BUNDLE.to_json().decode().replace('"rate": 10', '"rate": 10, "rate": 11'),
        BUNDLE.to_json().decode().replace('"zerocopy:format": "1"', '"zerocopy:format": "1", "zerocopy:format": "2"'),
    ],
    ids=["same-value", "other-value", "in-policy", "in-context"],
)
def test_duplicate_json_key(text):
    assert text != BUNDLE.to_json().decode()
    refused(text, "duplicate JSON key")


VALUES_OF_EVERY_TYPE = [1, 1.5, True, False, [], ["x"], "s", {}, None]
RIGHT_TYPES = {"policy": (dict, type(None)), "encryption_context": dict}
WRONG_TYPES = [
    (field, value)
    for field in FIELDS
    for value in VALUES_OF_EVERY_TYPE
    if isinstance(value, bool) or not isinstance(value, RIGHT_TYPES.get(field, str))
]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES, ids=[f"{f}={v!r}" for f, v in WRONG_TYPES])
def test_wrong_types(field, value):
    refused(edited(**{field: value}), f"'{field}'", "wrong type")


@pytest.mark.parametrize("value", ["not base64!", "AAA", "A", "AA==AA==", "QUJD\n", "QUJD ", "√√√√", "-_-_"], ids=repr)
@pytest.mark.parametrize("field", BASE64_FIELDS)
def test_bad_base64(field, value):
    refused(edited(**{field: value}), f"'{field}'", "base64")


@pytest.mark.parametrize("value", ["zerocopy-sealed-v2", "zerocopy-sealed-v1 ", "ZEROCOPY-SEALED-V1", "", "x" * 1000])
def test_wrong_format(value):
    error = refused(edited(format=value), "format", "is not 'zerocopy-sealed-v1'")
    assert len(str(error)) < 200  # the echoed value is cut short


@pytest.mark.parametrize("size", [0, 11, 13, 16])
def test_nonce_must_be_12_bytes(size):
    refused(edited(nonce=base64.b64encode(bytes(size)).decode()), "nonce", "12 bytes")


@pytest.mark.parametrize("name", ["", "-lead", ".lead", "_lead", "a" * 65, "has space", "ключ", "a/b", "a\n", "a:b"], ids=repr)
def test_bad_name(name):
    refused(edited(name=name), "name")
    with pytest.raises(BundleError, match="name"):
        check_name(name)


def test_check_name_accepts_and_returns_good_names():
    for name in ("a", "A0", "binance-main", "key_1.prod", "a" * 64):
        assert check_name(name) == name
    with pytest.raises(BundleError, match="name"):
        check_name(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("scheme", ["", "Binance-hmac", "-hmac", "binance_hmac", "s" * 33, "hmac sha256", "hmac\n"], ids=repr)
def test_bad_scheme(scheme):
    refused(edited(scheme=scheme), "scheme")


@pytest.mark.parametrize("api_key", ["has space", "tab\t", "x" * 257, "ключ", "nul\0"], ids=repr)
def test_bad_api_key(api_key):
    refused(edited(api_key=api_key), "api_key")


@pytest.mark.parametrize("kms_key_id", ["", "has space", "k" * 2049, "key\n"], ids=repr)
def test_bad_kms_key_id(kms_key_id):
    refused(edited(kms_key_id=kms_key_id), "kms_key_id")


@pytest.mark.parametrize(
    ("field", "size", "word"),
    [("encrypted_data_key", 0, "encrypted_data_key"), ("encrypted_data_key", 4097, "encrypted_data_key"), ("ciphertext", 16, "ciphertext"), ("ciphertext", 64 * 1024 + 1, "ciphertext")],
)
def test_sealed_material_sizes(field, size, word):
    refused(edited(**{field: base64.b64encode(bytes(size)).decode()}), word)


@pytest.mark.parametrize(
    ("policy", "word"),
    [
        ('{"max": 0.5}', "float"),
        ('{"max": 1e3}', "float"),
        ('{"max": [1, 2.0]}', "float"),
        ('{"max": NaN}', "NaN"),
        ('{"max": Infinity}', "Infinity"),
        ('{"max": -Infinity}', "-Infinity"),
        ('{"max": 1e400}', "float"),
        ('{"note": "\\ud800"}', "Unicode"),
        ('{"\\udfff": 1}', "Unicode"),
    ],
)
def test_policy_values(policy, word):
    text = BUNDLE.to_json().decode().replace(json.dumps(POLICY, indent=2).replace("\n", "\n  "), policy)
    assert policy in text
    refused(text, word)


def test_policy_too_large():
    refused(edited(policy={"blob": "x" * MAX_POLICY_SIZE}), "policy", "larger")


@pytest.mark.parametrize("depth", [33, 40, 500])
def test_deeply_nested_policy(depth):
    refused(edited(policy=json.loads('{"a":' * depth + "1" + "}" * depth)), "policy", "nested too deeply")


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_nesting_too_deep_for_the_json_parser(depth):
    text = BUNDLE.to_json().decode().replace('"rate": 10', '"rate": ' + "[" * depth + "]" * depth)
    assert len(text) <= MAX_BUNDLE_SIZE
    refused(text, "JSON")


def test_nesting_at_the_limit_is_accepted():
    policy: Any = 1
    for _ in range(31):
        policy = {"a": policy}
    bundle = make(policy=policy)
    assert SealedBundle.from_json(bundle.to_json()) == bundle


def test_too_large_input():
    data = BUNDLE.to_json()
    padded = data[:-2] + b" " * (MAX_BUNDLE_SIZE - len(data)) + data[-2:]
    assert len(padded) == MAX_BUNDLE_SIZE
    assert SealedBundle.from_json(padded) == BUNDLE
    refused(padded + b" ", "larger than 262144 bytes")
    refused(b"{" * (10 * MAX_BUNDLE_SIZE), "larger")


@pytest.mark.parametrize(
    "data",
    [
        b"\xff" + BUNDLE.to_json(),
        BUNDLE.to_json().replace(b"binance-main", b"binance-\xe9main"),
        b"\xef\xbb\xbf" + BUNDLE.to_json(),  # a UTF-8 byte order mark
        BUNDLE.to_json().decode().encode("utf-16"),
    ],
    ids=["leading-ff", "latin1-in-name", "bom", "utf-16"],
)
def test_not_utf8_json(data):
    refused(data, "not valid JSON")


def test_str_with_a_lone_surrogate():
    refused(BUNDLE.to_json().decode().replace("binance-main", "binance-\ud800"), "bundle")


@pytest.mark.parametrize("text", ["", " ", "{", '{"format": ', "}", BUNDLE.to_json().decode()[:-3], "{'format': 1}"], ids=repr)
def test_not_json(text):
    refused(text, "not valid JSON")


@pytest.mark.parametrize("text", ["[]", "null", "1", '"zerocopy-sealed-v1"', "true", json.dumps([DOCUMENT])], ids=lambda t: t[:20])
def test_not_an_object(text):
    refused(text, "JSON object")


@pytest.mark.parametrize("data", [None, 1, ["{}"], {"format": FORMAT}], ids=repr)
def test_not_bytes(data):
    refused(data, "bytes")  # type: ignore[arg-type]


def test_bundle_error_is_a_value_error():
    assert issubclass(BundleError, ValueError)


# -- hypothesis ------------------------------------------------------------------------------------
def _bundle_or_bundle_error(data: bytes | str) -> None:
    try:
        bundle = SealedBundle.from_json(data)
    except BundleError:
        return
    assert SealedBundle.from_json(bundle.to_json()) == bundle


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(data):
    _bundle_or_bundle_error(data)


characters = st.characters() | st.characters(categories=["Cs"]) | st.sampled_from('{}[]",:\\0123456789.eE-+ntfu')
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(characters, max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(characters, max_size=8), children, max_size=4),
    max_leaves=10,
)
TEXT = BUNDLE.to_json().decode()


@FUZZ
@given(st.data())
def test_mutated_text(data):
    text = TEXT
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        position = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip":
            text = text[:position] + data.draw(st.text(characters, min_size=1, max_size=1)) + text[position + 1 :]
        elif action == "insert":
            text = text[:position] + data.draw(st.text(characters, min_size=1, max_size=6)) + text[position:]
        else:
            text = text[:position] + text[position + data.draw(st.integers(1, 40)) :]
    _bundle_or_bundle_error(text)
    _bundle_or_bundle_error(text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(
    deletions=st.sets(st.sampled_from(FIELDS), max_size=3),
    changes=st.dictionaries(st.sampled_from(FIELDS) | st.text(characters, max_size=10), json_values, max_size=3),
    policy=st.dictionaries(st.text(characters, max_size=8), json_values, max_size=4) | st.none(),
)
def test_mutated_fields(deletions, changes, policy):
    document = {**DOCUMENT, "policy": policy}
    for field in deletions:
        del document[field]
    document.update(changes)
    _bundle_or_bundle_error(json.dumps(document))
    _bundle_or_bundle_error(json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass"))
