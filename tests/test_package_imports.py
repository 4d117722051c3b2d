"""The packages of ``capturelab`` import each other without a cycle.

A cycle between packages (``train`` importing ``bench`` while ``bench`` drives ``train``) means
neither can be read, tested or moved alone. Nodes are the subpackages (``capturelab.bench``) and
the top-level modules (``capturelab.consent``); an edge is any import, at module level or inside
a function, of one node by another.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "capturelab"


def _node(module: str) -> str | None:
    """``capturelab.bench.result`` -> ``bench``; ``capturelab.consent`` -> ``consent``."""
    parts = module.split(".")
    if parts[0] != "capturelab" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path, root: Path) -> set[str]:
    package = ".".join(("capturelab", *path.relative_to(root).parent.parts))
    found: set[str] = set()
    for item in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(item, ast.Import):
            found.update(alias.name for alias in item.names)
        elif isinstance(item, ast.ImportFrom):
            if item.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - item.level + 1])
                if item.module:
                    found.add(f"{base}.{item.module}")
                else:  # from . import schema: the names are modules
                    found.update(f"{base}.{alias.name}" for alias in item.names)
            elif item.module:  # from capturelab import keys: keys may be a module
                found.add(item.module)
                found.update(f"{item.module}.{alias.name}" for alias in item.names)
    return found


def graph(root: Path = SRC) -> dict[str, set[str]]:
    """Node -> the other nodes it imports."""
    edges: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        source = rel.parts[0].removesuffix(".py")
        for module in _imports(path, root):
            target = _node(module)
            if target and target != source:
                edges.setdefault(source, set()).add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle's node list, found by depth-first search from each node."""
    found: list[list[str]] = []
    for start in sorted(edges):
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    found.append(path)
                elif nxt not in path and nxt > start:
                    stack.append((nxt, [*path, nxt]))
    return found


def test_no_cycle_between_packages():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in found)


def test_a_cycle_is_found(tmp_path: Path):
    for name, text in {
        "bench/__init__.py": "",
        "bench/result.py": "from capturelab.train import run\n",
        "train/__init__.py": "",
        "train/run.py": "def f():\n    from capturelab.bench.result import x\n",
        "consent.py": "from . import schema\n",
        "schema.py": "",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    edges = graph(tmp_path)
    assert edges == {"bench": {"train"}, "train": {"bench"}, "consent": {"schema"}}
    assert cycles(edges) == [["bench", "train"]]


def test_the_dataset_builder_reads_keys_without_the_collector():
    """Key classes, typed text and secret prompts come from ``capturelab.keys`` for both tiers."""
    edges = graph()
    assert "collector" not in edges["dataset"]
    assert "keys" in edges["dataset"]
    assert "keys" in edges["collector"]
    assert "bench" not in edges["train"]
