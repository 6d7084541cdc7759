"""Reference network for the cifar10-resnet task: the seed's ResNet (write-up 004).

The course template's ResNet with the seed's choices: N = 4 residual layers of
B = [5, 3, 2, 1] basic blocks, C = 50 channels in the first layer (doubling at each
layer: 50, 100, 200, 400), F = 3 (3 x 3 convolutions in the blocks), K = 1 (1 x 1
convolutions on the skip connections that change shape), P = 4 (4 x 4 average pool
before the classifier). 4,257,260 parameters, under the task's limit of 5,000,000.
The write-up reports "4.9M"; its table read with the standard template (kuangliu-style
basic blocks, projection shortcuts only where the shape changes) gives the count above.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int = 3, skip: int = 1) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel, stride=1, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, skip, stride=stride, padding=skip // 2, bias=False),
                nn.BatchNorm2d(c_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self,
        blocks: tuple[int, ...] = (5, 3, 2, 1),
        channels: int = 50,
        kernel: int = 3,
        skip: int = 1,
        pool: int = 4,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, kernel, padding=kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        layers: list[nn.Module] = []
        c_in = channels
        for i, count in enumerate(blocks):
            c_out = channels * 2**i
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(BasicBlock(c_in, c_out, stride, kernel, skip))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(pool)
        side = 32 // 2 ** (len(blocks) - 1) // pool
        self.linear = nn.Linear(c_in * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.pool(self.layers(out))
        return self.linear(torch.flatten(out, 1))


def build_model() -> nn.Module:
    return ResNet()
