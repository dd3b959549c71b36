"""Cost of scoring every channel group with the class-wise lasso methods (time split and peak memory).

For each (model, method), a fresh process builds the model, draws the
class-balanced calibration set (N images of Fashion-MNIST, padded to 32x32)
and runs ``lp.prune(..., target_macs=T)``; it reports the method's own time
split (features = the forward pass with hooks, kernels, Gram = G and R,
search = the search on rho including every lasso solve), the total wall time of ``lp.prune`` and the peak resident memory of
the process (``ru_maxrss``, which includes the Python and torch baseline), how much of it ``lp.prune`` added,
and the bound the methods check against the memory available before building their problems
(:func:`lassoprune.hsic.problem.problem_memory`).

    python benchmarks/lasso_scoring.py                                  # vgg16 and resnet56, sglp-ib and stlp-ib
    python benchmarks/lasso_scoring.py --models vgg16 --methods sglp-ib --calib-size 500 --target 0.4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from bench.tables import markdown_table


def measure(model_name: str, method: str, calib_size: int, target: float) -> dict:
    """One measurement, in this process (called in a child process by :func:`main`)."""
    import torch

    import lassoprune as lp
    from lassoprune.training.data_setup import calibration_batches

    torch.manual_seed(0)
    model = lp.create_model(model_name, num_classes=10, in_channels=1)
    calib = calibration_batches("fashion-mnist", image_size=32, size=calib_size, seed=0)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = lp.prune(model, torch.zeros(1, 1, 32, 32), method=method, target_macs=target, data=calib)
    total = time.perf_counter() - started
    split = result.diagnostics.seconds  # features, kernels, gram, search
    return {
        "model": model_name, "method": method, "calib_images": calib_size, "target": target,
        "macs_ratio": result.macs_after / result.macs_before, "total_s": total,
        **{f"{k}_s": v for k, v in split.items()},
        "groups": len(result.groups), "rho_steps": len(result.diagnostics.search.steps),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "prune_rss_gib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 2**20,
        "problem_bound_gib": problem_bound(result, method) / 2**30,
        "threads": torch.get_num_threads(),
    }


def problem_bound(result, method: str, num_classes: int = 10) -> int:
    """The memory bound (bytes) of the problems a lasso method with its default fit built for ``result`` (one per
    group in its diagnostics); ``benchmarks/lasso_memory.py`` reports it too."""
    from lassoprune.hsic.problem import grams_per_group, problem_memory
    from lassoprune.pruning.methods.hsic_lasso import LASSO_METHODS

    widths = {gid: result.widths[gid][1] for gid in result.diagnostics.groups}
    return problem_memory(widths, grams_per_group(LASSO_METHODS[method].class_fit, num_classes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet56"])
    parser.add_argument("--methods", nargs="+", default=["sglp-ib", "stlp-ib"])
    parser.add_argument("--calib-size", type=int, default=500)
    parser.add_argument("--target", type=float, default=0.4)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.calib_size, args.target)))
        return
    rows = []
    for model in args.models:
        for method in args.methods:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", model, method, "--calib-size", str(args.calib_size),
                 "--target", str(args.target)], capture_output=True, text=True, check=True,
            )
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    header = ("model", "method", "N", "MACs kept", "features s", "kernels s", "Gram s", "search s",
              "total s", "peak RSS GiB", "added by prune GiB", "problem bound GiB")
    print(markdown_table(header, [
        [r["model"], r["method"], r["calib_images"], f"{r['macs_ratio']:.3f}", f"{r['features_s']:.1f}",
         f"{r['kernels_s']:.1f}", f"{r['gram_s']:.1f}", f"{r['search_s']:.1f}",
         f"{r['total_s']:.1f}", f"{r['peak_rss_gib']:.2f}", f"{r['prune_rss_gib']:.2f}",
         f"{r['problem_bound_gib']:.2f}"] for r in rows]))


if __name__ == "__main__":
    main()
