"""``canary.mix`` writes the hidden inputs and the canaries, shuffled together, a few rows
at a time (``harness/canary.py``): the file must hold exactly the array the in-memory
mix built, whatever the count against the chunk size, and refuse a split it cannot read
row by row."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harness import canary, staging
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


def test_phase_b_shares_one_mix_per_split_and_keeps_the_last_few(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``canary.shared_mix``: every phase-B run of a split predicts the same mixed file,
    written once, in an order of the split's own (not a grading's); a process keeps the
    last four splits' and removes the rest."""
    monkeypatch.setenv("HARNESS_SECRET_SEED", "5")
    settings.cache_clear()
    monkeypatch.setattr(canary, "_shared", type(canary._shared)())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 1, 2, 2), dtype=np.uint8)
    splits = []
    for i in range(6):
        split = _split(tmp_path / f"split{i}", rng.integers(0, 256, (20, 1, 2, 2), np.uint8))
        split.key = f"split {i}"  # type: ignore[attr-defined]
        splits.append(split)
    first = canary.shared_mix(splits[0], images, np.zeros(3))  # type: ignore[arg-type]
    assert canary.shared_mix(splits[0], images, np.zeros(3)) is first  # type: ignore[arg-type]
    written = np.load(first.inputs_dir / "inputs.npy")
    assert np.array_equal(written[first.hidden_at], np.load(splits[0].inputs_path))
    assert np.array_equal(written[first.canary_at], images)
    assert not first.hidden_at.flags.writeable  # shared by every grading of the split
    own = canary.mix(splits[0], images, np.zeros(3), tmp_path / "own", "a grading's key")  # type: ignore[arg-type]
    assert not np.array_equal(own.hidden_at, first.hidden_at)  # the eager fallback's own
    folders = [canary.shared_mix(s, images, np.zeros(3)).inputs_dir for s in splits]  # type: ignore[arg-type]
    assert len(set(folders)) == 6 and folders[0] == first.inputs_dir
    assert [f.exists() for f in folders] == [False, False, True, True, True, True]
    assert oct(folders[-1].parent.stat().st_mode & 0o777) == "0o755"
    settings.cache_clear()


def test_a_killed_process_shared_mix_goes_with_the_next_process_first_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grading process killed before its exit handlers leaves its shared mix; the next
    process that mixes removes it (the folder names its process), and never a live one's."""
    import subprocess
    import sys
    import tempfile

    monkeypatch.setenv("HARNESS_SECRET_SEED", "5")
    settings.cache_clear()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(canary, "_shared", type(canary._shared)())
    monkeypatch.setattr(staging, "_swept", set())  # as in a process that mixed nothing yet
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        orphan = tmp_path / f"harness-mix-{int(ended.stdout)}-abc"
        kept = tmp_path / f"harness-mix-{alive.pid}-def"
        for folder in (orphan, kept):
            (folder / "inputs").mkdir(parents=True)
        split = _split(tmp_path / "split", np.zeros((4, 1, 2, 2), np.uint8))
        split.key = "a split"  # type: ignore[attr-defined]
        mixed = canary.shared_mix(split, np.zeros((1, 1, 2, 2), np.uint8), np.zeros(1))  # type: ignore[arg-type]
        assert not orphan.exists() and kept.exists()
        assert mixed.inputs_dir.parent.name.startswith(f"harness-mix-{os.getpid()}-")
    finally:
        alive.kill()
        alive.wait()
    settings.cache_clear()
