"""Prune a torchvision ResNet-50 on your own images, reconstruct it, deploy it.

Your data is an ``ImageFolder`` tree (``ROOT/train/<class>/*.jpg``, ``ROOT/val/<class>/*.jpg``).
A few hundred training images calibrate the cut: the pruned layers are refitted
by least squares to reproduce the original ones (reconstruction) and the
BatchNorm statistics are re-estimated, so the model works without fine-tuning.
Needs the vision extra: ``pip install lassoprune[vision]``.

    python examples/prune_torchvision_resnet50.py --root /data/flowers --out runs/r50 \\
        --weights runs/r50_finetuned.pt --calibration 256 --target-macs 0.5

``--weights`` is a ``state_dict`` of ``torchvision.models.resnet50(num_classes=K)`` trained
on your classes (without it the random weights only show the mechanics).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision import datasets, transforms

import lassoprune as lp
from lassoprune.deployment import deploy

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def loader(root: Path, split: str, size: int, count: int | None, batch: int) -> torch.utils.data.DataLoader:
    """Batches ``(x (B, 3, size, size), y (B,))`` of ``root/split`` (the first ``count`` images of a shuffle)."""
    tf = transforms.Compose([transforms.Resize(int(size * 1.14)), transforms.CenterCrop(size), transforms.ToTensor(),
                             transforms.Normalize(MEAN, STD)])
    data = datasets.ImageFolder(str(root / split), transform=tf)
    if count is not None:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:count]
        data = torch.utils.data.Subset(data, order.tolist())
    return torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False, num_workers=2)


@torch.no_grad()
def accuracy(model: torch.nn.Module, batches: torch.utils.data.DataLoader) -> float:
    """Top-1 accuracy of ``model`` on ``batches``."""
    model.eval()
    hits = total = 0
    for x, y in batches:
        hits += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return hits / max(1, total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="ImageFolder root with train/ and val/")
    parser.add_argument("--out", type=Path, default=Path("runs/resnet50"))
    parser.add_argument("--weights", type=Path, help="state_dict of resnet50(num_classes=K) trained on your classes")
    parser.add_argument("--calibration", type=int, default=256, help="training images for the cut and refit")
    parser.add_argument("--target-macs", type=float, default=0.5)
    parser.add_argument("--method", default="l1", help="l1, or a class-aware method such as sglp-ib")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    classes = len(datasets.ImageFolder(str(args.root / "train")).classes)
    model = lp.create_model("torchvision:resnet50", num_classes=classes)  # records the architecture
    if args.weights is not None:
        model.load_state_dict(torch.load(args.weights, map_location="cpu"))
    calibration = list(loader(args.root, "train", args.size, args.calibration, batch=32))
    val = loader(args.root, "val", args.size, None, batch=64)

    result = lp.prune(model, torch.zeros(1, 3, args.size, args.size), method=args.method,
                      target_macs=args.target_macs, data=calibration, reconstruct=True)
    print(f"MACs {result.macs_before / 1e9:.2f} G -> {result.macs_after / 1e9:.2f} G "
          f"in {result.seconds:.0f} s; accuracy {accuracy(model, val):.4f} -> {accuracy(result.model, val):.4f}")

    args.out.mkdir(parents=True, exist_ok=True)
    lp.save(result.model, args.out / "model.pt")  # lp.load(args.out / "model.pt") rebuilds it
    deployed = deploy(result.model, args.out / "deploy", (1, 3, args.size, args.size), dense=model,
                      batch_sizes=(1,), warmup=5, repeats=10)
    print(f"deployed {sorted(deployed.files)}; max |deployed - pruned| {max(deployed.max_abs_diff.values()):.2e}")


if __name__ == "__main__":
    main()
