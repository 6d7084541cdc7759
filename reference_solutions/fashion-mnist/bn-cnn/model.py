"""Stronger reference for the fashion-mnist task: a small CNN with batch normalization.

Two 3 x 3 convolution stages (1 -> 24 -> 32 channels), each CONV -> BATCHNORM -> RELU ->
MAXPOOL (28 -> 14 -> 7), then 32*7*7 -> 128 -> 10 with dropout. About 60 % of the seed
CNN's cost per image (1.7 M multiply-adds against 2.8 M), and it learns faster: 209,362
parameters plus the normalization layers' running statistics (buffers).
"""

from __future__ import annotations

import torch
from torch import nn


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class ClothesCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_stage(1, 24), _stage(24, 32))  # 32 x 7 x 7
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 128),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_model() -> nn.Module:
    return ClothesCNN()
