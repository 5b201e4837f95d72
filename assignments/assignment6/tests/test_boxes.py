"""Bounding boxes (boxes.py): format conversion, area, IoU, and boxes that follow their image through v2 transforms.

Conversions and IoU are checked against torchvision.ops and against values worked out by hand; the
transforms run on scikit-learn's two sample photos, with boxes around the flower and the tower.
"""

import math

import pytest
import torch
import torchvision.transforms.v2 as T
from torchvision import tv_tensors
from torchvision.ops import box_convert, box_iou

from grader.data import sample_photos

# CXCYWH boxes on the photos (427 x 640): the tower's middle floors, then the flower.
PHOTO_BOXES = [[220.0, 220.0, 220.0, 160.0], [308.0, 222.0, 280.0, 276.0]]
HEIGHT, WIDTH = 427, 640


def plain(value):
    """A student's result as plain data: tensor subclasses (tv_tensors) become tensors, errors become text."""
    if isinstance(value, torch.Tensor):
        return value.detach().as_subclass(torch.Tensor).clone()
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else f"a {type(value).__name__}"


def attempt(function, *args):
    """Call a student's function; an exception comes back as {"error": ...} for the test to report."""
    try:
        return plain(function(*args))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}


def check_tensor(value, what, shape):
    """Fail with a one-line reason unless `value` is a tensor of `shape`."""
    if isinstance(value, dict) and "error" in value:
        pytest.fail(f"{what} raised {value['error']}")
    assert isinstance(value, torch.Tensor), f"{what} returned {value!r}, not a tensor"
    assert list(value.shape) == list(shape), f"{what} has shape {list(value.shape)}, expected {list(shape)}"
    return value.double()


def random_cxcywh(count, seed):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(count, 2, generator=generator) * 100
    sizes = 1 + torch.rand(count, 2, generator=generator) * 50
    return torch.cat([centres, sizes], dim=1)


# IoU cases worked out by hand: (name, box a, box b, IoU).
IOU_CASES = [
    ("identical", [0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0], 1.0),
    ("overlapping by a corner", [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], 1 / 7),  # 1 / (4 + 4 - 1)
    ("nested", [0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 3.0], 0.25),  # the inner box's 4 over the outer's 16
    ("touching along an edge", [0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0], 0.0),
    ("disjoint", [0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0], 0.0),  # no clamp: (-1) * (-1) = 1 "overlap"
    ("side by side", [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 5.0, 2.0], 0.0),  # no clamp: (-1) * 2 = -2
]


def box_functions(sub, cxcywh, xyxy_a, xyxy_b, cases):
    """Probe: the conversions, areas and IoUs of the student's boxes.py on the given boxes."""
    return {
        "to_xyxy": attempt(sub.boxes.box_cxcywh_to_xyxy, cxcywh),
        "to_cxcywh": attempt(sub.boxes.box_xyxy_to_cxcywh, xyxy_a),
        "area": attempt(sub.boxes.box_area, xyxy_a),
        "iou": attempt(sub.boxes.box_iou, xyxy_a, xyxy_b),
        "cases": [attempt(sub.boxes.box_iou, torch.tensor([a]), torch.tensor([b])) for _, a, b, _ in cases],
    }


@pytest.fixture(scope="module")
def inputs():
    cxcywh = random_cxcywh(8, seed=1)
    return {
        "cxcywh": cxcywh,
        "xyxy_a": box_convert(cxcywh, "cxcywh", "xyxy"),
        "xyxy_b": box_convert(random_cxcywh(5, seed=2), "cxcywh", "xyxy"),
    }


@pytest.fixture(scope="module")
def results(submission, inputs):
    return submission.run(box_functions, inputs["cxcywh"], inputs["xyxy_a"], inputs["xyxy_b"], IOU_CASES)


def first_difference(got, expected, rows):
    """The first row where got and expected differ: a message fragment."""
    index = int(((got - expected).abs().max(dim=1).values > 1e-4).nonzero()[0])
    show = lambda t: "(" + ", ".join(f"{v:g}" for v in t.tolist()) + ")"
    return f"{show(rows[index])} gives {show(got[index])}, expected {show(expected[index])}"


@pytest.mark.points(2)
@pytest.mark.task("box_cxcywh_to_xyxy")
def test_cxcywh_to_xyxy(results, inputs):
    """box_cxcywh_to_xyxy: agrees with torchvision.ops.box_convert"""
    rows = inputs["cxcywh"]
    got = check_tensor(results["to_xyxy"], "box_cxcywh_to_xyxy", rows.shape)
    expected = box_convert(rows, "cxcywh", "xyxy").double()
    assert torch.allclose(got, expected, atol=1e-4), (
        f"box (cx, cy, w, h) = {first_difference(got, expected, rows)}: x1 = cx - w/2, x2 = cx + w/2 (half the width)"
    )


@pytest.mark.points(2)
@pytest.mark.task("box_xyxy_to_cxcywh")
def test_xyxy_to_cxcywh(results, inputs):
    """box_xyxy_to_cxcywh: agrees with torchvision.ops.box_convert"""
    rows = inputs["xyxy_a"]
    got = check_tensor(results["to_cxcywh"], "box_xyxy_to_cxcywh", rows.shape)
    expected = box_convert(rows, "xyxy", "cxcywh").double()
    assert torch.allclose(got, expected, atol=1e-4), (
        f"box (x1, y1, x2, y2) = {first_difference(got, expected, rows)}: cx = (x1 + x2)/2, w = x2 - x1"
    )


@pytest.mark.points(1)
@pytest.mark.task("box_area")
def test_box_area(results, inputs):
    """box_area: width times height"""
    rows = inputs["xyxy_a"]
    got = check_tensor(results["area"], "box_area", [len(rows)])
    expected = ((rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1])).double()
    assert torch.allclose(got, expected, rtol=1e-5), f"box_area gives {got.tolist()}, expected {expected.tolist()}"


@pytest.mark.points(2)
@pytest.mark.task("box_iou", "box_area")
def test_iou_matches_torchvision(results, inputs):
    """box_iou: every pair, as torchvision.ops.box_iou computes it"""
    a, b = inputs["xyxy_a"], inputs["xyxy_b"]
    got = check_tensor(results["iou"], "box_iou", [len(a), len(b)])
    expected = box_iou(a, b).double()
    difference = (got - expected).abs().max().item()
    assert difference < 1e-5, f"box_iou differs from torchvision.ops.box_iou by up to {difference:.3g} on 8 x 5 boxes"


def iou_case(results, name):
    index = next(i for i, case in enumerate(IOU_CASES) if case[0] == name)
    _, a, b, expected = IOU_CASES[index]
    got = check_tensor(results["cases"][index], f"box_iou on one {name} pair", [1, 1]).item()
    return a, b, got, expected


@pytest.mark.points(2)
@pytest.mark.task("box_iou", "box_area")
def test_iou_of_disjoint_boxes_is_zero(results):
    """box_iou: 0 for boxes that do not overlap"""
    for name in ("disjoint", "side by side"):
        a, b, got, expected = iou_case(results, name)
        assert math.isclose(got, expected, abs_tol=1e-6), (
            f"IoU of the {name} boxes {a} and {b} is {got:.4g}, expected 0: "
            "clamp the intersection's width and height at 0 (clamp(min=0)) before multiplying them"
        )


@pytest.mark.points(2)
@pytest.mark.task("box_iou", "box_area")
def test_iou_by_hand(results):
    """box_iou: identical, overlapping, nested and touching boxes"""
    for name in ("identical", "overlapping by a corner", "nested", "touching along an edge"):
        a, b, got, expected = iou_case(results, name)
        assert math.isclose(got, expected, abs_tol=1e-6), (
            f"IoU of the {name} boxes {a} and {b} is {got:.4g}, expected {expected:.4g}"
        )


# --- boxes through v2 transforms -------------------------------------------------------------


def rotate_left_90():
    return T.RandomRotation(degrees=(90, 90), expand=True)  # counter-clockwise; the canvas becomes 640 x 427


# The notebook's augmentation, less its colour jitter and normalization (they leave boxes alone).
NOTEBOOK_PIPELINE_SEEDS = (0, 1)


def notebook_pipeline():
    return T.Compose(
        [
            T.RandomHorizontalFlip(p=0.5),
            T.RandomRotation(degrees=30),
            T.RandomResizedCrop(size=(224, 224), scale=(0.8, 1.0)),
        ]
    )


# name -> (the transform, seeds). Deterministic ones run once; the notebook's pipeline once per seed.
TRANSFORMS = {
    "horizontal flip": (lambda: T.RandomHorizontalFlip(p=1.0), (0,)),
    "resize to 224 x 224": (lambda: T.Resize((224, 224)), (0,)),
    "centre crop to 401 x 600": (lambda: T.CenterCrop((401, 600)), (0,)),
    "rotation by 90 degrees": (rotate_left_90, (0,)),
    "notebook pipeline": (notebook_pipeline, NOTEBOOK_PIPELINE_SEEDS),
}


def made_boxes(sub, boxes):
    """Probe: make_boxes on each photo's box, and where torchvision's horizontal flip sends it."""
    out = []
    for box in boxes:
        try:
            made = sub.boxes.make_boxes(torch.tensor([box]), HEIGHT, WIDTH)
            flipped = T.RandomHorizontalFlip(p=1.0)(made)
        except Exception as exc:
            out.append({"error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
            continue
        out.append(
            {
                "value": plain(made),
                "type": type(made).__name__,
                "format": str(getattr(getattr(made, "format", None), "name", getattr(made, "format", None))),
                "canvas_size": list(getattr(made, "canvas_size", None) or ()),
                "flipped": plain(flipped),
            }
        )
    return out


def transform_photos(sub, photos, boxes):
    """Probe: transform_with_boxes on each photo and its box (made here), for each transform and seed."""
    runs = {}
    for photo, box in zip(photos, boxes, strict=True):
        for name, (build, seeds) in TRANSFORMS.items():
            for seed in seeds:
                made = tv_tensors.BoundingBoxes([box], format="CXCYWH", canvas_size=(HEIGHT, WIDTH))
                torch.manual_seed(seed)
                runs.setdefault(name, []).append(attempt(sub.boxes.transform_with_boxes, build(), photo, made))
    return runs


@pytest.fixture(scope="module")
def photos():
    return sample_photos()


@pytest.fixture(scope="module")
def transformed(submission, photos):
    return submission.run(transform_photos, photos, PHOTO_BOXES)


@pytest.mark.points(2)
@pytest.mark.task("make_boxes")
def test_make_boxes(submission):
    """make_boxes: BoundingBoxes in CXCYWH on a (height, width) canvas"""
    for made, box in zip(submission.run(made_boxes, PHOTO_BOXES), PHOTO_BOXES, strict=True):
        if "error" in made:
            pytest.fail(f"make_boxes raised {made['error']}")
        got = check_tensor(made["value"], "make_boxes", [1, 4])
        assert made["type"] == "BoundingBoxes", (
            f"make_boxes returned a {made['type']}, expected tv_tensors.BoundingBoxes"
        )
        assert made["format"] == "CXCYWH", f"the boxes' format is {made['format']}, expected CXCYWH"
        assert got.tolist() == [box], f"make_boxes holds {got.tolist()}, expected {[box]}"
        flipped = check_tensor(made["flipped"], "the flipped boxes", [1, 4])[0, 0].item()
        assert made["canvas_size"] == [HEIGHT, WIDTH] and flipped == WIDTH - box[0], (
            f"canvas_size is {tuple(made['canvas_size'])}, expected ({HEIGHT}, {WIDTH}), (height, width): "
            f"a horizontal flip sends the centre x = {box[0]:g} to {flipped:g}, not to {WIDTH} - {box[0]:g}"
        )


def run_result(transformed, name, photo_index, seed_index=0):
    """(image, boxes) of one transform of one photo, with one-line reasons for what is wrong."""
    seeds = TRANSFORMS[name][1]
    result = transformed[name][photo_index * len(seeds) + seed_index]
    if isinstance(result, dict):
        pytest.fail(f"transform_with_boxes with a {name} raised {result['error']}")
    assert isinstance(result, list) and len(result) == 2, (
        f"transform_with_boxes returned {result!r}, expected (image, boxes)"
    )
    image, boxes = result
    assert isinstance(image, torch.Tensor) and isinstance(boxes, torch.Tensor), (
        "transform_with_boxes must return the transformed image and boxes, both tensors"
    )
    return image, boxes.double()


def expected_boxes(name, box):
    """The CXCYWH box after each deterministic transform, worked out by hand."""
    cx, cy, w, h = box
    if name == "horizontal flip":  # x -> 640 - x
        return [WIDTH - cx, cy, w, h]
    if name == "resize to 224 x 224":  # x scaled by 224/640, y by 224/427
        return [cx * 224 / WIDTH, cy * 224 / HEIGHT, w * 224 / WIDTH, h * 224 / HEIGHT]
    if name == "centre crop to 401 x 600":  # the crop starts at x = (640 - 600)/2 = 20, y = (427 - 401)/2 = 13
        return [cx - 20, cy - 13, w, h]
    if name == "rotation by 90 degrees":  # counter-clockwise, expanded: (x, y) -> (y, 640 - x); w and h swap
        return [cy, WIDTH - cx, h, w]
    raise KeyError(name)


def expected_image(name, photo, seed):
    torch.manual_seed(seed)
    return TRANSFORMS[name][0]()(tv_tensors.Image(photo)).as_subclass(torch.Tensor)


@pytest.mark.points(4)
@pytest.mark.task("transform_with_boxes")
@pytest.mark.parametrize(
    "name", ["horizontal flip", "resize to 224 x 224", "centre crop to 401 x 600", "rotation by 90 degrees"]
)
def test_boxes_follow_the_image(transformed, photos, name):
    """transform_with_boxes: the boxes move with the image"""
    for index, (photo, box) in enumerate(zip(photos, PHOTO_BOXES, strict=True)):
        image, boxes = run_result(transformed, name, index)
        assert torch.equal(image, expected_image(name, photo, 0)), (
            f"after a {name}, the image is not the transformed photo"
        )
        expected = torch.tensor([expected_boxes(name, box)], dtype=torch.float64)
        if torch.allclose(boxes, torch.tensor([box], dtype=torch.float64), atol=0.5):
            pytest.fail(
                f"after a {name} the boxes did not move: pass the image and its BoundingBoxes to the transform together"
            )
        assert torch.allclose(boxes, expected, atol=0.05), (
            f"after a {name} the box {box} became {[round(v, 2) for v in boxes[0].tolist()]}, "
            f"expected {[round(v, 2) for v in expected[0].tolist()]} (is canvas_size (height, width)?)"
        )


@pytest.mark.points(3)
@pytest.mark.task("transform_with_boxes")
def test_one_random_draw_for_image_and_boxes(transformed, photos):
    """transform_with_boxes: the notebook's random augmentation moves image and boxes alike"""
    for index, (photo, box) in enumerate(zip(photos, PHOTO_BOXES, strict=True)):
        for k, seed in enumerate(NOTEBOOK_PIPELINE_SEEDS):
            image, boxes = run_result(transformed, "notebook pipeline", index, k)
            torch.manual_seed(seed)
            want_image, want_boxes = notebook_pipeline()(
                tv_tensors.Image(photo), tv_tensors.BoundingBoxes([box], format="CXCYWH", canvas_size=(HEIGHT, WIDTH))
            )
            assert torch.equal(image, want_image.as_subclass(torch.Tensor)), (
                f"with seed {seed}, the image is not the photo under this seed's flip, rotation and crop"
            )
            difference = (boxes - want_boxes.as_subclass(torch.Tensor).double()).abs().max().item()
            assert difference < 0.05, (
                f"with seed {seed}, the box is {difference:.1f} px away from where the image's flip, rotation and crop "
                "put it: transform the image and its boxes in one call, so that both get the same random draw"
            )
