"""Build the corpus of hostile and broken submissions: one folder per case.

Every case is a real submission in the public format (``submission.toml``, ``model.py``,
weights) written from the Python source strings below; weights are made here by torch,
never stored as blobs. Each case names the status the contract gives it and a phrase of
the message the student sees. ``python tests/hostile/build_corpus.py OUT`` writes the
corpus and the ``hostile`` task it is graded against (``OUT/tasks/hostile/task.toml``).

Cases with ``integrity`` statuses hide capacity where the parameter count is still being
hardened (tensors made in ``forward`` from a seed); ``expect`` is the contract's target,
``integrity`` what the pipeline may end with today. Whatever the case, the count checked
against the limit is never below the weights file's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kit import TINY_MODEL, honest_state, save_state, write_manifest, write_task  # noqa: E402

TASK_ID = "hostile"
QUICK_TASK_ID = "hostile-quick"  # the same with a short wall clock, for the cases that hang
PARAMETER_LIMIT = 100_000
TIME_SECONDS = 300  # no honest case needs it: room for a loaded CI (the hanging ones use QUICK)
QUICK_SECONDS = 12

MODEL = TINY_MODEL  # the honest network every case builds on: 305 parameters

BIG = "\n\ndef build_model():\n    return Net(hidden=4000)  # 152,001 parameters\n"


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # what the submission tries
    expect: str  # the status the contract gives it
    says: str  # a phrase of the message the student reads ("" for graded)
    before: str = ""  # code at the top of model.py (runs on import)
    after: str = ""  # code at the end of model.py
    weights: str = "weights.safetensors"
    hidden: int = 8
    seed: int = 1
    task: str = TASK_ID
    integrity: tuple[str, ...] = ()  # statuses accepted until the integrity work lands
    counted_at_least: int = 0  # the parameter count the result must show, at least


CASES: tuple[Case, ...] = (
    Case("upright_a", "an honest model", "graded", "", seed=1),
    Case("upright_b", "another honest model", "graded", "", seed=2),
    Case("honest_pt", "an honest model with .pt weights", "graded", "", weights="weights.pt"),
    Case(
        "fork_bomb",
        "forks without end on import",
        "killed",
        "process limit",
        before="import os\nwhile True:\n    os.fork()\n",
    ),
    Case(
        "thread_bomb",
        "starts threads without end on import",
        "killed",
        "limit",
        before=(
            "import threading, time\nwhile True:\n"
            "    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
        ),
    ),
    Case(
        "memory_bomb",
        "allocates memory without end on import",
        "killed",
        "memory limit",
        before="hog = []\nwhile True:\n    hog.append(bytearray(32 * 2**20))\n",
    ),
    Case(
        "infinite_loop",
        "loops forever in forward",
        "timeout",
        "time limit",
        task=QUICK_TASK_ID,
        after="\n\ndef _spin(self, x):\n    while True:\n        pass\n\n\nNet.forward = _spin\n",
    ),
    Case(
        "sleep_in_import",
        "sleeps an hour on import",
        "timeout",
        "time limit",
        task=QUICK_TASK_ID,
        before="import time\ntime.sleep(3600)\n",
    ),
    Case(
        "disk_fill_tmp",
        "fills /tmp",
        "killed",
        "disk limit",
        before=(
            "import os\nwith open('/tmp/fill.bin', 'wb') as fh:\n    block = os.urandom(2**20)\n"
            "    while True:\n        fh.write(block)\n        fh.flush()\n"
        ),
    ),
    Case(
        "stdout_flood",
        "writes gigabytes to stdout",
        "killed",
        "log limit",
        before="import sys\nline = 'x' * 1023 + '\\n'\nwhile True:\n    sys.stdout.write(line)\n",
    ),
    Case(
        "output_fill",
        "fills its output folder",
        "killed",
        "output limit",
        before=(
            "import os\nfor i in range(100000):\n"
            "    with open(f'/output/junk{i}.bin', 'wb') as fh:\n"
            "        fh.write(os.urandom(2**20))\n"
        ),
    ),
    Case(
        "segfault",
        "dereferences a null pointer on import",
        "failed",
        "SIGSEGV",
        before="import ctypes\nctypes.string_at(0)\n",
    ),
    Case(
        "kill_parent",
        "kills its parent, then behaves",
        "graded",
        "",
        before="import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    ),
    Case(
        "kill_everything",
        "signals every process it may, then behaves",
        "graded",
        "",
        before=(
            "import os, signal\nfor target in (-1, 1):\n    try:\n"
            "        os.kill(target, signal.SIGKILL)\n    except OSError:\n        pass\n"
        ),
    ),
    Case(
        "exit_silently",
        "calls os._exit(0) on import, writing nothing",
        "failed",
        "without reporting an error",
        before="import os\nos._exit(0)\n",
    ),
    Case(
        "network",
        "opens network connections; fails loudly if one succeeds",
        "graded",
        "",
        before=textwrap.dedent(
            """
            import socket
            _hits = []
            for _host, _port in [("1.1.1.1", 53), ("8.8.8.8", 53), ("172.17.0.1", 2375),
                                 ("10.0.2.2", 80), ("deb.debian.org", 80), ("pypi.org", 443)]:
                try:
                    socket.create_connection((_host, _port), timeout=2).close()
                    _hits.append(_host)
                except OSError:
                    pass
            if _hits:
                raise RuntimeError("network reachable: " + ", ".join(_hits))
            """
        ),
    ),
    Case(
        "secrets_search",
        "searches files, environment and other processes for labels and secrets",
        "graded",
        "",
        before=textwrap.dedent(
            """
            import os
            _found = [k for k in os.environ if "SECRET" in k or k.startswith("HARNESS_")]
            _names = {"labels.npy", "result.json", "config.toml", "responses.csv"}
            for _dir, _subdirs, _files in os.walk("/"):
                if _dir.startswith(("/proc", "/sys", "/dev")) or "-packages" in _dir:
                    _subdirs[:] = []
                    continue
                _found += [os.path.join(_dir, f) for f in _files if f in _names]
                _found += [os.path.join(_dir, f) for f in _files
                           if f == "submission.toml" and _dir != "/submission"]
            for _pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{_pid}/environ", "rb") as _fh:
                        if b"SECRET" in _fh.read():
                            _found.append(f"/proc/{_pid}/environ")
                except OSError:
                    pass
            if _found:
                raise RuntimeError("found: " + ", ".join(_found[:10]))
            """
        ),
    ),
    Case(
        "write_outside",
        "writes everywhere but its output folder; fails loudly if one write succeeds",
        "graded",
        "",
        before=textwrap.dedent(
            """
            import os
            _wrote = []
            for _path in ["/submission/pwned.py", "/inputs/pwned", "/inputs/inputs.npy",
                          "/job/job.json", "/opt/harness/harness/runner/__main__.py",
                          "/pwned", "/etc/pwned", "/usr/pwned", "/root/pwned", "/home/pwned",
                          "/var/tmp/pwned", "@MARKERS@/pwned"]:
                try:
                    with open(_path, "a") as _fh:
                        _fh.write("pwned")
                    _wrote.append(_path)
                except OSError:
                    pass
            if _wrote:
                raise RuntimeError("wrote outside the output folder: " + ", ".join(_wrote))
            """
        ),
    ),
    Case(
        "fake_result",
        "writes a perfect result document wherever it can, then behaves",
        "graded",
        "",
        seed=1,
        before=textwrap.dedent(
            """
            import json, os
            _fake = json.dumps({"schema_version": 1, "task": "hostile", "team": "fake_result",
                                "status": "graded", "metrics": {"mse": 0.0, "mae": 0.0}})
            for _path in ["/output/result.json", "/results/hostile/fake_result/result.json",
                          "@RESULTS@/hostile/fake_result/result.json"]:
                try:
                    os.makedirs(os.path.dirname(_path), exist_ok=True)
                    with open(_path, "w") as _fh:
                        _fh.write(_fake)
                except OSError:
                    pass
            """
        ),
    ),
    Case(
        "pickle_weights",
        "ships weights.pt whose unpickling runs a command",
        "failed",
        "converting the .pt weights",
        weights="weights.pt",
    ),
    Case(
        "symlink_escape",
        "ships symlinks that point outside the folder",
        "invalid",
        "symlink that leaves the folder",
    ),
    Case(
        "hidden_buffer",
        "keeps 200,000 values in a non-persistent buffer",
        "over_limit",
        "parameters counted",
        after=textwrap.dedent(
            """
            class Hidden(Net):
                def __init__(self):
                    super().__init__()
                    self.register_buffer("memory", torch.randn(200_000), persistent=False)

                def forward(self, x):
                    return super().forward(x) + 0.0 * self.memory[:1]


            def build_model():
                return Hidden()
            """
        ),
    ),
    Case(
        "tensor_attribute",
        "keeps 200,000 values in a plain tensor attribute",
        "over_limit",
        "parameters counted",
        after=textwrap.dedent(
            """
            class Attr(Net):
                def __init__(self):
                    super().__init__()
                    self.table = torch.randn(200_000)

                def forward(self, x):
                    return super().forward(x) + 0.0 * self.table[:1]


            def build_model():
                return Attr()
            """
        ),
    ),
    Case(
        "forward_tensors",
        "creates a 200,000-value tensor from a fixed seed in every forward",
        "over_limit",
        "",
        integrity=("over_limit", "failed"),  # today: not exportable (a Generator in forward)
        after=textwrap.dedent(
            """
            class Made(Net):
                def forward(self, x):
                    g = torch.Generator().manual_seed(0)
                    table = torch.randn(200_000, generator=g)
                    return super().forward(x) + 0.0 * table[:1]


            def build_model():
                return Made()
            """
        ),
    ),
    Case(
        "monkeypatch_parameters",
        "a 152,001-parameter model that patches Module.parameters to count nothing",
        "over_limit",
        "152,001 parameters counted",
        hidden=4000,
        before="import torch\ntorch.nn.Module.parameters = lambda self, recurse=True: iter(())\n",
        after=BIG,
    ),
    Case(
        "monkeypatch_numel",
        "a 152,001-parameter model that patches Tensor.numel to return 1",
        "over_limit",
        "152,001 parameters counted",
        hidden=4000,
        before="import torch\ntorch.Tensor.numel = lambda self: 1\n",
        after=BIG,
    ),
    Case(
        "extra_weights",
        "loads an undeclared weights file next to model.py",
        "failed",
        "building the model",
        after=textwrap.dedent(
            """
            def build_model():
                from pathlib import Path
                from safetensors.torch import load_file

                net = Net()
                net.extra = load_file(str(Path(__file__).parent / "extra.safetensors"))
                return net
            """
        ),
    ),
    Case(
        "source_literals",
        "keeps 20,000 weights in a list literal in model.py (under the limit: counted)",
        "graded",
        "",
        counted_at_least=20_305,
        after="\n_TABLE = None  # replaced by the builder\n",
    ),
)


def case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def write_tasks(tasks_dir: Path) -> None:
    """The two tasks the corpus names, in a tasks folder (``HARNESS_TASKS``)."""
    for task, seconds in ((TASK_ID, TIME_SECONDS), (QUICK_TASK_ID, QUICK_SECONDS)):
        write_task(
            tasks_dir,
            task,
            title="hostile corpus: a tiny regression task with tight limits",
            limit=PARAMETER_LIMIT,
            time=seconds,
            memory_mb=768,
            batch_size=8,
            public_seed=11,
            sizes=(16, 16, 16),
            report=("mse", "mae"),
            bootstrap=100,
            limits={"pids": 32, "tmpfs_mb": 8, "output_mb": 16, "log_kb": 16},
        )


def build(out: Path, *, markers: Path, results: Path) -> dict[str, Path]:
    """Write every case under ``out`` (one folder each). ``markers``: a host folder that
    must stay empty (payloads aim at it); ``results``: the host results folder."""
    out.mkdir(parents=True, exist_ok=True)
    return {c.name: _write(c, out / c.name, markers, results) for c in CASES}


def _write(c: Case, folder: Path, markers: Path, results: Path) -> Path:
    folder.mkdir()
    source = c.before + MODEL + c.after
    source = source.replace("@MARKERS@", str(markers)).replace("@RESULTS@", str(results))
    if c.name == "source_literals":
        source = source.replace("_TABLE = None  # replaced by the builder", _literal_table())
    (folder / "model.py").write_text(source)
    write_manifest(folder, task=c.task, members=["Mallory"], weights=c.weights)
    state = honest_state(c.hidden, c.seed)
    if c.name == "pickle_weights":
        _pickle_bomb(folder / c.weights, state, markers)
    else:
        save_state(state, folder / c.weights)
    _extras(c, folder, state)
    return folder


def _extras(c: Case, folder: Path, state: dict[str, object]) -> None:
    if c.name == "symlink_escape":
        os.symlink("/etc/hostname", folder / "notes.py")
        os.symlink("../../..", folder / "up")
    elif c.name == "extra_weights":
        import torch
        from safetensors.torch import save_file

        save_file({"table": torch.randn(50_000)}, str(folder / "extra.safetensors"))


def _pickle_bomb(path: Path, state: dict[str, object], markers: Path) -> None:
    """A torch.save file whose unpickling would run a shell command (weights-only
    loading refuses it); the command would leave a file in ``markers``."""
    import torch

    command = f"touch {markers}/pickle_ran /tmp/pickle_ran /output/pickle_ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (command,))

    torch.save({**state, "payload": Payload()}, str(path))


def _literal_table() -> str:
    import random

    rng = random.Random(5)
    values = ", ".join(f"{rng.uniform(-1, 1):.5f}" for _ in range(20_000))
    return (
        f"_TABLE = [{values}]\n\n\nclass Literal(Net):\n    def forward(self, x):\n"
        "        table = torch.tensor(_TABLE)\n"
        "        return super().forward(x) + 0.0 * table[:1]\n\n\n"
        "def build_model():\n    return Literal()\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    markers, results = args.out / "markers", args.out / "results"
    markers.mkdir(parents=True, exist_ok=True)
    folders = build(args.out / "submissions", markers=markers, results=results)
    write_tasks(args.out / "tasks")
    summary = {c.name: {"what": c.what, "expect": c.expect, "says": c.says} for c in CASES}
    (args.out / "cases.json").write_text(json.dumps(summary, indent=2))
    print(f"{len(folders)} cases in {args.out / 'submissions'}; task in {args.out / 'tasks'}")


if __name__ == "__main__":
    main()
