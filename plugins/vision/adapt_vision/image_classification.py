"""image_classification (one label per image) and image_classification_multilabel, trained by the
HF engine: timm models (by name, or a checkpoint file) and HF image models (a folder or hub id)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from adapt import (
    DataError,
    LoadedModel,
    ModelError,
    Params,
    Task,
    confusion_matrix_figure,
    first_line,
    majority_class_accuracy,
    read_table,
    require_columns,
)
from pydantic import Field

from adapt_vision.images import IMAGE_SUFFIXES, check_readable, refuse_attn_implementation
from adapt_vision.timm_backbone import close_names, load_by_name_or_layout

log = logging.getLogger("adapt")
TIMM_FILE = "timm.json"
# timm architecture / HF model_type prefixes of vision transformers (their own training defaults)
VIT_FAMILIES = {"vit", "deit", "beit", "swin", "swinv", "eva", "cait", "xcit", "levit", "pvt", "mvitv", "dinov",
                "siglip", "clip", "convit", "crossvit", "twins", "flexivit", "hiera", "data2vec", "dit"}


class ImageClassificationParams(Params):
    image_column: str = Field("image", description="Column holding the image path (relative to the data file) in "
                                                   "jsonl / csv / MLTable data; an image folder needs none.")
    label_column: str = Field("label", description="Column holding the label (multi-label: a list of labels).")
    labels: list[str] | None = Field(None, description="Label names in order (None: those seen in the training data, sorted).")
    image_height: int = Field(-1, ge=-1, description="Height images are resized to (-1: the model's default; "
                                                     "either at -1 means both are the default).")
    image_width: int = Field(-1, ge=-1, description="Width images are resized to (-1: the model's default).")
    apply_augmentations: bool = Field(True, description="Random resized crops and horizontal flips of training images.")
    number_of_workers: int | None = Field(None, ge=0, description="Data loading subprocesses (Azure ML name of "
                                                                  "training.dataloader_num_workers; None: that setting).")
    timm_model: str | None = Field(None, description="The timm architecture of a checkpoint file given as the model "
                                                     "(e.g. efficientnet_lite0); None when the model is a timm name or a folder.")
    pretrained: bool = Field(True, description="For a timm name: start from timm's pretrained weights (downloaded "
                                               "from the hub); false: random weights.")


class ImageClassification(Task):
    name = "image_classification"
    description = "Classify images into one label: timm or HF image models, from an image folder or a table of paths."
    Params = ImageClassificationParams
    metrics = ("accuracy", "f1_score_macro", "precision_score_macro", "recall_score_macro")
    multi_label = False
    training_defaults = {"per_device_train_batch_size": 16, "per_device_eval_batch_size": 64, "num_train_epochs": 10}

    def model_kind(self, config: Any) -> str | None:
        """vit for vision transformers (by timm name or HF model_type), cnn otherwise."""
        reference = config.task_params.get("timm_model") or config.model.path
        if not reference:
            return None
        folder = Path(reference)
        for name, key in ((TIMM_FILE, "architecture"), ("config.json", "model_type")):
            if (folder / name).is_file():
                try:
                    reference = json.loads((folder / name).read_text(encoding="utf-8")).get(key) or reference
                except (OSError, ValueError):
                    pass
                break
        family = re.split(r"[-_./]", Path(str(reference)).name.lower())[0]
        return "vit" if family.rstrip("0123456789") in VIT_FAMILIES else "cnn"

    # data ---------------------------------------------------------------------------------
    def rows(self, run: Any, split: str, path: str) -> list[tuple[str, list[str]]]:
        """(image path, labels) of a split: an image folder with one sub-folder per class, or a
        data file / MLTable with image and label columns."""
        p = run.task_params
        source = Path(path)
        if source.is_dir() and not (source / "MLTable").is_file():
            rows = [(str(image), [folder.name]) for folder in sorted(source.iterdir()) if folder.is_dir()
                    for image in sorted(folder.iterdir()) if image.suffix.lower() in IMAGE_SUFFIXES]
            if not rows:
                raise DataError(f"{split} data {path}: a folder with no class sub-folders of images "
                                f"({', '.join(IMAGE_SUFFIXES)})")
            return rows
        table = read_table(path, split)
        require_columns(table, [p.image_column] + ([p.label_column] if split != "predict" else []), path, split)
        root = (source if source.is_dir() else source.parent).resolve()
        rows = []
        for number, record in enumerate(table.select_columns(
                [p.image_column] + ([p.label_column] if split != "predict" else [])).to_list(), 1):
            value = record[p.image_column]
            if not isinstance(value, str) or not value:
                raise DataError(f"{split} data {path}, row {number}, column {p.image_column}: not an image path ({value!r})")
            image = Path(value) if Path(value).is_absolute() else root / value
            if not image.is_file():
                raise DataError(f"{split} data {path}, row {number}, column {p.image_column}: {value} not found")
            label = record.get(p.label_column)
            labels = [str(v) for v in label] if isinstance(label, list) else ([] if label is None else [str(label)])
            if split != "predict" and not self.multi_label and len(labels) != 1:
                raise DataError(f"{split} data {path}, row {number}, column {p.label_column}: one label expected, got "
                                f"{label!r} (several labels per image: task image_classification_multilabel)")
            rows.append((str(image), labels))
        return rows

    def inspect_data(self, run: Any) -> dict[str, Any]:
        seen = sorted({label for _, labels in self.rows(run, "train", run.config.data.train) for label in labels})
        labels = list(run.task_params.labels or seen)
        if len(labels) < 2:
            raise DataError(f"train data {run.config.data.train}: {len(labels)} distinct label(s); classification "
                            "needs at least 2")
        return {"labels": labels, "problem_type": "multi_label" if self.multi_label else "single_label"}

    def check_images(self, rows: list[tuple[str, list[str]]], split: str, path: str, labels: list[str]) -> None:
        allowed = set(labels)
        for image, values in rows:
            bad = [v for v in values if v not in allowed]
            if bad:
                raise DataError(f"{split} data {path}: image {image} has label {bad[0]!r}, not in the label set "
                                f"({', '.join(labels)})")
            check_readable(image, split, path)

    def load_data(self, run: Any, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        p = run.task_params
        if p.number_of_workers is not None:
            run.training.dataloader_num_workers = p.number_of_workers
        out = {}
        for split, (rows, path) in run.read_splits(splits, lambda split, path: self.rows(run, split, path)).items():
            self.check_images(rows, split, path, loaded.meta["labels"])
            out[split] = ImageDataset(rows, loaded.meta["labels"], self.transform(run, loaded, split == "train"),
                                      self.multi_label)
        return out

    def transform(self, run: Any, loaded: LoadedModel, train: bool) -> Any:
        from torchvision.transforms import v2

        size = loaded.state["size"]
        p = run.task_params
        if p.image_height > 0 and p.image_width > 0:
            size = (p.image_height, p.image_width)
        steps = [v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True), v2.RandomHorizontalFlip()] \
            if train and p.apply_augmentations else [v2.Resize(size, antialias=True)]
        import torch

        return v2.Compose([v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(list(loaded.state["mean"]), list(loaded.state["std"]))])

    # model --------------------------------------------------------------------------------
    def load_model(self, run: Any, source: str, meta: dict[str, Any]) -> LoadedModel:
        folder = Path(source)
        if (folder / TIMM_FILE).is_file() or (not (folder / "config.json").is_file() and not _hub_like(source)) \
                or run.task_params.timm_model:
            return self._load_timm(run, source, meta)
        return self._load_hf(run, source, meta)

    def _load_timm(self, run: Any, source: str, meta: dict[str, Any]) -> LoadedModel:
        import timm

        refuse_attn_implementation(run, "timm")

        p, n = run.task_params, len(meta["labels"])
        folder = Path(source)
        saved = folder / TIMM_FILE
        if saved.is_file():  # a model adapt saved
            from safetensors.torch import load_file

            info = json.loads(saved.read_text(encoding="utf-8"))
            model = timm.create_model(info["architecture"], pretrained=False, num_classes=n)
            model.load_state_dict(load_file(str(folder / "model.safetensors")))
        elif folder.is_file() or p.timm_model:
            if not p.timm_model:
                raise ModelError(f"model {source}: a checkpoint file; name its architecture in task_params.timm_model "
                                 "(e.g. efficientnet_lite0)")
            model = self._create(p.timm_model, pretrained=False)
            load_by_name_or_layout(model, source, "model", "task_params.timm_model")
            model.reset_classifier(n)
        else:
            model = self._create(source, pretrained=p.pretrained, num_classes=n)
        config = model.pretrained_cfg
        state = {"size": tuple(config.get("input_size", (3, 224, 224))[1:]), "mean": config.get("mean", (0.5,) * 3),
                 "std": config.get("std", (0.5,) * 3), "architecture": config.get("architecture") or source}
        return LoadedModel(timm_classifier(model, self.multi_label), None, dict(meta), state)

    def _create(self, name: str, **kwargs: Any) -> Any:
        import timm

        if name not in timm.list_models(name):
            raise ModelError(f"model {name}: not a folder, a file, or a timm model name{close_names(name)}")
        try:
            return timm.create_model(name, **kwargs)
        except Exception as exc:  # the hub download of pretrained weights
            raise ModelError(f"model {name}: timm could not create it with pretrained weights ({first_line(exc)}); "
                             "offline, give a checkpoint file as the model with task_params.timm_model, or set "
                             "task_params.pretrained=false") from None

    def _load_hf(self, run: Any, source: str, meta: dict[str, Any]) -> LoadedModel:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        labels, m = meta["labels"], run.config.model
        try:
            processor = AutoImageProcessor.from_pretrained(source, revision=m.revision, trust_remote_code=m.trust_remote_code)
            model = AutoModelForImageClassification.from_pretrained(
                source, revision=m.revision, trust_remote_code=m.trust_remote_code, num_labels=len(labels),
                id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)},
                problem_type=f"{meta['problem_type']}_classification",
                ignore_mismatched_sizes=run.training.ignore_mismatched_sizes, **run.load_options)
        except ImportError as exc:  # an attention implementation whose package is missing
            raise ModelError(f"model.attn_implementation {m.attn_implementation}: {first_line(exc)} (flash attention "
                             "needs a CUDA GPU and the flash-attn package; sdpa and eager run everywhere)") from None
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"model {source} could not be loaded for image classification: {first_line(exc)}") from None
        size = getattr(processor, "size", None) or {}  # a dict, or transformers 5's SizeDict

        def side(name: str) -> int:
            get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
            return get(name) or get("shortest_edge") or 224

        height, width = side("height"), side("width")
        state = {"size": (height, width), "mean": processor.image_mean, "std": processor.image_std}
        return LoadedModel(model, processor, dict(meta), state)

    def head_modules(self, model: Any) -> list[str]:
        if _is_timm(model):
            return [f"model.{model.model.pretrained_cfg.get('classifier', 'classifier')}"]
        return [name for name in ("classifier", "fc", "head") if hasattr(model, name)][:1]

    def baselines(self, run: Any, loaded: LoadedModel, predictions: Any) -> dict[str, float]:
        """The accuracy of always predicting the split's most frequent class (single-label)."""
        return {} if self.multi_label else majority_class_accuracy(predictions.label_ids)

    def figures(self, run: Any, loaded: LoadedModel, predictions: Any) -> dict[str, Any]:
        """A confusion matrix of the split (single-label classification)."""
        import numpy as np

        if self.multi_label:
            return {}
        logits = predictions.predictions[0] if isinstance(predictions.predictions, tuple) else predictions.predictions
        labels = [str(x) for x in loaded.meta["labels"]]
        return {"confusion_matrix": confusion_matrix_figure(predictions.label_ids, np.argmax(logits, axis=-1), labels)}

    def compute_metrics(self, run: Any, loaded: LoadedModel) -> Any:
        import numpy as np

        n = len(loaded.meta["labels"])

        def compute(prediction: Any) -> dict[str, float]:
            # imported at the first evaluation: a run without one skips scikit-learn's import (~1 s)
            from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score
            logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
            truth = prediction.label_ids
            if self.multi_label:
                preds, truth = (logits > 0).astype(int), truth.astype(int)
                kw: dict[str, Any] = {"zero_division": 0}
                return {"accuracy": float(accuracy_score(truth, preds)),
                        "f1_score_macro": float(f1_score(truth, preds, average="macro", **kw)),
                        "precision_score_macro": float(precision_score(truth, preds, average="macro", **kw)),
                        "recall_score_macro": float(recall_score(truth, preds, average="macro", **kw)),
                        "iou": float(jaccard_score(truth, preds, average="samples", **kw)),
                        "iou_macro": float(jaccard_score(truth, preds, average="macro", **kw)),
                        "iou_micro": float(jaccard_score(truth, preds, average="micro", **kw)),
                        "iou_weighted": float(jaccard_score(truth, preds, average="weighted", **kw))}
            preds = np.argmax(logits, axis=-1)
            kw = {"average": "macro", "zero_division": 0, "labels": list(range(n))}
            return {"accuracy": float(accuracy_score(truth, preds)), "f1_score_macro": float(f1_score(truth, preds, **kw)),
                    "precision_score_macro": float(precision_score(truth, preds, **kw)),
                    "recall_score_macro": float(recall_score(truth, preds, **kw))}

        return compute

    def example_inputs(self, run: Any, path: str, limit: int) -> list[dict[str, Any]]:
        return [{run.task_params.image_column: image} for image, _ in self.rows(run, "predict", path)[:limit]]

    def predict_columns(self, run: Any, columns: list[str]) -> list[str]:
        return [c for c in columns if c == run.task_params.image_column]

    def predict(self, run: Any, loaded: LoadedModel, path: str) -> list[dict[str, Any]]:
        import torch

        rows = self.rows(run, "predict", path)
        self.check_images([(image, []) for image, _ in rows], "predict", path, loaded.meta["labels"])
        dataset = ImageDataset([(image, []) for image, _ in rows], loaded.meta["labels"],
                               self.transform(run, loaded, False), self.multi_label)
        labels, out = loaded.meta["labels"], []
        size = run.training.per_device_eval_batch_size
        device = next(loaded.model.parameters()).device
        with torch.no_grad():
            for first in range(0, len(dataset), size):
                pixels = torch.stack([dataset[i]["pixel_values"] for i in range(first, min(first + size, len(dataset)))])
                logits = loaded.model(pixel_values=pixels.to(device)).logits.float()
                probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
                for (image, _), p in zip(rows[first:first + size], probs.cpu().tolist(), strict=True):
                    scores = dict(zip(labels, p, strict=True))
                    if self.multi_label:
                        out.append({"image": image, "labels": [x for x, s in scores.items() if s > 0.5], "scores": scores})
                    else:
                        best = max(range(len(p)), key=p.__getitem__)
                        out.append({"image": image, "label": labels[best], "score": p[best], "scores": scores})
        return out

    def save_model(self, loaded: LoadedModel, folder: str) -> None:
        if _is_timm(loaded.model):
            from safetensors.torch import save_file

            state = {k: v.detach().cpu().contiguous() for k, v in loaded.model.model.state_dict().items()}
            save_file(state, str(Path(folder) / "model.safetensors"))
            (Path(folder) / TIMM_FILE).write_text(json.dumps({"architecture": loaded.state["architecture"]}),
                                                  encoding="utf-8")
            return
        loaded.model.save_pretrained(folder)
        loaded.processor.save_pretrained(folder)


class ImageClassificationMultilabel(ImageClassification):
    name = "image_classification_multilabel"
    description = "Tag images with any number of labels: timm or HF image models, from a table of paths and label lists."
    metrics = ("iou", "iou_macro", "iou_micro", "iou_weighted", "accuracy", "f1_score_macro", "precision_score_macro",
               "recall_score_macro")
    multi_label = True


def _hub_like(source: str) -> bool:
    """``org/name`` that is not a local path: an HF hub id."""
    return source.count("/") == 1 and not Path(source).exists()


_CLASSIFIER: Any = None


def timm_classifier(model: Any, multi_label: bool) -> Any:
    """A timm model with the HF interface the Trainer expects: ``forward(pixel_values, labels)``
    returning the loss and logits (the class is made on first use: torch loads lazily)."""
    global _CLASSIFIER
    if _CLASSIFIER is None:
        import torch

        class TimmClassifier(torch.nn.Module):
            is_timm_classifier = True

            def __init__(self, model: Any, multi_label: bool) -> None:
                super().__init__()
                self.model = model
                self.multi_label = multi_label

            def forward(self, pixel_values: Any, labels: Any = None) -> Any:
                import torch.nn.functional as F  # noqa: N812
                from transformers.modeling_outputs import ImageClassifierOutput

                logits = self.model(pixel_values)
                loss = None
                if labels is not None:
                    loss = F.binary_cross_entropy_with_logits(logits, labels.float()) if self.multi_label \
                        else F.cross_entropy(logits, labels)
                return ImageClassifierOutput(loss=loss, logits=logits)

        _CLASSIFIER = TimmClassifier
    return _CLASSIFIER(model, multi_label)


def _is_timm(model: Any) -> bool:
    return getattr(model, "is_timm_classifier", False)


class ImageDataset:
    """Images loaded and transformed on access (a torch map-style dataset)."""

    def __init__(self, rows: list[tuple[str, list[str]]], labels: list[str], transform: Any, multi_label: bool) -> None:
        self.rows, self.transform, self.multi_label = rows, transform, multi_label
        self.index = {name: i for i, name in enumerate(labels)}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch
        from PIL import Image

        path, values = self.rows[i]
        with Image.open(path) as image:
            item: dict[str, Any] = {"pixel_values": self.transform(image.convert("RGB"))}
        if values:
            if self.multi_label:
                target = torch.zeros(len(self.index))
                target[[self.index[v] for v in values]] = 1.0
                item["labels"] = target
            else:
                item["labels"] = self.index[values[0]]
        return item
