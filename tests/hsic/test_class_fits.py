"""The class-wise fits of docs/METHODS.md 1.3 in Gram form: every reading equals its brute-force definition."""

import pytest
import torch

from lassoprune.errors import LassopruneError
from lassoprune.hsic import (
    ClassFit,
    centre_normalise,
    channel_kernels,
    class_fit_gram,
    class_response_kernels,
    hsic_gram,
    output_kernel,
)

N, C, K = 30, 6, 3


def _data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(N, C, 4, generator=gen)
    labels = torch.randperm(N, generator=gen) % K  # classes interleaved: the fits must not rely on the order
    outputs = torch.randn(N, 5, generator=gen) + labels.view(-1, 1).float()
    return feats, labels, outputs


@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize("kernel", ["laplace", "median"])
def test_cross_is_the_masked_fit(kernel, normalise):
    """``G_k = <W^(k) o Kbar^(c), Kbar^(d)>``, ``r_k = <W^(k) o Kbar^(c), Lbar>`` with ``W^(k)_ij = [i or j in k]``."""
    feats, labels, outputs = _data()
    gram = class_fit_gram(feats, labels, K, "cross", outputs, kernel=kernel, normalise=normalise)
    kbar = channel_kernels(feats, kernel, normalise=normalise)  # (C, N, N), centred over all N images
    lbar = centre_normalise(output_kernel(outputs, kernel))
    assert gram.G.shape == (K, C, C) and gram.R.shape == (C, K)
    for k in range(K):
        inside = (labels == k).double()
        mask = ((inside.view(-1, 1) + inside.view(1, -1)) > 0).double()
        masked = (kbar * mask).reshape(C, -1)
        assert torch.allclose(gram.G[k], masked @ kbar.reshape(C, -1).T, atol=1e-10)
        assert torch.allclose(gram.R[:, k], masked @ lbar.reshape(-1), atol=1e-10)


def test_cross_grams_sum_to_the_doubly_weighted_single_fit():
    """``sum_k W^(k)_ij`` is 2 for pairs of different classes and 1 within a class."""
    feats, labels, outputs = _data(1)
    gram = class_fit_gram(feats, labels, K, "cross", outputs, kernel="laplace", normalise=False)
    kbar = channel_kernels(feats, "laplace", normalise=False).reshape(C, -1)
    same = (labels.view(-1, 1) == labels.view(1, -1)).double().reshape(-1)
    assert torch.allclose(gram.G.sum(0), (kbar * (2.0 - same)) @ kbar.T, atol=1e-10)


@pytest.mark.parametrize("normalise", [True, False])
def test_conditional_is_the_within_class_output_fit(normalise):
    feats, labels, outputs = _data(2)
    gram = class_fit_gram(feats, labels, K, "conditional", outputs, kernel="laplace", normalise=normalise)
    for k in range(K):
        idx = torch.nonzero(labels == k).flatten()
        kbar = channel_kernels(feats[idx], "laplace", normalise=normalise).reshape(C, -1)  # centred within class k
        lbar = centre_normalise(output_kernel(outputs[idx], "laplace")).reshape(-1)
        assert torch.allclose(gram.G[k], kbar @ kbar.T, atol=1e-10)
        assert torch.allclose(gram.R[:, k], kbar @ lbar, atol=1e-10)


def test_label_and_block_are_the_one_gram_targets():
    feats, labels, outputs = _data(3)
    label = class_fit_gram(feats, labels, K, "label", outputs, kernel="laplace", normalise=False)
    kbar = channel_kernels(feats, "laplace", normalise=False).reshape(C, -1)
    targets = class_response_kernels(labels, K).reshape(K, -1)  # centred one-vs-rest kernels, normalised
    assert label.G.shape == (C, C)
    assert torch.allclose(label.R, kbar @ targets.T, atol=1e-10)
    block = class_fit_gram(feats, labels, K, "block", outputs, kernel="laplace", normalise=False)
    reference = hsic_gram(feats, labels, K, "class-output", outputs, kernel="laplace", normalise=False)
    assert torch.equal(block.R, reference.R) and torch.equal(block.G, reference.G)


def test_one_vs_rest_indicator_kernel_is_the_class_target():
    """The centred delta kernel of the binary label ``[i in k]`` is proportional to ``H e_k e_k^T H``."""
    _, labels, _ = _data()
    for k in range(K):
        y = (labels == k).long()
        delta = (y.view(-1, 1) == y.view(1, -1)).double()
        assert torch.allclose(centre_normalise(delta), class_response_kernels(labels, K)[k], atol=1e-12)


def test_a_class_with_one_image_has_an_empty_conditional_fit():
    feats, labels, outputs = _data()
    labels = labels.clone()
    labels[labels == 2] = 0
    labels[0] = 2
    gram = class_fit_gram(feats, labels, K, "conditional", outputs, kernel="laplace")
    assert not gram.G[2].any() and not gram.R[:, 2].any()
    assert gram.G[0].abs().sum() > 0


def test_clear_errors():
    feats, labels, outputs = _data()
    with pytest.raises(LassopruneError, match="outputs"):
        class_fit_gram(feats, labels, K, "cross")
    with pytest.raises(LassopruneError, match="block HSIC"):
        class_fit_gram(feats, labels, K, "conditional", outputs, block=10)
    with pytest.raises(LassopruneError, match="class fit"):
        class_fit_gram(feats, labels, K, "pairs", outputs)
    assert ClassFit.CROSS.per_class and not ClassFit.LABEL.per_class
