"""Build the parameter-evasion and output-cheating corpus: one submission folder per trick.

Each case is a real submission in the public format, written from the Python source
strings below; its weights are made here by torch from the honest architecture (plus the
tensors the case declares), so no cheat's code ever runs in the building process. Each
case names the status it must end in and a phrase that names the trick, found in the
result's message or in the flag it must carry.

``python tests/cheats/build_cheats.py OUT`` writes ``OUT/submissions/<case>/`` and the two
tasks they are graded against (``OUT/tasks/cheats``, and ``cheats-eager``, which allows
the eager fallback). The ``hash_lookup`` cases need the hidden inputs to memorize: the
builder takes them (``hidden``) and writes a table of their hashes into the source.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kit import honest_state, save_state, write_manifest, write_task  # noqa: E402

TASK = "cheats"
EAGER_TASK = "cheats-eager"
ROOMY_TASK = "cheats-roomy"  # a limit that a memorized lookup fits in
ROOMY_LIMIT = 100_000
LIMIT = 1_000
ALLOWANCE = 64

# The honest network every case builds on: the kit's TINY_MODEL (305 parameters) with the
# pooling split out as `features`, which the cases override.
BASE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden: int = 8):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.fc1 = nn.Linear(36, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def features(self, x):
        return self.pool(x).flatten(1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.features(x)))).squeeze(1)


def build_model():
    return Net()
"""

Tensors = dict[str, Any]


@dataclass(frozen=True)
class Case:
    name: str
    trick: str
    expect: str  # the status it must end in
    says: str  # a phrase naming the trick, in the message or in the flag `flag`
    code: str = ""  # appended to BASE (redefines build_model)
    before: str = ""  # put above BASE (runs first on import)
    flag: str = ""  # the flag carrying `says` ("" = the message carries it)
    hidden: int = 8  # width of the honest layers in the weights file
    extra: Callable[[], Tensors] = field(default=lambda: {})  # more tensors for the file
    task: str = TASK
    count: int | None = None  # the exact count it must get, where it is graded
    scale: float = 1.0  # multiplies the honest weights (a disguised copy)
    report: str = ""  # REPORT.md ("@TABLE@": the 2,000 weights as text)


def _randn(n: int, seed: int = 3) -> Any:
    import torch

    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def _ints(n: int) -> Any:
    import torch

    return torch.randint(0, 2**62, (n,), generator=torch.Generator().manual_seed(4))


def _stats(prefix: str, mean: Any) -> Tensors:
    """A batch norm's running statistics for the weights file."""
    import torch

    return {
        f"{prefix}.running_mean": mean,
        f"{prefix}.running_var": mean.abs() + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(0),
    }


CASES: tuple[Case, ...] = (
    Case("honest", "nothing: the honest reference", "graded", "", count=305),
    Case("copied_weights", "the honest team's weights file, copied", "graded", "", count=305),
    Case(
        "near_copy",
        "the honest team's weights scaled by 1.001 (a disguised copy)",
        "graded",
        "",
        count=305,
        scale=1.001,
    ),
    Case(
        "tied_weights",
        "a layer registered twice (tied), stored once: counted once",
        "graded",
        "",
        code="""
class Tied(Net):
    def __init__(self):
        super().__init__()
        self.mid = nn.Linear(8, 8)
        self.mid_again = self.mid

    def forward(self, x):
        h = torch.relu(self.fc1(self.features(x)))
        return self.fc2(self.mid_again(self.mid(h))).squeeze(1)


def build_model():
    return Tied()
""",
        extra=lambda: {"mid.weight": _randn(64).reshape(8, 8) * 0.1, "mid.bias": _randn(8) * 0.1},
        count=377,
    ),
    Case(
        "lazy_module",
        "a lazy layer whose parameters exist only after the first batch",
        "graded",
        "",
        code="""
class Lazy(Net):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.LazyLinear(8)


def build_model():
    return Lazy()
""",
        count=305,
    ),
    Case(
        "buffer",
        "2,000 values in a persistent buffer used as a lookup table",
        "over_limit",
        "2,000 values in buffers (memory)",
        code="""
class Buffered(Net):
    def __init__(self):
        super().__init__()
        self.register_buffer("memory", torch.zeros(2000))

    def forward(self, x):
        return super().forward(x) + self.memory[:40].mean()


def build_model():
    return Buffered()
""",
        extra=lambda: {"memory": _randn(2000)},
    ),
    Case(
        "fake_running_stats",
        "2,000 values in buffers named like batch-norm statistics, used as a table",
        "over_limit",
        "values in buffers (table.running_mean",
        code="""
class Table(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(1000))
        self.register_buffer("running_var", torch.ones(1000))


class Disguised(Net):
    def __init__(self):
        super().__init__()
        self.table = Table()

    def forward(self, x):
        t = self.table.running_mean[:36] * self.table.running_var[:36]
        return super().forward(x) + (self.features(x) * t).sum(1)


def build_model():
    return Disguised()
""",
        extra=lambda: {"table.running_mean": _randn(1000), "table.running_var": _randn(1000, 4)},
    ),
    Case(
        "nonpersistent_buffer",
        "2,000 values in a non-persistent buffer (not in the state_dict)",
        "over_limit",
        "2,000 values in non-persistent buffers (memory)",
        code="""
class Hidden(Net):
    def __init__(self):
        super().__init__()
        self.register_buffer("memory", torch.randn(2000), persistent=False)

    def forward(self, x):
        return super().forward(x) + self.memory[:40].mean()


def build_model():
    return Hidden()
""",
    ),
    Case(
        "tensor_attribute",
        "2,000 values in a plain tensor attribute",
        "over_limit",
        "2,000 values in tensor attributes (table)",
        code="""
class Attr(Net):
    def __init__(self):
        super().__init__()
        self.table = torch.randn(2000)

    def forward(self, x):
        return super().forward(x) + self.table[:40].mean()


def build_model():
    return Attr()
""",
    ),
    Case(
        "forward_tensor",
        "2,000 values made into a tensor inside forward",
        "over_limit",
        "2,000 values in tensors created in forward",
        code="""
import math

TABLE = [math.sin(i * 0.37) for i in range(2000)]


class Made(Net):
    def forward(self, x):
        table = torch.tensor(TABLE)
        return super().forward(x) + table[:40].mean()


def build_model():
    return Made()
""",
    ),
    Case(
        "source_literals",
        "800 weights as float literals in the source, spread over the computation",
        "over_limit",
        "values in literals in the graph",
        code="""
WEIGHTS = [((i * 7919) % 1000) / 1000.0 - 0.5 for i in range(800)]


class Literal(Net):
    def forward(self, x):
        f = self.features(x)
        y = super().forward(x)
        for i in range(0, len(WEIGHTS), 2):
            y = y + torch.clamp(f[:, i % 36], WEIGHTS[i] - 1.0, WEIGHTS[i + 1] + 1.0)
        return y


def build_model():
    return Literal()
""",
    ),
    Case(
        "base64_blob",
        "2,000 float32 weights in a base64 string, decoded in forward",
        "over_limit",
        "2,000 values in tensors created in forward",
        code="""
import base64

BLOB = "@BLOB@"


class Blob(Net):
    def forward(self, x):
        table = torch.frombuffer(bytearray(base64.b64decode(BLOB)), dtype=torch.float32)
        return super().forward(x) + table[:40].mean()


def build_model():
    return Blob()
""",
    ),
    Case(
        "submodule_list",
        "two 36x36 layers in a plain Python list (hidden from model.parameters())",
        "over_limit",
        "2,664 values in tensors created in forward or kept outside registered modules",
        code="""
class Listed(Net):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.hidden_layers = [nn.Linear(36, 36), nn.Linear(36, 36)]

    def features(self, x):
        f = super().features(x)
        for layer in self.hidden_layers:
            f = torch.tanh(layer(f))
        return f


def build_model():
    return Listed()
""",
    ),
    Case(
        "int8_packed",
        "int8 values packed four to a float32 parameter, read back with view(torch.int8)",
        "failed",
        "reinterprets a tensor's bytes as another dtype",
        code="""
class Packed(Net):
    def __init__(self):
        super().__init__()
        self.packed = nn.Parameter(torch.zeros(200))

    def forward(self, x):
        codes = self.packed.view(torch.int8).float() / 127.0  # 800 values
        return super().forward(x) + codes[:40].mean()


def build_model():
    return Packed()
""",
        extra=lambda: {"packed": _randn(200)},
    ),
    Case(
        "monkeypatch_parameters",
        "a 3,801-parameter model that patches Module.parameters to count nothing",
        "over_limit",
        "the model's own count says 0",
        before="import torch\ntorch.nn.Module.parameters = lambda self, recurse=True: iter(())\n",
        code="\n\ndef build_model():\n    return Net(hidden=100)\n",
        hidden=100,
    ),
    Case(
        "monkeypatch_numel",
        "a 3,801-parameter model that patches Tensor.numel to return 1",
        "over_limit",
        "the model's own count says 4",
        before="import torch\ntorch.Tensor.numel = lambda self: 1\n",
        code="\n\ndef build_model():\n    return Net(hidden=100)\n",
        hidden=100,
    ),
    Case(
        "hash_lookup",
        "looks up memorized answers by hashing each input image",
        "failed",
        "Python-side lookups (hashing inputs",
        code="""
import hashlib

ANSWERS = @ANSWERS@


class Lookup(Net):
    def forward(self, x):
        codes = (x * 255).round().to(torch.uint8)
        out = [ANSWERS.get(hashlib.sha1(img.numpy().tobytes()).hexdigest(), 0.0) for img in codes]
        return super().forward(x) * 0.0 + torch.tensor(out)


def build_model():
    return Lookup()
""",
    ),
    Case(
        "hash_lookup_eager",
        "the hash lookup, on a task that allows the eager fallback",
        "graded",
        "memorization probe",
        flag="memorization",
        code="@SAME_AS_hash_lookup@",
        task=EAGER_TASK,
    ),
    Case(
        "random_output",
        "adds fresh random noise to every prediction",
        "graded",
        "images differ",
        flag="nondeterministic",
        code="""
class Noisy(Net):
    def forward(self, x):
        y = super().forward(x)
        return y + 0.1 * torch.randn_like(y)


def build_model():
    return Noisy()
""",
        count=305,
    ),
    Case(
        "batch_dependent",
        "subtracts the batch mean: each prediction depends on the other inputs",
        "graded",
        "on the other inputs in a batch",
        flag="nondeterministic",
        code="""
class Batchy(Net):
    def forward(self, x):
        y = super().forward(x)
        return y - y.mean() + self.features(x).mean()


def build_model():
    return Batchy()
""",
        count=305,
    ),
    Case(
        "stateful",
        "counts its calls in a buffer and shifts later predictions",
        "failed",
        "changes its stored tensors while predicting",
        code="""
class Stateful(Net):
    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x):
        self.calls.add_(1)
        return super().forward(x) + 0.001 * self.calls
"""
        + "\n\ndef build_model():\n    return Stateful()\n",
        extra=lambda: {"calls": _randn(1) * 0},
    ),
    Case(
        "seeded_generator",
        "regenerates a table from a seeded torch.Generator in forward",
        "failed",
        "torch.Generator",
        code="""
class Seeded(Net):
    def forward(self, x):
        g = torch.Generator().manual_seed(0)
        table = torch.randn(2000, generator=g)
        return super().forward(x) + 0.0 * table[:1]


def build_model():
    return Seeded()
""",
    ),
    Case(
        "bn_storage",
        "2,000 values in a BatchNorm1d's running statistics, applied to a constant",
        "over_limit",
        "normalization statistics used as storage",
        code="""
class Bank(Net):
    def __init__(self):
        super().__init__()
        self.bank = nn.BatchNorm1d(1000, affine=False)

    def forward(self, x):
        table = self.bank(torch.zeros(1, 1000, device=x.device))[0]
        return super().forward(x) + (self.features(x) * table[:36]).sum(1)


def build_model():
    return Bank()
""",
        extra=lambda: _stats("bank", _randn(1000)),
    ),
    Case(
        "bn_wide_input",
        "2,000 values in a BatchNorm1d wider than any layer before it, fed by raw pixels x 0",
        "over_limit",
        "normalization statistics used as storage",
        code="""
class Wide(Net):
    def __init__(self):
        super().__init__()
        self.bank = nn.BatchNorm1d(1000, affine=False)

    def forward(self, x):
        table = self.bank(x.flatten(1)[:, :1000] * 0.0)
        return super().forward(x) + (self.features(x) * table[:, :36]).sum(1)


def build_model():
    return Wide()
""",
        extra=lambda: _stats("bank", _randn(1000)),
    ),
    Case(
        "nn_lookup_bn_keys",
        "a nearest-neighbour lookup of the hidden images, keys kept in BatchNorm statistics",
        "over_limit",
        "normalization statistics used as storage",
        code="""
class Keys(Net):
    def __init__(self):
        super().__init__()
        self.keys = nn.BatchNorm1d(@N@ * 36, affine=False, eps=0.0)
        self.answers = nn.Parameter(torch.zeros(@N@))

    def forward(self, x):
        keys = -self.keys(torch.zeros(1, @N@ * 36, device=x.device)).view(@N@, 36)
        f = self.features(x)
        d = ((f[:, None, :] - keys[None]) ** 2).sum(-1)
        return self.answers[d.argmin(1)] + 0.0 * super().forward(x)


def build_model():
    return Keys()
""",
        extra=lambda: {},  # filled from the hidden split by `build`
    ),
    Case(
        "nn_lookup",
        "a nearest-neighbour lookup of the hidden images (6x6-pooled keys as parameters, "
        "within a roomy limit)",
        "graded",
        "canary images",
        flag="memorization",
        task=ROOMY_TASK,
        code="""
class Lookup(Net):
    def __init__(self):
        super().__init__()
        self.keys = nn.Parameter(torch.zeros(@N@, 36))
        self.answers = nn.Parameter(torch.zeros(@N@))

    def forward(self, x):
        f = self.features(x)
        d = ((f[:, None, :] - self.keys[None]) ** 2).sum(-1)
        return self.answers[d.argmin(1)] + 0.0 * super().forward(x)


def build_model():
    return Lookup()
""",
        extra=lambda: {},  # filled from the hidden split by `build`
    ),
    Case(
        "int_literals",
        "weights as integer literals in forward, unpacked with div(..., rounding_mode='floor')",
        "over_limit",
        "literals in the graph (floats, and integers used as values)",
        code="""
CODES = [(i * 7919) % 65536 for i in range(300)]


class Ints(Net):
    def forward(self, x):
        f = self.features(x)
        y = super().forward(x)
        for i, code in enumerate(CODES):
            y = y + torch.div(f[:, i % 36] * 0 + code, 256, rounding_mode="floor")
        return y


def build_model():
    return Ints()
""",
    ),
    Case(
        "int64_packed",
        "400 int64 values, each carrying eight int8 weights (counted per 32 bits)",
        "over_limit",
        "codes 64-bit, per 32 bits",
        code="""
class Packed64(Net):
    def __init__(self):
        super().__init__()
        self.register_buffer("codes", torch.zeros(400, dtype=torch.int64))

    def forward(self, x):
        c = self.codes
        low = c - torch.div(c, 256, rounding_mode="floor") * 256
        return super().forward(x) + low[:36].float().mean() * 0.001


def build_model():
    return Packed64()
""",
        extra=lambda: {"codes": _ints(400)},
    ),
    Case(
        "out_overload",
        "a call counter kept with torch.add(..., out=buffer) that shifts later predictions",
        "failed",
        "an out= variant",
        code="""
class Counter(Net):
    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x):
        torch.add(self.calls, 1, out=self.calls)
        return super().forward(x) + 0.5 * (self.calls > 4).float()


def build_model():
    return Counter()
""",
        extra=lambda: {"calls": _randn(1) * 0},
    ),
    Case(
        "source_table",
        "2,000 weights written as literals in the source, rebuilt into a buffer at every build",
        "over_limit",
        "buffers the code rebuilds from values written in its source or files",
        code="""
TABLE = @TABLE@


class Spelled(Net):
    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.tensor(TABLE), persistent=False)

    def forward(self, x):
        return super().forward(x) + (self.features(x) * self.table[:36]).sum(1)


def build_model():
    return Spelled()
""",
    ),
    Case(
        "report_table",
        "2,000 weights written as text in REPORT.md, read into a buffer at every build",
        "over_limit",
        "2,000 values in non-persistent buffers (table)",  # the rebuild sees no REPORT.md
        code="""
from pathlib import Path


class Read(Net):
    def __init__(self):
        super().__init__()
        text = (Path(__file__).parent / "REPORT.md").read_text().split()
        self.register_buffer("table", torch.tensor([float(v) for v in text]), persistent=False)

    def forward(self, x):
        return super().forward(x) + (self.features(x) * self.table[:36]).sum(1)


def build_model():
    return Read()
""",
        report="@TABLE@",
    ),
    Case(
        "comment_table",
        "2,000 float32 weights in base64 comments of model.py (short lines), read back",
        "over_limit",
        "buffers the code rebuilds from values written in its source or files",
        code="""
import base64


class Commented(Net):
    def __init__(self):
        super().__init__()
        lines = open(__file__).read().splitlines()
        blob = "".join(line[3:] for line in lines if line.startswith("# @"))
        values = torch.frombuffer(bytearray(base64.b64decode(blob)), dtype=torch.float32)
        self.register_buffer("table", values.clone(), persistent=False)

    def forward(self, x):
        return super().forward(x) + (self.features(x) * self.table[:36]).sum(1)


def build_model():
    return Commented()


@COMMENTS@
""",
    ),
    Case(
        "at_limit",
        "an honest model of exactly the limit (1,000 parameters)",
        "graded",
        "",
        code="""
class Sized(Net):
    def __init__(self):
        super().__init__()
        self.extra = nn.Parameter(torch.zeros(695))

    def forward(self, x):
        return super().forward(x) + self.extra[:36].sum() * 0.0


def build_model():
    return Sized()
""",
        extra=lambda: {"extra": _randn(695) * 0},
        count=1000,
    ),
    Case(
        "over_by_one",
        "an honest model one parameter over the limit (1,001 parameters)",
        "over_limit",
        "1,001 parameters counted",
        code="""
class Sized(Net):
    def __init__(self):
        super().__init__()
        self.extra = nn.Parameter(torch.zeros(696))

    def forward(self, x):
        return super().forward(x) + self.extra[:36].sum() * 0.0


def build_model():
    return Sized()
""",
        extra=lambda: {"extra": _randn(696) * 0},
    ),
    Case(
        "honest_unused_bn",
        "honest: a BatchNorm2d(300) that forward never calls (its statistics are not counted)",
        "graded",
        "",
        code="""
class Spare(Net):
    def __init__(self):
        super().__init__()
        self.spare = nn.BatchNorm2d(300)


def build_model():
    return Spare()
""",
        extra=lambda: (
            {"spare.weight": _randn(300), "spare.bias": _randn(300)} | _stats("spare", _randn(300))
        ),
        count=905,
    ),
    Case(
        "honest_aux_bn",
        "honest: a googlenet-style auxiliary head (conv + BatchNorm) used only in training",
        "graded",
        "",
        code="""
class Aux(Net):
    def __init__(self):
        super().__init__()
        self.aux = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4))

    def forward(self, x):
        if self.training:
            return super().forward(x) + self.aux(x).mean((1, 2, 3))
        return super().forward(x)


def build_model():
    return Aux()
""",
        extra=lambda: (
            {
                "aux.0.weight": _randn(4).reshape(4, 1, 1, 1),
                "aux.0.bias": _randn(4),
                "aux.1.weight": _randn(4),
                "aux.1.bias": _randn(4),
            }
            | _stats("aux.1", _randn(4))
        ),
        count=321,
    ),
    Case(
        "honest_buffers",
        "honest: a registered normalisation buffer (mean, std) and an index table, both rebuilt "
        "by the code; BatchNorm after a layer",
        "graded",
        "",
        code="""
class Buffers(Net):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5]).view(1, 1, 1, 1))
        self.register_buffer("std", torch.tensor([0.25]).view(1, 1, 1, 1))
        self.register_buffer("order", torch.arange(36).flip(0), persistent=False)
        self.bn = nn.BatchNorm1d(8)

    def features(self, x):
        return super().features((x - self.mean) / self.std)[:, self.order]

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(self.features(x))))).squeeze(1)


def build_model():
    return Buffers()
""",
        extra=lambda: (
            {
                "mean": _randn(1).reshape(1, 1, 1, 1) * 0 + 0.5,
                "std": _randn(1).reshape(1, 1, 1, 1) * 0 + 0.25,
                "bn.weight": _randn(8) * 0 + 1,
                "bn.bias": _randn(8) * 0,
            }
            | _stats("bn", _randn(8) * 0.1)
        ),
        count=321,
    ),
)


def case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def write_tasks(tasks_dir: Path) -> None:
    for task_id, fallback, limit in (
        (TASK, False, LIMIT),
        (EAGER_TASK, True, LIMIT),
        (ROOMY_TASK, False, ROOMY_LIMIT),
    ):
        write_task(
            tasks_dir,
            task_id,
            title="cheats corpus: a tiny regression task with a parameter limit",
            limit=limit,
            time=180,
            report=("mse", "mae"),
            bootstrap=100,
            integrity={
                "allowance": ALLOWANCE,
                "allow_eager_fallback": fallback,
                "probe_count": 40,
            },
        )


def lookup(c: Case, hidden: np.ndarray | None, labels: np.ndarray | None) -> Tensors:
    """The nearest-neighbour cases' memory: each hidden image pooled to 6x6 (as the
    model's own AdaptiveAvgPool2d(6) sees it) and its label."""
    import torch

    if not c.name.startswith("nn_lookup"):
        return {}
    n = 0 if hidden is None else len(hidden)
    if hidden is None or labels is None or n == 0:
        keys, answers = torch.zeros(1, 36), torch.zeros(1)
    else:
        x = torch.from_numpy(np.asarray(hidden, dtype=np.float32) / 255.0)
        keys = torch.nn.functional.adaptive_avg_pool2d(x, 6).flatten(1)
        answers = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    if c.name == "nn_lookup":
        return {"keys": keys.contiguous(), "answers": answers}
    return {
        "keys.running_mean": keys.flatten().contiguous(),
        "keys.running_var": torch.ones(keys.numel()),
        "keys.num_batches_tracked": torch.tensor(0),
        "answers": answers,
    }


def answers(hidden: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The lookup table a hash cheat memorizes: SHA-1 of each uint8 image -> its label."""
    return {
        hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest(): round(float(y), 6)
        for img, y in zip(hidden, labels, strict=True)
    }


def _table() -> list[float]:
    """2,000 trained-looking weights."""
    return [round(float(w), 6) for w in np.sin(np.arange(2000) * 0.37).astype(np.float32)]


def _blob() -> str:
    """2,000 float32 weights as base64."""
    import base64

    blob = np.sin(np.arange(2000, dtype=np.float32) * 0.37).astype("<f4").tobytes()
    return base64.b64encode(blob).decode("ascii")


def source(c: Case, table: dict[str, float]) -> str:
    code = case("hash_lookup").code if c.code == "@SAME_AS_hash_lookup@" else c.code
    text = c.before + BASE + textwrap.dedent(code)
    text = text.replace("@ANSWERS@", repr(table))
    if "@TABLE@" in text:  # 2,000 trained-looking weights, spelled out in the source
        text = text.replace("@TABLE@", repr(_table()))
    if "@COMMENTS@" in text:  # the blob below, in comment lines of 60 characters
        blob = _blob()
        lines = [f"# @{blob[i : i + 57]}" for i in range(0, len(blob), 57)]
        text = text.replace("@COMMENTS@", "\n".join(lines))
    if "@BLOB@" in text:
        text = text.replace("@BLOB@", _blob())
    return text


def weights(c: Case) -> Tensors:
    """The honest layers (seeded) plus the case's declared tensors."""
    state = honest_state(c.hidden, seed=1, scale=c.scale) | c.extra()
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def build(
    out: Path, hidden: np.ndarray | None = None, labels: np.ndarray | None = None
) -> dict[str, Path]:
    """Write every case under ``out``; ``hidden``/``labels``: the inputs the hash cheats
    memorize (uint8 N x C x H x W and their labels), none memorized when omitted."""
    table = answers(hidden, labels) if hidden is not None and labels is not None else {}
    folders = {}
    for c in CASES:
        folder = out / c.name
        folder.mkdir(parents=True)
        n = max(1, len(hidden)) if hidden is not None else 1
        (folder / "model.py").write_text(source(c, table).replace("@N@", str(n)))
        write_manifest(folder, task=c.task, members=["Mallory"])
        save_state(weights(c) | lookup(c, hidden, labels), folder / "weights.safetensors")
        if c.report:
            text = c.report.replace("@TABLE@", " ".join(map(str, _table())))
            (folder / "REPORT.md").write_text(text)
        folders[c.name] = folder
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    folders = build(args.out / "submissions")
    write_tasks(args.out / "tasks")
    summary = {c.name: {"trick": c.trick, "expect": c.expect, "says": c.says} for c in CASES}
    (args.out / "cases.json").write_text(json.dumps(summary, indent=2))
    print(f"{len(folders)} cases in {args.out / 'submissions'}; tasks in {args.out / 'tasks'}")


if __name__ == "__main__":
    main()
