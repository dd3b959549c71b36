"""benchmarks/recovery.py: the table's means and standard errors per (method, target, budget)."""

from __future__ import annotations

import math

from benchmark_modules import load

recovery = load("recovery")


def test_table_gives_mean_and_standard_error_over_seeds_for_every_budget() -> None:
    rows = [{"method": "l1", "target_macs": 0.33, "seed": s, "top1": {"0": a, "640": b}}
            for s, (a, b) in enumerate([(0.5, 0.8), (0.6, 0.9)])]
    rows.append({"method": "hsic-ib", "target_macs": 0.33, "seed": 0, "top1": {"0": 0.85, "640": 0.88}})
    text = recovery.table(rows, (0, 640))
    se = (0.1 / math.sqrt(2)) / math.sqrt(2)  # sample stdev of two values 0.1 apart, over sqrt(n)
    assert f"| l1 | 2 | 0.5500 ± {se:.4f} | 0.8500 ± {se:.4f} |" in text
    assert "| hsic-ib | 1 | 0.8500 | 0.8800 |" in text
    assert "| method | n | 0 steps | 10 steps |" in text
