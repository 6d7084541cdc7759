"""Train the cifar10-resnet reference (the seed's ResNet, write-up 004): seeded, CPU or GPU.

    python reference_solutions/cifar10-resnet/train.py                  # from <project>/data
    python reference_solutions/cifar10-resnet/train.py --data-root DIR  # DIR/cifar-10-batches-py/
    python reference_solutions/cifar10-resnet/train.py --fixture --out /tmp/smoke   # smoke run

Recipe (the seed's): Adam, learning rate 0.001, batch size 100, 50 epochs with cosine
annealing (T_max = epochs), random crops (padding 4) and horizontal flips, inputs
normalized with mean (0.4914, 0.4822, 0.4465) and std (0.2023, 0.1994, 0.2010). The
seed also used two random perspective transforms and early stopping; this script does
not. On CPU one epoch takes long: use a GPU (``--device cuda``, the default when present).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from trainlib import Recipe, main  # noqa: E402

RECIPE = Recipe(
    task="cifar10-resnet",
    optimizer="Adam",
    learning_rate=0.001,
    batch_size=100,
    epochs=50,
    scheduler="CosineAnnealingLR",
    augment=("crop4", "hflip"),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2023, 0.1994, 0.2010),
    notes="the seed's recipe without its random perspective transforms and early stopping",
)

if __name__ == "__main__":
    sys.exit(main(RECIPE, Path(__file__).resolve().parent))
