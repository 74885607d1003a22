"""Bytecode for an enclave image, compiled once per process: checked hash-based pycs (PEP 552).

Each launch copies the enclave package into a fresh image directory and runs it with ``-B``, so
without these the enclave compiled every one of its modules at every start (about 0.1 s of its
start-up). A *checked* hash-based pyc carries a hash of the source it was compiled from; the
interpreter hashes the image's ``.py`` file when it imports it and uses the pyc only if the two
match, else compiles that source. So what runs is still exactly the measured source; PCRs never
include ``__pycache__`` (:func:`emulator.measure.image_files`).
"""

from __future__ import annotations

import functools
import importlib.util
import marshal
import sys
from pathlib import Path

__all__ = ["package_bytecode", "write_bytecode"]

_CHECKED_HASH = (0b11).to_bytes(4, "little")  # PEP 552 flags: hash-based, check the source


@functools.lru_cache(maxsize=1024)
def _pyc(relative: str, source: bytes) -> bytes | None:
    try:
        # optimize=0: the enclave runs without -O; the loader replaces co_filename with the image's path
        code = compile(source, relative, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):
        return None  # the enclave compiles it and reports the error itself, as before
    return importlib.util.MAGIC_NUMBER + _CHECKED_HASH + importlib.util.source_hash(source) + marshal.dumps(code)


def package_bytecode(package_dir: Path) -> dict[Path, bytes]:
    """The pyc of each module under ``package_dir``, by the module's path relative to it."""
    compiled = {}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if "__pycache__" not in relative.parts and (pyc := _pyc(relative.as_posix(), path.read_bytes())) is not None:
            compiled[relative] = pyc
    return compiled


def write_bytecode(package_dir: Path) -> None:
    """Write each module's pyc where this interpreter looks for it (``__pycache__/<name>.<tag>.pyc``)."""
    for relative, pyc in package_bytecode(package_dir).items():
        target = package_dir / relative.parent / "__pycache__" / f"{relative.stem}.{sys.implementation.cache_tag}.pyc"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(pyc)
