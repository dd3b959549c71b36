"""Model files of structurally pruned models: widths recorded, rebuilt in a new process, bad records refused.

Pruned models are made with torch-pruning directly (L1 magnitude, 40 % of the
channels of every prunable group, the classifier's outputs kept).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch_pruning as tp
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import lassoprune as lp
from lassoprune.errors import CheckpointError
from lassoprune.io import read_model_file
from lassoprune.io.model_file import METADATA_KEY, layer_widths
from tests.marks import fast_only

ZOO = ("resnet56", "vgg16", "mobilenetv2", "densenet40", "googlenet")
#: Round trips in `make test` (a residual net, depthwise convs, the user model); the rest run with `make test-slow`.
FAST_ROUND_TRIPS = ("resnet56", "mobilenetv2", "smallnet")
SIZE_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "num_groups", "num_channels",
              "normalized_shape", "in_features", "out_features")  # fmt: skip
REPO_ROOT = Path(__file__).resolve().parents[2]  # the folder above the `tests` package


class SmallNet(nn.Module):
    """A user model outside the zoo: BN, depthwise conv, GroupNorm, Conv1d, LayerNorm, Linear."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.pw = nn.Conv2d(16, 32, 1)
        self.gn = nn.GroupNorm(4, 32)
        self.conv1d = nn.Conv1d(32, 24, 3, padding=1)
        self.head = nn.Sequential(nn.Linear(24, 40), nn.LayerNorm(40), nn.ReLU(), nn.Linear(40, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.gn(self.pw(self.dw(self.stem(x)))))
        x = self.conv1d(torch.flatten(x, 2)).mean(-1)  # (N, C, H*W) -> (N, C')
        return self.head(x)


def describe(model: nn.Module) -> dict[str, Any]:
    """Size attributes of every module that has some, and the shape of every state tensor."""
    layers = {name: _size_attrs(module) for name, module in model.named_modules()}
    return {
        "layers": {name: attrs for name, attrs in layers.items() if attrs},
        "shapes": {key: list(t.shape) for key, t in model.state_dict().items()},
    }


def _size_attrs(module: nn.Module) -> dict[str, Any]:
    values = {attr: getattr(module, attr, None) for attr in SIZE_ATTRS}
    return {attr: list(v) if isinstance(v, tuple) else v for attr, v in values.items() if v is not None}


def child_main(manifest_path: str) -> None:
    """Run in a fresh interpreter: load every listed file, write its logits and description."""
    manifest = json.loads(Path(manifest_path).read_text())
    inputs = load_file(manifest["inputs"])
    for item in manifest["models"]:
        constructor = SmallNet if item["constructor"] else None
        model = lp.load(item["file"], constructor=constructor)
        with torch.no_grad():
            logits = model(inputs[item["input"]])
        save_file({"logits": logits.contiguous()}, item["logits_out"])
        Path(item["describe_out"]).write_text(json.dumps(describe(model)))


def prune_with_tp(model: nn.Module, example: torch.Tensor, classifier: nn.Module, ratio: float = 0.4) -> nn.Module:
    """Remove ``ratio`` of the channels of every prunable group by L1 magnitude (in place)."""
    pruner = tp.pruner.MagnitudePruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio, ignored_layers=[classifier],
    )  # fmt: skip
    pruner.step()
    return model


def calibrate_bn(model: nn.Module, shape: tuple[int, ...], steps: int = 3) -> nn.Module:
    """A few training-mode passes so that BN running statistics are not the defaults; returns eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(*shape))
    return model.eval()


def pruned_zoo_model(name: str) -> nn.Module:
    """``name`` from the zoo, pruned ~40 % by torch-pruning, BN statistics calibrated."""
    torch.manual_seed(0)
    model = lp.create_model(name, num_classes=10).eval()
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    prune_with_tp(model, torch.randn(1, 3, 32, 32), classifier)
    return calibrate_bn(model, (4, 3, 32, 32))


def pruned_small_net() -> nn.Module:
    torch.manual_seed(1)
    model = SmallNet().eval()
    prune_with_tp(model, torch.randn(1, 3, 16, 16), model.head[3])
    return calibrate_bn(model, (4, 3, 16, 16))


@pytest.fixture(scope="module")
def round_trips(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """The :data:`FAST_ROUND_TRIPS` models through :func:`round_trip`."""
    return round_trip(FAST_ROUND_TRIPS, tmp_path_factory.mktemp("pruned"))


@pytest.fixture(scope="module")
def slow_round_trips(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """The other zoo models through :func:`round_trip` (`make test-slow`)."""
    return round_trip([name for name in ZOO if name not in FAST_ROUND_TRIPS], tmp_path_factory.mktemp("pruned"))


def round_trip_of(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    """The round trip of ``name``, from the fixture that holds it."""
    return request.getfixturevalue("round_trips" if name in FAST_ROUND_TRIPS else "slow_round_trips")[name]


def round_trip(names: Sequence[str], root: Path) -> dict[str, dict[str, Any]]:
    """Save the pruned models ``names`` (zoo names or ``smallnet``) under ``root``, load them all in one new Python
    process, collect both sides."""
    cases = {name: (pruned_zoo_model(name), (2, 3, 32, 32), False) for name in names if name != "smallnet"}
    if "smallnet" in names:
        cases["smallnet"] = (pruned_small_net(), (3, 3, 16, 16), True)
    torch.manual_seed(2)
    inputs = {name: torch.randn(*shape) for name, (_, shape, _) in cases.items()}
    save_file(inputs, str(root / "inputs.safetensors"))
    manifest, expected = {"inputs": str(root / "inputs.safetensors"), "models": []}, {}
    for name, (model, _, user_model) in cases.items():
        file = root / f"{name}.safetensors"
        lp.save(model, file, extra={"image_size": 32}, spec=None if user_model else "auto")
        with torch.no_grad():
            expected[name] = {"logits": model(inputs[name]), "describe": describe(model), "file": file}
        manifest["models"].append({
            "file": str(file), "input": name, "constructor": user_model,
            "logits_out": str(root / f"{name}.logits"), "describe_out": str(root / f"{name}.json"),
        })  # fmt: skip
    (root / "manifest.json").write_text(json.dumps(manifest))
    # The child runs this module by its package path from the repository root (`-m` puts the working folder on
    # sys.path), so it loads the files with the same SmallNet and describe() as this side.
    command = [sys.executable, "-m", "tests.io.test_pruned_files", str(root / "manifest.json")]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for name, item in expected.items():
        item["loaded_logits"] = load_file(str(root / f"{name}.logits"))["logits"]
        item["loaded_describe"] = json.loads((root / f"{name}.json").read_text())
    return expected


@pytest.mark.parametrize("name", fast_only([*ZOO, "smallnet"], FAST_ROUND_TRIPS))
def test_pruned_model_reloads_in_new_process_with_same_logits_and_widths(request, name):
    item = round_trip_of(request, name)
    assert item["loaded_describe"] == item["describe"]
    assert torch.allclose(item["loaded_logits"], item["logits"], rtol=1e-6, atol=1e-6)
    assert item["logits"].abs().max() < 1e4  # calibrated BN: the comparison is meaningful


@pytest.mark.parametrize("name", fast_only(ZOO, FAST_ROUND_TRIPS))
def test_pruned_zoo_model_is_actually_narrower(request, name):
    full = lp.create_model(name, num_classes=10)
    pruned_shapes = round_trip_of(request, name)["describe"]["shapes"]
    full_params = sum(t.numel() for t in full.state_dict().values())
    pruned_params = sum(torch.Size(s).numel() for s in pruned_shapes.values())
    assert set(pruned_shapes) == set(full.state_dict())  # same layers, fewer channels
    assert pruned_params < 0.6 * full_params


def test_depthwise_widths_are_recorded(round_trips):
    widths = read_model_file(round_trips["mobilenetv2"]["file"]).widths
    depthwise = [w for w in widths.values() if w["type"] == "conv" and w["groups"] > 1]
    assert depthwise and all(w["groups"] == w["in"] == w["out"] for w in depthwise)
    assert any(w["groups"] < 32 for w in depthwise)  # narrowed, not just copied from the spec


def test_widths_record_lists_every_conv_norm_linear():
    model = pruned_small_net()
    widths = layer_widths(model)
    assert widths["dw.0"] == {"type": "conv", "in": 9, "out": 9, "groups": 9}
    assert widths["stem.1"] == {"type": "batchnorm", "num_features": 9}
    assert widths["gn"]["type"] == "groupnorm" and widths["gn"]["num_channels"] == model.gn.num_channels
    assert widths["head.1"] == {"type": "layernorm", "normalized_shape": [model.head[1].normalized_shape[0]]}
    assert widths["conv1d"]["type"] == "conv"
    assert widths["head.3"] == {"type": "linear", "in": model.head[3].in_features, "out": 5}
    json.dumps(widths)  # plain JSON


def test_user_model_needs_spec_none_to_save_and_constructor_to_load(tmp_path):
    model = pruned_small_net()
    with pytest.raises(CheckpointError, match="spec=None"):
        lp.save(model, tmp_path / "net.safetensors")
    lp.save(model, tmp_path / "net.safetensors", spec=None)
    assert read_model_file(tmp_path / "net.safetensors").spec is None
    with pytest.raises(CheckpointError, match="constructor="):
        lp.load(tmp_path / "net.safetensors")
    loaded = lp.load(tmp_path / "net.safetensors", constructor=SmallNet)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_wrong_constructor_is_a_clear_error(tmp_path):
    lp.save(pruned_small_net(), tmp_path / "net.safetensors", spec=None)
    with pytest.raises(CheckpointError, match="does not belong to this architecture"):
        lp.load(tmp_path / "net.safetensors", constructor=lambda: lp.create_model("resnet20"))


def _rewrite_document(path: Path, edit) -> None:
    """Apply ``edit(document)`` to the JSON record of a model file, keeping its tensors."""
    with safe_open(str(path), framework="pt") as handle:
        document = json.loads(handle.metadata()[METADATA_KEY])
    tensors = load_file(str(path))
    edit(document)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(document)})


@pytest.fixture()
def pruned_resnet20_file(tmp_path) -> Path:
    torch.manual_seed(0)
    model = lp.create_model("resnet20").eval()
    prune_with_tp(model, torch.randn(1, 3, 32, 32), model.fc)
    path = tmp_path / "r20.safetensors"
    lp.save(model, path)
    return path


def test_widths_that_do_not_match_the_weights_are_a_clear_error(pruned_resnet20_file):
    def widen(document):
        document["widths"]["layer1.0.conv1"]["out"] += 1
        document["widths"]["layer1.0.bn1"]["num_features"] += 1

    _rewrite_document(pruned_resnet20_file, widen)
    with pytest.raises(CheckpointError, match="do not match the stored layer widths.*layer1.0.conv1.weight"):
        lp.load(pruned_resnet20_file)


def test_widths_naming_a_missing_layer_is_a_clear_error(pruned_resnet20_file):
    _rewrite_document(pruned_resnet20_file, lambda d: d["widths"].update(nope={"type": "linear", "in": 3, "out": 4}))
    with pytest.raises(CheckpointError, match="'nope'.*does not belong"):
        lp.load(pruned_resnet20_file)


@pytest.mark.parametrize("record", [{"type": "conv", "in": -3, "out": 4, "groups": 1}, {"type": "rnn"}, "conv",
                                    {"type": "linear", "in": "8", "out": 4}])  # fmt: skip
def test_malformed_widths_record_is_a_clear_error(pruned_resnet20_file, record):
    _rewrite_document(pruned_resnet20_file, lambda d: d["widths"].update(fc=record))
    with pytest.raises(CheckpointError, match="malformed"):
        lp.load(pruned_resnet20_file)
    with pytest.raises(CheckpointError, match="malformed"):
        read_model_file(pruned_resnet20_file)


def test_groups_that_do_not_divide_are_a_clear_error(pruned_resnet20_file):
    _rewrite_document(pruned_resnet20_file, lambda d: d["widths"]["conv1"].update(groups=2))  # 3 input channels
    with pytest.raises(CheckpointError, match="groups=2 does not divide"):
        lp.load(pruned_resnet20_file)


def test_file_without_widths_record_still_loads(tmp_path):
    """Files written before the widths record existed hold unpruned models only."""
    model = lp.create_model("resnet20").eval()
    path = tmp_path / "old.safetensors"
    lp.save(model, path)
    _rewrite_document(path, lambda d: d.pop("widths"))
    assert read_model_file(path).widths == {}
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), lp.load(path)(x))


def test_record_without_spec_entry_is_a_clear_error(pruned_resnet20_file):
    _rewrite_document(pruned_resnet20_file, lambda d: d.pop("spec"))
    with pytest.raises(CheckpointError, match="no 'spec'"):
        lp.load(pruned_resnet20_file)


if __name__ == "__main__":  # the child process of round_trip()
    child_main(sys.argv[1])
