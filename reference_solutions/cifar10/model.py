"""Reference network for the cifar10 task: the seed lab's CNN (write-ups 001 and 002).

[CONV 3x3 + RELU + CONV 3x3 + RELU + MAXPOOL] x 3 with feature maps growing from 32 to
64, 128 and 256 (3 -> 32 -> 64, 64 -> 128 -> 128, 128 -> 256 -> 256; padding 1, so
32 -> 16 -> 8 -> 4 after the pools), then FC 256*4*4 -> 256 + RELU + DROPOUT, FC 256 -> 64
+ RELU, FC 64 -> 10. The write-up gives the layer counts and widths but not which
convolution first widens; this is the reading used here.
"""

from __future__ import annotations

import torch
from torch import nn


def _stage(c_in: int, c_mid: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_mid, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c_mid, c_out, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]


class LabCNN(nn.Module):
    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_stage(3, 32, 64),  # 64 x 16 x 16
            *_stage(64, 128, 128),  # 128 x 8 x 8
            *_stage(128, 256, 256),  # 256 x 4 x 4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 4 * 4, 256),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(256, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_model() -> nn.Module:
    return LabCNN()
