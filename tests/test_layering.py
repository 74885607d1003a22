"""The house rules of the layout, checked: the enclave image imports nothing of the emulator, the
host package, moto or pytest; the host package needs nothing from the emulator; the vsock guard
holds in this process and in the enclave processes the emulator launches."""

from __future__ import annotations

import ast
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import enclave

ROOT = Path(enclave.__file__).resolve().parent.parent
FORBIDDEN_IN_ENCLAVE = ("emulator", "zerocopy", "pytest_zerocopy", "moto", "pytest", "hypothesis", "flask")


def _modules_after_importing(*names: str) -> set[str]:
    code = "import importlib, json, sys\n" + "".join(f"importlib.import_module({name!r})\n" for name in names) + "print(json.dumps(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return {name.split(".")[0] for name in json.loads(output)}


def test_the_enclave_import_closure_stays_inside_the_image():
    every_module = [f"enclave.{path.stem}" for path in (ROOT / "enclave").glob("*.py")] + [
        f"enclave.protocol.{path.stem}" for path in (ROOT / "enclave" / "protocol").glob("*.py")
    ]
    # Provisioning imports boto3 lazily; import it too so its closure is checked as well.
    loaded = _modules_after_importing(*every_module, "boto3")
    assert loaded & set(FORBIDDEN_IN_ENCLAVE) == set()


def test_no_enclave_source_names_the_outer_packages():
    offenders = []
    for path in (ROOT / "enclave").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] in FORBIDDEN_IN_ENCLAVE]
    assert offenders == []


def test_the_host_package_does_not_need_the_emulator():
    loaded = _modules_after_importing("zerocopy", "zerocopy._cli", "zerocopy.attestation", "zerocopy.sealing")
    assert loaded & {"emulator", "moto", "pytest_zerocopy", "flask"} == set()


def test_the_host_package_uses_only_the_protocol_part_of_the_enclave():
    imported = set()
    for path in (ROOT / "zerocopy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("enclave"):
                imported.add(node.module)
    assert imported and all(module.startswith("enclave.protocol") for module in imported), imported


class _FakeVsockSocket:
    family = getattr(socket, "AF_VSOCK", 40)


def test_the_suite_refuses_vsock_connects():
    # Raised by the audit hook before any system call; no vsock socket is ever created.
    with pytest.raises(PermissionError, match="AF_VSOCK"):
        sys.audit("socket.connect", _FakeVsockSocket(), (3, 8000))


def test_enclave_processes_get_the_same_guard():
    from emulator.launcher import VSOCK_GUARD

    probe = VSOCK_GUARD + (
        "import socket, sys\n"
        "class Fake: family = getattr(socket, 'AF_VSOCK', 40)\n"
        "try:\n    sys.audit('socket.connect', Fake(), (3, 8000))\nexcept PermissionError as exc:\n    print('refused:', exc)\n"
    )
    output = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True).stdout
    assert output.startswith("refused: AF_VSOCK")


def test_the_launch_bootstrap_installs_the_guard_first():
    from emulator.launcher import BOOTSTRAP, VSOCK_GUARD

    assert BOOTSTRAP.startswith(VSOCK_GUARD)
