"""Train the cifar10 reference (the lab's 6-conv CNN, write-ups 001/002): seeded, CPU or GPU.

    python reference_solutions/cifar10/train.py                  # CIFAR-10 from <project>/data
    python reference_solutions/cifar10/train.py --data-root DIR  # DIR/cifar-10-batches-py/
    python reference_solutions/cifar10/train.py --fixture --out /tmp/smoke   # smoke run

Recipe (the seed's best configuration): SGD with momentum 0.9, learning rate 0.01, batch
size 64, 20 epochs, random horizontal flips and random grayscale; inputs normalized with
mean 0.5 and std 0.5 per channel. The seed kept the weights with the best validation
score; this script keeps the last epoch's. Writes weights.safetensors, history.csv and
submission.toml.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from trainlib import Recipe, main  # noqa: E402

RECIPE = Recipe(
    task="cifar10",
    optimizer="SGD",
    learning_rate=0.01,
    momentum=0.9,
    batch_size=64,
    epochs=20,
    augment=("hflip", "grayscale"),
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    notes="the seed lab's best configuration; the last epoch's weights",
)

if __name__ == "__main__":
    sys.exit(main(RECIPE, Path(__file__).resolve().parent))
