"""make_transform and split_indices (data.py): the note's normalization, and a split without leakage.

The probes apply the student's transform to images drawn for this grading, handed over as PIL
images, and call split_indices with counts, fractions and seeds drawn too; the grader checks what
comes back against its own arithmetic.
"""

import pytest
import torch

from grader.i18n import _, number
from grader.testing import derived_seed, generator, probes_for

probes = probes_for(__file__)
# (count, validation fraction): count x fraction is a whole number, so that rounding it any way agrees
SPLITS = [(1000, 0.1), (50000, 0.1), (360, 0.25)]


@pytest.mark.points(2)
@pytest.mark.task("make_transform")
def test_transform_normalizes(submission):
    """make_transform: a (3, H, W) float tensor, each channel scaled to [0, 1], then (x - 0.5) / 0.5"""
    images = torch.randint(0, 256, (2, 6, 5, 3), dtype=torch.uint8, generator=generator("transform images"))
    images[0, 0, 0] = torch.tensor([0, 128, 255], dtype=torch.uint8)  # both ends and the middle of the range
    got = submission.run(probes.transformed, images)
    for pixels, out in zip(images, got, strict=True):
        assert isinstance(out, torch.Tensor), _("the transform gave {got}, expected a tensor").format(got=out)
        want = (pixels.permute(2, 0, 1).float() / 255 - 0.5) / 0.5
        assert list(out.shape) == list(want.shape), _(
            "a 6x5 RGB image became {got}, expected {want} (channels first)"
        ).format(got=list(out.shape), want=list(want.shape))
        low, high = out.min().item(), out.max().item()
        off = (out.float() - want).abs().max().item()
        assert off < 1e-5, _(
            "the values run from {low:.3f} to {high:.3f}, expected -1 to 1: ToTensor, then Normalize with "
            "mean 0.5 and std 0.5 for each of the 3 channels"
        ).format(low=low, high=high)


@pytest.fixture(scope="module")
def splits(submission):
    """split_indices for each (count, fraction) of SPLITS with a seed drawn for this grading, and the
    first one again with the same seed and with another."""
    seed = derived_seed("split seed") % 10**6
    calls = [(count, fraction, seed) for count, fraction in SPLITS]
    calls += [(SPLITS[0][0], SPLITS[0][1], seed), (SPLITS[0][0], SPLITS[0][1], seed + 1)]
    return [(call, submission.run(probes.split, *call, seed=index)) for index, call in enumerate(calls)]


def parts(call, result):
    assert "error" not in result, _(
        "split_indices returned {got}, expected (training indices, validation indices)"
    ).format(got=result.get("error"))
    return result["parts"]


@pytest.mark.points(2)
@pytest.mark.task("split_indices")
def test_split_sizes(splits):
    """split_indices: count x val_fraction indices for validation, the rest for training"""
    for call, result in splits[: len(SPLITS)]:
        count, fraction, _seed = call
        train, valid = parts(call, result)
        want = round(count * fraction)
        assert len(valid) == want, _(
            "with {count} images and val_fraction {fraction}, validation got {got} indices, expected {want}"
        ).format(count=number(count), fraction=fraction, got=number(len(valid)), want=number(want))
        assert len(train) == count - want, _(
            "with {count} images and val_fraction {fraction}, training got {got} indices, expected {want}"
        ).format(count=number(count), fraction=fraction, got=number(len(train)), want=number(count - want))


@pytest.mark.points(3)
@pytest.mark.task("split_indices")
def test_split_has_no_leakage(splits):
    """split_indices: no image in both parts, every image in one"""
    for call, result in splits[: len(SPLITS)]:
        count = call[0]
        train, valid = parts(call, result)
        both = len(set(train.tolist()) & set(valid.tolist()))
        assert not both, _("{both} images are in both the training and the validation part: leakage").format(
            both=number(both)
        )
        every = torch.cat([train, valid])
        outside = int(((every < 0) | (every >= count)).sum())
        assert not outside, _("{outside} indices are not in 0..{last}").format(outside=number(outside), last=count - 1)
        repeated = len(every) - len(set(every.tolist()))
        assert not repeated, _("{repeated} indices are drawn twice").format(repeated=number(repeated))
        left_out = count - len(set(every.tolist()))
        assert not left_out, _("{left_out} of {count} images are in neither part").format(
            left_out=number(left_out), count=number(count)
        )


@pytest.mark.points(2)
@pytest.mark.task("split_indices")
def test_split_is_random_and_seeded(splits):
    """split_indices: a random split, the same for the same seed, another for another seed"""
    (call, first), (_same_call, same), (_other_call, other) = splits[0], splits[-2], splits[-1]
    count = call[0]
    train, valid = parts(call, first)
    ordered = sorted(valid.tolist())
    assert ordered not in (list(range(len(valid))), list(range(count - len(valid), count))), _(
        "the validation part is the first or the last {size} images: draw it at random (torch.randperm)"
    ).format(size=len(valid))
    again = parts(call, same)
    assert all(torch.equal(a, b) for a, b in zip((train, valid), again, strict=True)), _(
        "the same seed gave another split: draw with a torch.Generator seeded with `seed`"
    )
    changed = parts(call, other)
    assert not torch.equal(valid, changed[1]), _("another seed gave the same split: the seed is not used")
