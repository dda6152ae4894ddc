"""object_detection and instance_segmentation: mmdet 3 detectors from COCO files, through MMEngine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapt import DataError, LoadedModel
from pydantic import Field

from adapt_vision.openmmlab import OpenMMLabParams, OpenMMLabTask, set_everywhere

BOX_METRICS = ("mean_average_precision", "map_50", "map_75", "map_small", "map_medium", "map_large", "precision", "recall")


class DetectionParams(OpenMMLabParams):
    box_score_threshold: float = Field(0.3, ge=0, le=1, description="Boxes scored below this are left out of "
                                                                    "predictions and of precision / recall.")
    class_list: list[str] | None = Field(None, description="Class names in order (None: the training file's "
                                                           "categories, in its order); each must be a category name.")
    palette: list[list[int]] | None = Field(None, description="An RGB colour per class for drawn predictions.")


class ObjectDetection(OpenMMLabTask):
    name = "object_detection"
    description = "Boxes and classes of objects in images: mmdet 3 detectors trained from COCO files (MMEngine)."
    Params = DetectionParams
    metrics = BOX_METRICS
    package = "mmdet"
    head_names = ("rpn_head", "roi_head", "bbox_head")
    masks = False

    # data ---------------------------------------------------------------------------------
    def inspect_data(self, run: Any) -> dict[str, Any]:
        coco = self.read_coco(run, "train", run.config.data.train, self.required())
        names = [c["name"] for c in coco["categories"]]
        classes = list(run.task_params.class_list or names)
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise DataError(f"task_params.class_list: {', '.join(unknown)} is not a category of {run.config.data.train} "
                            f"(categories: {', '.join(names)})")
        kept = [c for c in coco["categories"] if c["name"] in classes]
        return {"classes": [c["name"] for c in kept], "category_ids": [c["id"] for c in kept]}

    def required(self) -> tuple[str, ...]:
        return ("bbox", "segmentation") if self.masks else ("bbox",)

    def shape_config(self, cfg: Any, meta: dict[str, Any], params: Any = None) -> None:
        if not set_everywhere(cfg.model, "num_classes", len(meta["classes"])):
            raise DataError("the model config has no num_classes to set (is it a detector config?)")

    def pipeline(self, run: Any, loaded: LoadedModel, split: str) -> list[dict[str, Any]]:
        scale = self.image_scale(run, loaded)
        load = {"type": "LoadAnnotations", "with_bbox": True, "with_mask": self.masks}
        steps: list[dict[str, Any]] = [{"type": "LoadImageFromFile"}]
        if split == "train":
            steps += [load, {"type": "Resize", "scale": scale, "keep_ratio": True}]
            if run.task_params.apply_augmentations:
                steps.append({"type": "RandomFlip", "prob": 0.5})
            return [*steps, {"type": "PackDetInputs"}]
        steps.append({"type": "Resize", "scale": scale, "keep_ratio": True})
        if split != "predict":
            steps.append(load)
        return [*steps, {"type": "PackDetInputs",
                         "meta_keys": ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")}]

    def load_data(self, run: Any, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        classes = loaded.meta["classes"]
        out = {}
        for split, path in splits.items():
            coco = self.read_coco(run, split, path, self.required())
            order = [c["name"] for c in coco["categories"] if c["name"] in classes]
            if order != [c for c in classes if c in order]:
                raise DataError(f"{split} data {path}: its categories are in another order than the training file's "
                                f"({', '.join(classes)}); mmdet numbers classes in file order")
            self.check_images(run, split, path, coco)
            size = self.dataset_size(run, coco, split)
            dataset = {"type": "CocoDataset", "ann_file": str(Path(path).resolve()),
                       "data_prefix": {"img": str(self.image_root(run, path)) + "/"},
                       "metainfo": self.metainfo(run, classes), "pipeline": self.pipeline(run, loaded, split),
                       "test_mode": split != "train", "filter_cfg": {"filter_empty_gt": split == "train"},
                       "backend_args": None, **({"indices": size} if run.data_limit(split) else {})}
            evaluator = {"type": "AdaptCocoMetric", "ann_file": str(Path(path).resolve()),
                         "metric": ["bbox", "segm"] if self.masks else ["bbox"], "format_only": False,
                         "score_threshold": run.task_params.box_score_threshold, "backend_args": None,
                         "image_root": str(self.image_root(run, path))}
            out[split] = {"dataset": dataset, "evaluator": evaluator, "size": size}
        return out

    def metainfo(self, run: Any, classes: list[str]) -> dict[str, Any]:
        palette = run.task_params.palette
        if palette and len(palette) != len(classes):
            raise DataError(f"task_params.palette: {len(palette)} colours for {len(classes)} classes")
        return {"classes": tuple(classes), **({"palette": [tuple(c) for c in palette]} if palette else {})}

    # predict ------------------------------------------------------------------------------
    def predict(self, run: Any, loaded: LoadedModel, path: str) -> list[dict[str, Any]]:
        """COCO results, one row per detection: image_id, file_name, category_id / category_name
        (ids of the training file), bbox [x, y, w, h] in pixels of the original image, score
        (and segmentation as RLE for instance segmentation)."""
        import torch
        from mmcv.transforms import Compose
        from mmengine.dataset import pseudo_collate
        from mmengine.registry import init_default_scope

        init_default_scope(self.package)  # load_model registered the package's modules
        images = self.predict_images(path)
        pipeline = Compose(self.pipeline(run, loaded, "predict"))
        classes, threshold = loaded.meta["classes"], run.task_params.box_score_threshold
        rows: list[dict[str, Any]] = []
        drawn: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        size = run.training.per_device_eval_batch_size
        for first in range(0, len(images), size):
            chunk = images[first:first + size]
            batch = pseudo_collate([pipeline({"img_path": im["path"], "img_id": im["id"]}) for im in chunk])
            with torch.no_grad():
                samples = loaded.model.test_step(batch)
            for image, sample in zip(chunk, samples, strict=True):
                found = self.rows(image, sample.pred_instances, loaded.meta, threshold)
                rows.extend(found)
                drawn.append((image, found))
        if run.task_params.draw_folder:
            from adapt_vision.draw import draw_predictions

            draw_predictions(drawn, run.task_params.draw_folder, classes, run.task_params.palette)
        return rows

    def figures(self, run: Any, loaded: LoadedModel, predictions: Any) -> dict[str, Any]:
        """AP per class (masks' where there are masks) and a few images of the split with their
        true boxes (dashed) beside the predicted ones (``predictions``: the MMEngine test evaluator)."""
        from adapt_vision.metrics import AdaptCocoMetric
        from adapt_vision.pictures import per_class_figure, samples_figure

        metric = next((m for m in getattr(predictions, "metrics", []) if isinstance(m, AdaptCocoMetric)), None)
        if metric is None or not metric.last_results:
            return {}
        kind = "mask" if self.masks else "box"
        return {"per_class_ap": per_class_figure(metric.per_class_ap, f"{kind} AP per class (IoU 0.50:0.95)"),
                "samples": samples_figure(metric, list(loaded.meta["classes"]), run.task_params.box_score_threshold,
                                          run.task_params.palette)}

    def rows(self, image: dict[str, Any], pred: Any, meta: dict[str, Any], threshold: float) -> list[dict[str, Any]]:
        classes, ids = meta["classes"], meta.get("category_ids") or list(range(1, len(meta["classes"]) + 1))
        out = []
        keep = pred.scores >= threshold
        masks = None
        if self.masks and "masks" in pred:
            from mmdet.structures.mask import encode_mask_results

            masks = encode_mask_results(pred.masks[keep].cpu().numpy())
        for i, (box, score, label) in enumerate(zip(pred.bboxes[keep].tolist(), pred.scores[keep].tolist(),
                                                    pred.labels[keep].tolist(), strict=True)):
            x1, y1, x2, y2 = box
            row = {"image_id": image["id"], "file_name": image["file_name"], "category_id": ids[label],
                   "category_name": classes[label], "bbox": [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                   "score": round(score, 5)}
            if masks is not None:
                rle = masks[i]
                row["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"].decode()
                                       if isinstance(rle["counts"], bytes) else rle["counts"]}
            out.append(row)
        return out


class InstanceSegmentation(ObjectDetection):
    name = "instance_segmentation"
    description = "Boxes, classes and masks of objects: mmdet 3 instance segmentation (Mask R-CNN...) from COCO files."
    metrics = (*BOX_METRICS[:6], *(f"segm_{m}" for m in BOX_METRICS[:6]), "precision", "recall")
    head_names = ("rpn_head", "roi_head", "bbox_head", "mask_head")
    masks = True
