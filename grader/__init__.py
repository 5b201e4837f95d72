"""An autograding kit for convolutional-network assignments in PyTorch."""

__version__ = "0.1.0"
