"""Predictions drawn onto their images (adapt predict with task_params.draw_folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                   (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def draw_predictions(items: list[tuple[dict[str, Any], list[dict[str, Any]]]], folder: str, classes: list[str],
                     palette: list[list[int]] | None = None) -> None:
    """Write each image with its boxes, masks and keypoints drawn, under its own file name."""
    from PIL import Image, ImageDraw

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    colours = [tuple(c) for c in palette] if palette else DEFAULT_PALETTE
    for image, rows in items:
        picture = Image.open(image["path"]).convert("RGB")
        overlay = Image.new("RGBA", picture.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        for row in rows:
            colour = colours[classes.index(row["category_name"]) % len(colours)] if row.get("category_name") in classes \
                else colours[0]
            if "segmentation" in row:
                from pycocotools import mask as mask_utils

                rle = dict(row["segmentation"], counts=row["segmentation"]["counts"].encode())
                mask = Image.fromarray(mask_utils.decode(rle) * 110)
                overlay.paste((*colour, 110), (0, 0), mask)
            x, y, w, h = row["bbox"]
            draw.rectangle((x, y, x + w, y + h), outline=(*colour, 255), width=2)
            draw.text((x + 2, y + 1), f"{row.get('category_name', '')} {row['score']:.2f}", fill=(*colour, 255))
            points = row.get("keypoints") or []
            for i in range(0, len(points), 3):
                px, py = points[i], points[i + 1]
                draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=(*colour, 255))
        Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB").save(out / Path(image["file_name"]).name)
