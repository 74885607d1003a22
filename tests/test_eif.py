"""EIF parsing and PCR computation, against files built from the format description."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from eif_builder import build_eif
from zerocopy._cli import main
from zerocopy.eif import EifError, parse_eif

KERNEL, CMDLINE, RAMDISK1, RAMDISK2 = b"kernel" * 100, b"console=ttyS0", b"bootstrap-ramdisk", b"application-ramdisk"


def expected_pcr(*parts: bytes) -> bytes:
    return hashlib.sha384(bytes(48) + hashlib.sha384(b"".join(parts)).digest()).digest()


@pytest.fixture
def image() -> bytes:
    return build_eif([(1, KERNEL), (2, CMDLINE), (3, RAMDISK1), (3, RAMDISK2), (5, b'{"BuildTime":"x"}')])


def test_pcrs_follow_the_documented_formula(image):
    parsed = parse_eif(image)
    assert parsed.pcrs[0] == expected_pcr(KERNEL, CMDLINE, RAMDISK1, RAMDISK2)
    assert parsed.pcrs[1] == expected_pcr(KERNEL, CMDLINE, RAMDISK1)
    assert parsed.pcrs[2] == expected_pcr(RAMDISK2)
    assert 8 not in parsed.pcrs and parsed.crc_ok
    assert [section.name for section in parsed.sections] == ["kernel", "cmdline", "ramdisk", "ramdisk", "metadata"]


def test_changing_the_application_changes_pcr0_and_pcr2_only(image):
    other = parse_eif(build_eif([(1, KERNEL), (2, CMDLINE), (3, RAMDISK1), (3, RAMDISK2 + b"!"), (5, b"{}")]))
    parsed = parse_eif(image)
    assert other.pcrs[1] == parsed.pcrs[1]
    assert other.pcrs[0] != parsed.pcrs[0] and other.pcrs[2] != parsed.pcrs[2]


def test_a_damaged_crc_is_reported(image, tmp_path, capsys):
    damaged = tmp_path / "damaged.eif"
    damaged.write_bytes(build_eif([(1, KERNEL), (2, CMDLINE), (3, RAMDISK1)], corrupt_crc=True))
    assert parse_eif(damaged.read_bytes()).crc_ok is False
    assert main(["eif", str(damaged)]) == 1
    assert "CRC-32 does not match" in capsys.readouterr().err
    good = tmp_path / "good.eif"
    good.write_bytes(image)
    assert main(["eif", str(good), "--json"]) == 0
    assert expected_pcr(KERNEL, CMDLINE, RAMDISK1, RAMDISK2).hex() in capsys.readouterr().out


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "shorter"),
        (b"ELF!" + bytes(600), "magic"),
        (build_eif([(1, KERNEL), (2, CMDLINE)]), "at least one ramdisk"),
        (build_eif([(1, KERNEL), (1, KERNEL), (2, CMDLINE), (3, RAMDISK1)]), "exactly one kernel"),
        (build_eif([(1, KERNEL), (2, CMDLINE), (3, RAMDISK1)])[:-5], "outside the file"),
        (build_eif([(1, KERNEL), (2, CMDLINE), (9, RAMDISK1)]), "unknown type"),
    ],
    ids=["empty", "not-eif", "no-ramdisk", "two-kernels", "truncated", "unknown-section"],
)
def test_malformed_images_are_eif_errors(data, words):
    with pytest.raises(EifError, match=words):
        parse_eif(data)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000), flips=st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 255)), max_size=5))
def test_garbage_and_mutated_images_only_raise_eif_error(data, flips):
    base = bytearray(build_eif([(1, KERNEL[:50]), (2, CMDLINE), (3, RAMDISK1)]) if len(data) % 2 else data)
    for position, mask in flips:
        if base:
            base[position % len(base)] ^= mask
    try:
        parse_eif(bytes(base))
    except EifError:
        pass


def test_a_signed_image_has_pcr8_over_its_signing_certificate():
    import datetime as dt

    import cbor2
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eif signer")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA384())
    der = certificate.public_bytes(serialization.Encoding.DER)
    for encoded in (der, certificate.public_bytes(serialization.Encoding.PEM)):
        signature = cbor2.dumps([{"signing_certificate": encoded, "signature": b"\x01" * 96}])
        parsed = parse_eif(build_eif([(1, KERNEL), (2, CMDLINE), (3, RAMDISK1), (4, signature)]))
        assert parsed.pcrs[8] == expected_pcr(der)
    with pytest.raises(EifError, match="signing certificate"):
        parse_eif(build_eif([(1, KERNEL), (2, CMDLINE), (3, RAMDISK1), (4, b"\xa0")]))
