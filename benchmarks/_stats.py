"""What the benchmarks share to summarise noisy pairs: a median and its interval."""

from __future__ import annotations

import math


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median: two order statistics.

    The ranks are the widest pair (k-th from each end) whose binomial(n, 1/2) tail
    outside them is at most (1 - *confidence*) / 2 on each side; with too few values
    for that, the whole range. No assumption is made about the noise's shape: on a
    shared VM it has long tails.
    """
    ordered, n = sorted(values), len(values)
    tail, k = 0.0, 0
    while k < n // 2:
        tail += math.comb(n, k) / 2**n
        if tail > (1 - confidence) / 2:
            break
        k += 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]
