"""pose_detection: mmpose 1 top-down keypoint models (heatmap, SimCC, regression heads) from COCO
keypoint files, through MMEngine. Top-down: the model finds the keypoints of one person (one
instance) inside a given box; the boxes come from the COCO file, or are whole images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from adapt import DataError, LoadedModel
from pydantic import Field

from adapt_vision.openmmlab import OpenMMLabParams, OpenMMLabTask

POSE_METRICS = ("mean_average_precision", "map_50", "map_75", "map_medium", "map_large",
                "mean_average_recall", "mar_50", "mar_75", "mar_medium", "mar_large")
COCO_SIGMAS = {  # COCO's 17 person keypoints: the OKS sigmas of the COCO keypoint challenge
    "nose": 0.026, "left_eye": 0.025, "right_eye": 0.025, "left_ear": 0.035, "right_ear": 0.035,
    "left_shoulder": 0.079, "right_shoulder": 0.079, "left_elbow": 0.072, "right_elbow": 0.072, "left_wrist": 0.062,
    "right_wrist": 0.062, "left_hip": 0.107, "right_hip": 0.107, "left_knee": 0.087, "right_knee": 0.087,
    "left_ankle": 0.089, "right_ankle": 0.089}
HEAD_SIZE_KEYS = ("out_channels", "num_joints")  # heatmap / SimCC heads, regression heads


class PoseParams(OpenMMLabParams):
    sigmas: list[float] | None = Field(None, description="OKS sigma of each keypoint, in the file's keypoint order, "
                                                         "for keypoint AP / AR (None: COCO's values for COCO keypoint "
                                                         "names, 0.05 for others).")
    keypoint_score_threshold: float = Field(0.2, ge=0, le=1, description="Keypoints scored below this do not count "
                                                                         "towards an instance's score.")


class PoseDetection(OpenMMLabTask):
    name = "pose_detection"
    description = "Keypoints of people (or any one kind of object) in given boxes: mmpose 1 top-down models from COCO " \
                  "keypoint files (MMEngine)."
    Params = PoseParams
    metrics = POSE_METRICS
    package = "mmpose"
    evaluators = "adapt_vision.keypoint_metrics"
    # a batch is person crops (256 x 192 for the COCO models), not whole images
    training_defaults: ClassVar[dict[str, Any]] = {"per_device_train_batch_size": 16, "per_device_eval_batch_size": 32,
                                                   "num_train_epochs": 12}
    install_hint = ("install it with: pip install cython && pip install --no-build-isolation --no-binary xtcocotools "
                    "xtcocotools chumpy && pip install 'adapt-vision[pose]' (xtcocotools' wheels are built for numpy 1)")
    head_names = ("head",)

    # data ---------------------------------------------------------------------------------
    def inspect_data(self, run: Any) -> dict[str, Any]:
        path = run.config.data.train
        coco = self.read_coco(run, "train", path, ("bbox", "keypoints"))
        categories = [c for c in coco["categories"] if c.get("keypoints")]
        if len(categories) != 1:
            raise DataError(f"train data {path}: top-down pose needs exactly one category with `keypoints` names, "
                            f"found {len(categories)}")
        category = categories[0]
        names = [str(k) for k in category["keypoints"]]
        sigmas = run.task_params.sigmas or [COCO_SIGMAS.get(k, 0.05) for k in names]
        if len(sigmas) != len(names):
            raise DataError(f"task_params.sigmas: {len(sigmas)} values for {len(names)} keypoints "
                            f"({', '.join(names)})")
        skeleton = [list(link) for link in category.get("skeleton") or []]
        if any(len(link) != 2 or not all(isinstance(i, int) and 1 <= i <= len(names) for i in link) for link in skeleton):
            raise DataError(f"train data {path}: skeleton links must be pairs of keypoint numbers 1..{len(names)}")
        return {"classes": [category["name"]], "category_ids": [category["id"]], "keypoints": names,
                "skeleton": skeleton, "sigmas": sigmas}

    def read_coco(self, run: Any, split: str, path: str, require: tuple[str, ...] = ("bbox",)) -> dict[str, Any]:
        coco = super().read_coco(run, split, path, require)
        counts = {c.get("id"): len(c.get("keypoints") or []) for c in coco["categories"] if isinstance(c, dict)}
        for number, ann in enumerate(coco["annotations"]):
            points, expected = ann.get("keypoints"), 3 * counts[ann["category_id"]]
            if "keypoints" in require and (not isinstance(points, list) or len(points) != expected):
                raise DataError(f"{split} data {path}: annotations[{number}]: keypoints must be {expected} numbers (x, y, "
                                f"visibility for each of the category's {expected // 3} keypoints), not "
                                f"{len(points) if isinstance(points, list) else type(points).__name__}")
        return coco

    def coco_examples(self, coco: dict[str, Any], split: str) -> list[dict[str, Any]]:
        """Top-down pose iterates over person instances: the annotations with a visible keypoint."""
        return [a for a in coco["annotations"] if any((a.get("keypoints") or [])[2::3])]

    def shape_config(self, cfg: Any, meta: dict[str, Any], params: Any = None) -> None:
        head = cfg.model.get("head")
        key = next((k for k in HEAD_SIZE_KEYS if isinstance(head, dict) and k in head), None)
        if key is None:
            raise DataError("the model config has no head with out_channels / num_joints to set (is it a top-down "
                            "pose config?)")
        head[key] = len(meta["keypoints"])
        if params is not None and params.image_width > 0 and params.image_height > 0:
            _resize_codec(head.get("decoder"), (params.image_width, params.image_height))

    def codec(self, loaded: LoadedModel) -> dict[str, Any]:
        decoder = loaded.state["model_cfg"].get("head", {}).get("decoder")
        if not decoder:
            raise DataError("the model config's head has no decoder (the codec that turns keypoints into training "
                            "targets); give a top-down mmpose config")
        return dict(decoder)

    def pipeline(self, run: Any, loaded: LoadedModel, split: str) -> list[dict[str, Any]]:
        codec = self.codec(loaded)
        steps: list[dict[str, Any]] = [{"type": "LoadImage"}, {"type": "GetBBoxCenterScale"}]
        if split == "train" and run.task_params.apply_augmentations:
            steps.append({"type": "RandomFlip", "direction": "horizontal"})
        steps.append({"type": "TopdownAffine", "input_size": tuple(codec["input_size"])})
        if split == "train":
            steps.append({"type": "GenerateTarget", "encoder": codec})
        return [*steps, {"type": "PackPoseInputs"}]

    def metainfo(self, meta: dict[str, Any]) -> dict[str, Any]:
        """mmpose's dataset meta: keypoint names, left / right pairs (for flips), skeleton, sigmas."""
        names = meta["keypoints"]
        info = {}
        for i, name in enumerate(names):
            swap = name.replace("left", "\0").replace("right", "left").replace("\0", "right")
            info[i] = {"name": name, "id": i, "color": [255, 128, 0], "type": "",
                       "swap": swap if swap != name and swap in names else ""}
        links = {i: {"link": (names[a - 1], names[b - 1]), "id": i, "color": [0, 255, 0]}
                 for i, (a, b) in enumerate(meta["skeleton"])}
        return {"dataset_name": "adapt", "keypoint_info": info, "skeleton_info": links,
                "joint_weights": [1.0] * len(names), "sigmas": list(meta["sigmas"])}

    def load_data(self, run: Any, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        meta = loaded.meta
        out = {}
        for split, path in splits.items():
            coco = self.read_coco(run, split, path, ("bbox", "keypoints"))
            names = next((c["keypoints"] for c in coco["categories"] if c.get("keypoints")), None)
            if names != meta["keypoints"]:
                raise DataError(f"{split} data {path}: its keypoints ({', '.join(names or ['none'])}) are not the "
                                f"model's ({', '.join(meta['keypoints'])})")
            self.check_images(run, split, path, coco)
            size = self.dataset_size(run, coco, split)
            dataset = {"type": "CocoDataset", "data_mode": "topdown", "ann_file": str(Path(path).resolve()),
                       "data_prefix": {"img": str(self.image_root(run, path)) + "/"}, "metainfo": self.metainfo(meta),
                       "pipeline": self.pipeline(run, loaded, split), "test_mode": split != "train",
                       **({"indices": size} if run.data_limit(split) else {})}
            evaluator = {"type": "AdaptKeypointMetric", "ann_file": str(Path(path).resolve()),
                         "keypoint_score_thr": run.task_params.keypoint_score_threshold}
            out[split] = {"dataset": dataset, "evaluator": evaluator, "size": size}
        return out

    # predict ------------------------------------------------------------------------------
    def predict(self, run: Any, loaded: LoadedModel, path: str) -> list[dict[str, Any]]:
        """COCO keypoint results, one row per instance: image_id, file_name, category_id /
        category_name, bbox [x, y, w, h] (the box the keypoints were looked for in: the file's
        annotation boxes, else the whole image), keypoints [x, y, score] per keypoint in pixels of
        the original image, and score (the mean keypoint score)."""
        import numpy as np
        import torch
        from mmcv.transforms import Compose
        from mmengine.dataset import pseudo_collate
        from mmengine.registry import init_default_scope
        from mmpose.datasets.datasets.utils import parse_pose_metainfo
        from PIL import Image

        init_default_scope(self.package)
        meta = loaded.meta
        flip = parse_pose_metainfo(self.metainfo(meta))
        pipeline = Compose(self.pipeline(run, loaded, "predict"))
        boxes = self.boxes(path)
        items = []
        for image in self.predict_images(path):
            found = boxes.get(image["id"])
            if not found:
                with Image.open(image["path"]) as picture:
                    found = [[0.0, 0.0, float(picture.width), float(picture.height)]]
            items += [(image, box) for box in found]
        rows: list[dict[str, Any]] = []
        drawn: dict[Any, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        size = run.training.per_device_eval_batch_size
        for first in range(0, len(items), size):
            chunk = items[first:first + size]
            batch = pseudo_collate([pipeline({
                "img_path": image["path"], "img_id": image["id"], "id": first + i,
                "bbox": np.array([[x, y, x + w, y + h]], dtype=np.float32), "bbox_score": np.ones(1, dtype=np.float32),
                "flip_indices": flip["flip_indices"], "dataset_name": "adapt"})
                for i, (image, (x, y, w, h)) in enumerate(chunk)])
            with torch.no_grad():
                samples = loaded.model.test_step(batch)
            for (image, box), sample in zip(chunk, samples, strict=True):
                points = sample.pred_instances.keypoints[0]
                scores = np.asarray(sample.pred_instances.keypoint_scores[0], dtype=float)
                row = {"image_id": image["id"], "file_name": image["file_name"], "category_id": meta["category_ids"][0],
                       "category_name": meta["classes"][0], "bbox": [round(float(v), 2) for v in box],
                       "keypoints": [round(float(v), 3) for (px, py), s in zip(points, scores, strict=True)
                                     for v in (px, py, s)],
                       "score": round(float(scores.mean()), 5)}
                rows.append(row)
                drawn.setdefault(image["id"], (image, []))[1].append(row)
        if run.task_params.draw_folder:
            from adapt_vision.draw import draw_predictions

            draw_predictions(list(drawn.values()), run.task_params.draw_folder, meta["classes"])
        return rows

    def figures(self, run: Any, loaded: LoadedModel, predictions: Any) -> dict[str, Any]:
        """A few instances of the split: their true keypoints beside the predicted ones."""
        from adapt_vision.keypoint_metrics import AdaptKeypointMetric
        from adapt_vision.pictures import keypoints_figure

        metric = next((m for m in getattr(predictions, "metrics", []) if isinstance(m, AdaptKeypointMetric)), None)
        if metric is None or not metric.samples:
            return {}
        return {"samples": keypoints_figure(metric.samples, loaded.meta["keypoints"], loaded.meta["skeleton"],
                                            run.task_params.keypoint_score_threshold)}

    def boxes(self, path: str) -> dict[Any, list[list[float]]]:
        """Instance boxes by image id from a COCO file's annotations (none for other inputs)."""
        import json

        file = Path(path)
        if file.suffix != ".json" or not file.is_file():
            return {}
        found: dict[Any, list[list[float]]] = {}
        for ann in json.loads(file.read_text(encoding="utf-8")).get("annotations") or []:
            if isinstance(ann, dict) and isinstance(ann.get("bbox"), list) and len(ann["bbox"]) == 4:
                found.setdefault(ann.get("image_id"), []).append([float(v) for v in ann["bbox"]])
        return found


def _resize_codec(codec: Any, size: tuple[int, int]) -> None:
    """Give a codec a new input size (width, height); its heatmap / SimCC sizes keep their ratio."""
    if not isinstance(codec, dict) or "input_size" not in codec:
        return
    old = codec["input_size"]
    if "heatmap_size" in codec:
        hw, hh = codec["heatmap_size"]
        codec["heatmap_size"] = (max(1, round(hw * size[0] / old[0])), max(1, round(hh * size[1] / old[1])))
    codec["input_size"] = tuple(size)
