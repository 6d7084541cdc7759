"""The operator allow-list as designed (``harness/program/ops.py``), the host check of the
nodes real models need (in-place activations, higher-order wrappers, zero-output nodes),
the phase-B interpreter on them, and the folder cap that follows the task."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from kit import make_submission, write_task
from torch import nn

from harness.program.check import CheckError, Expect, check_program
from harness.program.count import count_program
from harness.program.ops import ALLOWED, HIGHER_ORDER, HIGHER_ORDER_ARGS
from harness.runner.interpreter import Program
from harness.submission import load_submission

EXPECT = Expect(input_shape=(2, 3, 8, 8), kind="classification", num_classes=4, max_bytes=2**26)


def test_every_listed_operator_exists_and_has_a_reason() -> None:
    for key, reason in ALLOWED.items():
        name, _, overload = key.partition(".")
        packet = getattr(torch.ops.aten, name)  # raises for a name torch does not have
        assert not overload or overload in packet.overloads(), key
        assert len(reason) > 30, key
    assert set(HIGHER_ORDER) == set(HIGHER_ORDER_ARGS)
    # in-place forms are listed only beside their functional form
    for key in ALLOWED:
        if key.endswith("_") and not key.startswith("_"):
            assert key[:-1] in ALLOWED, key
    # the packed-sequence RNN overloads take lengths from data: not listed
    assert "lstm.input" in ALLOWED and "lstm" not in ALLOWED


def _archive(model: nn.Module, tmp_path: Path) -> Path:
    path = tmp_path / "program.pt2"
    with torch.no_grad():
        program = torch.export.export(model.eval(), (torch.rand(2, 3, 8, 8),), strict=False)
    torch.export.save(program, str(path))
    return path


def _check(model: nn.Module, tmp_path: Path) -> tuple[Path, list[float], int]:
    clean = tmp_path / "clean.pt2"
    program, literals = check_program(_archive(model, tmp_path), clean, EXPECT)
    return clean, literals, count_program(program, allowance=0).counted


class Autocast(nn.Module):
    """A `torch.autocast` block (as in timm's EfficientViT) holding float literals."""

    def __init__(self, enabled: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 4)
        self.enabled = enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.enabled):
            h = torch.relu(self.bn(self.conv(x))) * 0.375 + 0.625
        return self.fc(h.float().mean((2, 3)))


@pytest.mark.parametrize("enabled", [False, True])
def test_an_autocast_block_is_checked_counted_and_run_as_eager(
    tmp_path: Path, enabled: bool
) -> None:
    torch.manual_seed(0)
    model = Autocast(enabled).eval()
    clean, literals, counted = _check(model, tmp_path)
    # the body's literals count (with allowance 0); the batch norm inside the body is fed by
    # the conv, so its statistics are structural, and its momentum and eps are settings
    assert 0.375 in literals and 0.625 in literals
    assert counted == sum(p.numel() for p in model.parameters()) + 2
    x = torch.rand(2, 3, 8, 8)
    with torch.inference_mode():
        assert torch.equal(Program(clean, torch.device("cpu"))(x), model(x))


class GradBlocks(nn.Module):
    """`torch.enable_grad()` inside a forward exported under no_grad: a grad-mode wrapper."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            h = self.fc(x.mean((2, 3))) * 0.5
        return h + 1.5


def test_a_grad_mode_block_is_checked_and_run_as_eager(tmp_path: Path) -> None:
    model = GradBlocks().eval()
    clean, literals, _ = _check(model, tmp_path)
    assert 0.5 in literals
    x = torch.rand(2, 3, 8, 8)
    with torch.inference_mode():
        assert torch.equal(Program(clean, torch.device("cpu"))(x), model(x))


class BodyWrites(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(4))
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            self.scale.relu_()  # a write into a stored tensor, inside the body
            h = self.fc(x.mean((2, 3))) * self.scale
        return h


class BodyCumprod(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self.fc(x.mean((2, 3))).cumprod(1)


class WritesInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.hardtanh(x, 0.0, 6.0, inplace=True).mean((2, 3)))


class WritesWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nn.functional.silu(self.fc.weight, inplace=True)
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize(
    ("model", "phrase"),
    [
        (BodyWrites, "changes its own tensors|changes its stored tensors"),
        (BodyCumprod, "aten.cumprod.default is not on the allow-list"),
        (WritesInput, "changes its own tensors|changes its stored tensors"),
        (WritesWeight, "silu_"),
    ],
)
def test_writes_into_stored_tensors_and_unlisted_operators_are_refused_inside_bodies_too(
    tmp_path: Path, model: type[nn.Module], phrase: str
) -> None:
    import re

    with pytest.raises(CheckError) as info:
        _check(model(), tmp_path)
    assert re.search(phrase, info.value.message), info.value.message


class Inplace(nn.Module):
    """In-place activations on intermediates, as MobileNet and EfficientNet write them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.acts = nn.Sequential(
            nn.ReLU6(inplace=True),
            nn.Hardswish(inplace=True),
            nn.SiLU(inplace=True),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Dropout(0.2, inplace=True),
        )
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.acts(self.conv(x.float()))  # x.float(): a node without outputs
        return self.fc(1 - torch.sigmoid(h.mean((2, 3))))  # 1 - x: aten.rsub.Scalar


def test_inplace_activations_on_intermediates_pass_and_run_as_eager(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Inplace().eval()
    clean, literals, counted = _check(model, tmp_path)
    assert sorted(literals) == [0.0, 0.1, 0.2, 6.0]  # hardtanh's bounds, the slope, p
    # with allowance 0 every value literal counts: those four floats and rsub's integer 1
    assert counted == sum(p.numel() for p in model.parameters()) + len(literals) + 1
    x = torch.rand(2, 3, 8, 8)
    with torch.inference_mode():
        assert torch.equal(Program(clean, torch.device("cpu"))(x), model(x))


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.truncate(size)


@pytest.mark.parametrize(
    ("limit", "folder_mb", "size_mb", "phrase"),
    [
        (2_000_000, None, 51, "at most 50 MiB (the contract's cap"),
        (15_000_000, None, 60, None),  # 4 x 15 M + 8 MiB = 65.2 MiB
        (15_000_000, None, 66, "4 bytes x parameter_limit 15,000,000 + 8 MiB"),
        (2_000_000, 100, 99, None),
        (2_000_000, 100, 101, "at most 100 MiB (task tiny's `limits.folder_mb`)"),
    ],
)
def test_the_folder_cap_follows_the_task(
    env: Path, tmp_path: Path, limit: int, folder_mb: int | None, size_mb: int, phrase: str | None
) -> None:
    task = write_task(env, limit=limit) / "task.toml"
    if folder_mb is not None:
        text = task.read_text().replace("[limits]\n", f"[limits]\nfolder_mb = {folder_mb}\n")
        task.write_text(text)
    folder = make_submission(tmp_path / "subs", "big", save=True)
    _sparse(folder / "blob.bin", size_mb * 2**20)
    sub = load_submission(folder, tasks_dir=env)
    sizes = [v for v in sub.violations if v.rule == "folder.size"]
    if phrase is None:
        assert sizes == []
    else:
        assert len(sizes) == 1 and phrase in sizes[0].message, sizes
    os.remove(folder / "blob.bin")
