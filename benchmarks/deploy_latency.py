"""Warm-process latency of deployed pruned models against their dense originals (``lp.deploy``).

For each (model, MACs target) the zoo model (1 input channel, 10 classes, 32x32)
is pruned with l1 and ``round_to=8`` (latency does not depend on the weights),
deployed (BatchNorm folded, frozen TorchScript, ONNX) and timed by ``lp.deploy``:
every runner first runs ``--warmup`` forward passes (a long-running process),
then dense and deployed run interleaved, ``--repeats`` rounds, medians reported.
The table compares the latency speed-up with the MAC speed-up (1 / MACs kept).

``--options`` times what the runtimes offer, dense and pruned interleaved in one
warm process: eager PyTorch, frozen TorchScript with contiguous and with
channels-last weights and activations, ``torch.compile`` (inductor, when a C++
compiler is present; compile time reported) and onnxruntime.
``--round-to`` prunes the same model with several ``round_to`` values and times
each deployed model against the dense one: the width rounding this CPU likes.

``--per-layer`` instead times every convolution of the folded eager models
(dense and pruned, batch 64) with forward hooks and sets each layer's share of
the time beside its share of the MACs: where the pruned model's time goes.

    python benchmarks/deploy_latency.py                      # resnet56 @ 0.5 and vgg16 @ 0.33, about 5 minutes
    python benchmarks/deploy_latency.py --cases resnet56:0.5 --batch-sizes 64 --threads 1
    python benchmarks/deploy_latency.py --round-to 16 --runtimes torchscript onnx aoti
    python benchmarks/deploy_latency.py --per-layer --cases resnet56:0.5
    python benchmarks/deploy_latency.py --options --cases resnet56:0.5 vgg16:0.33
    python benchmarks/deploy_latency.py --round-to 1 4 8 16 32 --cases resnet56:0.5 vgg16:0.33
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench.tables import markdown_table

import lassoprune as lp

SHAPE = (1, 1, 32, 32)


def run_case(model_name: str, target: float, batch_sizes: list[int], threads: int, warmup: int,
             repeats: int, round_to: int | None = 8,
             runtimes: tuple[str, ...] = ("torchscript", "onnx")) -> list[dict]:  # fmt: skip
    dense = lp.create_model(model_name, num_classes=10, in_channels=1).eval()
    example = torch.zeros(*SHAPE)
    pruned = lp.prune(dense, example, method="l1", target_macs=target, round_to=round_to)
    mac_speedup = pruned.macs_before / pruned.macs_after
    with tempfile.TemporaryDirectory() as out:
        result = lp.deploy(pruned.model, Path(out), (1, 1, 32, 32), dense=dense, runtimes=runtimes,
                           batch_sizes=batch_sizes, threads=threads, warmup=warmup, repeats=repeats)
    return [{"model": model_name, "target": target, "round_to": round_to, "macs_kept": 1 / mac_speedup,
             "mac_speedup": mac_speedup, **record, "of_mac_speedup": record["speedup"] / mac_speedup}
            for record in result.latency]


def conv_times(model: torch.nn.Module, shape: tuple[int, ...], threads: int, warmup: int,
               repeats: int) -> tuple[dict[str, float], float]:  # fmt: skip
    """Median ms per convolution (forward hooks) and median ms of the whole forward pass."""
    torch.set_num_threads(threads)
    starts: dict[str, float] = {}
    samples: dict[str, list[float]] = {}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}

    def pre(name: str):
        def hook(*_: object) -> None:
            starts[name] = time.perf_counter()
        return hook

    def post(name: str):
        def hook(*_: object) -> None:
            samples.setdefault(name, []).append((time.perf_counter() - starts[name]) * 1e3)
        return hook

    x = torch.randn(*shape)
    totals = []
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        handles = [m.register_forward_pre_hook(pre(n)) for n, m in convs.items()]
        handles += [m.register_forward_hook(post(n)) for n, m in convs.items()]
        for _ in range(repeats):
            started = time.perf_counter()
            model(x)
            totals.append((time.perf_counter() - started) * 1e3)
        for h in handles:
            h.remove()
    return {n: statistics.median(v) for n, v in samples.items()}, statistics.median(totals)


def per_layer(model_name: str, target: float, threads: int, warmup: int, repeats: int) -> None:
    """Per-conv time share vs MAC share of the folded dense and pruned models, batch 64 (markdown)."""
    dense = lp.create_model(model_name, num_classes=10, in_channels=1).eval()
    example = torch.zeros(1, 1, 32, 32)
    pruned = lp.prune(dense, example, method="l1", target_macs=target, round_to=8).model.eval()
    rows = {}
    for label, model in (("dense", dense), ("pruned", pruned)):
        folded = lp.fold_batchnorm(model).model
        times, total = conv_times(folded, (64, 1, 32, 32), threads, warmup, repeats)
        macs = {layer.name: layer.macs for layer in lp.count(model, example).layers if layer.kind == "Conv2d"}
        rows[label] = (times, total, macs)
    d_times, d_total, d_macs = rows["dense"]
    p_times, p_total, p_macs = rows["pruned"]
    print(f"{model_name} @ {target}: forward {d_total:.1f} -> {p_total:.1f} ms (batch 64, {threads} threads); "
          f"convolutions {sum(d_times.values()):.1f} -> {sum(p_times.values()):.1f} ms")
    shapes = {n: (m.in_channels, m.out_channels) for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d)}
    lines = []
    for name in d_times:
        if name not in p_times:
            continue
        d_ns = d_times[name] * 1e6 / (64 * d_macs[name])
        p_ns = p_times[name] * 1e6 / (64 * p_macs[name])
        lines.append([name, f"{shapes[name][0]}/{shapes[name][1]}", f"{p_macs[name] / d_macs[name]:.2f}",
                      f"{p_times[name] / d_times[name]:.2f}", f"{d_ns:.3f}", f"{p_ns:.3f}"])
    print(markdown_table(("layer", "channels in/out (pruned)", "MACs kept", "time kept", "dense ns/MAC",
                          "pruned ns/MAC"), lines))


def _torch_call(module, x: torch.Tensor):
    def run() -> None:
        with torch.no_grad():
            module(x)
    return run


def option_runners(model: torch.nn.Module, batch: int, threads: int) -> tuple[dict, dict]:
    """Runner per deployment option of ``model`` (folded, eval) at ``batch``; seconds spent building each."""
    import io
    import shutil

    from lassoprune.io.onnx_export import onnx_bytes, onnx_session

    folded = lp.fold_batchnorm(model).model.eval()
    x = torch.randn(batch, *SHAPE[1:])
    example = torch.randn(*SHAPE)
    runners, build = {}, {}

    def timed(name: str, make) -> None:
        started = time.perf_counter()
        runners[name] = make()
        build[name] = time.perf_counter() - started

    timed("eager", lambda: _torch_call(folded, x))

    def script(memory_format: torch.memory_format):
        source = folded.to(memory_format=memory_format)
        with torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.trace(source, example.to(memory_format=memory_format)).eval())
        buffer = io.BytesIO()
        torch.jit.save(frozen, buffer)
        buffer.seek(0)
        loaded = torch.jit.optimize_for_inference(torch.jit.load(buffer).eval())
        return _torch_call(loaded, x.contiguous(memory_format=memory_format))

    timed("torchscript", lambda: script(torch.contiguous_format))
    timed("torchscript channels-last", lambda: script(torch.channels_last))
    folded = lp.fold_batchnorm(model).model.eval()  # .to(memory_format) above changed it in place
    if shutil.which("g++") or shutil.which("c++"):
        def compiled():
            fn = torch.compile(folded, dynamic=False)
            run = _torch_call(fn, x)
            run()  # compiles here, so the build time holds it
            return run
        timed("torch.compile", compiled)
    session = onnx_session(onnx_bytes(folded, SHAPE), threads=threads)
    feed = {session.get_inputs()[0].name: x.numpy()}
    timed("onnxruntime", lambda: (lambda: session.run(None, feed)))
    return runners, build


def options(model_name: str, target: float, batch_sizes: list[int], threads: int, warmup: int,
            repeats: int) -> list[dict]:  # fmt: skip
    """Median ms of every deployment option, dense and pruned (l1, round_to 8) interleaved per batch size."""
    from lassoprune.analysis.latency import time_interleaved

    dense = lp.create_model(model_name, num_classes=10, in_channels=1).eval()
    pruned = lp.prune(dense, torch.zeros(*SHAPE), method="l1", target_macs=target, round_to=8)
    mac_speedup = pruned.macs_before / pruned.macs_after
    records = []
    for batch in batch_sizes:
        d_runs, d_build = option_runners(dense, batch, threads)
        p_runs, p_build = option_runners(pruned.model.eval(), batch, threads)
        names = list(d_runs)
        samples = time_interleaved([d_runs[n] for n in names] + [p_runs[n] for n in names], warmup, repeats, threads)
        for i, name in enumerate(names):
            dense_ms, pruned_ms = statistics.median(samples[i]), statistics.median(samples[len(names) + i])
            records.append({"model": model_name, "target": target, "option": name, "batch_size": batch,
                            "threads": threads, "dense_ms": dense_ms, "deployed_ms": pruned_ms,
                            "speedup": dense_ms / pruned_ms, "mac_speedup": mac_speedup,
                            "of_mac_speedup": dense_ms / pruned_ms / mac_speedup,
                            "build_s": d_build[name] + p_build[name]})
    print(markdown_table(
        ("model", "option", "batch", "dense ms", "pruned ms", "speed-up", "of MAC speed-up", "build s (both)"),
        [[f"{r['model']} @ {r['target']}", r["option"], r["batch_size"], f"{r['dense_ms']:.2f}",
          f"{r['deployed_ms']:.2f}", f"{r['speedup']:.2f}x", f"{r['of_mac_speedup']:.2f}", f"{r['build_s']:.1f}"]
         for r in records]))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["resnet56:0.5", "vgg16:0.33"], help="MODEL:TARGET")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", metavar="FILE", help="also write the records here")
    parser.add_argument("--per-layer", action="store_true", help="per-convolution time vs MACs instead")
    parser.add_argument("--options", action="store_true", help="time every deployment option instead")
    parser.add_argument("--runtimes", nargs="+", default=["torchscript", "onnx"], choices=lp.deployment.RUNTIMES,
                        help="runtimes deployed and timed (aoti: compiled ahead of time, about a minute a model)")
    parser.add_argument("--round-to", type=int, nargs="+", metavar="N",
                        help="prune with each round_to (1: no rounding) and time each deployed model")
    args = parser.parse_args()
    if args.options:
        records = []
        for case in args.cases:
            name, target = case.split(":")
            records += options(name, float(target), args.batch_sizes, args.threads, args.warmup, args.repeats)
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=1))
        return
    if args.per_layer:
        for case in args.cases:
            name, target = case.split(":")
            per_layer(name, float(target), args.threads, min(args.warmup, 50), args.repeats)
        return
    records = []
    for case in args.cases:
        name, target = case.split(":")
        for round_to in args.round_to or [8]:
            records += run_case(name, float(target), args.batch_sizes, args.threads, args.warmup, args.repeats,
                                round_to if round_to > 1 else None, tuple(args.runtimes))
    print(markdown_table(
        ("model", "round_to", "MACs kept", "runtime", "batch", "dense ms", "deployed ms", "speed-up", "MAC speed-up",
         "of MAC speed-up"),
        [[r["model"], r["round_to"] or 1, f"{r['macs_kept']:.3f}", r["runtime"], r["batch_size"],
          f"{r['dense_ms']:.2f}", f"{r['deployed_ms']:.2f}", f"{r['speedup']:.2f}x", f"{r['mac_speedup']:.2f}x",
          f"{r['of_mac_speedup']:.2f}"] for r in records]))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
