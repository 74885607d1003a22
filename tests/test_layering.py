"""The house rules of the layout, checked: the enclave image imports nothing of the emulator, the
host package, moto or pytest, and carries no code only the emulator calls; the host package needs
nothing from the emulator, not even lazily; the vsock guard holds in this process and in the
enclave processes the emulator launches. The source checks live in ``tests/layering_rules.py``; the
tests below also run them on small synthetic trees, to show each one can fail."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import enclave
from layering_rules import FORBIDDEN, emulator_only_definitions, import_violations, imports_of

ROOT = Path(enclave.__file__).resolve().parent.parent
FORBIDDEN_IN_ENCLAVE = FORBIDDEN["enclave"]


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


def test_no_import_in_the_source_points_the_wrong_way():
    # Every import statement and literal import_module/__import__ call, lazy ones included.
    assert import_violations(ROOT) == []


def test_the_enclave_image_holds_only_what_runs_in_it_or_the_host_reads():
    assert emulator_only_definitions(ROOT) == []


def test_the_host_package_does_not_need_the_emulator():
    loaded = _modules_after_importing("zerocopy", "zerocopy._cli", "zerocopy.attestation", "zerocopy.sealing")
    assert loaded & {"emulator", "moto", "pytest_zerocopy", "flask"} == set()


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def sound_tree(tmp_path):
    """A small tree that keeps the rules: the checks must pass it before they may fail a variant."""
    return _tree(tmp_path, {
        "enclave/__init__.py": "",
        "enclave/protocol/__init__.py": "",
        "enclave/protocol/address.py": "def parse_address(text):\n    return text\n",
        "enclave/server.py": "from .protocol.address import parse_address\n\ndef serve(text):\n    return parse_address(text)\n",
        "enclave/__main__.py": "from .server import serve\n\nserve('vsock://16:5000')\n",
        "emulator/__init__.py": "import zerocopy\nfrom enclave.server import serve\n",
        "zerocopy/__init__.py": "",
        "zerocopy/cli.py": "from enclave.protocol import address\n\ndef main():\n    return address.parse_address('x')\n",
        "pytest_zerocopy/__init__.py": "def start():\n    import emulator\n",
    })  # fmt: skip


def test_a_sound_tree_passes_both_checks(sound_tree):
    assert import_violations(sound_tree) == []
    assert emulator_only_definitions(sound_tree) == []


@pytest.mark.parametrize(
    ("path", "source", "imported"),
    [
        ("zerocopy/cli.py", "def cmd_demo():\n    from emulator import Emulator\n", "emulator"),
        ("zerocopy/cli.py", "def cmd_up():\n    import emulator.commands\n", "emulator.commands"),
        ("zerocopy/cli.py", "import importlib\n\ndef run():\n    importlib.import_module('emulator.demo')\n", "emulator.demo"),
        ("zerocopy/cli.py", "def run():\n    __import__('emulator')\n", "emulator"),
        ("zerocopy/cli.py", "def run():\n    from enclave import keyring\n", "enclave.keyring"),
        ("emulator/__init__.py", "def fixture():\n    import pytest_zerocopy\n", "pytest_zerocopy"),
    ],
    ids=["lazy-from", "lazy-import", "import_module", "__import__", "host-beyond-protocol", "emulator-to-plugin"],
)
def test_the_import_check_reports_a_lazy_or_hidden_wrong_way_import(sound_tree, path, source, imported):
    file = sound_tree / path
    line = file.read_text().count("\n") + source.count("\n") + 1  # the import is the appended source's last line
    file.write_text(file.read_text() + "\n" + source)
    assert any(violation.startswith(f"{path}:{line}: {imported} (") for violation in import_violations(sound_tree)), import_violations(sound_tree)


def test_relative_imports_are_resolved_against_their_package(sound_tree):
    (sound_tree / "enclave/protocol/frames.py").write_text("from . import address\nfrom ..server import serve\n\ndef f():\n    from .address import parse_address\n")
    modules = [(imported.line, imported.module) for imported in imports_of(sound_tree, sound_tree / "enclave/protocol/frames.py")]
    assert modules == [(1, "enclave.protocol"), (1, "enclave.protocol.address"), (2, "enclave.server"), (2, "enclave.server.serve"), (5, "enclave.protocol.address"), (5, "enclave.protocol.address.parse_address")]


def test_the_definition_check_reports_a_helper_only_the_emulator_calls(sound_tree):
    with (sound_tree / "enclave/protocol/address.py").open("a") as file:
        file.write("\n\ndef emulated_vsock_path(directory, cid, port):\n    return f'{directory}/vsock-{cid}-{port}.sock'\n")
    with (sound_tree / "emulator/__init__.py").open("a") as file:
        file.write("from enclave.protocol.address import emulated_vsock_path\nPATH = emulated_vsock_path('/run', 16, 5000)\n")
    assert emulator_only_definitions(sound_tree) == ["enclave.protocol.address.emulated_vsock_path"]


def test_the_definition_check_counts_the_enclave_and_the_host_as_users_and_nothing_else(sound_tree):
    (sound_tree / "enclave/protocol/address.py").write_text(
        "def parse_address(text):\n    return used_inside(text)\n\n"
        "def used_inside(text):\n    return text\n\n"  # used by its own module
        "def read_by_the_host(): ...\n\n"
        "def listed_only(): ...\n\n__all__ = ['listed_only']\n"  # exported is not used
    )
    (sound_tree / "zerocopy/more.py").write_text("from enclave.protocol.address import read_by_the_host\n")
    (sound_tree / "tests").mkdir()
    (sound_tree / "tests/test_x.py").write_text("from enclave.protocol.address import listed_only\nlisted_only()\n")
    assert emulator_only_definitions(sound_tree) == ["enclave.protocol.address.listed_only"]


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
