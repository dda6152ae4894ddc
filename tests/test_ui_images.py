"""adapt ui's Try tab on an image (adapt-ui with adapt-vision): a detector's and a segmentor's
predictions on an uploaded image, drawn onto it."""

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


@pytest.fixture(scope="module")
def segmentor(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny FCN trained 2 steps on drawn masks, in a runs folder: the run and an image to upload."""
    import json

    root = tmp_path_factory.mktemp("segmentor")
    tiny = str(VISION_TESTS / "configs" / "tiny_fcn.py")
    data = draw.segmentation_splits(root / "seg", tiny)
    run = root / "runs" / "segmentor"
    result = run_adapt("train", "--task", "semantic_segmentation", "--method", "lora", "--model", tiny,
                       "--train", data["train"], "--output", str(run), "--set", f"task_params.checkpoint={data['checkpoint']}",
                       "--set", f"task_params.class_list={json.dumps(list(draw.SEGMENTATION_CLASSES))}",
                       "--set", "training.max_steps=2", env={"ADAPT_DISABLE_PLUGINS": "mlflow"}, timeout=300)
    assert result.returncode == 0, result.stderr
    return {"run": run, "image": next((root / "seg" / "images").glob("val_*.jpg"))}


@pytest.mark.slow
def test_try_an_image_on_a_segmentor_colours_its_classes(segmentor: dict[str, Path], tmp_path: Path) -> None:
    from adapt_ui import jobs
    from PIL import Image

    rows, picture = jobs.predict_image(segmentor["run"], str(segmentor["image"]), tmp_path / "drawn")
    assert isinstance(rows, list) and len(rows) == 1, rows
    assert set(rows[0]["pixels"]) <= set(draw.SEGMENTATION_CLASSES)
    assert picture is not None and Image.open(picture).size == Image.open(segmentor["image"]).size


@pytest.mark.slow
def test_an_image_uploaded_in_the_browser_comes_back_with_its_predictions(segmentor: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    """The Try tab in headless Chromium: choose the segmentor's run, upload an image through the
    image widget, predict: the class shares and the drawn picture show, nothing leaves 127.0.0.1."""
    from adapt_ui import testing as ui
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ui.need_browser()
    with ui.app_in_browser(segmentor["run"].parent, tmp_path) as driver:
        wait = WebDriverWait(driver, 120)
        ui.field(driver, "task")  # the page is built
        ui.tab(driver, "Try")
        ui.choose(driver, "try-choice", "segmentor")
        upload = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#try-image input[type=file]"))
        upload.send_keys(str(segmentor["image"]))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#try-image img"))  # the upload is shown
        driver.find_element(By.ID, "try-image-button").click()
        wait.until(lambda b: '"pixels"' in ui.text(b, "try-prediction") or "failed" in ui.text(b, "try-prediction"))
        assert '"background"' in ui.text(driver, "try-prediction") or '"red"' in ui.text(driver, "try-prediction")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#try-drawn img"))
        assert ui.requests_outside(driver) == []
