"""adapt ui's Try tab on an image (adapt-ui with adapt-vision): a detector's predictions on an
uploaded image, drawn onto it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from adapt.testing import run_adapt

VISION_TESTS = Path(__file__).resolve().parent.parent / "plugins" / "vision" / "tests"
sys.path.insert(0, str(VISION_TESTS))
import draw  # noqa: E402

pytest.importorskip("adapt_ui")
pytest.importorskip("adapt_vision")


@pytest.mark.slow
def test_try_an_image_on_a_detector_draws_its_boxes(tmp_path: Path) -> None:
    from adapt_ui import jobs
    from PIL import Image

    tiny = str(VISION_TESTS / "configs" / "tiny_retinanet.py")
    coco = draw.detection_splits(tmp_path / "coco", tiny)
    run = tmp_path / "runs" / "detector"
    result = run_adapt("train", "--task", "object_detection", "--method", "lora", "--model", tiny, "--train", coco["train"],
                       "--output", str(run), "--set", f"task_params.checkpoint={coco['checkpoint']}",
                       "--set", "training.max_steps=2", "--set", "task_params.box_score_threshold=0.0",
                       "--set", "task_params.cfg_options={model.test_cfg.score_thr: 0.0}",  # a 2-step detector scores low
                       env={"ADAPT_DISABLE_PLUGINS": "mlflow"}, timeout=300)
    assert result.returncode == 0, result.stderr
    upload = next((tmp_path / "coco" / "val").glob("*.png"))
    rows, picture = jobs.predict_image(run, str(upload), tmp_path / "drawn")
    assert isinstance(rows, list) and rows, rows
    assert {"bbox", "score", "category_name"} <= set(rows[0])
    assert picture is not None and Image.open(picture).size == Image.open(upload).size
    assert list(Image.open(picture).getdata()) != list(Image.open(upload).convert("RGB").getdata())  # boxes drawn
    failed, none = jobs.predict_image(run, str(tmp_path / "coco" / "val" / "annotations.json"), tmp_path / "drawn")
    assert isinstance(failed, str) and failed.startswith("adapt predict failed (exit 2)") and none is None
