"""The count's rule on real exported programs: honest models count exactly
``sum(p.numel())`` (buffers and statistics reported apart), the write rule that keeps
phase B a pure function, and the over-the-limit rule's one home. The tricks themselves
are graded end to end in ``test_integrity.py`` (``tests/cheats/build_cheats.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.counting import over_limit, source_values
from harness.program.check import (
    CheckError,
    Expect,
    check_program,
    in_place,
    writes_into_argument,
)
from harness.program.count import ExportCount, count_program
from harness.program.ops import ALLOWED
from harness.regenerate import candidates, rebuild_files, regenerated
from harness.runner.rebuild import _fresh


def _count(
    factory: Callable[[], nn.Module],
    shape: tuple[int, ...],
    tmp: Path,
    *,
    allowance: int = 1024,
    extra_ops: tuple[str, ...] = (),
) -> tuple[ExportCount, nn.Module]:
    """Export a fresh model, check and count its program; buffers are compared with two
    weightless rebuilds, as the ``rebuild`` phase does in a sandbox."""
    torch.manual_seed(0)
    model = factory().eval()
    with torch.no_grad():
        program = torch.export.export(model, (torch.rand(shape),), strict=False)
    torch.export.save(program, str(tmp / "program.pt2"))
    expect = Expect(shape, "classification", 10, 2**30, extra_ops=extra_ops)
    checked, _ = check_program(tmp / "program.pt2", tmp / "clean.pt2", expect)
    count = count_program(checked, allowance, input_width=shape[1])
    names = candidates(count)
    if names:
        first, second = _fresh(factory, 1), _fresh(factory, 2)
        report = {"regenerated": {n: d for n, d in first.items() if second.get(n) == d}}
        found = regenerated(tmp / "clean.pt2", checked, names, report)
        count = count_program(checked, allowance, input_width=shape[1], regenerated=found)
    return count, model


class UnusedBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 10)
        self.spare = nn.BatchNorm2d(300)  # never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class AuxHead(nn.Module):
    """googlenet-style: an auxiliary classifier with batch norm, used only in training."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.aux = nn.Sequential(
            nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(256, 10)
        )
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> Any:
        y = F.relu(self.bn(self.conv(x)))
        out = self.fc(y.mean((2, 3)))
        return (out, self.aux(y)) if self.training else out


class Blocks(nn.Module):
    """520 conv-BN-ReLU blocks (1,040 batch-norm momentum/eps literals), written with
    functional calls so that exporting it takes seconds, not a minute."""

    def __init__(self, n: int = 520) -> None:
        super().__init__()
        self.convs = nn.ParameterList(nn.Parameter(torch.randn(2, 2, 1, 1)) for _ in range(n))
        self.norms = nn.ModuleList(nn.BatchNorm2d(2) for _ in range(n))
        self.stem, self.fc = nn.Conv2d(3, 2, 1), nn.Linear(2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        for w, bn in zip(self.convs, self.norms, strict=True):
            y = F.relu(
                F.batch_norm(F.conv2d(y, w), bn.running_mean, bn.running_var, bn.weight, bn.bias)
            )
        return self.fc(y.mean((2, 3)))


class NormalisationBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.fc = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(((x - self.mean) / self.std).flatten(1))


def _swin() -> nn.Module:
    import timm

    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        num_classes=10,
        img_size=56,
        embed_dim=24,
        depths=(1, 1),
        num_heads=(1, 2),
    )


def _levit() -> nn.Module:
    import timm

    return timm.create_model(
        "levit_128s",
        pretrained=False,
        num_classes=10,
        img_size=32,
        embed_dim=(32, 48, 64),
        num_heads=(1, 2, 2),
        depth=(1, 1, 1),
        key_dim=8,
    )


HONEST = [
    pytest.param(
        "unused_batchnorm2d_300", UnusedBatchNorm, (2, 3, 8, 8), 601, 0, id="unused_batchnorm2d_300"
    ),
    pytest.param(
        "googlenet_style_aux_head", AuxHead, (2, 3, 8, 8), 10, 16, id="googlenet_style_aux_head"
    ),
    pytest.param(
        "520_conv_bn_relu_blocks", Blocks, (2, 3, 4, 4), 520, 2080, id="520_conv_bn_relu_blocks"
    ),
    pytest.param(
        "registered_normalisation_buffer",
        NormalisationBuffer,
        (2, 3, 8, 8),
        0,
        0,
        id="registered_normalisation_buffer",
    ),
    pytest.param(
        "timm_swin_relative_position_index_attn_mask",
        _swin,
        (1, 3, 56, 56),
        0,
        0,
        id="timm_swin_relative_position_index_attn_mask",
    ),
    pytest.param(
        "timm_levit_attention_bias_idxs",
        _levit,
        (1, 3, 32, 32),
        None,
        None,
        id="timm_levit_attention_bias_idxs",
    ),
]


@pytest.mark.parametrize(("name", "factory", "shape", "unused", "stats"), HONEST)
def test_honest_models_count_exactly_their_parameters(
    name: str,
    factory: Callable[[], nn.Module],
    shape: tuple[int, ...],
    unused: int | None,
    stats: int | None,
    tmp_path: Path,
) -> None:
    ops = ("reshape_as", "hardswish_") if "levit" in name else ()  # beyond the base list
    count, model = _count(factory, shape, tmp_path, extra_ops=ops)
    parameters = sum(p.numel() for p in model.parameters())
    assert count.counted == count.parameters == parameters, [
        (r.group, r.layer.name, r.layer.numel) for r in count.rows if r.group != "parameter"
    ][:6]
    buffers = sum(b.numel() for b in model.buffers())
    assert count.norm_stats + count.regenerated + count.unused == buffers  # all apart
    if unused is not None:
        assert count.unused == unused and count.norm_stats == stats
    if "buffer" in name or "swin" in name or "levit" in name:
        assert count.regenerated > 0  # rebuilt identically without the weights


def test_a_norm_layer_on_a_constant_or_wider_than_its_layers_is_counted(tmp_path: Path) -> None:
    class Bank(nn.Module):
        def __init__(self, wide: bool) -> None:
            super().__init__()
            self.fc = nn.Linear(768, 10)
            self.bank = nn.BatchNorm1d(500, affine=False)
            self.wide = wide

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            source = x.flatten(1)[:, :500] * 0.0 if self.wide else torch.zeros(1, 500)
            return self.fc(x.flatten(1)) + self.bank(source)[:, :10]

    for wide in (False, True):
        count, model = _count(lambda w=wide: Bank(w), (2, 3, 16, 16), tmp_path)  # type: ignore[misc]
        assert count.counted == 7690 + 1000 and count.group_total("norm_table") == 1000
        assert count.norm_stats == 0


def test_literals_count_beyond_the_allowance_floats_and_integers(tmp_path: Path) -> None:
    class Spelled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(192, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(x.flatten(1))
            for i in range(50):
                y = y + torch.div(y * 0 + (i * 7919) % 4096, 64, rounding_mode="floor") * 0.5
            return y

    count, _ = _count(Spelled, (2, 3, 8, 8), tmp_path, allowance=64)
    assert count.literals == 200  # per step: 0, the code, 64 (integers) and 0.5 (a float)
    assert count.counted == 1930 + 200 - 64  # the excess only: no cliff


def test_values_wider_than_32_bits_count_per_32_bits(tmp_path: Path) -> None:
    class Wide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(192, 10)
            self.register_buffer("codes", torch.randint(0, 2**62, (100,)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) + (self.codes[:10] % 7).float()

    count, _ = _count(Wide, (2, 3, 8, 8), tmp_path, extra_ops=("remainder",))
    assert count.counted == 1930 + 200
    assert "64-bit" in count.names("buffer")[0]


def test_the_weights_file_counts_64_bit_values_per_32_bits(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from harness.params import count_from_header
    from harness.safetensors_header import read_header

    tensors = {"w": torch.zeros(10), "codes": torch.zeros(10, dtype=torch.int64)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    assert count_from_header(read_header(tmp_path / "w.safetensors")).counted == 10 + 20


# -- phase B is a pure function ---------------------------------------------------------
def _schemas() -> list[tuple[str, Any]]:
    out = []
    for name in sorted(ALLOWED):
        packet = getattr(torch.ops.aten, name, None)
        for overload in packet.overloads() if packet is not None else []:
            out.append((f"torch.ops.aten.{name}.{overload}", getattr(packet, overload)._schema))
    return out


def test_the_write_rule_matches_every_allowed_schema() -> None:
    """Every overload of an allowed operator whose schema writes is either an in-place
    variant (checked against stored tensors) or refused as writing into an argument."""
    for target, schema in _schemas():
        if schema.is_mutable:
            assert in_place(target) or writes_into_argument(target), target
        else:
            assert not writes_into_argument(target) and not in_place(target), target


def _export_check(model: nn.Module, tmp: Path) -> None:
    with torch.no_grad():
        program = torch.export.export(model.eval(), (torch.rand(2, 3, 8, 8),), strict=False)
    torch.export.save(program, str(tmp / "p.pt2"))
    check_program(tmp / "p.pt2", tmp / "c.pt2", Expect((2, 3, 8, 8), "classification", 10, 2**26))


def test_out_variants_and_writes_into_stored_tensors_are_refused(tmp_path: Path) -> None:
    class Counter(nn.Module):
        def __init__(self, how: str) -> None:
            super().__init__()
            self.fc = nn.Linear(192, 10)
            self.register_buffer("calls", torch.zeros(1))
            self.how = how

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.how == "out":
                torch.add(self.calls, 1, out=self.calls)
            elif self.how == "view":
                self.calls[:1].relu_()
            y = self.fc(x.flatten(1))
            return y.relu_() + self.calls if self.how == "intermediate" else y + self.calls

    with pytest.raises(CheckError, match="out= variant"):
        _export_check(Counter("out"), tmp_path)
    with pytest.raises(CheckError, match="changes its (own|stored) tensors"):
        _export_check(Counter("view"), tmp_path)
    _export_check(Counter("intermediate"), tmp_path)  # relu_ into a computed value: fine


# -- one home ---------------------------------------------------------------------------
def test_the_over_limit_rule() -> None:
    assert not over_limit(1000, 1000) and over_limit(1001, 1000)
    assert not over_limit(None, 1000) and not over_limit(10**9, None)


def test_source_values_counts_literals_and_blobs(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(
        "TABLE = [0.5, 1.5, 2]\nBLOB = '" + "A" * 400 + "'\nFLAG = True\n"
    )
    (tmp_path / "broken.py").write_text("def (:\n" + "x" * 396)  # 403 bytes
    assert source_values(tmp_path, ["model.py", "broken.py", "weights.safetensors"]) == (
        3 + 100 + 100
    )


def test_source_values_counts_short_strings_comments_and_readable_files(tmp_path: Path) -> None:
    """However the text is split, code can read it back: short strings and comment lines
    count by their characters, and so do the files beside the code (a report, the
    manifest); the weights file is never mounted for the rebuild."""
    pieces = "".join(f"P{i} = 'ABCDEFGHIJKLMNOP'  # {'Q' * 58}\n" for i in range(50))
    (tmp_path / "model.py").write_text(pieces)  # 50 x (16 + 60) characters
    (tmp_path / "REPORT.md").write_text("1.5 " * 1000)  # 4,000 bytes
    (tmp_path / "weights.safetensors").write_bytes(b"\0" * 8000)
    files = ["model.py", "REPORT.md", "weights.safetensors"]
    assert source_values(tmp_path, files) == 50 * 76 // 4 + 1000
    assert source_values(tmp_path, rebuild_files(files)) == 50 * 76 // 4  # code alone


# -- canaries ---------------------------------------------------------------------------
def test_canaries_come_from_the_secret_seed_and_mix_at_secret_positions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from kit import write_task

    from harness import canary
    from harness.data import prepare_split
    from harness.settings import settings
    from harness.tasks import load_task

    write_task(tmp_path / "tasks")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    task = load_task("tiny", tmp_path / "tasks")
    drawn = {}
    for seed in ("1", "2"):
        monkeypatch.setenv("HARNESS_SECRET_SEED", seed)
        settings.cache_clear()
        result = canary.draw(task, 8)
        assert result is not None
        drawn[seed] = result
    try:
        images, labels = drawn["1"]
        assert images.shape == (8, 1, 150, 150) and labels.shape == (8,)
        assert not np.array_equal(images, drawn["2"][0])  # another secret, other canaries
        public = prepare_split(task, "validation").images()
        assert not any(np.array_equal(img, p) for img in images for p in public)
        hidden = prepare_split(task, task.splits.hidden)
        mixed = canary.mix(hidden, images, labels, tmp_path / "mixed", "key")
        inputs = np.load(mixed.inputs_dir / "inputs.npy")
        assert sorted([*mixed.hidden_at, *mixed.canary_at]) == list(range(hidden.count + 8))
        assert np.array_equal(inputs[mixed.hidden_at], hidden.images())
        assert np.array_equal(mixed.labels(hidden.labels())[mixed.canary_at], labels)
    finally:
        settings.cache_clear()


def test_a_public_test_set_says_memorization_cannot_be_excluded() -> None:
    from harness import canary
    from harness.tasks import load_task

    root = Path(__file__).resolve().parent.parent / "tasks"
    for name in ("mnist", "cifar10"):
        task = load_task(name, root)
        assert canary.draw(task, 64) is None
        flag = canary.public_test_set_flag(task, None)
        assert flag is not None and "memorization cannot be excluded" in flag.message
    assert canary.public_test_set_flag(load_task("correlation", root), None) is None


# -- the weights file's floor and eval-mode caches ---------------------------------------
class IndexTable(nn.Module):
    """A Swin-style relative-position index: an int64 persistent buffer the code rebuilds."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.randn(7))
        self.register_buffer("index", (torch.arange(16) % 7).flip(0))
        self.fc = nn.Linear(3 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) + self.bias[self.index].sum()


def test_an_int64_index_table_in_the_weights_file_is_not_counted(tmp_path: Path) -> None:
    """The weights file counts the int64 table per 32 bits (32 values); what the program
    shows to be rebuilt by the code comes off at that width: the count is the parameters."""
    from safetensors.torch import save_file

    from harness.counting import verified_params
    from harness.params import count_from_header, to_params
    from harness.safetensors_header import read_header

    count, model = _count(IndexTable, (2, 3, 4, 4), tmp_path)
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    file = count_from_header(read_header(tmp_path / "w.safetensors"))
    parameters = sum(p.numel() for p in model.parameters())
    assert file.counted == parameters + 32
    assert next(r.numel for r in file.per_layer if r.name == "index") == 32
    assert count.counted == parameters and count.regenerated == 16
    assert verified_params(to_params(file, None), count, None, None).counted == parameters


class BiasCache(nn.Module):
    """timm LeViT's pattern: in eval mode, attention biases gathered from a parameter are
    cached in a dict on first use; ``train()`` drops the cache."""

    def __init__(self) -> None:
        super().__init__()
        self.biases = nn.Parameter(torch.randn(4, 6))
        self.register_buffer("idxs", torch.arange(36).remainder(6).view(6, 6), persistent=False)
        self.cache: dict[str, torch.Tensor] = {}
        self.fc = nn.Linear(3 * 4 * 4, 10)

    def train(self, mode: bool = True) -> BiasCache:
        super().train(mode)
        if mode:
            self.cache = {}
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            ab = self.biases[:, self.idxs]
        else:
            ab = self.cache.setdefault("cpu", self.biases[:, self.idxs])
        return self.fc(x.flatten(1)) + ab.mean()


@pytest.mark.parametrize("fresh", [True, False])
def test_phase_a_exports_without_the_dry_batch_cache(tmp_path: Path, fresh: bool) -> None:
    """After the dry batch, the cache holds 144 values gathered from the 24 biases: exported
    as is, they are a tensor made in forward and count on top of the parameters; phase A's
    ``fresh_eval`` drops the cache first, so the program gathers from the parameter (the
    index table is rebuilt by the code) and counts exactly the parameters."""
    from harness.runner.phase_a import fresh_eval, save

    torch.manual_seed(0)
    model = BiasCache().eval()
    x = torch.rand(2, 3, 4, 4)
    with torch.no_grad():
        model(x)  # the dry batch
    if fresh:
        fresh_eval(model)
    save(model, x, tmp_path / "program.pt2")
    expect = Expect(tuple(x.shape), "classification", 10, 2**30)
    checked, _ = check_program(tmp_path / "program.pt2", tmp_path / "clean.pt2", expect)
    first, second = _fresh(BiasCache, 1), _fresh(BiasCache, 2)
    report = {"regenerated": {n: d for n, d in first.items() if second.get(n) == d}}
    found = regenerated(tmp_path / "clean.pt2", checked, ["idxs"], report)
    count = count_program(checked, 1024, input_width=3, regenerated=found)
    parameters = sum(p.numel() for p in model.parameters())
    assert count.counted == (parameters if fresh else parameters + 144)


def test_the_eager_fallback_counts_64_bit_tensors_per_32_bits() -> None:
    """Without a program, the eager fallback adds the tensors the model shows outside its
    weights file, each value per 32 bits as the program's count does."""
    import numpy as np

    from harness.results import Params
    from harness.runner.inventory import inventory
    from harness.tasks import load_task
    from harness.verdicts import RunData

    class Outside(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 10)
            self.register_buffer("codes", torch.arange(6), persistent=False)  # int64
            self.register_buffer("scale", torch.ones(3), persistent=False)
            self.shift = torch.zeros(5, dtype=torch.float64)

    run = RunData(outputs=np.zeros(1), report={"model": inventory(Outside())})
    task = load_task("mnist", Path(__file__).parents[1] / "tasks")
    params = run.params(Params(counted=50, limit=None), task)
    assert params.counted == 50 + 6 * 2 + 3 + 5 * 2 and not params.verified
