"""Job folders for one sandbox run: the declared files, the job, an empty output folder."""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .runner.contract import JOB_FILE, JobSpec, from_dict, to_json
from .safefs import NotPlain, discard


def sandbox_temp(prefix: str) -> Path:
    """A new folder in the system's temporary folder, for sandboxes to read below.

    Open to every user (0755) only when the host runs as root: its sandboxes run as other
    users (docker's uid 1000, bwrap's nobody), which must reach the files. Anyone else's
    sandboxes run as the caller (bwrap maps it, docker is given its uid, a rootless
    engine's root is it), so the folder stays the caller's alone (0700), and other users
    of the machine never see a submission's files, outputs or the hidden inputs."""
    root = Path(tempfile.mkdtemp(prefix=prefix))  # 0700
    if os.geteuid() == 0:
        os.chmod(root, 0o755)
    return root


def process_temp(prefix: str) -> Path:
    """An ``owned_temp`` folder kept until this process exits."""
    folder = owned_temp(prefix)
    atexit.register(discard, folder)
    return folder


def owned_temp(prefix: str) -> Path:
    """A ``sandbox_temp`` folder named ``prefix``, then this process's pid. A process
    killed before it removed its folders (a grading stopped with SIGTERM or SIGKILL, a Ray
    worker stopped hard) leaves them; the first folder of a prefix that a later process
    makes removes them, and never a live process's."""
    if prefix not in _swept:
        _swept.add(prefix)
        _sweep_dead(prefix)
    return sandbox_temp(f"{prefix}{os.getpid()}-")


_swept: set[str] = set()


def _sweep_dead(prefix: str) -> None:
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = folder.name.removeprefix(prefix).partition("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            discard(folder)  # what its sandboxes left in it too (``safefs.remove_tree``)
        except PermissionError:
            pass  # alive, another user's


@dataclass(frozen=True)
class Workspace:
    """A private temporary folder for one submission's runs, removed by ``close``."""

    root: Path

    @classmethod
    def create(cls) -> Workspace:
        return cls(owned_temp("harness-ws-"))

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
            _copy_plain(src, dest)
            os.chmod(dest, 0o444)
        for folder in sorted({p.parent for p in target.rglob("*")} | {target}):
            os.chmod(folder, 0o555)
        return target

    def job(
        self,
        name: str,
        spec: JobSpec | Mapping[str, object],
        files: dict[str, Path] | None = None,
    ) -> Path:
        """A read-only job folder holding ``job.json`` and ``files`` (name -> host path),
        such as the checked program and canary inputs phase B reads from ``/job``. A plain
        mapping is checked against the contract (``runner/contract.py``) first."""
        text = to_json(from_dict(dict(spec)) if isinstance(spec, Mapping) else spec)
        folder = self.root / name
        folder.mkdir()
        (folder / JOB_FILE).write_text(text)
        os.chmod(folder / JOB_FILE, 0o444)
        for rel, source in (files or {}).items():
            target = folder / rel
            try:
                os.link(source, target)  # same inode: leave its mode alone
            except OSError:
                shutil.copyfile(source, target)
                os.chmod(target, 0o444)
        os.chmod(folder, 0o555)
        return folder

    def output(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir(mode=0o700)  # handed to the sandbox's user when it is another one
        return folder

    def close(self) -> None:
        """Remove the workspace, whatever a sandbox left in it: links are removed, never
        followed; any depth (``safefs.remove_tree``)."""
        discard(self.root)


def _copy_plain(src: Path, dest: Path) -> None:
    """Copy a regular file, refusing a link as the source (an output a sandbox wrote may be
    handed to the next run: it must never bring a host file with it)."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotPlain(f"{src.name} is not a regular file")
        os.set_blocking(fd, True)
        with open(dest, "xb") as out:
            shutil.copyfileobj(fh, out, 2**20)
