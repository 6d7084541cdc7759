"""Parameter counts from real weights files written by safetensors.torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from torch import nn

from harness.counting import over_limit
from harness.params import ParamCount, count_from_header, to_params
from harness.results import LayerCount, Params
from harness.safetensors_header import read_header


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, bias=False),
            nn.BatchNorm2d(16, affine=False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.features(x)))


def count_file(path: Path) -> ParamCount:
    return count_from_header(read_header(path))


def save_numpy(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    safetensors.numpy.save_file(arrays, str(path))
    return path


def test_honest_model_matches_parameters(tmp_path: Path) -> None:
    model = SmallNet()
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path))
    count = count_file(path)
    assert count.counted == sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for name, b in model.named_buffers())
    assert count.buffers == stats == 2 * 8 + 1 + 2 * 16 + 1
    assert count.total == sum(t.numel() for t in model.state_dict().values())
    kinds = {layer.name: layer.kind for layer in count.per_layer}
    assert kinds == {
        name: "norm_stat" if name in dict(model.named_buffers()) else "parameter"
        for name in model.state_dict()
    }
    shapes = {layer.name: (layer.shape, layer.numel) for layer in count.per_layer}
    for name, tensor in model.state_dict().items():
        assert shapes[name] == (list(tensor.shape), tensor.numel())


def test_per_layer_rows_are_result_schema_rows(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(SmallNet().state_dict(), str(path))
    count = count_file(path)
    assert all(isinstance(row, LayerCount) for row in count.per_layer)
    params = to_params(count, limit=1000)
    assert isinstance(params, Params)
    assert params.counted == count.counted and params.limit == 1000
    assert params.buffers == count.buffers
    assert params.weights_file == count.counted + count.buffers
    assert [r.name for r in params.per_layer] == [r.name for r in count.per_layer]
    assert not params.verified
    Params.model_validate_json(params.model_dump_json())  # survives the result document


def test_over_limit() -> None:
    count = ParamCount(counted=5, buffers=100)
    assert over_limit(count.counted, 4) and not over_limit(count.counted, 5)
    assert not over_limit(count.counted, None)


def test_tied_weights_count_once(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(50, 12)
            self.head = nn.Linear(12, 50, bias=False)
            self.head.weight = self.embed.weight

    model = Tied()
    path = tmp_path / "tied.safetensors"
    with pytest.raises(RuntimeError, match="share memory"):
        safetensors.torch.save_file(model.state_dict(), str(path))
    safetensors.torch.save_model(model, str(path))
    assert len(model.state_dict()) == 2  # both names are in the state_dict ...
    assert len(read_header(path).tensors) == 1  # ... the file keeps one
    assert count_file(path).counted == sum(p.numel() for p in model.parameters()) == 600


def test_disguised_running_mean_counts(tmp_path: Path) -> None:
    arrays = {
        "hidden.running_mean": np.zeros(1_000_000, dtype=np.float32),
        "fc.weight": np.zeros((2, 3), dtype=np.float32),
    }
    count = count_file(save_numpy(tmp_path / "w.safetensors", arrays))
    assert count.counted == 1_000_006 and count.buffers == 0


@pytest.mark.parametrize(
    ("arrays", "stats"),
    [
        # a real pair of running statistics without affine parameters
        ({"bn.running_mean": np.zeros(4), "bn.running_var": np.ones(4)}, 8),
        # the sibling has a different shape
        ({"bn.running_mean": np.zeros(4), "bn.weight": np.ones(5)}, 0),
        # 2-D running stats with a same-shaped sibling
        ({"bn.running_var": np.zeros((4, 4)), "bn.weight": np.zeros((4, 4))}, 0),
        # a sibling of another prefix does not count
        ({"a.running_mean": np.zeros(4), "b.weight": np.ones(4)}, 0),
        # the name must be the whole last segment
        ({"bn.my_running_mean": np.zeros(4), "bn.weight": np.ones(4)}, 0),
        # integer running stats are not statistics
        ({"bn.running_mean": np.zeros(4, np.int64), "bn.weight": np.ones(4)}, 0),
        # a model that is itself a BatchNorm: no prefix
        (
            {"running_mean": np.zeros(3), "weight": np.ones(3), "num_batches_tracked": np.array(1)},
            4,
        ),
        # num_batches_tracked: one integer, scalar or (1,)
        ({"bn.num_batches_tracked": np.array([5])}, 1),
        ({"bn.num_batches_tracked": np.zeros(1000, np.int64)}, 0),
        ({"bn.num_batches_tracked": np.array(5.0)}, 0),
    ],
)
def test_norm_stat_needs_name_and_shape(
    tmp_path: Path, arrays: dict[str, np.ndarray], stats: int
) -> None:
    narrow = {"float64": np.float32, "int64": np.int32}  # 64-bit values count twice
    arrays = {k: a.astype(narrow.get(a.dtype.name, a.dtype)) for k, a in arrays.items()}
    count = count_file(save_numpy(tmp_path / "w.safetensors", arrays))
    total = sum(a.size for a in arrays.values())
    assert count.buffers == stats
    assert count.counted == total - stats
    assert sum(r.numel for r in count.per_layer if r.kind == "norm_stat") == stats


def test_non_norm_buffers_count(tmp_path: Path) -> None:
    class WithBuffer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.register_buffer("table", torch.randn(100, 4))

    model = WithBuffer()
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path))
    count = count_file(path)
    assert count.counted == sum(p.numel() for p in model.parameters()) + 400
    assert count.buffers == 0


def test_bf16_and_scalars_count_by_numel(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    tensors = {"w": torch.zeros(3, 5, dtype=torch.bfloat16), "s": torch.tensor(2.0)}
    safetensors.torch.save_file(tensors, str(path))
    assert count_file(path).counted == 16
