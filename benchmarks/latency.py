"""Measured speed-up of pruned models versus their MAC reduction (CPU, 2 threads).

For each case a dense zoo model is pruned with ``l1`` to the MAC target
(global allocation, and global with widths rounded to multiples of 8); the
dense model and the pruned ones are timed round-robin in one process, so the
ratios share the machine's noise. Target: latency speed-up >= 0.8 x MAC speed-up.
By default every model first runs 200 untimed calls (a long-running process);
``--fresh`` uses 3, as the first tables of docs/BENCHMARKS.md did (optimistic).

    python benchmarks/latency.py                      # resnet56 @ 1/2, vgg16 @ 1/3 MACs, batch 64 and 1
    python benchmarks/latency.py --repeats 10 --batch-sizes 64
    python benchmarks/latency.py --fresh              # the fresh-process regime
"""

from __future__ import annotations

import argparse
import json

import torch
from bench.tables import markdown_table

import lassoprune as lp
from lassoprune.analysis.latency import make_runner, summarize, time_interleaved

CASES = (("resnet56", 0.5), ("vgg16", 1 / 3))
COLUMNS = ("model", "variant", "backend", "batch", "dense ms", "pruned ms", "MAC speed-up", "latency speed-up",
           "latency / MAC", "speed-up of min latencies")
KEYS = ("model", "variant", "backend", "batch", "dense_ms", "pruned_ms", "mac_speedup", "latency_speedup",
        "efficiency", "min_latency_speedup")
"""The table's columns and the row fields they show."""


def pruned_variants(name: str, ratio: float) -> dict[str, torch.nn.Module]:
    """The dense model and its pruned versions, keyed by label."""
    torch.manual_seed(0)
    dense = lp.create_model(name, num_classes=10).eval()
    example = torch.randn(1, 3, 32, 32)
    return {
        "dense": dense,
        "l1-global": lp.prune(dense, example, method="l1", target_macs=ratio).model.eval(),
        "l1-global-round8": lp.prune(dense, example, method="l1", target_macs=ratio, round_to=8).model.eval(),
    }


def run_case(name: str, ratio: float, batch_sizes: list[int], threads: int, warmup: int, repeats: int) -> list[dict]:
    models = pruned_variants(name, ratio)
    macs = {label: lp.count(m, (1, 3, 32, 32)).macs for label, m in models.items()}
    rows = []
    for backend in ("torch", "onnxruntime"):
        for batch in batch_sizes:
            shape = (batch, 3, 32, 32)
            runners = [make_runner(m, shape, backend, threads) for m in models.values()]
            with torch.no_grad():
                samples = time_interleaved(runners, warmup, repeats, threads)
            results = {label: summarize(s, backend, batch, threads) for label, s in zip(models, samples)}
            for label in models:
                if label == "dense":
                    continue
                mac_speedup = macs["dense"] / macs[label]
                latency_speedup = results["dense"].median_ms / results[label].median_ms
                best_speedup = results["dense"].min_ms / results[label].min_ms
                rows.append({
                    "model": name, "variant": label, "backend": backend, "batch": batch,
                    "dense_ms": round(results["dense"].median_ms, 2), "pruned_ms": round(results[label].median_ms, 2),
                    "mac_speedup": round(mac_speedup, 3), "latency_speedup": round(latency_speedup, 3),
                    "efficiency": round(latency_speedup / mac_speedup, 3),
                    "min_latency_speedup": round(best_speedup, 3),
                })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, help="untimed calls per model first (default: 200, --fresh: 3)")
    parser.add_argument("--fresh", action="store_true", help="time as a freshly started process does")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 3 if args.fresh else 200
    rows = []
    for name, ratio in CASES:
        rows += run_case(name, ratio, args.batch_sizes, args.threads, args.warmup, args.repeats)
    print(markdown_table(COLUMNS, [[r[key] for key in KEYS] for r in rows]))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
