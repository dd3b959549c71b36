"""The lasso methods: targets met, pruned = masked, details reported, clear errors, planted recovery, options."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from tests.pruning.pruning_helpers import model_with_random_bn
from lassoprune.errors import LassopruneError
from lassoprune.hsic import hsic_gram
from lassoprune.lasso import StructuredLasso, lambda_max
from lassoprune.pruning import list_methods, mask_channels, prune
from lassoprune.pruning.methods.hsic_lasso import LASSO_METHODS

METHODS = ("sglp-ib", "stlp-ib", "hsic-ib", "class-lasso")
#: The lasso methods' first spec (median kernels, normalised, B >= 0), still reachable as experimental settings.
FIRST_KERNELS = {"kernel": "median", "normalise": True, "nonneg": True}
FIRST_SPEC = {"experimental": FIRST_KERNELS, "prune_residual": True}


def _model(name: str = "resnet20") -> nn.Module:
    return model_with_random_bn(name)


def _calibration(n: int = 60, size: int = 32, num_classes: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Class-balanced synthetic images whose mean depends on the class (so class means differ)."""
    gen = torch.Generator().manual_seed(2)
    y = torch.arange(n) % num_classes
    pattern = torch.randn(num_classes, 3, size, size, generator=gen)
    x = torch.randn(n, 3, size, size, generator=gen) + pattern[y]
    return [(x[i : i + 30], y[i : i + 30]) for i in range(0, n, 30)]


@pytest.fixture(scope="module")
def resnet20_results():
    model = _model()
    data = _calibration()
    return model, {m: prune(model, torch.randn(1, 3, 32, 32), method=m, target_macs=0.5, data=data, reconstruct=False,
                            recalibrate=False) for m in METHODS}  # the cut alone, as masking does it


def test_methods_are_registered():
    assert set(METHODS) <= set(list_methods())
    assert set(LASSO_METHODS) == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_target_met_and_pruned_equals_masked(resnet20_results, method):
    model, results = resnet20_results
    result = results[method]
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
    assert all(kept >= 1 for kept, _ in result.widths.values())
    masked = copy.deepcopy(model)
    mask_channels(masked, result.groups, result.keep)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = masked(x), result.model.eval()(x)
    assert (got - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("method", METHODS)
def test_details_and_scores(resnet20_results, method):
    _, results = resnet20_results
    result = results[method]
    diagnostics = result.diagnostics
    assert diagnostics.search.parameter == "rho" and 0 < diagnostics.search.value <= 1
    assert set(diagnostics.seconds) == {"features", "kernels", "gram", "search"}
    assert set(diagnostics.groups) == {g.id for g in result.groups}
    summary = result.to_dict()
    for g in result.groups:
        info = diagnostics.groups[g.id].values
        assert info["kept"] == len(result.keep[g.id]) and 0 <= info["support"] <= g.num_channels
        assert info["lambda_max"] >= 0
        assert summary["groups"][g.id]["lambda_max"] == info["lambda_max"]  # the typed record reaches to_dict
        score = result.scores[g.id]
        assert score.shape == (g.num_channels,) and torch.isfinite(score).all() and (score >= 0).all()
    kind = {"sglp-ib": "graph", "stlp-ib": "tree"}.get(method)
    structure = summary["diagnostics"]["structure"]
    assert (structure or {}).get("kind") == kind
    if kind == "graph":
        assert all(len(edge) == 3 for edge in structure["edges"])
        assert {c for e in structure["edges"] for c in e[:2]} == set(range(10))  # every class has an edge
    if kind == "tree":
        assert sorted(structure["groups"][-1][0]) == list(range(10))  # the root holds every class
    settings = diagnostics.settings
    assert settings["response"] == "output"  # hsic-ib's one response; the cross fit regresses on the output kernel
    assert settings["class_fit"] == (None if method == "hsic-ib" else "cross")
    assert settings["experimental"] == {}  # the defaults: APIB's Laplace kernel, unnormalised, signed
    assert result.prune_residual is False
    for g in result.groups:  # the residual stream is kept whole by default
        if g.is_eltwise:
            assert len(result.keep[g.id]) == g.num_channels


@pytest.mark.slow  # VGG-11 with the label fit: about 25 s
def test_params_target_floors_and_class_target():
    model = _model("vgg11")
    result = prune(model, torch.randn(1, 3, 32, 32), method="class-lasso", target_params=0.5, data=_calibration(),
                   min_channels=4, class_fit="label", pool=2)
    assert abs(result.params_after / result.params_before - 0.5) <= 0.01
    assert min(kept for kept, _ in result.widths.values()) >= 4
    assert result.diagnostics.settings["response"] == "class" and result.diagnostics.settings["pool"] == 2


def test_option_errors_are_clear():
    model, data, x = _model(), _calibration(), torch.randn(1, 3, 32, 32)
    with pytest.raises(LassopruneError, match="lambda2_ratio"):
        prune(model, x, method="sglp-ib", target_macs=0.5, data=data, lamda2=0.1)
    with pytest.raises(LassopruneError, match="cross"):
        prune(model, x, method="sglp-ib", target_macs=0.5, data=data, class_fit="labels")
    with pytest.raises(LassopruneError, match="edge_threshold"):  # an option of sglp-ib only
        prune(model, x, method="stlp-ib", target_macs=0.5, data=data, edge_threshold=0.5)
    with pytest.raises(LassopruneError, match="kernel"):  # unknown experimental settings list the valid ones
        prune(model, x, method="hsic-ib", target_macs=0.5, data=data, experimental={"kernl": "median"})
    with pytest.raises(LassopruneError, match="data"):
        prune(model, x, method="hsic-ib", target_macs=0.5)


def test_missing_class_is_named():
    model = _model()
    x, y = _calibration()[0]
    y = y.clone()
    y[y == 7] = 3
    with pytest.raises(LassopruneError, match="no image of class 7"):
        prune(model, torch.randn(1, 3, 32, 32), method="sglp-ib", target_macs=0.5, data=[(x, y)])


def test_planted_channels_are_selected_by_the_lasso():
    """Three channels carry one class each, three more are noisy copies of the first: the lasso keeps one per class."""
    gen = torch.Generator().manual_seed(5)
    n, k = 90, 3
    labels = torch.arange(n) % k
    onehot = torch.nn.functional.one_hot(labels, k).float()
    feats = torch.randn(n, 12, 4, generator=gen) * 0.5
    informative = [2, 6, 9]
    for j, ch in enumerate(informative):
        feats[:, ch] += 3.0 * onehot[:, j : j + 1]
    gram = hsic_gram(feats, labels, k, response="class", kernel="median", normalise=True)
    G, R = gram.G.numpy(), gram.R.numpy()
    lasso = StructuredLasso(None, lambda1=0.3 * lambda_max(G, R, nonneg=True), nonneg=True, tol=1e-8).fit_gram(G, R)
    support = np.flatnonzero(np.linalg.norm(lasso.coef_, axis=1) > 0)
    assert set(support.tolist()) == set(informative)
    assert [int(np.argmax(lasso.coef_[c])) for c in informative] == [0, 1, 2]


@pytest.mark.parametrize(
    ("method", "ratio", "options", "adjustment"),
    [
        ("class-lasso", 0.5, {"target_tolerance": 1e-4}, "drop"),  # too tight to land on: bracket, then drop channels
        ("hsic-ib", 0.8, {}, "add"),  # the weakest lasso keeps too few: add channels by relevance
    ],
)
@pytest.mark.slow
def test_fix_up_paths_meet_the_target(method, ratio, options, adjustment):
    """The first spec's settings reach both fix-ups on this model (the defaults land without them)."""
    model = _model()
    first_fit = {} if method == "hsic-ib" else {"class_fit": "block"}
    result = prune(model, torch.randn(1, 3, 32, 32), method=method, target_macs=ratio, data=_calibration(),
                   **FIRST_SPEC, **first_fit, **options)
    assert result.diagnostics.search.adjustment == adjustment
    assert abs(result.macs_after / result.macs_before - ratio) <= 0.01
    for g in result.groups:  # adjusted sets stay valid channel numbers
        kept = result.keep[g.id]
        assert len(set(kept)) == len(kept) and all(0 <= c < g.num_channels for c in kept)


def test_ridge_lets_the_lasso_reach_a_mild_target_on_its_own():
    """hsic-ib at 0.8 needs channels added by relevance without ridge; with ridge the lasso's support is enough."""
    model = _model()
    plain = prune(model, torch.randn(1, 3, 32, 32), method="hsic-ib", target_macs=0.8, data=_calibration(),
                  **FIRST_SPEC)
    ridged = prune(model, torch.randn(1, 3, 32, 32), method="hsic-ib", target_macs=0.8, data=_calibration(),
                   **{**FIRST_SPEC, "experimental": {**FIRST_KERNELS, "ridge": 1.0}})
    assert plain.diagnostics.search.adjustment == "add"
    assert ridged.diagnostics.search.adjustment in ("none", "drop")
    assert ridged.diagnostics.settings["experimental"]["ridge"] == 1.0
    assert abs(ridged.macs_after / ridged.macs_before - 0.8) <= 0.01


def test_magnitude_weighting_equals_a_weighted_l1_and_drops_weak_channels():
    """B = D B' on (D G D, D R) solves the lasso with penalty lambda1 sum_c |B_c| / d_c."""
    from lassoprune.hsic.problem import _magnitude_weighted

    gen = torch.Generator().manual_seed(3)
    n, k = 60, 3
    labels = torch.arange(n) % k
    feats = torch.randn(n, 6, 4, generator=gen) * 0.5
    feats[:, :3] += 3.0 * torch.nn.functional.one_hot(labels, k).float()[:, :, None]
    feats[:, 1] *= 1e-3  # class information, but a tiny activation
    gram = hsic_gram(feats, labels, k, response="class", kernel="median", normalise=True)
    G, R = gram.G.numpy(), gram.R.numpy()
    Gw, Rw = _magnitude_weighted(G, R, feats)
    d = np.sqrt(np.diag(Gw) / np.diag(G))
    lam = 0.2 * lambda_max(Gw, Rw, nonneg=True)
    weighted = StructuredLasso(None, lambda1=lam, nonneg=True, tol=1e-10, max_iter=50000).fit_gram(Gw, Rw)
    B = d[:, None] * weighted.coef_
    # KKT of min 1/2 tr(B^T G B) - tr(B^T R) + lam sum_c |B_c| / d_c over B >= 0
    grad = G @ B - R + lam / d[:, None]
    assert np.all(grad >= -1e-6) and np.all(np.abs(grad[B > 1e-9]) <= 1e-6)
    # scale-blind kernels keep the tiny channel; the weighted lasso drops it first
    plain = StructuredLasso(None, lambda1=0.5 * lambda_max(G, R, nonneg=True), nonneg=True, tol=1e-10).fit_gram(G, R)
    assert np.linalg.norm(plain.coef_[1]) > 0
    assert np.linalg.norm(weighted.coef_[1]) == 0 and all(np.linalg.norm(weighted.coef_[c]) > 0 for c in (0, 2))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sglp-ib", "stlp-ib"])
def test_round_to_gives_multiples_and_still_meets_the_target(method):
    model = _model()
    result = prune(model, torch.randn(1, 3, 32, 32), method=method, target_macs=0.5, data=_calibration(), round_to=8)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
    assert result.diagnostics.search.adjustment.endswith("+round_to_8")
    for g in result.groups:
        kept = len(result.keep[g.id])
        assert kept % 8 == 0 or kept == g.num_channels, (g.id, kept)
    # the same search (round_to raises every floor to 8 channels), without the rounding
    plain = prune(model, torch.randn(1, 3, 32, 32), method=method, target_macs=0.5, data=_calibration(), min_channels=8)
    # rounding keeps each group's strongest channels: a group that keeps k channels keeps a prefix of its order
    for g in result.groups:
        if len(result.keep[g.id]) <= len(plain.keep[g.id]):
            assert set(result.keep[g.id]) <= set(plain.keep[g.id]) or len(plain.keep[g.id]) == 0


@pytest.mark.slow
def test_edge_threshold_sets_the_class_graph_and_an_empty_graph_is_class_lasso():
    model, data, x = _model(), _calibration(), torch.randn(1, 3, 32, 32)
    complete = prune(model, x, method="sglp-ib", target_macs=0.3, data=data, edge_threshold=0.0)
    assert len(complete.diagnostics.structure.edges) == 10 * 9 // 2
    empty = prune(model, x, method="sglp-ib", target_macs=0.3, data=data, edge_threshold=1.0, target_tolerance=0.005)
    plain = prune(model, x, method="class-lasso", target_macs=0.3, data=data, target_tolerance=0.005)
    weights = [abs(w) for _, _, w in complete.diagnostics.structure.edges]
    assert max(weights) < 1.0  # no pair of class means is perfectly correlated: edge_threshold = 1 leaves no edge
    assert empty.diagnostics.structure.edges == ()
    assert empty.keep == plain.keep
    with pytest.raises(LassopruneError, match="edge_threshold"):
        prune(model, x, method="sglp-ib", target_macs=0.3, data=data, edge_threshold=1.5)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sglp-ib", "stlp-ib"])
def test_structure_from_each_layer_meets_the_target_and_reports_its_source(method):
    model, data, x = _model(), _calibration(), torch.randn(1, 3, 32, 32)
    per_layer = prune(model, x, method=method, target_macs=0.5, data=data, experimental={"structure_from": "layer"})
    assert abs(per_layer.macs_after / per_layer.macs_before - 0.5) <= 0.01
    assert per_layer.to_dict()["diagnostics"]["structure"] == {"kind": per_layer.diagnostics.structure.kind,
                                                               "from": "layer"}
    with pytest.raises(LassopruneError, match="structure_from"):
        prune(model, x, method=method, target_macs=0.5, data=data, experimental={"structure_from": "penultimate"})
    with pytest.raises(LassopruneError, match="structure_from"):  # no structure: the setting would be ignored
        prune(model, x, method="class-lasso", target_macs=0.5, data=data, experimental={"structure_from": "layer"})


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sglp-ib", "class-lasso"])
def test_confusable_class_weights_meet_the_target_and_are_reported(method):
    model, data, x = _model(), _calibration(), torch.randn(1, 3, 32, 32)
    weighted = prune(model, x, method=method, target_macs=0.5, data=data, experimental={"class_weight": "confusable"})
    assert abs(weighted.macs_after / weighted.macs_before - 0.5) <= 0.01
    w = np.asarray(weighted.diagnostics.settings["class_weights"])
    assert w.shape == (10,) and w.mean() == pytest.approx(1.0) and w.std() > 0
    assert prune(model, x, method=method, target_macs=0.5, data=data).diagnostics.settings["class_weights"] is None


def test_class_weights_scale_each_class_term_and_a_common_scale_changes_nothing():
    """``w_k`` multiplies class k's G_k and r_k; with relative strength (lambda1 = rho lambda_max) a
    common factor scales the whole objective and leaves every solution unchanged."""
    from lassoprune.channels import analyse_groups
    from lassoprune.hsic import collect_features
    from lassoprune.hsic.problem import ProblemSettings, build_problems

    model, data = _model(), _calibration()
    analysis = analyse_groups(model, torch.randn(1, 3, 32, 32))
    groups = analysis.groups[:3]
    settings = ProblemSettings()  # the cross fit of class-lasso
    features = collect_features(model, groups, data, pool=4, outputs=True)
    none = dict.fromkeys(g.id for g in groups)
    plain, _, _ = build_problems(groups, features, settings, none, seed=0)
    w = np.linspace(0.5, 1.5, 10)
    weighted, _, _ = build_problems(groups, features, settings, none, 0, w)
    scaled, _, _ = build_problems(groups, features, settings, none, 0, np.full(10, 3.0))
    for a, b, c in zip(plain, weighted, scaled):
        assert np.allclose(b.R, a.R * w[None, :])
        B = np.random.default_rng(0).normal(size=a.R.shape)
        expected = a.G.matmul(B) * w[None, :]  # per-class products run in float32
        assert np.allclose(b.G.matmul(B), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
        assert c.lam_max == pytest.approx(3.0 * a.lam_max)
        assert np.allclose(c.solve(0.3), a.solve(0.3), atol=1e-6)


def test_class_weights_need_a_per_class_fit():
    model, data, x = _model(), _calibration(), torch.randn(1, 3, 32, 32)
    for method, options in (("hsic-ib", {}), ("sglp-ib", {"class_fit": "block"})):
        with pytest.raises(LassopruneError, match="class_weight"):
            prune(model, x, method=method, target_macs=0.5, data=data, experimental={"class_weight": "confusable"},
                  **options)
    with pytest.raises(LassopruneError, match="class_weight"):
        prune(model, x, method="sglp-ib", target_macs=0.5, data=data, experimental={"class_weight": "inverse"})


@pytest.mark.slow
def test_per_layer_graphs_without_edges_are_class_lasso():
    model, data, x = _model(), _calibration(), torch.randn(1, 3, 32, 32)
    empty = prune(model, x, method="sglp-ib", target_macs=0.3, data=data, edge_threshold=1.0,
                  experimental={"structure_from": "layer"}, target_tolerance=0.005)
    plain = prune(model, x, method="class-lasso", target_macs=0.3, data=data, target_tolerance=0.005)
    assert empty.keep == plain.keep


def test_layer_class_means_are_the_means_of_each_class_features():
    from lassoprune.hsic import CalibrationFeatures
    from lassoprune.hsic.problem import layer_class_means

    feats = torch.randn(6, 2, 3)  # (N, C, D)
    labels = torch.tensor([0, 1, 0, 2, 1, 2])
    features = CalibrationFeatures(inputs={"g": feats}, outputs={}, labels=labels, class_means=torch.zeros(3, 1),
                                   num_classes=3, classifier=None, seconds=0.0)
    group = type("G", (), {"id": "g"})()
    means = layer_class_means(features, group)
    assert means.shape == (3, 6)
    assert np.allclose(means[1], feats[[1, 4]].double().mean(0).flatten().numpy())


# --------------------------------------------------------------------------- APIB's settings as options


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    {"kernel": "gaussian", "normalise": False, "nonneg": False},
    {"kernel": "laplace", "normalise": False, "nonneg": False, "strength": "global"},
])
def test_apib_settings_meet_the_target_and_are_reported(options):
    model, data = _model(), _calibration()
    result = prune(model, torch.randn(1, 3, 32, 32), method="hsic-ib", target_macs=0.5, data=data,
                   experimental=options)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
    changed = {k: v for k, v in options.items() if k == "kernel" and v != "laplace" or k == "strength"}
    assert result.diagnostics.settings["experimental"] == changed  # what differs from the defaults is recorded


@pytest.mark.slow
def test_global_strength_is_one_lambda_for_every_group():
    """strength=global: lambda1 = rho * max_g lambda_max(g) in every group, so B_g = 0 exactly when
    lambda_max(g) <= lambda1; relative strength (rho * lambda_max(g), rho < 1) leaves every group a support."""
    model, data = _model(), _calibration()
    example = torch.randn(1, 3, 32, 32)
    for strength in ("global", "relative"):
        result = prune(model, example, method="hsic-ib", target_macs=0.4, data=data,
                       experimental={"kernel": "gaussian", "strength": strength})
        rho = result.diagnostics.search.value
        groups = [g.values for g in result.diagnostics.groups.values()]
        assert rho < 1
        lam = rho * (max(g["lambda_max"] for g in groups) if strength == "global" else 1.0)
        for g in groups:
            reference = lam if strength == "global" else rho * g["lambda_max"]
            assert (g["support"] == 0) == (g["lambda_max"] <= reference)


def test_kernel_and_strength_errors_list_the_choices():
    model, data = _model(), _calibration()
    with pytest.raises(LassopruneError, match="laplace"):
        prune(model, torch.randn(1, 3, 32, 32), method="hsic-ib", target_macs=0.5, data=data,
              experimental={"kernel": "rbf"})
    with pytest.raises(LassopruneError, match="relative"):
        prune(model, torch.randn(1, 3, 32, 32), method="hsic-ib", target_macs=0.5, data=data,
              experimental={"strength": "local"})


# --------------------------------------------------------------------------- class fits (docs/METHODS.md 1.3)


@pytest.fixture(scope="module")
def class_fit_results():
    model, data = _model(), _calibration()
    results = {}
    for method in ("sglp-ib", "stlp-ib", "class-lasso"):
        for fit in ("block", "conditional", "cross", "label"):
            results[method, fit] = prune(model, torch.randn(1, 3, 32, 32), method=method, target_macs=0.5, data=data,
                                         class_fit=fit, pool=2)
    return model, results


@pytest.mark.slow
@pytest.mark.parametrize("fit", ["block", "conditional", "cross", "label"])
@pytest.mark.slow
def test_every_class_fit_meets_the_target_with_the_lasso_deciding(class_fit_results, fit):
    _, results = class_fit_results
    for method in ("sglp-ib", "stlp-ib", "class-lasso"):
        result = results[method, fit]
        assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
        assert result.diagnostics.settings["class_fit"] == fit
        assert result.diagnostics.search.adjustment in ("none", "drop"), (method, fit)  # never the relevance fall-back


@pytest.mark.slow
@pytest.mark.slow
def test_structures_and_fits_give_different_keep_sets(class_fit_results):
    _, results = class_fit_results
    for fit in ("block", "cross"):
        sets = [results[m, fit].keep for m in ("sglp-ib", "stlp-ib", "class-lasso")]
        assert sets[0] != sets[1] and sets[0] != sets[2] and sets[1] != sets[2], fit
    assert len({str(sorted(results["class-lasso", f].keep.items())) for f in
                ("block", "conditional", "cross", "label")}) == 4


def test_class_fit_errors_name_the_methods_that_have_one():
    model, data, x = _model(), _calibration(), torch.randn(1, 3, 32, 32)
    with pytest.raises(LassopruneError, match="class_fit"):  # hsic-ib has one output response: no class fit
        prune(model, x, method="hsic-ib", target_macs=0.5, data=data, class_fit="cross")
    with pytest.raises(LassopruneError, match="conditional"):
        prune(model, x, method="sglp-ib", target_macs=0.5, data=data, class_fit="pairs")


def test_residual_default_is_the_methods_and_can_be_overridden():
    model, data, x = _model(), _calibration(), torch.randn(1, 3, 32, 32)
    cut = prune(model, x, method="hsic-ib", target_macs=0.5, data=data, prune_residual=True, pool=2)
    assert cut.prune_residual is True
    assert any(len(cut.keep[g.id]) < g.num_channels for g in cut.groups if g.is_eltwise)
    l1 = prune(model, x, method="l1", target_macs=0.5)
    assert l1.prune_residual is True  # the criteria's default: every group may be cut


@pytest.mark.parametrize("method, grams", [("sglp-ib", 10), ("hsic-ib", 1)])
def test_lasso_problems_beyond_the_memory_available_are_refused_before_any_gram(monkeypatch, method, grams):
    """The problems' memory bound (hsic/problem.py) is checked against the memory available before any Gram is
    built: one line naming the widest groups and what to do, instead of a kill by the kernel."""
    import lassoprune.pruning.methods.hsic_lasso as hsic_lasso
    from lassoprune.channels import channel_groups
    from lassoprune.hsic.problem import problem_memory

    model, x, data = _model(), torch.randn(1, 3, 32, 32), _calibration()
    widths = {g.id: g.num_channels for g in channel_groups(copy.deepcopy(model), x)}
    widest = max(widths, key=widths.get)
    built = []
    monkeypatch.setattr(hsic_lasso, "build_problems", lambda *a, **k: built.append(1) or pytest.fail("built"))
    monkeypatch.setattr(hsic_lasso, "available_memory", lambda: 1024)
    with pytest.raises(LassopruneError) as refused:
        prune(model, x, method=method, target_macs=0.5, data=data, reconstruct=False, prune_residual=True)
    message = str(refused.value)
    assert "\n" not in message and f"{widest!r} ({widths[widest]} channels)" in message and not built
    assert ("prune with hsic-ib" in message) == (grams > 1) and "ignored_layers" in message
    needed = problem_memory(widths, grams)
    assert f"{needed / 2**20:.1f} MiB" in message and "but 0.0 MiB of memory is available" in message
    monkeypatch.undo()
    monkeypatch.setattr(hsic_lasso, "available_memory", lambda: needed)  # exactly enough: runs
    result = prune(model, x, method=method, target_macs=0.5, data=data, reconstruct=False, prune_residual=True)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01


def test_memory_available_is_read_from_meminfo(tmp_path):
    from lassoprune.utils.runtime import available_memory

    meminfo, cgroup = tmp_path / "meminfo", tmp_path / "cgroup"
    cgroup.mkdir()
    meminfo.write_text("MemTotal:       24000 kB\nMemAvailable:    1000 kB\nSwapFree:          24 kB\n")
    assert available_memory(meminfo, cgroup) == 1024 * 1024  # no cgroup files: the machine's
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text("500\n")
    assert available_memory(meminfo, cgroup) == 1024 * 1024  # a cgroup without a limit
    (cgroup / "memory.max").write_text("4500\n")
    assert available_memory(meminfo, cgroup) == 4000  # a container's limit binds
    meminfo.write_text("MemTotal:       24000 kB\nMemFree:    1000 kB\n")  # kernels before 3.14: unknown
    assert available_memory(meminfo, cgroup) is None
    assert available_memory(tmp_path / "missing", cgroup) is None


def test_lasso_problems_are_freed_when_the_method_returns(monkeypatch):
    """The Grams (GiBs on wide networks) must not outlive the method waiting for the garbage collector: the
    reconstruction, or the next cut of an iterative run, needs that memory (and the memory check counts on it)."""
    import gc
    import weakref

    import lassoprune.pruning.methods.hsic_lasso as hsic_lasso

    built = []

    def build_and_watch(*args, **kwargs):
        problems, *seconds = build(*args, **kwargs)
        built.extend(weakref.ref(p.G) for p in problems)
        return (problems, *seconds)

    build = hsic_lasso.build_problems
    monkeypatch.setattr(hsic_lasso, "build_problems", build_and_watch)
    gc.collect()
    gc.disable()
    try:
        prune(_model(), torch.randn(1, 3, 32, 32), method="sglp-ib", target_macs=0.5, data=_calibration(),
              reconstruct=False)
        alive = sum(ref() is not None for ref in built)
    finally:
        gc.enable()
    assert built and alive == 0
