"""Functions stay short enough to read at a glance (issue 9): none over 60 lines in the source,
outside the short list in docs/architecture.md ("Long functions"), each with its reason."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ("enclave", "emulator", "zerocopy", "pytest_zerocopy", "fuzz", "benchmarks", "tests", "examples")
LIMIT = 60
# "| `path::qualified.name` | reason |" rows under the "## Long functions" heading
_LISTED = re.compile(r"^\| `([\w/.]+\.py)::([\w.]+)` \| (.+?) \|$", re.MULTILINE)


def _functions(path: Path) -> dict[str, int]:
    """Qualified name -> length in lines, for every function and method in ``path``."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")

    visit(ast.parse(path.read_text()), "")
    return lengths


def _long_functions() -> dict[str, int]:
    found = {}
    for package in SOURCE:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name, length in _functions(path).items():
                if length > LIMIT:
                    found[f"{path.relative_to(ROOT).as_posix()}::{name}"] = length
    return found


def _listed() -> dict[str, str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Long functions", 1)[1].split("\n## ", 1)[0]
    return {f"{path}::{name}": reason for path, name, reason in _LISTED.findall(section)}


def test_no_function_is_longer_than_the_limit_unless_listed_with_a_reason():
    long = _long_functions()
    listed = _listed()
    unlisted = {name: length for name, length in long.items() if name not in listed}
    assert not unlisted, f"functions over {LIMIT} lines not listed in docs/architecture.md: {unlisted}"
    assert all(len(reason.split()) >= 4 for reason in listed.values()), listed


def test_the_list_names_only_functions_that_are_still_long():
    stale = sorted(set(_listed()) - set(_long_functions()))
    assert not stale, f"listed in docs/architecture.md but no longer over {LIMIT} lines (or gone): {stale}"


def test_the_measure_sees_a_long_function(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("class A:\n    def long(self):\n" + "        x = 1\n" * LIMIT + "\ndef short():\n    pass\n")
    assert _functions(sample) == {"A.long": LIMIT + 1, "short": 2}
