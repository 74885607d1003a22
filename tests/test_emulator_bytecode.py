"""The enclave image's bytecode (emulator.bytecode): the interpreter uses it, and only for the very
source it was compiled from — an image whose source changed after its bytecode was written runs
the changed source, never the bytecode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from emulator.bytecode import write_bytecode
from emulator.measure import image_files


def _run_isolated(image: Path, code: str) -> subprocess.CompletedProcess:
    # As the launcher runs the enclave: isolated mode, no bytecode written (-B); -v reports where code came from.
    bootstrap = f"import sys; sys.path.insert(0, {str(image)!r}); {code}"
    return subprocess.run([sys.executable, "-I", "-B", "-v", "-c", bootstrap], capture_output=True, text=True, timeout=60)


def _package(tmp_path: Path, modules: dict[str, str]) -> Path:
    """An image directory holding package ``pkg`` with ``modules`` (relative path -> source)."""
    package = tmp_path / "image" / "pkg"
    for relative, source in {"__init__.py": "", **modules}.items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_text(source)
    return package


def test_the_image_runs_its_bytecode_which_no_measurement_includes(tmp_path):
    package = _package(tmp_path, {"sub/__init__.py": "", "sub/answer.py": "VALUE = 'measured'\n"})
    measured = image_files(package)
    write_bytecode(package)
    assert image_files(package) == measured  # PCRs are computed over the same files as before
    result = _run_isolated(package.parent, "import pkg.sub.answer as a; print(a.VALUE)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "measured"
    pyc = package / "sub" / "__pycache__" / f"answer.{sys.implementation.cache_tag}.pyc"
    assert f"code object from '{pyc}'" in result.stderr


def test_a_source_changed_after_its_bytecode_runs_as_changed(tmp_path):
    package = _package(tmp_path, {"answer.py": "VALUE = 'compiled'\n"})
    write_bytecode(package)
    (package / "answer.py").write_text("VALUE = 'changed!'\n")  # same length: only the hash tells
    result = _run_isolated(package.parent, "import pkg.answer as a; print(a.VALUE)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "changed!"


def test_a_module_that_does_not_compile_gets_no_bytecode_and_fails_in_the_enclave_as_before(tmp_path):
    package = _package(tmp_path, {"broken.py": "def (:\n"})
    write_bytecode(package)
    assert not (package / "__pycache__" / f"broken.{sys.implementation.cache_tag}.pyc").exists()
    result = _run_isolated(package.parent, "import pkg.broken")
    assert result.returncode == 1 and "SyntaxError" in result.stderr
