"""Reference network for the fashion-mnist task: the seed's MNIST CNN (write-up 003), unchanged.

CONV -> RELU -> MAXPOOL -> CONV -> RELU -> MAXPOOL -> FULLY CONNECTED -> RELU -> FULLY
CONNECTED, on 1 x 28 x 28 images: 5 x 5 convolutions to 16 and 32 channels (padding 2,
so 28 -> 14 -> 7 after the pools) and a 32*7*7 -> 128 -> 10 head. 215,370 parameters.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16 x 14 x 14
            nn.Conv2d(16, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 32 x 7 x 7
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_model() -> nn.Module:
    return DigitCNN()
