"""Plain data across the sandbox boundary: no pickle, and limits on everything that comes back.

What a probe returns (and what the grader hands it) is written as one message: a JSON header that
holds the value, with tagged objects for what JSON lacks, and the raw bytes of each tensor after it.

    b"GRD1" | header length (8 bytes, little-endian) | header (JSON) | tensor bytes...

Tags: {"$t": [...]} a tuple, {"$d": [[key, value], ...]} a dict whose keys are not all plain
strings, {"$x": [dtype, shape, offset]} a tensor whose bytes start `offset` bytes after the header.

`decode` is the grader's side: it trusts nothing. Every tensor is rebuilt here, dense and
contiguous, from exactly as many bytes as its shape needs (no stride tricks, no subclass), and the
message is refused when it is larger, deeper or holds more elements than `Bounds` allow. This
module imports nothing of the grader: the sandbox runs it too.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

MAGIC = b"GRD1"
_DTYPES = {
    name: getattr(torch, name)
    for name in (
        "float16",
        "bfloat16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "bool",
        "complex64",
    )
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


class NotData(TypeError):
    """A value that cannot cross the boundary; the message says where in the value it is."""


class BadMessage(ValueError):
    """A message the grader refuses: malformed, or beyond its `Bounds`."""


@dataclass(frozen=True)
class Bounds:
    """What the grader accepts from a sandbox: a crafted result must not exhaust the grader."""

    max_bytes: int = 256 * 2**20
    max_elements: int = 64 * 2**20  # over all tensors
    max_items: int = 2**20  # list items, dict entries and scalars, over the whole value
    max_depth: int = 64
    max_string: int = 2**20


# --- writing --------------------------------------------------------------------------------


def encode(value: Any) -> bytes:
    """One message holding `value`: None, bool, int, float, str, list, tuple, dict, tensors
    (and NumPy arrays and scalars, written as tensors and numbers). Anything else is NotData."""
    blobs: list[bytes] = []
    size = [0]

    def walk(item: Any, where: str, depth: int) -> Any:
        if depth > 200:
            raise NotData(f"{where} is nested too deeply")
        if item is None or isinstance(item, (bool, str)):
            return item
        if isinstance(item, int):
            return int(item)
        if isinstance(item, float):
            return float(item)
        if isinstance(item, torch.Tensor):
            return tensor(item, where)
        if type(item).__module__ == "numpy":
            return walk(item.item() if getattr(item, "ndim", 1) == 0 else torch.from_numpy(item.copy()), where, depth)
        if isinstance(item, (torch.Size, tuple)):
            return {"$t": [walk(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item)]}
        if isinstance(item, list):
            return [walk(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item)]
        if isinstance(item, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in item):
                return {k: walk(v, f"{where}[{k!r}]", depth + 1) for k, v in item.items()}
            return {"$d": [[walk(k, where, depth + 1), walk(v, f"{where}[{k!r}]", depth + 1)] for k, v in item.items()]}
        if isinstance(item, (torch.dtype, torch.device)):
            return str(item)
        raise NotData(f"{where} is a {type(item).__name__}, not data (tensors, numbers, strings, lists, dicts)")

    def tensor(item: torch.Tensor, where: str) -> dict[str, Any]:
        if item.dtype not in _NAMES or item.layout != torch.strided or item.is_quantized:
            raise NotData(f"{where} is a {item.dtype} {item.layout} tensor, not a dense one")
        flat = item.detach().to("cpu").contiguous().reshape(-1)
        raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        blobs.append(raw)
        size[0] += len(raw)
        return {"$x": [_NAMES[item.dtype], list(item.shape), size[0] - len(raw)]}

    header = json.dumps(walk(value, "the result", 0), allow_nan=True).encode()
    return b"".join([MAGIC, struct.pack("<Q", len(header)), header, *blobs])


# --- reading --------------------------------------------------------------------------------


def decode(message: bytes, bounds: Bounds = Bounds(), strings: Callable[[str], str] = str) -> Any:
    """The value of a message, checked against `bounds`; BadMessage when it is not acceptable.
    Every string of it, dict keys too, is passed through `strings` (the grader's side cleans them)."""
    if len(message) > bounds.max_bytes:
        raise BadMessage(f"{len(message):,} bytes, more than the {bounds.max_bytes:,} accepted")
    if len(message) < 12 or message[:4] != MAGIC:
        raise BadMessage("not a result message")
    (length,) = struct.unpack("<Q", message[4:12])
    if length > len(message) - 12:
        raise BadMessage("its header is cut off")
    try:
        tree = json.loads(message[12 : 12 + length])
    except (ValueError, RecursionError):
        raise BadMessage("its header is not JSON") from None
    body = memoryview(message)[12 + length :]
    counts = {"items": 0, "elements": 0}

    def count(kind: str, n: int, limit: int) -> None:
        counts[kind] += n
        if counts[kind] > limit:
            raise BadMessage(f"it holds more {kind} than the {limit:,} accepted")

    def walk(item: Any, depth: int) -> Any:
        if depth > bounds.max_depth:
            raise BadMessage(f"it is nested deeper than {bounds.max_depth} levels")
        count("items", 1, bounds.max_items)
        if item is None or isinstance(item, (bool, int, float)):
            return item
        if isinstance(item, str):
            if len(item) > bounds.max_string:
                raise BadMessage(f"a string of {len(item):,} characters")
            return strings(item)
        if isinstance(item, list):
            return [walk(v, depth + 1) for v in item]
        if not isinstance(item, dict):
            raise BadMessage(f"an unknown value {type(item).__name__}")
        if len(item) == 1 and "$t" in item and isinstance(item["$t"], list):
            return tuple(walk(v, depth + 1) for v in item["$t"])
        if len(item) == 1 and "$d" in item and isinstance(item["$d"], list):
            pairs = [pair for pair in item["$d"] if isinstance(pair, list) and len(pair) == 2]
            if len(pairs) != len(item["$d"]):
                raise BadMessage("a malformed dict")
            keys = [walk(k, depth + 1) for k, _ in pairs]
            if not all(isinstance(k, (str, int, float, bool, tuple)) or k is None for k in keys):
                raise BadMessage("a dict key that is not a number, string or tuple")
            return {k: walk(v, depth + 1) for k, (_, v) in zip(keys, pairs, strict=True)}
        if len(item) == 1 and "$x" in item:
            return tensor(item["$x"])
        if any(k.startswith("$") for k in item):
            raise BadMessage("an unknown tag")
        return {strings(k): walk(v, depth + 1) for k, v in item.items()}

    def tensor(spec: Any) -> torch.Tensor:
        if not (isinstance(spec, list) and len(spec) == 3 and spec[0] in _DTYPES and isinstance(spec[1], list)):
            raise BadMessage("a malformed tensor")
        name, shape, offset = spec
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape) or len(shape) > 16:
            raise BadMessage(f"a tensor of shape {shape}")
        if not isinstance(offset, int) or offset < 0:
            raise BadMessage("a malformed tensor")
        elements = math.prod(shape)
        count("elements", elements, bounds.max_elements)
        dtype = _DTYPES[name]
        nbytes = elements * torch.empty((), dtype=dtype).element_size()
        if offset + nbytes > len(body):
            raise BadMessage(f"a tensor of shape {shape} with fewer bytes than its elements need")
        if not elements:
            return torch.empty(shape, dtype=dtype)
        raw = bytearray(body[offset : offset + nbytes])  # a copy: the tensor owns its memory
        return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(shape)

    return walk(tree, 0)
