"""Sandbox backends behind one interface (see ``base``). Only ``docker_backend`` imports
the Docker SDK."""

from __future__ import annotations

from ..errors import UserError
from ..registry import Registry
from .base import Backend, RunJob, RunOutcome, SandboxPolicy
from .process import ProcessBackend

backends: Registry[type] = Registry("sandbox backend")
backends.add("process", ProcessBackend)

__all__ = ["Backend", "RunJob", "RunOutcome", "SandboxPolicy", "backends", "get_backend"]


def get_backend(name: str) -> Backend:
    backend: Backend = backends.get(name)()
    reason = backend.unavailable_reason()
    if reason:
        raise UserError(f"the {name} sandbox cannot run here: {reason}", _HINTS.get(name, ""))
    return backend


_HINTS = {
    "docker": "start the Docker engine and run `grade image build`, or use --sandbox bwrap",
    "bwrap": "install bubblewrap (apt-get install bubblewrap), or use --sandbox docker",
}
