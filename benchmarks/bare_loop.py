"""The bare baseline: the least a grader can do. One process decodes the test set once
(the prepared uint8 array, read into memory), then for each submission builds the model,
loads its weights and runs it on every image in the task's batch size under inference
mode; no sandbox, no checks, no result documents.

    python benchmarks/bare_loop.py --inputs inputs.npy --labels labels.npy \\
        --batch-size 250 [--keep-freed-memory] [--threads N] [--channels-last] SUBMISSION...

Prints one JSON object: the wall time of the process's own work (from before ``import
torch`` to the last model), and each model's seconds, images per second and MSE (or
accuracy for classification labels).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tomllib  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

IMPORTED = time.perf_counter()


def load_model(folder: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build a submission's model from its manifest and load its weights strictly."""
    manifest = tomllib.loads((folder / "submission.toml").read_text())
    module_name, _, attr = manifest["model"]["entrypoint"].partition(":")
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.path.pop(0)
        sys.modules.pop(module_name, None)  # the next submission has its own model.py
    model = getattr(module, attr)()
    weights = folder / manifest["model"]["weights"]
    if weights.suffix == ".safetensors":
        state = load_file(str(weights))
    else:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval(), manifest["model"].get("normalize") or {}


def predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    normalize: dict[str, list[float]],
    channels_last: bool = False,
) -> np.ndarray:
    """Every image through the model, in order; the outputs as a float32 array."""
    mean = std = None
    if normalize:
        mean = torch.tensor(normalize["mean"], device=device).view(1, -1, 1, 1)
        std = torch.tensor(normalize["std"], device=device).view(1, -1, 1, 1)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device, non_blocking=True)
            x = x.to(torch.float32).div_(255.0)
            if mean is not None:
                x = (x - mean) / std
            if channels_last:  # PyTorch's recipe (with one channel, the batch as it is)
                x = x.contiguous(memory_format=torch.channels_last)
            outputs.append(model(x).float())
        result = torch.cat(outputs).cpu().numpy()
    return result


def score(labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    if labels.dtype.kind == "f":
        return {"mse": float(np.mean((outputs.reshape(len(labels)) - labels) ** 2))}
    return {"accuracy": float(np.mean(outputs.argmax(axis=1) == labels))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=Path, required=True, help="uint8 N x C x H x W .npy")
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="keep freed memory in the C heap for the next batch, as the harness's "
        "predicting runs do (harness/runner/heap.py)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch's intra-op threads (default: torch's own choice, one per core); with 1, "
        "the loop's time against the default's is how well one model uses every core",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="each model and batch in channels-last memory format, the layout phase B "
        "gives 2-D convolutions on a CPU (harness/runner/interpreter.py): the same kernels",
    )
    parser.add_argument("submissions", type=Path, nargs="+")
    a = parser.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.keep_freed_memory:
        from harness.runner.heap import keep_freed_memory

        keep_freed_memory()
    gpu = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if gpu else "cpu")

    t = time.perf_counter()
    images = torch.from_numpy(np.load(a.inputs, allow_pickle=False))  # decoded once
    if gpu:
        images = images.pin_memory()
    labels = np.load(a.labels, allow_pickle=False)
    decode = time.perf_counter() - t

    models = []
    for folder in a.submissions:
        t = time.perf_counter()
        model, normalize = load_model(folder)
        model.to(device)
        if a.channels_last:
            model.to(memory_format=torch.channels_last)
        built = time.perf_counter()
        outputs = predict(model, images, a.batch_size, device, normalize, a.channels_last)
        if gpu:
            torch.cuda.synchronize()
        done = time.perf_counter()
        models.append(
            {
                "path": str(folder),
                "load_s": round(built - t, 4),
                "predict_s": round(done - built, 4),
                "images_per_s": round(len(images) / (done - built), 1),
                **score(labels, outputs),
            }
        )
    result = {
        "wall_s": round(time.perf_counter() - T0, 4),
        "import_s": round(IMPORTED - T0, 4),
        "decode_s": round(decode, 4),
        "device": str(device),
        "images": len(images),
        "threads": torch.get_num_threads(),
        "keep_freed_memory": a.keep_freed_memory,
        "models": models,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
