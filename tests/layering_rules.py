"""The layout's house rules as a checker over source text, so lazy imports count as much as the
ones that run at import time.

``import_violations(root)`` reads every import (top level and inside functions, relative ones
resolved, ``importlib.import_module``/``__import__`` with a literal name) and reports arrows that
point the wrong way. ``emulator_only_definitions(root)`` reports module-level names defined under
``enclave/`` that neither the enclave itself nor the host (through ``enclave.protocol``) uses: code
the measured image carries for someone else.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Import", "imports_of", "import_violations", "emulator_only_definitions"]

# importer package -> packages it must not import (DESIGN.md: pytest_zerocopy -> emulator ->
# zerocopy -> enclave.protocol, and the enclave image holds only what runs in it).
FORBIDDEN = {
    "enclave": ("emulator", "zerocopy", "pytest_zerocopy", "moto", "pytest", "hypothesis", "flask"),
    "zerocopy": ("emulator", "pytest_zerocopy", "moto", "pytest", "hypothesis"),
    "emulator": ("pytest_zerocopy", "pytest", "hypothesis"),
}
_DYNAMIC_IMPORTERS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str
    names: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module}"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(root: Path, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = _module_name(root, path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _dynamic_target(node: ast.Call) -> str | None:
    function = node.func
    name = function.attr if isinstance(function, ast.Attribute) else function.id if isinstance(function, ast.Name) else None
    if name in _DYNAMIC_IMPORTERS and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    """Every module ``path`` imports, wherever the import statement or call sits."""
    relative = path.relative_to(root)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (Import(relative, node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(root, path, node)
            yield Import(relative, node.lineno, module, tuple(alias.name for alias in node.names))
            # `from package import module` imports the submodule too
            yield from (Import(relative, node.lineno, f"{module}.{alias.name}".lstrip(".")) for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and (target := _dynamic_target(node)):
            yield Import(relative, node.lineno, target)


def _sources(root: Path, package: str) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


def import_violations(root: Path) -> list[str]:
    """Imports that break the one-way arrows, and host imports of the enclave beyond its protocol."""
    found = []
    for importer, forbidden in FORBIDDEN.items():
        for path in _sources(root, importer):
            for imported in imports_of(root, path):
                top = imported.module.split(".")[0]
                if top in forbidden:
                    found.append(f"{imported} ({importer} must not import {top})")
                elif importer == "zerocopy" and top == "enclave" and imported.module not in ("enclave", "enclave.protocol") and not imported.module.startswith("enclave.protocol."):
                    found.append(f"{imported} (the host uses only enclave.protocol)")
    return sorted(set(found))


def _definitions(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            yield from ((target.id, node) for target in targets if isinstance(target, ast.Name))


def _references(tree: ast.AST, skip: ast.AST | None = None) -> set[str]:
    """Names a module reads (bare, as an attribute, or by ``getattr(obj, "name")``), not counting
    the subtree ``skip``."""
    names: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if node is skip:
            continue
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif _is_getattr(node) and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            names.add(node.args[1].value)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _is_getattr(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2


def _public_names(tree: ast.Module) -> set[str]:
    for name, node in _definitions(tree):
        if name == "__all__" and isinstance(node, ast.Assign) and isinstance(node.value, (ast.List, ast.Tuple)):
            return {element.value for element in node.value.elts if isinstance(element, ast.Constant)}
    return {name for name, _ in _definitions(tree) if not name.startswith("_")}


def _host_uses(root: Path, enclave_trees: dict[str, ast.Module]) -> set[str]:
    """Names the host takes from ``enclave.protocol``: imported by name, star, or read off the module."""
    used: set[str] = set()
    for path in _sources(root, "zerocopy"):
        tree = ast.parse(path.read_text())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("enclave.protocol"):
                for alias in node.names:
                    if alias.name == "*":
                        used |= _public_names(enclave_trees.get(node.module or "", ast.Module(body=[], type_ignores=[])))
                    else:
                        used.add(alias.name)
                        aliases.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                aliases |= {alias.asname or alias.name for alias in node.names if alias.name.startswith("enclave.protocol")}
        used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and ast.unparse(node.value) in aliases}
    return used


def emulator_only_definitions(root: Path) -> list[str]:
    """Module-level names under ``enclave/`` used neither by the enclave nor by the host's protocol imports."""
    trees = {_module_name(root, path): ast.parse(path.read_text(), str(path)) for path in _sources(root, "enclave")}
    host = _host_uses(root, trees)
    read = {module: _references(tree) for module, tree in trees.items()}
    found = []
    for module, tree in trees.items():
        elsewhere = set().union(*(names for other, names in read.items() if other != module))
        for name, node in _definitions(tree):
            if name.startswith("__") and name.endswith("__") or name in elsewhere or name in host:
                continue
            if name not in read[module] or name not in _references(tree, skip=node):
                found.append(f"{module}.{name}")
    return sorted(found)
