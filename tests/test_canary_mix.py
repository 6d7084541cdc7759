"""``canary.mix`` writes the hidden inputs and the canaries, shuffled together, a few rows
at a time (``harness/canary.py``): the file must hold exactly the array the in-memory
mix built, whatever the count against the chunk size, and refuse a split it cannot read
row by row."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harness import canary
from harness.settings import settings


def _split(folder: Path, hidden: np.ndarray, version: tuple[int, int] | None = None) -> object:
    folder.mkdir(parents=True)
    path = folder / "inputs.npy"
    if version is None:
        np.save(path, hidden)
    else:  # another header version, as np.save writes for a large header
        with open(path, "wb") as fh:
            np.lib.format.write_array(fh, hidden, version=version)
    return SimpleNamespace(inputs_path=path)


@pytest.mark.parametrize(
    ("hidden_count", "canaries", "shape", "version"),
    [
        (5, 3, (1, 4, 4), None),
        (600, 0, (2, 3, 3), None),  # no canaries
        (300, 250, (1, 2, 2), None),  # mixed rows cross two chunk ends
        (256, 0, (3, 1, 1), (2, 0)),  # exactly one chunk, a version 2.0 header
    ],
)
def test_the_mixed_file_is_the_in_memory_mix(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hidden_count: int,
    canaries: int,
    shape: tuple[int, ...],
    version: tuple[int, int] | None,
) -> None:
    monkeypatch.setenv("HARNESS_SECRET_SEED", "5")
    settings.cache_clear()
    rng = np.random.default_rng(hidden_count)
    hidden = rng.integers(0, 256, (hidden_count, *shape), dtype=np.uint8)
    images = rng.integers(0, 256, (canaries, *shape), dtype=np.uint8)
    split = _split(tmp_path / "split", hidden, version)
    mixed = canary.mix(split, images, np.zeros(canaries), tmp_path / "mixed", "key")  # type: ignore[arg-type]
    expected = np.empty((hidden_count + canaries, *shape), dtype=np.uint8)
    expected[mixed.hidden_at] = hidden
    expected[mixed.canary_at] = images
    written = np.load(tmp_path / "mixed" / "inputs.npy", allow_pickle=False)
    assert written.dtype == np.uint8 and np.array_equal(written, expected)
    assert sorted([*mixed.hidden_at, *mixed.canary_at]) == list(range(hidden_count + canaries))
    again = canary.mix(split, images, np.zeros(canaries), tmp_path / "again", "key")  # type: ignore[arg-type]
    assert np.array_equal(again.canary_at, mixed.canary_at)  # the secret seed's order
    settings.cache_clear()


def test_a_split_that_is_not_uint8_rows_is_refused(tmp_path: Path) -> None:
    split = _split(tmp_path / "split", np.zeros((4, 1, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="expected uint8 rows"):
        canary.mix(split, np.zeros((1, 1, 2, 2), np.uint8), np.zeros(1), tmp_path / "m", "k")  # type: ignore[arg-type]
