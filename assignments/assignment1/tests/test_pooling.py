"""Pooling (pooling.py): max and average pooling by hand, and depth-wise max pooling.

Expected values come from F.max_pool2d and F.avg_pool2d, or from plain loops written here, on
inputs drawn for this grading (next to the walk-through's 4x4 map). Global average pooling is
checked in test_library_calls.py, with the tool each way must use.
"""

import pytest
import torch
import torch.nn.functional as F

from grader.i18n import _
from grader.testing import generator, probes_for

probes = probes_for(__file__)

# The walk-through's 4x4 feature map: 2x2 max pooling with stride 2 gives [[2, 1], [1, 2]].
EXAMPLE = [[2, 1, 0, 0], [1, 2, 1, 0], [0, 1, 2, 1], [0, 0, 1, 2]]
# x shape, kernel_size, stride (None: the default, kernel_size)
POOL_CASES = {
    "2x2": ((2, 3, 6, 8), 2, None),
    "2x2, odd size": ((1, 2, 7, 9), 2, None),
    "3x3, stride 1": ((2, 2, 6, 7), 3, 1),
    "3x3, stride 2": ((1, 3, 9, 10), 3, 2),
}
# channels, kernel_size, stride, padding of DepthMaxPool2d
DEPTH_CASES = {
    "6 channels, kernel 3": (6, 3, None, 0),
    "5 channels, kernel 2, stride 1": (5, 2, 1, 0),
    "5 channels, kernel 3, stride 2, padding 1": (5, 3, 2, 1),
    "7 channels, kernel 3 (one left over)": (7, 3, None, 0),
}


def shape_of(out):
    return list(out.shape) if isinstance(out, torch.Tensor) else out if isinstance(out, str) else type(out).__name__


def random_batch(shape, label):
    return torch.randn(shape, generator=generator(label))


def pool(submission, function, x, *args):
    """sub.pooling.<function>(x, *args), in the sandbox."""
    (out,) = submission.run(probes.each, "pooling", function, [(x, *args)])
    return out


def max_error(got, expected):
    """The largest absolute difference; a NaN anywhere is as far as can be."""
    return (got.double() - expected.double()).abs().nan_to_num(nan=float("inf")).max().item()


def check_pool(got, expected, name, where):
    hint = _(": the stride defaults to kernel_size") if "default stride" in where else ""
    assert shape_of(got) == list(expected.shape), _(
        "{name} output is {shape_of}, expected {shape} ({where}){hint}"
    ).format(name=name, shape_of=shape_of(got), shape=list(expected.shape), where=where, hint=hint)
    error = max_error(got, expected)
    assert error < 1e-5, _("{name} differs from F.{name} by up to {error:.3g} ({where})").format(
        name=name, error=error, where=where
    )


def check_examples(submission, name, expected_example):
    """The walk-through's 4x4 map, then a 4x4 map of small whole numbers drawn for this grading."""
    library = getattr(F, name)
    x = torch.tensor(EXAMPLE, dtype=torch.float32)[None, None]
    drawn = torch.randint(0, 4, (1, 1, 4, 4), generator=generator(f"{name} example")).float()
    assert library(x, 2)[0, 0].tolist() == expected_example  # the walk-through's figures hold
    got, got_drawn = submission.run(probes.each, "pooling", name, [(x, 2), (drawn, 2)])
    check_pool(got, library(x, 2), name, _("the 4x4 example, 2x2 windows, default stride"))
    where = _("the 4x4 map {int}, 2x2 windows, default stride").format(int=drawn[0, 0].int().tolist())
    check_pool(got_drawn, library(drawn, 2), name, where)


@pytest.mark.points(1)
@pytest.mark.task("max_pool2d", "windows")
def test_max_pool_example(submission):
    """max_pool2d: the walk-through's 4x4 map gives [[2, 1], [1, 2]]"""
    check_examples(submission, "max_pool2d", [[2, 1], [1, 2]])


@pytest.mark.points(1)
@pytest.mark.task("avg_pool2d", "windows")
def test_avg_pool_example(submission):
    """avg_pool2d: the walk-through's 4x4 map gives [[1.5, 0.25], [0.25, 1.5]]"""
    check_examples(submission, "avg_pool2d", [[1.5, 0.25], [0.25, 1.5]])


@pytest.mark.points(2)
@pytest.mark.task("max_pool2d", "windows")
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_matches(submission, case):
    """max_pool2d: equals F.max_pool2d on random inputs"""
    shape, kernel_size, stride = POOL_CASES[case]
    x = random_batch(shape, f"max_pool2d {case}")
    got = pool(submission, "max_pool2d", x, kernel_size, stride)
    where = f"x {list(shape)}, {case}" + (_(", default stride") if stride is None else "")
    check_pool(got, F.max_pool2d(x, kernel_size, stride), "max_pool2d", where)


@pytest.mark.points(2)
@pytest.mark.task("avg_pool2d", "windows")
@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool_matches(submission, case):
    """avg_pool2d: equals F.avg_pool2d on random inputs"""
    shape, kernel_size, stride = POOL_CASES[case]
    x = random_batch(shape, f"avg_pool2d {case}")
    got = pool(submission, "avg_pool2d", x, kernel_size, stride)
    where = f"x {list(shape)}, {case}" + (_(", default stride") if stride is None else "")
    check_pool(got, F.avg_pool2d(x, kernel_size, stride), "avg_pool2d", where)


def depth_max_pool(x, kernel_size, stride, padding):
    """Depth-wise max pooling by plain loops: output channel o is the max of input channels
    o * stride - padding ... o * stride - padding + kernel_size - 1 that exist."""
    stride = kernel_size if stride is None else stride
    channels = x.shape[1]
    count = (channels + 2 * padding - kernel_size) // stride + 1
    outputs = []
    for o in range(count):
        start = o * stride - padding
        kept = range(max(start, 0), min(start + kernel_size, channels))
        outputs.append(torch.stack([x[:, c] for c in kept]).amax(0))
    return torch.stack(outputs, dim=1)


@pytest.mark.points(2)
@pytest.mark.task("DepthMaxPool2d")
@pytest.mark.parametrize("case", DEPTH_CASES)
def test_depth_max_pool(submission, case):
    """DepthMaxPool2d: the max over neighbouring channels, at every pixel"""
    channels, kernel_size, stride, padding = DEPTH_CASES[case]
    x = random_batch((2, channels, 5, 4), f"DepthMaxPool2d {case}")
    got = submission.run(probes.depth_pool, x, kernel_size, stride, padding)
    expected = depth_max_pool(x, kernel_size, stride, padding)
    assert shape_of(got) == list(expected.shape), _(
        "DepthMaxPool2d output is {shape_of}, expected {shape} (x [2, {channels}, 5, 4], {case})"
    ).format(shape_of=shape_of(got), shape=list(expected.shape), channels=channels, case=case)
    assert torch.equal(got, expected), _(
        "DepthMaxPool2d differs from the max over each group of channels ({case})"
    ).format(case=case)


@pytest.mark.points(1)
@pytest.mark.task("DepthMaxPool2d")
def test_depth_max_pool_on_a_permuted_crop(submission):
    """DepthMaxPool2d: works on a non-contiguous crop of permuted images, as in the notebook"""
    # The notebook's images are (N, H, W, C) permuted to (N, C, H, W), then cropped: the probe does it.
    images = random_batch((2, 20, 30, 3), "DepthMaxPool2d permuted")
    crop = (5, 5, 10, 20)  # top, left, height, width
    got = submission.run(probes.depth_pool_permuted, images, *crop, 3)
    assert got["contiguous"] is False, _("the probe's crop was contiguous")  # the grader's own setup
    expected = probes.permuted_crop(images, *crop).amax(dim=1, keepdim=True)  # kernel 3: the max over R, G, B
    out = got["out"]
    assert shape_of(out) == [2, 1, 10, 20], _("DepthMaxPool2d output is {shape_of}, expected [2, 1, 10, 20]").format(
        shape_of=shape_of(out)
    )
    assert torch.equal(out, expected), _("DepthMaxPool2d differs from the max over R, G and B")
