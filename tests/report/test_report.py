"""Run reports: files written and readable, derived numbers exact, tables faithful, class trees, clear errors."""

import copy
import json
import re

import matplotlib.image
import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import dendrogram, is_valid_linkage

import lassoprune as lp
from lassoprune.cli import main
from lassoprune.errors import LassopruneError
from lassoprune.report import check_summary, derived_numbers, load_summaries, render_report, tree_linkage

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TREE = [[[0, 1, 2, 3, 4, 5], 1.0], [[0, 2, 4], 0.7], [[1, 3, 5], 0.7]]  # root + two clusters, interleaved


@pytest.fixture(scope="module")
def pruned_groups() -> tuple[list[dict], dict]:
    """Groups and counts of a real l1 pruning of resnet20 to half its MACs."""
    torch.manual_seed(0)
    model = lp.create_model("resnet20", num_classes=len(CLASS_NAMES)).eval()
    result = lp.prune(model, torch.randn(1, 3, 32, 32), method="l1", target_macs=0.5, inplace=True)
    report = result.to_dict()
    groups = [{"id": gid, "kept": g["kept"], "total": g["total"], "eltwise": g["eltwise"]}
              for gid, g in report["groups"].items()]
    counts = {key: report[key] for key in ("macs_before", "macs_after", "params_before", "params_after")}
    return groups, counts


def _metrics(top1: float, worst: float, seed: int) -> dict:
    per_class = np.random.default_rng(seed).uniform(worst, 1.0, len(CLASS_NAMES)).round(4).tolist()
    per_class[seed % len(CLASS_NAMES)] = worst
    return {"top1": top1, "top5": min(1.0, top1 + 0.05), "worst_class": worst, "per_class": per_class}


def _summary(name: str, method: str, macs_after: int, structure: dict | None, groups: list[dict],
             pruned: bool = True) -> dict:
    return {
        "schema": 2, "name": name, "model": "resnet20", "dataset": "fashion-mnist", "class_names": CLASS_NAMES,
        "method": method, "sparse": {"regularizer": "dwgl", "lam": 0.5, "epochs": 2},
        "target": {"kind": "macs", "ratio": round(macs_after / 40_000_000, 2)},
        "macs_before": 40_000_000, "macs_after": macs_after, "params_before": 270_000,
        "params_after": macs_after // 150,
        "groups": groups,
        "metrics": {"baseline": _metrics(0.9123, 0.7012, 1),
                    **({"pruned": _metrics(0.4567, 0.1034, 2)} if pruned else {}),
                    "final": _metrics(0.8876, 0.6543, 3)},
        "class_structure": structure,
        "latency": {"batch_size": 64, "threads": 1, "before_ms": 30.0, "after_ms": 16.0, "speedup": 1.875},
        "stages": {"pretrain": {"seconds": 120.5}, "prune": {"seconds": 2.25}, "finetune": {"seconds": 60.0}},
    }


@pytest.fixture(scope="module")
def real_summary(pruned_groups) -> dict:
    groups, counts = pruned_groups
    summary = _summary("r20-l1-0.5", "l1", counts["macs_after"], {"kind": "tree", "groups": TREE}, groups)
    return {**summary, **counts, "target": {"kind": "macs", "ratio": 0.5}}


def _graph_summary(groups: list[dict], name: str = "r20-sglp", macs_after: int = 14_000_000) -> dict:
    edges = [[0, 1, 0.8], [0, 2, -0.3], [3, 4, 0.5], [2, 5, 0.1]]
    return _summary(name, "sglp-ib", macs_after, {"kind": "graph", "edges": edges}, groups, pruned=False)


def test_one_run_writes_all_files_and_readable_pngs(tmp_path, real_summary):
    files = render_report([real_summary], tmp_path)
    names = sorted(path.name for path in files.paths())
    assert names == sorted(["report.md", "report.json", "channels_per_layer.png", "per_class_accuracy.png",
                            "class_structure.png", "tradeoff.png"])
    for path in files.images.values():
        assert path.parent == tmp_path and path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_size > 5_000
        pixels = matplotlib.image.imread(path)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 200
        assert pixels[..., :3].std() > 0.05  # something is drawn
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes left no temporary file


def test_report_json_derived_numbers_are_the_arithmetic_of_the_inputs(tmp_path, real_summary, pruned_groups):
    runs = [real_summary, _graph_summary(pruned_groups[0])]
    runs[1]["latency"] = None
    files = render_report(runs, tmp_path)
    report = json.loads(files.json.read_text())
    assert [run["name"] for run in report["runs"]] == [s["name"] for s in runs]
    for run, summary in zip(report["runs"], runs):
        d, m = run["derived"], summary["metrics"]
        assert d["macs_ratio"] == summary["macs_after"] / summary["macs_before"]
        assert d["params_ratio"] == summary["params_after"] / summary["params_before"]
        assert d["top1_drop"] == m["baseline"]["top1"] - m["final"]["top1"]
        assert d["worst_class_drop"] == m["baseline"]["worst_class"] - m["final"]["worst_class"]
        assert run["summary"]["groups"] == summary["groups"]
    assert report["runs"][0]["derived"]["speedup"] == 1.875
    assert report["runs"][0]["derived"]["pruned_top1_drop"] == 0.9123 - 0.4567
    assert report["runs"][1]["derived"]["speedup"] is None
    assert report["runs"][1]["derived"]["pruned_top1_drop"] is None
    assert abs(report["runs"][0]["derived"]["macs_ratio"] - 0.5) <= 0.01  # the real pruning met its target


def test_markdown_tables_hold_every_group_and_the_metrics(tmp_path, real_summary):
    md = render_report([real_summary], tmp_path).markdown.read_text()
    for group in real_summary["groups"]:
        assert f"| {group['id']} | {group['kept']} / {group['total']} |" in md
    m = real_summary["metrics"]
    assert "| baseline | 91.23% | 96.23% | 70.12% |" in md
    assert "| pruned | 45.67% |" in md and "| final | 88.76% |" in md
    assert f"| final | 88.76% | 93.76% | 65.43% | {100 * (m['baseline']['top1'] - 0.8876):.2f} pp |" in md
    assert f"| MACs | {real_summary['macs_before']:,d} | {real_summary['macs_after']:,d} |" in md
    assert "30.00 ms -> 16.00 ms, speed-up 1.88x" in md
    assert "| prune | 2.2 |" in md or "| prune | 2.3 |" in md
    for image in ("channels_per_layer", "per_class_accuracy", "class_structure", "tradeoff"):
        assert f"]({image}.png)" in md  # relative links
    assert "## Comparison" not in md


def _comparison_rows(md: str) -> list[list[str]]:
    section = md.split("## Comparison", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]  # drop the header


def test_several_runs_comparison_table_is_sorted_by_macs_ratio(tmp_path, real_summary, pruned_groups):
    runs = [_graph_summary(pruned_groups[0], "b", 28_000_000), real_summary,
            _graph_summary(pruned_groups[0], "c", 8_000_000)]
    md = render_report(runs, tmp_path).markdown.read_text()
    rows = _comparison_rows(md)
    assert [row[0] for row in rows] == ["c", "r20-l1-0.5", "b"]
    ratios = [float(row[3]) for row in rows]
    assert ratios == sorted(ratios) and len(rows) == len(runs)
    assert rows[0][1:3] == ["sglp-ib", "MACs 0.2"] and rows[0][3] == f"{8 / 40:.4f}"
    assert rows[0][5:] == ["88.76%", "65.43%", "1.88x"]
    assert md.count("## Run ") == 3


def _contiguous(order: list[int], cluster: set[int]) -> bool:
    where = sorted(order.index(k) for k in cluster)
    return where == list(range(where[0], where[0] + len(cluster)))


def test_tree_linkage_keeps_planted_clusters_contiguous():
    groups = [*TREE, [[0, 2], 0.4], [[4], 0.1]]  # a second level inside {0, 2, 4}
    z = tree_linkage(groups, 6)
    assert z.shape == (5, 4) and is_valid_linkage(z)
    assert z[-1, 3] == 6 and z[-1, 2] == 3.0  # root holds all classes at the top level
    order = dendrogram(z, no_plot=True)["leaves"]
    assert sorted(order) == list(range(6))
    for cluster in ({0, 2, 4}, {1, 3, 5}, {0, 2}):
        assert _contiguous(order, cluster), order
    assert not _contiguous(list(range(6)), {0, 2, 4})  # the planted clusters are not index ranges


def test_tree_groups_that_overlap_are_rejected():
    with pytest.raises(LassopruneError, match="overlap"):
        tree_linkage([[[0, 1, 2], 1.0], [[0, 1], 0.5], [[1, 2], 0.5]], 3)


def test_a_schema_1_summary_is_read_and_kind_none_skips_the_structure_figure(tmp_path, pruned_groups):
    """Schema 1 carried an always-null ``class_means_linkage``: such a summary still loads and draws its tree."""
    old = _summary("t", "stlp-ib", 20_000_000, {"kind": "tree", "groups": TREE}, pruned_groups[0])
    old.update(schema=1, class_means_linkage=None)
    files = render_report([old], tmp_path / "a")
    assert files.images["class_structure"].read_bytes()[:8] == PNG_MAGIC
    plain = _summary("n", "l1", 20_000_000, {"kind": "none"}, pruned_groups[0])
    files = render_report([plain, {**plain, "name": "m", "class_structure": None}], tmp_path / "b")
    assert "class_structure" not in files.images and not (tmp_path / "b" / "class_structure.png").exists()
    assert "class_structure.png" not in files.markdown.read_text()


@pytest.mark.parametrize(
    "path, key",
    [(["macs_after"], "macs_after"), (["metrics", "final", "top1"], "metrics.final.top1"),
     (["metrics", "baseline"], "metrics.baseline"), (["stages"], "stages")],
)
def test_missing_key_is_named_with_the_file(tmp_path, real_summary, path, key):
    broken = copy.deepcopy(real_summary)
    parent = broken
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    (tmp_path / "summary.json").write_text(json.dumps(broken))
    with pytest.raises(LassopruneError) as info:
        load_summaries([tmp_path])
    assert f"'{key}' is missing" in str(info.value) and str(tmp_path / "summary.json") in str(info.value)


@pytest.mark.parametrize(
    "change, key",
    [({"schema": 3}, "schema"), ({"class_names": []}, "class_names"),
     ({"target": {"kind": "flops", "ratio": 0.5}}, "target.kind"),
     ({"class_structure": {"kind": "graph", "edges": [[0, 9, 0.5]]}}, "class_structure.edges[0][1]")],
)
def test_malformed_values_are_named(real_summary, change, key):
    with pytest.raises(LassopruneError, match=re.escape(f"'{key}'")):
        check_summary({**real_summary, **change}, source="x.json")


def test_bad_group_and_per_class_length_are_named(real_summary):
    broken = copy.deepcopy(real_summary)
    broken["groups"][1]["kept"] = broken["groups"][1]["total"] + 1
    with pytest.raises(LassopruneError, match=re.escape("'groups[1].kept'")):
        check_summary(broken)
    broken = copy.deepcopy(real_summary)
    broken["metrics"]["final"]["per_class"].pop()
    with pytest.raises(LassopruneError, match=re.escape("'metrics.final.per_class' must have 6 entries")):
        check_summary(broken)


def test_absent_nullable_keys_are_filled_and_name_defaults_to_the_directory(tmp_path, real_summary):
    run = tmp_path / "my-run"
    run.mkdir()
    slim = {k: v for k, v in real_summary.items() if k not in ("latency", "sparse", "class_means_linkage", "name")}
    (run / "summary.json").write_text(json.dumps(slim))
    (summary,) = load_summaries([run])
    assert summary["name"] == "my-run" and summary["latency"] is None and summary["sparse"] is None
    assert derived_numbers(summary)["speedup"] is None


def test_run_directory_without_summary_has_a_clear_error(tmp_path):
    with pytest.raises(LassopruneError, match="has no summary.json: is it a finished `lassoprune run` directory"):
        load_summaries([tmp_path])


def _write_run(root, summary: dict):
    run = root / summary["name"]
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_cli_one_run_reports_into_the_run_directory(tmp_path, real_summary, capsys):
    run = _write_run(tmp_path, real_summary)
    assert main(["report", str(run), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["markdown"] == str(run / "report.md") and (run / "report.md").is_file()
    assert set(printed["images"]) == {"channels_per_layer", "per_class_accuracy", "class_structure", "tradeoff"}
    assert all((run / f"{key}.png").is_file() for key in printed["images"])


def test_cli_two_runs_need_out(tmp_path, real_summary, pruned_groups, capsys):
    a = _write_run(tmp_path, real_summary)
    b = _write_run(tmp_path, _graph_summary(pruned_groups[0]))
    assert main(["report", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "2 runs given: name the report directory with --out DIR" in err and "Traceback" not in err
    assert not (a / "report.md").exists()

    out = tmp_path / "cmp"
    assert main(["report", str(a), str(b / "summary.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[:2] == [str(out / "report.md"), str(out / "report.json")]
    assert len(_comparison_rows((out / "report.md").read_text())) == 2


def test_threshold_run_without_size_target_is_reported(tmp_path, pruned_groups):
    run = {**_graph_summary(pruned_groups[0]), "target": {"kind": "threshold", "ratio": None}}
    md = render_report([run, _graph_summary(pruned_groups[0], "other", 9_000_000)], tmp_path).markdown.read_text()
    assert "| r20-sglp | sglp-ib | threshold | 0.3500 |" in md
    with pytest.raises(LassopruneError, match=re.escape("'target.ratio'")):
        check_summary({**run, "target": {"kind": "macs", "ratio": None}})
