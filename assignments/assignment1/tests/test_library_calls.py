"""Which torch functions the student's functions call, next to what they return.

The functions written by hand must give the library's result without calling the library function
they re-implement (nor the module that wraps it: nn.Conv2d calls F.conv2d). Each way of global
average pooling must give the channel means with its own tool. A TorchFunctionMode sees every call
of a torch function, tensor method or torch.nn.functional function made while it is active,
whichever name it was reached by (F.conv2d, torch.conv2d, nn.Conv2d, torch.ops.aten.convolution...).
The log (probes.CallLog) only says why a function fails: each point also needs the result that the
grader computes here, with the library, on inputs drawn for this grading.
"""

import pytest
import torch
import torch.nn.functional as F

from grader.i18n import _
from grader.testing import generator, probes_for

probes = probes_for(__file__)

# function written by hand -> (module, the name fragments of the calls it may not make, what to name)
BY_HAND = {
    "conv2d": ("conv", ("conv",), "F.conv2d, torch.conv2d or nn.Conv2d"),
    "relu": ("layers", ("relu", "threshold"), "torch.relu, F.relu or nn.ReLU"),
    "linear": ("layers", ("linear",), "F.linear or nn.Linear"),
    "max_pool2d": ("pooling", ("max_pool",), "F.max_pool2d or nn.MaxPool2d"),
    "avg_pool2d": ("pooling", ("avg_pool", "conv"), "F.avg_pool2d, nn.AvgPool2d or a convolution"),
}
LIBRARY = {
    "conv2d": F.conv2d,
    "relu": F.relu,
    "linear": F.linear,
    "max_pool2d": F.max_pool2d,
    "avg_pool2d": F.avg_pool2d,
}
GLOBAL_WAYS = ["global_avg_pool_mean", "global_avg_pool_adaptive", "global_avg_pool_kernel"]


def small_shape():
    """(1, C, H, W) with H != W, drawn for this grading."""
    rng = generator("global pooling shape")
    h, w = torch.randperm(10, generator=rng)[:2].add(3).tolist()
    return (1, int(torch.randint(1, 6, (1,), generator=rng)), h, w)


GLOBAL_SHAPES = {"70x120": (2, 3, 70, 120), "small": small_shape()}


def inputs_for(function):
    """The arguments of `function`, drawn for this grading."""
    rng = generator(f"by hand {function}")
    x = torch.randn(1, 2, 6, 6, generator=rng)
    if function == "conv2d":
        return x, torch.randn(3, 2, 3, 3, generator=rng), torch.randn(3, generator=rng), 1, 1
    if function == "linear":
        return torch.randn(3, 4, generator=rng), torch.randn(2, 4, generator=rng), torch.randn(2, generator=rng)
    if function == "relu":
        return (x,)
    return x, 2  # the pooling functions: 2x2 windows


def check_result(function, out, expected):
    """A by-hand or global-pooling check counts only for a function that gives the right result."""
    shape = list(out.shape) if isinstance(out, torch.Tensor) else out if isinstance(out, str) else type(out).__name__
    assert shape == list(expected.shape), _("{function} returned {shape}, expected {expected_shape}").format(
        function=function, shape=shape, expected_shape=list(expected.shape)
    )
    error = (out.double() - expected.double()).abs().nan_to_num(nan=float("inf")).max().item()
    assert error < 1e-4, _("{function} differs from the expected result by up to {error:.3g}").format(
        function=function, error=error
    )


@pytest.mark.points(5)
@pytest.mark.parametrize("function", [pytest.param(f, marks=pytest.mark.task(f)) for f in BY_HAND])
def test_written_by_hand(submission, function):
    """conv2d, relu, linear, max_pool2d, avg_pool2d: the library's result, without calling the library"""
    module, fragments, library = BY_HAND[function]
    args = inputs_for(function)
    got = submission.run(probes.calls_of, module, function, *args)
    forbidden = [name for name, _ in got["calls"] if any(fragment in name for fragment in fragments)]
    assert not forbidden, _("{function} calls {forbidden0}: write it by hand, without {library}").format(
        function=function, forbidden0=forbidden[0], library=library
    )
    check_result(function, got["out"], LIBRARY[function](*args))


@pytest.mark.points(3)
@pytest.mark.parametrize("way", [pytest.param(way, marks=pytest.mark.task(way)) for way in GLOBAL_WAYS])
@pytest.mark.parametrize("size", GLOBAL_SHAPES)
def test_global_average_pooling(submission, way, size):
    """global_avg_pool_*: the channel means, (N, C, 1, 1), each way with its own tool"""
    shape = GLOBAL_SHAPES[size]
    x = torch.rand(shape, generator=generator(f"global pooling {way} {size}"))
    got = submission.run(probes.calls_of, "pooling", way, x)
    check_result(way, got["out"], x.double().mean(dim=(2, 3), keepdim=True))
    names = [name for name, _ in got["calls"]]
    pools = [name for name in names if "pool" in name]
    if way == "global_avg_pool_mean":
        assert not pools, _("{way} calls {pools0}: this way is a plain mean over height and width").format(
            way=way, pools0=pools[0]
        )
    elif way == "global_avg_pool_adaptive":
        assert "adaptive_avg_pool2d" in names, _(
            "{way} never calls adaptive_avg_pool2d: use nn.AdaptiveAvgPool2d(1)"
        ).format(way=way)
    else:
        kernels = [kernel for name, kernel in got["calls"] if name == "avg_pool2d"]
        assert kernels, _("{way} never calls avg_pool2d: use nn.AvgPool2d with one window as large as x").format(
            way=way
        )
        assert kernels[0] == list(shape[2:]), _(
            "{way} pools with kernel_size {kernels0}, expected x's height and width {shape}"
        ).format(way=way, kernels0=kernels[0], shape=list(shape[2:]))
