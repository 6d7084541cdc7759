"""Job folders for one sandbox run: the declared files, the job, an empty output folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Workspace:
    """A private temporary folder for one submission's runs, removed by ``close``."""

    root: Path

    @classmethod
    def create(cls) -> Workspace:
        root = Path(tempfile.mkdtemp(prefix="harness-ws-"))
        os.chmod(root, 0o755)
        return cls(root)

    def stage(
        self, name: str, source: Path, files: list[str], extra: dict[str, Path] | None = None
    ) -> Path:
        """Copy ``files`` (relative to ``source``), and ``extra`` (name -> path), into a
        fresh read-only folder."""
        target = self.root / name
        target.mkdir()
        pairs = [(rel, source / rel) for rel in files] + list((extra or {}).items())
        for rel, src in pairs:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            os.chmod(dest, 0o444)
        for folder in sorted({p.parent for p in target.rglob("*")} | {target}):
            os.chmod(folder, 0o555)
        return target

    def job(self, name: str, spec: dict[str, Any]) -> Path:
        folder = self.root / name
        folder.mkdir()
        (folder / "job.json").write_text(json.dumps(spec))
        os.chmod(folder / "job.json", 0o444)
        os.chmod(folder, 0o555)
        return folder

    def output(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir()
        os.chmod(folder, 0o777)  # writable by a sandbox's unprivileged user
        return folder

    def close(self) -> None:
        for dirpath, dirnames, _ in os.walk(self.root):
            for d in dirnames:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(dirpath, d), 0o755)
        os.chmod(self.root, 0o755)
        shutil.rmtree(self.root, ignore_errors=True)
