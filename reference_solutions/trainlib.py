"""The training loop the reference solutions share (not part of any submission).

Each ``reference_solutions/<task>/train.py`` states its recipe (optimizer, learning rate,
batch size, epochs, augmentation, normalization) and calls :func:`main`, which

1. reads the task's public ``train`` and ``validation`` splits with the harness's own
   provider (the same deterministic carve that ``grade check`` uses), from ``--data-root``
   or the default data root; ``--fixture`` writes a small generated set in the public
   layout instead (a smoke run: its weights are not a measurement of anything);
2. builds ``model.py``'s network with a fixed seed and trains it, on a GPU when one is
   present (``--device``), logging ``history.csv`` per epoch;
3. writes ``weights.safetensors``, ``history.csv`` and ``submission.toml`` into ``--out``
   (default: the reference's own folder; a ``--fixture`` run must name another one).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the harness package, when it is not installed
    sys.path.insert(0, str(REPO))

from harness.data import SplitSource, providers  # noqa: E402
from harness.errors import UserError  # noqa: E402
from harness.tasks import TaskSpec, load_task  # noqa: E402


@dataclass(frozen=True)
class Recipe:
    task: str
    optimizer: str  # "Adam" or "SGD"
    learning_rate: float
    batch_size: int
    epochs: int
    momentum: float = 0.0
    weight_decay: float = 0.0
    scheduler: str | None = None  # "CosineAnnealingLR" (T_max = epochs) or None
    augment: tuple[str, ...] = ()  # any of "crop4", "hflip", "grayscale"
    mean: tuple[float, ...] | None = None  # normalization the harness applies too
    std: tuple[float, ...] | None = None
    notes: str = ""
    team: str | None = None  # default: "reference-<task>"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train this reference solution.")
    p.add_argument("--data-root", type=Path, default=None, help="default: <project>/data")
    p.add_argument("--out", type=Path, default=None, help="default: this folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--fixture", action="store_true", help="smoke run on generated data")
    p.add_argument("--limit", type=int, default=None, help="use at most N training images")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the weights and history already in --out (a further stage)",
    )
    p.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    return p.parse_args(argv)


def main(recipe: Recipe, folder: Path, argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(recipe, folder, args)
    except UserError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    return 0


def run(recipe: Recipe, folder: Path, args: argparse.Namespace) -> Path:
    out = (args.out or folder).resolve()
    if args.fixture and out == folder.resolve():
        raise UserError(
            "--fixture writes smoke-run weights; give --out so they never land in the "
            "reference's own folder",
            "e.g. --fixture --out /tmp/ref-smoke",
        )
    task = load_task(recipe.task)
    epochs = args.epochs if args.epochs is not None else (1 if args.fixture else recipe.epochs)
    seed_everything(args.seed)
    with tempfile.TemporaryDirectory(prefix="ref-fixture-") as tmp:
        data_root = args.data_root
        if args.fixture:
            from harness.fixtures import write_for_task

            data_root = Path(tmp)
            write_for_task(task, data_root, seed=args.seed)
        train = split_arrays(task, "train", data_root, args.limit)
        val = split_arrays(task, task.splits.check, data_root, None)
    device = pick_device(args.device)
    model = build(folder, args.seed).to(device)
    before: list[dict[str, Any]] = []
    if args.resume:
        before = resume(model, out)
    if args.lr is not None:
        recipe = dataclasses.replace(recipe, learning_rate=args.lr)
    count = sum(p.numel() for p in model.parameters())
    print(
        f"{recipe.task}: {count:,} parameters; {len(train[0]):,} train / "
        f"{len(val[0]):,} validation images; {epochs} epochs on {device}"
    )
    history = fit(model, recipe, train, val, epochs, device, args.seed)
    for row in history:
        row["epoch"] += len(before)
    history = before + history
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(out, folder, model, history)
    info = {
        "train_size": len(train[0]),
        "val_size": len(val[0]),
        "epochs": len(history),
        "seed": args.seed,
        "device": str(device),
        "data": "generated fixture (smoke run)" if args.fixture else "the task's dataset",
    }
    (out / "submission.toml").write_text(manifest(recipe, info))
    print(f"wrote {out}/weights.safetensors, history.csv, submission.toml")
    return out


def resume(model: nn.Module, out: Path) -> list[dict[str, Any]]:
    """Load the weights of an earlier stage from ``out``; returns its history rows."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(out / "weights.safetensors")))
    with open(out / "history.csv", newline="") as fh:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    for row in rows:
        row["epoch"] = int(row["epoch"])
    print(f"resuming after {len(rows)} epochs from {out}/weights.safetensors")
    return rows


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def split_arrays(
    task: TaskSpec, split: str, data_root: Path | None, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """A public split as the harness carves it: (uint8 N x C x H x W, labels)."""
    seed = int(task.dataset.options.get("public_seed", 0))
    source = SplitSource(task=task, split=split, seed=seed, data_root=data_root)
    images, labels = providers.get(task.dataset.provider).prepare(source)
    return images[:limit], labels[:limit]


def build(folder: Path, seed: int) -> nn.Module:
    spec = importlib.util.spec_from_file_location(f"reference_{folder.name}", folder / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    model = module.build_model()
    assert isinstance(model, nn.Module)
    return model


def to_unit(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 images as the harness first converts them: float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).float().div_(255.0)


def augment(x: torch.Tensor, names: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    """Per-image random augmentations on a [0, 1] batch, before normalization."""
    n = x.shape[0]
    if "crop4" in names:  # RandomCrop(32, padding=4)
        padded = nn.functional.pad(x, (4, 4, 4, 4))
        offsets = torch.randint(0, 9, (n, 2), generator=gen).tolist()
        h, w = x.shape[2:]
        x = torch.stack([padded[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(offsets)])
    if "hflip" in names:  # RandomHorizontalFlip(p=0.5)
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)
    if "grayscale" in names:  # RandomGrayscale(p=0.1)
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1).expand_as(x)
        pick = (torch.rand(n, generator=gen) < 0.1).to(x.device).view(-1, 1, 1, 1)
        x = torch.where(pick, gray, x)
    return x


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = model.parameters()
    if recipe.optimizer == "SGD":
        return torch.optim.SGD(
            params,
            lr=recipe.learning_rate,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
        )
    return torch.optim.Adam(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)


def fit(
    model: nn.Module,
    recipe: Recipe,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    epochs: int,
    device: torch.device,
    seed: int,
) -> list[dict[str, float]]:
    gen = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, recipe)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
        if recipe.scheduler == "CosineAnnealingLR"
        else None
    )
    loss_fn = nn.CrossEntropyLoss()
    images, labels = train
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(images), generator=gen).numpy()
        total = correct = 0
        loss_sum = 0.0
        for start in range(0, len(order), recipe.batch_size):
            idx = np.sort(order[start : start + recipe.batch_size])
            x = augment(to_unit(images[idx], device), recipe.augment, gen)
            x = normalize(x, recipe)  # what the harness applies from the manifest
            y = torch.from_numpy(labels[idx]).to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            total += len(idx)
        if scheduler is not None:
            scheduler.step()
        val_loss, val_acc = evaluate(model, recipe, val, device)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / max(total, 1),
            "val_loss": val_loss,
            "train_acc": correct / max(total, 1),
            "val_acc": val_acc,
        }
        history.append(row)
        print(
            f"epoch {epoch:3d}  train_loss {row['train_loss']:.4f}  val_loss {val_loss:.4f}  "
            f"train_acc {row['train_acc']:.4f}  val_acc {val_acc:.4f}  "
            f"({time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
    return history


def normalize(x: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    if recipe.mean is None or recipe.std is None:
        return x
    mean = torch.tensor(recipe.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(recipe.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


@torch.inference_mode()
def evaluate(
    model: nn.Module, recipe: Recipe, data: tuple[np.ndarray, np.ndarray], device: torch.device
) -> tuple[float, float]:
    model.eval()
    images, labels = data
    loss_sum, correct = 0.0, 0
    for start in range(0, len(images), 500):
        x = normalize(to_unit(images[start : start + 500], device), recipe)
        y = torch.from_numpy(labels[start : start + 500]).to(device)
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = max(len(images), 1)
    return loss_sum / n, correct / n


def write_outputs(
    out: Path, folder: Path, model: nn.Module, history: list[dict[str, float]]
) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "weights.safetensors"))
    with open(out / "history.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]) if history else ["epoch"])
        writer.writeheader()
        for row in history:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )
    if out != folder.resolve():
        shutil.copyfile(folder / "model.py", out / "model.py")


def _toml(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers and booleans read the same in TOML


def manifest(recipe: Recipe, info: dict[str, Any]) -> str:
    """``submission.toml`` for what was run: the recipe plus sizes, seed and device."""
    lines = [
        f"task = {_toml(recipe.task)}",
        f"team = {_toml(recipe.team or 'reference-' + recipe.task)}",
        'members = ["harness reference solution"]',
        "",
        "[model]",
        'entrypoint = "model:build_model"',
        'weights = "weights.safetensors"',
    ]
    if recipe.mean is not None and recipe.std is not None:
        lines.append(f"normalize = {{ mean = {_toml(recipe.mean)}, std = {_toml(recipe.std)} }}")
    training: dict[str, Any] = {
        "optimizer": recipe.optimizer,
        "learning_rate": recipe.learning_rate,
        "batch_size": recipe.batch_size,
        "epochs": info["epochs"],
        "train_size": info["train_size"],
        "val_size": info["val_size"],
        "history": "history.csv",
    }
    if recipe.momentum:
        training["momentum"] = recipe.momentum
    if recipe.weight_decay:
        training["weight_decay"] = recipe.weight_decay
    if recipe.scheduler:
        training["scheduler"] = recipe.scheduler
    if recipe.augment:
        training["transforms"] = list(recipe.augment)
    extra = {k: info.get(k) for k in ("seed", "device", "data")}
    training.update({k: v for k, v in extra.items() if v is not None})
    if recipe.notes:
        training["notes"] = recipe.notes
    lines += ["", "[training]", *(f"{k} = {_toml(v)}" for k, v in training.items())]
    return "\n".join(lines) + "\n"
