"""KMS ``CiphertextForRecipient``: the enclave's parser/decryptor against real KMS samples and
against the emulator's builder (round trip, byte shape, opaque decryption errors, strict
structure checks, and fuzzing that only ever sees ``RecipientCiphertextError``)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import cms, x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.kms.cms import build_ciphertext_for_recipient, recipient_key_identifier
from enclave.cms import (
    RecipientCiphertextError,
    decrypt_ciphertext_for_recipient,
    parse_ciphertext_for_recipient,
)

DATA = Path(__file__).parent / "data"
OPAQUE = "could not decrypt CiphertextForRecipient"
OAEP_SHA256 = asym_padding.OAEP(
    mgf=asym_padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)
Change = Callable[[cms.ContentInfo], None]
# The real samples' bytes up to the RecipientInfos SET's long-form length.
REAL_PREFIX = bytes.fromhex("3080 0609 2a864886f70d010703 a080 3080 020102 3182")


def load_vectors_from_file(name: str, loader: Callable[[Path], object]) -> object:
    return loader(DATA / name)


def _load_kms_vectors(path: Path) -> list[dict[str, bytes]]:
    doc = json.loads(path.read_text())
    return [
        {
            "blob": bytes.fromhex(v["ciphertext_for_recipient_ber"]),
            "encrypted_key": bytes.fromhex(v["encrypted_key"]),
            "iv": bytes.fromhex(v["iv"]),
            "ciphertext": bytes.fromhex(v["ciphertext"]),
        }
        for v in doc["vectors"]
    ]


@functools.cache
def kms_vectors() -> list[dict[str, bytes]]:
    vectors = load_vectors_from_file("kms/ciphertext-for-recipient.json", _load_kms_vectors)
    return vectors  # type: ignore[return-value]


@functools.cache
def rsa_key(index: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def spki(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def build(plaintext: bytes = b"sealed secret", *, chunk_size: int | None = None) -> bytes:
    return build_ciphertext_for_recipient(plaintext, spki(rsa_key()), chunk_size=chunk_size)


def mutate(blob: bytes, change: Change) -> bytes:
    """Re-encode ``blob`` (as DER) after ``change`` edits its parsed ContentInfo."""
    info = cms.ContentInfo.load(blob)
    change(info)
    return info.dump(force=True)


def ktri(info: cms.ContentInfo) -> cms.KeyTransRecipientInfo:
    return info["content"]["recipient_infos"][0].chosen


def eci(info: cms.ContentInfo) -> cms.EncryptedContentInfo:
    return info["content"]["encrypted_content_info"]


def skeleton(blob: bytes) -> bytes:
    """``blob`` with key identifier, encrypted key, IV and ciphertext zeroed: its pure shape."""
    encrypted_key, iv, ciphertext = parse_ciphertext_for_recipient(blob)
    key_id = ktri(cms.ContentInfo.load(blob))["rid"].chosen.native
    for field in (key_id, encrypted_key, iv, ciphertext):
        assert blob.count(field) == 1
        blob = blob.replace(field, bytes(len(field)))
    return blob


# --- real KMS samples ------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_real_vector_parses_to_expected_fields(index: int) -> None:
    vector = kms_vectors()[index]
    assert parse_ciphertext_for_recipient(vector["blob"]) == (
        vector["encrypted_key"],
        vector["iv"],
        vector["ciphertext"],
    )


@pytest.mark.parametrize("index", [0, 1])
def test_real_vector_der_form_parses_to_same_fields(index: int) -> None:
    vector = kms_vectors()[index]
    der = cms.ContentInfo.load(vector["blob"]).dump(force=True)
    assert der[:2] == b"\x30\x82" and der != vector["blob"]
    assert parse_ciphertext_for_recipient(der) == (
        vector["encrypted_key"],
        vector["iv"],
        vector["ciphertext"],
    )


def test_real_vectors_cover_both_content_forms() -> None:
    # Sample 0 carries constructed [0] with an OCTET STRING chunk, sample 1 a primitive [0].
    chunked, primitive = (v["blob"] for v in kms_vectors())
    assert chunked.startswith(REAL_PREFIX) and primitive.startswith(REAL_PREFIX)
    assert b"\xa0\x80\x04\x30" + kms_vectors()[0]["ciphertext"] + bytes(10) == chunked[-62:]
    assert b"\x80\x10" + kms_vectors()[1]["ciphertext"] + bytes(8) == primitive[-26:]


def test_parse_accepts_bytearray_and_memoryview() -> None:
    vector = kms_vectors()[1]
    expected = parse_ciphertext_for_recipient(vector["blob"])
    assert parse_ciphertext_for_recipient(bytearray(vector["blob"])) == expected
    assert parse_ciphertext_for_recipient(memoryview(vector["blob"])) == expected


def test_parse_refuses_non_bytes_with_type_error() -> None:
    with pytest.raises(TypeError, match="blob must be bytes"):
        parse_ciphertext_for_recipient(kms_vectors()[0]["blob"].hex())  # type: ignore[arg-type]


# --- emulator builder: round trip and shape --------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 1, 16, 17, 1000])
@pytest.mark.parametrize("size", [1, 15, 16, 32, 100])
def test_emulator_blob_round_trips(size: int, chunk_size: int | None) -> None:
    plaintext = bytes(range(size))
    blob = build(plaintext, chunk_size=chunk_size)
    encrypted_key, iv, ciphertext = parse_ciphertext_for_recipient(blob)
    assert len(encrypted_key) == 256 and len(iv) == 16
    assert len(ciphertext) == (size // 16 + 1) * 16  # PKCS#7 always pads
    assert decrypt_ciphertext_for_recipient(blob, rsa_key()) == plaintext


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_emulator_blob_der_form_parses_and_decrypts(chunk_size: int | None) -> None:
    blob = build(b"x" * 40, chunk_size=chunk_size)
    der = cms.ContentInfo.load(blob).dump(force=True)
    assert der[:2] == b"\x30\x82" and bytes(4) not in der[-8:]
    assert parse_ciphertext_for_recipient(der) == parse_ciphertext_for_recipient(blob)
    assert decrypt_ciphertext_for_recipient(der, rsa_key()) == b"x" * 40


def test_emulator_primitive_form_has_real_prefix_and_ending() -> None:
    blob = build(b"p" * 10)
    assert blob.startswith(REAL_PREFIX)
    # primitive [0] of 16 bytes, then the end-of-contents of ECI, EnvelopedData, [0], ContentInfo
    assert blob[-26:-24] == b"\x80\x10" and blob.endswith(bytes(8))


def test_emulator_chunked_form_has_real_prefix_and_ending() -> None:
    blob = build(b"c" * 40, chunk_size=16)
    assert blob.startswith(REAL_PREFIX)
    # three OCTET STRING chunks inside an indefinite [0], then five end-of-contents
    tail = blob[-(2 + 3 * 18 + 10) :]
    assert tail[:2] == b"\xa0\x80" and tail[2:4] == tail[20:22] == tail[38:40] == b"\x04\x10"
    assert tail.endswith(bytes(10))


@pytest.mark.parametrize(
    ("real_index", "plaintext", "chunk_size"), [(0, b"k" * 40, 48), (1, b"k" * 10, None)]
)
def test_emulator_bytes_match_real_kms_layout(
    real_index: int, plaintext: bytes, chunk_size: int | None
) -> None:
    # Same key size and ciphertext length as the sample: every byte but the values must agree.
    blob = build(plaintext, chunk_size=chunk_size)
    assert skeleton(blob) == skeleton(kms_vectors()[real_index]["blob"])


def test_emulator_key_identifier_is_sha256_of_spki() -> None:
    info = cms.ContentInfo.load(build())
    assert ktri(info)["rid"].chosen.native == recipient_key_identifier(rsa_key().public_key())


def test_emulator_uses_fresh_content_key_and_iv() -> None:
    first, second = (parse_ciphertext_for_recipient(build(b"same")) for _ in range(2))
    assert first[0] != second[0] and first[1] != second[1] and first[2] != second[2]


@pytest.mark.parametrize(
    ("key_der", "message"),
    [
        (lambda: spki(ec.generate_private_key(ec.SECP256R1())), "must be RSA"),
        (lambda: spki(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "1024 bits"),
        (lambda: b"\x30\x03\x02\x01\x00", "not a DER SubjectPublicKeyInfo"),
    ],
)
def test_builder_refuses_unsuitable_recipient_keys(
    key_der: Callable[[], bytes], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_ciphertext_for_recipient(b"secret", key_der())


def test_builder_refuses_empty_plaintext_and_bad_chunk_size() -> None:
    with pytest.raises(ValueError, match="plaintext must not be empty"):
        build(b"")
    with pytest.raises(ValueError, match="chunk_size"):
        build(b"x", chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        build(b"x", chunk_size=True)


# --- decryption: one opaque error ------------------------------------------------------------


def assert_opaque(blob: bytes, private_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(RecipientCiphertextError) as caught:
        decrypt_ciphertext_for_recipient(blob, private_key)
    assert str(caught.value) == OPAQUE
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def flip(blob: bytes, field: bytes, offset: int) -> bytes:
    """Flip one bit of ``field`` (found once in ``blob``) at ``offset``."""
    start = blob.index(field)
    assert blob.count(field) == 1
    at = start + offset % len(field)
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]


def test_wrong_private_key_gives_opaque_error() -> None:
    assert_opaque(build(), rsa_key(1))


def test_tampered_encrypted_key_gives_opaque_error() -> None:
    blob = build()
    encrypted_key, _, _ = parse_ciphertext_for_recipient(blob)
    assert_opaque(flip(blob, encrypted_key, 100), rsa_key())


def test_tampered_iv_gives_opaque_error() -> None:
    # 10-byte plaintext: IV byte 15 lands on the last padding byte (06 -> 07, never valid here).
    blob = build(b"p" * 10)
    _, iv, _ = parse_ciphertext_for_recipient(blob)
    assert_opaque(flip(blob, iv, 15), rsa_key())


def test_tampered_ciphertext_gives_opaque_error() -> None:
    # 20-byte plaintext in two blocks: flipping block 1's last byte flips block 2's padding byte.
    blob = build(b"q" * 20, chunk_size=None)
    _, _, ciphertext = parse_ciphertext_for_recipient(blob)
    assert_opaque(flip(blob, ciphertext[:16], 15), rsa_key())


def _with_content_key(content_key: bytes, padded: bytes) -> bytes:
    """A blob whose RSA block holds ``content_key`` and whose content is ``padded`` encrypted."""
    iv = bytes(16)
    encryptor = Cipher(algorithms.AES(content_key[:32].ljust(32, b"\0")), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    encrypted_key = rsa_key().public_key().encrypt(content_key, OAEP_SHA256)

    def change(info: cms.ContentInfo) -> None:
        ktri(info)["encrypted_key"] = encrypted_key
        eci(info)["content_encryption_algorithm"] = {"algorithm": "aes256_cbc", "parameters": iv}
        eci(info)["encrypted_content"] = ciphertext

    return mutate(build(), change)


def test_content_key_of_wrong_size_gives_opaque_error() -> None:
    padded = b"ok" + b"\x0e" * 14
    good = _with_content_key(b"K" * 32, padded)
    assert decrypt_ciphertext_for_recipient(good, rsa_key()) == b"ok"
    assert_opaque(_with_content_key(b"K" * 16, padded), rsa_key())


@pytest.mark.parametrize("padded", [bytes(16), b"x" * 15 + b"\x11", b"x" * 13 + b"\x01\x02\x03"])
def test_bad_padding_gives_opaque_error(padded: bytes) -> None:
    assert_opaque(_with_content_key(b"K" * 32, padded), rsa_key())


def test_decrypt_reports_structure_errors_before_crypto() -> None:
    with pytest.raises(RecipientCiphertextError, match="trailing"):
        decrypt_ciphertext_for_recipient(build() + b"\x00", rsa_key())


def test_decrypt_refuses_non_rsa_key_with_type_error() -> None:
    with pytest.raises(TypeError, match="RSA private key"):
        ec_key = ec.generate_private_key(ec.SECP256R1())
        decrypt_ciphertext_for_recipient(build(), ec_key)  # type: ignore[arg-type]


# --- strict structure ------------------------------------------------------------------------


def _set_kea(value: dict) -> Change:
    def change(info: cms.ContentInfo) -> None:
        ktri(info)["key_encryption_algorithm"] = value

    return change


def _set_cea(algorithm: str, iv: bytes) -> Change:
    def change(info: cms.ContentInfo) -> None:
        eci(info)["content_encryption_algorithm"] = {"algorithm": algorithm, "parameters": iv}

    return change


def _two_recipients(info: cms.ContentInfo) -> None:
    first = info["content"]["recipient_infos"][0]
    info["content"]["recipient_infos"] = [first, first]


def _ski_of_20_bytes(info: cms.ContentInfo) -> None:
    ktri(info)["rid"] = cms.RecipientIdentifier(name="subject_key_identifier", value=bytes(20))


def _issuer_and_serial(info: cms.ContentInfo) -> None:
    ktri(info)["rid"] = cms.RecipientIdentifier(
        name="issuer_and_serial_number",
        value={"issuer": x509.Name.build({"common_name": "x"}), "serial_number": 1},
    )


def _digest(name: str) -> dict:
    return {"algorithm": name}


def _oaep(hash_name: str, mgf_hash: str, **extra: object) -> dict:
    return {
        "algorithm": "rsaes_oaep",
        "parameters": {
            "hash_algorithm": _digest(hash_name),
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": _digest(mgf_hash)},
            **extra,
        },
    }


def enveloped(info: cms.ContentInfo) -> cms.EnvelopedData:
    return info["content"]


def _set(where: Callable[[cms.ContentInfo], object], field: str, value: object) -> Change:
    def change(info: cms.ContentInfo) -> None:
        where(info)[field] = value  # type: ignore[index]

    return change


_LABEL = {"algorithm": "p_specified", "parameters": b"L"}
_ATTRS = [{"type": "content_type", "values": ["data"]}]

STRUCTURE_CASES: dict[str, tuple[Change, str]] = {
    "version v0": (_set(enveloped, "version", "v0"), "EnvelopedData version is v0"),
    "two recipients": (_two_recipients, "2 recipients"),
    "ktri v0": (_set(ktri, "version", "v0"), "KeyTransRecipientInfo version"),
    "issuer and serial rid": (_issuer_and_serial, "subject_key_identifier"),
    "20-byte key id": (_ski_of_20_bytes, "subjectKeyIdentifier is 20 bytes"),
    "rsaes_pkcs1v15": (_set_kea({"algorithm": "rsaes_pkcs1v15"}), "rsaes_pkcs1v15"),
    "OAEP defaults": (_set_kea({"algorithm": "rsaes_oaep"}), "SHA-1 defaults"),
    "OAEP with SHA-1": (_set_kea(_oaep("sha1", "sha1")), "OAEP hash is sha1"),
    "MGF1 with SHA-1": (_set_kea(_oaep("sha256", "sha1")), "MGF1 hash is sha1"),
    "OAEP label": (_set_kea(_oaep("sha256", "sha256", p_source_algorithm=_LABEL)), "label"),
    "empty encrypted key": (_set(ktri, "encrypted_key", b""), "encrypted key is empty"),
    "AES-128-CBC": (_set_cea("aes128_cbc", bytes(16)), "aes128_cbc"),
    "IV of 8 bytes": (_set_cea("aes256_cbc", bytes(8)), "IV is 8 bytes"),
    "content type signed_data": (
        _set(eci, "content_type", "signed_data"),
        "encrypted content type is signed_data",
    ),
    "content absent": (_set(eci, "encrypted_content", None), "encrypted content absent"),
    "content empty": (_set(eci, "encrypted_content", b""), "encrypted content is empty"),
    "content of 20 bytes": (_set(eci, "encrypted_content", bytes(20)), "not a multiple of 16"),
    "unprotected attributes": (_set(enveloped, "unprotected_attrs", _ATTRS), "unprotectedAttrs"),
    "originator info": (_set(enveloped, "originator_info", {"crls": []}), "originatorInfo"),
}


@pytest.mark.parametrize("case", sorted(STRUCTURE_CASES))
def test_structure_violation_is_refused(case: str) -> None:
    change, message = STRUCTURE_CASES[case]
    blob = mutate(build(), change)
    with pytest.raises(RecipientCiphertextError, match=message):
        parse_ciphertext_for_recipient(blob)


def test_unchanged_mutation_still_parses() -> None:
    # The negative cases above differ from a good blob only by their one change.
    blob = build()
    unchanged = mutate(blob, lambda info: None)
    assert parse_ciphertext_for_recipient(unchanged) == parse_ciphertext_for_recipient(blob)


def test_wrong_outer_content_type_is_refused() -> None:
    enveloped_oid = bytes.fromhex("2a864886f70d010703")
    data_oid = bytes.fromhex("2a864886f70d010701")
    blob = kms_vectors()[0]["blob"]
    assert blob.count(enveloped_oid) == 1
    with pytest.raises(RecipientCiphertextError, match="content type is data, expected envelope"):
        parse_ciphertext_for_recipient(blob.replace(enveloped_oid, data_oid))


@pytest.mark.parametrize("index", [0, 1])
def test_trailing_bytes_are_refused(index: int) -> None:
    with pytest.raises(RecipientCiphertextError, match="1 trailing bytes"):
        parse_ciphertext_for_recipient(kms_vectors()[index]["blob"] + b"\x00")


def test_empty_input_is_refused() -> None:
    with pytest.raises(RecipientCiphertextError, match="empty input"):
        parse_ciphertext_for_recipient(b"")


@pytest.mark.parametrize("keep", [1, 2, 20, 100, -1, -2, -9])
def test_truncated_input_is_refused(keep: int) -> None:
    blob = kms_vectors()[0]["blob"][:keep]
    with pytest.raises(RecipientCiphertextError, match="truncated"):
        parse_ciphertext_for_recipient(blob)


def test_definite_length_constructed_content_is_refused() -> None:
    # asn1crypto takes constructed strings only in indefinite length, which is what KMS sends.
    vector = kms_vectors()[0]
    ciphertext = vector["ciphertext"]
    chunked = b"\xa0\x80\x04\x30" + ciphertext + b"\x00\x00"
    definite = b"\xa0\x32\x04\x30" + ciphertext
    blob = vector["blob"].replace(chunked, definite)
    assert blob != vector["blob"]
    with pytest.raises(RecipientCiphertextError, match="malformed EncryptedContentInfo"):
        parse_ciphertext_for_recipient(blob)


def test_context_tagged_chunks_are_refused() -> None:
    vector = kms_vectors()[0]
    blob = vector["blob"].replace(b"\xa0\x80\x04\x30", b"\xa0\x80\x80\x30")
    with pytest.raises(RecipientCiphertextError, match="malformed EncryptedContentInfo"):
        parse_ciphertext_for_recipient(blob)


# --- fuzzing ---------------------------------------------------------------------------------


def _seeds() -> list[bytes]:
    blobs = [v["blob"] for v in kms_vectors()]
    return blobs + [cms.ContentInfo.load(b).dump(force=True) for b in blobs]


def _parses_or_refuses(blob: bytes) -> None:
    try:
        fields = parse_ciphertext_for_recipient(blob)
    except RecipientCiphertextError:
        return
    assert all(isinstance(field, bytes) and field for field in fields)
    assert len(fields[1]) == 16 and len(fields[2]) % 16 == 0


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 8)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
)


def _apply(blob: bytes, mutation: tuple[str, int, int]) -> bytes:
    kind, position, value = mutation
    at = position % (len(blob) + 1)
    if kind == "flip" and blob:
        at %= len(blob)
        return blob[:at] + bytes([blob[at] ^ value]) + blob[at + 1 :]
    if kind == "insert":
        return blob[:at] + bytes([value]) + blob[at:]
    if kind == "delete":
        return blob[:at] + blob[at + value :]
    return blob[:at]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_parse_or_refuse(blob: bytes) -> None:
    _parses_or_refuses(blob)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(4)), st.lists(_mutation, min_size=1, max_size=4))
def test_fuzz_mutated_real_vectors_parse_or_refuse(seed: int, mutations: list) -> None:
    blob = _seeds()[seed]
    for mutation in mutations:
        blob = _apply(blob, mutation)
    _parses_or_refuses(blob)


@functools.cache
def _fixed_emulator_blob() -> bytes:
    return build(b"fuzzed secret value", chunk_size=8)


@settings(max_examples=100, deadline=None)
@given(st.lists(_mutation, min_size=1, max_size=3))
def test_fuzz_mutated_emulator_blob_decrypts_or_refuses(mutations: list) -> None:
    blob = _fixed_emulator_blob()
    for mutation in mutations:
        blob = _apply(blob, mutation)
    try:
        plaintext = decrypt_ciphertext_for_recipient(blob, rsa_key())
    except RecipientCiphertextError:
        return
    assert isinstance(plaintext, bytes)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.none() | st.integers(1, 64))
def test_fuzz_round_trip(plaintext: bytes, chunk_size: int | None) -> None:
    blob = build(plaintext, chunk_size=chunk_size)
    assert decrypt_ciphertext_for_recipient(blob, rsa_key()) == plaintext
