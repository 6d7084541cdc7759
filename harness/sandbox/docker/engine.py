"""The Docker engine, through the SDK: a client, image facts, import and build. The image
builder and the backend both call these; nothing outside ``sandbox/docker`` imports the SDK."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from ...errors import UserError
from ...runner.contract import TORCH, TORCHVISION


def client_or_error() -> docker.DockerClient:
    """A client for the local engine, or ``UserError`` saying it does not answer."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise UserError(
            f"the Docker engine does not answer ({type(exc).__name__})",
            "start it (`sudo systemctl start docker` or `dockerd &`) or use --sandbox bwrap",
        ) from None
    return client


def engine_answers() -> bool:
    try:
        return bool(docker.from_env(timeout=5).ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False


@dataclass(frozen=True)
class EngineFacts:
    """What the engine says of itself that decides how a sandbox runs on it."""

    rootless: bool  # a user's own engine: its containers' root is that user
    unenforced: tuple[str, ...]  # the sandbox's limits it cannot set ("memory", "process")
    cgroup_version: str = ""  # "1" or "2", as the engine reports it


def engine_facts(client: docker.DockerClient) -> EngineFacts:
    """From ``docker info``: a rootless engine names itself in its security options; an
    engine without the cgroup controllers says ``MemoryLimit``/``PidsLimit`` false (and
    then drops those options of a container with only a warning)."""
    info = client.info()
    rootless = any("name=rootless" in str(option) for option in info.get("SecurityOptions") or [])
    limits = (("MemoryLimit", "memory"), ("PidsLimit", "process"))
    unenforced = tuple(name for key, name in limits if info.get(key) is False)
    return EngineFacts(rootless, unenforced, str(info.get("CgroupVersion") or ""))


def registry_reachable(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get_registry_data(image)
    except (docker.errors.APIError, requests.exceptions.RequestException):
        return False
    return True


def image_info(
    client: docker.DockerClient, tag: str, *, missing_ok: bool = False
) -> dict[str, Any]:
    """The image's id, size and labels; ``{}`` when it is missing and ``missing_ok``."""
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        if missing_ok:
            return {}
        raise UserError(f"the image {tag} is not built", "run `grade image build`") from None
    return {"id": image.id, "size": image.attrs.get("Size", 0), "labels": image.labels or {}}


def import_rootfs(
    client: docker.DockerClient, archive: Path, *, tag: str, changes: list[str]
) -> str:
    repository, _, version = tag.rpartition(":")
    client.api.import_image_from_file(
        str(archive), repository=repository, tag=version, changes=changes
    )
    return str(client.images.get(tag).id)


def build_dockerfile(client: docker.DockerClient, context: Path, *, base: str, tag: str) -> str:
    try:
        image, _logs = client.images.build(
            path=str(context),
            tag=tag,
            buildargs={"BASE": base, "TORCH": TORCH, "TORCHVISION": TORCHVISION},
            rm=True,
            pull=False,
        )
    except docker.errors.BuildError as exc:
        raise UserError(f"the image build failed: {exc.msg}", "see the build log above") from None
    return str(image.id)
