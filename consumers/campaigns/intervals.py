"""95% intervals for an arm against the control: pure, exact until the last step.

- Revenue per customer: Welch's t interval on the difference of means. Arms differ in size
  (a 10% hold-out) and a coupon changes the spread of spend as well as its level, so the
  equal-variance (Student) interval would be wrong exactly where it matters.
- Repurchase rate: Newcombe's hybrid score interval (his method 10) on the difference of
  two proportions, built from each arm's Wilson interval. The Wald interval collapses to
  zero width at 0% or 100% and misbehaves with small arms; Newcombe's stays inside
  [-1, 1] and keeps its coverage with small and zero counts.

Sums, means and variances are exact fractions of minor units; floats appear only for the
square root and the t quantile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist

from scipy.stats import t as student_t

LEVEL = 0.95
Z = NormalDist().inv_cdf(1 - (1 - LEVEL) / 2)


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def mean(values: Sequence[int]) -> Fraction:
    return Fraction(sum(values), len(values))


def variance(values: Sequence[int]) -> Fraction:
    """The sample variance (n - 1 in the denominator), exact."""
    n = len(values)
    total = sum(values)
    squares = sum(v * v for v in values)
    return Fraction(n * squares - total * total, n * (n - 1))


def welch(treated: Sequence[int], control: Sequence[int]) -> Interval | None:
    """Interval for mean(treated) - mean(control); ``None`` with fewer than two customers in
    an arm, or no spread in either (no variance to estimate the error from)."""
    n1, n2 = len(treated), len(control)
    if n1 < 2 or n2 < 2:
        return None
    a, b = variance(treated) / n1, variance(control) / n2
    if a + b == 0:
        return None
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))  # Welch-Satterthwaite
    half = float(student_t.ppf(1 - (1 - LEVEL) / 2, float(df))) * math.sqrt(a + b)
    diff = float(mean(treated) - mean(control))
    return Interval(diff - half, diff + half)


def wilson(k: int, n: int) -> Interval:
    """Wilson's score interval for a proportion k / n (n > 0)."""
    p = k / n
    z2 = Z * Z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def newcombe(k1: int, n1: int, k2: int, n2: int) -> Interval | None:
    """Interval for k1/n1 - k2/n2 (Newcombe 1998, method 10); ``None`` for an empty arm."""
    if n1 == 0 or n2 == 0:
        return None
    p1, p2 = k1 / n1, k2 / n2
    w1, w2 = wilson(k1, n1), wilson(k2, n2)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - w1.low) ** 2 + (w2.high - p2) ** 2)
    high = diff + math.sqrt((w1.high - p1) ** 2 + (p2 - w2.low) ** 2)
    # exact bounds never leave [-1, 1]; the square roots can by an ulp (13/13 vs 0/86)
    return Interval(max(-1.0, low), min(1.0, high))
