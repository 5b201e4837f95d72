"""The probes of `grade doctor`: they run in the sandbox, as a student's code would."""

import importlib

import torch


def imports(sub, names):
    """Import each module the probes need; their versions, where they say one."""
    return {name: str(getattr(importlib.import_module(name), "__version__", "")) for name in names}


def convolution(sub, x, w):
    """conv2d of x (N, C, H, W) by w (K, C, kh, kw) on the sandbox's device, back on the CPU."""
    return torch.nn.functional.conv2d(x.to(sub.device), w.to(sub.device)).cpu()
