"""Which backend to use when the user names none."""

from __future__ import annotations

from ..errors import UserError
from . import backends
from .base import Backend


def choose_backend(mode: str) -> Backend:
    """docker when its engine answers and can set the sandbox's limits, else bwrap; ``grade
    check`` may fall back to process."""
    reasons = []
    for name in ("docker", "bwrap"):
        if name not in backends:
            continue
        backend: Backend = backends.get(name)()
        reason = backend.unavailable_reason()
        if reason is None:
            return backend
        reasons.append(f"{name}: {reason}")
    if mode == "check":
        process: Backend = backends.get("process")()
        return process
    raise UserError(
        "no sandbox is available to run untrusted code (" + "; ".join(reasons) + ")",
        "start Docker and run `grade image build`, install bubblewrap, or pass "
        "--sandbox process to run without isolation",
    )
