"""The import graph of the tinyphi3 package, read from its source with `ast`, has no cycle.

Every `import tinyphi3...` and `from tinyphi3... import ...` (relative imports resolved), at module
level or inside a function, is an edge from the importing module to the imported one:
`from pkg import mod` to the module pkg.mod, `from pkg import name` to pkg (its `__init__`), which
counts as a module like any other. tinyphi3_gpu plugs into tinyphi3 and is not part of
the graph; tinyphi3 must not import it.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tinyphi3"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root: Path) -> dict:
    """{module: set of tinyphi3 modules it imports} for every .py file under `root`."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # `from pkg import mod` imports the module; `from pkg import name`, the package
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules
                           else source for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:           # a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict):
    """One cycle as a list of modules [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_tinyphi3_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 40, "the package's modules were not found"
    assert "tinyphi3.models.model" in graph["tinyphi3"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# A backend package plugs into the switch (tinyphi3.backends) as tinyphi3_gpu does: it is a unit
# of its own, above the maths whose operations it computes, while the switch is below them.
PLUG_INS = ("tinyphi3.backends.numba",)


def package_of(module: str) -> str:
    """The unit a module belongs to: tinyphi3.<sub-package> (or a plug-in backend package)."""
    for plug_in in PLUG_INS:
        if module == plug_in or module.startswith(plug_in + "."):
            return plug_in
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict) -> dict:
    """The module graph collapsed to sub-packages: nn, models, quant, data, ..."""
    packages = {}
    for module, targets in graph.items():
        edges = packages.setdefault(package_of(module), set())
        edges.update(package_of(t) for t in targets if package_of(t) != package_of(module))
    return packages


def test_sub_packages_import_one_way():
    """nn/ never imports models/, data/ never imports evaluation/, and so on: no cycle between
    sub-packages either (the package's own __init__, which re-exports the public API, aside)."""
    graph = package_graph(import_graph(PACKAGE))
    graph.pop("tinyphi3")
    assert {"tinyphi3.nn", "tinyphi3.models", "tinyphi3.quant", "tinyphi3.data"} <= set(graph)
    assert "tinyphi3.models" not in graph["tinyphi3.nn"]
    cycle = find_cycle(graph)
    assert cycle is None, "sub-packages import each other: " + " -> ".join(cycle)


def test_a_cycle_between_sub_packages_is_found(tmp_path):
    """Negative control: two sub-packages whose modules import each other's, no module cycle."""
    write(tmp_path, {"pkg/__init__.py": "", "pkg/a/__init__.py": "", "pkg/b/__init__.py": "",
                     "pkg/a/x.py": "from pkg.b import y\n", "pkg/a/z.py": "x = 1\n",
                     "pkg/b/y.py": "from pkg.a import z\n"})
    graph = import_graph(tmp_path / "pkg")
    assert find_cycle(graph) is None
    assert find_cycle(package_graph(graph)) in (["pkg.a", "pkg.b", "pkg.a"],
                                                ["pkg.b", "pkg.a", "pkg.b"])


def test_tinyphi3_never_imports_the_gpu_package():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "tinyphi3_gpu" for n in names), path


def write(root: Path, files: dict):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("files, cycle", [
    # a function-level relative import closing the loop, as quant <-> cache once did
    ({"pkg/__init__.py": "", "pkg/a.py": "from . import b\n",
      "pkg/b.py": "def f():\n    from .a import x\n"}, ["pkg.a", "pkg.b", "pkg.a"]),
    # through a sub-package and an absolute import
    ({"pkg/__init__.py": "", "pkg/sub/__init__.py": "", "pkg/sub/c.py": "import pkg.d\n",
      "pkg/d.py": "from pkg.sub import c\n"}, ["pkg.d", "pkg.sub.c", "pkg.d"]),
])
def test_a_cycle_is_found(tmp_path, files, cycle):
    """Negative control: the check fails on packages that do have a cycle."""
    write(tmp_path, files)
    assert find_cycle(import_graph(tmp_path / "pkg")) == cycle


def test_no_cycle_in_a_chain(tmp_path):
    write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from .b import y\n",
                     "pkg/b.py": "import numpy\nfrom pkg import c\n", "pkg/c.py": "x = 1\n"})
    assert find_cycle(import_graph(tmp_path / "pkg")) is None
