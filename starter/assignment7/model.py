"""SimpleCNN: the note's smallest convolutional network, for square colour images.

One block: a 3x3 convolution from 3 to 16 channels with stride 1 and padding 1, ReLU, then 2x2 max
pooling with stride 2; the pooled maps are flattened into one fully connected layer. The shapes
through the block for a batch of N images of image_size x image_size pixels (CIFAR-10: 32):

    input      [N, 3, S, S]
    conv1      [N, 16, ?, ?]       padding 1 keeps the size of a 3x3 convolution with stride 1
    pooling    [N, 16, ?, ?]       a 2x2 window with stride 2
    flattened  [N, ?]
    fc         [N, num_classes]

Work the `?`s out for any even S: the layer sizes must follow `image_size`, not one number.
Fill in the `None`s.
"""

import torch
from torch import nn


class SimpleCNN(nn.Module):
    """x: (N, 3, image_size, image_size) -> logits (N, num_classes)."""

    def __init__(self, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=None, kernel_size=3, stride=1, padding=None)
        self.activation = nn.ReLU()
        self.pooling = nn.MaxPool2d(kernel_size=None, stride=2)
        pooled = None  # the side of the pooled maps: the convolution keeps S, the pooling halves it
        self.fc = nn.Linear(in_features=16 * pooled * pooled, out_features=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = None  # conv1 -> ReLU -> pooling
        x = None  # flatten: (N, C, H, W) -> (N, C * H * W), the batch dimension kept
        return self.fc(x)
