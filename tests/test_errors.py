"""One exported error hierarchy (issue 9): every error ZeroCopy raises on purpose derives from
``zerocopy.ZeroCopyError``, is exported from ``zerocopy`` and ``zerocopy.errors``, and no two
error classes share a name or shadow a builtin."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import zerocopy
from zerocopy import errors

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("enclave", "emulator", "zerocopy", "pytest_zerocopy")


def _error_classes() -> dict[str, list[str]]:
    """Class name -> the files defining it, for every class named like an error or exception."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception")):
                    found.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_exported_error_derives_from_zerocopy_error_and_is_exported_from_the_package():
    assert errors.__all__, "zerocopy.errors exports nothing"
    for name in errors.__all__:
        error = getattr(errors, name)
        assert isinstance(error, type) and issubclass(error, zerocopy.ZeroCopyError), name
        assert getattr(zerocopy, name) is error and name in zerocopy.__all__, name


def test_errors_the_host_meets_from_the_protocol_package_are_zerocopy_errors():
    from enclave.protocol.address import AddressError
    from enclave.protocol.bundle import BundleError
    from enclave.protocol.cbor import CborError
    from enclave.protocol.errors import LocalProtocolError, RemoteProtocolError
    from enclave.protocol.policy import PolicyError
    from enclave.protocol.session import HandshakeError

    for error in (AddressError, BundleError, CborError, LocalProtocolError, RemoteProtocolError, PolicyError, HandshakeError):
        assert issubclass(error, zerocopy.ZeroCopyError), error
    assert zerocopy.ProtocolError is errors.ProtocolError and issubclass(RemoteProtocolError, zerocopy.ProtocolError)


def test_no_two_error_classes_share_a_name_and_none_shadows_a_builtin():
    found = _error_classes()
    assert "ProtocolError" in found  # the scan sees the tree
    shared = {name: files for name, files in found.items() if len(files) > 1}
    assert not shared, shared
    shadowing = sorted(set(found) & set(dir(builtins)))
    assert not shadowing, shadowing
