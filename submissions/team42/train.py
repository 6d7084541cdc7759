"""team42's training script for the correlation task.

    python submissions/team42/train.py [--epochs 6] [--train-size 20000] [--seed 42]

Generates the public train and validation plots with the course's generator (the
harness's correlation provider, public seed from tasks/correlation/task.toml), trains
CorrNet with Adam and MSE loss, and writes weights.safetensors and history.csv here.
"""

import argparse
import csv
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from model import build_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from harness.data.correlation import generate  # noqa: E402


def to_tensor(images):
    return torch.from_numpy(images).float() / 255.0  # the harness feeds uint8 / 255 too


def val_mse(model, x_val, y_val):
    model.eval()
    errors = []
    with torch.inference_mode():
        for i in range(0, len(x_val), 500):
            pred = model(to_tensor(x_val[i : i + 500]))
            errors.append((pred - torch.from_numpy(y_val[i : i + 500])) ** 2)
    return torch.cat(errors).mean().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    options = tomllib.loads((ROOT / "tasks/correlation/task.toml").read_text())["dataset"]
    public_seed = options["options"]["public_seed"]
    x_train, y_train = generate(public_seed, "train", 0, args.train_size)
    x_val, y_val = generate(public_seed, "validation", 0, args.val_size)

    model = build_model()
    print("parameters:", sum(p.numel() for p in model.parameters()))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.MSELoss()
    rng = np.random.default_rng(args.seed)
    print("val MSE before training:", round(val_mse(model, x_val, y_val), 6))

    rows = []
    for epoch in range(1, args.epochs + 1):
        start = time.time()
        model.train()
        order = rng.permutation(len(x_train))
        running = 0.0
        for i in range(0, len(order), args.batch_size):
            idx = np.sort(order[i : i + args.batch_size])
            x, y = to_tensor(x_train[idx]), torch.from_numpy(y_train[idx])
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(idx)
        train_loss = running / len(order)
        val_loss = val_mse(model, x_val, y_val)
        rows.append([epoch, f"{train_loss:.8f}", f"{val_loss:.8f}"])
        print(
            f"epoch {epoch}: train {train_loss:.6f} val {val_loss:.6f} ({time.time() - start:.0f}s)"
        )

    save_file(model.state_dict(), str(HERE / "weights.safetensors"))
    (HERE / "weights.safetensors").chmod(0o644)
    with open(HERE / "history.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "train_loss", "val_loss"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()
