"""Two CNNs for 1x28x28 images: the Fashion-MNIST CNN of the chapter-4 notebook and the BatchNorm CNN of the slides.

`fashion_cnn()`: [Conv -> ReLU -> Pool] x 3 -> Flatten -> Dense. Output shape of each layer for
X: (1, 1, 28, 28):

    Conv2d     [1, 64, 28, 28]     Conv2d     [1, 256, 7, 7]      Linear     [1, 64]
    ReLU       [1, 64, 28, 28]     ReLU       [1, 256, 7, 7]      ReLU       [1, 64]
    MaxPool2d  [1, 64, 14, 14]     Conv2d     [1, 256, 7, 7]      Dropout    [1, 64]
    Conv2d     [1, 128, 14, 14]    ReLU       [1, 256, 7, 7]      Linear     [1, 10]
    ReLU       [1, 128, 14, 14]    MaxPool2d  [1, 256, 3, 3]
    Conv2d     [1, 128, 14, 14]    Flatten    [1, 2304]
    ReLU       [1, 128, 14, 14]    Linear     [1, 128]
    MaxPool2d  [1, 128, 7, 7]      ReLU       [1, 128]
                                   Dropout    [1, 128]

Every convolution keeps the image size ("same" padding); the first one has a 7x7 kernel, the
others 3x3. `BatchNormCNN`: three blocks Conv -> BatchNorm -> ReLU -> MaxPool, then a hidden
layer Linear -> BatchNorm1d -> ReLU and the output layer. Fill in the `None`s.
"""

from functools import partial

import torch
from torch import nn

# A 3x3 convolution with "same" padding: the output keeps the input's height and width.
DefaultConv2d = partial(nn.Conv2d, kernel_size=3, padding="same")


def fashion_cnn() -> nn.Sequential:
    """The chapter-4 Fashion-MNIST CNN: X (N, 1, 28, 28) -> logits (N, 10). 1,413,834 parameters."""
    return nn.Sequential(
        DefaultConv2d(in_channels=1, out_channels=64, kernel_size=None), nn.ReLU(),
        nn.MaxPool2d(kernel_size=2),
        DefaultConv2d(in_channels=64, out_channels=None), nn.ReLU(),
        DefaultConv2d(in_channels=None, out_channels=128), nn.ReLU(),
        nn.MaxPool2d(kernel_size=2),
        DefaultConv2d(in_channels=128, out_channels=None), nn.ReLU(),
        DefaultConv2d(in_channels=None, out_channels=256), nn.ReLU(),
        nn.MaxPool2d(kernel_size=2),
        nn.Flatten(),
        nn.Linear(in_features=None, out_features=128), nn.ReLU(),
        nn.Dropout(None),  # dropout against overfitting: active in training mode only
        nn.Linear(in_features=128, out_features=64), nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(in_features=64, out_features=10),
    )


class BatchNormCNN(nn.Module):
    """The slides' MNIST CNN with batch normalization (`PyTorchCNN` there).

    X (N, 1, 28, 28) -> logits (N, num_classes). `cnn_layers` maps X to (N, 32, 1, 1):
    28 -> conv 5x5 -> 24 -> pool -> 12 -> conv 3x3 -> 10 -> pool -> 5 -> conv 3x3 -> 3 -> pool -> 1.
    6,178 parameters for 10 classes.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.cnn_layers = nn.Sequential(
            # block 1
            nn.Conv2d(1, 3, kernel_size=5),
            nn.BatchNorm2d(None),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2),
            # block 2
            nn.Conv2d(3, 16, kernel_size=3),
            nn.BatchNorm2d(None),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2),
            # block 3
            nn.Conv2d(16, 32, kernel_size=3),
            nn.BatchNorm2d(None),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2),
        )
        self.fc_layers = nn.Sequential(
            # hidden layer
            nn.Linear(None, 20),
            nn.BatchNorm1d(None),
            nn.ReLU(),
            # output layer
            nn.Linear(20, None),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 28, 28) -> logits (N, num_classes)."""
        x = self.cnn_layers(x)
        x = None  # (N, 32, 1, 1) -> (N, 32)
        return self.fc_layers(x)
