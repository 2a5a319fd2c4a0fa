"""Imports run one way (docs/architecture.md, "Layers"): a static check of every import in muse/,
benchmarks/ and verification/, parsed with ``ast`` (no module is imported).

* each ``muse`` package imports only the packages its layer allows (:data:`ALLOWED`);
* imports inside ``muse`` form no cycle, counting imports inside functions too (a lazy import
  that points back up is still a cycle);
* no module imports a private name (``from m import _x`` or ``m._x``) of another module, and a
  private module (``muse.complex._policy``) is imported only from inside its own package;
  ``muse._checks`` and ``muse._io`` are the shared helpers every layer may use;
* nothing in ``benchmarks/`` or ``verification/`` imports ``muse.cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = {"muse._checks", "muse._io"}

#: package -> the packages it may import (besides itself, torch and the standard library).
ALLOWED: dict[str, set[str]] = {
    "muse._checks": set(),
    "muse._io": set(),
    "muse.kernels": set(),
    "muse.complex": {"muse.kernels"},
    "muse.init": set(),
    "muse.scan": {"muse.complex", "muse.kernels"},
    "muse.nn": {"muse.complex", "muse.init", "muse.scan", "muse.kernels"},
    "muse.models": {"muse.complex", "muse.init", "muse.scan", "muse.nn"},
    "muse.data": set(),
    "muse.train": {"muse.models", "muse.data", "muse.nn", "muse.complex", "muse.kernels"},
    "muse.smoke": {"muse.models", "muse.train", "muse.complex", "muse.nn"},
    "muse.cli": {"muse.*", "benchmarks", "verification"},
    "muse": {"muse.complex"},
    "muse.__main__": {"muse.cli"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(name: str) -> bool:
    return (REPO / Path(*name.split("."))).is_dir()


def _sources(*roots: str) -> dict[str, Path]:
    return {_module_name(p): p for root in roots for p in sorted((REPO / root).rglob("*.py"))}


class _Imports(ast.NodeVisitor):
    """Every import of a module: (imported module, imported name or None, at module scope?, line)."""

    def __init__(self, module: str, is_package: bool):
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[str, str | None, bool, int]] = []
        self.module_aliases: dict[str, str] = {}
        self.private_attrs: list[tuple[str, str, int]] = []
        self.depth = 0

    def _scoped(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _scoped

    def visit_Import(self, node: ast.Import):
        for alias in node.names:
            self.found.append((alias.name, None, self.depth == 0, node.lineno))
            if alias.asname:
                self.module_aliases[alias.asname] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = self.package.split(".")
            base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
        for alias in node.names:
            full = f"{base}.{alias.name}"
            if _is_package(full) or (REPO / Path(*full.split("."))).with_suffix(".py").is_file():
                self.found.append((full, None, self.depth == 0, node.lineno))
                self.module_aliases[alias.asname or alias.name] = full
            else:
                self.found.append((base, alias.name, self.depth == 0, node.lineno))

    def visit_Attribute(self, node: ast.Attribute):
        if (isinstance(node.value, ast.Name) and node.value.id in self.module_aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            self.private_attrs.append((self.module_aliases[node.value.id], node.attr, node.lineno))
        self.generic_visit(node)


def _imports(module: str, path: Path) -> _Imports:
    visitor = _Imports(module, path.name == "__init__.py")
    visitor.visit(ast.parse(path.read_text(), filename=str(path)))
    return visitor


def _layer(module: str) -> str:
    """The layer of a muse module: ``muse.<package>`` (or ``muse`` for muse/__init__.py)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


MUSE = _sources("muse")
ALL = {**MUSE, **_sources("benchmarks"), **_sources("verification")}


def _project(name: str) -> bool:
    return name.split(".")[0] in ("muse", "benchmarks", "verification")


def _allowed(importer: str, target: str) -> bool:
    layer, target_layer = _layer(importer), _layer(target)
    if target_layer == layer or target in SHARED:
        return True
    allowed = ALLOWED.get(layer)
    assert allowed is not None, f"{importer}: package {layer} has no entry in ALLOWED; add its layer"
    if "muse.*" in allowed and target.startswith("muse"):
        return True
    return target_layer in allowed or target.split(".")[0] in allowed


def test_every_muse_package_has_a_layer():
    missing = sorted({_layer(m) for m in MUSE} - set(ALLOWED))
    assert not missing, f"packages without an entry in ALLOWED: {missing}"


def test_imports_follow_the_layers():
    bad = [f"{m}:{line} imports {target}" for m, p in MUSE.items()
           for target, _, _, line in _imports(m, p).found
           if _project(target) and not _allowed(m, target)]
    assert not bad, "imports against docs/architecture.md's layers:\n" + "\n".join(bad)


def test_no_import_cycle_in_muse():
    graph = {m: {t for t, _, _, _ in _imports(m, p).found if t in MUSE and t != m} for m, p in MUSE.items()}
    # a package's __init__ imports its submodules; a submodule importing its own package's
    # public names is not counted as a cycle (Python resolves it from the submodules)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if m.startswith(t + ".") and t in graph:  # submodule -> own package __init__: see above
                continue
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if state.get(t) is None and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if state.get(m) is None and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_no_private_names_across_modules():
    bad = []
    for m, p in ALL.items():
        imp = _imports(m, p)
        for target, name, _, line in imp.found:
            if name and name.startswith("_") and not name.startswith("__") and _project(target):
                bad.append(f"{m}:{line} imports the private name {target}.{name}")
            private = [part for part in target.split(".")[1:] if part.startswith("_")]
            if _project(target) and private and target not in SHARED:
                owner = target.rsplit(".", 1)[0]
                if not (m == owner or m.startswith(owner + ".")):
                    bad.append(f"{m}:{line} imports the private module {target} from outside {owner}")
        bad += [f"{m}:{line} uses the private name {mod}.{attr}" for mod, attr, line in imp.private_attrs
                if _project(mod)]
    assert not bad, "\n".join(bad)


def test_benchmarks_and_verification_do_not_import_the_cli():
    """Library code only: the verification suite's own tests of ``muse verify`` may import the CLI."""
    bad = [f"{m}:{line} imports {target}" for m, p in ALL.items()
           if not m.startswith("muse") and not p.name.startswith("test_")
           for target, _, _, line in _imports(m, p).found if target == "muse.cli" or target.startswith("muse.cli.")]
    assert not bad, "runners are library functions; muse/cli wraps them:\n" + "\n".join(bad)


def test_the_check_sees_a_violation(tmp_path):
    """The visitor reports a private import and a private attribute (guards against a vacuous pass)."""
    src = "from muse.complex.ops import _as\nimport muse.complex._policy as pol\npol._hidden()\n"
    visitor = _Imports("muse.nn.fake", is_package=False)
    visitor.visit(ast.parse(src))
    assert ("muse.complex.ops", "_as", True, 1) in visitor.found
    assert ("muse.complex._policy", "_hidden", 3) in visitor.private_attrs
    assert not _allowed("muse.scan.fake", "muse.nn.linear") and _allowed("muse.nn.fake", "muse.scan.bk")
