"""What semantic segmentation registers in mmseg: a dataset of (image, mask) path pairs that adapt
has read and checked, and the IoU evaluator with adapt's metric names and per-class values."""

from __future__ import annotations

from typing import Any

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import DATASETS, METRICS


@DATASETS.register_module()
class AdaptSegDataset(BaseSegDataset):
    """mmseg's dataset over given ``items`` ({"img_path", "seg_map_path"}): name lists and tables
    are resolved (and every file checked) by the task, so both layouts read the same way."""

    def __init__(self, items: list[dict[str, str]], **kwargs: Any) -> None:
        self.items = items
        super().__init__(**kwargs)

    def load_data_list(self) -> list[dict[str, Any]]:
        return [{**item, "label_map": self.label_map, "reduce_zero_label": self.reduce_zero_label, "seg_fields": []}
                for item in self.items]


@METRICS.register_module()
class AdaptIoUMetric(IoUMetric):
    """mmseg's IoUMetric reporting ``mean_iou``, ``mean_accuracy`` (per-class pixel accuracy,
    averaged) and ``pixel_accuracy`` as fractions, plus ``iou_<class>`` for each class present in
    the labels or the predictions (absent classes count for no mean, as in mmseg). Keeps the last
    evaluation's per-class IoU and a few (image, true, predicted) samples for pictures."""

    default_prefix = ""  # metric names as they are (None would make MMEngine warn)

    def __init__(self, samples: int = 6, **kwargs: Any) -> None:
        super().__init__(**{"iou_metrics": ["mIoU"], **kwargs})
        self.keep = samples
        self.samples: list[tuple[str, np.ndarray, np.ndarray]] = []
        self.per_class_iou: dict[str, float] = {}

    def process(self, data_batch: dict, data_samples: Any) -> None:
        if len(self.results) == 0:
            self.samples = []  # a new evaluation
        super().process(data_batch, data_samples)
        for sample in data_samples:
            if len(self.samples) < self.keep and "gt_sem_seg" in sample:
                self.samples.append((sample["img_path"], sample["gt_sem_seg"]["data"].squeeze().cpu().numpy(),
                                     sample["pred_sem_seg"]["data"].squeeze().cpu().numpy()))

    def compute_metrics(self, results: list) -> dict[str, float]:
        intersect, union, predicted, label = (sum(parts).cpu().numpy().astype(float) for parts in zip(*results, strict=True))
        present = union > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(present, intersect / union, np.nan)
            accuracy = np.where(label > 0, intersect / label, np.nan)
        classes = [str(c) for c in self.dataset_meta["classes"]]
        self.per_class_iou = {c: float(v) for c, v in zip(classes, iou, strict=True)}
        out = {"mean_iou": float(np.nanmean(iou)) if present.any() else 0.0,
               "mean_accuracy": float(np.nanmean(accuracy)) if (label > 0).any() else 0.0,
               "pixel_accuracy": float(intersect.sum() / label.sum()) if label.sum() else 0.0}
        out.update({f"iou_{c}": float(v) for c, v in zip(classes, iou, strict=True) if not np.isnan(v)})
        return out
