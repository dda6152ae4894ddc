"""Synthetic vision data the tests draw themselves: images with coloured shapes, and their COCO
annotations (boxes, polygons, keypoints) or class folders."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 70, 230)}
KEYPOINTS = ("head", "left_hand", "right_hand", "left_foot", "right_foot")


def _canvas(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, (rng.randint(90, 140),) * 3)
    draw = ImageDraw.Draw(image)
    for _ in range(20):  # some texture
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        shade = rng.randint(60, 170)
        draw.point((x, y), fill=(shade, shade, shade))
    return image


def coco_detection(folder: Path, n_images: int, seed: int = 0, size: tuple[int, int] = (96, 96),
                   classes: tuple[str, ...] = ("red", "green", "blue"), name: str = "annotations.json") -> Path:
    """Images with 1-3 filled rectangles each (class = colour); COCO json with boxes and polygons."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(n_images):
        image = _canvas(rng, size)
        draw = ImageDraw.Draw(image)
        file_name = f"img_{seed}_{index}.png"
        for _ in range(rng.randint(1, 3)):
            label = rng.randrange(len(classes))
            w, h = rng.randint(size[0] // 5, size[0] // 2), rng.randint(size[1] // 5, size[1] // 2)
            x, y = rng.randint(0, size[0] - w - 1), rng.randint(0, size[1] - h - 1)
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=COLOURS[classes[label]])
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": label + 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
        image.save(folder / file_name)
        images.append({"id": index + 1, "file_name": file_name, "width": size[0], "height": size[1]})
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(classes)]
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def coco_keypoints(folder: Path, n_images: int, seed: int = 0, size: tuple[int, int] = (96, 96),
                   name: str = "keypoints.json") -> Path:
    """Images with one 'person' each: a box with coloured dots at its keypoints."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    dot = [(255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0), (0, 128, 255)]
    for index in range(n_images):
        image = _canvas(rng, size)
        draw = ImageDraw.Draw(image)
        w, h = rng.randint(size[0] // 3, size[0] // 2), rng.randint(size[1] // 2, size[1] - 10)
        x, y = rng.randint(0, size[0] - w - 1), rng.randint(0, size[1] - h - 1)
        draw.rectangle((x, y, x + w - 1, y + h - 1), fill=(60, 60, 200))
        points = [(x + w / 2, y + h * 0.1), (x + w * 0.1, y + h * 0.45), (x + w * 0.9, y + h * 0.45),
                  (x + w * 0.25, y + h * 0.9), (x + w * 0.75, y + h * 0.9)]
        flat = []
        for (px, py), colour in zip(points, dot, strict=True):
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
            flat += [round(px, 1), round(py, 1), 2]
        file_name = f"pose_{seed}_{index}.png"
        image.save(folder / file_name)
        images.append({"id": index + 1, "file_name": file_name, "width": size[0], "height": size[1]})
        annotations.append({"id": index + 1, "image_id": index + 1, "category_id": 1, "bbox": [x, y, w, h],
                            "area": w * h, "iscrowd": 0, "num_keypoints": len(points), "keypoints": flat})
    categories = [{"id": 1, "name": "person", "keypoints": list(KEYPOINTS),
                   "skeleton": [[1, 2], [1, 3], [1, 4], [1, 5]]}]
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def class_folders(folder: Path, per_class: int, seed: int = 0, size: tuple[int, int] = (32, 32),
                  classes: tuple[str, ...] = ("red", "green", "blue")) -> Path:
    """An image folder with one sub-folder per class: a shape in the class's colour."""
    rng = random.Random(seed)
    for label in classes:
        (folder / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = _canvas(rng, size)
            w, h = rng.randint(size[0] // 3, size[0] - 4), rng.randint(size[1] // 3, size[1] - 4)
            x, y = rng.randint(0, size[0] - w - 1), rng.randint(0, size[1] - h - 1)
            ImageDraw.Draw(image).rectangle((x, y, x + w, y + h), fill=COLOURS[label])
            image.save(folder / label / f"{index}.png")
    return folder


def image_splits(root: Path) -> dict[str, str]:
    """Class folders for image classification: 16 train and 6 test images per class."""
    return {"train": str(class_folders(root / "train", 16, seed=1)), "test": str(class_folders(root / "test", 6, seed=2))}


def detection_splits(root: Path, config: str) -> dict[str, str]:
    """Drawn COCO splits (16 train, 6 val images) and a 'pretrained' checkpoint of the detector
    ``config`` (random weights, seeded, saved once): what the detection tests start from."""
    import torch
    from adapt_vision.detection import ObjectDetection
    from mmengine.config import Config

    data = {"train": str(coco_detection(root / "train", 16, seed=1)), "val": str(coco_detection(root / "val", 6, seed=2))}
    task = ObjectDetection()
    task.setup()
    cfg = Config.fromfile(config)
    task.shape_config(cfg, {"classes": ["red", "green", "blue"]})
    torch.manual_seed(0)
    model = task.build(cfg.model, config)
    data["checkpoint"] = str(root / "pretrained.pth")
    torch.save({"state_dict": model.state_dict(), "meta": {"note": "random weights for tests"}}, data["checkpoint"])
    return data


def segmentation_folders(root: Path, split: str, n_images: int, seed: int = 0, size: tuple[int, int] = (64, 48),
                         classes: tuple[str, ...] = ("background", "red", "green", "blue")) -> Path:
    """mmseg's layout: images/NAME.jpg, labels/NAME.png (pixel value = class index, 0 the background)
    and splits/SPLIT.txt listing the names; each image has 1-3 filled rectangles or ellipses."""
    rng = random.Random(seed)
    for folder in ("images", "labels", "splits"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(n_images):
        image = _canvas(rng, size)
        mask = Image.new("L", size, 0)
        for _ in range(rng.randint(1, 3)):
            label = rng.randrange(1, len(classes))
            w, h = rng.randint(size[0] // 4, size[0] // 2), rng.randint(size[1] // 4, size[1] // 2)
            x, y = rng.randint(0, size[0] - w - 1), rng.randint(0, size[1] - h - 1)
            shape = ImageDraw.Draw(image).ellipse if rng.random() < 0.5 else ImageDraw.Draw(image).rectangle
            shape((x, y, x + w, y + h), fill=COLOURS[classes[label]])
            (ImageDraw.Draw(mask).ellipse if shape.__name__ == "ellipse" else ImageDraw.Draw(mask).rectangle)(
                (x, y, x + w, y + h), fill=label)
        name = f"{split}_{seed}_{index}"
        image.save(root / "images" / f"{name}.jpg", quality=95)
        mask.save(root / "labels" / f"{name}.png")
        names.append(name)
    path = root / "splits" / f"{split}.txt"
    path.write_text("\n".join(names) + "\n")
    return path


def segmentation_splits(root: Path, config: str) -> dict[str, str]:
    """Drawn mmseg splits (16 train, 6 val images) and a 'pretrained' checkpoint of the segmentor
    ``config`` (random weights, seeded, saved once)."""
    import torch
    from adapt_vision.segmentation import SemanticSegmentation
    from mmengine.config import Config

    data = {"train": str(segmentation_folders(root, "train", 16, seed=1)),
            "val": str(segmentation_folders(root, "val", 6, seed=2))}
    task = SemanticSegmentation()
    task.setup()
    cfg = Config.fromfile(config)
    task.shape_config(cfg, {"classes": list(SEGMENTATION_CLASSES)})
    torch.manual_seed(0)
    model = task.build(cfg.model, config)
    data["checkpoint"] = str(root / "pretrained.pth")
    torch.save({"state_dict": model.state_dict(), "meta": {"note": "random weights for tests"}}, data["checkpoint"])
    return data


SEGMENTATION_CLASSES = ("background", "red", "green", "blue")
