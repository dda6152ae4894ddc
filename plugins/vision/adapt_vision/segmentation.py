"""semantic_segmentation: mmsegmentation 1.x models (a class for every pixel) through MMEngine,
from mmseg's layout (images and label PNGs in folders, a list of image names) or from a table
of image / mask paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from adapt import DataError, LoadedModel, first_line
from pydantic import Field

from adapt_vision.images import check_readable
from adapt_vision.openmmlab import OpenMMLabParams, OpenMMLabTask, set_everywhere

SEGMENTATION_METRICS = ("mean_iou", "mean_accuracy", "pixel_accuracy")
IMAGE_FOLDERS = ("images", "img_dir", "JPEGImages")  # mmseg's tutorial (Stanford Background), ADE / mmseg, VOC
MASK_FOLDERS = ("labels", "annotations", "ann_dir", "SegmentationClass")


class SegmentationParams(OpenMMLabParams):
    class_list: list[str] | None = Field(None, description="Class names; pixel value i in the label masks is "
                                                           "class_list[i] (needed: masks hold numbers, not names).")
    palette: list[list[int]] | None = Field(None, description="An RGB colour per class, for drawn predictions and "
                                                              "pictures (None: a fixed palette).")
    mask_folder: str | None = Field(None, description="Name lists: the folder of label masks (None: labels/, "
                                                      "annotations/, ann_dir/ or SegmentationClass/ beside the list "
                                                      "or one folder up).")
    image_suffix: str = Field(".jpg", description="Name lists: the images' file ending (name + suffix).")
    mask_suffix: str = Field(".png", description="Name lists: the label masks' file ending.")
    reduce_zero_label: bool = Field(False, description="Masks use 0 for 'unlabelled' and 1..N for the classes (ADE20K's "
                                                       "convention): 0 is ignored and the rest shifted down by one.")
    ignore_index: int = Field(255, ge=0, le=65535, description="Mask value of pixels that count for neither loss nor "
                                                               "metrics (borders, unlabelled).")
    label_folder: str | None = Field(None, description="adapt predict: also write each image's predicted label mask "
                                                       "(a PNG, pixel value = class index) into this folder.")


class SemanticSegmentation(OpenMMLabTask):
    name = "semantic_segmentation"
    description = ("A class for every pixel: mmsegmentation 1.x models from label masks (mmseg folders with name "
                   "lists, or a table of image / mask paths) (MMEngine).")
    Params = SegmentationParams
    metrics = SEGMENTATION_METRICS
    package = "mmseg"
    evaluators = "adapt_vision.segmentation_metrics"
    install_hint = "pip install 'adapt-vision[segmentation]'"
    head_names = ("decode_head", "auxiliary_head")
    # mmseg's schedules: 2 to 4 crops per GPU; evaluation one whole image at a time (images differ in size)
    training_defaults: ClassVar[dict[str, Any]] = {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 1,
                                                   "num_train_epochs": 12}

    # data ---------------------------------------------------------------------------------
    def inspect_data(self, run: Any) -> dict[str, Any]:
        classes = run.task_params.class_list
        if not classes:
            raise DataError("task_params.class_list: give the class names in mask-value order (pixel value 0 is "
                            "class_list[0]...): label masks hold numbers, not names")
        if len(set(classes)) != len(classes):
            raise DataError(f"task_params.class_list: names repeat ({', '.join(classes)})")
        self.pairs(run, "train", run.config.data.train)
        return {"classes": list(classes)}

    def pairs(self, run: Any, split: str, path: str, masks: bool = True) -> list[dict[str, str]]:
        """The (image, mask) paths of a data file, each checked to exist: a list of image names
        (.txt, mmseg's ann_file) or a table with `image` and `mask` columns (paths relative to it)."""
        from adapt import read_table

        file = Path(path)
        if not file.is_file():
            raise DataError(f"{split} data {path} does not exist" if not file.exists() else
                            f"{split} data {path} is a folder; give a list of image names (.txt) or a table with "
                            "`image` and `mask` columns")
        p = run.task_params
        if file.suffix == ".txt":
            names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
            if not names:
                raise DataError(f"{split} data {path}: no image names")
            images = self.folder(file, p.image_folder, IMAGE_FOLDERS, "task_params.image_folder", split, path)
            labels = self.folder(file, p.mask_folder, MASK_FOLDERS, "task_params.mask_folder", split, path) \
                if masks else None
            found = [{"image": str(images / f"{n}{p.image_suffix}"), "name": n,
                      **({"mask": str(labels / f"{n}{p.mask_suffix}")} if labels else {})} for n in names]
        else:
            table = read_table(path, split)
            wanted = ("image", "mask") if masks else ("image",)
            missing = [c for c in wanted if c not in table.column_names]
            if missing:
                raise DataError(f"{split} data {path}: no `{'` or `'.join(missing)}` column (columns: "
                                f"{', '.join(table.column_names)}); give image and mask paths, or a list of image names "
                                "(.txt) in mmseg's folders")
            root = file.resolve().parent
            found = [{key: str(root / row[key]) for key in wanted} | {"name": str(row["image"])}
                     for row in table.select_columns(list(wanted)).to_list()]
        for number, item in enumerate(found, 1):
            for key in ("image", "mask"):
                if key in item and not Path(item[key]).is_file():
                    raise DataError(f"{split} data {path}, {'line' if file.suffix == '.txt' else 'row'} {number}: "
                                    f"{key} {item[key]} not found")
        limit = run.data_limit(split)
        return found[:limit] if limit else found

    def folder(self, file: Path, given: str | None, candidates: tuple[str, ...], setting: str, split: str,
               path: str) -> Path:
        """The images' (or masks') folder of a name list: as given, or the first of ``candidates``
        beside the list or one folder up (mmseg keeps lists in splits/ beside images/)."""
        if given:
            if not Path(given).is_dir():
                raise DataError(f"{setting}: {given} is not a folder")
            return Path(given)
        places = [file.resolve().parent, file.resolve().parent.parent]
        for place in places:
            for name in candidates:
                if (place / name).is_dir():
                    return place / name
        raise DataError(f"{split} data {path}: no {' / '.join(candidates)} folder beside it or one folder up; "
                        f"set {setting}")

    def check_masks(self, run: Any, split: str, path: str, items: list[dict[str, str]], classes: int) -> None:
        """Every image opens; every mask is one channel of class numbers (not colours), of its
        image's size, with values below the number of classes (or the ignore index)."""
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        p = run.task_params
        top = classes if p.reduce_zero_label else classes - 1  # reduce_zero_label: 1..N are the classes
        for item in items:
            check_readable(item["image"], split, path, item["name"])
            try:
                with Image.open(item["mask"]) as mask, Image.open(item["image"]) as image:
                    if mask.mode not in ("L", "P", "I", "I;16", "1"):
                        raise DataError(f"{split} data {path}: mask {item['mask']} is a {mask.mode} picture; masks "
                                        "hold a class number per pixel (a greyscale or palette PNG), not colours")
                    if mask.size != image.size:
                        raise DataError(f"{split} data {path}: mask {item['mask']} is {mask.size[0]}x{mask.size[1]}, "
                                        f"its image {image.size[0]}x{image.size[1]}")
                    values = np.unique(np.asarray(mask))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{split} data {path}: mask {item['mask']} is not a readable image "
                                f"({first_line(exc)})") from None
            bad = [int(v) for v in values if v > top and v != p.ignore_index]
            if bad:
                raise DataError(f"{split} data {path}: mask {item['mask']} has values {', '.join(map(str, bad[:5]))}, "
                                f"above {top} ({classes} classes in task_params.class_list"
                                f"{', reduce_zero_label' if p.reduce_zero_label else ''}; ignore_index "
                                f"{p.ignore_index})")

    def examples(self, run: Any, split: str, path: str) -> list[dict[str, str]]:
        return self.pairs(run, split, path)

    def shape_config(self, cfg: Any, meta: dict[str, Any], params: Any = None) -> None:
        before = _first(cfg.model, "num_classes")
        if not set_everywhere(cfg.model, "num_classes", len(meta["classes"])):
            raise DataError("the model config has no num_classes to set (is it an mmseg segmentor config?)")
        _resize_class_weights(cfg.model, before, len(meta["classes"]))
        if params is not None:
            set_everywhere(cfg.model, "ignore_index", params.ignore_index)  # decode heads and their losses
            if params.image_width > 0 and params.image_height > 0 and cfg.model.get("data_preprocessor"):
                cfg.model.data_preprocessor["size"] = (params.image_height, params.image_width)
                cfg.model.data_preprocessor.pop("size_divisor", None)

    def crop_size(self, loaded: LoadedModel) -> tuple[int, int] | None:
        """(height, width) of training crops: the model's data preprocessor pads batches to it."""
        size = (loaded.state["model_cfg"].get("data_preprocessor") or {}).get("size")
        return tuple(size) if size else None  # type: ignore[return-value]

    def pipeline(self, run: Any, loaded: LoadedModel, split: str) -> list[dict[str, Any]]:
        p = run.task_params
        scale = self.image_scale(run, loaded)
        load = {"type": "LoadAnnotations", "reduce_zero_label": p.reduce_zero_label}
        steps: list[dict[str, Any]] = [{"type": "LoadImageFromFile"}]
        if split == "train":
            steps.append(load)
            if p.apply_augmentations:  # mmseg's recipe: rescale 0.5-2x, crop, flip, colour jitter
                steps.append({"type": "RandomResize", "scale": scale, "ratio_range": (0.5, 2.0), "keep_ratio": True})
            else:
                steps.append({"type": "Resize", "scale": scale, "keep_ratio": True})
            crop = self.crop_size(loaded)
            if crop:
                steps.append({"type": "RandomCrop", "crop_size": crop, "cat_max_ratio": 0.75})
            if p.apply_augmentations:
                steps += [{"type": "RandomFlip", "prob": 0.5}, {"type": "PhotoMetricDistortion"}]
            return [*steps, {"type": "PackSegInputs"}]
        steps.append({"type": "Resize", "scale": scale, "keep_ratio": True})
        if split != "predict":
            steps.append(load)
        return [*steps, {"type": "PackSegInputs"}]

    def metainfo(self, run: Any, classes: list[str]) -> dict[str, Any]:
        palette = run.task_params.palette
        if palette and len(palette) != len(classes):
            raise DataError(f"task_params.palette: {len(palette)} colours for {len(classes)} classes")
        from adapt_vision.draw import DEFAULT_PALETTE

        colours = palette or [DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)] for i in range(len(classes))]
        return {"classes": tuple(classes), "palette": [list(c) for c in colours]}

    def load_data(self, run: Any, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        classes = loaded.meta["classes"]
        p = run.task_params
        out = {}
        for split, path in splits.items():
            items = self.pairs(run, split, path)
            self.check_masks(run, split, path, items, len(classes))
            dataset = {"type": "AdaptSegDataset", "items": [{"img_path": i["image"], "seg_map_path": i["mask"]}
                                                            for i in items],
                       "metainfo": self.metainfo(run, classes), "pipeline": self.pipeline(run, loaded, split),
                       "reduce_zero_label": p.reduce_zero_label, "ignore_index": p.ignore_index,
                       "test_mode": split != "train", "serialize_data": False}
            evaluator = {"type": "AdaptIoUMetric", "ignore_index": p.ignore_index}
            out[split] = {"dataset": dataset, "evaluator": evaluator, "size": len(items)}
        return out

    # predict ------------------------------------------------------------------------------
    def predict(self, run: Any, loaded: LoadedModel, path: str) -> list[dict[str, Any]]:
        """One row per image: image_id, file_name, `pixels` (the share of the image predicted as
        each class present) and, with task_params.label_folder, `mask` (the label PNG written)."""
        import numpy as np
        import torch
        from mmcv.transforms import Compose
        from mmengine.dataset import pseudo_collate
        from mmengine.registry import init_default_scope
        from PIL import Image

        init_default_scope(self.package)
        p = run.task_params
        classes = loaded.meta["classes"]
        images = self.images(run, path)
        pipeline = Compose(self.pipeline(run, loaded, "predict"))
        folders = {key: Path(value) for key, value in (("mask", p.label_folder), ("draw", p.draw_folder)) if value}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        palette = np.array(self.metainfo(run, classes)["palette"], dtype=np.uint8)
        rows = []
        size = run.training.per_device_eval_batch_size
        for first in range(0, len(images), size):
            chunk = images[first:first + size]
            batch = pseudo_collate([pipeline({"img_path": im["path"]}) for im in chunk])
            with torch.no_grad():
                samples = loaded.model.test_step(batch)
            for image, sample in zip(chunk, samples, strict=True):
                labels = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.uint16)
                values, counts = np.unique(labels, return_counts=True)
                row: dict[str, Any] = {"image_id": image["id"], "file_name": image["file_name"],
                                       "pixels": {classes[int(v)]: round(int(c) / labels.size, 5)
                                                  for v, c in zip(values, counts, strict=True)}}
                stem = Path(image["file_name"]).stem
                if "mask" in folders:
                    row["mask"] = str(folders["mask"] / f"{stem}.png")
                    Image.fromarray(labels.astype(np.uint8 if len(classes) <= 256 else np.uint16)).save(row["mask"])
                if "draw" in folders:
                    with Image.open(image["path"]) as picture:
                        base = np.asarray(picture.convert("RGB"), dtype=np.float32)
                    blended = (0.5 * base + 0.5 * palette[labels % len(palette)]).astype(np.uint8)
                    Image.fromarray(blended).save(folders["draw"] / Path(image["file_name"]).name)  # as detection does
                rows.append(row)
        return rows

    def images(self, run: Any, path: str) -> list[dict[str, Any]]:
        """The images to predict on: a list of image names (.txt) in mmseg's folders, or what the
        other vision tasks take (an image folder, a COCO file, a table with an `image` column)."""
        if Path(path).suffix != ".txt":
            return self.predict_images(path)
        items = self.pairs(run, "predict", path, masks=False)
        for item in items:
            check_readable(item["image"], "predict", path, item["name"])
        return [{"id": i + 1, "path": item["image"], "file_name": Path(item["image"]).name} for i, item in enumerate(items)]

    def example_inputs(self, run: Any, path: str, limit: int) -> list[dict[str, Any]]:
        return [{"image": image["path"]} for image in self.images(run, path)[:limit]]

    def figures(self, run: Any, loaded: LoadedModel, predictions: Any) -> dict[str, Any]:
        """IoU per class, and a few images of the split beside their true and predicted masks."""
        from adapt_vision.pictures import masks_figure, per_class_figure
        from adapt_vision.segmentation_metrics import AdaptIoUMetric

        metric = next((m for m in getattr(predictions, "metrics", []) if isinstance(m, AdaptIoUMetric)), None)
        if metric is None or not metric.per_class_iou:
            return {}
        palette = self.metainfo(run, loaded.meta["classes"])["palette"]
        return {"per_class_iou": per_class_figure(metric.per_class_iou, "IoU per class", "IoU", "absent"),
                "samples": masks_figure(metric.samples, list(loaded.meta["classes"]), palette,
                                            run.task_params.ignore_index)}


def _first(cfg: Any, key: str) -> Any:
    """The first value of ``key`` in a nested config (None where it does not occur)."""
    if isinstance(cfg, dict):
        if key in cfg:
            return cfg[key]
        values = cfg.values()
    elif isinstance(cfg, list):
        values = cfg
    else:
        return None
    return next((found for v in values if (found := _first(v, key)) is not None), None)


def _resize_class_weights(cfg: Any, before: Any, classes: int) -> None:
    """Losses' per-class weights written for the config's classes (MaskFormer / Mask2Former: one
    per class and one for 'no object') resized to ``classes``: the first weight for each class,
    the extra one kept."""
    if isinstance(cfg, dict):
        weights = cfg.get("class_weight")
        if isinstance(weights, (list, tuple)) and isinstance(before, int) and len(weights) in (before, before + 1):
            cfg["class_weight"] = [weights[0]] * classes + list(weights[before:])
        for value in cfg.values():
            _resize_class_weights(value, before, classes)
    elif isinstance(cfg, list):
        for value in cfg:
            _resize_class_weights(value, before, classes)
