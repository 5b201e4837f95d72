"""Counting parameters and memory: the slides' small CNN against their large MLP.

A Conv2d has one kH x kW filter per (input channel, output channel) pair plus one bias per output
channel; a Linear layer one weight per (input, output) pair plus one bias per output. In float32
each parameter takes 4 bytes. The MLP has about 1.5 billion parameters: build it on the meta
device, where tensors have a shape and a dtype but no memory, to count them without allocating.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# The slides print 0.004683 GB for the CNN and 5.645276 GB for the MLP: how many bytes is their GB,
# 10**9 or 2**30? Work it out from the parameter counts.
BYTES_PER_GB = None


def conv2d_parameters(
    in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], bias: bool = True
) -> int:
    """The number of parameters of nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias).

    kernel_size: an int, or (kH, kW).
    """
    kh, kw = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
    return None


def linear_parameters(in_features: int, out_features: int, bias: bool = True) -> int:
    """The number of parameters of nn.Linear(in_features, out_features, bias=bias)."""
    return None


def count_parameters(model: nn.Module) -> int:
    """Every parameter of the model, frozen ones included.

    Buffers, such as BatchNorm's running mean and variance, are not parameters.
    """
    return None


def model_size_bytes(model: nn.Module) -> int:
    """The bytes the model's parameters take: for each, its number of elements times its element size."""
    return None


def on_meta(make: Callable[[], nn.Module]) -> nn.Module:
    """The model that make() builds (a class, or a function), built on the meta device: nothing is allocated."""
    with torch.device("meta"):  # the statement's way: everything built in this block is on the meta device
        return None  # the model that make() builds


class SmallCNN(nn.Module):
    """The slides' CNN ("ML_CNN"): 1,257,014 parameters.

    Three 3x3 convolutions, stride 1, padding 1, each followed by ReLU: 1 -> 4 -> 8 -> 16 channels,
    then flatten and a classifier: Linear(16 * 28 * 28 -> 100), ReLU, Linear(100 -> 10).
    x: (N, 1, 28, 28) -> logits (N, 10).
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, None, kernel_size=None, stride=1, padding=None)
        self.conv2 = nn.Conv2d(None, None, kernel_size=None, stride=1, padding=None)
        self.conv3 = nn.Conv2d(None, None, kernel_size=None, stride=1, padding=None)
        self.fc_layer = nn.Sequential(nn.Linear(None, 100), nn.ReLU(), nn.Linear(100, None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.fc_layer(torch.flatten(x, 1))


class BigMLP(nn.Module):
    """The slides' MLP: 1,515,392,110 parameters.

    Four Linear layers on the flattened 3x224x224 image, with ReLU between them:
    3 * 224 * 224 -> 10,000 -> 1,000 -> 100 -> 10. x: (N, 3, 224, 224) -> logits (N, 10).
    """

    def __init__(self):
        super().__init__()
        self.linear1 = nn.Linear(None, 10_000)
        self.linear2 = nn.Linear(10_000, None)
        self.linear3 = nn.Linear(None, None)
        self.output = nn.Linear(None, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.linear1(x))
        x = F.relu(self.linear2(x))
        x = F.relu(self.linear3(x))
        return self.output(x)
