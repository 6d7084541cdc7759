"""``grade data prepare``: build a task's cached splits once, optionally export them."""

from __future__ import annotations

from pathlib import Path

from .console import say, warn
from .data import prepare_split
from .errors import UserError
from .tasks import load_task


def prepare_task(
    task_id: str,
    *,
    splits: list[str],
    data_root: Path | None,
    download: bool,
    export_dir: Path | None,
    force: bool,
) -> None:
    task = load_task(task_id)
    names = splits or [*task.splits.public, task.splits.hidden]
    if download:
        from .data import providers

        provider = providers.get(task.dataset.provider)
        fetch = getattr(provider, "download", None)
        if fetch is None:
            raise UserError(f"task {task_id}'s data is generated or provided; nothing to download")
        fetch(task, data_root)
    for split in names:
        prepared = prepare_split(task, split, data_root=data_root, force=force)
        say(f"{task.id}/{split}: {prepared.count} images in {prepared.folder}")
        if prepared.public_fallback_seed:
            warn(
                "the hidden split uses the PUBLIC fallback seed (students can regenerate it); "
                "set HARNESS_SECRET_SEED or secret_seed in ~/.config/harness/config.toml"
            )
        if export_dir is not None and split in task.splits.public:
            _export(task.dataset.provider, prepared, export_dir / task.id / split)


def _export(provider_name: str, prepared: object, folder: Path) -> None:
    from .data import providers

    provider = providers.get(provider_name)
    writer = getattr(provider, "export", None)
    if writer is None:
        raise UserError(f"the {provider_name} provider cannot export its layout")
    writer(prepared, folder)
    say(f"  exported to {folder}")
