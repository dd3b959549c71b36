"""Channel kernels and the Gram form of the HSIC lasso: kernel facts, Gram trick = brute force, dead channels."""

import copy

import pytest
import torch
from torch import nn

from lassoprune.errors import LassopruneError
from lassoprune.hsic import (
    ResponseKind,
    centre_normalise,
    channel_kernels,
    class_output_response_kernels,
    class_response_kernels,
    collect_features,
    gaussian_kernels,
    hsic_gram,
    kernel_matrices,
    output_kernel,
    pool_features,
)
from lassoprune.pruning import analyse_groups


def _data(n: int = 30, c: int = 6, d: int = 4, k: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, c, d, generator=gen)
    labels = torch.arange(n) % k
    outputs = torch.randn(n, 5, generator=gen) + labels.view(-1, 1).float()
    return feats, labels, outputs


def _explicit_targets(kind: str, labels: torch.Tensor, l_out: torch.Tensor) -> torch.Tensor:
    """``(K, N * N)`` target kernels built explicitly (3 classes), the brute-force side of the Gram trick."""
    if kind == "class":
        t = class_response_kernels(labels, 3)
    elif kind == "output":
        t = centre_normalise(l_out).unsqueeze(0)
    else:
        t = class_output_response_kernels(l_out, labels, 3)
    return t.reshape(t.shape[0], -1)


def test_pool_features_shapes():
    x = torch.randn(2, 3, 9, 7)
    assert pool_features(x, 4).shape == (2, 3, 16)
    assert pool_features(torch.randn(2, 3, 2, 2), 4).shape == (2, 3, 4)
    assert pool_features(x, None).shape == (2, 3, 63)
    assert pool_features(torch.randn(5, 8), 4).shape == (5, 8, 1)


def test_kernel_facts():
    feats, _, _ = _data()
    k = gaussian_kernels(feats.transpose(0, 1))
    assert torch.allclose(k, k.transpose(1, 2))
    assert torch.allclose(k.diagonal(dim1=1, dim2=2), torch.ones(6, 30, dtype=torch.float64))
    assert torch.linalg.eigvalsh(k).min() > -1e-10  # PSD
    kbar = centre_normalise(k)
    assert torch.allclose(kbar.sum(-1), torch.zeros(6, 30, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(torch.linalg.matrix_norm(kbar), torch.ones(6, dtype=torch.float64))
    assert torch.linalg.eigvalsh(kbar).min() > -1e-10
    assert torch.allclose(channel_kernels(feats, "median", normalise=True), kbar)


def test_median_heuristic():
    x = torch.tensor([[0.0], [1.0], [3.0]]).unsqueeze(0)  # squared distances 1, 9, 4 -> median 4
    k = gaussian_kernels(x)[0]
    assert k[0, 1].item() == pytest.approx(torch.exp(torch.tensor(-1 / 8)).item())


@pytest.mark.parametrize("kind", ["class", "output", "class-output"])
def test_gram_trick_equals_brute_force(kind):
    feats, labels, outputs = _data()
    gram = hsic_gram(feats, labels, 3, response=kind, outputs=outputs)
    m = channel_kernels(feats).reshape(6, -1)
    t = _explicit_targets(kind, labels, output_kernel(outputs))
    assert torch.allclose(gram.G, m @ m.T, atol=1e-10)
    assert torch.allclose(gram.R, m @ t.T, atol=1e-10)
    assert torch.allclose(torch.linalg.matrix_norm(t.reshape(-1, 30, 30)), torch.ones(t.shape[0], dtype=torch.float64))


def test_gram_float32_storage_is_close():
    feats, labels, outputs = _data()
    exact = hsic_gram(feats, labels, 3, outputs=outputs)
    approx = hsic_gram(feats, labels, 3, outputs=outputs, dtype=torch.float32)
    assert torch.allclose(exact.G, approx.G, atol=1e-6)
    assert torch.allclose(exact.R, approx.R)


def test_block_hsic_sums_blocks():
    feats, labels, outputs = _data(n=40)
    full = hsic_gram(feats, labels, 3, response="class", block=40)
    blocked = hsic_gram(feats, labels, 3, response="class", block=10, permutations=2, seed=1)
    assert torch.allclose(full.G, hsic_gram(feats, labels, 3, response="class").G)
    assert blocked.G.shape == (6, 6) and blocked.R.shape == (6, 3)
    assert torch.isfinite(blocked.G).all() and torch.isfinite(blocked.R).all()
    assert torch.linalg.eigvalsh(blocked.G).min() > -1e-8


@pytest.mark.parametrize("kind", ["class", "output", "class-output"])
def test_dead_channels_score_zero_without_nan(kind):
    feats, labels, outputs = _data()
    feats[:, 2] = 0.0  # dead ReLU
    feats[:, 4] = 3.5  # constant
    feats[:25, 5] = 0.0  # mostly dead: the median distance is 0
    gram = hsic_gram(feats, labels, 3, response=kind, outputs=outputs, kernel="median", normalise=True)
    assert torch.isfinite(gram.G).all() and torch.isfinite(gram.R).all()
    for c in (2, 4):
        assert gram.G[c].abs().max() == 0 and gram.R[c].abs().max() == 0
    assert gram.G[5, 5] == pytest.approx(1.0)


def test_unknown_target_is_a_clear_error():
    feats, labels, _ = _data()
    with pytest.raises(LassopruneError, match="class-output"):
        hsic_gram(feats, labels, 3, response="klass")
    with pytest.raises(LassopruneError, match="outputs"):
        hsic_gram(feats, labels, 3, response=ResponseKind.OUTPUT)


def test_planted_class_channels_rank_first():
    gen = torch.Generator().manual_seed(3)
    n, c, k = 90, 12, 3
    labels = torch.arange(n) % k
    feats = torch.randn(n, c, 4, generator=gen)
    informative = [3, 7, 10]
    for j, ch in enumerate(informative):  # each carries one class
        feats[:, ch] += 4.0 * (labels == j).float().view(-1, 1)
    gram = hsic_gram(feats, labels, k, response="class")
    relevance = gram.R.max(1).values
    assert set(relevance.topk(3).indices.tolist()) == set(informative)
    assert all(int(gram.R[ch].argmax()) == j for j, ch in enumerate(informative))


class _Net(nn.Module):
    def __init__(self, k: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6, k)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def test_collect_features_shapes_and_class_means():
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(12, 1, 8, 8)
    y = torch.arange(12) % 3
    groups = analyse_groups(copy.deepcopy(net), x[:1]).groups
    feats = collect_features(net, groups, [(x[:6], y[:6]), (x[6:], y[6:])], pool=4)
    assert feats.num_classes == 3 and feats.classifier == "fc"
    assert feats.inputs["conv1"].shape == (12, 4, 16)
    with torch.no_grad():
        a1 = torch.relu(net.conv1(x))
        pen = torch.relu(net.conv2(a1)).mean((2, 3))
    assert torch.allclose(feats.inputs["conv1"], pool_features(a1, 4), atol=1e-6)
    assert feats.inputs["conv2"].shape == (12, 6, 1)  # observed at the fc input
    assert feats.outputs["conv1"].shape == (12, 6 * 16)
    expected = torch.stack([pen[y == j].mean(0) for j in range(3)]).double()
    assert torch.allclose(feats.class_means, expected, atol=1e-6)


def test_missing_class_is_named():
    net = _Net(k=4).eval()
    x = torch.randn(6, 1, 8, 8)
    groups = analyse_groups(copy.deepcopy(net), x[:1]).groups
    with pytest.raises(LassopruneError, match="no image of class 3"):
        collect_features(net, groups, [(x, torch.tensor([0, 1, 2, 0, 1, 2]))])


@pytest.mark.parametrize("kind", ["class", "class-output"])
def test_large_n_float32_path_matches_float64(kind):
    feats, labels, outputs = _data(n=260, c=3, k=4)
    auto = hsic_gram(feats, labels, 4, response=kind, outputs=outputs)  # N >= 256: float32 kernels
    exact = hsic_gram(feats, labels, 4, response=kind, outputs=outputs, dtype=torch.float64)
    assert auto.G.dtype == torch.float64
    assert torch.allclose(auto.G, exact.G, atol=1e-5) and torch.allclose(auto.R, exact.R, atol=1e-5)


# --------------------------------------------------------------------------- APIB's fixed-bandwidth kernels


def test_fixed_bandwidth_kernels_follow_their_formulas():
    feats, _, _ = _data()
    x = feats.transpose(0, 1).double()  # (C, N, D), D = 4
    d = torch.cdist(x, x)
    assert torch.allclose(kernel_matrices(x, "gaussian"), torch.exp(-d.square() / 4), atol=1e-12)
    assert torch.allclose(kernel_matrices(x, "laplace"), torch.exp(-((0.5 / 4) ** 0.5) * d), atol=1e-12)
    assert torch.allclose(kernel_matrices(x, "median"), gaussian_kernels(x))
    with pytest.raises(LassopruneError, match="laplace"):
        kernel_matrices(x, "cosine")


def test_a_weak_channel_has_a_weak_unnormalised_kernel():
    """Fixed bandwidth, no normalisation: scaling a channel down shrinks its centred kernel (the median heuristic
    and the normalisation make every channel equally strong)."""
    feats, labels, _ = _data()
    feats[:, 1] *= 1e-2
    for kernel in ("gaussian", "laplace"):
        g = hsic_gram(feats, labels, 3, response="class", kernel=kernel, normalise=False).G
        assert g[1, 1] < 1e-2 * g[0, 0]
    g = hsic_gram(feats, labels, 3, response="class", kernel="median", normalise=True).G
    assert g[1, 1] == pytest.approx(g[0, 0]) == pytest.approx(1.0)


@pytest.mark.parametrize("kernel", ["gaussian", "laplace"])
@pytest.mark.parametrize("kind", ["class", "output", "class-output"])
def test_unnormalised_gram_trick_equals_brute_force(kernel, kind):
    feats, labels, outputs = _data()
    gram = hsic_gram(feats, labels, 3, response=kind, outputs=outputs, kernel=kernel, normalise=False)
    m = channel_kernels(feats, kernel, normalise=False).reshape(6, -1)
    t = _explicit_targets(kind, labels, output_kernel(outputs, kernel))
    assert torch.allclose(m.reshape(6, 30, 30).sum(-1), torch.zeros(6, 30, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(gram.G, m @ m.T, atol=1e-10)
    assert torch.allclose(gram.R, m @ t.T, atol=1e-10)
