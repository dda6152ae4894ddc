"""Pictures of a detector's evaluation: AP per class, and sample images with the true boxes
(dashed) beside the predicted ones (solid, with class and score)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from adapt_vision.draw import DEFAULT_PALETTE


def per_class_ap_figure(per_class: dict[str, float], title: str) -> Any:
    """A bar per class; classes with no ground truth in the split are marked, not drawn as 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_class)
    values = [0.0 if math.isnan(v) else v for v in per_class.values()]
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.3 * len(names) + 1)))
    ax.barh(names, values, color="#3a7bd5")
    for i, v in enumerate(per_class.values()):
        ax.text((0 if math.isnan(v) else v) + 0.01, i, "no ground truth" if math.isnan(v) else f"{v:.3f}",
                va="center", fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.invert_yaxis()
    ax.set_xlabel("AP")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def samples_figure(metric: Any, classes: list[str], threshold: float, palette: list[list[int]] | None = None,
                   count: int = 6) -> Any:
    """Up to ``count`` images of the split: true boxes dashed white, predictions above ``threshold``
    solid in their class colour (and their masks, for instance segmentation, filled translucent)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Rectangle
    from PIL import Image

    colours = [tuple(c / 255 for c in colour) for colour in (palette or DEFAULT_PALETTE)]
    coco = metric._coco_api
    chosen = metric.last_results[:count]
    columns = min(3, len(chosen))
    rows = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, pred) in zip(axes.ravel(), chosen, strict=False):
        info = coco.load_imgs([pred["img_id"]])[0]
        ax.imshow(Image.open(Path(metric.image_root) / info["file_name"]).convert("RGB"))
        for ann in coco.load_anns(coco.get_ann_ids(img_ids=[pred["img_id"]])):
            x, y, w, h = ann["bbox"]
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="white", linestyle="--", linewidth=1.5))
        keep = pred["scores"] >= threshold
        masks = [m for m, kept in zip(pred.get("masks") or [], keep, strict=False) if kept]
        for i, (box, score, label) in enumerate(zip(pred["bboxes"][keep], pred["scores"][keep], pred["labels"][keep],
                                                    strict=True)):
            x1, y1, x2, y2 = (float(v) for v in box)
            colour = colours[int(label) % len(colours)]
            if i < len(masks):
                from pycocotools import mask as mask_utils

                rle = {**masks[i], "counts": masks[i]["counts"].encode() if isinstance(masks[i]["counts"], str)
                       else masks[i]["counts"]}  # mmdet's results2json turns counts into text
                ax.imshow(np.ma.masked_equal(mask_utils.decode(rle), 0), cmap=ListedColormap([colour]), alpha=0.45,
                          interpolation="nearest")
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
            ax.text(x1, y1, f"{classes[int(label)]} {float(score):.2f}", color="black", fontsize=7,
                    bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0})
        ax.set_title(f"{Path(info['file_name']).name}: {int(keep.sum())} predicted, "
                     f"{len(coco.get_ann_ids(img_ids=[pred['img_id']]))} true", fontsize=8)
    fig.suptitle(f"dashed: ground truth; solid: predictions scored >= {threshold}", fontsize=9)
    fig.tight_layout()
    return fig
