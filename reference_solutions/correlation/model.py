"""Reference network for the correlation task: the seed student's CNN, for 1 x 150 x 150 input.

The seed resized the plots to 128 x 128 before a single convolution block (conv 3x3 to 8
channels, batch norm, tanh, 4x4 max pool) and a two-layer head (8*32*32 -> 128 -> 1),
1,049,073 parameters on RGB input. Here the input is grayscale and, to train in minutes
on a CPU, the network downsamples first (adaptive average pooling 150 -> 64) and pools
2x2, reaching the seed's 8 x 32 x 32 features and its exact head: 1,048,929 parameters.
"""

from __future__ import annotations

import torch
from torch import nn


class SeedCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resize = nn.AdaptiveAvgPool2d(64)  # 150 x 150 -> 64 x 64
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(8),
            nn.Tanh(),
            nn.MaxPool2d(2, 2),  # 8 x 32 x 32
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(8 * 32 * 32, 128),
            nn.Tanh(),
            nn.Linear(128, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.resize(x))).squeeze(1)


def build_model() -> nn.Module:
    return SeedCNN()
