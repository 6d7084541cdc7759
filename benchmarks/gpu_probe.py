"""What a bwrap sandbox of the harness sees of this machine's GPU and torch: the runner's
imports one by one (with the failure's traceback), ``getpass.getuser()`` (the sandbox has
no ``/etc/passwd``), and ``torch.cuda.is_available()``, with and without the GPU policy and
with and without ``USER``/``LOGNAME`` set. A diagnostic for ``benchmarks/gpu.sh``.

    python benchmarks/gpu_probe.py
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the harness of this checkout

from harness.runner.zygote import PRELOAD  # noqa: E402
from harness.sandbox.base import MOUNTS, SandboxPolicy  # noqa: E402
from harness.sandbox.bwrap import Bind, BwrapBackend  # noqa: E402
from harness.sandbox.layout import runner_root  # noqa: E402
from harness.tasks import load_task  # noqa: E402

CODE = (
    "import traceback, getpass\n"
    "try: print('getuser', getpass.getuser())\n"
    "except BaseException as e: print('getuser failed', repr(e))\n"
    f"for m in {PRELOAD!r}:\n"
    "    try: __import__(m); print('ok', m)\n"
    "    except BaseException: print('FAILED', m); traceback.print_exc()\n"
    "import torch; print('cuda', torch.cuda.is_available())\n"
)


def main() -> None:
    backend = BwrapBackend()
    limits = load_task("correlation").limits
    for gpu in (False, True):
        for env in ([], ["env", "USER=sandbox", "LOGNAME=sandbox"]):
            policy = SandboxPolicy.from_limits(limits, gpu=gpu)
            with ExitStack() as stack:
                binds = [Bind(str(runner_root()), MOUNTS["code"])]
                inside = [*env, backend.python, "-c", CODE]
                proc = backend._launch(stack, binds, policy, inside)
                out = proc.communicate(timeout=120)[0].decode(errors="replace")
            shown = " ".join(env[1:]) or "as the sandbox sets it"
            print(f"--- gpu={gpu} env: {shown}\n{out[-4000:]}")


if __name__ == "__main__":
    main()
