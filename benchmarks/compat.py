"""Compatibility run: torchvision and timm classifiers pruned, reconstructed and deployed.

Every torchvision classification model and a list of timm CNN families, with
random weights at a small input, each pruned to 0.5 of the MACs by ``l1`` and
``sglp-ib`` (residual channels cut too: ``prune_residual=True``, so that the
lasso method can reach the target on mobile networks whose blocks are mostly
residual), without and with reconstruction on random calibration images; the
reconstructed model is then deployed (TorchScript and ONNX, checked against the
pruned model to 1e-4). One record per (model, method) goes to a JSON-lines
results file; a second call skips the records already there, so the run can be
stopped and continued. Each (model, method) runs in its own process under a
time limit (a hang becomes a ``timeout`` record).

Needs the vision extra (``pip install lassoprune[vision]``)::

    OMP_NUM_THREADS=1 python benchmarks/compat.py --results runs/compat.jsonl
    python benchmarks/compat.py --results runs/compat.jsonl --table docs/compat_table.md   # table only
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TIMM_FAMILIES = (
    "resnet50d", "efficientnet_b0", "mobilenetv3_large_100", "convnext_atto", "dla34", "hrnet_w18_small",
    "repvgg_a0", "densenet121", "tf_efficientnetv2_b0", "fbnetc_100", "lcnet_050", "ghostnet_100", "mixnet_s",
    "seresnext26d_32x4d", "regnety_004", "dpn68", "cspresnet50", "resnest14d", "rexnet_100", "resnet18",
    "mobilenetv2_100", "efficientnet_lite0", "mnasnet_100", "regnetx_002", "cspdarknet53", "selecsls42b",
    "res2net50_14w_8s", "skresnet18", "ecaresnet26t", "gernet_s", "ese_vovnet19b_dw", "hardcorenas_a",
    "tinynet_a", "mobileone_s0", "convnextv2_atto", "nf_resnet26", "resnetv2_50", "vgg11_bn", "xception41",
    "inception_v3",
)
METHODS = ("l1", "sglp-ib")
SIDE = 64
SIDES = {"torchvision:inception_v3": 96, "timm:inception_v3": 96}
#: Adaptive pools that ONNX exports only when the pooled size divides the map: 224 gives AlexNet 6x6, VGG 7x7.
NATIVE_SIDE = ("torchvision:alexnet", "torchvision:vgg", "timm:vgg")
FIXED_SIDE = ("vit_", "swin_", "maxvit", "deit", "beit")  # transformers that only take their own input size


#: The smallest torchvision classifier of each family: run (with every method) before the larger variants.
TORCHVISION_FAMILIES = (
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet", "inception_v3",
    "maxvit_t", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "regnet_x_400mf",
    "regnet_y_400mf", "resnet18", "resnet50", "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_0",
    "squeezenet1_1", "swin_t", "swin_v2_t", "vgg11", "vgg11_bn", "vit_b_16", "wide_resnet50_2",
)


def model_groups() -> list[list[str]]:
    """The models in the order they run: one per family (the torchvision families, then the timm families of
    :data:`TIMM_FAMILIES`), then the other torchvision classifiers (larger variants of the same families)."""
    import torchvision

    every = [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)]
    families = [f"torchvision:{n}" for n in TORCHVISION_FAMILIES] + [f"timm:{n}" for n in TIMM_FAMILIES]
    return [families, [n for n in every if n not in families]]


def model_names() -> list[str]:
    """Every model of the run: :func:`model_groups` flattened."""
    return [name for group in model_groups() for name in group]


def side_of(name: str) -> int:
    """Input side used for ``name`` (transformers with a fixed size get 224)."""
    if any(part in name for part in FIXED_SIDE) or name.startswith(NATIVE_SIDE):
        return 224
    return SIDES.get(name, SIDE)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:240]}"


def run_one(name: str, method: str, quick: bool = False) -> dict[str, Any]:
    """Prune ``name`` with ``method`` without and with reconstruction, deploy the last model (quick: cut only)."""
    import torch

    import lassoprune as lp
    from lassoprune.deployment import deploy

    torch.manual_seed(0)
    side = side_of(name)
    record: dict[str, Any] = {"model": name, "method": method, "mode": _mode(quick), "side": side}
    try:
        started = time.perf_counter()
        model = lp.create_model(name, num_classes=10).eval()
        record["build_s"] = round(time.perf_counter() - started, 2)
    except Exception as exc:
        record["build"] = _short(exc)
        return record
    x = torch.randn(1, 3, side, side)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 3, side, side, generator=gen), torch.arange(16) % 10) for _ in range(2)]
    result = None
    for reconstruct in (False,) if quick else (False, True):
        step = "reconstruct" if reconstruct else "cut"
        started = time.perf_counter()
        try:
            result = lp.prune(model, x, method=method, target_macs=0.5, data=data, reconstruct=reconstruct,
                              prune_residual=True)
            with torch.no_grad():
                out = result.model.eval()(x)
            ratio = result.macs_after / result.macs_before
            ok = tuple(out.shape) == (1, 10) and bool(torch.isfinite(out).all()) and abs(ratio - 0.5) <= 0.01
            record[step] = "ok" if ok else f"wrong: output {tuple(out.shape)}, MACs {ratio:.4f}"
            record[f"{step}_macs"] = round(ratio, 4)
        except Exception as exc:
            record[step] = _short(exc)
            result = None
        record[f"{step}_s"] = round(time.perf_counter() - started, 2)
    if result is not None:
        started = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as out:
                deployed = deploy(result.model, out, (1, 3, side, side), latency=False)
            record["deploy"] = "ok"
            record["deploy_diff"] = max(deployed.max_abs_diff.values())
        except Exception as exc:
            record["deploy"] = _short(exc)
        record["deploy_s"] = round(time.perf_counter() - started, 2)
    return record


def _mode(quick: bool) -> str:
    return "quick" if quick else "full"


def done(results: Path) -> set[tuple[str, str, str]]:
    """(model, method, mode) already in the results file."""
    if not results.exists():
        return set()
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(r["model"], r["method"], r.get("mode", "full")) for r in rows}


def run_all(results: Path, timeout: float, only: list[str] | None, methods: list[str], quick: bool) -> None:
    """Run every missing (model, method) in a child process; append its record (or a timeout) to ``results``."""
    results.parent.mkdir(parents=True, exist_ok=True)
    groups = [only] if only else model_groups()
    finished = done(results)
    # one model per family with every method before the larger variants; in a group, every model with the
    # first method before the second
    for names, method in ((names, method) for names in groups for method in methods):
        for name in names:
            if (name, method, _mode(quick)) in finished:
                continue
            record = _child(name, method, timeout, quick)
            with results.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)


def _child(name: str, method: str, timeout: float, quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    command = [sys.executable, __file__, "--one", name, "--methods", method] + (["--quick"] if quick else [])
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return {"model": name, "method": method, "mode": _mode(quick), "cut": f"timeout after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:240]
        return {"model": name, "method": method, "mode": _mode(quick),
                "cut": f"crashed (exit {proc.returncode}): {tail}", "cut_s": round(time.perf_counter() - started, 2)}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- the table


def _cell(record: dict[str, Any], step: str) -> str:
    status = record.get(step)
    if status is None:
        return "-"
    if status == "ok":
        macs = record.get(f"{step}_macs")
        return f"ok {macs:.3f} ({record.get(f'{step}_s', 0):.0f} s)" if macs is not None else "ok"
    return "**fail**: " + str(status).replace("|", "/")[:140]


def _passes(record: dict[str, Any]) -> dict[str, bool]:
    return {step: record.get(step) == "ok" for step in ("cut", "reconstruct", "deploy")}


def table(results: Path) -> str:
    """The markdown table of the results file, with the share of models passing each step per source."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    lines = ["| model | method | run | side | cut (MACs kept, s) | + reconstruction (MACs kept, s) | deploy (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["model"], r["method"], r.get("mode", "full"))):
        deploy = _cell(r, "deploy") if r.get("deploy") != "ok" else f"ok ({r.get('deploy_s', 0):.0f} s)"
        build = r.get("build")
        cut = _cell(r, "cut") if build is None else "**fail** (build): " + build[:140]
        lines.append(f"| {r['model']} | {r['method']} | {r.get('mode', 'full')} | {r.get('side', '')} | {cut} | "
                     f"{_cell(r, 'reconstruct')} "
                     f"| {deploy} |")
    return "\n".join(lines) + "\n"


TABLE_HEADER = """# Compatibility with torchvision and timm models

Generated by `benchmarks/compat.py --table` from the results file of a run (docs/BENCHMARKS.md,
"Compatibility with torchvision and timm models", says how, when and on what machine). Random weights,
10 classes, pruned to 0.5 of the MACs by each method; *cut* without reconstruction, *+ reconstruction* on
2 batches of 16 random calibration images, *deploy* the reconstructed model to TorchScript and ONNX with
outputs checked against it to 1e-4 (or 10x its own float32 error). A failure shows the first line of its
error; "crashed (exit -9)" would be the kernel's out-of-memory kill (the lasso methods now refuse, in one
line, problems that need more memory than is available: "needs up to ... GiB"). Seconds are wall time of one
thread on a shared 2-core machine: orders of magnitude, not a benchmark.

"""


def _is_transformer(name: str) -> bool:
    return any(part in name for part in FIXED_SIDE)


def share_table(results: Path) -> str:
    """Per source (CNNs; transformers apart, which must be refused), method and run mode: how many models
    passed each step, and all of them."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    lines = ["| source | method | run | models run | cut | + reconstruction | deploy | every step |",
             "|---|---|---|---|---|---|---|---|"]
    for source, method, mode in itertools.product(("torchvision", "timm"), METHODS, ("quick", "full")):
        subset = [r for r in rows if r["model"].startswith(source + ":") and r["method"] == method
                  and r.get("mode", "full") == mode]
        refused = [r for r in subset if _is_transformer(r["model"])]
        if refused:
            clear = sum("self-attention block" in str(r.get("cut")) for r in refused)
            lines.append(f"| {source} transformers | {method} | {mode} | {len(refused)} | refused at once, one "
                         f"line: {clear}/{len(refused)} | | | |")
        subset = [r for r in subset if not _is_transformer(r["model"])]
        if subset:
            counts = [sum(_passes(r)[s] for r in subset) for s in ("cut", "reconstruct", "deploy")]
            counts.append(sum(all(_passes(r).values()) for r in subset))
            lines.append(f"| {source} | {method} | {mode} | {len(subset)} | "
                         + " | ".join(f"{c}/{len(subset)} ({100 * c / len(subset):.0f}%)" for c in counts) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("runs/compat.jsonl"), help="JSON-lines results file")
    parser.add_argument("--table", type=Path, help="write the markdown table here and stop")
    parser.add_argument("--models", nargs="*", help="only these names (torchvision:NAME / timm:NAME)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per (model, method) process")
    parser.add_argument("--quick", action="store_true", help="cut and deploy only (no reconstruction)")
    parser.add_argument("--one", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.methods[0], args.quick)), flush=True)
    elif args.table:
        args.table.write_text(TABLE_HEADER + share_table(args.results) + "\n" + table(args.results))
    else:
        run_all(args.results, args.timeout, args.models, args.methods, args.quick)


if __name__ == "__main__":
    main()
