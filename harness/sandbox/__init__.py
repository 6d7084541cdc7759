"""Sandbox backends behind one interface (see ``base``). Only the ``docker`` package imports
the Docker SDK; it is imported when the docker backend is first asked for."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UserError
from ..registry import Registry
from .base import Backend, Predictor, RunJob, Runner, RunOutcome, SandboxPolicy
from .bwrap import BwrapBackend
from .process import ProcessBackend


def _docker() -> Backend:
    from .docker.backend import DockerBackend

    return DockerBackend()


backends: Registry[Callable[[], Backend]] = Registry("sandbox backend")
backends.add("process", ProcessBackend)
backends.add("bwrap", BwrapBackend)
backends.add("docker", _docker)

__all__ = [
    "Backend",
    "Predictor",
    "RunJob",
    "RunOutcome",
    "Runner",
    "SandboxPolicy",
    "backends",
    "get_backend",
]


def get_backend(name: str) -> Backend:
    backend: Backend = backends.get(name)()
    reason = backend.unavailable_reason()
    if reason:
        raise UserError(f"the {name} sandbox cannot run here: {reason}", backend.unavailable_hint())
    return backend
