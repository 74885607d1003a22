"""Enclave Image Files: read the header and sections, compute the PCRs a key policy pins.

Format (aws-nitro-enclaves-image-format), all big-endian. The header is 548 bytes::

    magic ".eif", version u16, flags u16, default memory u64, default CPUs u64, reserved u16,
    section count u16, 32 section offsets u64, 32 section sizes u64, unused u32, CRC-32 u32

Each section starts with a 12-byte header (type u16, flags u16, size u64) followed by its data.
Types: 1 kernel, 2 kernel command line, 3 ramdisk, 4 signature, 5 metadata.

PCRn = SHA-384(48 zero bytes ‖ SHA-384(data)): PCR0 over kernel ‖ cmdline ‖ every ramdisk, PCR1
over kernel ‖ cmdline ‖ the first ramdisk, PCR2 over the other ramdisks, PCR8 over the signing
certificate (signed images only).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import EifError

__all__ = ["EifError", "EifSection", "EifImage", "read_eif", "parse_eif", "SECTION_TYPES", "HEADER"]

HEADER = struct.Struct(">4sHHQQHH32Q32QII")
SECTION_HEADER = struct.Struct(">HHQ")
MAGIC = b".eif"
SECTION_TYPES = {1: "kernel", 2: "cmdline", 3: "ramdisk", 4: "signature", 5: "metadata"}
MAX_SECTIONS = 32
_ZERO = bytes(48)


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
    offsets, sizes, crc = fields[7:39], fields[39:71], fields[72]
    if magic != MAGIC:
        raise EifError("not an EIF (the magic is not '.eif')")
    if count == 0 or count > MAX_SECTIONS:
        raise EifError(f"section count {count} is not 1..{MAX_SECTIONS}")
    sections = []
    for index in range(count):
        offset, size = offsets[index], sizes[index]
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

    def body(section: EifSection) -> bytes:
        start = section.offset + SECTION_HEADER.size
        return data[start : start + section.size]

    by_type: dict[str, list[bytes]] = {}
    for section in sections:  # in header order, which is image order
        by_type.setdefault(section.name, []).append(body(section))
    kernels, cmdlines, ramdisks = by_type.get("kernel", []), by_type.get("cmdline", []), by_type.get("ramdisk", [])
    if len(kernels) != 1 or len(cmdlines) != 1 or not ramdisks:
        raise EifError("an EIF needs exactly one kernel, one command line and at least one ramdisk")
    pcrs = {
        0: _pcr(kernels + cmdlines + ramdisks),
        1: _pcr(kernels + cmdlines + ramdisks[:1]),
        2: _pcr(ramdisks[1:]),
    }
    certificate = _signing_certificate(by_type.get("signature", []))
    if certificate is not None:
        pcrs[8] = _pcr([certificate])
    computed = zlib.crc32(data[: HEADER.size - 4] + data[HEADER.size :]) & 0xFFFFFFFF
    return EifImage(version, flags, memory, cpus, tuple(sections), pcrs, crc_ok=computed == crc)


def _signing_certificate(signature_sections: list[bytes]) -> bytes | None:
    """The DER signing certificate from a signature section (CBOR list of {signing_certificate, signature})."""
    if not signature_sections:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from enclave.protocol import cbor

    try:
        entries = cbor.loads(signature_sections[0])
        certificate = entries[0]["signing_certificate"]
        if isinstance(certificate, list):  # serde may write a byte vector as an array of integers
            certificate = bytes(certificate)
        if certificate.lstrip().startswith(b"-----BEGIN"):
            certificate = x509.load_pem_x509_certificate(certificate).public_bytes(Encoding.DER)
        else:
            x509.load_der_x509_certificate(certificate)
        return certificate
    except Exception as exc:  # cbor2 / cryptography / shape errors: a malformed signature section
        raise EifError(f"the signature section does not hold a signing certificate ({type(exc).__name__})") from None

