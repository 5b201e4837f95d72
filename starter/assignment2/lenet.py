"""LeNet-5 for 1x28x28 images: sigmoid activations and average pooling, as LeCun had them.

The one change from the 1998 network: the last layer is a plain linear layer, not a Gaussian one.
Output shape of each layer for X: (1, 1, 28, 28):

    Conv2d     [1, 6, 28, 28]      Linear     [1, 120]
    Sigmoid    [1, 6, 28, 28]      Sigmoid    [1, 120]
    AvgPool2d  [1, 6, 14, 14]      Linear     [1, 84]
    Conv2d     [1, 16, 10, 10]     Sigmoid    [1, 84]
    Sigmoid    [1, 16, 10, 10]     Linear     [1, 10]
    AvgPool2d  [1, 16, 5, 5]
    Flatten    [1, 400]

Both convolutions use 5x5 kernels; the first pads by 2 to keep 28x28. Fill in the `None`s.
"""

from torch import nn

net = nn.Sequential(
    nn.Conv2d(1, None, kernel_size=None, padding=2), nn.Sigmoid(),
    nn.AvgPool2d(kernel_size=2, stride=2),
    nn.Conv2d(6, None, kernel_size=None), nn.Sigmoid(),
    nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
    nn.Linear(None, None), nn.Sigmoid(),
    nn.Linear(None, None), nn.Sigmoid(),
    nn.Linear(None, None),
)
