"""Import the scripts of ``benchmarks/`` (a folder of scripts, not a package) under their own names."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _on_path() -> None:
    """Put the folder on ``sys.path`` as it is when a script runs, so the scripts' imports resolve."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.append(str(BENCHMARKS))


def load(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as module ``name`` (imported once; later calls return the same module).

    The folder goes on ``sys.path`` as it does when a script runs, so the scripts' imports of each other resolve.
    """
    _on_path()
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def shared(name: str) -> ModuleType:
    """``benchmarks/bench/<name>.py`` as module ``bench.<name>``, the name the scripts import it by."""
    _on_path()
    return importlib.import_module(f"bench.{name}")
