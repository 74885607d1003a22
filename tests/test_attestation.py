"""zerocopy.attestation against real AWS Nitro documents and documents built with our own chain."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json

import cbor2
import pytest
from attestation_builder import (
    build_document,
    document_timestamp,
    issue_certificate,
    load_vector,
    make_chain,
    sample_pcrs,
    timestamp_ms,
)
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from zerocopy import attestation
from zerocopy.attestation import (
    AttestationError,
    CertificateChainInvalid,
    CertificateExpired,
    DebugModeRefused,
    MalformedDocument,
    NonceMismatch,
    PCRMismatch,
    PinnedRootInvalid,
    SignatureInvalid,
    verify,
)
from zerocopy.errors import ZeroCopyError

PRODUCTION = "attestation/nitro-2024-09-07.b64"
DEBUG = "attestation/nitro-debug-2024-09-07.b64"
INDEFINITE_2025 = "attestation/nitro-2025-09-16-indefinite-map.b64"
AWS_ROOT_PEM = "attestation/aws-nitro-root-g1.pem"

# Values read from the production sample (see tests/data/PROVENANCE.md).
PRODUCTION_MODULE_ID = "i-0a22e5c5f24d22174-enc0191cceb4289903f"
PRODUCTION_TIMESTAMP_MS = 1725719859545
PRODUCTION_PCR0_PREFIX = "e72a46ca80a260fb"
PCR4_PREFIX = "45706d7b621e4620"  # the instance's PCR4, the same in both samples
ONES = b"\x01" * 1024

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)


def raises_exactly(exc_type: type[BaseException], match: str | None = None):
    """``pytest.raises`` that also refuses subclasses, so each test pins the exact failure."""

    class _Exact:
        def __enter__(self):
            self._ctx = pytest.raises(exc_type, match=match)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc_info):
            suppressed = self._ctx.__exit__(*exc_info)
            assert type(self.info.value) is exc_type, repr(self.info.value)
            return suppressed

    return _Exact()


@pytest.fixture(scope="module")
def production() -> bytes:
    return load_vector(PRODUCTION)


@pytest.fixture(scope="module")
def production_time(production: bytes) -> dt.datetime:
    return document_timestamp(production)


@pytest.fixture(scope="module")
def debug_document() -> bytes:
    return load_vector(DEBUG)


@pytest.fixture(scope="module")
def chain():
    return make_chain(NOW, intermediates=2)


@pytest.fixture(scope="module")
def own_document(chain) -> bytes:
    return chain.document(timestamp_ms=timestamp_ms(NOW), nonce=b"fresh nonce")


def payload_of(document: bytes) -> dict:
    return cbor2.loads(cbor2.loads(document)[2])


def flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    return data[:position] + bytes([data[position] ^ mask]) + data[position + 1 :]


# --- real documents ----------------------------------------------------------------------------


def test_production_document_verifies_as_of_its_timestamp(production, production_time):
    doc = verify(production, now=production_time)

    assert doc.module_id == PRODUCTION_MODULE_ID
    assert doc.digest == "SHA384"
    assert doc.timestamp == dt.datetime(2024, 9, 7, 14, 37, 39, 545000, tzinfo=dt.timezone.utc)
    assert doc.timestamp == production_time
    assert timestamp_ms(doc.timestamp) == PRODUCTION_TIMESTAMP_MS
    assert sorted(doc.pcrs) == list(range(16))
    assert all(len(value) == 48 for value in doc.pcrs.values())
    assert doc.pcrs[0].hex().startswith(PRODUCTION_PCR0_PREFIX)
    assert doc.pcrs[4].hex().startswith(PCR4_PREFIX)
    assert doc.pcrs[3] == bytes(48)
    assert doc.public_key == ONES
    assert doc.user_data == ONES
    assert doc.nonce == ONES
    assert doc.debug is False
    assert doc.raw == production


def test_indefinite_length_document_of_2025_verifies_as_of_its_timestamp():
    # Nitro's payload encoding since about September 2025: an indefinite-length map (0xbf ... 0xff).
    document = load_vector(INDEFINITE_2025)
    assert cbor2.loads(document)[2][:1] == b"\xbf"
    doc = verify(document, now=document_timestamp(document))

    assert doc.module_id == "i-02447a481344e9ec0-enc0199546b533fd5d0"
    assert doc.timestamp == dt.datetime(2025, 9, 16, 21, 25, 49, 422000, tzinfo=dt.timezone.utc)
    assert sorted(doc.pcrs) == list(range(16)) and doc.pcrs[0] == doc.pcrs[1]
    assert doc.pcrs[4] == hashlib.sha384(bytes(48) + b"i-02447a481344e9ec0").digest()
    assert doc.nonce is None and len(doc.user_data) == 32 and len(doc.public_key) == 130
    assert doc.cabundle[0] == attestation.aws_nitro_root()
    assert doc.debug is False
    with raises_exactly(CertificateExpired):
        verify(document)  # its leaf lived three hours in 2025


def test_production_document_certificates(production, production_time):
    doc = verify(production, now=production_time)

    assert PRODUCTION_MODULE_ID in doc.certificate.subject.rfc4514_string()
    assert len(doc.cabundle) == 4
    assert doc.cabundle[0] == attestation.aws_nitro_root()
    leaf = doc.certificate
    assert leaf.not_valid_before_utc <= doc.timestamp <= leaf.not_valid_after_utc


def test_debug_document_is_refused_by_default(debug_document):
    with raises_exactly(DebugModeRefused, match="debug"):
        verify(debug_document, now=document_timestamp(debug_document))


def test_debug_document_verifies_when_allowed(debug_document, production, production_time):
    doc = verify(debug_document, now=document_timestamp(debug_document), allow_debug=True)

    assert doc.debug is True
    assert [doc.pcrs[index] for index in (0, 1, 2)] == [bytes(48)] * 3
    assert doc.pcrs[4] != bytes(48)
    assert doc.pcrs[4] == verify(production, now=production_time).pcrs[4]
    assert doc.user_data == doc.nonce == doc.public_key == ONES


def test_allow_debug_does_not_mark_production_as_debug(production, production_time):
    assert verify(production, now=production_time, allow_debug=True).debug is False


def test_tag_18_wrapped_document_verifies(production, production_time):
    tagged = b"\xd2" + production  # CBOR tag 18 (COSE_Sign1), one byte

    doc = verify(tagged, now=production_time)

    assert doc.module_id == PRODUCTION_MODULE_ID
    assert doc.raw == tagged


def test_tag_18_in_a_wider_head_is_the_same_tag(production, production_time):
    # Any valid encoding of AWS's bytes is read: a head one byte wider than needed means tag 18 too.
    assert verify(b"\xd8\x12" + production, now=production_time).module_id == PRODUCTION_MODULE_ID


@pytest.mark.parametrize(
    "prefix", [b"\xd8\x62", b"\xc0", b"\xd9\x00\x11"], ids=["tag98", "tag0", "tag17-wide"]
)
def test_other_tags_are_malformed(production, production_time, prefix):
    with raises_exactly(MalformedDocument, match="tag"):
        verify(prefix + production, now=production_time)


def test_bytearray_and_memoryview_are_accepted(production, production_time):
    assert verify(bytearray(production), now=production_time).raw == production
    assert verify(memoryview(production), now=production_time).raw == production


# --- roots -------------------------------------------------------------------------------------


def test_default_root_is_the_pinned_aws_root():
    root = attestation.aws_nitro_root()
    fingerprint = root.fingerprint(hashes.SHA256()).hex().upper()

    assert fingerprint == attestation.AWS_NITRO_ROOT_G1_SHA256
    assert root.public_bytes(Encoding.PEM).strip() == load_vector(AWS_ROOT_PEM).strip()


def test_roots_as_pem_bytes_and_as_certificate(production, production_time):
    pem = load_vector(AWS_ROOT_PEM)

    assert verify(production, roots=[pem], now=production_time).module_id == PRODUCTION_MODULE_ID
    root = attestation.aws_nitro_root()
    assert verify(production, roots=[root], now=production_time).module_id == PRODUCTION_MODULE_ID


def test_another_root_refuses_the_real_document(production, production_time, chain):
    with raises_exactly(CertificateChainInvalid, match="not a trusted root"):
        verify(production, roots=[chain.root_cert], now=production_time)


def test_any_of_several_roots_may_match(production, production_time, chain):
    roots = [chain.root_cert, load_vector(AWS_ROOT_PEM)]

    assert verify(production, roots=roots, now=production_time).module_id == PRODUCTION_MODULE_ID


def test_pem_bundle_entry_is_split_into_roots(production, production_time, chain):
    bundle = chain.root_cert.public_bytes(Encoding.PEM) + load_vector(AWS_ROOT_PEM)

    assert verify(production, roots=[bundle], now=production_time).digest == "SHA384"


def test_pinned_root_with_wrong_fingerprint_fails_loudly(chain):
    with raises_exactly(PinnedRootInvalid, match="corrupt"):
        attestation._root_from_pinned_pem(chain.root_cert.public_bytes(Encoding.PEM))
    with raises_exactly(PinnedRootInvalid, match="not a PEM"):
        attestation._root_from_pinned_pem(b"not a certificate")


# --- signature ---------------------------------------------------------------------------------


def test_signature_is_the_last_96_bytes(production):
    # The tests below flip bytes there: check the layout they assume.
    assert production[-98:-96] == b"\x58\x60"  # byte string of length 96
    assert production[-96:] == cbor2.loads(production)[3]


@pytest.mark.parametrize("offset", [0, 1, 24, 47, 48, 49, 72, 95])
def test_flipped_signature_byte_is_signature_invalid(production, production_time, offset):
    tampered = flip(production, len(production) - 96 + offset)

    with raises_exactly(SignatureInvalid, match="does not verify"):
        verify(tampered, now=production_time)


def _locate(document: bytes, name: str) -> int:
    """Offset in ``document`` of a byte inside the named part of the payload."""
    fields = payload_of(document)
    if name == "module_id":
        return document.index(fields["module_id"].encode()) + 5
    if name == "timestamp":
        return document.index(b"\x1b" + fields["timestamp"].to_bytes(8, "big")) + 8
    if name == "pcr0":
        return document.index(fields["pcrs"][0]) + 20
    if name == "certificate-signature":
        return document.index(fields["certificate"]) + len(fields["certificate"]) - 1
    if name == "cabundle-signature":
        last = fields["cabundle"][-1]
        return document.index(last) + len(last) - 1
    if name == "nonce":
        return document.rindex(fields["nonce"]) + 100  # nonce is the last 1024-byte field
    if name == "digest":
        return document.index(b"SHA384") + 5
    if name == "key-pcrs":
        return document.index(b"\x64pcrs") + 4
    if name == "payload-length":
        return document.index(b"\x59" + len(cbor2.loads(document)[2]).to_bytes(2, "big")) + 2
    raise AssertionError(name)


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ("module_id", SignatureInvalid),
        ("timestamp", SignatureInvalid),
        ("pcr0", SignatureInvalid),
        ("certificate-signature", SignatureInvalid),
        ("cabundle-signature", SignatureInvalid),
        ("nonce", SignatureInvalid),
        ("digest", MalformedDocument),  # "SHA385" is refused before the signature is checked
        ("key-pcrs", MalformedDocument),  # "pcrr": unknown field
        ("payload-length", MalformedDocument),
    ],
)
def test_flipped_payload_byte_is_refused(production, production_time, part, expected):
    tampered = flip(production, _locate(production, part))

    with raises_exactly(expected):
        verify(tampered, now=production_time)


def test_document_signed_by_another_key_is_signature_invalid(chain):
    intruder = ec.generate_private_key(ec.SECP384R1())
    document = chain.document(timestamp_ms=timestamp_ms(NOW), signing_key=intruder)

    with raises_exactly(SignatureInvalid, match="does not verify"):
        verify(document, roots=[chain.root_cert], now=NOW)


def test_leaf_with_p256_key_is_signature_invalid(chain):
    document = chain.document_with_new_leaf(NOW, common_name="p256 leaf", leaf_key=ec.generate_private_key(ec.SECP256R1()))

    with raises_exactly(SignatureInvalid, match="P-384"):
        verify(document, roots=[chain.root_cert], now=NOW)


# --- validity in time --------------------------------------------------------------------------


@pytest.mark.parametrize(("days", "state"), [(1, "expired"), (-1, "not yet valid")])
def test_real_document_outside_validity_is_certificate_expired(
    production, production_time, days, state
):
    with raises_exactly(CertificateExpired, match=f"leaf certificate .* is {state}"):
        verify(production, now=production_time + dt.timedelta(days=days))


def test_real_document_is_expired_today(production):
    with raises_exactly(CertificateExpired, match="expired"):
        verify(production)


def test_now_in_another_timezone_is_the_same_instant(production, production_time):
    tokyo = production_time.astimezone(dt.timezone(dt.timedelta(hours=9)))

    assert verify(production, now=tokyo).timestamp == production_time


def test_expired_intermediate_is_named(chain):
    later = NOW + dt.timedelta(days=31)  # past the intermediates (30 days), leaf re-issued
    document = chain.document_with_new_leaf(later, common_name="late leaf")

    with raises_exactly(CertificateExpired, match=r"cabundle\[1\] .* is expired"):
        verify(document, roots=[chain.root_cert], now=later)


# --- our own chain -----------------------------------------------------------------------------


def test_own_chain_verifies_with_its_root(chain, own_document):
    doc = verify(own_document, roots=[chain.root_cert], now=NOW)

    assert doc.certificate == chain.leaf_cert
    assert doc.cabundle == (chain.root_cert, *chain.intermediates)
    assert doc.nonce == b"fresh nonce"
    assert doc.public_key is None
    assert doc.user_data is None
    assert doc.timestamp == NOW
    assert dict(doc.pcrs) == sample_pcrs()


def test_own_chain_verifies_with_root_as_pem(chain, own_document):
    pem = chain.root_cert.public_bytes(Encoding.PEM)

    assert verify(own_document, roots=[pem], now=NOW).nonce == b"fresh nonce"


def test_own_chain_is_refused_by_the_default_aws_root(own_document):
    with raises_exactly(CertificateChainInvalid, match="not a trusted root"):
        verify(own_document, now=NOW)


def test_own_tagged_document_verifies(chain):
    document = chain.document(timestamp_ms=timestamp_ms(NOW), tagged=True)

    assert document[:1] == b"\xd2"
    assert verify(document, roots=[chain.root_cert], now=NOW).timestamp == NOW


def test_trusted_root_over_a_foreign_chain_is_refused(chain):
    foreign = make_chain(NOW, intermediates=2, name="foreign")
    document = build_document(
        root_key=chain.root_key,
        root_cert=chain.root_cert,  # trusted root named in the bundle ...
        intermediates=foreign.intermediates,  # ... but the leaf chains to another root
        leaf_key=foreign.leaf_key,
        leaf_cert=foreign.leaf_cert,
        pcrs=sample_pcrs(),
        timestamp_ms=timestamp_ms(NOW),
    )

    with raises_exactly(CertificateChainInvalid, match="does not verify"):
        verify(document, roots=[chain.root_cert], now=NOW)


def test_cabundle_out_of_order_is_refused(chain):
    document = build_document(
        root_key=chain.root_key,
        root_cert=chain.root_cert,
        intermediates=list(reversed(chain.intermediates)),
        leaf_key=chain.leaf_key,
        leaf_cert=chain.leaf_cert,
        pcrs=sample_pcrs(),
        timestamp_ms=timestamp_ms(NOW),
    )

    with raises_exactly(CertificateChainInvalid, match="not the chain"):
        verify(document, roots=[chain.root_cert], now=NOW)


def test_cabundle_with_an_unused_certificate_is_refused(chain):
    stray = make_chain(NOW, intermediates=1, name="stray").intermediates[0]
    document = build_document(
        root_key=chain.root_key,
        root_cert=chain.root_cert,
        intermediates=[*chain.intermediates, stray],
        leaf_key=chain.leaf_key,
        leaf_cert=chain.leaf_cert,
        pcrs=sample_pcrs(),
        timestamp_ms=timestamp_ms(NOW),
    )

    with raises_exactly(CertificateChainInvalid, match="not the chain"):
        verify(document, roots=[chain.root_cert], now=NOW)


def test_leaf_that_is_a_ca_is_refused(chain):
    document = chain.document_with_new_leaf(NOW, common_name="ca leaf", ca=True, path_length=0)

    with raises_exactly(CertificateChainInvalid, match="must not be a CA"):
        verify(document, roots=[chain.root_cert], now=NOW)


def test_intermediate_that_is_not_a_ca_is_refused(chain):
    key = ec.generate_private_key(ec.SECP384R1())
    not_ca = issue_certificate(
        common_name="not a ca",
        public_key=key.public_key(),
        issuer_cert=chain.root_cert,
        issuer_key=chain.root_key,
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=1),
        ca=False,
    )
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    leaf_cert = issue_certificate(
        common_name="leaf under a non-ca",
        public_key=leaf_key.public_key(),
        issuer_cert=not_ca,
        issuer_key=key,
        not_before=NOW - dt.timedelta(hours=1),
        not_after=NOW + dt.timedelta(hours=2),
        ca=False,
        authority_key_id=False,
    )
    document = build_document(
        root_key=chain.root_key,
        root_cert=chain.root_cert,
        intermediates=[not_ca],
        leaf_key=leaf_key,
        leaf_cert=leaf_cert,
        pcrs=sample_pcrs(),
        timestamp_ms=timestamp_ms(NOW),
    )

    with raises_exactly(CertificateChainInvalid, match="does not verify"):
        verify(document, roots=[chain.root_cert], now=NOW)


def test_leaf_directly_under_the_root_verifies():
    chain = make_chain(NOW, intermediates=0)
    document = chain.document(timestamp_ms=timestamp_ms(NOW))

    assert len(verify(document, roots=[chain.root_cert], now=NOW).cabundle) == 1


def test_own_debug_document(chain):
    document = chain.document(timestamp_ms=timestamp_ms(NOW), pcrs=sample_pcrs(debug=True))

    with raises_exactly(DebugModeRefused):
        verify(document, roots=[chain.root_cert], now=NOW)
    assert verify(document, roots=[chain.root_cert], now=NOW, allow_debug=True).debug is True


# --- expected PCRs and nonce -------------------------------------------------------------------


def test_expected_pcrs_match(production, production_time):
    pcrs = payload_of(production)["pcrs"]
    expected = {index: pcrs[index] for index in (0, 1, 2, 4)}

    assert verify(production, now=production_time, expected_pcrs=expected).pcrs[0] == pcrs[0]


@pytest.mark.parametrize("index", [0, 1, 2, 4, 8])
def test_expected_pcr_mismatch_names_the_index(production, production_time, index):
    pcrs = payload_of(production)["pcrs"]
    expected = {0: pcrs[0], index: flip(pcrs[index], 47)}

    with raises_exactly(PCRMismatch, match=rf"^PCR{index} does not match") as info:
        verify(production, now=production_time, expected_pcrs=expected)
    assert info.value.index == index


def test_expected_pcr_missing_from_the_document(production, production_time):
    with raises_exactly(PCRMismatch, match="PCR16 is not in the document") as info:
        verify(production, now=production_time, expected_pcrs={16: bytes(48)})
    assert info.value.index == 16


def test_nonce_match(production, production_time):
    assert verify(production, now=production_time, nonce=ONES).nonce == ONES


def test_nonce_mismatch(production, production_time):
    with raises_exactly(NonceMismatch, match="does not match"):
        verify(production, now=production_time, nonce=b"\x01" * 1023 + b"\x02")


def test_nonce_asked_but_absent(chain):
    document = chain.document(timestamp_ms=timestamp_ms(NOW), omit_fields=["nonce"])

    with raises_exactly(NonceMismatch, match="no nonce"):
        verify(document, roots=[chain.root_cert], now=NOW, nonce=b"expected")


def test_debug_is_refused_before_pcrs_are_compared(debug_document):
    with raises_exactly(DebugModeRefused):
        verify(
            debug_document,
            now=document_timestamp(debug_document),
            expected_pcrs={0: b"\x07" * 48},
        )


# --- malformed documents built with a valid signature ------------------------------------------


def build(chain, **fields) -> bytes:
    fields.setdefault("timestamp_ms", timestamp_ms(NOW))
    return chain.document(**fields)


@pytest.mark.parametrize(
    "field", ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"]
)
def test_missing_required_field_is_named(chain, field):
    with raises_exactly(MalformedDocument, match=f"missing required field '{field}'"):
        verify(build(chain, omit_fields=[field]), roots=[chain.root_cert], now=NOW)


@pytest.mark.parametrize("field", ["public_key", "user_data", "nonce"])
def test_optional_field_may_be_absent_or_null(chain, field):
    absent = verify(build(chain, omit_fields=[field]), roots=[chain.root_cert], now=NOW)
    null = verify(build(chain, extra_fields={field: None}), roots=[chain.root_cert], now=NOW)

    assert getattr(absent, field) is None
    assert getattr(null, field) is None


@pytest.mark.parametrize("field", ["public_key", "user_data", "nonce"])
def test_optional_field_of_1024_bytes_is_accepted_and_1025_refused(chain, field):
    ok = verify(build(chain, **{field: b"\xaa" * 1024}), roots=[chain.root_cert], now=NOW)
    assert getattr(ok, field) == b"\xaa" * 1024

    with raises_exactly(MalformedDocument, match=f"{field} must be null or at most 1024 bytes"):
        verify(build(chain, **{field: b"\xaa" * 1025}), roots=[chain.root_cert], now=NOW)


@pytest.mark.parametrize("field", ["public_key", "user_data", "nonce"])
def test_optional_field_of_wrong_type_is_refused(chain, field):
    with raises_exactly(MalformedDocument, match=field):
        verify(build(chain, extra_fields={field: "text"}), roots=[chain.root_cert], now=NOW)


def test_unknown_field_is_refused(chain):
    with raises_exactly(MalformedDocument, match="unknown field 'extra'"):
        verify(build(chain, extra_fields={"extra": b"x"}), roots=[chain.root_cert], now=NOW)


def test_unknown_integer_key_is_refused(chain):
    with raises_exactly(MalformedDocument, match="unknown field 7"):
        verify(build(chain, extra_fields={7: b"x"}), roots=[chain.root_cert], now=NOW)


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ({"digest": "SHA256"}, "digest"),
        ({"digest": b"SHA384"}, "digest"),
        ({"module_id": ""}, "module_id"),
        ({"module_id": b"i-0123"}, "module_id"),
        ({"timestamp": -1}, "timestamp"),
        ({"timestamp": 2**64 - 1}, "timestamp"),
        ({"timestamp": "1725719859545"}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"pcrs": {}}, "pcrs"),
        ({"pcrs": [bytes(48)]}, "pcrs"),
        ({"pcrs": {index: bytes(48) for index in range(33)}}, "pcrs"),
        ({"pcrs": {32: bytes(48)}}, "pcrs keys"),
        ({"pcrs": {-1: bytes(48)}}, "pcrs keys"),
        ({"pcrs": {"0": bytes(48)}}, "pcrs keys"),
        ({"pcrs": {0: bytes(32)}}, "PCR0 must be 48 bytes"),
        ({"pcrs": {0: bytes(64)}}, "PCR0 must be 48 bytes"),
        ({"pcrs": {3: "00" * 48}}, "PCR3 must be 48 bytes"),
        ({"certificate": b""}, "certificate"),
        ({"certificate": b"\x30" * 1025}, "certificate"),
        ({"certificate": "MII..."}, "certificate"),
        ({"certificate": b"not DER at all"}, "certificate is not a valid DER"),
        ({"cabundle": []}, "cabundle"),
        ({"cabundle": b"\x30\x00"}, "cabundle"),
        ({"cabundle": [b"\x30\x03\x02\x01\x00"]}, r"cabundle\[0\] is not a valid DER"),
        ({"cabundle": [b"\x30"] * 9}, "cabundle must be an array of 1..8"),
        ({"cabundle": ["text"]}, "cabundle entries"),
    ],
)
def test_malformed_field_is_refused(chain, fields, word):
    with raises_exactly(MalformedDocument, match=word):
        verify(build(chain, extra_fields=fields), roots=[chain.root_cert], now=NOW)


def test_payload_that_is_not_a_map(chain, own_document):
    outer = cbor2.loads(own_document)
    outer[2] = cbor2.dumps(["module_id"])

    with raises_exactly(MalformedDocument, match="payload must be a map"):
        verify(cbor2.dumps(outer), roots=[chain.root_cert], now=NOW)


@pytest.mark.parametrize(
    ("mutate", "word"),
    [
        (lambda outer: outer[:3], "array of 4"),
        (lambda outer: [*outer, b""], "array of 4"),
        (lambda outer: {"a": 1}, "array of 4"),
        (lambda outer: [cbor2.dumps({1: -7}), *outer[1:]], "ES384"),
        (lambda outer: [cbor2.dumps({1: -35, 4: b"kid"}), *outer[1:]], "ES384"),
        (lambda outer: [{1: -35}, *outer[1:]], "protected header must be a byte string"),
        (lambda outer: [b"\xa1\x01", *outer[1:]], "protected header"),
        (lambda outer: [outer[0], {4: b"kid"}, *outer[2:]], "unprotected header"),
        (lambda outer: [*outer[:2], None, outer[3]], "payload must be a byte string"),
        (lambda outer: [*outer[:3], outer[3][:95]], "96 bytes"),
        (lambda outer: [*outer[:3], outer[3] + b"\x00"], "96 bytes"),
        (lambda outer: [*outer[:3], "sig"], "96 bytes"),
    ],
)
def test_malformed_cose_structure_is_refused(own_document, chain, mutate, word):
    document = cbor2.dumps(mutate(cbor2.loads(own_document)))

    with raises_exactly(MalformedDocument, match=word):
        verify(document, roots=[chain.root_cert], now=NOW)


@pytest.mark.parametrize(
    ("document", "word"),
    [
        (b"", "COSE_Sign1"),
        (b"\x84", "COSE_Sign1"),
        (b"\x00" * 10, "trailing"),
        (b"\x9f\xff", "COSE_Sign1"),  # indefinite-length array
        (b"\x18\x01", "COSE_Sign1"),  # an integer, in a wider head than needed
        (b"\x00" * (64 * 1024 + 1), "at most"),
    ],
)
def test_malformed_cbor_is_refused(document, word):
    with raises_exactly(MalformedDocument, match=word):
        verify(document, now=NOW)


def test_trailing_bytes_after_the_document(production, production_time):
    with raises_exactly(MalformedDocument, match="trailing"):
        verify(production + b"\x00", now=production_time)


def test_duplicate_payload_key_is_refused(chain):
    # A dict cannot hold duplicate keys; splice a second "digest" entry into the encoding.
    outer = cbor2.loads(build(chain))
    encoded = bytearray(outer[2])
    assert encoded[0] == 0xA9  # map of 9 entries, header in one byte
    encoded[0] += 1
    encoded += cbor2.dumps("digest") + cbor2.dumps("SHA384")
    outer[2] = bytes(encoded)

    with raises_exactly(MalformedDocument, match="(?i)payload: .*duplicate"):
        verify(cbor2.dumps(outer), roots=[chain.root_cert], now=NOW)


# --- arguments ---------------------------------------------------------------------------------


def test_naive_now_is_a_value_error_naming_now(own_document, chain):
    with raises_exactly(ValueError, match="now must be a timezone-aware datetime"):
        verify(own_document, roots=[chain.root_cert], now=NOW.replace(tzinfo=None))


def test_now_of_wrong_type_is_a_type_error(own_document, chain):
    with raises_exactly(TypeError, match="now must be a datetime"):
        verify(own_document, roots=[chain.root_cert], now=1725719859.5)


@pytest.mark.parametrize("document", ["text", None, 12])
def test_document_of_wrong_type_is_a_type_error(document):
    with raises_exactly(TypeError, match="document must be bytes"):
        verify(document, now=NOW)


@pytest.mark.parametrize(
    ("roots", "exc", "word"),
    [
        ([], ValueError, "roots must not be empty"),
        (b"-----BEGIN CERTIFICATE-----", TypeError, "roots must be a list"),
        (["PEM text"], TypeError, "roots entries"),
        ([b"not pem"], ValueError, "not PEM certificates"),
    ],
)
def test_bad_roots_argument(own_document, roots, exc, word):
    with raises_exactly(exc, match=word):
        verify(own_document, roots=roots, now=NOW)


def test_single_certificate_as_roots_is_a_type_error(own_document, chain):
    with raises_exactly(TypeError, match="roots must be a list"):
        verify(own_document, roots=chain.root_cert, now=NOW)


@pytest.mark.parametrize(
    ("expected_pcrs", "exc", "word"),
    [
        ([bytes(48)], TypeError, "expected_pcrs must be a mapping"),
        ({0: bytes(48).hex()}, TypeError, r"expected_pcrs\[0\] must be bytes"),
        ({0: bytes(32)}, ValueError, r"expected_pcrs\[0\] must be 48 bytes"),
        ({32: bytes(48)}, ValueError, "expected_pcrs keys"),
        ({"0": bytes(48)}, ValueError, "expected_pcrs keys"),
        ({True: bytes(48)}, ValueError, "expected_pcrs keys"),
    ],
)
def test_bad_expected_pcrs_argument(own_document, chain, expected_pcrs, exc, word):
    with raises_exactly(exc, match=word):
        verify(own_document, roots=[chain.root_cert], now=NOW, expected_pcrs=expected_pcrs)


def test_nonce_of_wrong_type_is_a_type_error(own_document, chain):
    with raises_exactly(TypeError, match="nonce must be bytes"):
        verify(own_document, roots=[chain.root_cert], now=NOW, nonce="fresh nonce")


# --- the result --------------------------------------------------------------------------------


def test_document_is_immutable(production, production_time):
    doc = verify(production, now=production_time)

    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.module_id = "other"  # type: ignore[misc]
    with raises_exactly(TypeError):
        doc.pcrs[0] = bytes(48)  # type: ignore[index]
    assert isinstance(doc.cabundle, tuple)


def test_documents_compare_by_raw_bytes(production, production_time):
    first = verify(production, now=production_time)
    second = verify(production, now=production_time)

    assert first == second
    assert hash(first) == hash(second)
    assert first != verify(b"\xd2" + production, now=production_time)


def test_repr_is_short(production, production_time):
    text = repr(verify(production, now=production_time))

    assert PRODUCTION_MODULE_ID in text
    assert len(text) < 200


def test_describe_is_json_ready(production, production_time):
    summary = attestation.describe(verify(production, now=production_time))
    round_trip = json.loads(json.dumps(summary))

    assert round_trip["module_id"] == PRODUCTION_MODULE_ID
    assert round_trip["timestamp"] == "2024-09-07T14:37:39.545+00:00"
    assert round_trip["debug"] is False
    assert sorted(round_trip["pcrs"], key=int) == [str(index) for index in range(16)]
    assert round_trip["pcrs"]["0"].startswith(PRODUCTION_PCR0_PREFIX)
    assert round_trip["nonce"] == ONES.hex()
    assert PRODUCTION_MODULE_ID in round_trip["certificate"]["subject"]
    assert round_trip["certificate"]["not_valid_after"] == "2024-09-07T17:37:39+00:00"
    assert round_trip["cabundle"][0]["sha256"].upper() == attestation.AWS_NITRO_ROOT_G1_SHA256


def test_describe_shows_absent_fields_as_null(chain):
    document = build(chain, omit_fields=["nonce", "user_data"], public_key=b"\x02\x03")
    summary = attestation.describe(verify(document, roots=[chain.root_cert], now=NOW))

    assert summary["nonce"] is None
    assert summary["user_data"] is None
    assert summary["public_key"] == "0203"


def test_error_hierarchy():
    for error in (
        MalformedDocument,
        SignatureInvalid,
        CertificateChainInvalid,
        CertificateExpired,
        PCRMismatch,
        NonceMismatch,
        DebugModeRefused,
        PinnedRootInvalid,
    ):
        assert issubclass(error, AttestationError)
    assert issubclass(AttestationError, ZeroCopyError)
    assert {"verify", "describe", "AttestationDocument", "AttestationError"} <= set(
        attestation.__all__
    )
