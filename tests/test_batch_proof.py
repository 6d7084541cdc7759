"""The batch-independence proof (``harness/program/batch.py``): honest architectures are
proved (so phase B skips the whole-split re-run), and every way an output can depend on
the other images in its batch, or on its place there, or on randomness, is not (so the
re-run still runs and flags it: ``tests/cheats`` ``batch_dependent``, ``random_output``).

Each model is exported by ``torch.export`` and checked by the host exactly as phase A and
the check stage do; a proved model is also run, to see that image 0 alone gives the same
output as beside other images, at another place in the batch (within the determinism
check's tolerance: kernels round a row by its place, in eager PyTorch as well)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from harness.program.batch import independence
from harness.program.check import Expect, check_program

B = 4
SHAPE = (B, 3, 32, 32)


def _prove(model: nn.Module, tmp: Path, shape: tuple[int, ...] = SHAPE) -> tuple[bool, str]:
    torch.manual_seed(0)
    model = model.eval()
    x = torch.rand(shape)
    with torch.no_grad():
        program = torch.export.export(model, (x,), strict=False)
    torch.export.save(program, str(tmp / "program.pt2"))
    expect = Expect(shape, "classification", 10, 2**30)
    checked, _ = check_program(tmp / "program.pt2", tmp / "clean.pt2", expect)
    proof = independence(checked, shape[0])
    if proof.proven:  # the claim, tested: image 0 at the last place, beside other images
        run = program.module()
        with torch.no_grad():
            alone = run(x)[0]
            y, place = torch.rand(shape), shape[0] - 1
            y[place] = x[0]
            beside = run(y)[place]
        # the determinism check's tolerance: kernels may round a row differently by its
        # place in the batch (a few 1e-8 in eager PyTorch too), never more
        limit = 1e-4 * (1 + float(alone.abs().max()))
        assert float((alone - beside).abs().max()) <= limit, "proved, yet the batch mattered"
    return proof.proven, proof.reason


class Head(nn.Module):
    """A small CNN trunk; ``tail`` does what the case is about with its (B, 10) logits."""

    def __init__(self, tail: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.tail = tail
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)
        self.table = nn.Parameter(torch.randn(B, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu_(self.bn(self.conv(x)))
        y = self.fc(nn.functional.dropout(y.mean((2, 3)), 0.5, self.training))
        return self.tail(self, y)


def _lstm() -> nn.Module:
    class Rows(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(32 * 3, 16, batch_first=True)
            self.fc = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rows = x.permute(0, 2, 1, 3).flatten(2)  # (B, 32 rows, 96)
            out, _ = self.lstm(rows)
            return self.fc(out[:, -1])

    return Rows()


HONEST: dict[str, Callable[[], nn.Module]] = {
    "cnn_bn_dropout_inplace_relu": lambda: Head(lambda m, y: y),
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
    # nn.MultiheadAttention lays tokens out (tokens * batch, features), a class token
    # expanded over the batch, dropout in eval mode
    "vit": lambda: torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=10,
    ),  # fmt: skip
    # windows merge each image's rows into the batch dimension; the shifted-window mask
    # is built in place from zeros
    "swin": lambda: torchvision.models.SwinTransformer(
        patch_size=[2, 2],
        embed_dim=16,
        depths=[2],
        num_heads=[2],
        window_size=[4, 4],
        num_classes=10,
    ),  # fmt: skip
    "lstm_over_rows": _lstm,
    "free_table_gathered": lambda: Head(lambda m, y: y + m.table[torch.tensor([0])]),
}

# (what the model does with the other images or its place, the operator the proof names)
TRICKS: dict[str, tuple[Callable[[nn.Module, torch.Tensor], torch.Tensor], str]] = {
    "batch_mean": (lambda m, y: y - y.mean(), "aten.mean"),
    "softmax_over_the_batch": (lambda m, y: y.softmax(0), "softmax"),
    "neighbour_roll": (lambda m, y: y.roll(1, 0), "aten.roll"),
    "sorted_batch": (lambda m, y: y.sort(0).values, "aten.sort"),
    "first_image_for_all": (lambda m, y: y[0:1].expand(B, 10), "aten.slice"),
    "gram_matrix": (lambda m, y: (y @ y.t()) @ y, "aten.matmul"),
    "pairs_interleaved": (
        lambda m, y: y.reshape(2, B // 2, 10).transpose(0, 1).reshape(B, 10),
        "interleaves",
    ),
    "table_by_place": (lambda m, y: y + m.table, "by their place in the batch"),
    "arange_by_place": (lambda m, y: y + torch.arange(B)[:, None], "by their place"),
    "cat_a_table": (lambda m, y: torch.cat([y, m.table], 1)[:, :10] + m.table, "place"),
    "noise": (lambda m, y: y + 0.1 * torch.randn_like(y), "random"),
    "batch_statistics": (
        lambda m, y: nn.functional.batch_norm(y, None, None, training=True),
        "batch's statistics",
    ),
    "written_into_a_buffer": (
        lambda m, y: torch.zeros(B, 10).add_(y).sum(0, keepdim=True).expand(B, 10),
        "writes in place",
    ),
    "index_the_batch": (lambda m, y: y[torch.tensor([1, 0, 3, 2])], "aten.index"),
}


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_architectures_are_proved(name: str, tmp_path: Path) -> None:
    proven, reason = _prove(HONEST[name](), tmp_path)
    assert proven, reason


@pytest.mark.parametrize("name", sorted(TRICKS))
def test_outputs_that_depend_on_the_batch_are_not_proved(name: str, tmp_path: Path) -> None:
    tail, named = TRICKS[name]
    proven, reason = _prove(Head(tail), tmp_path)
    assert not proven
    assert named in reason, reason


def test_one_image_per_call_is_proved_unless_random(tmp_path: Path) -> None:
    """With a static batch of 1 nothing else shares the call: only randomness matters."""
    shape = (1, 3, 32, 32)
    assert _prove(Head(lambda m, y: y - y.mean()), tmp_path, shape)[0]
    noisy = Head(lambda m, y: y + torch.randn_like(y))
    assert _prove(noisy, tmp_path, shape) == (False, "aten.randn_like.default draws random values")


def test_an_operator_a_task_adds_is_not_assumed_independent(tmp_path: Path) -> None:
    """``[integrity] operators`` may add any ATen operator (here ``erfinv``): the proof
    knows nothing of it, so the re-run decides, even when it only sees free values."""
    model = Head(lambda m, y: y + torch.erfinv(m.table[:1] * 0.1))
    torch.manual_seed(0)
    x = torch.rand(SHAPE)
    with torch.no_grad():
        program = torch.export.export(model.eval(), (x,), strict=False)
    torch.export.save(program, str(tmp_path / "program.pt2"))
    expect = Expect(SHAPE, "classification", 10, 2**30, extra_ops=("erfinv",))
    checked, _ = check_program(tmp_path / "program.pt2", tmp_path / "clean.pt2", expect)
    proof = independence(checked, B)
    assert not proof.proven and "aten.erfinv" in proof.reason, proof
