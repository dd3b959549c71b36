"""Every set of method options the benchmark scripts pass to ``lp.prune``, each defined once, here only.

The scripts take their option dicts from this module and name no method option themselves, so a
renamed or moved option (e.g. the lasso methods' ablation options) is changed in this file alone.

The lasso methods' kernel settings come in three meanings (docs/METHODS.md 1.1):

* :data:`APIB_LAPLACE`: APIB's final setting and the lasso methods' current defaults (Laplace kernel,
  unnormalised, signed lasso), spelled out so that a later change of the library's defaults cannot change
  what a finished row means;
* :data:`APIB_GAUSSIAN`: an ablation, APIB's fixed-bandwidth Gaussian kernel (1/D) instead of the Laplace;
* :data:`FIRST_DEFAULTS`: an ablation, the lasso methods' first defaults (median-bandwidth kernels,
  normalised, coefficients >= 0).

Ablation settings of the lasso methods go under the one option ``experimental``
(:func:`experimental`), main options beside it.

Prune settings that are not method options (``target_macs``, ``prune_residual``, ``reconstruct``, ...)
stay with the scripts, except where a table below carries them beside the options.
"""

from __future__ import annotations

from typing import Any, NamedTuple

Options = dict[str, Any]

def experimental(base: Options, **changes: Any) -> Options:
    """``base`` with ``changes`` merged into its ``experimental`` settings (a new dict)."""
    return {**base, "experimental": {**base.get("experimental", {}), **changes}}


APIB_LAPLACE: Options = {"experimental": {"kernel": "laplace", "normalise": False, "nonneg": False}}
"""APIB's final kernels and lasso (the lasso methods' current defaults): fixed-bandwidth Laplace, unnormalised,
signed."""
APIB_GAUSSIAN: Options = experimental(APIB_LAPLACE, kernel="gaussian")
"""Ablation: APIB's fixed-bandwidth Gaussian kernel (1/D), otherwise :data:`APIB_LAPLACE`."""
FIRST_DEFAULTS: Options = {"experimental": {"kernel": "median", "normalise": True, "nonneg": True}}
"""Ablation: the lasso methods' first defaults (median-bandwidth kernels, normalised, B >= 0)."""
CROSS_FIT: Options = {**APIB_LAPLACE, "class_fit": "cross"}
"""The class-wise lasso methods (sglp-ib, stlp-ib, class-lasso) at :data:`APIB_LAPLACE` with the cross fit."""
CLASS_FITS: tuple[str, ...] = ("block", "conditional", "cross", "label")
"""The class-wise fits of docs/METHODS.md 1.3 (the lasso option ``class_fit``)."""


def vote_options(threshold: float, vote_on: str) -> Options:
    """``dwgl-vote``'s options: vote out channels below ``threshold`` x the layer's strongest, read from
    ``vote_on`` (``filters``: filter norms; ``bn``: BatchNorm ``|gamma|``)."""
    return {"threshold": threshold, "vote_on": vote_on}


class Variant(NamedTuple):
    """One pruning variant of the one-shot scripts: ``lp.prune(method=method, prune_residual=..., **options)``."""

    method: str
    options: Options
    prune_residual: bool


def _class_wise(options: Options, methods: tuple[str, ...], name: str) -> dict[str, Variant]:
    """``<method>-<name>`` -> the method with ``options``, residual stream kept, for each of ``methods``."""
    return {f"{method}-{name}": Variant(method, options, False) for method in methods}


ONESHOT_VARIANTS: dict[str, Variant] = {
    "random-keep-residual": Variant("random", {}, False),
    "l1": Variant("l1", {}, True),
    "l1-keep-residual": Variant("l1", {}, False),
    "hsic-ib-first-spec": Variant("hsic-ib", FIRST_DEFAULTS, False),
    "hsic-ib-apib": Variant("hsic-ib", APIB_GAUSSIAN, False),
    "hsic-ib-apib-laplace": Variant("hsic-ib", APIB_LAPLACE, False),
    "hsic-ib-apib-global": Variant("hsic-ib", experimental(APIB_GAUSSIAN, strength="global"), False),
    "sglp-ib-as-landed": Variant("sglp-ib", FIRST_DEFAULTS, True),
    "sglp-ib-apib": Variant("sglp-ib", APIB_GAUSSIAN, False),
    "stlp-ib-apib": Variant("stlp-ib", APIB_GAUSSIAN, False),
    "class-lasso-apib": Variant("class-lasso", APIB_GAUSSIAN, False),
    # the class-wise readings of docs/METHODS.md 1.3 at the defaults (Laplace, unnormalised, signed, residual kept)
    **{f"{method}-{fit}": Variant(method, {**APIB_LAPLACE, "class_fit": fit}, False)
       for method in ("class-lasso", "sglp-ib", "stlp-ib") for fit in CLASS_FITS},
    # the structure's weight (lambda2_ratio = lambda2 / lambda1; default 0.1) with the cross fit
    **{f"{method}-cross-lambda2-{weight:g}": Variant(method, {**CROSS_FIT, "lambda2_ratio": weight}, False)
       for method in ("sglp-ib", "stlp-ib") for weight in (1.0, 10.0)},
    # the class graph / tree from each group's own features instead of the penultimate ones
    **_class_wise(experimental(CROSS_FIT, structure_from="layer"), ("sglp-ib", "stlp-ib"), "cross-layer-structure"),
    # class k's term of the cross fit weighted by how much its class mean resembles the others'
    **_class_wise(experimental(CROSS_FIT, class_weight="confusable"), ("sglp-ib", "stlp-ib", "class-lasso"),
                  "cross-confusable"),
    # widths in multiples of 16 / 8 (the pipeline's round_to: auto): the accuracy cost of rounding
    "l1-round16": Variant("l1", {"round_to": 16}, True),
    "l1-round8": Variant("l1", {"round_to": 8}, True),
    "hsic-ib-round8": Variant("hsic-ib", {"round_to": 8}, False),
}  # fmt: skip
"""``benchmarks/oneshot_sweep.py``'s variants, by name (the names are its ``--variants`` and its rows' keys).
``hsic-ib-apib`` and the other ``-apib`` rows use :data:`APIB_GAUSSIAN`; ``-apib-laplace`` and the class-wise
rows the current defaults."""

RECONSTRUCTION_VARIANTS: dict[str, Variant] = {
    "l1": Variant("l1", {}, True),
    "sglp-ib": Variant("sglp-ib", {}, True),
    "hsic-ib-apib": Variant("hsic-ib", APIB_LAPLACE, False),
}
"""``benchmarks/reconstruction.py --accuracy``'s rows. Its ``hsic-ib-apib`` is :data:`APIB_LAPLACE` (APIB's
final setting), not the one-shot sweep's Gaussian row of the same name."""
