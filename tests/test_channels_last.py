"""Phase B's 2-D convolutions on channels-last tensors (``interpreter.Program(...,
channels_last=True)``, what phase B runs on a CPU): the fast layout is taken, the outputs
equal eager PyTorch's up to float rounding, and views, in-place writes and metadata
checks after a convolution see what they were traced with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from harness.program.check import Expect, check_program
from harness.runner.interpreter import Program

CPU = torch.device("cpu")


def _clean(model: nn.Module, shape: tuple[int, ...], tmp_path: Path) -> Path:
    raw, clean = tmp_path / "program.pt2", tmp_path / "clean.pt2"
    with torch.no_grad():
        program = torch.export.export(model.eval(), (torch.rand(shape),), strict=False)
    torch.export.save(program, str(raw))
    check_program(raw, clean, Expect(shape, "classification", 4, 2**26))
    return clean


class _Convolutions(TorchDispatchMode):
    """Records, for each convolution, whether its input had channels-last strides."""

    def __init__(self) -> None:
        super().__init__()
        self.channels_last: list[bool] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default):
            self.channels_last.append(args[0].stride(1) == 1)
        return func(*args, **(kwargs or {}))


def _run(model: nn.Module, shape: tuple[int, ...], tmp_path: Path) -> list[bool]:
    """Both interpreters against eager on one batch; the fast one's convolution layouts."""
    torch.manual_seed(0)
    clean = _clean(model, shape, tmp_path)
    x = torch.rand(shape)
    with torch.inference_mode():
        expected = model(x)
        assert torch.equal(Program(clean, CPU)(x), expected)  # the plain layout: exact
        seen = _Convolutions()
        fast = Program(clean, CPU, channels_last=True)
        with seen:
            got = fast(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got.is_contiguous() == expected.is_contiguous()
    return seen.channels_last


class ViewAfterConv(nn.Module):
    """A flatten by ``view`` (not viewable on channels-last strides), after in-place ReLUs."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.c2(self.act(self.c1(x)))))
        return self.fc(y.view(y.size(0), -1))


class Writes(nn.Module):
    """In-place writes after a convolution: into a slice of its output, and into the
    output itself while a view of it is alive (the view must see the write)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        y[:, :2] *= 2.0
        v = y.view(y.size(0), 8, -1)
        y.mul_(3.0)
        z = self.c2(F.relu(y))
        return v.sum(2)[:, :4] + z.mean((2, 3))


class Branches(nn.Module):
    """A residual add with the block's input, a concatenation, a transpose and a metadata
    check (``.to``) after convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.SiLU())
        self.mix = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        r = self.block(s) + s
        c = self.mix(torch.cat([r, F.max_pool2d(s, 3, 1, 1)], 1)).to(torch.float32)
        return c.transpose(2, 3)[:, :, :1, :1].flatten(1) * 1.5


class OneChannel(nn.Module):
    """A grayscale input (one channel: both layouts hold the same bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c2(torch.tanh(F.adaptive_avg_pool2d(self.c1(x), 4)))
        return self.fc(torch.flatten(y.mean((2, 3)), 1))


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (ViewAfterConv(), (2, 3, 8, 8)),
        (Writes(), (2, 3, 8, 8)),
        (Branches(), (2, 3, 8, 8)),
        (OneChannel(), (2, 1, 8, 8)),
    ],
    ids=["view-after-conv", "writes", "branches", "one-channel"],
)
def test_convolutions_run_channels_last_with_eager_values(
    model: nn.Module, shape: tuple[int, ...], tmp_path: Path
) -> None:
    layouts = _run(model, shape, tmp_path)
    assert layouts and all(layouts), layouts


def test_an_autocast_body_runs_channels_last_with_eager_values(tmp_path: Path) -> None:
    """A convolution inside a wrapper's body; its channels-last value leaves the body."""

    class Body(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
                h = F.relu(self.conv(x))
            return self.fc(h.view(h.size(0), -1))

    assert all(_run(Body(), (2, 3, 8, 8), tmp_path))


def test_the_plain_layout_is_the_default(tmp_path: Path) -> None:
    clean = _clean(ViewAfterConv(), (2, 3, 8, 8), tmp_path)
    seen = _Convolutions()
    with torch.inference_mode(), seen:
        Program(clean, CPU)(torch.rand(2, 3, 8, 8))
    assert seen.channels_last == [False, False]
