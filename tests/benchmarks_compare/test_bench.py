"""benchmarks/bench: mean ± SE (n < 2 included), the resumable results file (both layouts, files of earlier
runs, refused settings, atomic rewrite), markdown tables, and the method settings defined once."""

from __future__ import annotations

import ast
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
from benchmark_modules import BENCHMARKS, shared

stats = shared("stats")
results = shared("results")
tables = shared("tables")
settings = shared("settings")

#: Method options of lp.prune (the lasso methods' and dwgl-vote's, before and after the ablation settings moved
#: under ``experimental``): no script outside bench/settings.py may name one.
METHOD_OPTIONS = frozenset({
    "kernel", "normalise", "nonneg", "ridge", "strength", "magnitude", "class_weight", "structure_from", "block",
    "permutations", "target_kind", "products", "experimental", "class_fit", "lambda2", "lambda2_ratio", "pool",
    "edge_threshold", "solver_tol", "max_iter", "target_tolerance", "threshold", "vote", "vote_k", "vote_on",
})
PRUNE_CALLS = frozenset({"prune", "row_cut", "PruneSettings"})


# -- stats -------------------------------------------------------------------------------------------------------


def test_estimates_and_the_two_standard_error_rule() -> None:
    est = stats.Estimate.of([0.90, 0.92])
    assert est.mean == pytest.approx(0.91) and est.se == pytest.approx(0.01)  # sd 0.01414 / sqrt 2
    assert stats.Estimate.of([0.5]).se is None
    close = stats.Estimate(0.905, 0.01, 2)
    far = stats.Estimate(0.86, 0.01, 2)
    assert stats.differs(est, close) is False  # 0.005 < 2 * sqrt(2) * 0.01
    assert stats.differs(est, far) is True  # 0.05 > 0.0283
    assert stats.differs(est, stats.Estimate.of([0.5])) is None
    assert 2 * math.sqrt(2) * 0.01 == pytest.approx(0.028284, abs=1e-6)
    # two seeds that agree have an SE of about 0: the floor keeps a few test images from counting as real
    agree, other = stats.Estimate(0.9404, 0.0, 2), stats.Estimate(0.9399, 0.0, 2)
    assert stats.differs(agree, other) is True
    floor = stats.sampling_se(0.94, 10_000)
    assert floor == pytest.approx(math.sqrt(0.94 * 0.06 / 10_000))  # 0.0024
    assert stats.differs(agree, other, floor) is False
    assert stats.differs(stats.Estimate(0.94, 0.0, 2), stats.Estimate(0.93, 0.0, 2), floor) is True
    assert stats.sampling_se(0.9, None) == 0.0
    one_seed = stats.Estimate.of([0.9448])
    assert stats.differs(one_seed, stats.Estimate.of([0.9437]), floor) is False  # 0.0011 < 2 sqrt(2) 0.0024
    assert stats.differs(one_seed, stats.Estimate.of([0.9371]), floor) is True  # 0.0077 > 0.0067


def test_standard_error_is_the_sample_deviation_over_root_n_and_a_single_value_has_none() -> None:
    values = [0.81, 0.84, 0.9]
    est = stats.Estimate.of(values)
    assert est.se == pytest.approx(statistics.stdev(values) / math.sqrt(3))
    assert est.text() == f"{statistics.fmean(values):.4f} ± {est.se:.4f}"
    assert stats.Estimate.of([0.5]).text(3) == "0.500"
    assert stats.mean_se(values) == (est.mean, est.se)
    assert stats.mean_se([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        stats.Estimate.of([])
    with pytest.raises(ValueError, match="at least one"):
        stats.mean_se([])


# -- results ------------------------------------------------------------------------------------------------------


def _row(variant: str, seed: int) -> dict[str, Any]:
    return {"variant": variant, "target_macs": 0.5, "seed": seed, "top1": 0.9}


def test_store_with_settings_writes_rows_as_they_finish_and_a_rerun_skips_them(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "results.json"
    key = ("variant", "target_macs", "seed")
    store = results.ResultsStore(path, key, settings={"model": "m", "calib_size": 500})
    assert len(store) == 0 and not path.exists() and path.parent.is_dir()
    store.add(_row("l1", 0))
    store.add(_row("l1", 1))
    assert json.loads(path.read_text()) == {"settings": {"model": "m", "calib_size": 500},
                                            "rows": [_row("l1", 0), _row("l1", 1)]}
    again = results.ResultsStore(path, key, settings={"calib_size": 500, "model": "m"})
    assert ("l1", 0.5, 1) in again and ("l1", 0.5, 2) not in again and len(again) == 2
    assert not list(path.parent.glob("*.tmp"))  # the atomic rewrite leaves no temporary file


def test_store_refuses_a_file_of_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    results.ResultsStore(path, ("variant",), settings={"model": "a"}).add(_row("l1", 0))
    with pytest.raises(SystemExit, match="holds rows of other settings.*another --runs"):
        results.ResultsStore(path, ("variant",), settings={"model": "b"})


def test_store_without_settings_is_a_bare_list_and_resumes_files_of_earlier_runs(tmp_path: Path) -> None:
    path = tmp_path / "accuracy.json"
    path.write_text(json.dumps([{"variant": "l1", "target": 0.5, "seed": 0, "with_top1": 0.8}], indent=2) + "\n")
    store = results.ResultsStore(path, ("variant", "target", "seed"))
    assert ("l1", 0.5, 0) in store and ("l1", 0.33, 0) not in store
    store.add({"variant": "l1", "target": 0.33, "seed": 0, "with_top1": 0.7})
    assert [r["target"] for r in json.loads(path.read_text())] == [0.5, 0.33]


def test_store_writes_the_table_beside_the_results(tmp_path: Path) -> None:
    store = results.ResultsStore(tmp_path / "results.json", ("seed",))
    written = store.write_table("dense top-1 0.9400", "| a |\n|---|")
    assert written == tmp_path / "table.md"
    assert written.read_text() == "dense top-1 0.9400\n\n| a |\n|---|\n"


# -- tables -------------------------------------------------------------------------------------------------------


def test_markdown_table_has_a_header_a_rule_and_a_line_per_row() -> None:
    assert tables.markdown_table(["a", "b"], [[1, "x"], [2.5, ""]]) == "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 |  |"
    assert tables.markdown_table(("only",), []) == "| only |\n|---|"


# -- settings -----------------------------------------------------------------------------------------------------


def _flat(options: dict[str, Any]) -> dict[str, Any]:
    """Options with any ``experimental`` group merged in, whichever layout settings.py uses."""
    return {**{k: v for k, v in options.items() if k != "experimental"}, **options.get("experimental", {})}


def test_the_kernel_settings_have_one_name_per_meaning() -> None:
    laplace, gaussian, first = (_flat(o) for o in (settings.APIB_LAPLACE, settings.APIB_GAUSSIAN,
                                                    settings.FIRST_DEFAULTS))
    assert (laplace["kernel"], gaussian["kernel"], first["kernel"]) == ("laplace", "gaussian", "median")
    assert {k: v for k, v in gaussian.items() if k != "kernel"} == {k: v for k, v in laplace.items() if k != "kernel"}
    assert _flat(settings.CROSS_FIT) == {**laplace, "class_fit": "cross"}
    # the same row name means different kernels in the two one-shot scripts; each table says which
    assert _flat(settings.ONESHOT_VARIANTS["hsic-ib-apib"].options)["kernel"] == "gaussian"
    assert _flat(settings.ONESHOT_VARIANTS["hsic-ib-apib-laplace"].options) == laplace
    assert _flat(settings.RECONSTRUCTION_VARIANTS["hsic-ib-apib"].options) == laplace


def _named_options(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every method option named as a dict key or as a keyword of a prune call."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            found += [(key.lineno, key.value) for key in node.keys
                      if isinstance(key, ast.Constant) and key.value in METHOD_OPTIONS]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in PRUNE_CALLS:
                found += [(node.lineno, kw.arg) for kw in node.keywords if kw.arg in METHOD_OPTIONS]
    return found


def test_no_script_names_a_method_option_outside_the_settings_module() -> None:
    own = BENCHMARKS / "bench" / "settings.py"
    assert _named_options(ast.parse(own.read_text()))  # the check sees the options where they are
    named = {str(path.relative_to(BENCHMARKS)): found for path in sorted(BENCHMARKS.rglob("*.py"))
             if path != own and (found := _named_options(ast.parse(path.read_text())))}
    assert named == {}, f"method options named outside bench/settings.py: {named}"
