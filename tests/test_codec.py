"""The codec: what crosses the sandbox boundary is plain data, and what comes back is bounded."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from grader.codec import BadMessage, Bounds, NotData, decode, encode


def message(header: object, body: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return b"GRD1" + struct.pack("<Q", len(text)) + text + body


def test_values_round_trip_as_plain_data():
    value = {
        "t": torch.arange(6.0).reshape(2, 3).t(),  # not contiguous: rebuilt dense
        "tuple": (1, 2.5, None, "x", True),
        3: [torch.tensor(True), np.float32(2.0), np.arange(3)],
        "empty": torch.empty(0, 4),
        "half": torch.ones(2, dtype=torch.bfloat16),
        "parameter": torch.nn.Parameter(torch.ones(2)),
    }
    back = decode(encode(value))
    assert torch.equal(back["t"], value["t"]) and back["t"].is_contiguous()
    assert back["tuple"] == (1, 2.5, None, "x", True) and back[3][1] == 2.0
    assert torch.equal(back[3][2], torch.arange(3)) and back["empty"].shape == (0, 4)
    assert back["half"].dtype == torch.bfloat16
    assert type(back["parameter"]) is torch.Tensor and not back["parameter"].requires_grad


@pytest.mark.parametrize("value", [torch.nn.Linear(2, 2), object(), {1.5j: 1}, torch.ones(2).to_sparse()])
def test_objects_are_not_data(value):
    with pytest.raises(NotData):
        encode({"x": value})


@pytest.mark.parametrize(
    ("crafted", "why"),
    [
        (message({"$x": ["float32", [2**27], 0]}, bytes(4)), "more elements than"),  # a stride-0 claim
        (message({"$x": ["float32", [1000], 0]}, bytes(4)), "fewer bytes than its elements need"),
        (message({"$x": ["object", [1], 0]}, bytes(8)), "a malformed tensor"),
        (message({"$x": ["float32", [-1], 0]}), r"a tensor of shape \[-1\]"),
        (message([[[[[[[[[[]]]]]]]]]]), "nested deeper than 4"),
        (message(["x"] * 50), "more items than the 20"),
        (message({"$eval": "os.system"}), "an unknown tag"),
        (b"GRD1" + struct.pack("<Q", 10**9), "its header is cut off"),
        (b"\x80\x04pickle", "not a result message"),
    ],
    ids=["stride trick", "short data", "dtype", "negative shape", "deep", "many", "tag", "cut", "pickle"],
)
def test_a_crafted_message_is_refused_before_any_allocation(crafted, why):
    with pytest.raises(BadMessage, match=why):
        decode(crafted, Bounds(max_depth=4, max_items=20))
