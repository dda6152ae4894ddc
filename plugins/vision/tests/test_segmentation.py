"""semantic_segmentation through the real `adapt` command: a tiny FCN (dilated ResNet-18 layout,
1/4 width) trains on drawn images with drawn label masks, in mmseg's folders or as a table of
paths; metrics, pictures, predicted label PNGs, resume, methods, bad data and nyuntam's files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from adapt.testing import adapted_model, check_task, read_metrics, run_adapt

sys.path.insert(0, str(Path(__file__).parent))
import draw  # noqa: E402

TINY = str(Path(__file__).parent / "configs" / "tiny_fcn.py")
CLASSES = list(draw.SEGMENTATION_CLASSES)
COMMON = ["--set", f"task_params.class_list={json.dumps(CLASSES)}", "--set", "tracking.enabled=false",
          "--set", "save_as_mlflow_model=false"]


def test_contract() -> None:
    from adapt_vision.segmentation import SemanticSegmentation

    check_task(SemanticSegmentation())


@pytest.fixture(scope="module")
def seg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Drawn mmseg splits and a 'pretrained' checkpoint of the tiny FCN (random, saved once)."""
    return draw.segmentation_splits(tmp_path_factory.mktemp("seg"), TINY)


def _train(seg: dict[str, str], out: Path, method: str, *extra: str, train: str | None = None) -> None:
    result = run_adapt("train", "--task", "semantic_segmentation", "--method", method, "--model", TINY,
                       "--train", train or seg["train"], "--output", str(out),
                       "--set", f"task_params.checkpoint={seg['checkpoint']}", *COMMON, *extra, timeout=300)
    assert result.returncode == 0, result
    assert " - mmengine - " not in result.stderr and "avg_non_ignore" not in result.stderr, result.stderr


def test_trains_evaluates_draws_and_predicts_label_masks(seg: dict[str, str], tmp_path: Path) -> None:
    """Full fine-tuning from mmseg's folders (images/, labels/, splits/*.txt): the loss falls and
    the classes are found (mIoU well above predicting background everywhere); metrics are fractions,
    per class too; pictures; evaluate gives the test metrics again; predict writes label PNGs."""
    import numpy as np
    from PIL import Image

    out = tmp_path / "run"
    _train(seg, out, "full", "--validation", seg["val"], "--test", seg["val"], "--set", "training.max_steps=100",
           "--set", "training.logging_steps=10", "--set", "training.evaluation_strategy=steps",
           "--set", "training.eval_steps=50")
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert len(losses) == 10 and losses[-1] < losses[0] * 0.8, losses
    evals = [r["step"] for r in read_metrics(out) if "eval_mean_iou" in r]
    assert evals == [50, 100]
    test = json.loads((out / "test_metrics.json").read_text())
    for name in ("mean_iou", "mean_accuracy", "pixel_accuracy", *(f"iou_{c}" for c in CLASSES)):
        assert 0.0 <= test[f"test_{name}"] <= 1.0, name
    background_only = test["test_iou_background"] / len(CLASSES)  # the mIoU of predicting background everywhere
    assert test["test_mean_iou"] > background_only + 0.1, test
    assert "metric_for_best_model: mean_iou" in (out / "config.yaml").read_text()
    assert sorted(p.name for p in (out / "pictures").iterdir()) == ["test_per_class_iou.png", "test_samples.png"]

    evaluated = run_adapt("evaluate", str(out), "-d", seg["val"])
    assert evaluated.returncode == 0, evaluated
    assert evaluated.json()["test_mean_iou"] == pytest.approx(test["test_mean_iou"], abs=1e-6)

    labels = tmp_path / "labels"
    predicted = run_adapt("predict", str(out), "-d", seg["val"], "-o", str(tmp_path / "p.jsonl"),
                          "--set", f"task_params.label_folder={labels}", "--set", f"task_params.draw_folder={tmp_path / 'drawn'}")
    assert predicted.returncode == 0, predicted
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    names = Path(seg["val"]).read_text().split()
    assert [Path(r["file_name"]).stem for r in rows] == names
    for row in rows:
        assert set(row["pixels"]) <= set(CLASSES) and sum(row["pixels"].values()) == pytest.approx(1, abs=1e-3)
        mask = np.asarray(Image.open(row["mask"]))
        with Image.open(Path(seg["val"]).parent.parent / "images" / f"{Path(row['file_name']).stem}.jpg") as image:
            assert mask.shape == (image.height, image.width)  # the original size, not the model's
        assert mask.max() < len(CLASSES)
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == sorted(f"{n}.jpg" for n in names)


def test_a_table_of_paths_trains_lora_with_the_predictors_in_full(seg: dict[str, str], tmp_path: Path) -> None:
    """data as jsonl rows of image / mask paths (relative to the file); LoRA adapts the dilated
    backbone and the heads' convolutions, the class predictors (conv_seg) train in full."""
    root = Path(seg["train"]).parent.parent
    table = tmp_path / "train.jsonl"
    table.write_text("".join(json.dumps({"image": str(root / "images" / f"{n}.jpg"), "mask": str(root / "labels" / f"{n}.png")})
                             + "\n" for n in Path(seg["train"]).read_text().split()))
    run, loaded = adapted_model({"task": "semantic_segmentation", "method": "lora", "model": {"path": TINY},
                                 "data": {"train": str(table)}, "output": str(tmp_path / "m"),
                                 "task_params": {"class_list": CLASSES, "checkpoint": seg["checkpoint"]}})
    assert run.head_modules == ["auxiliary_head.conv_seg", "decode_head.conv_seg"]
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert any("backbone.layer4" in n and "lora_A" in n for n in trainable)  # the dilated stage
    assert any("decode_head.conv_seg" in n for n in trainable)
    _train(seg, tmp_path / "run", "lora", "--set", "training.max_steps=8", "--set", "training.logging_steps=1",
           train=str(table))
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(losses) == 8 and all(loss == loss for loss in losses)


def test_resume_continues_like_an_uninterrupted_run(seg: dict[str, str], tmp_path: Path) -> None:
    """4 iterations, then resumed to 8 == 8 iterations at once (random crops, flips and colour
    jitter on: the random state is restored)."""
    from safetensors.torch import load_file

    same = ["--set", "training.lr_scheduler_type=constant", "--set", "training.save_strategy=steps",
            "--set", "training.save_steps=4", "--set", "training.logging_steps=1"]
    _train(seg, tmp_path / "once", "lora", "--set", "training.max_steps=8", *same)
    _train(seg, tmp_path / "twice", "lora", "--set", "training.max_steps=4", *same)
    _train(seg, tmp_path / "twice", "lora", "--set", "training.max_steps=8", *same,
           "--set", "training.resume_from_checkpoint=true")
    assert [r["step"] for r in read_metrics(tmp_path / "twice") if "loss" in r] == list(range(1, 9))
    once, twice = (load_file(str(tmp_path / name / "model" / "model.safetensors")) for name in ("once", "twice"))
    assert max(float((once[k] - twice[k]).abs().max()) for k in once) < 1e-5


@pytest.mark.parametrize("method", ["lora", "dora", "ssf", "ia3", "lokr"])
def test_a_merged_segmentor_gives_the_adapted_outputs(method: str) -> None:
    """adapt.testing's method contract on the FCN's logits: only the method's parameters and the
    class predictors train, the loss falls, the adapter reloads to the same outputs and the merged
    model gives them too (LoRA's dilated convolutions included); SSF after bias-free convolutions
    is kept apart."""
    import torch
    from adapt.testing import check_method
    from adapt_methods import METHODS
    from adapt_vision.segmentation import SemanticSegmentation
    from mmengine.config import Config

    task = SemanticSegmentation()
    task.setup()
    cfg = Config.fromfile(TINY)
    task.shape_config(cfg, {"classes": CLASSES})

    class Logits(torch.nn.Module):
        def __init__(self, segmentor: torch.nn.Module) -> None:
            super().__init__()
            self.segmentor = segmentor

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.segmentor(x, mode="tensor").flatten()

    def make() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = task.build(cfg.model, TINY).eval()  # batch norm in eval: outputs of one image do not depend on the batch
        return Logits(model), {"x": torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))}

    chosen = {m.name: m for m in METHODS}[method]()
    head = ["segmentor.auxiliary_head.conv_seg", "segmentor.decode_head.conv_seg"]
    report = check_method(chosen, make, head_modules=head, params=chosen.Params(), steps=4)
    assert any(".backbone.layer4." in n for n in report["trainable"])  # the dilated stage is adapted
    if method == "ssf":
        assert report["merge_difference"] is None
    else:
        assert report["merge_difference"] <= 1e-4


@pytest.mark.parametrize("case", ["no_class_list", "value_too_big", "missing_mask", "colour_mask", "no_folders"])
def test_bad_segmentation_data_fails_clearly(seg: dict[str, str], tmp_path: Path, case: str) -> None:
    from PIL import Image

    root = tmp_path / "data"
    train = draw.segmentation_folders(root, "train", 3, seed=5)
    names = train.read_text().split()
    options = list(COMMON)
    expected = {"no_class_list": "task_params.class_list", "value_too_big": f"{names[0]}.png has values 9",
                "missing_mask": f"line 2: mask {root / 'labels' / names[1]}.png not found",
                "colour_mask": "is a RGB picture", "no_folders": "no images / img_dir / JPEGImages folder"}[case]
    if case == "no_class_list":
        options = ["--set", "tracking.enabled=false"]
    elif case == "value_too_big":
        mask = Image.open(root / "labels" / f"{names[0]}.png")
        mask.putpixel((0, 0), 9)
        mask.save(root / "labels" / f"{names[0]}.png")
    elif case == "missing_mask":
        (root / "labels" / f"{names[1]}.png").unlink()
    elif case == "colour_mask":
        Image.open(root / "labels" / f"{names[2]}.png").convert("RGB").save(root / "labels" / f"{names[2]}.png")
    else:
        (root / "images").rename(root / "pictures")
    out = tmp_path / "run"
    result = run_adapt("train", "--task", "semantic_segmentation", "--method", "lora", "--model", TINY,
                       "--train", str(train), "--output", str(out), *options)
    assert result.returncode == 2, result
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not out.exists()


def test_nyuntam_segmentation_files_import_as_semantic_segmentation(tmp_path: Path) -> None:
    """nyuntam's segmentation block (TRAIN_ANN_FILE: train.txt, class_list, palette; filed under
    instance segmentation in its documents) becomes a semantic_segmentation run config."""
    source = tmp_path / "nyuntam.yaml"
    source.write_text("TASK: instance-segmentation\nCUSTOM_DATASET_PATH: data\nTRAIN_DIR: splits\nVAL_DIR: splits\n"
                      "train_ann_file: train.txt\nval_ann_file: val.txt\nclass_list: [sky, tree]\n"
                      "palette: [[128, 128, 128], [0, 128, 0]]\nPEFT_METHOD: LoRA\nEPOCHS: 3\nLR: 0.001\n")
    result = run_adapt("config", "import", str(source), "-o", str(tmp_path / "run.yaml"))
    assert result.returncode == 0, result
    import yaml

    config = yaml.safe_load((tmp_path / "run.yaml").read_text())
    assert config["task"] == "semantic_segmentation"
    assert config["data"] == {"train": "data/splits/train.txt", "validation": "data/splits/val.txt"}
    assert config["task_params"]["class_list"] == ["sky", "tree"]
    assert config["task_params"]["palette"] == [[128, 128, 128], [0, 128, 0]]
    assert "semantic_segmentation" in result.stderr  # the import says why the task changed


@pytest.mark.parametrize("model", ["fcn_r18-d8_4xb2-80k_cityscapes-512x1024", "deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024",
                                   "segformer_mit-b0_8xb2-160k_ade20k-512x512"])
def test_real_segmentors_train_a_small_share_by_default(seg: dict[str, str], tmp_path: Path, model: str) -> None:
    """mmseg's own configs (their `pretrained=` download left out): the class predictors train in
    full, everything else is the method's: under 3% for ssf, lora and dora."""
    from adapt.models import parameter_report

    shares = {}
    for method in ("ssf", "lora", "dora"):
        run, loaded = adapted_model({"task": "semantic_segmentation", "method": method, "model": {"path": model},
                                     "data": {"train": seg["train"]}, "output": str(tmp_path / method),
                                     "task_params": {"class_list": CLASSES, "pretrained_init": False}})
        assert run.head_modules == (["auxiliary_head.conv_seg", "decode_head.conv_seg"] if "segformer" not in model
                                    else ["decode_head.conv_seg"])
        shares[method] = parameter_report(loaded.model)["trainable_percent"]
    assert all(share < 3 for share in shares.values()), shares
