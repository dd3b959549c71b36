"""Peak memory of the class-wise lasso on wide layers against the bound the methods check beforehand.

A chain of ``layers`` 1x1 convs ``width`` channels wide (after one 3x3 stem conv, BatchNorm and ReLU each, then a
linear classifier of 10 classes) is pruned by ``method`` to 0.5 of its MACs on 2 batches of 16 random images
(16x16), in a fresh process per row. Reported: the peak resident memory of that process (``ru_maxrss``, Python
and torch included), and :func:`lassoprune.hsic.problem.problem_memory` for its groups. Subtract the row of a
narrow chain (256) to see what the problems of the wide one hold::

    python benchmarks/lasso_memory.py                              # 256 x 3, 1024 x 6, 2048 x 3 with sglp-ib
    python benchmarks/lasso_memory.py --rows 2048x3 --methods stlp-ib
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

from bench.tables import markdown_table
from lasso_scoring import problem_bound


def measure(width: int, layers: int, method: str) -> dict:
    """One row, in this process (called in a child process by :func:`main`)."""
    import torch
    from torch import nn

    import lassoprune as lp

    torch.manual_seed(0)
    body: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
    for _ in range(layers - 1):
        body += [nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.ReLU()]
    model = nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)).eval()
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 3, 16, 16, generator=gen), torch.arange(16) % 10) for _ in range(2)]
    result = lp.prune(model, torch.randn(1, 3, 16, 16), method=method, target_macs=0.5, data=data)
    return {"width": width, "layers": layers, "method": method,
            "macs_ratio": result.macs_after / result.macs_before,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
            "problem_bound_gb": problem_bound(result, method) / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=["256x3", "1024x6", "2048x3"], help="WIDTHxLAYERS")
    parser.add_argument("--methods", nargs="+", default=["sglp-ib"])
    parser.add_argument("--child", nargs=3, metavar=("WIDTH", "LAYERS", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), int(args.child[1]), args.child[2])))
        return
    rows = []
    for method in args.methods:
        for spec in args.rows:
            width, layers = spec.lower().split("x")
            proc = subprocess.run([sys.executable, __file__, "--child", width, layers, method],
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(markdown_table(("width", "layers", "method", "MACs kept", "peak RSS GB", "problem bound GB"), [
        [r["width"], r["layers"], r["method"], f"{r['macs_ratio']:.3f}", f"{r['peak_rss_gb']:.2f}",
         f"{r['problem_bound_gb']:.2f}"] for r in rows]))


if __name__ == "__main__":
    main()
