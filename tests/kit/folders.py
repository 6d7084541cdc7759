"""Submission folders in the public layout (``shared/SUBMISSION_FORMAT.md``)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kit.model import TINY_MODEL, save_weights
from kit.toml import table, value


def write_manifest(
    folder: Path,
    *,
    task: str,
    team: str | None = None,
    members: Sequence[str] | None = ("Ada",),
    entrypoint: str = "model:build_model",
    weights: str = "weights.safetensors",
    extra: str = "",
    model: Mapping[str, Any] | None = None,
    training: str | Mapping[str, Any] | None = None,
) -> Path:
    """Write ``folder/submission.toml``. ``team`` defaults to the folder's name;
    ``members`` None leaves them out; ``extra`` is raw text after the top-level keys;
    ``model`` adds keys to ``[model]`` (e.g. ``normalize``); ``training`` is the
    ``[training]`` table (raw text or a mapping), left out when None."""
    team = folder.name if team is None else team
    text = f"task = {value(task)}\nteam = {value(team)}\n"
    if members is not None:
        text += f"members = {value(list(members))}\n"
    text += f"{extra}\n"
    text += table("model", {"entrypoint": entrypoint, "weights": weights, **(model or {})})
    if isinstance(training, str):
        text += f"[training]\n{training}\n"
    elif training is not None:
        text += table("training", training)
    path = folder / "submission.toml"
    path.write_text(text)
    return path


def make_submission(
    root: Path,
    team: str,
    *,
    task: str = "tiny",
    model_src: str = TINY_MODEL,
    weights: str = "weights.safetensors",
    manifest_extra: str = "",
    training: str = "",
    save: bool = True,
    seed: int = 0,
) -> Path:
    """``root/team`` with ``model.py`` (``model_src``), its seeded weights (unless
    ``save`` is False) and a manifest for ``task``."""
    folder = root / team
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(textwrap.dedent(model_src))
    if save:
        save_weights(model_src, folder, weights, seed=seed)
    write_manifest(
        folder, task=task, team=team, weights=weights, extra=manifest_extra, training=training
    )
    return folder
