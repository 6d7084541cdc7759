"""The ``correlation`` provider: "guess the correlation" scatter plots and their Pearson r.

Each image is a 150 x 150 grayscale scatter plot, dark dots on white, of 20 to 400
points; its label is the Pearson r of the plotted points in pixel coordinates (x to the
right, y up) after rounding to whole pixels, so the label can in principle be read back
from the picture. Generation is vectorized and deterministic: image ``i`` of a split
depends only on (seed, split name, i), whatever range is asked for.

The assignment's own layout is a folder with ``images/<id>.png`` and ``responses.csv``
(columns ``id,corr``). ``write_layout`` and ``read_layout`` speak it; with a data root,
``DATA_ROOT/correlation/<split>/`` replaces the generated split of that name.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from . import SplitSource

SIZE = 150
POINTS = (20, 400)  # inclusive range of points per plot
SPREAD_PX = (10.0, 28.0)  # standard deviation of each axis, in pixels
CENTER_PX = (65.0, 85.0)
RADII = (1.0, 1.5, 2.0)  # dot radius, pixels
INK = (0, 90)  # dot gray level range (inclusive); the background is 255
UNIFORM_X = 0.25  # share of plots whose x values are uniform rather than normal
CHUNK = 500  # images drawn per random stream
GENERATOR_VERSION = 1  # bump when the drawing changes: it is part of the cache key
LAYOUT_FOLDER = "correlation"  # DATA_ROOT/<this>/<split>/responses.csv


@dataclass(frozen=True)
class Plots:
    """One chunk of plots before drawing: points per plot and rounded pixel coordinates."""

    counts: np.ndarray  # (m,) points in each plot
    cols: np.ndarray  # (m, POINTS[1]) int, column of each point (only the first counts[i] count)
    rows: np.ndarray  # (m, POINTS[1]) int, row of each point (0 is the top)
    radius: np.ndarray  # (m,) dot radius
    ink: np.ndarray  # (m,) dot gray level

    @property
    def mask(self) -> np.ndarray:
        return np.arange(self.cols.shape[1])[None, :] < self.counts[:, None]


_FIELDS = ("counts", "cols", "rows", "radius", "ink")


def _rng(seed: int, split: str, chunk: int) -> np.random.Generator:
    digest = hashlib.sha256(f"correlation/v{GENERATOR_VERSION}/{seed}/{split}/{chunk}".encode())
    return np.random.default_rng(int.from_bytes(digest.digest()[:16], "little"))


def _sample_plots(rng: np.random.Generator, m: int) -> Plots:
    top = POINTS[1]
    counts = rng.integers(POINTS[0], top + 1, m)
    rho = rng.uniform(-1.0, 1.0, m)[:, None]
    x = rng.standard_normal((m, top))
    uniform = rng.random(m) < UNIFORM_X
    x[uniform] = (rng.random((int(uniform.sum()), top)) - 0.5) * math.sqrt(12.0)
    y = rho * x + np.sqrt(1.0 - rho**2) * rng.standard_normal((m, top))
    sx, sy = rng.uniform(*SPREAD_PX, (2, m, 1))
    cx, cy = rng.uniform(*CENTER_PX, (2, m, 1))
    radius = np.asarray(RADII)[rng.integers(0, len(RADII), m)]
    ink = rng.integers(INK[0], INK[1] + 1, m).astype(np.uint8)
    lo, hi = 2, SIZE - 3  # the largest dot stays inside the picture
    cols = np.clip(np.rint(cx + sx * x), lo, hi).astype(np.int64)
    rows = np.clip(np.rint(cy - sy * y), lo, hi).astype(np.int64)
    return Plots(counts=counts, cols=cols, rows=rows, radius=radius, ink=ink)


def pearson_of_points(plots: Plots) -> np.ndarray:
    """Pearson r of each plot's points, x = column and y = (SIZE - 1 - row), as float32."""
    mask = plots.mask
    n = plots.counts.astype(np.float64)
    x = np.where(mask, plots.cols, 0).astype(np.float64)
    y = np.where(mask, SIZE - 1 - plots.rows, 0).astype(np.float64)
    mx = x.sum(1) / n
    my = y.sum(1) / n
    dx = np.where(mask, x - mx[:, None], 0.0)
    dy = np.where(mask, y - my[:, None], 0.0)
    sxy, sxx, syy = (dx * dy).sum(1), (dx * dx).sum(1), (dy * dy).sum(1)
    denom = np.sqrt(sxx * syy)
    safe = np.where(denom > 0, denom, 1.0)
    r = np.where(denom > 0, sxy / safe, 0.0)
    return np.clip(r, -1.0, 1.0).astype(np.float32)


def _stencil() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    reach = int(max(RADII))
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    d2 = (dy**2 + dx**2).ravel()
    keep = d2 <= max(RADII) ** 2
    return dy.ravel()[keep], dx.ravel()[keep], d2[keep]


def draw(plots: Plots) -> np.ndarray:
    """Draw the plots as uint8 images, shape (m, 1, SIZE, SIZE): discs of ink on white."""
    m, top = plots.cols.shape
    canvas = np.full(m * SIZE * SIZE, 255, dtype=np.uint8)
    dy, dx, d2 = _stencil()
    flat = (
        np.arange(m)[:, None, None] * (SIZE * SIZE)
        + (plots.rows[:, :, None] + dy) * SIZE
        + (plots.cols[:, :, None] + dx)
    )
    keep = plots.mask[:, :, None] & (d2[None, None, :] <= (plots.radius**2)[:, None, None])
    ink = np.broadcast_to(plots.ink[:, None, None], flat.shape)
    canvas[flat[keep]] = ink[keep]
    return canvas.reshape(m, 1, SIZE, SIZE)


def generate_plots(seed: int, split: str, start: int, stop: int) -> Plots:
    """The plots ``start..stop-1`` of a split, before drawing (points, dot size, ink)."""
    if not 0 <= start <= stop:
        raise ValueError(f"bad range {start}..{stop}")
    parts: list[Plots] = []
    for chunk in range(start // CHUNK, -(-stop // CHUNK)):
        plots = _sample_plots(_rng(seed, split, chunk), CHUNK)
        lo = max(start - chunk * CHUNK, 0)
        hi = min(stop - chunk * CHUNK, CHUNK)
        parts.append(Plots(*(getattr(plots, f)[lo:hi] for f in _FIELDS)))
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return _sample_plots(_rng(seed, split, 0), 0)
    return Plots(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


def generate(seed: int, split: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``start..stop-1`` of a split: (uint8 N x 1 x 150 x 150, float32 Pearson r)."""
    images = np.empty((stop - start, 1, SIZE, SIZE), dtype=np.uint8)
    labels = np.empty(stop - start, dtype=np.float32)
    # draw chunk by chunk, aligned to the random streams, so the index arrays stay small
    edges = [start, *range((start // CHUNK + 1) * CHUNK, stop, CHUNK), stop]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        plots = generate_plots(seed, split, lo, hi)
        images[lo - start : hi - start] = draw(plots)
        labels[lo - start : hi - start] = pearson_of_points(plots)
    return images, labels


# --- the assignment's layout: images/<id>.png + responses.csv (id,corr) -------------------

_HINT = "the layout is images/<id>.png plus responses.csv with the columns id,corr"


def write_layout(
    folder: Path, images: np.ndarray, labels: np.ndarray, ids: list[str] | None = None
) -> None:
    """Write images (N x 1 x H x W or N x H x W, uint8) and labels in the assignment's layout."""
    pictures = images.reshape(len(images), *images.shape[-2:])
    ids = ids if ids is not None else [f"{i:06d}" for i in range(len(images))]
    if len(ids) != len(pictures) or len(labels) != len(pictures):
        raise ValueError("images, labels and ids must have the same length")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name, picture in zip(ids, pictures, strict=True):
        Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8), mode="L").save(
            folder / "images" / f"{name}.png", compress_level=1
        )
    with (folder / "responses.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "corr"])
        writer.writerows([name, f"{float(r):.9g}"] for name, r in zip(ids, labels, strict=True))


def _read_responses(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
            header = rows[0].keys() if rows else []
    except FileNotFoundError:
        raise UserError(f"{path}: file not found", _HINT) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read it as CSV ({exc})", _HINT) from None
    missing = [c for c in ("id", "corr") if c not in header]
    if not rows or missing:
        what = "has no rows" if not rows else f"lacks the column {missing[0]!r}"
        raise UserError(f"{path}: {what}", _HINT)
    ids, values = [], []
    for line, row in enumerate(rows, start=2):
        name = (row["id"] or "").strip()
        try:
            value = float(row["corr"] or "")
        except ValueError:
            value = math.nan
        if not name or not -1.0 - 1e-6 <= value <= 1.0 + 1e-6:
            raise UserError(
                f"{path}, line {line}: expected an id and a correlation in [-1, 1], "
                f"got {row['id']!r}, {row['corr']!r}",
                _HINT,
            )
        ids.append(name)
        values.append(value)
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{path}: the id {dup!r} appears more than once", "ids must be unique")
    return ids, np.clip(np.asarray(values, dtype=np.float32), -1.0, 1.0)


def _read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("RGBA", "LA") or (mode == "P" and "transparency" in img.info):
                white = Image.new("RGBA", img.size, (255, 255, 255, 255))
                gray = Image.alpha_composite(white, img.convert("RGBA")).convert("L")
            elif mode in ("L", "RGB", "P", "1"):
                gray = img.convert("L")
            else:
                raise UserError(
                    f"{path}: image mode {mode!r} is not supported",
                    "save the plots as 8-bit grayscale, RGB or RGBA PNGs",
                )
    except FileNotFoundError:
        raise UserError(f"{path}: image not found (listed in responses.csv)", _HINT) from None
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})", _HINT) from None
    if gray.size != size:
        raise UserError(
            f"{path}: image is {gray.size[0]}x{gray.size[1]}, expected {size[0]}x{size[1]}",
            "every plot must have the task's input size",
        )
    return np.asarray(gray, dtype=np.uint8)


def read_layout(
    folder: Path, size: tuple[int, int] = (SIZE, SIZE)
) -> tuple[np.ndarray, np.ndarray]:
    """Read a layout folder: (uint8 N x 1 x H x W grayscale images, float32 labels), csv order."""
    ids, labels = _read_responses(folder / "responses.csv")
    images = np.empty((len(ids), 1, size[1], size[0]), dtype=np.uint8)
    for i, name in enumerate(ids):
        images[i, 0] = _read_image(folder / "images" / f"{name}.png", size)
    return images, labels


# --- the provider ------------------------------------------------------------------------


def layout_folder(source: SplitSource) -> Path | None:
    """The instructor's folder for this split, if a data root is given and holds one."""
    if source.data_root is None:
        return None
    folder = source.data_root / LAYOUT_FOLDER / source.split
    if (folder / "responses.csv").is_file():
        return folder
    if source.split == source.task.splits.hidden:
        raise UserError(
            f"{folder / 'responses.csv'}: not found, so the hidden split cannot be read",
            f"put the test images under {folder}/images/ with {folder}/responses.csv, "
            "or leave out --data-root to generate the split from the secret seed",
        )
    return None


def split_size(source: SplitSource) -> int:
    key = f"{source.split}_size"
    value = source.task.dataset.options.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(
            f"task {source.task.id}: field `dataset.options.{key}` must be a positive integer, "
            f"got {value!r}",
            "give every split's size in the task's [dataset.options]",
        )
    return value


class CorrelationProvider:
    """Generated scatter plots, or an instructor's folder in the assignment's layout."""

    def fingerprint(self, source: SplitSource) -> dict[str, object]:
        info: dict[str, object] = {
            "generator": GENERATOR_VERSION,
            "options": dict(source.task.dataset.options),
            "size": SIZE,
        }
        folder = layout_folder(source)
        if folder is not None:
            stat = (folder / "responses.csv").stat()
            images = folder / "images"
            info["layout"] = {
                "folder": str(folder.resolve()),
                "responses": [stat.st_size, stat.st_mtime_ns],
                "images_mtime": images.stat().st_mtime_ns if images.is_dir() else None,
            }
        return info

    def fixed_split(self, source: SplitSource) -> str | None:
        """An instructor's folder replaces the generated split: then it is fixed."""
        folder = layout_folder(source)
        return f"the folder {folder}" if folder is not None else None

    def export_layout(self, images: np.ndarray, labels: np.ndarray, folder: Path) -> None:
        """The assignment's own layout: images/<id>.png and responses.csv (id,corr)."""
        write_layout(folder, images, labels)

    def prepare(self, source: SplitSource) -> tuple[np.ndarray, np.ndarray]:
        shape = source.task.input_shape
        folder = layout_folder(source)
        if folder is not None:
            return read_layout(folder, size=(shape[2], shape[1]))
        if tuple(shape) != (1, SIZE, SIZE):
            raise UserError(
                f"task {source.task.id}: the correlation generator draws 1x{SIZE}x{SIZE} "
                f"images, the task's input_shape is {list(shape)}",
                f"set input_shape = [1, {SIZE}, {SIZE}]",
            )
        return generate(source.seed, source.split, 0, split_size(source))


PROVIDER = CorrelationProvider()  # registered by name in harness/providers.py
