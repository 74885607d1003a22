"""One exported error hierarchy (issue 9): every error ZeroCopy raises on purpose derives from
``zerocopy.ZeroCopyError``, is exported from ``zerocopy`` and ``zerocopy.errors``, and no two
error classes share a name or shadow a builtin. Every error class the host can meet (each one
under ``zerocopy/`` and ``enclave/protocol/``, found by reading the source) is exported."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import zerocopy
from zerocopy import errors

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("enclave", "emulator", "zerocopy", "pytest_zerocopy")
HOST_FACING = ("zerocopy", "enclave/protocol")  # the code the host runs
# Error classes of the host-facing code that the host never meets, and why.
NOT_THE_HOSTS = {
    # Raised by the session inside Connection.next_event, which turns it into a RemoteProtocolError.
    "SessionBroken": "enclave/protocol/session.py",
}
_BUILTIN_ERRORS = frozenset(name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException))


def _base_name(base: ast.expr) -> str | None:
    if isinstance(base, ast.Name):
        return base.id
    if isinstance(base, ast.Attribute):
        return base.attr
    return None


def host_facing_error_classes(root: Path, folders: tuple[str, ...]) -> dict[str, str]:
    """Public class name -> defining file, for every class under ``folders`` that derives (through
    any chain of classes defined there) from a builtin exception. Private classes (``_Name``) never
    leave their module."""
    classes: dict[str, tuple[str, set[str]]] = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    bases = {name for name in map(_base_name, node.bases) if name}
                    classes[node.name] = (str(path.relative_to(root)), bases)
    errors_found = set(_BUILTIN_ERRORS)
    while True:
        grown = {name for name, (_, bases) in classes.items() if bases & errors_found} - errors_found
        if not grown:
            break
        errors_found |= grown
    return {name: file for name, (file, _) in classes.items() if name in errors_found and not name.startswith("_") and name not in _BUILTIN_ERRORS}


def unexported(found: dict[str, str]) -> list[str]:
    return sorted(f"{name} ({file})" for name, file in found.items() if name not in errors.__all__ and NOT_THE_HOSTS.get(name) != file)


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


def test_every_error_class_the_host_can_meet_is_exported_from_zerocopy_errors():
    found = host_facing_error_classes(ROOT, HOST_FACING)
    assert {"AttestationError", "SchemeError", "Refusal", "MessageError", "AllowlistConfigError"} <= set(found)  # the scan sees them
    assert not unexported(found), unexported(found)
    for name, file in NOT_THE_HOSTS.items():
        assert found.get(name) == file, f"{name} is no longer in {file}: update NOT_THE_HOSTS"


def test_the_exports_are_the_classes_the_modules_raise():
    import importlib

    for name, file in host_facing_error_classes(ROOT, HOST_FACING).items():
        if name in NOT_THE_HOSTS:
            continue
        module = importlib.import_module(file.removesuffix(".py").removesuffix("/__init__").replace("/", "."))
        assert getattr(module, name) is getattr(errors, name), (name, file)


def test_the_scan_reports_an_error_class_that_is_not_exported(tmp_path):
    package = tmp_path / "zerocopy"
    package.mkdir()
    (package / "stray.py").write_text(
        "import enum\n"
        "class Base(ValueError): pass\n"
        "class StrayError(Base): pass\n"  # derives from an error through a class of ours
        "class Stray2(builtins.LookupError): pass\n"  # through an attribute base
        "class _Private(Exception): pass\n"
        "class Colour(enum.Enum): pass\n"
    )
    found = host_facing_error_classes(tmp_path, ("zerocopy",))
    assert set(found) == {"Base", "StrayError", "Stray2"}
    assert unexported(found) == ["Base (zerocopy/stray.py)", "Stray2 (zerocopy/stray.py)", "StrayError (zerocopy/stray.py)"]


def test_the_moved_errors_stay_importable_where_they_were():
    from zerocopy import attestation, audit, eif, vsock_proxy

    assert attestation.AttestationError is errors.AttestationError and attestation.PCRMismatch is errors.PCRMismatch
    assert audit.AuditGap is errors.AuditGap and audit.UnexpectedChains is errors.UnexpectedChains
    assert eif.EifError is errors.EifError and vsock_proxy.AllowlistConfigError is errors.AllowlistConfigError
    assert issubclass(errors.SchemeError, ValueError) and issubclass(errors.Refusal, zerocopy.ZeroCopyError)
