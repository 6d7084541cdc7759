"""Why bwrap cannot sandbox here, and what to do about it: each refusal names its cause
with a hint of its own (``BwrapBackend._unavailable``), read from a real bwrap refused in
a real way: not on the PATH, or denied new user namespaces by the kernel's limit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASK = (
    "import json; from harness.errors import UserError; from harness.sandbox import get_backend\n"
    "try:\n    get_backend('bwrap')\n"
    "except UserError as e:\n    print(json.dumps([e.message, e.hint]))\n"
    "else:\n    print(json.dumps(None))\n"
)


def _ask(argv: list[str], env: dict[str, str]) -> tuple[str, str] | None:
    done = subprocess.run(
        [*argv, sys.executable, "-c", ASK],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.strip().splitlines()[-1])
    return None if said is None else (said[0], said[1])


def test_no_bwrap_on_the_path_says_install_it(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty folder: no bwrap, nothing
    message, hint = _ask([], env) or ("", "")
    assert message == "the bwrap sandbox cannot run here: bubblewrap (bwrap) is not installed"
    assert hint == "install bubblewrap (apt-get install bubblewrap), or use --sandbox docker"


@pytest.mark.bwrap
def test_no_user_namespace_left_says_allow_them() -> None:
    """A user namespace whose limit lets one more be made: the ``unshare`` below takes it,
    and bwrap, as a plain user there, is refused its own (ENOSPC)."""
    unshare = shutil.which("unshare")
    assert unshare, "util-linux's unshare is needed"
    limit = 'echo 1 > /proc/sys/user/max_user_namespaces && exec "$@"'
    outer = [unshare, "--user", "--map-root-user", "sh", "-c", limit, "sh"]
    inner = [unshare, "--user", "--map-user=1000", "--map-group=1000"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert _ask([], env) is None  # outside it, bwrap sandboxes
    said = _ask([*outer, *inner], env)
    assert said is not None
    message, hint = said
    assert message.startswith("the bwrap sandbox cannot run here: ")
    assert message.partition(": ")[2].startswith("bwrap could not start a sandbox (")
    assert "namespace" in message
    assert hint.startswith("allow unprivileged user namespaces")
    assert hint.endswith("or use --sandbox docker")
