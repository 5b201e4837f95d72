"""The grader's own copies of the slides' two models, as the statement fixes them and the starter
leaves them blank (answers: never released, grader.testing.official_for; no sandbox sees this
module). The SmallCNN is filled with the weights drawn for a grading, as the probe fills the
student's, and recomputes the logits; the BigMLP is only built on the meta device, for its
parameters' shapes."""

import torch
from torch import nn


class SmallCNN(nn.Module):
    """The slides' CNN: three 3x3 convolutions with padding 1 and ReLU, 1 -> 4 -> 8 -> 16 channels,
    then Linear(16 * 28 * 28 -> 100), ReLU, Linear(100 -> 10). x (N, 1, 28, 28) -> logits (N, 10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.fc_layer = nn.Sequential(nn.Linear(16 * 28 * 28, 100), nn.ReLU(), nn.Linear(100, 10))

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.fc_layer(torch.flatten(x, 1))


class BigMLP(nn.Module):
    """The slides' MLP, with Linear(1000, 100) as their count needs (their code says Linear(1000, 10))."""

    def __init__(self):
        super().__init__()
        self.linear1 = nn.Linear(3 * 224 * 224, 10_000)
        self.linear2 = nn.Linear(10_000, 1_000)
        self.linear3 = nn.Linear(1_000, 100)
        self.output = nn.Linear(100, 10)
