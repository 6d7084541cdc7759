"""Train a fashion-mnist reference on the real data: seeded, CPU (two threads) or GPU.

    python reference_solutions/fashion-mnist/train.py cnn      # the seed-003 CNN -> cnn/
    python reference_solutions/fashion-mnist/train.py bn-cnn   # the stronger one -> bn-cnn/
    python reference_solutions/fashion-mnist/train.py cnn --fixture --out /tmp/smoke

The data is the task's public train split (55,000 images, carved with `public_seed` 0)
and its validation split (5,000), read by the harness's own provider from the data root
(`--data-root`, default <project>/data), which `grade data prepare fashion-mnist` fills
from Debian's dataset-fashion-mnist. Any option after the model's name is trainlib's
(`--epochs`, `--seed`, `--device`, `--out`, `--limit`).

Recipes:
- ``cnn``: the seed's MNIST recipe (write-up 003): Adam, learning rate 0.0005, batch size
  64, no augmentation, no normalization; 1 epoch instead of the seed's 5, and the
  committed weights saw only the first 10,000 train images (``--limit 10000``): CPU time,
  on a 2-core machine shared by seven busy agents.
- ``bn-cnn``: Adam, learning rate 0.003 with a cosine schedule, batch size 256, 2 epochs,
  no augmentation, no normalization; then one more epoch at 0.0005 from those weights:
  ``train.py bn-cnn --resume --lr 0.0005 --epochs 1`` (the committed weights).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from trainlib import Recipe, main  # noqa: E402

RECIPES = {
    "cnn": Recipe(
        task="fashion-mnist",
        team="reference-fashion-mnist-cnn",
        optimizer="Adam",
        learning_rate=0.0005,
        batch_size=64,
        epochs=1,
        notes="the seed's MNIST recipe (write-up 003) on Fashion-MNIST, 1 epoch instead of 5",
    ),
    "bn-cnn": Recipe(
        task="fashion-mnist",
        team="reference-fashion-mnist-bn-cnn",
        optimizer="Adam",
        learning_rate=0.003,
        batch_size=256,
        epochs=2,
        scheduler="CosineAnnealingLR",
        notes="batch-normalized CNN; cosine schedule; the last epoch's weights",
    ),
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in RECIPES:
        sys.exit(f"usage: train.py {{{','.join(RECIPES)}}} [--epochs N] [--out DIR] ...")
    torch.set_num_threads(2)  # a shared machine: two threads, as measured
    name = sys.argv[1]
    sys.exit(main(RECIPES[name], HERE / name, sys.argv[2:]))
