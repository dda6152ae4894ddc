"""adapt-vision: image classification (HF Trainer), mmdet / mmpose / mmseg tasks and the MMEngine
engine they run on."""

from __future__ import annotations

from collections.abc import Callable

from adapt import Engine, Task, hookimpl

from adapt_vision.detection import InstanceSegmentation, ObjectDetection
from adapt_vision.engine import MMEngineEngine
from adapt_vision.image_classification import ImageClassification, ImageClassificationMultilabel
from adapt_vision.pose import PoseDetection
from adapt_vision.segmentation import SemanticSegmentation

TASKS = (ImageClassification, ImageClassificationMultilabel, ObjectDetection, InstanceSegmentation, PoseDetection,
         SemanticSegmentation)


@hookimpl
def adapt_register_tasks(register: Callable[[Task], None]) -> None:
    for task in TASKS:
        register(task())


@hookimpl
def adapt_register_engines(register: Callable[[Engine], None]) -> None:
    register(MMEngineEngine())
