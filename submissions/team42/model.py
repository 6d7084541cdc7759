"""team42: a small CNN for "guess the correlation" (1 x 150 x 150 scatter plot -> r)."""

from torch import nn


class CorrNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(3),  # 150 -> 50: the dots are small, 50 x 50 still shows the shape
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 25 x 25
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 12 x 12
        )
        self.regressor = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 12 * 12, 64),
            nn.ReLU(),
            nn.Linear(64, 1),
            nn.Tanh(),  # a correlation is in [-1, 1]
        )

    def forward(self, x):
        return self.regressor(self.features(x)).squeeze(1)


def build_model():
    return CorrNet()
