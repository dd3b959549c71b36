"""The package layers: each package of ``lassoprune`` imports only packages at or below its layer.

The order is written in the README's Development section; keep the two in step.
Imports inside functions count too, so a "lazy" import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "lassoprune"

#: Lowest first. A package may import packages of its own layer or of layers below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_version", "utils", "pretrained"),
    ("models", "data", "lasso"),
    ("io",),
    ("analysis",),
    ("channels",),
    ("hsic", "regularizers", "training"),
    ("pruning", "deployment"),
    ("report",),
    ("pipeline",),
    ("cli", "__main__"),
)
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def _package_of(path: Path) -> str:
    """``lassoprune/pruning/api.py`` -> ``pruning``; ``lassoprune/errors.py`` -> ``errors``."""
    parts = path.relative_to(ROOT).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def _imported_packages(path: Path) -> Iterator[str]:
    """The lassoprune packages that ``path`` imports (absolute and relative imports, anywhere in the file)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lassoprune."):
                    yield alias.name.split(".")[1]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}: relative import; write lassoprune.<package> imports")
            module = node.module or ""
            if module == "lassoprune":
                yield from (alias.name for alias in node.names)
            elif module.startswith("lassoprune."):
                yield module.split(".")[1]


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if p.parent != ROOT or p.name not in ("__init__.py",))


def test_every_package_has_a_layer() -> None:
    packages = {_package_of(p) for p in _modules()}
    assert packages == set(LAYER_OF), "add the new package to LAYERS and to the README's Development section"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_downward(path: Path) -> None:
    package = _package_of(path)
    upward = sorted(
        {imported for imported in _imported_packages(path)
         if imported != package and LAYER_OF.get(imported, -1) > LAYER_OF[package]}
    )
    assert not upward, f"{package} (layer {LAYER_OF[package]}) imports {upward} from a layer above"


def test_no_import_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = {}
    for path in _modules():
        package = _package_of(path)
        edges.setdefault(package, set()).update(i for i in _imported_packages(path) if i != package and i in LAYER_OF)
    visiting, done = set(), set()

    def visit(node: str, trail: tuple[str, ...]) -> None:
        if node in done:
            return
        assert node not in visiting, f"import cycle: {' -> '.join(trail + (node,))}"
        visiting.add(node)
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, trail + (node,))
        visiting.discard(node)
        done.add(node)

    for package in sorted(edges):
        visit(package, ())


def test_the_readme_states_the_same_layers() -> None:
    readme = (ROOT.parent / "README.md").read_text()
    for names in LAYERS:
        line = " · ".join(f"`{n}`" for n in names)
        assert line in readme, f"README's Development section should list the layer {line}"


#: The longest a function of ``lassoprune`` may be without a reason written on the line above it.
LONGEST_FUNCTION = 80
REASON = "# Long on purpose:"


def test_long_functions_say_why() -> None:
    """No function over :data:`LONGEST_FUNCTION` lines unless the line above it starts with :data:`REASON`."""
    unexplained = []
    for path in _modules():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                long = node.end_lineno - node.lineno + 1 > LONGEST_FUNCTION
                if long and not lines[first - 2].strip().startswith(REASON):
                    unexplained.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}")
    assert not unexplained, unexplained
