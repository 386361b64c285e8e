"""The system's shape: one-way layers, no private names across packages, no import cycles, ruff clean.

Layers, lowest first (README, "Packages"): ``common`` -> ``weights`` and ``evaluate`` -> ``extract`` ->
``refactor`` -> ``detect``. A module may import its own package and strictly lower layers; imports
inside functions count as much as those at the top. Benchmarks and tests sit above everything but,
like the packages, use no private name of another package.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"common": 0, "weights": 1, "evaluate": 1, "extract": 2, "refactor": 3, "detect": 4}
CLIENTS = ("benchmarks", "tests", "tools")          # may import every layer, public names only


@dataclass(frozen=True)
class Import:
    module: str        # importing module, dotted ("detect.train")
    target: str        # imported project module, dotted ("refactor.model"; a package: "refactor")
    names: tuple[str, ...]  # names taken from it (``from target import a, b``)
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules(root: Path, packages) -> dict[str, Path]:
    """Dotted name -> file of every module of ``packages`` under ``root``."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            out[module_name(root, path)] = path
    return out


def imports_of(root: Path, path: Path, known: set[str]) -> list[Import]:
    """Every import of a project module in the file, at any depth (functions, classes, ``if``)."""
    me = module_name(root, path)
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in known:
                    found.append(Import(me, alias.name, (), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:                                       # relative import: resolve it
                base = me.split(".") if is_pkg else me.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in known:
                continue
            names = tuple(a.name for a in node.names)
            found.append(Import(me, target, names, node.lineno))
    return found


def private_attribute_uses(root: Path, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """``alias._name`` where ``alias`` is bound by ``import pkg.mod as alias`` / ``from pkg import mod``
    to a project module of another package (monkeypatching or reading privates)."""
    me = module_name(root, path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in known:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in known:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            target = aliases[node.value.id]
            if _private(node.attr) and target.split(".")[0] != me.split(".")[0]:
                out.append((node.lineno, f"{target}.{node.attr}"))
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def layer_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        src, dst = imp.module.split(".")[0], imp.target.split(".")[0]
        if src == dst or src not in LAYERS:
            continue
        if LAYERS[dst] >= LAYERS[src]:
            kind = "sideways" if LAYERS[dst] == LAYERS[src] else "upward"
            bad.append(f"{imp.module}:{imp.line} imports {imp.target} ({kind}: {src} is layer {LAYERS[src]}, "
                       f"{dst} layer {LAYERS[dst]})")
    return bad


def private_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        if imp.module.split(".")[0] == imp.target.split(".")[0]:
            continue
        for part in imp.target.split("."):
            if _private(part):
                bad.append(f"{imp.module}:{imp.line} imports private module {imp.target}")
        for name in imp.names:
            if _private(name):
                bad.append(f"{imp.module}:{imp.line} imports private {imp.target}.{name}")
    return bad


def module_graph(imports: list[Import], modules: set[str]) -> dict[str, set[str]]:
    """Edges module -> imported project module (``from pkg import sub`` counts as ``pkg.sub`` when
    ``sub`` is a module, else as the package ``pkg``)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        targets = []
        if imp.names:
            for name in imp.names:
                sub = f"{imp.target}.{name}"
                targets.append(sub if sub in modules else imp.target)
        else:
            targets.append(imp.target)
        for t in targets:
            while t not in modules and "." in t:             # import a.b.c of a non-module: its package
                t = t.rsplit(".", 1)[0]
            if t in modules and t != imp.module:
                graph[imp.module].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check_tree(root: Path, packages=tuple(LAYERS), clients=CLIENTS) -> list[str]:
    """Every layering, privacy and cycle violation under ``root``, one line each."""
    known = set(packages)
    modules = project_modules(root, packages)
    client_files = [p for c in clients if (root / c).is_dir() for p in sorted((root / c).rglob("*.py"))]
    package_imports = [i for path in modules.values() for i in imports_of(root, path, known)]
    client_imports = [i for path in client_files for i in imports_of(root, path, known)]
    problems = layer_violations(package_imports)
    problems += private_violations(package_imports + client_imports)
    for path in list(modules.values()) + client_files:
        problems += [f"{module_name(root, path)}:{line} uses private {name}"
                     for line, name in private_attribute_uses(root, path, known)]
    problems += [f"import cycle: {' <-> '.join(c)}" for c in cycles(module_graph(package_imports, set(modules)))]
    return problems


# --- the checker on hand-made trees (it must catch what it claims to) ---------------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for pkg in LAYERS:
        (tmp_path / pkg).mkdir(exist_ok=True)
        (tmp_path / pkg / "__init__.py").touch()
    return tmp_path


def test_checker_accepts_downward_imports(tmp_path):
    root = _tree(tmp_path, {"detect/a.py": "from refactor.model import Net\nimport common.fileio\n",
                            "refactor/model.py": "from extract.features import read\nNet = 1\n",
                            "extract/features.py": "from weights import spec\nfrom common import x\nread = 1\n",
                            "benchmarks/b.py": "from detect.a import run\n"})
    assert check_tree(root) == []


@pytest.mark.parametrize("files, expected", [
    ({"weights/hub.py": "def f():\n    from extract.i3d import I3D\n"}, "upward"),
    ({"evaluate/x.py": "import weights.specs\n"}, "sideways"),
    ({"refactor/m.py": "if True:\n    from detect.train import load\n"}, "upward"),
    ({"extract/m.py": "from . import y\n", "extract/y.py": "from ..detect import z\n"}, "upward"),
    ({"detect/plots.py": "from evaluate.plots import _figure\n"}, "private evaluate.plots._figure"),
    ({"benchmarks/b.py": "import detect.train as t\nt._fit = None\n"}, "uses private detect.train._fit"),
    ({"benchmarks/b.py": "from extract import _impl\n"}, "private extract._impl"),
    ({"detect/infer.py": "from detect.train import load\n", "detect/train.py": "def f():\n    import detect.infer\n"},
     "import cycle: detect.infer <-> detect.train"),
    ({"extract/__init__.py": "from extract.pipeline import run\n", "extract/pipeline.py": "from extract import x\n"},
     "import cycle: extract <-> extract.pipeline"),
])
def test_checker_finds_violations(tmp_path, files, expected):
    root = _tree(tmp_path, files)
    problems = check_tree(root)
    assert any(expected in p for p in problems), problems


def test_checker_allows_private_names_inside_a_package(tmp_path):
    root = _tree(tmp_path, {"detect/a.py": "from detect.b import _helper\nimport detect.b as b\nb._x\n",
                            "detect/b.py": "_helper = 1\n_x = 2\n"})
    assert check_tree(root) == []


# --- the repository ----------------------------------------------------------------------------------------

def test_layers_privacy_and_cycles():
    problems = check_tree(ROOT)
    assert not problems, "\n".join(problems)


def test_every_package_is_layered():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(LAYERS), f"packages without a layer (or layers without a package): {packages ^ set(LAYERS)}"


def test_ruff_clean():
    ruff = shutil.which("ruff")
    cmd = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    proc = subprocess.run([*cmd, "check", "--no-cache", "--output-format", "concise", str(ROOT)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
