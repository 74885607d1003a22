"""The EIF writer and reader, checked against the image-format specification computed here.

``spec_measurements`` is written from aws-nitro-enclaves-image-format (src/defs/mod.rs, src/utils
eif_reader.rs and get_pcrs) with struct and hashlib only: it walks the sections from the end of the
548-byte header, as the reference reader does, and never calls zerocopy.eif. Whatever the writer
makes, the reader and this computation must agree on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
import zlib

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings, strategies as st

from zerocopy._cli import main
from zerocopy.eif import EifError, assemble_eif, identity_metadata, parse_eif, write_eif

KERNEL, CMDLINE, RAMDISK1, RAMDISK2 = b"kernel" * 100, b"console=ttyS0", b"bootstrap-ramdisk", b"application-ramdisk"
HEADER_SIZE, SECTION_HEADER_SIZE = 548, 12


def extend(*parts: bytes) -> bytes:
    """A PCR after one extend from zero with SHA-384 over ``parts`` (the spec's tpm_extend)."""
    return hashlib.sha384(bytes(48) + hashlib.sha384(b"".join(parts)).digest()).digest()


def spec_measurements(data: bytes) -> dict:
    """PCRs, CRC check and signing certificate (DER) of ``data``, from the specification alone."""
    position, ramdisks, kernel_and_cmdline, certificate = HEADER_SIZE, [], [], None
    crc = zlib.crc32(data[: HEADER_SIZE - 4])
    while position < len(data):
        kind, _flags, size = struct.unpack_from(">HHQ", data, position)
        body = data[position + SECTION_HEADER_SIZE : position + SECTION_HEADER_SIZE + size]
        crc = zlib.crc32(data[position : position + SECTION_HEADER_SIZE + size], crc)
        position += SECTION_HEADER_SIZE + size
        if kind in (1, 2):
            kernel_and_cmdline.append(body)
        elif kind == 3:
            ramdisks.append(body)
        elif kind == 4:
            pem = bytes(cbor2.loads(body)[0]["signing_certificate"])
            certificate = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    pcrs = {0: extend(*kernel_and_cmdline, *ramdisks), 1: extend(*kernel_and_cmdline, ramdisks[0]), 2: extend(*ramdisks[1:])}
    if certificate is not None:
        pcrs[8] = extend(certificate)
    return {"pcrs": pcrs, "crc_ok": (crc & 0xFFFFFFFF) == struct.unpack_from(">I", data, HEADER_SIZE - 4)[0], "certificate": certificate}


def signer(curve: ec.EllipticCurve = ec.SECP384R1()) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(curve)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eif signer")])
    now = dt.datetime.now(dt.timezone.utc)
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
    certificate = builder.not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA384())
    return key, certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def image() -> bytes:
    return write_eif(KERNEL, CMDLINE, [RAMDISK1, RAMDISK2], metadata={"BuildTime": "x"})


def test_pcrs_follow_the_specification(image):
    parsed = parse_eif(image)
    assert parsed.pcrs == spec_measurements(image)["pcrs"]
    assert parsed.pcrs[0] == extend(KERNEL, CMDLINE, RAMDISK1, RAMDISK2)
    assert parsed.pcrs[1] == extend(KERNEL, CMDLINE, RAMDISK1)
    assert parsed.pcrs[2] == extend(RAMDISK2)
    assert 8 not in parsed.pcrs and parsed.crc_ok and not parsed.is_signed
    # eif_build's order: kernel, cmdline, metadata, ramdisks; its defaults: 1 GiB, 2 CPUs
    assert [section.name for section in parsed.sections] == ["kernel", "cmdline", "metadata", "ramdisk", "ramdisk"]
    assert (parsed.version, parsed.flags, parsed.default_memory, parsed.default_cpus) == (4, 0, 1 << 30, 2)
    assert struct.unpack_from(">4sHH", image) == (b".eif", 4, 0) and parsed.metadata == {"BuildTime": "x"}


def test_changing_the_application_changes_pcr0_and_pcr2_only(image):
    other = parse_eif(write_eif(KERNEL, CMDLINE, [RAMDISK1, RAMDISK2 + b"!"]))
    parsed = parse_eif(image)
    assert other.pcrs[1] == parsed.pcrs[1]
    assert other.pcrs[0] != parsed.pcrs[0] and other.pcrs[2] != parsed.pcrs[2]


def test_a_signed_image_has_pcr8_over_its_der_certificate_and_a_signature_over_pcr0():
    for curve in (ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()):
        key, pem = signer(curve)
        data = write_eif(KERNEL, CMDLINE, [RAMDISK1], signing_key=key, signing_certificate=pem)
        parsed, spec = parse_eif(data), spec_measurements(data)
        assert parsed.pcrs == spec["pcrs"] and parsed.pcrs[8] == extend(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER))
        assert parsed.is_signed and parsed.signature_ok is True and parsed.signing_certificate == spec["certificate"]
        # the section as serde_cbor writes it: byte vectors as arrays of integers; COSE_Sign1 over PcrInfo
        (entry,) = cbor2.loads(data[parsed.sections[-1].offset + SECTION_HEADER_SIZE :])
        protected, unprotected, payload, raw = cbor2.loads(bytes(entry["signature"]))
        assert isinstance(entry["signing_certificate"], list) and unprotected == {} and len(raw) == 2 * ((curve.key_size + 7) // 8)
        assert cbor2.loads(payload) == {"register_index": 0, "register_value": list(parsed.pcrs[0])}
        assert cbor2.loads(protected) == {1: {256: -7, 384: -35, 521: -36}[curve.key_size]}


def test_a_signature_over_another_image_does_not_check():
    key, pem = signer()
    data = write_eif(KERNEL, CMDLINE, [RAMDISK1], signing_key=key, signing_certificate=pem)
    signed = parse_eif(data)
    section = next(s for s in signed.sections if s.name == "signature")
    moved = assemble_eif([(1, KERNEL), (2, CMDLINE), (3, RAMDISK2), (4, data[section.offset + SECTION_HEADER_SIZE :])])
    parsed = parse_eif(moved)
    assert parsed.crc_ok and parsed.signature_ok is False and parsed.pcrs[8] == signed.pcrs[8]
    other_key, _ = signer()
    with pytest.raises(ValueError, match="not the certificate of signing_key"):
        write_eif(KERNEL, CMDLINE, [RAMDISK1], signing_key=other_key, signing_certificate=pem)


@settings(max_examples=60, deadline=None)
@given(
    kernel=st.binary(max_size=300), cmdline=st.text(max_size=60), ramdisks=st.lists(st.binary(max_size=200), min_size=1, max_size=5),
    metadata=st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers(), max_size=4), memory=st.integers(0, 2**64 - 1),
    cpus=st.integers(0, 2**64 - 1), arm64=st.booleans(),
)  # fmt: skip
def test_what_the_writer_writes_the_reader_reads_back(kernel, cmdline, ramdisks, metadata, memory, cpus, arm64):
    data = write_eif(kernel, cmdline, ramdisks, metadata=metadata, default_memory=memory, default_cpus=cpus, arm64=arm64)
    parsed = parse_eif(data)
    assert parsed.pcrs == spec_measurements(data)["pcrs"] and parsed.crc_ok
    assert (parsed.default_memory, parsed.default_cpus, parsed.flags, parsed.metadata) == (memory, cpus, int(arm64), metadata)
    bodies = [data[s.offset + SECTION_HEADER_SIZE : s.offset + SECTION_HEADER_SIZE + s.size] for s in parsed.sections if s.name in ("kernel", "cmdline", "ramdisk")]
    assert bodies == [kernel, cmdline.encode(), *ramdisks]


def test_the_writer_refuses_what_is_no_image():
    with pytest.raises(ValueError, match="at least one ramdisk"):
        write_eif(KERNEL, CMDLINE, [])
    with pytest.raises(ValueError, match="at most 32"):
        write_eif(KERNEL, CMDLINE, [b"r"] * 31)
    with pytest.raises(TypeError, match="must be bytes"):
        write_eif("kernel", CMDLINE, [RAMDISK1])  # type: ignore[arg-type]


def _retyped(data: bytes, index: int, kind: int) -> bytes:
    """``data`` with section ``index``'s type changed in its header (the CRC left as it was)."""
    offset = struct.unpack_from(">Q", data, 28 + 8 * index)[0]  # the offsets follow magic..section count
    return data[:offset] + struct.pack(">H", kind) + data[offset + 2 :]


def _bad_images() -> list[tuple[bytes, str]]:
    plain = write_eif(KERNEL, CMDLINE, [RAMDISK1], metadata={})
    return [
        (b"", "shorter"),
        (b"ELF!" + bytes(600), "magic"),
        (plain[:26] + struct.pack(">H", 2) + plain[28:], "at least one ramdisk"),  # the section count cut to kernel and cmdline
        (_retyped(plain, 1, 1), "exactly one kernel"),
        (plain[:-5], "outside the file"),
        (_retyped(plain, 3, 9), "unknown type"),
        (assemble_eif([(1, KERNEL), (2, CMDLINE), (5, b"[1, 2]"), (3, RAMDISK1)]), "not a JSON object"),
        (assemble_eif([(1, KERNEL), (2, CMDLINE), (5, b"\xff"), (3, RAMDISK1)]), "not JSON"),
        (assemble_eif([(1, KERNEL), (2, CMDLINE), (3, RAMDISK1), (4, b"\xa0")]), "signing certificate"),
        (assemble_eif([(1, KERNEL), (2, CMDLINE), (3, RAMDISK1), (5, b"{}"), (5, b"{}")]), "at most one"),
    ]


@pytest.mark.parametrize(("data", "words"), _bad_images(), ids=["empty", "not-eif", "no-ramdisk", "two-kernels", "truncated", "unknown-section", "metadata-list", "metadata-bytes", "signature", "two-metadata"])
def test_malformed_images_are_eif_errors(data, words):
    with pytest.raises(EifError, match=words):
        parse_eif(data)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000), flips=st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 255)), max_size=5), signed=st.booleans())
def test_garbage_and_mutated_images_only_raise_eif_error(data, flips, signed):
    if len(data) % 2:
        key, pem = SIGNER if signed else (None, None)
        data = write_eif(KERNEL[:50], CMDLINE, [RAMDISK1, data[:40]], metadata={"ImageName": "x", "BuildMetadata": {}}, signing_key=key, signing_certificate=pem)
    base = bytearray(data)
    for position, mask in flips:
        if base:
            base[position % len(base)] ^= mask
    try:
        described = parse_eif(bytes(base)).describe()
    except EifError:
        return
    json.dumps(described)  # what describe --json prints is always JSON


SIGNER = signer()


# -- the command --------------------------------------------------------------------------------------------


def test_describe_prints_what_nitro_cli_describe_eif_prints(tmp_path, capsys):
    key, pem = SIGNER
    metadata = identity_metadata("zerocopy-enclave", "1.2", build_time="2026-01-01T00:00:00+00:00", custom={"team": "desk-a"})
    path = tmp_path / "signed.eif"
    path.write_bytes(write_eif(KERNEL, CMDLINE, [RAMDISK1, RAMDISK2], metadata=metadata, signing_key=key, signing_certificate=pem))
    assert main(["eif", "describe", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    spec = spec_measurements(path.read_bytes())
    assert list(info)[:7] == ["EifVersion", "Measurements", "IsSigned", "SigningCertificate", "CheckCRC", "SignatureCheck", "ImageName"]
    assert info["Measurements"] == {"HashAlgorithm": "Sha384 { ... }", **{f"PCR{i}": value.hex() for i, value in spec["pcrs"].items()}}
    assert (info["EifVersion"], info["IsSigned"], info["CheckCRC"], info["SignatureCheck"]) == (4, True, True, True)
    assert (info["ImageName"], info["ImageVersion"], info["SigningCertificate"]["IssuerName"]) == ("zerocopy-enclave", "1.2", {"CN": "eif signer"})
    assert info["Metadata"] == {"BuildTime": "2026-01-01T00:00:00+00:00", "BuildTool": "zerocopy", "BuildToolVersion": "", "OperatingSystem": "", "KernelVersion": "", "DockerInfo": None, "team": "desk-a"}
    assert [section["Type"] for section in info["Sections"]] == ["kernel", "cmdline", "metadata", "ramdisk", "ramdisk", "signature"]
    assert main(["eif", "describe", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"PCR8           {spec['pcrs'][8].hex()}" in text and "SignatureCheck True" in text


def test_describe_exits_1_on_a_damaged_crc(tmp_path, capsys):
    data = bytearray(write_eif(KERNEL, CMDLINE, [RAMDISK1], metadata={"note": "x"}))
    data[data.index(b'"x"') + 1] ^= 1  # the metadata: not measured, so only the CRC shows it
    damaged = tmp_path / "damaged.eif"
    damaged.write_bytes(bytes(data))
    assert spec_measurements(bytes(data))["crc_ok"] is False
    assert main(["eif", "describe", str(damaged), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["CheckCRC"] is False and captured.err.strip().endswith("the CRC-32 does not match: the file is damaged or was edited")
    (tmp_path / "junk.eif").write_bytes(b"junk")
    assert main(["eif", "describe", str(tmp_path / "junk.eif")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
