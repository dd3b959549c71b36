"""Engine overhead: training and inference images/s through lassoprune vs a bare PyTorch loop.

Both paths run the same model on the same in-memory images in one process,
alternating (bare, engine, bare, engine, ...) so machine noise hits both; the
best of the repeats is reported. The engine path includes what a real run
pays for: uint8 -> float conversion, normalisation, random crop + flip, the
progress bar and the metric bookkeeping. The bare loop gets ready-made float
batches. Target: the engine within 10% of the bare loop.

    python benchmarks/throughput.py                 # resnet56 and vgg16, CPU
    python benchmarks/throughput.py --models resnet20 --images 512 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from bench.tables import markdown_table
from torch import nn

import lassoprune as lp
from lassoprune.data import BatchLoader, default_augment, load_dataset
from lassoprune.training import TrainConfig, evaluate, fit


def bare_train(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Images/s of a minimal SGD loop over ready float batches."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    seen, start = 0, time.perf_counter()
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def engine_train(model: nn.Module, loader: BatchLoader, tiny_test: list) -> float:
    """Images/s of the training epoch inside :func:`lassoprune.fit` (its own measurement)."""
    cfg = TrainConfig(epochs=1, lr=0.01, schedule="constant")
    result = fit(model, loader, tiny_test, cfg, num_classes=10, progress=True, device="cpu")
    return result.history[0]["images_per_s"]


@torch.no_grad()
def bare_infer(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], passes: int) -> float:
    """Images/s of ``model(x)`` over ready float batches, ``passes`` times over."""
    model.eval()
    seen, start = 0, time.perf_counter()
    for _ in range(passes):
        for x, y in batches:
            model(x).argmax(1)
            seen += len(y)
    return seen / (time.perf_counter() - start)


def engine_infer(model: nn.Module, loader: BatchLoader, passes: int) -> float:
    """Images/s of :func:`lassoprune.evaluate` (uint8 batches in, full metrics out)."""
    seen, start = 0, time.perf_counter()
    for _ in range(passes):
        seen += evaluate(model, loader, num_classes=10).num_samples
    return seen / (time.perf_counter() - start)


def measure(name: str, images: int, batch_size: int, repeats: int, infer_passes: int) -> dict[str, float | str]:
    torch.manual_seed(0)
    model = lp.create_model(name, num_classes=10, in_channels=3)
    data = load_dataset("synthetic", split="train", n_per_class=images // 10)
    train_loader = BatchLoader(data, batch_size, shuffle=True, augment=default_augment("cifar10"), drop_last=True)
    eval_loader = BatchLoader(data, batch_size)
    ready = [(x.clone(), y.clone()) for x, y in BatchLoader(data, batch_size, drop_last=True)]
    tiny_test = ready[:1]
    bare_train(model, ready[:1])  # warm-up of the kernels for both paths
    runs: dict[str, list[float]] = {"bare_train": [], "engine_train": [], "bare_infer": [], "engine_infer": []}
    for _ in range(repeats):
        runs["bare_train"].append(bare_train(model, ready))
        runs["engine_train"].append(engine_train(model, train_loader, tiny_test))
        runs["bare_infer"].append(bare_infer(model, ready, infer_passes))
        runs["engine_infer"].append(engine_infer(model, eval_loader, infer_passes))
    best = {key: max(values) for key, values in runs.items()}
    return {
        "model": name,
        **{f"{key}_img_s": round(value, 1) for key, value in best.items()},
        "train_ratio": round(best["engine_train"] / best["bare_train"], 3),
        "infer_ratio": round(best["engine_infer"] / best["bare_infer"], 3),
        "train_ratio_median": round(
            statistics.median(e / b for e, b in zip(runs["engine_train"], runs["bare_train"])), 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet56", "vgg16"])
    parser.add_argument("--images", type=int, default=1280, help="images per measurement")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--infer-passes", type=int, default=4, help="passes over the images per inference measurement")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(name, args.images, args.batch_size, args.repeats, args.infer_passes) for name in args.models]
    header = ("model", "bare train img/s", "engine train img/s", "ratio", "bare infer img/s", "engine infer img/s",
              "ratio")
    keys = ("model", "bare_train_img_s", "engine_train_img_s", "train_ratio", "bare_infer_img_s", "engine_infer_img_s",
            "infer_ratio")
    print(markdown_table(header, [[r[key] for key in keys] for r in rows]))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
