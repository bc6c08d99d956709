"""privacy.clip: the clipped sum without a copy equals the sum of clipped rows."""

import tracemalloc

import numpy as np

from fedsynth.privacy.clip import clip_rows, clipped_sum


def _rows(rng, n=300, d=40):
    x = rng.normal(size=(n, d)) * rng.uniform(0.2, 3.0, size=(n, 1))  # some rows inside the bound, some outside
    return x


def test_clipped_sum_equals_the_sum_of_clipped_rows():
    rng = np.random.default_rng(0)
    x = _rows(rng)
    bound = float(np.median(np.linalg.norm(x, axis=1)))
    np.testing.assert_allclose(clipped_sum(x, bound), clip_rows(x, bound).sum(0), rtol=1e-12, atol=1e-12)
    w = np.ones(x.shape[1])
    w[-1] = 7.5  # the gaussian's level weight
    ref = clip_rows(x * w, bound).sum(0)
    np.testing.assert_allclose(clipped_sum(x, bound, w), ref, rtol=1e-12, atol=1e-12)
    # the bound holds for every row: adding one row moves the sum by at most `bound`
    extra = rng.normal(size=(1, x.shape[1])) * 50
    moved = clipped_sum(np.vstack([x, extra]), bound, w) - clipped_sum(x, bound, w)
    assert np.linalg.norm(moved) <= bound * (1 + 1e-12)
    # rows inside the bound are untouched: a huge bound gives the plain weighted sum
    np.testing.assert_allclose(clipped_sum(x, 1e9, w), (x * w).sum(0), rtol=1e-12)


def test_clipped_sum_makes_no_copy_of_the_rows():
    x = np.random.default_rng(1).normal(size=(2000, 2500))  # 40 MB
    w = np.ones(x.shape[1])
    w[-1] = 3.0
    tracemalloc.start()
    clipped_sum(x, 10.0, w)
    _, peak_new = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    clip_rows(x * w, 10.0).sum(0)
    _, peak_old = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak_old > x.nbytes  # the old way holds at least one full copy
    assert peak_new < x.nbytes / 20
