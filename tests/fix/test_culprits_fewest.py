"""``fewest``: the galloping-then-bisection search behind the suggested denylist and config."""

from __future__ import annotations

import math

import numpy as np

from quantdebug.fix import MOST_NOISE, fewest


def test_fewest_finds_the_smallest_count_that_takes_most_of_the_noise(rng: np.random.Generator) -> None:
    for _ in range(200):
        n = int(rng.integers(1, 400))
        shares = np.cumsum(rng.dirichlet(np.ones(n) * rng.uniform(0.05, 2.0))) * rng.uniform(0.5, 1.2)
        calls: list[int] = []

        def removes(count: int, shares: np.ndarray = shares, calls: list[int] = calls) -> float:
            assert 1 <= count <= len(shares)
            calls.append(count)
            return float(shares[count - 1])

        count, share = fewest(n, removes)
        above = np.nonzero(shares >= MOST_NOISE)[0]
        if above.size:
            assert count == above[0] + 1 and share == shares[above[0]]
        else:  # none is enough: the best count tried, and it is the most any count removes
            assert share == max(shares[c - 1] for c in calls)
        assert len(set(calls)) <= 2 * math.ceil(math.log2(n)) + 2
