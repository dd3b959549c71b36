"""``lp.load("pretrained:NAME")`` opens the model files shipped with the package."""

import pytest
import torch

import lassoprune as lp
from lassoprune.errors import LassopruneError
from lassoprune.pretrained import PRETRAINED


def test_load_pretrained_name_returns_the_shipped_model():
    model = lp.load("pretrained:resnet56-fashion-mnist")
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 32, 32))
    assert out.shape == (1, 10)
    assert not model.training


def test_unknown_pretrained_name_lists_the_shipped_ones():
    with pytest.raises(LassopruneError, match="unknown pretrained model 'no-such-model'") as info:
        lp.load("pretrained:no-such-model")
    for name in PRETRAINED:
        assert name in str(info.value)
