"""The model files shipped with the package: present, small, loadable, and actually trained."""

import pytest
import torch

import lassoprune as lp
from lassoprune.data import BatchLoader, load_dataset, stratified_subset
from lassoprune.errors import UnknownNameError
from lassoprune.pretrained import PRETRAINED, pretrained_path, resolve_model_path


#: The largest file each shipped model may be (the VGG-16 holds 15.2M parameters in float16).
MAX_BYTES = {"vgg16-fashion-mnist": 32 * 1024 * 1024}


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_shipped_file_is_small_and_loads(name):
    path = pretrained_path(name)
    assert path.stat().st_size < MAX_BYTES.get(name, 4 * 1024 * 1024)
    model = lp.load(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # float16 files load as float32
    assert model.lp_extra["dataset"] == "fashion-mnist" and model.lp_extra["image_size"] == 32
    architecture = lp.create_model(model.lp_spec.name, num_classes=10, in_channels=1)
    assert lp.count(model, (1, 1, 32, 32)).params == lp.count_params(architecture)


def test_shipped_resnet56_classifies_fashion_mnist():
    """Top-1 on 1000 class-stratified test images is that of a trained network (>= 0.85), not chance (0.1)."""
    test = load_dataset("fashion-mnist", split="test")
    indices = stratified_subset(test.labels, 1000, seed=0)
    model = lp.load(resolve_model_path("pretrained:resnet56-fashion-mnist-2ep"))
    result = lp.evaluate(model, BatchLoader(test, 250, image_size=32, indices=indices), 10)
    assert result.num_samples == 1000 and result.top1 >= 0.85


def test_unknown_shipped_name_lists_the_choices():
    with pytest.raises(UnknownNameError, match="resnet56-fashion-mnist"):
        pretrained_path("resnet20-cifar10")


@pytest.mark.parametrize("name, floor", [
    # the whole test split, 10,000 images (5 to 100 s each); test_shipped_resnet56_classifies_fashion_mnist is the
    # fast check that a shipped file is trained
    pytest.param("resnet20-fashion-mnist", 0.94, marks=pytest.mark.slow),
    pytest.param("resnet56-fashion-mnist", 0.935, marks=pytest.mark.slow),
    pytest.param("vgg16-fashion-mnist", 0.935, marks=pytest.mark.slow),  # about 100 s on 2 cores
])
def test_converged_baseline_reaches_its_accuracy_on_the_full_test_split(name, floor):
    """The converged baselines of the benchmark protocol (top-1 recorded beside the files) on all 10,000 images."""
    test = load_dataset("fashion-mnist", split="test")
    model = lp.load(f"pretrained:{name}")
    result = lp.evaluate(model, BatchLoader(test, 500, image_size=32), 10)
    assert result.num_samples == 10_000 and result.top1 >= floor
