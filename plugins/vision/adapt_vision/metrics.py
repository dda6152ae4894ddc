"""Evaluators that report adapt's metric names: COCO mAP from pycocotools (through mmdet's
CocoMetric), plus precision and recall at IoU 0.5 for boxes scored above box_score_threshold."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import METRICS

NAMES = {"mAP": "mean_average_precision", "mAP_50": "map_50", "mAP_75": "map_75", "mAP_s": "map_small",
         "mAP_m": "map_medium", "mAP_l": "map_large"}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (x1, y1, x2, y2): a (n, 4) x b (m, 4) -> (n, m)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


@METRICS.register_module()
class AdaptCocoMetric(CocoMetric):
    """mmdet's CocoMetric with adapt's names (``mean_average_precision``, ``map_50``...; ``segm_``
    before the mask ones) and ``precision`` / ``recall`` of the boxes above ``score_threshold``,
    matched greedily to ground truth at IoU >= 0.5 within each class."""

    default_prefix = ""  # metric names as they are (None would make MMEngine warn)

    def __init__(self, score_threshold: float = 0.3, image_root: str = "", **kwargs: Any) -> None:
        super().__init__(**{"classwise": True, **kwargs})
        self.score_threshold = score_threshold
        self.image_root = image_root  # where the file names of ann_file are, for pictures
        # the last evaluation, for the task's pictures: AP per class (of the last kind: masks where
        # there are masks), and the (ground truth, prediction) pairs mmdet evaluated
        self.per_class_ap: dict[str, float] = {}
        self.last_results: list = []

    def compute_metrics(self, results: list) -> dict[str, float]:
        if self.cat_ids is None:  # as mmdet's compute_metrics sets them
            self.cat_ids = self._coco_api.get_cat_ids(cat_names=self.dataset_meta["classes"])
        raw: dict[str, float] = {}
        if any(len(pred["bboxes"]) for _, pred in results):  # else mmdet logs an error and reports nothing
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its summary tables
                raw = super().compute_metrics(results)
        classes = [str(c) for c in self.dataset_meta["classes"]]
        self.per_class_ap = {c: float(raw.pop(f"{c}_precision")) for c in classes if f"{c}_precision" in raw}
        self.last_results = results
        # no detection at all (an early, untrained model): that is mAP 0
        out: dict[str, float] = {("" if kind == "bbox" else f"{kind}_") + name: 0.0
                                 for kind in self.metrics for name in NAMES.values()}
        for key, value in raw.items():
            kind, _, item = key.partition("_")
            if item in NAMES:
                out[("" if kind == "bbox" else f"{kind}_") + NAMES[item]] = float(value)
        out.update(self._precision_recall([pred for _, pred in results]))
        return out

    def _precision_recall(self, preds: list[dict[str, Any]]) -> dict[str, float]:
        coco, label_of = self._coco_api, {cat: i for i, cat in enumerate(self.cat_ids)}
        tp = fp = fn = 0
        for pred in preds:
            anns = [a for a in coco.load_anns(coco.get_ann_ids(img_ids=[pred["img_id"]]))
                    if not a.get("iscrowd") and a["category_id"] in label_of]
            gt_boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                                 for a in anns], dtype=float).reshape(-1, 4)
            gt_labels = np.array([label_of[a["category_id"]] for a in anns], dtype=int)
            keep = pred["scores"] >= self.score_threshold
            boxes, labels, scores = pred["bboxes"][keep], pred["labels"][keep], pred["scores"][keep]
            matched = np.zeros(len(anns), dtype=bool)
            for i in np.argsort(-scores):
                same = np.flatnonzero((gt_labels == labels[i]) & ~matched)
                if len(same):
                    ious = _iou(boxes[i:i + 1], gt_boxes[same])[0]
                    best = int(np.argmax(ious))
                    if ious[best] >= 0.5:
                        matched[same[best]] = True
                        tp += 1
                        continue
                fp += 1
            fn += int((~matched).sum())
        return {"precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0}
