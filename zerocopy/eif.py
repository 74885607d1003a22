"""Enclave Image Files: read the header and sections, compute the PCRs a key policy pins.

Format (aws-nitro-enclaves-image-format), all big-endian. The header is 548 bytes::

    magic ".eif", version u16, flags u16, default memory u64, default CPUs u64, reserved u16,
    section count u16, 32 section offsets u64, 32 section sizes u64, unused u32, CRC-32 u32

Each section starts with a 12-byte header (type u16, flags u16, size u64) followed by its data.
Types: 1 kernel, 2 kernel command line, 3 ramdisk, 4 signature, 5 metadata.

PCRn = SHA-384(48 zero bytes ‖ SHA-384(data)): PCR0 over kernel ‖ cmdline ‖ every ramdisk, PCR1
over kernel ‖ cmdline ‖ the first ramdisk, PCR2 over the other ramdisks, PCR8 over the DER signing
certificate (signed images only). The metadata (JSON) and signature sections are not measured.

A signature section is what serde_cbor makes of a Rust ``Vec<PcrSignature>``: a CBOR array of maps
``{"signing_certificate": PEM bytes, "signature": COSE_Sign1 bytes}``, each byte vector written as
an array of integers; the COSE_Sign1 signs ``{"register_index": 0, "register_value": PCR0}``.

:func:`write_eif` lays sections out as ``eif_build`` does (kernel, cmdline, metadata, ramdisks,
signature) and :func:`parse_eif` reads any order. Source of these facts:
github.com/aws/aws-nitro-enclaves-image-format (src/defs, src/utils) and
github.com/aws/aws-nitro-enclaves-cli (describe-eif's field names, docs/image_signing.md).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from enclave.protocol import cbor

from .errors import EifError

__all__ = ["EifError", "EifSection", "EifImage", "read_eif", "parse_eif", "write_eif", "assemble_eif", "identity_metadata", "SECTION_TYPES", "HEADER", "HASH_ALGORITHM"]

HEADER = struct.Struct(">4sHHQQHH32Q32QII")
SECTION_HEADER = struct.Struct(">HHQ")
MAGIC = b".eif"
SECTION_TYPES = {1: "kernel", 2: "cmdline", 3: "ramdisk", 4: "signature", 5: "metadata"}
MAX_SECTIONS = 32
CURRENT_VERSION = 4
FLAG_ARM64 = 0x1
#: How nitro-cli names the hash (Rust's Debug form of sha2::Sha384).
HASH_ALGORITHM = "Sha384 { ... }"
_ZERO = bytes(48)
# COSE algorithm id -> (curve, hash), as aws-nitro-enclaves-cose picks them from the key's curve.
_COSE_ALGORITHMS = {-7: (ec.SECP256R1(), hashes.SHA256()), -35: (ec.SECP384R1(), hashes.SHA384()), -36: (ec.SECP521R1(), hashes.SHA512())}


@dataclass(frozen=True)
class EifSection:
    type: int
    flags: int
    offset: int
    size: int

    @property
    def name(self) -> str:
        return SECTION_TYPES.get(self.type, f"unknown({self.type})")


@dataclass(frozen=True)
class EifImage:
    version: int
    flags: int
    default_memory: int
    default_cpus: int
    sections: tuple[EifSection, ...]
    pcrs: dict[int, bytes]
    crc_ok: bool
    metadata: dict | None = None
    signing_certificate: bytes | None = None  # DER, from the signature section
    signature_ok: bool | None = None  # the section's COSE_Sign1 over PCR0 verifies with that certificate

    @property
    def is_signed(self) -> bool:
        return self.signing_certificate is not None

    def measurements(self) -> dict[str, str]:
        """The PCRs as ``nitro-cli build-enclave`` and ``describe-eif`` print them."""
        measured = {"HashAlgorithm": HASH_ALGORITHM}
        measured.update({f"PCR{index}": value.hex() for index, value in sorted(self.pcrs.items())})
        return measured

    def describe(self) -> dict:
        """What ``nitro-cli describe-eif`` prints, with its field names, plus ``Sections``."""
        info: dict = {"EifVersion": self.version, "Measurements": self.measurements(), "IsSigned": self.is_signed}
        if self.signing_certificate is not None:
            info["SigningCertificate"] = _certificate_info(self.signing_certificate)
        info["CheckCRC"] = self.crc_ok
        if self.signature_ok is not None:
            info["SignatureCheck"] = self.signature_ok
        info.update(_identity(self.metadata))
        info["Sections"] = [{"Type": s.name, "Offset": s.offset, "Size": s.size, "Flags": s.flags} for s in self.sections]
        return info


def _pcr(data_parts: list[bytes]) -> bytes:
    inner = hashlib.sha384()
    for part in data_parts:
        inner.update(part)
    return hashlib.sha384(_ZERO + inner.digest()).digest()


def read_eif(path: str | Path) -> EifImage:
    return parse_eif(Path(path).read_bytes())


def parse_eif(data: bytes) -> EifImage:
    """Parse an EIF and compute its PCRs; :class:`EifError` for anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes")
    data = bytes(data)
    if len(data) < HEADER.size:
        raise EifError(f"file is {len(data)} bytes, shorter than the {HEADER.size}-byte EIF header")
    fields = HEADER.unpack_from(data)
    magic, version, flags, memory, cpus, _reserved, count = fields[:7]
    if magic != MAGIC:
        raise EifError("not an EIF (the magic is not '.eif')")
    if count == 0 or count > MAX_SECTIONS:
        raise EifError(f"section count {count} is not 1..{MAX_SECTIONS}")
    sections = _sections(data, fields[7 : 7 + count], fields[39 : 39 + count])
    by_type: dict[str, list[bytes]] = {}
    for section in sections:  # in header order, which is image order
        start = section.offset + SECTION_HEADER.size
        by_type.setdefault(section.name, []).append(data[start : start + section.size])
    kernels, cmdlines, ramdisks = by_type.get("kernel", []), by_type.get("cmdline", []), by_type.get("ramdisk", [])
    if len(kernels) != 1 or len(cmdlines) != 1 or not ramdisks:
        raise EifError("an EIF needs exactly one kernel, one command line and at least one ramdisk")
    if len(by_type.get("signature", [])) > 1 or len(by_type.get("metadata", [])) > 1:
        raise EifError("an EIF has at most one signature section and one metadata section")
    pcrs = {
        0: _pcr(kernels + cmdlines + ramdisks),
        1: _pcr(kernels + cmdlines + ramdisks[:1]),
        2: _pcr(ramdisks[1:]),
    }
    certificate = signature_ok = None
    if by_type.get("signature"):
        certificate, signature_ok = _signature(by_type["signature"][0], pcrs[0])
        pcrs[8] = _pcr([certificate])
    metadata = _metadata(by_type["metadata"][0]) if by_type.get("metadata") else None
    view = memoryview(data)  # no copy of a large image for the CRC
    computed = zlib.crc32(view[HEADER.size :], zlib.crc32(view[: HEADER.size - 4])) & 0xFFFFFFFF
    return EifImage(version, flags, memory, cpus, tuple(sections), pcrs, computed == fields[72], metadata, certificate, signature_ok)


def _sections(data: bytes, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> list[EifSection]:
    sections = []
    for index, (offset, size) in enumerate(zip(offsets, sizes)):
        if offset < HEADER.size or offset + SECTION_HEADER.size + size > len(data):
            raise EifError(f"section {index} (offset {offset}, size {size}) lies outside the file")
        kind, section_flags, declared = SECTION_HEADER.unpack_from(data, offset)
        if declared != size:
            raise EifError(f"section {index}: its header says {declared} bytes, the EIF header {size}")
        if kind not in SECTION_TYPES:
            raise EifError(f"section {index} has unknown type {kind}")
        sections.append(EifSection(kind, section_flags, offset, size))
    ordered = sorted(sections, key=lambda section: section.offset)
    for before, after in zip(ordered, ordered[1:]):
        if before.offset + SECTION_HEADER.size + before.size > after.offset:
            raise EifError(f"sections at offsets {before.offset} and {after.offset} overlap")
    return sections


def _metadata(section: bytes) -> dict:
    try:
        value = json.loads(section.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EifError("the metadata section is not JSON") from None
    if not isinstance(value, dict):
        raise EifError("the metadata section is not a JSON object")
    return value


def _identity(metadata: dict | None) -> dict:
    """ImageName, ImageVersion and Metadata as describe-eif shows them (BuildMetadata's fields,
    DockerInfo, and CustomMetadata's fields flattened in); other JSON is shown as it is."""
    if metadata is None:
        return {}
    build = metadata.get("BuildMetadata")
    if not isinstance(build, dict):
        return {"Metadata": metadata}
    shown = {key: value for key, value in build.items()}
    shown["DockerInfo"] = metadata.get("DockerInfo")
    custom = metadata.get("CustomMetadata")
    if isinstance(custom, dict):
        shown.update(custom)
    identity = {key: metadata[key] for key in ("ImageName", "ImageVersion") if key in metadata}
    return {**identity, "Metadata": shown}


def _byte_string(value: object) -> bytes:
    """serde_cbor writes a Rust Vec<u8> as an array of integers; accept that and a byte string."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, list) and all(isinstance(item, int) and 0 <= item <= 255 for item in value):
        return bytes(value)
    raise ValueError("not a byte string")


def _signature(section: bytes, pcr0: bytes) -> tuple[bytes, bool]:
    """The DER signing certificate of a signature section (CBOR list of {signing_certificate,
    signature}), and whether its COSE_Sign1 signs PCR0 of this image with that certificate's key."""
    try:
        entries = cbor.loads(section, any_encoding=True)
        certificate = _byte_string(entries[0]["signing_certificate"])
        if certificate.lstrip().startswith(b"-----BEGIN"):
            parsed = x509.load_pem_x509_certificate(certificate)
        else:
            parsed = x509.load_der_x509_certificate(certificate)
        signature = _byte_string(entries[0]["signature"])
        der, public_key = parsed.public_bytes(Encoding.DER), parsed.public_key()
        _certificate_info(der)  # cryptography parses fields lazily: fail here, not in describe()
    except Exception as exc:  # cbor / cryptography / shape errors: a malformed signature section
        raise EifError(f"the signature section does not hold a signing certificate ({type(exc).__name__})") from None
    return der, _signs_pcr0(signature, public_key, pcr0)


def _signs_pcr0(signature: bytes, public_key: object, pcr0: bytes) -> bool:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    try:
        protected, _unprotected, payload, raw = cbor.loads(signature, top_level_tags=frozenset({18}), any_encoding=True)
        algorithm = cbor.loads(protected, any_encoding=True).get(1)
        curve, digest = _COSE_ALGORITHMS[algorithm]
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != curve.name:
            return False
        half = len(raw) // 2
        der = encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        public_key.verify(der, cbor.dumps(["Signature1", protected, b"", payload]), ec.ECDSA(digest))
        signed = cbor.loads(payload, any_encoding=True)
        return signed.get("register_index") == 0 and _byte_string(signed.get("register_value")) == pcr0
    except Exception:  # noqa: BLE001 - a malformed or wrong signature is simply not a valid one
        return False


def _certificate_info(der: bytes) -> dict:
    certificate = x509.load_der_x509_certificate(der)
    return {
        "IssuerName": {attribute.rfc4514_attribute_name: str(attribute.value) for attribute in certificate.issuer},
        "Algorithm": getattr(certificate.signature_algorithm_oid, "_name", certificate.signature_algorithm_oid.dotted_string),
        "NotBefore": certificate.not_valid_before_utc.strftime("%b %d %H:%M:%S %Y GMT"),
        "NotAfter": certificate.not_valid_after_utc.strftime("%b %d %H:%M:%S %Y GMT"),
        "Signature": ":".join(f"{byte:02X}" for byte in certificate.signature),
    }


# -- the writer ------------------------------------------------------------------------------------


def identity_metadata(
    name: str, version: str, *, build_time: str, build_tool: str = "zerocopy", build_tool_version: str = "",
    operating_system: str = "", kernel_version: str = "", docker_info: object = None, custom: Mapping | None = None,
) -> dict:
    """The metadata section nitro-cli writes (EifIdentityInfo), field names and order as there."""
    return {
        "ImageName": name, "ImageVersion": version,
        "BuildMetadata": {"BuildTime": build_time, "BuildTool": build_tool, "BuildToolVersion": build_tool_version, "OperatingSystem": operating_system, "KernelVersion": kernel_version},
        "DockerInfo": docker_info, "CustomMetadata": dict(custom) if custom is not None else None,
    }  # fmt: skip


def write_eif(
    kernel: bytes, cmdline: bytes | str, ramdisks: Sequence[bytes], *, metadata: Mapping | None = None,
    signing_key: ec.EllipticCurvePrivateKey | None = None, signing_certificate: bytes | None = None,
    default_memory: int = 1 << 30, default_cpus: int = 2, arm64: bool = False,
) -> bytes:
    """An EIF (version 4) of these sections; signed when given an EC key and its PEM certificate.
    ``default_memory`` is in bytes; the defaults are eif_build's (1 GiB, 2 CPUs)."""
    ramdisks = list(ramdisks)
    if isinstance(cmdline, str):
        cmdline = cmdline.encode()
    if not isinstance(kernel, bytes) or not isinstance(cmdline, bytes) or not all(isinstance(r, bytes) for r in ramdisks):
        raise TypeError("kernel, cmdline and ramdisks must be bytes")
    if not ramdisks:
        raise ValueError("ramdisks: an EIF needs at least one ramdisk")
    if (signing_key is None) != (signing_certificate is None):
        raise ValueError("signing_key and signing_certificate go together")
    sections = [(1, kernel), (2, cmdline)]
    if metadata is not None:
        sections.append((5, json.dumps(metadata, separators=(",", ":")).encode()))
    sections += [(3, ramdisk) for ramdisk in ramdisks]
    if signing_key is not None:
        pcr0 = _pcr([kernel, cmdline, *ramdisks])
        sections.append((4, _signature_section(signing_key, signing_certificate, pcr0)))
    if len(sections) > MAX_SECTIONS:
        raise ValueError(f"ramdisks: at most {MAX_SECTIONS} sections in all")
    return assemble_eif(sections, flags=FLAG_ARM64 if arm64 else 0, default_memory=default_memory, default_cpus=default_cpus)


def assemble_eif(sections: Sequence[tuple[int, bytes]], *, flags: int = 0, default_memory: int = 0, default_cpus: int = 0, version: int = CURRENT_VERSION) -> bytes:
    """Header, then each ``(type, data)`` section in order, with the CRC; no check of what they hold
    (:func:`write_eif` makes a bootable layout; this also makes the malformed ones tests need)."""
    if len(sections) > MAX_SECTIONS:
        raise ValueError(f"sections: at most {MAX_SECTIONS}")
    offsets, sizes, body, position = [], [], [], HEADER.size
    for kind, data in sections:
        offsets.append(position)
        sizes.append(len(data))
        body += [SECTION_HEADER.pack(kind, 0, len(data)), data]
        position += SECTION_HEADER.size + len(data)
    padding = [0] * (MAX_SECTIONS - len(sections))
    fields = [MAGIC, version, flags, default_memory, default_cpus, 0, len(sections), *offsets, *padding, *sizes, *padding, 0]
    head = HEADER.pack(*fields, 0)[:-4]
    crc = zlib.crc32(head)
    for chunk in body:
        crc = zlib.crc32(chunk, crc)
    return b"".join([head, struct.pack(">I", crc & 0xFFFFFFFF), *body])


def _signature_section(key: ec.EllipticCurvePrivateKey, certificate_pem: bytes, pcr0: bytes) -> bytes:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("signing_key must be an elliptic-curve private key (P-256, P-384 or P-521)")
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    if certificate.public_key().public_numbers() != key.public_key().public_numbers():
        raise ValueError("signing_certificate is not the certificate of signing_key")
    algorithm = next((cose for cose, (curve, _) in _COSE_ALGORITHMS.items() if curve.name == key.curve.name), None)
    if algorithm is None:
        raise ValueError(f"signing_key: curve {key.curve.name} has no COSE algorithm here (use P-256, P-384 or P-521)")
    digest = _COSE_ALGORITHMS[algorithm][1]
    protected = cbor.dumps({1: algorithm})
    payload = cbor.dumps({"register_index": 0, "register_value": list(pcr0)})
    r, s = decode_dss_signature(key.sign(cbor.dumps(["Signature1", protected, b"", payload]), ec.ECDSA(digest)))
    width = (key.curve.key_size + 7) // 8
    cose = cbor.dumps([protected, {}, payload, r.to_bytes(width, "big") + s.to_bytes(width, "big")])
    return cbor.dumps([{"signing_certificate": list(certificate_pem), "signature": list(cose)}])
