"""The keypoint evaluator with adapt's metric names: COCO keypoint AP / AR (OKS) from mmpose's
CocoMetric (xtcocotools underneath)."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
from mmpose.evaluation.metrics import CocoMetric
from mmpose.registry import METRICS

NAMES = {"AP": "mean_average_precision", "AP .5": "map_50", "AP .75": "map_75", "AP (M)": "map_medium",
         "AP (L)": "map_large", "AR": "mean_average_recall", "AR .5": "mar_50", "AR .75": "mar_75",
         "AR (M)": "mar_medium", "AR (L)": "mar_large"}


@METRICS.register_module()
class AdaptKeypointMetric(CocoMetric):
    """mmpose's CocoMetric reporting ``mean_average_precision``, ``map_50``... ``mean_average_recall``,
    ``mar_50``... (keypoint OKS), without ``coco/`` prefixes or printed tables; keeps a few
    instances (image, box, true and predicted keypoints) of the last evaluation for pictures."""

    default_prefix = ""  # metric names as they are (None would make MMEngine warn)

    def __init__(self, samples: int = 6, **kwargs: Any) -> None:
        kwargs.setdefault("outfile_prefix", None)
        super().__init__(**kwargs)
        self.keep = samples  # the last evaluation's first instances, for the task's picture
        self.samples: list[dict[str, Any]] = []

    def process(self, data_batch: Any, data_samples: Any) -> None:
        if not self.results:
            self.samples = []  # a new evaluation
        super().process(data_batch, data_samples)
        for sample in data_samples:
            if len(self.samples) >= self.keep:
                break
            ann = self.coco.anns.get(sample["id"]) if self.coco is not None else None
            self.samples.append({
                "img_path": sample["img_path"], "keypoints": np.asarray(sample["pred_instances"]["keypoints"][0]),
                "scores": np.asarray(sample["pred_instances"]["keypoint_scores"][0]),
                "truth": np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3) if ann else None,
                "bbox": list(ann["bbox"]) if ann else None})

    def compute_metrics(self, results: list) -> dict[str, float]:
        with contextlib.redirect_stdout(io.StringIO()):  # xtcocotools prints its summary tables
            raw = super().compute_metrics(results)
        return {NAMES[key]: float(value) for key, value in raw.items() if key in NAMES}
