"""Warm-process latency of deployed pruned models against their dense originals (``lp.deploy``).

For each (model, MACs target) the zoo model (1 input channel, 10 classes, 32x32)
is pruned with l1 and ``round_to=8`` (latency does not depend on the weights),
deployed (BatchNorm folded, frozen TorchScript, ONNX) and timed by ``lp.deploy``:
every runner first runs ``--warmup`` forward passes (a long-running process),
then dense and deployed run interleaved, ``--repeats`` rounds, medians reported.
The table compares the latency speed-up with the MAC speed-up (1 / MACs kept).

    python benchmarks/deploy_latency.py                      # resnet56 @ 0.5 and vgg16 @ 0.33, about 5 minutes
    python benchmarks/deploy_latency.py --cases resnet56:0.5 --batch-sizes 64 --threads 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import lassoprune as lp


def run_case(model_name: str, target: float, batch_sizes: list[int], threads: int, warmup: int,
             repeats: int) -> list[dict]:  # fmt: skip
    dense = lp.create_model(model_name, num_classes=10, in_channels=1).eval()
    example = torch.zeros(1, 1, 32, 32)
    pruned = lp.prune(dense, example, method="l1", target_macs=target, round_to=8)
    mac_speedup = pruned.macs_before / pruned.macs_after
    with tempfile.TemporaryDirectory() as out:
        result = lp.deploy(pruned.model, Path(out), (1, 1, 32, 32), dense=dense, batch_sizes=batch_sizes,
                           threads=threads, warmup=warmup, repeats=repeats)
    return [{"model": model_name, "target": target, "macs_kept": 1 / mac_speedup, "mac_speedup": mac_speedup,
             **record, "of_mac_speedup": record["speedup"] / mac_speedup} for record in result.latency]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["resnet56:0.5", "vgg16:0.33"], help="MODEL:TARGET")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", metavar="FILE", help="also write the records here")
    args = parser.parse_args()
    records = []
    for case in args.cases:
        name, target = case.split(":")
        records += run_case(name, float(target), args.batch_sizes, args.threads, args.warmup, args.repeats)
    print("| model | MACs kept | runtime | batch | dense ms | deployed ms | speed-up | MAC speed-up | of MAC speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in records:
        print(f"| {r['model']} | {r['macs_kept']:.3f} | {r['runtime']} | {r['batch_size']} | {r['dense_ms']:.2f} | "
              f"{r['deployed_ms']:.2f} | {r['speedup']:.2f}x | {r['mac_speedup']:.2f}x | {r['of_mac_speedup']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
