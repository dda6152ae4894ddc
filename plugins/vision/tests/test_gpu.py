"""The vision tasks on a CUDA GPU through the real `adapt` command: image classification with
mixed precision (amp), and the MMEngine tasks (detection, instance segmentation, pose) with adapt's
torchvision-backed nms / roi_align running on the GPU. Marked ``gpu``: skipped without CUDA;
bench/gpu.sh runs them on a lent GPU.

Tolerances: the same detector run with CUDA hidden (the CPU) starts from the same checkpoint and
batches, so the first logged loss (the mean of 4 iterations) agrees to 1%; amp's test loss is
within 5% of fp32's; a saved model evaluates to its run's test metrics within 1e-3."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from adapt.testing import read_metrics, run_adapt

sys.path.insert(0, str(Path(__file__).parent))
import draw  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
CONFIGS = Path(__file__).parent / "configs"
# no run tracking, no MLflow model: settings of adapt-mlflow, absent where it is not installed (the GPU check)
QUIET = ["--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false"] \
    if importlib.util.find_spec("adapt_mlflow") else []
CPU = {"CUDA_VISIBLE_DEVICES": ""}


def _run(*args: str, env: dict[str, str] | None = None) -> None:
    result = run_adapt(*args, *QUIET, env=env, timeout=300)
    assert result.returncode == 0, result


def _losses(out: Path, key: str = "loss") -> list[float]:
    return [r[key] for r in read_metrics(out) if key in r]


def _evaluates_the_same(out: Path, data: str, metrics: dict[str, float]) -> None:
    again = run_adapt("evaluate", str(out), "-d", data)
    assert again.returncode == 0, again
    for name, value in metrics.items():
        assert again.json()[name] == pytest.approx(value, abs=1e-3), name


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return draw.image_splits(tmp_path_factory.mktemp("images"))


def test_image_classification_with_amp_trains_like_fp32(images: dict[str, str], tmp_path: Path) -> None:
    common = ("train", "--task", "image_classification", "--method", "lora", "--model", "resnet10t",
              "--train", images["train"], "--test", images["test"], "--set", "task_params.pretrained=false",
              "--set", "task_params.image_height=64", "--set", "task_params.image_width=64",
              "--set", "training.num_train_epochs=4", "--set", "training.learning_rate=1e-3",
              "--set", "training.logging_steps=2", "--set", "training.seed=42")
    tests = {}
    for precision in ("32", "16"):
        out = tmp_path / precision
        _run(*common, "--output", str(out), "--set", f"training.precision={precision}")
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["device"].startswith("cuda:0 ("), metrics["device"]
        losses = _losses(out)
        assert losses[-1] < losses[0], losses
        tests[precision] = metrics["test"]
        _evaluates_the_same(out, images["test"], {"test_loss": metrics["test"]["test_loss"]})
    assert tests["16"]["test_loss"] == pytest.approx(tests["32"]["test_loss"], rel=0.05), tests


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return draw.detection_splits(tmp_path_factory.mktemp("coco"), str(CONFIGS / "tiny_retinanet.py"))


def test_object_detection_on_the_gpu_matches_the_cpu(coco: dict[str, str], tmp_path: Path) -> None:
    args = ("train", "--task", "object_detection", "--method", "ssf", "--model", str(CONFIGS / "tiny_retinanet.py"),
            "--train", coco["train"], "--test", coco["val"], "--set", f"task_params.checkpoint={coco['checkpoint']}",
            "--set", "training.per_device_train_batch_size=4", "--set", "training.learning_rate=0.001",
            "--set", "training.max_steps=24", "--set", "training.logging_steps=4", "--set", "training.seed=42")
    _run(*args, "--output", str(tmp_path / "gpu"))
    _run(*args, "--output", str(tmp_path / "cpu"), env=CPU)
    gpu, cpu = (json.loads((tmp_path / side / "metrics.json").read_text()) for side in ("gpu", "cpu"))
    assert gpu["device"].startswith("cuda:0 (") and cpu["device"].startswith("cpu"), (gpu["device"], cpu["device"])
    losses = _losses(tmp_path / "gpu")
    assert losses[-1] < losses[0], losses
    assert losses[0] == pytest.approx(_losses(tmp_path / "cpu")[0], rel=0.01)
    test = gpu["test"]
    assert 0.0 <= test["test_mean_average_precision"] <= 1.0
    _evaluates_the_same(tmp_path / "gpu", coco["val"], {k: test[k] for k in ("test_mean_average_precision", "test_map_50")})


def test_instance_segmentation_on_the_gpu(coco: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "seg"
    _run("train", "--task", "instance_segmentation", "--method", "lora", "--model", str(CONFIGS / "tiny_mask_rcnn.py"),
         "--train", coco["train"], "--test", coco["val"], "--output", str(out),
         "--set", "training.per_device_train_batch_size=4", "--set", "training.learning_rate=0.001",
         "--set", "training.max_steps=24", "--set", "training.logging_steps=4", "--set", "training.precision=16")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda:0 (") and metrics["device"].endswith(", amp"), metrics["device"]
    losses = _losses(out, "loss_mask")  # RoI align (torchvision's, on the GPU) feeds the mask head
    assert losses[-1] < losses[0], losses
    test = metrics["test"]
    assert 0.0 <= test["test_segm_mean_average_precision"] <= 1.0
    _evaluates_the_same(out, coco["val"], {"test_segm_mean_average_precision": test["test_segm_mean_average_precision"]})


def test_pose_on_the_gpu(tmp_path: Path) -> None:
    train = str(draw.coco_keypoints(tmp_path / "train", 24, seed=1))
    val = str(draw.coco_keypoints(tmp_path / "val", 8, seed=2))
    out = tmp_path / "pose"
    _run("train", "--task", "pose_detection", "--method", "ssf", "--model", str(CONFIGS / "tiny_pose.py"),
         "--train", train, "--test", val, "--output", str(out), "--set", "training.per_device_train_batch_size=8",
         "--set", "training.learning_rate=0.005", "--set", "training.max_steps=30", "--set", "training.logging_steps=5")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda:0 ("), metrics["device"]
    losses = _losses(out)
    assert losses[-1] < losses[0], losses
    test = metrics["test"]
    assert 0.0 <= test["test_mean_average_precision"] <= 1.0
    _evaluates_the_same(out, val, {"test_mean_average_precision": test["test_mean_average_precision"]})
