"""Model zoo: registry, specs, forward/backward of every model, torchvision naming."""

from __future__ import annotations

import json

import pytest
import torch
import torch_pruning as tp
from torch import nn

from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.models import (
    ModelConfigError,
    ModelSpec,
    build_from_spec,
    create_model,
    list_models,
    model_entry,
    register_model,
)
from lassoprune.models import _registry
from tests.marks import fast_only

EXPECTED_MODELS = [
    "densenet40",
    "googlenet",
    "mobilenetv2",
    "resnet110",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
]
CIFAR_MODELS = [name for name in EXPECTED_MODELS if model_entry(name).default_image_size == 32]
IMAGENET_TEST_SIZE = 64  # ImageNet ResNets are tested at 64x64 to stay fast


def input_size(name: str) -> int:
    """Input side used in these tests: 32 for CIFAR models, 64 for ImageNet ones."""
    return 32 if model_entry(name).default_image_size == 32 else IMAGENET_TEST_SIZE


# --------------------------------------------------------------------------- registry


def test_list_models_is_sorted_and_complete() -> None:
    assert list_models() == EXPECTED_MODELS


def test_list_models_by_family() -> None:
    assert list_models("resnet_imagenet") == ["resnet18", "resnet34", "resnet50"]
    assert list_models("vgg") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    with pytest.raises(UnknownNameError, match="unknown family name 'transformer'; valid family names: .*resnet_cifar"):
        list_models("transformer")


def test_model_entry_fields() -> None:
    entry = model_entry("resnet50")
    assert (entry.name, entry.family, entry.default_image_size) == ("resnet50", "resnet_imagenet", 224)
    assert model_entry("googlenet").default_image_size == 32
    with pytest.raises(AttributeError):
        entry.name = "other"  # type: ignore[misc]  # frozen


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        create_model("resnet57")
    message = str(info.value)
    assert "resnet57" in message
    assert all(name in message for name in EXPECTED_MODELS)
    assert isinstance(info.value, LassopruneError)
    assert info.value.valid == EXPECTED_MODELS


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"num_classes": 10.0}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"dropout": float("nan")}, "JSON"),
        ({"depth": 3}, "does not accept"),
        ({"width": 3}, "does not accept"),
    ],
)
def test_bad_options_raise_clear_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ModelConfigError, match=match):
        create_model("vgg16", **kwargs)


def test_bad_choice_lists_valid_choices() -> None:
    with pytest.raises(UnknownNameError, match="valid shortcuts: conv, pad"):
        create_model("resnet20", shortcut="projection")


def test_non_json_option_is_rejected() -> None:
    with pytest.raises(ModelConfigError, match="JSON"):
        create_model("resnet20", shortcut=object())


def test_register_model_rejects_duplicates_and_registers_new() -> None:
    with pytest.raises(ModelConfigError, match="already registered"):
        register_model("resnet20", family="resnet_cifar", default_image_size=32)(lambda **kw: nn.Identity())

    @register_model("tiny_test_net", family="test", default_image_size=8)
    def tiny(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, num_classes))

    try:
        model = create_model("tiny_test_net", num_classes=4, in_channels=2)
        assert model(torch.zeros(1, 2, 8, 8)).shape == (1, 4)
        assert model.lp_spec == ModelSpec("tiny_test_net", {"num_classes": 4, "in_channels": 2})
        assert "tiny_test_net" in list_models()
    finally:
        del _registry._REGISTRY["tiny_test_net"]


# --------------------------------------------------------------------------- specs


def test_spec_records_all_options() -> None:
    model = create_model("resnet20", num_classes=5, in_channels=1, shortcut="pad")
    assert model.lp_spec == ModelSpec("resnet20", {"num_classes": 5, "in_channels": 1, "shortcut": "pad"})
    assert model.lp_spec.to_dict() == {
        "name": "resnet20",
        "kwargs": {"num_classes": 5, "in_channels": 1, "shortcut": "pad"},
    }


def test_spec_round_trip_and_immutability() -> None:
    spec = ModelSpec("vgg16", {"num_classes": 10, "in_channels": 3, "dropout": 0.5})
    data = spec.to_dict()
    data["kwargs"]["dropout"] = 0.1  # mutating the dict does not touch the spec
    assert spec.kwargs["dropout"] == 0.5
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert hash(spec) == hash(ModelSpec.from_dict(spec.to_dict()))
    with pytest.raises(AttributeError):
        spec.name = "vgg11"  # type: ignore[misc]


@pytest.mark.parametrize(
    "data",
    [
        {"name": "vgg16"},
        {"name": "", "kwargs": {}},
        {"name": "vgg16", "kwargs": [1]},
        {"name": 1, "kwargs": {}},
        {"name": "vgg16", "kwargs": {}, "extra": 1},
        ["vgg16"],
    ],
)
def test_malformed_spec_dict_raises(data: object) -> None:
    with pytest.raises(ModelConfigError):
        build_from_spec(data)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", EXPECTED_MODELS)
def test_build_from_spec_rebuilds_same_architecture(name: str) -> None:
    model = create_model(name, num_classes=7, in_channels=1)
    twin = build_from_spec(json.loads(json.dumps(model.lp_spec.to_dict())))
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in twin.state_dict().items()} == shapes
    assert twin.lp_spec == model.lp_spec
    twin.load_state_dict(model.state_dict())  # strict


# --------------------------------------------------------------------------- forward / backward


@pytest.mark.parametrize("name", fast_only(EXPECTED_MODELS,
                                           set(EXPECTED_MODELS) - {"resnet110", "googlenet", "resnet50"}))
def test_forward_backward_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).train()
    size = input_size(name)
    logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize("name", fast_only(CIFAR_MODELS, set(CIFAR_MODELS) - {"resnet110", "googlenet"}))
def test_single_channel_inputs(name: str) -> None:
    model = create_model(name, num_classes=10, in_channels=1).eval()
    sizes = (32,) if name.startswith("vgg") else (32, 28)  # VGG's five pools need 32x32
    with torch.no_grad():
        for size in sizes:
            out = model(torch.randn(2, 1, size, size))
            assert out.shape == (2, 10)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", EXPECTED_MODELS)
def test_torch_pruning_traces_every_model(name: str) -> None:
    model = create_model(name).eval()
    size = input_size(name)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, size, size))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert graph.get_pruning_group(convs[0], tp.prune_conv_out_channels, idxs=[0])


def test_resnet_pad_shortcut_is_parameter_free() -> None:
    conv = create_model("resnet56")
    pad = create_model("resnet56", shortcut="pad")
    shortcut_params = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # two 1x1 convs + BNs
    params = [sum(p.numel() for p in model.parameters()) for model in (conv, pad)]
    assert params[0] - params[1] == shortcut_params
    out = pad(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_densenet_stem_option() -> None:
    default = create_model("densenet40")
    paper_text = create_model("densenet40", stem_channels=16)
    assert default.conv1.out_channels == 24 and default.fc.in_features == 456
    assert paper_text.conv1.out_channels == 16 and paper_text.fc.in_features == 448


def test_dropout_option_keeps_state_dict_keys() -> None:
    plain = create_model("vgg16")
    dropped = create_model("vgg16", dropout=0.5)
    assert list(plain.state_dict()) == list(dropped.state_dict())


# --------------------------------------------------------------------------- torchvision naming


def torchvision_resnet_keys(
    bottleneck: bool, layers: tuple[int, ...], classes: int
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a torchvision ResNet ``state_dict``, written from torchvision's naming scheme."""
    keys: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{suffix}"] = (c,)
        keys[f"{prefix}.num_batches_tracked"] = ()

    keys["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    expansion = 4 if bottleneck else 1
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        for index in range(blocks):
            p = f"layer{stage}.{index}"
            stride = 2 if stage > 1 and index == 0 else 1
            if bottleneck:
                keys[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                keys[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                bn(f"{p}.bn1", planes), bn(f"{p}.bn2", planes), bn(f"{p}.bn3", planes * 4)
            else:
                keys[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn1", planes), bn(f"{p}.bn2", planes)
            if index == 0 and (stride != 1 or inplanes != planes * expansion):
                keys[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    keys["fc.weight"] = (classes, 512 * expansion)
    keys["fc.bias"] = (classes,)
    return keys


@pytest.mark.parametrize(
    ("name", "bottleneck", "layers", "num_keys"),
    [
        ("resnet18", False, (2, 2, 2, 2), 122),
        ("resnet34", False, (3, 4, 6, 3), 218),
        ("resnet50", True, (3, 4, 6, 3), 320),
    ],
)
def test_imagenet_resnets_match_torchvision_state_dict(
    name: str, bottleneck: bool, layers: tuple[int, ...], num_keys: int
) -> None:
    state = create_model(name, num_classes=1000).state_dict()
    expected = torchvision_resnet_keys(bottleneck, layers, 1000)
    assert {key: tuple(value.shape) for key, value in state.items()} == expected
    assert len(state) == num_keys


def test_resnet50_literal_keys() -> None:
    state = create_model("resnet50", num_classes=1000).state_dict()
    assert list(state)[:7] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
    ]
    assert list(state)[-2:] == ["fc.weight", "fc.bias"]
    assert state["layer4.2.bn3.running_var"].shape == (2048,)
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert state["layer3.0.downsample.1.num_batches_tracked"].shape == ()
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert state["fc.weight"].shape == (1000, 2048)
    assert "layer1.1.downsample.0.weight" not in state


def test_resnet18_literal_keys_and_first_conv_channels() -> None:
    state = create_model("resnet18", num_classes=1000, in_channels=1).state_dict()
    assert state["conv1.weight"].shape == (64, 1, 7, 7)
    assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert "layer1.0.downsample.0.weight" not in state
    assert state["fc.weight"].shape == (1000, 512)
