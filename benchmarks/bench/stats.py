"""Mean and standard error over seeds, and when two means differ by more than two standard errors.

For ``n`` values ``x_1 .. x_n``:

    mean = (x_1 + ... + x_n) / n
    s    = sqrt(sum_i (x_i - mean)^2 / (n - 1))      (the sample standard deviation, ddof = 1)
    SE   = s / sqrt(n)

With a single value there is no spread to measure: :meth:`Estimate.of` gives no SE (None) and
:func:`mean_se` gives 0.0 for tables that always print one. No values at all is an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    """Mean and standard error of ``n`` values (``se`` None when ``n`` is 1)."""

    mean: float
    se: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Estimate:
        """The estimate of ``values``: SE = s / sqrt(n), s the sample standard deviation; None for n = 1.

        Raises:
            ValueError: ``values`` is empty.
        """
        n = len(values)
        if n == 0:
            raise ValueError("an estimate needs at least one value")
        mean = sum(values) / n
        se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
        return cls(mean, se, n)

    def text(self, digits: int = 4) -> str:
        """``mean ± SE`` with ``digits`` decimals; the mean alone when there is no SE."""
        return f"{self.mean:.{digits}f}" + (f" ± {self.se:.{digits}f}" if self.se is not None else "")


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, SE)`` of ``values`` as :meth:`Estimate.of` computes them, with SE 0.0 for a single value.

    Raises:
        ValueError: ``values`` is empty.
    """
    estimate = Estimate.of(values)
    return estimate.mean, estimate.se if estimate.se is not None else 0.0


def differs(a: Estimate, b: Estimate, floor: float = 0.0) -> bool | None:
    """Whether two means differ by more than two standard errors of their difference (None: no SE).

    The test is ``|mean_a - mean_b| > 2 sqrt(SE_a^2 + SE_b^2)`` with each SE at least ``floor``: with
    two seeds that happen to agree the sample SE is about 0, and a difference of a few test images
    would count as real. The benchmark tables pass the test split's sampling error of one accuracy,
    ``sqrt(p (1 - p) / n_test)`` (:func:`sampling_se`). A single seed (no SE) is compared with the
    floor alone when there is one: the test-sampling part of the error only (the seed-to-seed part is
    unknown); None without a floor.
    """
    if (a.se is None or b.se is None) and floor <= 0:
        return None
    se_a, se_b = max(a.se or 0.0, floor), max(b.se or 0.0, floor)
    return abs(a.mean - b.mean) > 2 * math.sqrt(se_a**2 + se_b**2)


def sampling_se(accuracy: float, test_images: int | None) -> float:
    """Standard error of one accuracy ``p`` measured on ``n`` test images (binomial): ``sqrt(p (1 - p) / n)``.

    0.0 when the number of test images is unknown (None or 0).
    """
    if not test_images:
        return 0.0
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / test_images)
