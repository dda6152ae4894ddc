"""Pictures of an evaluation: a score per class (detectors' AP, segmentation's IoU), and sample
images with the truth beside the predictions (boxes: dashed true, solid predicted with class and
score; masks: true and predicted label maps side by side)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from adapt_vision.draw import DEFAULT_PALETTE


def per_class_figure(per_class: dict[str, float], title: str, quantity: str = "AP",
                     absent: str = "no ground truth") -> Any:
    """A bar per class of ``quantity`` (0 to 1); classes without a value (NaN: nothing of them in
    the split) are marked ``absent``, not drawn as 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_class)
    values = [0.0 if math.isnan(v) else v for v in per_class.values()]
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.3 * len(names) + 1)))
    ax.barh(names, values, color="#3a7bd5")
    for i, v in enumerate(per_class.values()):
        ax.text((0 if math.isnan(v) else v) + 0.01, i, absent if math.isnan(v) else f"{v:.3f}",
                va="center", fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.invert_yaxis()
    ax.set_xlabel(quantity)
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


def masks_figure(samples: list[tuple[str, Any, Any]], classes: list[str], palette: list[list[int]],
                 ignore_index: int = 255) -> Any:
    """A row per (image path, true label map, predicted label map): the image, the true classes
    and the predicted ones in the class colours (ignored pixels black), with a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch
    from PIL import Image

    colours = np.array([*palette, [0, 0, 0]], dtype=np.uint8)  # the last: ignored pixels

    def coloured(labels: Any) -> Any:
        labels = np.asarray(labels).astype(np.int64)
        return colours[np.where((labels == ignore_index) | (labels >= len(palette)), len(palette), labels)]

    fig, axes = plt.subplots(len(samples), 3, figsize=(9, 3 * len(samples)), squeeze=False)
    for row, (path, truth, predicted) in zip(axes, samples, strict=True):
        with Image.open(path) as image:
            row[0].imshow(image.convert("RGB").resize(np.asarray(truth).shape[::-1]))
        row[0].set_title(Path(path).name, fontsize=8)
        row[1].imshow(coloured(truth), interpolation="nearest")
        row[1].set_title("true", fontsize=8)
        row[2].imshow(coloured(predicted), interpolation="nearest")
        row[2].set_title("predicted", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.legend(handles=[Patch(color=np.array(c) / 255, label=name) for name, c in zip(classes, palette, strict=True)],
               loc="lower center", ncol=min(6, len(classes)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 / len(samples) + 0.02, 1, 1))
    return fig


def keypoints_figure(samples: list[dict[str, Any]], names: list[str], skeleton: list[list[int]],
                     threshold: float) -> Any:
    """Each instance's box (dashed), true keypoints (white rings) and predicted ones scored above
    ``threshold`` (dots in the keypoint's colour, joined by the skeleton)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle
    from PIL import Image

    colours = [tuple(c / 255 for c in DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)]) for i in range(len(names))]
    columns = min(3, len(samples))
    rows = math.ceil(len(samples) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, sample in zip(axes.ravel(), samples, strict=False):
        with Image.open(sample["img_path"]) as image:
            ax.imshow(image.convert("RGB"))
        if sample["bbox"]:
            x, y, w, h = sample["bbox"]
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="white", linestyle="--", linewidth=1))
        points, shown = np.asarray(sample["keypoints"]), np.asarray(sample["scores"]) >= threshold
        for a, b in skeleton:
            if shown[a - 1] and shown[b - 1]:
                ax.plot(*points[[a - 1, b - 1]].T, color="white", linewidth=1, alpha=0.7)
        if sample["truth"] is not None:
            seen = sample["truth"][:, 2] > 0
            ax.scatter(*sample["truth"][seen, :2].T, s=60, facecolors="none", edgecolors="white", linewidths=1.2)
        ax.scatter(*points[shown].T, s=18, c=[colours[i] for i in np.flatnonzero(shown)], zorder=3)
        ax.set_title(f"{Path(sample['img_path']).name}: {int(shown.sum())} of {len(names)} keypoints scored "
                     f">= {threshold}", fontsize=8)
    fig.suptitle("white rings: true keypoints; dots: predicted (colour per keypoint)", fontsize=9)
    fig.tight_layout()
    return fig
