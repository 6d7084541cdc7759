"""The naive baseline: what a course's grading script does, run once per submission.

Each call is a fresh process that imports torch, reads the hidden test set in the
assignment's own layout (``images/<id>.png`` and ``responses.csv``) with PIL through a
``torch.utils.data.DataLoader`` (default settings: no worker processes), builds the
submission's model, loads its weights and prints its MSE (or accuracy).

    python benchmarks/naive_grader.py --layout DIR --batch-size 250 SUBMISSION

Prints one JSON object.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_loop import load_model  # noqa: E402


class PngFolder(Dataset[tuple[torch.Tensor, float]]):
    """``images/<id>.png`` and ``responses.csv`` (id,corr), read image by image."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with (folder / "responses.csv").open(newline="") as handle:
            self.rows = [(row["id"], float(row["corr"])) for row in csv.DictReader(handle)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, float]:
        name, label = self.rows[i]
        with Image.open(self.folder / "images" / f"{name}.png") as img:
            pixels = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        return torch.from_numpy(pixels).unsqueeze(0), label


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("submission", type=Path)
    a = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, normalize = load_model(a.submission)
    model.to(device)
    mean = std = None
    if normalize:
        mean = torch.tensor(normalize["mean"], device=device).view(1, -1, 1, 1)
        std = torch.tensor(normalize["std"], device=device).view(1, -1, 1, 1)
    loader = DataLoader(PngFolder(a.layout), batch_size=a.batch_size, shuffle=False)
    outputs, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device)
            if mean is not None:
                x = (x - mean) / std
            outputs.append(model(x).float().reshape(len(x)).cpu())
            labels.append(y)
    predicted = torch.cat(outputs).numpy()
    truth = torch.cat(labels).numpy().astype(np.float32)
    result = {
        "wall_s": round(time.perf_counter() - T0, 4),
        "path": str(a.submission),
        "images": len(truth),
        "mse": float(np.mean((predicted - truth) ** 2)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
