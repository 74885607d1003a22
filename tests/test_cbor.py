"""Strict CBOR (enclave.protocol.cbor): plain values in preferred encoding, nothing else.

Accepted vectors are RFC 8949 Appendix A examples of plain types; refused vectors are the same
appendix's floats, simple values, tags and indefinite-length items, plus hand-made duplicate
keys, non-minimal heads, odd map keys and nesting. Every refusal is a :class:`CborError`.
With ``any_encoding=True`` (bytes AWS produces) the appendix's indefinite-length examples
decode, and every other rule still holds.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbor_encodings import INDEFINITE, encode

from enclave.protocol.cbor import MAX_DEPTH, CborError, dumps, loads

FUZZ = settings(
    max_examples=300,
    deadline=None,  # no timing assertions; slow CI machines must not flake
    suppress_health_check=[HealthCheck.too_slow],
)
TAG_18 = frozenset({18})

# RFC 8949 Appendix A, plain types only.
PLAIN = [
    (0, "00"),
    (1, "01"),
    (10, "0a"),
    (23, "17"),
    (24, "1818"),
    (25, "1819"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (-1, "20"),
    (-10, "29"),
    (-100, "3863"),
    (-1000, "3903e7"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    (b"", "40"),
    (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"),
    ("a", "6161"),
    ("IETF", "6449455446"),
    ('"\\', "62225c"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    ("\U00010151", "64f0908591"),
    ([], "80"),
    ([1, 2, 3], "83010203"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"),
    ({1: 2, 3: 4}, "a201020304"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}, "a56161614161626142616361436164614461656145"),
]


@pytest.mark.parametrize(("value", "encoded"), PLAIN, ids=[h for _, h in PLAIN])
def test_plain_values_decode(value, encoded):
    data = bytes.fromhex(encoded)
    decoded = loads(data)
    assert decoded == value
    assert type(decoded) is type(value)
    assert dumps(value) == data


def test_map_order_is_kept_as_sent():
    assert list(loads(bytes.fromhex("a2 6162 01 6161 02"))) == ["b", "a"]


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_like_input(kind):
    assert loads(kind(bytes.fromhex("a1616101"))) == {"a": 1}


def _refused(hex_data: str, word: str, **kwargs) -> CborError:
    with pytest.raises(CborError) as info:
        loads(bytes.fromhex(hex_data), **kwargs)
    assert word in str(info.value)
    return info.value


def test_cbor_error_is_a_value_error():
    assert issubclass(CborError, ValueError)


@pytest.mark.parametrize(
    "data",
    [
        "0000",
        "a0a0",
        "8001",
        "6161ff",
        "f6f6",
        "01" + "00" * 100,
    ],
)
def test_trailing_bytes(data):
    _refused(data, "trailing")


@pytest.mark.parametrize(
    "data",
    [
        "a2 6161 01 6161 02",
        "a2 01 01 01 02",
        "a3 6161 01 6162 02 6161 03",
        "81 a2 6178 f6 6178 f6",  # nested
        "a1 6161 a2 00 00 00 00",  # in a value
    ],
)
def test_duplicate_keys(data):
    _refused(data, "duplicate")


@pytest.mark.parametrize(
    "data",
    [
        "5f42010243030405ff",  # (_ h'0102', h'030405')
        "7f657374726561646d696e67ff",  # (_ "strea", "ming")
        "9fff",  # [_ ]
        "9f018202039f0405ffff",  # [_ 1, [2, 3], [_ 4, 5]]
        "83018202039f0405ff",  # [1, [2, 3], [_ 4, 5]]
        "bf61610161629f0203ffff",  # {_ "a": 1, "b": [_ 2, 3]}
        "bf6346756ef563416d7421ff",  # {_ "Fun": true, "Amt": -2}
        "5fff",
        "7fff",
    ],
)
def test_indefinite_lengths(data):
    _refused(data, "indefinite")


@pytest.mark.parametrize(
    "data",
    [
        "1801",  # 1 in one extra byte
        "1817",  # 23 could be immediate
        "190001",
        "1900ff",
        "1a00000001",
        "1a0000ffff",
        "1b0000000000000001",
        "1b00000000ffffffff",
        "3800",  # -1
        "390000",
        "3b0000000000000000",
        "580100",  # byte string length
        "59000100",
        "780161",  # text string length
        "79000161",
        "980100",  # array length
        "99000100",
        "b8010000",  # map length
        "a1 6161 1801",  # nested
    ],
)
def test_non_minimal_integers_and_lengths(data):
    _refused(data, "preferred")


@pytest.mark.parametrize(
    ("data", "word"),
    [
        ("c074323031332d30332d32315432303a30343a30305a", "tag 0"),  # 0("2013-03-21T20:04:00Z")
        ("c11a514b67b0", "tag 1"),  # 1(1363896240)
        ("c1fb41d452d9ec200000", "tag 1"),  # 1(1363896240.5)
        ("c24101", "tag 2"),  # bignum 1: the same value as 01
        ("c249010000000000000000", "tag 2"),  # bignum 2**64
        ("c349010000000000000000", "tag 3"),  # negative bignum -2**64 - 1
        ("d74401020304", "tag 23"),
        ("d818456449455446", "tag 24"),
        ("d82076687474703a2f2f7777772e6578616d706c652e636f6d", "tag 32"),
        ("d9d9f701", "tag 55799"),  # self-described CBOR wrapping 1
        ("d81c81d81d00", "tag 28"),  # shared reference to itself: a cycle
        ("d24101", "tag 18"),
        ("81d24101", "tag 18"),
        ("a1 6161 d24101", "tag 18"),
        ("d90102 81 01", "tag 258"),  # tag 258, a set
    ],
)
def test_tags_are_refused(data, word):
    _refused(data, word)


def test_tag_18_only_at_the_top_level_when_allowed():
    assert loads(bytes.fromhex("d2 84 40 a0 4101 40"), top_level_tags=TAG_18) == [b"", {}, b"\x01", b""]
    assert loads(bytes.fromhex("84 40 a0 4101 40"), top_level_tags=TAG_18) == [b"", {}, b"\x01", b""]  # untagged too
    _refused("d2 84 40 a0 4101 40", "tag 18")  # not allowed by default


@pytest.mark.parametrize(
    ("data", "word"),
    [
        ("81 d24101", "tag 18"),  # nested
        ("d2 81 d24101", "tag 18"),  # nested under an allowed one
        ("d2 d24101", "tag 18"),  # twice
        ("c1 1a514b67b0", "tag 1"),  # another tag at the top
        ("d8 12 4101", "preferred"),  # 18 in a one-byte argument
        ("d9 0012 4101", "preferred"),
        ("da 00000012 4101", "preferred"),
        ("db 0000000000000012 4101", "preferred"),
        ("d2", "premature end"),
        ("d8", "malformed CBOR tag"),  # its one-byte argument is missing
        ("dc 01", "malformed CBOR tag"),  # reserved additional information
        ("d2 4101 00", "trailing"),
        ("d2 1801", "preferred"),
    ],
)
def test_tag_18_errors_when_allowed(data, word):
    _refused(data, word, top_level_tags=TAG_18)


@pytest.mark.parametrize(
    ("data", "word"),
    [
        ("f90000", "float"),  # 0.0 half
        ("f93c00", "float"),  # 1.0
        ("fa47c35000", "float"),  # 100000.0 single
        ("fb3ff199999999999a", "float"),  # 1.1 double
        ("f97e00", "float"),  # NaN
        ("f97c00", "float"),  # Infinity
        ("fbfff0000000000000", "float"),  # -Infinity
        ("82 01 f93c00", "float"),  # nested
        ("f7", "simple value"),  # undefined
        ("f0", "simple value"),  # simple(16)
        ("f8ff", "simple value"),  # simple(255)
    ],
)
def test_floats_and_simple_values(data, word):
    _refused(data, word)


@pytest.mark.parametrize(
    ("data", "word"),
    [
        ("a1 4161 01", "bytes"),  # {h'61': 1}
        ("a1 f5 01", "bool"),
        ("a1 f4 01", "bool"),
        ("a1 f6 01", "NoneType"),
        ("a1 8101 01", "array"),  # an array as a key
        ("a1 a0 01", "map key"),  # a map as a key
        ("a1 f93c00 01", "float"),
        ("a1 6161 a1 4161 01", "bytes"),  # nested
        ("81 a1 f5 01", "bool"),
    ],
)
def test_map_keys_must_be_text_or_int(data, word):
    error = _refused(data, word)
    assert "key" in str(error) or word in ("map key", "float")  # a float is refused anywhere


def test_text_and_int_keys_may_mix():
    assert loads(bytes.fromhex("a2 01 02 6161 03")) == {1: 2, "a": 3}


def nested_arrays(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"


def nested_maps(depth: int) -> bytes:
    return b"\xa1\x61k" * depth + b"\x00"


@pytest.mark.parametrize("build", [nested_arrays, nested_maps])
def test_nesting_up_to_the_limit_is_accepted(build):
    assert dumps(loads(build(MAX_DEPTH))) == build(MAX_DEPTH)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, MAX_DEPTH + 2, MAX_DEPTH + 3, 1000, 100_000])
@pytest.mark.parametrize("build", [nested_arrays, nested_maps])
def test_too_deep_nesting(build, depth):
    with pytest.raises(CborError, match="nest"):
        loads(build(depth))


def test_dumps_refuses_too_deep_nesting():
    value: list = []
    for _ in range(MAX_DEPTH + 1):
        value = [value]
    with pytest.raises(CborError, match="nested too deeply"):
        dumps(value)


@pytest.mark.parametrize("value", [2**64, -(2**64) - 1, 2**100, [2**64], {"n": -(2**70)}], ids=repr)
def test_integers_beyond_64_bits(value):
    with pytest.raises(CborError, match="64-bit"):
        dumps(value)


@pytest.mark.parametrize(
    ("value", "word"),
    [
        (1.5, "float"),
        (float("nan"), "float"),
        ((1, 2), "tuple"),
        ({1, 2}, "set"),
        (bytearray(b"x"), "bytearray"),
        ({b"k": 1}, "bytes"),
        ({True: 1}, "bool"),
        ({None: 1}, "NoneType"),
        ([object()], "object"),
    ],
    ids=repr,
)
def test_dumps_refuses_what_loads_would(value, word):
    with pytest.raises(CborError, match=word):
        dumps(value)


@pytest.mark.parametrize(
    ("data", "word"),
    [
        ("", "premature end"),
        ("61", "premature end"),
        ("5a ffffffff", "premature end"),  # claims 4 GiB
        ("5b ffffffffffffffff", "malformed"),  # claims 2**64 - 1 bytes
        ("9b ffffffffffffffff", "malformed"),
        ("62 c328", "text string"),  # invalid UTF-8
        ("63 eda080", "text string"),  # an encoded surrogate
        ("1c", "malformed"),  # reserved additional information
        ("ff", "break"),
        ("a1 01", "premature end"),
    ],
)
def test_malformed_input(data, word):
    _refused(data, word)


@pytest.mark.parametrize("data", ["a0", 0, None, ["a0"]], ids=repr)
def test_non_bytes_input(data):
    with pytest.raises(CborError, match="expected bytes"):
        loads(data)  # type: ignore[arg-type]


# -- hypothesis ------------------------------------------------------------------------------------
plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.integers(-30, 30)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.integers(-(2**64), 2**64 - 1), children, max_size=5),
    max_leaves=25,
)


@FUZZ
@given(plain_values)
def test_loads_dumps_round_trip(value):
    data = dumps(value)
    assert loads(data) == value
    assert dumps(loads(data)) == data
    assert loads(b"\xd2" + data, top_level_tags=TAG_18) == value


def _only_cbor_errors(data: bytes, **kwargs) -> None:
    try:
        value = loads(data, **kwargs)
    except CborError:
        return
    # whatever is accepted is exactly the preferred encoding of a plain value
    body = data[1:] if kwargs and data[:1] == b"\xd2" else data
    assert dumps(value) == body


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_give_a_value_or_cbor_error(data):
    _only_cbor_errors(data)
    _only_cbor_errors(data, top_level_tags=TAG_18)


@FUZZ
@given(plain_values, st.data())
def test_mutated_encodings_give_a_value_or_cbor_error(value, data):
    encoded = bytearray(dumps(value))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert" or not encoded:
            encoded[position:position] = data.draw(st.binary(min_size=1, max_size=3))
        elif action == "flip":
            encoded[min(position, len(encoded) - 1)] = data.draw(st.integers(0, 255))
        else:
            del encoded[position : position + data.draw(st.integers(1, 3))]
    _only_cbor_errors(bytes(encoded))
    _only_cbor_errors(b"\xd2" + bytes(encoded), top_level_tags=TAG_18)


# -- any encoding, for bytes AWS produces: indefinite lengths, wider heads ------------------------
# RFC 8949 Appendix A's indefinite-length examples, with the values they stand for.
INDEFINITE_EXAMPLES = [
    ("5f42010243030405ff", b"\x01\x02\x03\x04\x05"),
    ("7f657374726561646d696e67ff", "streaming"),
    ("9fff", []),
    ("9f018202039f0405ffff", [1, [2, 3], [4, 5]]),
    ("9f01820203820405ff", [1, [2, 3], [4, 5]]),
    ("83018202039f0405ff", [1, [2, 3], [4, 5]]),
    ("83019f0203ff820405", [1, [2, 3], [4, 5]]),
    ("9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff", list(range(1, 26))),
    ("bf61610161629f0203ffff", {"a": 1, "b": [2, 3]}),
    ("826161bf61626163ff", ["a", {"b": "c"}]),
    ("bf6346756ef563416d7421ff", {"Fun": True, "Amt": -2}),
    ("5fff", b""),
    ("7fff", ""),
    ("5f40ff", b""),  # one empty chunk
]


@pytest.mark.parametrize(("encoded", "value"), INDEFINITE_EXAMPLES, ids=[h for h, _ in INDEFINITE_EXAMPLES])
def test_indefinite_lengths_decode_when_allowed(encoded, value):
    decoded = loads(bytes.fromhex(encoded), any_encoding=True)
    assert decoded == value
    assert type(decoded) is type(value)
    _refused(encoded, "indefinite")  # and never by default


@pytest.mark.parametrize(
    ("data", "word"),
    [
        ("bf 6161 01 6161 02 ff", "duplicate"),
        ("a2 6161 01 6161 bf ff", "duplicate"),  # an indefinite value does not hide a duplicate key
        ("bf 6161 ff", "break"),  # a key without a value
        ("bf 6161 01", "premature end"),  # no break
        ("9f 01", "premature end"),
        ("5f 4101", "premature end"),
        ("5f 6161 ff", "chunk"),  # a text chunk in a byte string
        ("7f 4161 ff", "chunk"),
        ("5f 5f ff ff", "chunk"),  # chunks are definite
        ("5f 01 ff", "chunk"),
        ("7f 61c3 61bc ff", "UTF-8"),  # each chunk must be valid UTF-8 on its own
        ("9f d24101 ff", "tag 18"),
        ("bf f5 01 ff", "bool"),
        ("bf 9fff 01 ff", "array"),
        ("9f f93c00 ff", "float"),
        ("9f ff 00", "trailing"),
        ("bf ff ff", "trailing"),  # an empty map, then a stray break
        ("1f", "reserved"),  # integers have no indefinite form
        ("3f", "reserved"),
        ("df 01", "reserved"),  # nor do tags
        ("ff", "break"),
    ],
)
def test_any_encoding_stays_strict_about_meaning(data, word):
    _refused(data, word, any_encoding=True)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
@pytest.mark.parametrize("opener", [b"\x9f", b"\xbf\x61k"])
def test_indefinite_nesting_is_bounded(opener, depth):
    with pytest.raises(CborError, match="nest"):
        loads(opener * depth + b"\x00", any_encoding=True)


def test_tag_18_with_an_indefinite_array_when_both_are_allowed():
    data = bytes.fromhex("d2 9f 40 bfff 4101 40 ff")
    assert loads(data, top_level_tags=TAG_18, any_encoding=True) == [b"", {}, b"\x01", b""]


@FUZZ
@given(plain_values)
def test_the_independent_encoder_agrees_with_dumps(value):
    assert encode(value) == dumps(value)


@pytest.mark.parametrize(
    ("encoded", "value"),
    [
        ("1801", 1), ("190018", 24), ("1a00000001", 1), ("1b0000000000000001", 1), ("3b0000000000000000", -1),
        ("5800", b""), ("5a00000001 61", b"a"), ("7801 61", "a"), ("9801 01", [1]), ("b90001 6161 01", {"a": 1}),
        ("9f 1801 ff", [1]), ("bf 780161 01 ff", {"a": 1}), ("5f 5801 61 ff", b"a"),
    ],
)
def test_wider_heads_decode_when_any_encoding_is_allowed(encoded, value):
    assert loads(bytes.fromhex(encoded), any_encoding=True) == value
    if encoded[:2] not in ("9f", "bf", "5f"):
        _refused(encoded, "preferred")  # and never by default


@pytest.mark.parametrize("encoded", ["f814", "f815", "f816", "f818"])
def test_simple_values_have_no_wider_form(encoded):
    # RFC 8949 3.3: simple values below 32 in the two-byte form are not well-formed.
    _refused(encoded, "simple value", any_encoding=True)


@FUZZ
@given(plain_values, st.randoms(use_true_random=False))
def test_every_encoding_of_a_value_decodes_to_it_when_any_encoding_is_allowed(value, rnd):
    encoded = encode(value, lambda kind, depth: rnd.random() < 0.5, wide=lambda: rnd.random() < 0.2, chunk=rnd.randint(1, 9))
    decoded = loads(encoded, any_encoding=True)
    assert decoded == value
    assert dumps(decoded) == dumps(value)
    if encoded == dumps(value):
        assert loads(encoded) == value
    else:
        with pytest.raises(CborError, match="indefinite|preferred"):
            loads(encoded)


def _indefinite_only_cbor_errors(data: bytes) -> None:
    try:
        value = loads(data, any_encoding=True)
    except CborError:
        return
    assert loads(dumps(value)) == value  # whatever is accepted is a plain value


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_give_a_value_or_cbor_error_when_any_encoding_is_allowed(data):
    _indefinite_only_cbor_errors(data)


@FUZZ
@given(plain_values, st.data())
def test_mutated_indefinite_encodings_give_a_value_or_cbor_error(value, data):
    encoded = bytearray(encode(value, INDEFINITE, chunk=3))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, max(len(encoded) - 1, 0)))
        if data.draw(st.booleans()) or not encoded:
            encoded[position:position] = data.draw(st.sampled_from([b"\xff", b"\x9f", b"\xbf", b"\x5f", b"\x7f", b"\x00"]))
        else:
            encoded[position] = data.draw(st.integers(0, 255))
    _indefinite_only_cbor_errors(bytes(encoded))
