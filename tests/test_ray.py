"""`grade batch --executor ray`: Ray tasks that ask for a share of a GPU, the same grades as the
local pool, and a node lost mid-batch (on this machine: a local Ray cluster with logical GPUs)."""

from __future__ import annotations

import io
import shutil
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from grader.batch.executors import worker_memory_mb
from grader.batch.run import BatchOptions, run_batch
from grader.cli import main
from grader.errors import GraderError, UserError
from grader.options import GradingOptions
from tests.kit import requires, spec_of

try:
    import ray
    from ray.cluster_utils import Cluster

    from grader.batch.ray import RayExecutor, _grade_on_node, _report_of
except ImportError:
    ray = None
needs_ray = requires(ray is not None, "Ray is not installed (pip install '.[ray]')")

QUIET = Console(file=io.StringIO())
OPTIONS = GradingOptions(profile="quick", select="test_parameter_count")
OPTION_ARGS = ["--profile", "quick", "--select", "test_parameter_count"]  # the same, on the command line
TASK_BYTES = worker_memory_mb(spec_of("assignment2").limits.memory_mb) * 2**20  # what one grading asks for


@pytest.fixture(scope="module")
def hand_ins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two references and two starters of assignment2."""
    spec, folder = spec_of("assignment2"), tmp_path_factory.mktemp("submissions")
    for student, source in (("ada", spec.reference_dir), ("bea", spec.starter_dir)):
        for copy in (student, student + "2"):
            shutil.copytree(source, folder / copy, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


@pytest.fixture(scope="module")
def local_rows(hand_ins: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The local pool's grades.csv rows for the hand-ins."""
    out = tmp_path_factory.mktemp("local")
    started = time.perf_counter()
    run_batch(spec_of("assignment2"), hand_ins, out, OPTIONS, BatchOptions(workers=2, console=QUIET))
    print(f"local pool, 2 workers: {time.perf_counter() - started:.1f} s for 4 hand-ins")
    return grade_rows(out)


def grade_rows(out: Path) -> str:
    """grades.csv: the same hand-ins get the same file, byte for byte, on any executor."""
    return (out / "grades.csv").read_text()


def hold(seconds: float) -> tuple[float, float, list[str]]:
    """In a task: hold its resources for a while; when it ran and on which GPUs."""
    started = time.time()
    time.sleep(seconds)
    return started, time.time(), [str(gpu) for gpu in ray.get_gpu_ids()]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.fixture(scope="class")
def ray_instance():
    """A new Ray instance on this machine (not one already running): four logical CPUs (so that
    the GPUs bind), two logical GPUs, and the memory of two gradings."""
    ray.init("local", num_cpus=4, num_gpus=2, _memory=2 * TASK_BYTES, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@needs_ray
@pytest.mark.usefixtures("ray_instance")
class TestOnALocalRayInstance:
    def test_at_most_as_many_tasks_run_at_once_as_the_gpu_shares_allow(self):
        for share, per_gpu in ((0.75, 1), (0.5, 2)):
            with RayExecutor(gpu_share=share) as default:
                assert default.workers == 2 * per_gpu  # as many in flight as the cluster holds
            with RayExecutor(workers=8, gpu_share=share) as executor:  # more in flight than fit: Ray makes them wait
                runs = [f.result() for f in [executor.submit(lambda slot: slot.call(hold, 1.0)) for _ in range(8)]]
            assert all(len(gpus) == 1 for _, _, gpus in runs)
            on_each = {gpu: most_at_once([(s, e) for s, e, gpus in runs if gpus == [gpu]]) for gpu in ("0", "1")}
            assert max(on_each.values()) == per_gpu and min(on_each.values()) >= 1, (share, on_each)
            assert most_at_once([(s, e) for s, e, _ in runs]) <= 2 * per_gpu

    def test_a_cluster_without_room_for_one_hand_in_is_a_user_error(self):
        with pytest.raises(
            UserError, match=r"no node of the Ray cluster has what one hand-in asks for \(1 CPU, 0.5 GPU, 16.0"
        ):
            RayExecutor(memory_mb=16384, gpu_share=0.5)
        with pytest.raises(UserError, match="gpu_share is 2: a hand-in's share of one GPU is between 0 and 1"):
            RayExecutor(gpu_share=2)

    def test_an_interrupted_batch_cancels_its_tasks(self):
        cancel = threading.Event()
        with RayExecutor(workers=1) as executor:
            future = executor.submit(lambda slot: slot.call(hold, 600, cancel=cancel))
            time.sleep(1)
            cancel.set()
            with pytest.raises(GraderError, match="cancelled"):
                future.result(timeout=60)
        deadline = time.monotonic() + 60
        while ray.available_resources().get("CPU") != 4:  # its worker process is gone, and its CPU free
            assert time.monotonic() < deadline
            time.sleep(0.2)

    def test_the_same_hand_ins_get_the_same_rows_as_on_the_local_pool(self, hand_ins, local_rows, tmp_path):
        started = time.perf_counter()
        result = run_batch(
            spec_of("assignment2"), hand_ins, tmp_path, OPTIONS, BatchOptions(console=QUIET, where="ray")
        )
        print(f"Ray, 2 tasks at once: {time.perf_counter() - started:.1f} s for 4 hand-ins")
        assert [(o.id, o.report.score, o.status) for o in result.outcomes] == [
            ("ada", 2, "graded"),
            ("ada2", 2, "graded"),
            ("bea", 0, "graded"),
            ("bea2", 0, "graded"),
        ]
        assert grade_rows(tmp_path) == local_rows


@needs_ray
def test_a_node_with_another_kit_refuses_to_grade(hand_ins):
    spec, options = spec_of("assignment2"), OPTIONS.to_json()
    files = {p.name: p.read_bytes() for p in (hand_ins / "ada").iterdir()}
    sent = _grade_on_node(spec.name, str(spec.root), "another kit's key", files, options, "ada", 1, 0.0)
    with pytest.raises(GraderError, match=r"on .+: the kit at .+ is not the batch's: every node needs the same kit"):
        _report_of(sent)


@needs_ray
def test_a_node_lost_mid_batch_loses_no_student_and_grades_none_twice(hand_ins, local_rows, tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "memory": TASK_BYTES})
    lost = cluster.add_node(num_cpus=1, memory=TASK_BYTES)
    ray.init(address=cluster.address, log_to_driver=False)
    screen = io.StringIO()
    try:
        batch = threading.Thread(
            target=run_batch,
            args=(
                spec_of("assignment2"),
                hand_ins,
                tmp_path,
                OPTIONS,
                BatchOptions(console=Console(file=screen, width=200), where="ray"),
            ),
        )
        batch.start()
        deadline = time.monotonic() + 120
        while ray.available_resources().get("CPU", 0) > 0:  # until a grading runs on each node
            assert time.monotonic() < deadline and batch.is_alive()
            time.sleep(0.2)
        time.sleep(0.5)  # into both gradings
        cluster.remove_node(lost, allow_graceful=False)
        batch.join(timeout=300)
        assert not batch.is_alive()
    finally:
        ray.shutdown()
        cluster.shutdown()
    lines = screen.getvalue().splitlines()
    for student in ("ada", "ada2", "bea", "bea2"):
        assert sum(line.startswith(f"{student}: ") for line in lines) == 1, screen.getvalue()
    assert grade_rows(tmp_path) == local_rows


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--address", "auto"], "error: --address is the Ray cluster's: give it with --executor ray"),
        (
            ["--executor", "ray", "--address", "127.0.0.1:1"],
            "error: --address 127.0.0.1:1: no Ray cluster answers there",
        ),
    ],
)
def test_mistakes_in_the_executor_options_are_one_line(args, message, hand_ins, tmp_path, capsys):
    if ray is None and "ray" in args:
        message = "error: --executor ray needs Ray"
    assert main(["batch", "assignment2", str(hand_ins), "--out", str(tmp_path), *OPTION_ARGS, *args]) == 2
    assert capsys.readouterr().err.startswith(message)
