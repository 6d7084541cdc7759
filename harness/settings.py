"""Every setting the harness reads from its environment, read here and nowhere else."""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import UserError

PUBLIC_FALLBACK_SEED = 424242


@dataclass(frozen=True)
class Settings:
    home: Path  # the project folder holding tasks/ and reference_solutions/
    tasks_dir: Path
    cache_dir: Path  # prepared arrays, one folder per task and split
    secret_seed: int | None  # None: use the public fallback (and warn)
    secret_source: str

    def hidden_seed(self) -> tuple[int, bool]:
        """The seed of generated hidden splits, and whether it is the public fallback."""
        if self.secret_seed is None:
            return PUBLIC_FALLBACK_SEED, True
        return self.secret_seed, False


def _find_home() -> Path:
    env = os.environ.get("HARNESS_HOME")
    if env:
        return Path(env).resolve()
    cwd = Path.cwd()
    for folder in (cwd, *cwd.parents):
        if (folder / "tasks").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return Path(__file__).resolve().parent.parent


def seed_of(secret: object) -> int:
    """The seed a course secret stands for: an integer (or a string of one) is itself, as
    it always was, so existing hidden splits stay the same; any other string is hashed
    (SHA-256, first 8 bytes), so ``HARNESS_SECRET_SEED=course-secret-2026`` works."""
    text = str(secret).strip()
    try:
        return int(text)
    except ValueError:
        return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _secret() -> tuple[int | None, str]:
    env = os.environ.get("HARNESS_SECRET_SEED")
    if env:
        return seed_of(env), "HARNESS_SECRET_SEED"
    config = Path(
        os.environ.get("HARNESS_CONFIG", Path.home() / ".config" / "harness" / "config.toml")
    )
    if config.is_file():
        data = tomllib.loads(config.read_text())
        if "secret_seed" in data:
            return seed_of(data["secret_seed"]), str(config)
    return None, "public fallback"


def usable_cpus() -> int:
    """The cores gradings may use: ``HARNESS_CPUS`` when set (a machine shared with other
    work), else the CPUs this process may run on (its affinity, which ``taskset``, a
    container's or a batch system's cpuset narrow and ``os.cpu_count()`` ignores)."""
    env = os.environ.get("HARNESS_CPUS", "").strip()
    if env:
        try:
            cores = int(env)
        except ValueError:
            cores = 0
        if cores < 1:
            raise UserError(
                f"HARNESS_CPUS={env!r}: expected a whole number of cores, at least 1",
                "unset it to use every core this process may run on",
            )
        return cores
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity on this platform (macOS)
        return os.cpu_count() or 1


@cache
def settings() -> Settings:
    home = _find_home()
    seed, source = _secret()
    cache_dir = Path(os.environ.get("HARNESS_CACHE", home / ".cache" / "data"))
    return Settings(
        home=home,
        tasks_dir=Path(os.environ.get("HARNESS_TASKS", home / "tasks")),
        cache_dir=cache_dir,
        secret_seed=seed,
        secret_source=source,
    )
