"""The keypoint evaluator with adapt's metric names: COCO keypoint AP / AR (OKS) from mmpose's
CocoMetric (xtcocotools underneath)."""

from __future__ import annotations

import contextlib
import io
from typing import Any

from mmpose.evaluation.metrics import CocoMetric
from mmpose.registry import METRICS

NAMES = {"AP": "mean_average_precision", "AP .5": "map_50", "AP .75": "map_75", "AP (M)": "map_medium",
         "AP (L)": "map_large", "AR": "mean_average_recall", "AR .5": "mar_50", "AR .75": "mar_75",
         "AR (M)": "mar_medium", "AR (L)": "mar_large"}


@METRICS.register_module()
class AdaptKeypointMetric(CocoMetric):
    """mmpose's CocoMetric reporting ``mean_average_precision``, ``map_50``... ``mean_average_recall``,
    ``mar_50``... (keypoint OKS), without ``coco/`` prefixes or printed tables."""

    default_prefix = ""  # metric names as they are (None would make MMEngine warn)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("outfile_prefix", None)
        super().__init__(**kwargs)

    def compute_metrics(self, results: list) -> dict[str, float]:
        with contextlib.redirect_stdout(io.StringIO()):  # xtcocotools prints its summary tables
            raw = super().compute_metrics(results)
        return {NAMES[key]: float(value) for key, value in raw.items() if key in NAMES}
