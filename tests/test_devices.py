"""The GPU rule's one home: a task pinned to the CPU, or a caller saying no, never gets
one; otherwise a grading uses a GPU exactly when one is available where it runs."""

from __future__ import annotations

import os

import pytest

from harness.devices import gpu_present, use_gpu


@pytest.mark.parametrize(
    ("device", "asked", "available", "expected"),
    [
        ("auto", None, True, True),
        ("auto", None, False, False),
        ("auto", True, True, True),
        ("auto", False, True, False),
        ("cpu", None, True, False),
        ("cpu", True, True, False),
    ],
)
def test_use_gpu(device: str, asked: bool | None, available: bool, expected: bool) -> None:
    assert use_gpu(device, asked, available) is expected


def test_a_gpu_is_here_only_with_the_device_nodes() -> None:
    assert gpu_present() == (os.path.exists("/dev/nvidiactl") and os.path.exists("/dev/nvidia0"))
