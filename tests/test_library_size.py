"""The library-size release keeps its public range whatever the noise (counts input)."""

from pathlib import Path

import numpy as np
import torch

from fedsynth.privacy import library_size
from fedsynth.privacy.release import Releaser, ReleasePlan


class FixedNoise:
    """A secure sum that adds a chosen noise value to every release (one site)."""

    def __init__(self, noise):
        self.noise = noise

    def released_noise_std(self, sd):
        return sd

    def sum(self, x, *, noise_std=0.0, step=""):
        return x + self.noise


def released(noise, n=2):
    plan = ReleasePlan.calibrate(library_size.specs(0.5, 0.5), epsilon=1.0, delta=1e-5)
    sizes = np.full(n, 2.0e7)
    return library_size.release(Releaser(FixedNoise(noise), plan, "test"), sizes, n)


def test_the_released_mean_stays_in_the_range_every_record_was_clipped_to():
    # two records, and noise of 175 (the failing CI run's s.d.: z = 14 times Delta = 12.5): S/N alone is +-87
    assert released(175.0)["mean"] == library_size.LOG_LIBSIZE_BOUND
    assert released(-175.0)["mean"] == 0.0
    assert abs(released(0.0)["mean"] - np.log(2.0e7)) < 1e-9


def test_sampled_library_sizes_stay_in_the_public_range_and_feed_poisson():
    rng = np.random.default_rng(0)
    # a model file written before the mean was clipped (the CI failure: 'lam value too large')
    sizes = library_size.sample({"mean": 90.0, "sd": 2.0}, 500, rng)
    assert sizes.max() <= np.exp(library_size.LOG_LIBSIZE_BOUND) * (1 + 1e-12)
    rng.poisson(sizes[:, None] * np.full((1, 40), 1.0 / 40))  # raised ValueError on e^90 reads
    low = library_size.sample({"mean": -30.0, "sd": 1.0}, 500, rng)
    assert low.min() >= 1.0
    typical = library_size.sample({"mean": 16.0, "sd": 0.5}, 4000, rng)
    assert abs(np.log(typical).mean() - 16.0) < 0.05 and abs(np.log(typical).std() - 0.5) < 0.05


def test_synthesize_draws_counts_from_a_model_whose_released_mean_is_out_of_range(tmp_path):
    from fedsynth.workflows.synthesize import synthesize

    model = Path(__file__).resolve().parents[1] / "galaxy_tools" / "fedsynth" / "test-data" / "model_counts.pt"
    blob = torch.load(model, map_location="cpu", weights_only=True)
    assert blob["input_kind"] == "counts"
    for mean, lo, hi in ((90.0, 1e9, np.exp(library_size.LOG_LIBSIZE_BOUND)), (-60.0, 0, 1e3)):
        blob["statistics"]["log_library_size"] = {"mean": mean, "sd": 2.0}
        torch.save(blob, tmp_path / "model.pt")
        expr, _, _ = synthesize(tmp_path / "model.pt", 50, seed=3)  # e^90 reads: numpy's 'lam value too large'
        depth = expr.to_numpy().sum(1)
        assert np.isfinite(depth).all() and lo <= np.median(depth) <= hi * 1.01, (mean, np.median(depth))
