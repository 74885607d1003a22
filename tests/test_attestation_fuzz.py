"""Property tests: whatever the bytes, zerocopy.attestation.verify raises only AttestationError.

Mutations of the real production documents (the definite-length one of 2024 and the
indefinite-length one of 2025) must all be refused, and refused for the right reason: any change to
the signed bytes is SignatureInvalid (the signature is checked before any certificate or policy),
any change that breaks the strict encoding is MalformedDocument.
"""

from __future__ import annotations

import datetime as dt

import cbor2
import pytest
from attestation_builder import document_timestamp, load_vector, make_chain, timestamp_ms
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from zerocopy.attestation import (
    AttestationError,
    MalformedDocument,
    SignatureInvalid,
    verify,
)

PRODUCTION = load_vector("attestation/nitro-2024-09-07.b64")
PRODUCTION_TIME = document_timestamp(PRODUCTION)
INDEFINITE_2025 = load_vector("attestation/nitro-2025-09-16-indefinite-map.b64")
# Each real production document with the time to verify it at (its own timestamp).
REAL = [(PRODUCTION, PRODUCTION_TIME), (INDEFINITE_2025, document_timestamp(INDEFINITE_2025))]
real_documents = st.sampled_from(REAL)
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
CHAIN = make_chain(NOW, intermediates=1)

FUZZ = settings(
    max_examples=200,
    deadline=None,  # no timing assertions; slow CI machines must not flake
    suppress_health_check=[HealthCheck.too_slow],
)

cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=64)
    | st.text(max_size=16),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=12) | st.integers(-2, 40), children, max_size=5),
    max_leaves=20,
)


def refused(document: bytes, **kwargs) -> AttestationError:
    """The AttestationError ``verify`` raises; fail if it accepts or raises anything else."""
    kwargs.setdefault("now", PRODUCTION_TIME)
    with pytest.raises(AttestationError) as info:
        verify(document, **kwargs)
    return info.value


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_refused(data):
    refused(data)


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_after_tag_18_are_refused(data):
    refused(b"\xd2" + data)


@FUZZ
@given(cbor_values)
def test_arbitrary_cbor_is_refused(value):
    assert isinstance(refused(cbor2.dumps(value)), MalformedDocument)


@FUZZ
@given(real_documents, st.data(), st.integers(1, 255))
def test_any_byte_flip_of_a_real_document_is_refused(real, data, mask):
    document, at = real
    tampered = bytearray(document)
    tampered[data.draw(st.integers(0, len(document) - 1), label="position")] ^= mask

    error = refused(bytes(tampered), now=at)

    assert type(error) in (SignatureInvalid, MalformedDocument), repr(error)


@FUZZ
@given(real_documents, st.data(), st.integers(1, 255))
def test_any_signature_byte_flip_is_signature_invalid(real, data, mask):
    document, at = real
    tampered = bytearray(document)
    tampered[data.draw(st.integers(len(document) - 96, len(document) - 1), label="position")] ^= mask

    assert type(refused(bytes(tampered), now=at)) is SignatureInvalid


@FUZZ
@given(real_documents, st.data())
def test_any_truncation_is_malformed(real, data):
    # CBOR is prefix-free: no proper prefix of one item is itself a complete item.
    document, at = real
    length = data.draw(st.integers(0, len(document) - 1), label="length")
    assert type(refused(document[:length], now=at)) is MalformedDocument


@FUZZ
@given(real_documents, st.data(), st.binary(min_size=1, max_size=16))
def test_any_insertion_is_refused(real, data, inserted):
    document, at = real
    position = data.draw(st.integers(0, len(document)), label="position")
    # The one insertion that changes nothing: COSE_Sign1's own tag (18) in front of an untagged
    # document, in any width AWS's encoders may use — a document is valid tagged or untagged.
    assume(not (position == 0 and _is_cose_sign1_tag(inserted) and document[0] >> 5 != 6))
    refused(document[:position] + inserted + document[position:], now=at)


def _is_cose_sign1_tag(head: bytes) -> bool:
    """Whether ``head`` is exactly a CBOR head of tag 18, in its 1-, 2-, 3-, 5- or 9-byte form."""
    if not head or head[0] >> 5 != 6:
        return False
    info, rest = head[0] & 0x1F, head[1:]
    if info < 24:
        return info == 18 and not rest
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    return width is not None and len(rest) == width and int.from_bytes(rest, "big") == 18


def test_the_cose_tag_in_front_of_an_untagged_document_changes_nothing():
    untagged = [(document, at) for document, at in REAL if document[0] >> 5 == 4]
    assert untagged, "no real document is untagged: nothing to check"
    for document, at in untagged:
        _check_tagged_and_untagged_agree(document, at)
    assert not _is_cose_sign1_tag(b"\xd3") and not _is_cose_sign1_tag(b"\xd2\x00")


def _check_tagged_and_untagged_agree(document: bytes, at) -> None:
    for tag in (b"\xd2", b"\xd8\x12", b"\xd9\x00\x12", b"\xda\x00\x00\x00\x12"):
        assert _is_cose_sign1_tag(tag)
        assert verify(tag + document, now=at).pcrs == verify(document, now=at).pcrs


@FUZZ
@given(real_documents, st.data(), st.integers(1, 64))
def test_any_deletion_is_refused(real, data, length):
    document, at = real
    start = data.draw(st.integers(0, len(document) - 1), label="start")
    refused(document[:start] + document[start + length :], now=at)


@FUZZ
@given(
    field=st.sampled_from(
        ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key",
         "user_data", "nonce", "unexpected"]
    ),
    value=cbor_values,
)
def test_validly_signed_payload_with_arbitrary_field_value(field, value):
    # Signed by a trusted chain, so only the field's shape decides: it verifies or is malformed.
    document = CHAIN.document(timestamp_ms=timestamp_ms(NOW), extra_fields={field: value})

    try:
        doc = verify(document, roots=[CHAIN.root_cert], now=NOW, allow_debug=True)
    except AttestationError as error:
        assert type(error) is MalformedDocument, repr(error)
    else:
        decoded = {"timestamp": timestamp_ms(doc.timestamp), "pcrs": dict(doc.pcrs)}
        assert decoded.get(field, getattr(doc, field, None)) == value


def test_field_fuzz_accepts_a_valid_timestamp():
    # The property above has an "accepted" branch; make sure it is reachable for a plain int.
    document = CHAIN.document(timestamp_ms=timestamp_ms(NOW), extra_fields={"timestamp": 5})

    assert timestamp_ms(verify(document, roots=[CHAIN.root_cert], now=NOW).timestamp) == 5
