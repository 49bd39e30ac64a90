"""What the benchmarks share to summarise noisy pairs: a median and its interval."""

from __future__ import annotations

import math


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free confidence interval of the median: (low, high, coverage).

    The bounds are two order statistics, the k-th from each end, for the largest k
    whose binomial(n, 1/2) tail outside them is at most (1 - *confidence*) / 2 on each
    side; *coverage* is the confidence they actually give (95.7 % for 25 values). With
    too few values for *confidence* (five or fewer for 95 %) they are the whole range,
    and *coverage* says how much less that is. No assumption is made about the noise's
    shape: on a shared VM it has long tails.
    """
    if not values:
        raise ValueError("no values")
    ordered, n = sorted(values), len(values)
    tail, k = 0.0, 0
    while k < n // 2:
        step = math.comb(n, k) / 2**n
        if tail + step > (1 - confidence) / 2:
            break
        tail += step
        k += 1
    k = max(k, 1)
    outside = sum(math.comb(n, i) for i in range(k)) / 2**n
    return ordered[k - 1], ordered[n - k], 1 - 2 * outside
