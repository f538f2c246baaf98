"""The architecture of simferry, checked from its source with ``ast``.

Dependencies point one way: cli -> engine -> {transports, launchers, workload} -> base
modules, and analysis reads records only. These tests fail with every offending line
(``file:line``), so the tree stays readable without running anything. Run
``python -m tests.test_architecture`` for the same list and the counts.

Decisions that make the rules precise:

- An import counts wherever it is written: inside a function, or under ``if
  TYPE_CHECKING:``. A function-level import hides a cycle from the interpreter, not from
  a reader; a ``TYPE_CHECKING`` import is still a dependency of the design (the module
  needs the other's types to be understood), so it counts for cycles and layers alike.
  Importing ``a.b`` counts as a dependency on ``a.b`` only, not on the package ``a``
  (simferry's ``__init__`` files hold nothing that would close a cycle).
- The base layer is ``errors``, ``units``, ``config``, ``plugins`` and ``records`` plus
  the plug-in interfaces ``transports/base.py``, ``transports/exceptions.py`` and
  ``launchers/base.py``: a run's config holds a transport's and a launcher's config, so
  their interface types belong to the shared vocabulary every layer may use.
- Transports, launchers and workload are peers: none imports another, except the other
  plug-in package's shared modules (``base``, ``common``, ``exceptions``).
- A plug-in is any module of ``transports/`` or ``launchers/`` other than those shared
  modules. Its identity is its first name under the package without a leading ``_``, so
  ``transports/redis.py`` and ``transports/_redis/server.py`` are one plug-in; importing
  a plug-in of another identity is importing a peer.
- A getattr capability probe is ``getattr(obj, "name", default)`` (or ``hasattr(obj,
  "name")``) where ``name`` is an attribute some plug-in class defines: the caller is
  asking which backend it holds. Argparse namespaces (``args``, ``ns``) are not probed
  for abilities but for flags, and ``self`` knows its own class; both are left out.
- A ``# type: ignore`` is accepted when the same line has a further comment that names
  a third-party package simferry imports (the one whose typing has the gap).
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "simferry"
MAX_FUNCTION_LINES = 60

BASE = {"errors", "units", "config", "plugins", "records", "faults", "threads"}
#: Interfaces every layer may use: the transport and launcher Protocols, their errors, and
#: the streaming index (the record and Protocol task bodies publish and subscribe through).
INTERFACES = {"transports.base", "transports.exceptions", "transports.index", "launchers.base"}
PLUGIN_PACKAGES = {"transports", "launchers"}
#: Modules every backend of a package may use: its interface, its helpers, and the two
#: formats several backends share (the streaming index; the one-file-per-array store that
#: filesystem and shm both are).
SHARED = {"base", "common", "exceptions", "index", "filestore"}
PEERS = {"transports", "launchers", "workload"}
#: layer -> the layers it may import (besides itself and the base layer).
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "workload": set(),
    "transports": set(),
    "launchers": set(),
    "analysis": set(),
    "engine": {"transports", "launchers", "workload", "analysis"},
    "cli": {"engine", "transports", "launchers", "workload", "analysis"},
}
#: What analysis may import: it reads records (and reports with errors and units).
ANALYSIS_BASE = {"records", "errors", "units"}
NAMESPACES = {"args", "ns"}


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    rule: str
    text: str

    def __str__(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{shown}:{self.line}: [{self.rule}] {self.text}"


@dataclass(frozen=True)
class Module:
    name: str  # dotted, without the leading "simferry."
    path: Path
    tree: ast.Module
    source: str


@dataclass(frozen=True)
class Import:
    source: Module
    target: str
    line: int
    in_function: bool


def load(root: Path = PACKAGE) -> dict[str, Module]:
    """Every module under ``root``, keyed by its dotted name below the package."""
    modules: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        source = path.read_text()
        name = ".".join(parts)
        modules[name] = Module(name, path, ast.parse(source, str(path)), source)
    return modules


def _resolve(dotted: str, modules: dict[str, Module]) -> str | None:
    """The longest prefix of ``dotted`` that is a module of the package."""
    parts = dotted.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return "" if "" in modules else None


def _targets(node: ast.Import | ast.ImportFrom, mod: Module, top: str, modules: dict) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
        return [t for n in names if n.split(".")[0] == top and (t := _inner(n, top, modules))]
    if node.level:
        here = mod.name.split(".") if mod.name else []
        if mod.path.name != "__init__.py":
            here = here[:-1]
        base = ".".join(
            [*here[: len(here) - node.level + 1], *([node.module] if node.module else [])]
        )
    elif node.module and node.module.split(".")[0] == top:
        base = node.module.partition(".")[2]
    else:
        return []
    found = []
    for alias in node.names:
        full = f"{base}.{alias.name}" if base else alias.name
        target = full if full in modules else _resolve(base, modules)
        if target is not None:
            found.append(target)
    return found


def _inner(dotted: str, top: str, modules: dict[str, Module]) -> str | None:
    return _resolve(dotted.partition(".")[2], modules) if dotted != top else ""


def imports(modules: dict[str, Module], top: str = "simferry") -> list[Import]:
    """Every import of one of the package's modules, with where it is written."""
    found: dict[tuple[str, int, str], Import] = {}
    for mod in modules.values():
        for node, in_function in _walk(mod.tree, False):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, mod, top, modules):
                    found[mod.name, node.lineno, target] = Import(
                        mod, target, node.lineno, in_function
                    )
    return list(found.values())


def _walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        yield child, in_function
        inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
        yield from _walk(child, inner)


# -- (a) cycles ---------------------------------------------------------------------------


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges.get(v, ()):
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def cycles(modules: dict[str, Module]) -> tuple[int, list[Violation]]:
    """Each import that lies on a cycle, named with the cycle's modules."""
    deps = [i for i in imports(modules) if i.target != i.source.name]
    edges: dict[str, set[str]] = {}
    for i in deps:
        edges.setdefault(i.source.name, set()).add(i.target)
    groups = strongly_connected(edges)
    found = []
    for group in groups:
        members = set(group)
        label = ", ".join(f"simferry.{m}".rstrip(".") for m in group)
        for i in deps:
            if i.source.name in members and i.target in members:
                where = " (inside a function)" if i.in_function else ""
                text = f"imports simferry.{i.target}{where}; import cycle among {label}"
                found.append(Violation(i.source.path, i.line, "cycle", text))
    return len(groups), found


# -- (b) layers and plug-ins ------------------------------------------------------------


def layer(name: str) -> str | None:
    """The layer of a module, or ``None`` for one outside the layered tree."""
    head = name.split(".")[0]
    if name in INTERFACES or head in BASE or name == "":
        return "base"
    if head == "__main__":
        return "cli"
    return head if head in ALLOWED else None


def plugin_identity(name: str) -> str | None:
    """Which plug-in a module belongs to (``None`` for shared and non-plug-in modules)."""
    parts = name.split(".")
    if parts[0] not in PLUGIN_PACKAGES or len(parts) < 2 or parts[1] in SHARED:
        return None
    return f"{parts[0]}.{parts[1].lstrip('_').split('_')[0]}"


def _layer_problem(source: str, target: str) -> str | None:
    src, dst = layer(source), layer(target)
    if src is None or dst is None or src == dst:
        return None
    if src == "analysis":
        ok = dst == "analysis" or target.split(".")[0] in ANALYSIS_BASE
        return None if ok else "analysis reads records only (and errors, units)"
    if dst == "base" or dst in ALLOWED[src]:
        return None
    if src in PEERS and dst in PLUGIN_PACKAGES and target.split(".")[1:2] == ["common"]:
        return None  # the other plug-in package's shared helpers
    return f"the {src} layer may not depend on the {dst} layer"


def layering(modules: dict[str, Module]) -> list[Violation]:
    found = [
        Violation(m.path, 1, "layer", f"simferry.{m.name} is outside the layered tree")
        for m in modules.values()
        if layer(m.name) is None
    ]
    for i in imports(modules):
        problem = _layer_problem(i.source.name, i.target)
        if problem:
            text = f"imports simferry.{i.target}: {problem}"
            found.append(Violation(i.source.path, i.line, "layer", text))
        mine, theirs = plugin_identity(i.source.name), plugin_identity(i.target)
        if theirs is not None and theirs != mine and layer(i.source.name) in PLUGIN_PACKAGES:
            text = f"imports simferry.{i.target}: a plug-in module imports a peer backend"
            found.append(Violation(i.source.path, i.line, "plugin", text))
    return found


# -- (c) long functions, (d) getattr probes, (e) type: ignore --------------------------


def long_functions(modules: dict[str, Module]) -> list[Violation]:
    found = []
    for m in modules.values():
        for node in ast.walk(m.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    text = f"{node.name} is {lines} lines (at most {MAX_FUNCTION_LINES})"
                    found.append(Violation(m.path, node.lineno, "long", text))
    return found


def plugin_attributes(modules: dict[str, Module]) -> set[str]:
    """Names that classes of plug-in modules define: methods, fields, ``self.x = ...``."""
    names: set[str] = set()
    for m in modules.values():
        if plugin_identity(m.name) is None:
            continue
        for cls in (n for n in ast.walk(m.tree) if isinstance(n, ast.ClassDef)):
            for node in ast.walk(cls):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(node.name)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
                elif (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.ctx, ast.Store)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "self"
                ):
                    names.add(node.attr)
    return {n for n in names if not n.startswith("_")}


def _is_getattr(node: ast.AST) -> bool:
    """A chain ``getattr(getattr(x, "_a", None), "b", ...)`` walks a runtime's internals."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return False
    return node.func.id == "getattr" and bool(node.args)


def getattr_probes(modules: dict[str, Module]) -> list[Violation]:
    abilities = plugin_attributes(modules)
    found = []
    for m in modules.values():
        chained = {
            id(n.args[0]) for n in ast.walk(m.tree) if _is_getattr(n) and _is_getattr(n.args[0])
        }
        for node in ast.walk(m.tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            if id(node) in chained:
                continue
            probe = (node.func.id == "getattr" and len(node.args) == 3) or (
                node.func.id == "hasattr" and len(node.args) == 2
            )
            if not probe or not isinstance(node.args[1], ast.Constant):
                continue
            obj, name = node.args[0], node.args[1].value
            if (isinstance(obj, ast.Name) and obj.id in NAMESPACES) or _is_getattr(obj):
                continue
            if isinstance(name, str) and name in abilities:
                text = f"{node.func.id}(..., {name!r}) probes for a plug-in's ability"
                found.append(Violation(m.path, node.lineno, "getattr", text))
    return found


def third_party(modules: dict[str, Module]) -> set[str]:
    """Top-level names of the packages simferry imports that are neither stdlib nor its own."""
    names: set[str] = set()
    for m in modules.values():
        for node in ast.walk(m.tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"simferry", "__future__"}


def type_ignores(modules: dict[str, Module]) -> list[Violation]:
    packages = third_party(modules)
    found = []
    for m in modules.values():
        tokens = tokenize.generate_tokens(io.StringIO(m.source).readline)
        for tok in tokens:
            if tok.type != tokenize.COMMENT or "type: ignore" not in tok.string:
                continue
            rest = tok.string.split("type: ignore", 1)[1].partition("#")[2].lower()
            words = set(re.findall(r"[a-z0-9_]+", rest.replace("-", "_")))
            if not words & packages:
                text = "# type: ignore without a comment naming the third-party typing gap"
                found.append(Violation(m.path, tok.start[0], "ignore", text))
    return found


def function_imports(modules: dict[str, Module]) -> tuple[int, int]:
    """Import statements written inside functions: of simferry's modules, and of any."""
    ours = theirs = 0
    for m in modules.values():
        for node, in_function in _walk(m.tree, False):
            if in_function and isinstance(node, ast.Import | ast.ImportFrom):
                own = _targets(node, m, "simferry", modules) or (
                    isinstance(node, ast.ImportFrom) and node.level
                )
                ours += bool(own)
                theirs += not own
    return ours, ours + theirs


# -- the tests ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return load()


def _fail(found: list[Violation]) -> None:
    assert not found, f"{len(found)} violation(s):\n" + "\n".join(map(str, found))


def test_no_import_cycle(modules: dict[str, Module]) -> None:
    _fail(cycles(modules)[1])


def test_dependencies_follow_the_layers(modules: dict[str, Module]) -> None:
    _fail(layering(modules))


def test_no_function_over_60_lines(modules: dict[str, Module]) -> None:
    _fail(long_functions(modules))


def test_no_getattr_capability_probe(modules: dict[str, Module]) -> None:
    _fail(getattr_probes(modules))


def test_every_type_ignore_names_its_third_party_gap(modules: dict[str, Module]) -> None:
    _fail(type_ignores(modules))


# -- the checker itself, on a small package with one of each problem ---------------------

LONG_BODY = "\n".join(f"    x{i} = {i}" for i in range(58))
SAMPLE = {
    "__init__.py": "",
    "errors.py": "",
    "records.py": "",
    "config.py": "from simferry.transports.base import T\n",
    "stray.py": "",
    "transports/__init__.py": "",
    "transports/base.py": "T = 1\n",
    "transports/common.py": "",
    "transports/alpha.py": (
        "from simferry.transports import base, common\n"
        "from simferry.transports._alpha import helper\n"
        "from simferry.transports.alpha_server import S\n"
        "from simferry.launchers.common import cpu\n"
        "from simferry.transports.beta import B\n"  # line 5: a peer
        "from simferry.launchers.local import L\n"  # line 6: a peer in the other package
    ),
    "transports/alpha_server.py": "import numpy\n",
    "transports/_alpha/__init__.py": "",
    "transports/_alpha/helper.py": "",
    "transports/beta.py": (
        "class B:\n"
        "    def ability(self):\n"
        "        self.count = 0\n"
        "        return getattr(self.other, '_x', None)\n"
    ),
    "launchers/__init__.py": "",
    "launchers/common.py": "cpu = 1\n",
    "launchers/local.py": "L = 1\n",
    "engine/__init__.py": "",
    "engine/run.py": (
        "from simferry.transports import alpha\n"
        "def go(t, args, x):\n"
        "    from simferry.engine import phased\n"  # line 3: closes a cycle
        "    getattr(t, 'ability', None)\n"  # line 4: a probe
        "    getattr(args, 'ability', None)\n"
        "    getattr(t, 'unrelated', None)\n"
        "    getattr(getattr(x, '_p', None), 'ability', None)\n"
        "    hasattr(t, 'count')\n"  # line 8: a probe
        "    return '# type: ignore'\n"
    ),
    "engine/phased.py": "import simferry.engine.run\n",
    "analysis/__init__.py": "",
    "analysis/tables.py": (
        "from typing import TYPE_CHECKING\n"
        "from simferry import records\n"
        "from simferry import config\n"  # line 3: analysis reads records only
        "if TYPE_CHECKING:\n"
        "    from simferry.analysis.model import M\n"  # line 5: closes a cycle
    ),
    "analysis/model.py": "from .tables import X\n",
    "workload/__init__.py": "",
    "workload/tasks.py": (
        "from simferry.engine.run import go\n"  # line 1: against the layers
        "x = 1  # type: ignore[misc]\n"  # line 2: no gap named
        "y = 1  # type: ignore[misc]  # numpy's stubs lack this\n"
        f"def long():\n{LONG_BODY}\n    return 1\n"  # 60 lines: fine
        f"def longer():\n{LONG_BODY}\n    x = 1\n    return x\n"  # line 64: 61 lines
    ),
    "cli/__init__.py": "from simferry.engine import run\nfrom simferry.analysis import tables\n",
}


@pytest.fixture
def sample(tmp_path: Path) -> dict[str, Module]:
    root = tmp_path / "simferry"
    for name, text in SAMPLE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return load(root)


def where(found: list[Violation]) -> set[tuple[str, int]]:
    return {(v.path.as_posix().split("/simferry/")[-1], v.line) for v in found}


def test_checker_finds_cycles_through_function_and_type_checking_imports(sample) -> None:
    count, found = cycles(sample)
    assert count == 2
    assert where(found) == {
        ("engine/run.py", 3),
        ("engine/phased.py", 1),
        ("analysis/tables.py", 5),
        ("analysis/model.py", 1),
    }


def test_checker_finds_layer_and_peer_violations_only(sample) -> None:
    found = layering(sample)
    assert where(found) == {
        ("stray.py", 1),
        ("transports/alpha.py", 5),
        ("transports/alpha.py", 6),
        ("analysis/tables.py", 3),
        ("workload/tasks.py", 1),
    }
    assert {v.rule for v in found if v.line == 6} == {"layer", "plugin"}


def test_checker_finds_long_functions_probes_and_bare_ignores(sample) -> None:
    assert where(long_functions(sample)) == {("workload/tasks.py", 64)}
    assert where(getattr_probes(sample)) == {("engine/run.py", 4), ("engine/run.py", 8)}
    assert where(type_ignores(sample)) == {("workload/tasks.py", 2)}
    assert function_imports(sample) == (1, 1)


def main() -> int:
    mods = load()
    n_cycles, cycle_found = cycles(mods)
    checks = {
        "import cycles": (n_cycles, cycle_found),
        "layer and plug-in violations": (None, layering(mods)),
        f"functions over {MAX_FUNCTION_LINES} lines": (None, long_functions(mods)),
        "getattr capability probes": (None, getattr_probes(mods)),
        "type: ignore without a named third-party gap": (None, type_ignores(mods)),
    }
    total = 0
    for found in (f for _, f in checks.values()):
        for v in found:
            print(v)
        total += len(found)
    print()
    print(f"modules: {len(mods)}")
    ours, every = function_imports(mods)
    print(f"imports inside functions: {ours} of simferry modules ({every} of any package)")
    for label, (count, found) in checks.items():
        shown = f"{count} ({len(found)} imports on them)" if count is not None else len(found)
        print(f"{label}: {shown}")
    return 1 if total else 0


if __name__ == "__main__":
    raise SystemExit(main())
