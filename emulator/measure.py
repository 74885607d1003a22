"""PCR values for emulated enclaves.

On Nitro, PCRn = SHA-384(48 zero bytes ‖ SHA-384(section data)) over the EIF's sections. The
emulator has no EIF; it measures what it is about to run, the same way:

* PCR0 (``ImageSha384``): the image — every file under the enclave package (sorted relative
  path and contents, length-prefixed), the launch argv and the launch environment.
* PCR1: the runtime standing in for kernel and boot ramdisk — Python's version and the versions
  of the enclave's dependencies.
* PCR2: the application alone — the enclave package files.
* PCR3: the parent instance's IAM role ARN; PCR4: the parent instance id — as on Nitro, each a
  contiguous measurement from 48 zero bytes with no inner hash: ``SHA-384(0^48 ‖ bytes)`` (real
  documents confirm PCR4 so). PCR8: zero (the emulator does not sign images).

Debug-mode enclaves report PCR0, PCR1, PCR2 and PCR8 as zeros and keep PCR3/PCR4, as real debug
documents do.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["ZERO", "extend", "image_files", "measure"]

ZERO = bytes(48)
DEPENDENCIES = ("cryptography", "cbor2", "asn1crypto", "boto3", "botocore")


def extend(current: bytes, data: bytes) -> bytes:
    return hashlib.sha384(current + data).digest()


def _section(data: bytes) -> bytes:
    return extend(ZERO, hashlib.sha384(data).digest())


def image_files(image_dir: Path) -> list[Path]:
    """The files that make up the image: everything but bytecode caches."""
    return sorted(
        path
        for path in image_dir.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".pyc", ".pyo"}
    )


def _code_digest(image_dir: Path) -> bytes:
    digest = hashlib.sha384()
    for path in image_files(image_dir):
        relative = path.relative_to(image_dir).as_posix().encode()
        content = path.read_bytes()
        digest.update(len(relative).to_bytes(8, "big") + relative + len(content).to_bytes(8, "big") + content)
    return digest.digest()


def _runtime() -> bytes:
    versions = {name: _version(name) for name in DEPENDENCIES}
    return json.dumps({"python": sys.version, "packages": versions}, sort_keys=True).encode()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def measure(image_dir: Path, argv: list[str], env: dict[str, str], *, role_arn: str | None, instance_id: str, debug: bool = False) -> dict[int, bytes]:
    """The 16 PCRs an attestation document reports for this launch.

    ``role_arn`` None is a parent instance without an IAM role: PCR3 stays zero, as on Nitro.
    """
    code = _code_digest(image_dir)
    launch = json.dumps({"argv": argv, "env": sorted(env.items())}).encode()
    pcrs = {index: ZERO for index in range(16)}
    pcrs[0] = _section(code + hashlib.sha384(launch).digest())
    pcrs[1] = _section(_runtime())
    pcrs[2] = _section(code)
    pcrs[3] = ZERO if role_arn is None else extend(ZERO, role_arn.encode())
    pcrs[4] = extend(ZERO, instance_id.encode())
    if debug:
        for index in (0, 1, 2, 8):
            pcrs[index] = ZERO
    return pcrs
