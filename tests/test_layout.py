"""The rooms of the project and which way their imports go, checked on the source with `ast`.

model/ (the behaviour) imports nothing above it; specs/ (the properties) reads model/;
checker/ (the engines) knows no model; crmodel/ (CLI, API, docs, notebooks) joins them.
Every import counts, also those inside functions: a late import hides a cycle, it does not
break it. Only imports for type checkers (`if TYPE_CHECKING:`) are left out: they never run.
A private name (`_x`) stays in its package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "specs", "checker", "crmodel")
# What each room must not import (its own package and the standard library aside).
FORBIDDEN = {"model": {"specs", "checker", "crmodel"}, "checker": {"model", "specs", "crmodel"},
             "specs": {"checker", "crmodel"}}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str, current: str, level: int) -> str:
    if level:
        base = current.split(".")
        pkg = base if MODULES[current].name == "__init__.py" else base[:-1]
        pkg = pkg[: len(pkg) - level + 1]
        return ".".join(pkg + ([name] if name else []))
    return name


def _imports(mod: str, text: str | None = None) -> list[tuple[str, str | None, int]]:
    """(imported module, name taken from it or None, line) for every import in `mod` (its
    file, or `text` given as its source)."""
    tree = ast.parse(text if text is not None else MODULES[mod].read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    out: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", mod, node.level)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES
                           else (base, a.name, node.lineno))
    return [(m, n, line) for m, n, line in out if m.split(".")[0] in PACKAGES]


def _graph() -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(MODULES)
    for mod in MODULES:
        for target, _, _ in _imports(mod):
            if target in MODULES and target != mod:
                g.add_edge(mod, target)
    return g


def test_every_import_resolves_to_a_module() -> None:
    missing = [(mod, target) for mod in MODULES for target, _, _ in _imports(mod)
               if target not in MODULES]
    assert not missing, missing


def test_no_import_cycles() -> None:
    cycles = list(nx.simple_cycles(_graph()))
    assert not cycles, f"import cycles: {cycles}"


def test_lower_rooms_do_not_import_higher_ones() -> None:
    bad = [(mod, target) for mod, target in _graph().edges
           if target.split(".")[0] in FORBIDDEN.get(mod.split(".")[0], set())]
    assert not bad, bad


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_taken(mod: str, imports: list[tuple[str, str | None, int]]) -> list[str]:
    out = []
    for target, name, line in imports:
        taken = name or target.rsplit(".", 1)[-1]
        if _private(taken) and target.split(".")[0] != mod.split(".")[0]:
            out.append(f"{mod}:{line}: {target} {name or ''}")
    return out


def test_no_private_names_across_packages() -> None:
    bad = [x for mod in MODULES for x in _private_taken(mod, _imports(mod))]
    assert not bad, bad


def test_the_checks_see_late_imports_and_private_names() -> None:
    """Teeth: a private name taken inside a function is seen, and so is the edge."""
    text = "def f():\n    from model.checkpoint import _leaks\n    import specs.lemmas\n"
    imports = _imports("model.world", text)
    assert _private_taken("crmodel.docs", imports)
    assert ("specs.lemmas", None, 3) in imports  # model -> specs: a forbidden edge


def test_the_graph_sees_a_cycle() -> None:
    """The cycle check has teeth: an edge back from a module's import closes a cycle."""
    g = _graph()
    src, dst = next(iter(g.edges))
    g.add_edge(dst, src)
    assert list(nx.simple_cycles(g))


def test_importing_specs_loads_no_z3() -> None:
    code = ("import sys; import specs; from specs import SPECS; assert SPECS; "
            "print(sorted(m for m in sys.modules if m == 'z3' or m.startswith('z3.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
