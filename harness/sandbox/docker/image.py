"""The evaluation image: what the docker sandbox runs the runner in.

Two ways to build the same image (python3 with the contract's torch and torchvision,
numpy and safetensors, a non-root user ``grader`` with uid 1000, nothing else of the
harness: the runner's code is mounted at run time). Both install exactly
``runner.contract.TORCH``, the host's pin: PyPI's build, which carries its CUDA
libraries, so the same image runs on a GPU where docker has one.

- online, from ``eval-image/Dockerfile`` (next to this module) with the base image as a
  build argument (any Debian/Ubuntu image with Python 3.11; torch is installed on it);
- offline, where no registry is reachable (CI, air-gapped graders): a ``debootstrap``ped
  Debian bookworm ``minbase`` root filesystem with Debian's python3, the wheels resolved
  through the local pip configuration (``pip config list``) installed into it, the user
  added, and the whole tree handed to ``docker import``. The Debian tree and the installed
  wheels are cached, so a rebuild takes as long as the import.

``build_image`` is what ``grade image build`` calls.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ... import __version__
from ...errors import UserError
from ...runner.contract import TORCH, TORCHVISION
from . import engine

REPOSITORY = "harness-eval"
# inside the package, so installed harnesses have it; not a folder named ``docker``, which
# would shadow the Docker SDK for tools that resolve imports from the repository root
DOCKERFILE_DIR = Path(__file__).resolve().parent / "eval-image"
DEFAULT_BASE = "python:3.11-slim-bookworm"
SUITE = "bookworm"  # its python3 is 3.11: the cp311 wheels fit
MIRROR = "http://deb.debian.org/debian"
# the host's own torch (one release everywhere), with torchvision: students' models import it
OFFLINE_REQUIREMENTS = (f"torch=={TORCH}", f"torchvision=={TORCHVISION}", "numpy", "safetensors")
# every manylinux tag bookworm's glibc (2.36) runs: torch's CUDA libraries use several
PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
    "manylinux2014_x86_64",
)
GRADER_UID = 1000
TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man")
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"
IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/tmp",
}


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str
    size_bytes: int
    seconds: float
    method: str  # "offline" or "dockerfile"
    base: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def default_tag() -> str:
    """``harness-eval:<harness version>-torch<pin>``: what the docker backend runs by default,
    however it was built."""
    return f"{REPOSITORY}:{__version__}-torch{TORCH}"


def build_image(
    *,
    base: str | None = None,
    offline: bool | None = None,
    tag: str | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BuiltImage:
    """Build the evaluation image and tag it.

    ``offline=None`` builds from the Dockerfile when the registry that holds ``base``
    answers and offline otherwise. ``tag`` defaults to ``default_tag()``. Offline, the Debian
    tree and the wheels are cached under ``cache_dir``, and an image built from the same
    parts is kept unless ``force``.
    Raises ``UserError`` when the Docker engine, debootstrap or the wheels are missing.
    """
    say = progress or (lambda _msg: None)
    client = engine.client_or_error()
    base = base or DEFAULT_BASE
    if offline is None:
        offline = not engine.registry_reachable(client, base)
        say("no registry reachable: building offline" if offline else f"building on {base}")
    t0 = time.perf_counter()
    if offline:
        tag = tag or default_tag()
        image_id = _build_offline(client, tag, cache_dir or _default_cache(), say, force)
        base = f"debian:{SUITE} (debootstrap, {MIRROR}) + local wheels"
    else:
        tag = tag or default_tag()
        image_id = engine.build_dockerfile(client, DOCKERFILE_DIR, base=base, tag=tag)
    info = engine.image_info(client, tag)
    return BuiltImage(
        tag=tag,
        image_id=image_id,
        size_bytes=int(info["size"]),
        seconds=round(time.perf_counter() - t0, 1),
        method="offline" if offline else "dockerfile",
        base=base,
    )


def _default_cache() -> Path:
    from ...settings import settings

    return settings().cache_dir.parent / "images"


def _build_offline(
    client: Any, tag: str, cache: Path, say: Callable[[str], None], force: bool
) -> str:
    if os.geteuid() != 0:
        raise UserError(
            "the offline image build needs root: debootstrap and the root filesystem's "
            "file owners require it",
            "run `sudo grade image build --offline`, or build from the Dockerfile",
        )
    cache.mkdir(parents=True, exist_ok=True)
    rootfs = debian_rootfs(cache, say)
    site = installed_wheels(cache, say)
    changes = _changes()
    key = _build_key(rootfs, site, changes)
    existing = engine.image_info(client, tag, missing_ok=True)
    if existing and existing["labels"].get("harness.build-key") == key and not force:
        say(f"{tag} is up to date")
        return str(existing["id"])
    with tempfile.TemporaryDirectory(prefix="harness-image-", dir=cache) as work:
        tree = Path(work) / "rootfs"
        tree.mkdir()
        say("assembling the root filesystem")
        _run(["tar", "--numeric-owner", "-xpf", str(rootfs), "-C", str(tree)])
        target = tree / SITE_PACKAGES
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(site, target, symlinks=True, dirs_exist_ok=True)
        _add_user(tree)
        archive = Path(work) / "image.tar"
        _run(["tar", "--numeric-owner", "-cf", str(archive), "-C", str(tree), "."])
        say(f"importing as {tag}")
        changes.append(f"LABEL harness.build-key={key}")
        return engine.import_rootfs(client, archive, tag=tag, changes=changes)


def _changes() -> list[str]:
    """The image settings ``docker import`` applies (the Dockerfile's USER, ENV, ...)."""
    return [
        f"USER {GRADER_UID}:{GRADER_UID}",
        "WORKDIR /tmp",
        *(f"ENV {k}={v}" for k, v in IMAGE_ENV.items()),
        f"LABEL org.opencontainers.image.title={REPOSITORY}",
        f"LABEL harness.version={__version__}",
        "LABEL harness.requirements=" + ",".join(OFFLINE_REQUIREMENTS),
        'CMD ["python3"]',
    ]


def _build_key(rootfs: Path, site: Path, changes: list[str]) -> str:
    """What the offline image is made of: when it is unchanged, the import is skipped."""
    st = rootfs.stat()
    parts = [rootfs.name, str(st.st_size), str(st.st_mtime_ns), site.name, *changes]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def debian_rootfs(cache: Path, say: Callable[[str], None]) -> Path:
    """A cached tarball of ``debootstrap --variant=minbase --include=python3 bookworm``."""
    tarball = cache / f"debian-{SUITE}-minbase-python3.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("debootstrap") is None:
        raise UserError(
            "the offline image build needs debootstrap, which is not installed",
            "apt-get install debootstrap",
        )
    with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=cache) as work:
        tree = Path(work) / "rootfs"
        say(f"debootstrap {SUITE} from {MIRROR} (once; cached in {cache})")
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3",
                SUITE,
                str(tree),
                MIRROR,
            ]
        )
        for junk in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
        ):
            shutil.rmtree(tree / junk, ignore_errors=True)
        partial = tarball.with_suffix(".tar.partial")
        _run(["tar", "--numeric-owner", "-cf", str(partial), "-C", str(tree), "."])
        os.replace(partial, tarball)
    return tarball


def installed_wheels(cache: Path, say: Callable[[str], None]) -> Path:
    """The requirements installed (``pip install --target``) for cp311 manylinux, resolved
    through this machine's pip configuration; cached by the requirement list."""
    parts = (*OFFLINE_REQUIREMENTS, *PLATFORMS, "compiled")
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    site = cache / f"site-packages-{key[:12]}"
    if site.is_dir():
        return site
    say("installing " + ", ".join(OFFLINE_REQUIREMENTS) + " with the local pip configuration")
    partial = site.with_name(site.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    # compiled here (Python 3.11 bytecode fits Debian's 3.11): the image's root is read-only,
    # so without .pyc files every run would compile torch's sources again (~1 s)
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--compile"]
    argv += ["--target", str(partial), "--only-binary=:all:", "--implementation", "cp"]
    argv += ["--python-version", "3.11", "--abi", "cp311"]
    for platform in PLATFORMS:
        argv += ["--platform", platform]
    _run([*argv, *OFFLINE_REQUIREMENTS])
    shutil.rmtree(partial / "bin", ignore_errors=True)  # console scripts for the host's python
    os.replace(partial, site)
    return site


def _add_user(tree: Path) -> None:
    with open(tree / "etc/passwd", "a") as fh:
        fh.write(f"grader:x:{GRADER_UID}:{GRADER_UID}:grader:/tmp:/usr/sbin/nologin\n")
    with open(tree / "etc/group", "a") as fh:
        fh.write(f"grader:x:{GRADER_UID}:\n")


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise UserError(
            f"the image build step `{' '.join(argv[:3])} ...` failed: " + " | ".join(tail),
            "check the network access to the Debian mirror and the pip configuration",
        )
