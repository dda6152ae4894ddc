"""pose_detection through the real `adapt` command: a tiny top-down heatmap model (ResNet-18 layout
at 1/4 width, 64 x 64 crops) learns the five drawn keypoints of boxes on synthetic images."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from adapt.testing import adapted_model, check_task, read_metrics, run_adapt

sys.path.insert(0, str(Path(__file__).parent))
import draw  # noqa: E402

TINY = str(Path(__file__).parent / "configs" / "tiny_pose.py")
COMMON = ["--set", "training.per_device_train_batch_size=8", "--set", "training.learning_rate=0.005",
          "--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false"]


def test_contract() -> None:
    from adapt_vision.pose import PoseDetection

    check_task(PoseDetection())


def test_without_mmpose_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapt import PluginError
    from adapt_vision.pose import PoseDetection

    monkeypatch.setitem(sys.modules, "mmpose.utils", None)  # as if mmpose were not installed
    with pytest.raises(PluginError, match=r"pose_detection needs mmpose.*--no-binary xtcocotools.*adapt-vision\[pose\]"):
        PoseDetection().setup()


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pose")
    return {"train": str(draw.coco_keypoints(root / "train", 24, seed=1)),
            "val": str(draw.coco_keypoints(root / "val", 8, seed=2))}


def _train(coco: dict[str, str], out: Path, method: str, *extra: str, model: str = TINY) -> None:
    result = run_adapt("train", "--task", "pose_detection", "--method", method, "--model", model, "--train", coco["train"],
                       "--output", str(out), *COMMON, *extra, timeout=300)
    assert result.returncode == 0, result


def test_trains_evaluates_saves_reloads_and_predicts(coco: dict[str, str], tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    out = tmp_path / "run"
    _train(coco, out, "full", "--validation", coco["val"], "--test", coco["val"], "--set", "training.max_steps=30",
           "--set", "training.logging_steps=5", "--set", "training.evaluation_strategy=steps",
           "--set", "training.eval_steps=15")
    records = read_metrics(out)
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0] * 0.5, losses
    assert [r["step"] for r in records if "eval_mean_average_precision" in r] == [15, 30]
    test = json.loads((out / "test_metrics.json").read_text())
    for name in ("mean_average_precision", "map_50", "map_75", "mean_average_recall", "mar_50"):
        assert 0.0 <= test[f"test_{name}"] <= 1.0, name
    assert test["test_map_50"] > 0.3, test  # the drawn keypoints are easy: 30 iterations find most at OKS 0.5
    assert sorted(p.name for p in (out / "pictures").iterdir()) == ["test_samples.png"]  # true and predicted keypoints
    info = json.loads((out / "model" / "adapt.json").read_text())
    assert info["meta"]["keypoints"] == list(draw.KEYPOINTS)
    evaluated = run_adapt("evaluate", str(out), "-d", coco["val"])
    assert evaluated.returncode == 0, evaluated
    assert evaluated.json()["test_mean_average_precision"] == pytest.approx(test["test_mean_average_precision"])

    drawn = tmp_path / "drawn"
    predicted = run_adapt("predict", str(out), "-d", coco["val"], "-o", str(tmp_path / "p.jsonl"),
                          "--set", f"task_params.draw_folder={drawn}")
    assert predicted.returncode == 0, predicted
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(len(r["keypoints"]) == 3 * len(draw.KEYPOINTS) for r in rows)
    truth = {a["image_id"]: a["keypoints"] for a in json.loads(Path(coco["val"]).read_text())["annotations"]}
    errors = [abs(r["keypoints"][i] - truth[r["image_id"]][i]) for r in rows for i in range(15) if i % 3 != 2]
    assert sum(errors) / len(errors) < 8, errors  # pixels, on 96 x 96 images
    results = COCO(coco["val"]).loadRes([{k: r[k] for k in ("image_id", "category_id", "keypoints", "score")}
                                         for r in rows])
    assert len(results.getAnnIds()) == 8  # COCO keypoint results
    assert len(list(drawn.glob("*.png"))) == 8
    folder = run_adapt("predict", str(out), "-d", str(Path(coco["val"]).parent), "-o", str(tmp_path / "f.jsonl"))
    assert folder.returncode == 0, folder  # an image folder: one whole-image box per image
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == 8


def test_real_config_name_image_size_and_cfg_options(coco: dict[str, str], tmp_path: Path) -> None:
    """A config shipped with mmpose, by name, at 64 x 64 (codec resized with it); cfg_options drops
    its download of ImageNet weights."""
    out = tmp_path / "r50"
    _train(coco, out, "lora", "--set", "training.max_steps=1", "--set", "task_params.image_width=64",
           "--set", "task_params.image_height=64", "--set", 'task_params.cfg_options={"model.backbone.init_cfg": null}',
           model="td-hm_res50_8xb64-210e_coco-256x192")
    from mmengine.config import Config

    head = Config.fromfile(str(out / "model" / "config.py")).model.head
    assert head.out_channels == len(draw.KEYPOINTS) and head.in_channels == 2048
    assert tuple(head.decoder.input_size) == (64, 64) and tuple(head.decoder.heatmap_size) == (16, 16)


@pytest.mark.parametrize("method", ["last_layer", "ssf", "lora"])
def test_methods_train_exactly_their_parameters(coco: dict[str, str], tmp_path: Path, method: str) -> None:

    run, loaded = adapted_model({"task": "pose_detection", "method": method, "model": {"path": TINY},
                                 "data": {"train": coco["train"]}, "output": str(tmp_path / "x")})
    assert run.head_modules == ["head.final_layer"]  # the keypoint predictor; the deconvolutions are shared layers
    names = {n.removeprefix("base_model.model."): p.requires_grad for n, p in loaded.model.named_parameters()
             if ".original_module." not in n}  # peft keeps a frozen copy
    head = [n for n in names if n.startswith("head.final_layer.")]
    rest = [n for n, trains in names.items() if trains and n not in head]
    assert head and all(names[n] for n in head)  # the keypoint predictor trains with every method
    if method == "last_layer":
        assert rest == []
    elif method == "ssf":  # also after the deconvolution stack's norms
        assert rest and all(n.rsplit(".", 1)[-1] in ("ssf_scale", "ssf_shift") for n in rest)
        assert any(n.startswith("head.deconv_layers.") for n in rest)
    else:
        assert rest and all(n.startswith("backbone.") and ".lora_" in n for n in rest)
    _train(coco, tmp_path / "run", method, "--set", "training.max_steps=3")
    assert run_adapt("evaluate", str(tmp_path / "run"), "-d", coco["val"]).returncode == 0


def test_resume_continues_like_an_uninterrupted_run(coco: dict[str, str], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    same = ["--set", "training.lr_scheduler_type=constant", "--set", "task_params.apply_augmentations=false",
            "--set", "training.save_strategy=steps", "--set", "training.save_steps=3", "--set", "training.logging_steps=1"]
    _train(coco, tmp_path / "once", "full", "--set", "training.max_steps=6", *same)
    _train(coco, tmp_path / "twice", "full", "--set", "training.max_steps=3", *same)
    _train(coco, tmp_path / "twice", "full", "--set", "training.max_steps=6", *same,
           "--set", "training.resume_from_checkpoint=true")
    assert [r["step"] for r in read_metrics(tmp_path / "twice") if "loss" in r] == [1, 2, 3, 4, 5, 6]
    losses = [r["loss"] for r in read_metrics(tmp_path / "once") if "loss" in r]
    train_loss = json.loads((tmp_path / "once" / "metrics.json").read_text())["train"]["train_loss"]
    assert train_loss == pytest.approx(sum(losses) / len(losses))  # the run's mean loss, as the HF engine reports it
    once = load_file(str(tmp_path / "once" / "model" / "model.safetensors"))
    twice = load_file(str(tmp_path / "twice" / "model" / "model.safetensors"))
    assert max(float((once[k].float() - twice[k].float()).abs().max()) for k in once) < 1e-4


@pytest.mark.parametrize("case", ["short_keypoints", "two_skeleton_kinds", "other_keypoints_in_validation"])
def test_bad_keypoint_files_fail_clearly(coco: dict[str, str], tmp_path: Path, case: str) -> None:
    source = json.loads(Path(coco["train"]).read_text())
    expected = {"short_keypoints": "keypoints must be 15 numbers", "two_skeleton_kinds": "exactly one category",
                "other_keypoints_in_validation": "are not the model's"}[case]
    validation = coco["val"]
    if case == "short_keypoints":
        source["annotations"][3]["keypoints"] = source["annotations"][3]["keypoints"][:12]
    elif case == "two_skeleton_kinds":
        source["categories"].append({"id": 2, "name": "cat", "keypoints": ["nose", "tail"]})
    else:
        other = json.loads(Path(coco["val"]).read_text())
        other["categories"][0]["keypoints"] = ["a", "b", "c", "d", "e"]
        validation = str(Path(coco["val"]).parent / "other.json")
        Path(validation).write_text(json.dumps(other))
    bad = Path(coco["train"]).parent / f"{case}.json"
    bad.write_text(json.dumps(source))
    result = run_adapt("train", "--task", "pose_detection", "--model", TINY, "--train", str(bad), "--validation",
                       validation, "--output", str(tmp_path / "run"), *COMMON)
    assert result.returncode == 2, result
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_real_pose_model_trains_a_small_share_by_default(coco: dict[str, str], tmp_path: Path) -> None:
    """mmpose's SimpleBaseline ResNet-50: only the keypoint predictor trains in full; ssf, lora and dora
    stay under 3% of the parameters; last_layer trains the predictor alone."""
    from adapt.models import parameter_report

    shares = {}
    for method in ("ssf", "lora", "dora", "last_layer"):
        run, loaded = adapted_model({"task": "pose_detection", "method": method,
                                     "model": {"path": "td-hm_res50_8xb64-210e_coco-256x192"},
                                     "data": {"train": coco["train"]}, "output": str(tmp_path / method),
                                     "task_params": {"pretrained_init": False}})
        assert run.head_modules == ["head.final_layer"]
        shares[method] = parameter_report(loaded.model)["trainable_percent"]
    assert all(shares[m] < 3 for m in ("ssf", "lora", "dora")) and shares["last_layer"] < 0.01, shares


def test_a_timm_backbone_feeds_the_pose_head(coco: dict[str, str], tmp_path: Path) -> None:
    """Without a neck, the timm network's deepest level is wired into the head's in_channels."""
    out = tmp_path / "run"
    _train(coco, out, "lora", "--set", "training.max_steps=2", "--set", "task_params.backbone=resnet18")
    assert "timm resnet18, feature levels [4] with [512] channels" in (out / "train.log").read_text()
    assert "in_channels=512" in (out / "model" / "config.py").read_text()
    assert run_adapt("evaluate", str(out), "-d", coco["val"]).returncode == 0


def test_plan_counts_person_instances(coco: dict[str, str], tmp_path: Path) -> None:
    """Top-down pose iterates over the people of a COCO file (its annotations with keypoints)."""
    annotations = json.loads(Path(coco["train"]).read_text())["annotations"]
    result = run_adapt("plan", "--task", "pose_detection", "--method", "ssf", "--model", TINY, "--train", coco["train"],
                       "--set", "training.per_device_train_batch_size=8", "--set", "tracking.enabled=false")
    assert result.returncode == 0, result
    plan = json.loads(result.stdout)
    assert plan["train_rows"] == len(annotations) == 24 and plan["steps_per_epoch"] == 3
