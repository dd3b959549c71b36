"""benchmarks/oneshot_sweep.py: the table gives mean ± SE per (variant, target), SE 0 for a single seed."""

from __future__ import annotations

import math

from benchmark_modules import load

oneshot = load("oneshot_sweep")


def test_table_gives_mean_and_standard_error_per_variant_and_target() -> None:
    rows = [{"variant": "l1", "target_macs": 0.5, "seed": s, "top1": a, "worst": w, "params_ratio": 0.6}
            for s, (a, w) in enumerate([(0.8, 0.5), (0.9, 0.7)])]
    rows.append({"variant": "hsic-ib-apib", "target_macs": 0.33, "seed": 0, "top1": 0.85, "worst": 0.6,
                 "params_ratio": 0.4})
    text = oneshot.table(rows, [0.5, 0.33])
    se1, se2 = 0.1 / math.sqrt(2) / math.sqrt(2), 0.2 / math.sqrt(2) / math.sqrt(2)
    assert text.splitlines()[:2] == ["| variant | 0.5 MACs: top-1 / worst | 0.33 MACs: top-1 / worst | params kept |",
                                     "|---|---|---|---|"]
    assert f"| l1 | 0.8500 ± {se1:.4f} / 0.600 ± {se2:.3f} (n=2) | - | 0.60 |" in text
    assert "| hsic-ib-apib | - | 0.8500 ± 0.0000 / 0.600 ± 0.000 (n=1) | 0.40 |" in text
    assert len(text.splitlines()) == 4  # variants without rows have no line
