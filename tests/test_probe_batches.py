"""The probe's inputs ride in the padding of phase B's last static batch: sized by the
host (``integrity.probe_size``), predicted in the main pass (``phase_b.with_extra``)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from harness.integrity import probe_size
from harness.runner.phase_b import noisy, static_batches, with_extra
from harness.runner.predict import run_batches


@pytest.mark.parametrize(
    ("count", "wanted", "batch", "size"),
    [
        (5064, 256, 250, 186),  # 64 canaries after 5,000 images: the probe fills the rest
        (5000, 256, 250, 250),  # no padding: whole batches, as before
        (5064, 100, 250, 100),  # fits in the padding: costs no batch at all
        (5064, 600, 250, 436),  # the fill and a whole batch
        (5200, 256, 250, 250),  # a fill of 50 would keep under half: whole batches
        (40, 8, 16, 8),
        (100, 100, 250, 100),
    ],
)
def test_the_probe_fills_the_last_batch_and_never_costs_more(
    count: int, wanted: int, batch: int, size: int
) -> None:
    assert probe_size(count, wanted, batch) == size
    separate = math.ceil(count / batch) + math.ceil((wanted - wanted % batch or wanted) / batch)
    assert math.ceil((count + size) / batch) <= separate
    assert 2 * size >= min(wanted, batch)


class _Counting(torch.nn.Module):
    """A batch-independent model that records the batch sizes it is called with."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        return self.conv(x).mean(dim=(1, 2, 3))


def test_the_probe_is_predicted_in_the_main_pass_as_a_pass_of_its_own_would() -> None:
    torch.manual_seed(0)
    model = _Counting().eval()
    images = np.random.default_rng(0).integers(0, 256, (5 * 8 + 3, 1, 6, 6), dtype=np.uint8)
    extra = noisy(images[:5], seed=1, amplitude=2)
    job: Any = SimpleNamespace(batch_size=8, normalize=None, kind="regression", num_classes=0)
    call = static_batches(model, 8)
    cpu = torch.device("cpu")

    outputs, probed = with_extra(call, images, extra, job, cpu)
    assert model.calls == [8] * 6  # 43 + 5 inputs: six full batches, nothing padded
    model.calls.clear()
    alone = run_batches(call, images, job, cpu)
    probe_alone = run_batches(call, extra, job, cpu)
    assert model.calls == [8] * 7  # separate passes: two padded batches
    assert probed is not None
    np.testing.assert_array_equal(outputs, alone)
    np.testing.assert_array_equal(probed, probe_alone)
    assert outputs.shape == (43,) and probed.shape == (5,)

    same, none = with_extra(call, images, None, job, cpu)
    assert none is None
    np.testing.assert_array_equal(same, alone)


def test_the_noise_moves_each_pixel_by_at_most_the_amplitude_and_stays_a_gray_level() -> None:
    images = np.array([[[[0, 1, 128, 254, 255] * 40]]], dtype=np.uint8).repeat(50, axis=0)
    moved = noisy(images, seed=3, amplitude=4)
    assert moved.dtype == np.uint8 and moved.shape == images.shape
    shift = moved.astype(np.int16) - images
    assert np.abs(shift).max() == 4  # every step of the amplitude is drawn somewhere
    assert moved[..., ::5].min() == 0 and moved[..., 4::5].max() == 255  # clipped, not wrapped
    assert set(np.unique(shift[..., 2::5])) == set(range(-4, 5))
    np.testing.assert_array_equal(moved, noisy(images, seed=3, amplitude=4))  # seeded
    assert not np.array_equal(moved, noisy(images, seed=4, amplitude=4))
    rng = np.random.default_rng(3)  # the draw the probe has always used: the same pixels
    draw = rng.integers(-4, 5, size=images.shape, dtype=np.int16)
    np.testing.assert_array_equal(moved, np.clip(images.astype(np.int16) + draw, 0, 255))
