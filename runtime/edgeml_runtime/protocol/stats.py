"""The significance test of the window verdict, in the standard library alone (no scipy on a device).

:func:`homogeneity_test` is Pearson's χ² test of homogeneity between a
window's counts and the reference's counts (its shares × its rows): are the
two samples drawn from one distribution? Bins too sparse for the χ²
approximation are pooled first (Cochran's rule). Its p-value is the χ² survival
function, :func:`chi2_sf`, which is the regularized upper incomplete gamma
function :func:`upper_gamma` ``Q(df / 2, x / 2)``, computed by its power
series below ``x < a + 1`` and by its continued fraction (modified Lentz)
above, as in Numerical Recipes' ``gammq``. The host tests check both against
``scipy.stats.chi2.sf`` to 1e-10 (relative) over a grid of x and df.

Example: 60 of 100 rows in the first of two bins that held half of 1,000 reference rows.

>>> x, df, p = homogeneity_test([60, 40], [0.5, 0.5], 1000)
>>> round(x, 4), df, round(p, 6)
(3.6376, 1, 0.056489)
>>> round(chi2_sf(3.841459, 1), 6), chi2_sf(0.0, 3), upper_gamma(1.0, 2.0) == math.exp(-2.0)
(0.05, 1.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Relative accuracy at which the series and the continued fraction stop.
EPS = 1e-15
#: Cochran's rule: cells of the test whose expected count is below this are pooled (see :func:`homogeneity_test`).
MIN_EXPECTED = 5.0
#: The most terms either expansion may take (about sqrt(a) are needed; a is half the degrees of freedom).
MAX_TERMS = 10_000
_TINY = 1e-300


def upper_gamma(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a), for a > 0 and x >= 0.

    >>> round(upper_gamma(0.5, 0.5), 10), upper_gamma(3.0, 0.0), upper_gamma(2.0, 1e6)
    (0.3173105079, 1.0, 0.0)
    """
    if not (a > 0 and math.isfinite(a)) or not x >= 0:
        raise ValueError(f"upper_gamma needs a > 0 (finite) and x >= 0, not a = {a!r}, x = {x!r}")
    if x == 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    if x < a + 1:
        return max(0.0, 1.0 - _lower_series(a, x))
    return _upper_fraction(a, x)


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ χ²(df): the p-value of a χ² statistic ``x`` on ``df`` degrees of freedom (df >= 1).

    >>> round(chi2_sf(27.877, 9), 6), chi2_sf(-1.0, 2)
    (0.001, 1.0)
    """
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"chi2_sf needs whole degrees of freedom >= 1, not {df!r}")
    return 1.0 if x <= 0 else upper_gamma(df / 2, x / 2)


def homogeneity_test(counts: Sequence[int], shares: Sequence[float], reference_rows: int,
                     min_expected: float = MIN_EXPECTED) -> tuple[float, int, float]:
    """Pearson's χ² statistic, degrees of freedom and p-value: ``counts`` against ``shares × reference_rows``.

    The 2 × B table holds the window's counts in one row and the reference's
    in the other. Bins empty in both are left out. The χ² distribution is a
    fair approximation only where every expected count is at least
    ``min_expected`` (Cochran's rule), so the bins whose smaller expected
    count (window or reference) is below it are pooled into one cell, and a
    pool still below it joins the smallest other cell. The degrees of freedom
    are the cells left, minus one; with one cell or none there is nothing to
    test (statistic 0, df 0, p-value 1). ``X² = Σ n·m·(aⱼ − eⱼ)² / (n·aⱼ +
    m·eⱼ)`` over the cells, with ``a`` and ``e`` the window's and the
    reference's shares and ``n``, ``m`` their rows: the usual ``Σ (O − E)² /
    E`` over the table, written without expected counts (it equals
    ``scipy.stats.chi2_contingency(table, correction=False)``).

    >>> homogeneity_test([50, 50, 0], [0.5, 0.5, 0.0], 100)
    (0.0, 1, 1.0)
    >>> homogeneity_test([3], [1.0], 50), homogeneity_test([0, 0], [0.5, 0.5], 50)
    ((0.0, 0, 1.0), (0.0, 0, 1.0))

    One value in a bin the reference never saw, among 20 rows, is no evidence
    (too sparse, it joins the smallest other cell); forty of 100 rows are, even
    pooled so:

    >>> homogeneity_test([10, 9, 1], [0.5, 0.5, 0.0], 1000)
    (0.0, 1, 1.0)
    >>> x, df, p = homogeneity_test([15, 15, 15, 15, 40], [0.25, 0.25, 0.25, 0.25, 0.0], 1000)
    >>> round(x, 3), df, p < 1e-8
    (40.829, 3, True)
    """
    n, m = sum(counts), reference_rows
    if not n or not m:
        return 0.0, 0, 1.0
    cells = _cells(counts, shares, m, min_expected * (n + m) / min(n, m))
    if len(cells) < 2:
        return 0.0, 0, 1.0
    statistic = sum((c * m - r * n) ** 2 / (c + r) for c, r in cells) / (n * m)
    return statistic, len(cells) - 1, chi2_sf(statistic, len(cells) - 1)


def _cells(counts: Sequence[int], shares: Sequence[float], m: int, least: float) -> list[tuple[float, float]]:
    """The (window count, reference count) cells of the test: bins empty in both left out, bins of fewer than
    ``least`` pooled values (an expected count below the minimum) pooled into one, and a pool of fewer than
    ``least`` added to the smallest other cell (the first of equals)."""
    dense: list[tuple[float, float]] = []
    pool_c = pool_r = 0.0
    sparse = False
    for c, s in zip(counts, shares, strict=True):
        r = s * m
        if c + r <= 0:
            continue
        if c + r >= least:
            dense.append((c, r))
        else:
            pool_c, pool_r, sparse = pool_c + c, pool_r + r, True
    if not sparse:
        return dense
    if pool_c + pool_r >= least or not dense:
        return [*dense, (pool_c, pool_r)]
    smallest = min(range(len(dense)), key=lambda i: dense[i][0] + dense[i][1])
    dense[smallest] = (dense[smallest][0] + pool_c, dense[smallest][1] + pool_r)
    return dense


def _prefactor(a: float, x: float) -> float:
    """x^a · e^(−x) / Γ(a), in logarithms (it under- or overflows long before the result does)."""
    return math.exp(a * math.log(x) - x - math.lgamma(a))


def _lower_series(a: float, x: float) -> float:
    """P(a, x) by its series Σ xⁿ / (a (a+1) … (a+n)); converges fast for x < a + 1."""
    term = total = 1.0 / a
    denominator = a
    for _ in range(MAX_TERMS):
        denominator += 1.0
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * EPS:
            return total * _prefactor(a, x)
    raise ArithmeticError(f"the series of P({a}, {x}) did not converge in {MAX_TERMS} terms")


def _upper_fraction(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction, evaluated with the modified Lentz method; converges fast for x >= a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, MAX_TERMS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < EPS:
            return h * _prefactor(a, x)
    raise ArithmeticError(f"the continued fraction of Q({a}, {x}) did not converge in {MAX_TERMS} terms")
