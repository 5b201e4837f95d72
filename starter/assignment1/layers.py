"""ReLU and the fully connected layer by hand: the steps after convolution in the digit "7" example.

ReLU(x) = max(0, x), element-wise. A fully connected layer maps a flattened feature map x to
y = W x + b; PyTorch stores W as (out_features, in_features), as nn.Linear does.
"""

from __future__ import annotations

import torch


def relu(x: torch.Tensor) -> torch.Tensor:
    """max(0, x) element-wise, by hand (no torch.relu, F.relu or nn.ReLU), in a new tensor.

    x: any shape; returns the same shape and dtype, and leaves x unchanged.
    """
    raise NotImplementedError("relu: max(0, x) by hand")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = W x + b for one vector or a batch of row vectors, by hand (no F.linear or nn.Linear).

    x: (in_features,) or (N, in_features); weight: (out_features, in_features); bias: (out_features,)
    or None. Returns (out_features,) or (N, out_features).
    """
    raise NotImplementedError("linear: y = W x + b by hand")
