"""adapt-vision: image classification (HF Trainer) and mmdet / mmpose tasks (MMEngine)."""

from __future__ import annotations

from collections.abc import Callable

from adapt import Task, hookimpl

from adapt_vision.detection import InstanceSegmentation, ObjectDetection
from adapt_vision.image_classification import ImageClassification, ImageClassificationMultilabel
from adapt_vision.pose import PoseDetection

TASKS = (ImageClassification, ImageClassificationMultilabel, ObjectDetection, InstanceSegmentation, PoseDetection)


@hookimpl
def adapt_register_tasks(register: Callable[[Task], None]) -> None:
    for task in TASKS:
        register(task())
