"""The hand-written baseline of bench/vision.py: mmdet's retinanet_r18_fpn_1x_coco trained from a
bare MMEngine Runner, as a user of MMEngine would write it (same data, pipeline, optimizer,
iterations and seed as the adapt run it is compared with).

    python bench/baseline_mmengine.py ANNOTATIONS.json WORK_DIR ITERATIONS

Prints ``RESULT {"train_loss": ..., "train_runtime": ...}``: the mean loss of all iterations and
the seconds of ``runner.train()``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

SIZE = (128, 128)
CLASSES = ("red", "green", "blue")


def main(ann_file: str, work_dir: str, iterations: int) -> None:
    import mmdet
    from adapt_vision import mmcv_ops
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner, set_random_seed

    mmcv_ops.install()  # no compiled mmcv on this machine: both runs use the same torchvision-backed ops
    register_all_modules(init_default_scope=False)
    config = next((Path(mmdet.__file__).parent / ".mim" / "configs").rglob("retinanet_r18_fpn_1x_coco.py"))
    cfg = Config.fromfile(str(config))
    cfg.model.backbone.init_cfg = None  # no download; random weights, as in the adapt run
    cfg.model.bbox_head.num_classes = len(CLASSES)
    set_random_seed(42)
    from mmdet.registry import MODELS

    with DefaultScope.overwrite_default_scope("mmdet"):
        model = MODELS.build(cfg.model)
        model.init_weights()
    pipeline = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_bbox": True, "with_mask": False},
                {"type": "Resize", "scale": SIZE, "keep_ratio": True}, {"type": "PackDetInputs"}]
    dataset = {"type": "CocoDataset", "ann_file": str(Path(ann_file).resolve()),
               "data_prefix": {"img": str(Path(ann_file).resolve().parent) + "/"}, "metainfo": {"classes": CLASSES},
               "pipeline": pipeline, "filter_cfg": {"filter_empty_gt": True}, "backend_args": None}
    runner = Runner(
        model=model, work_dir=work_dir, default_scope="mmdet", randomness={"seed": 42},
        train_dataloader={"batch_size": 2, "num_workers": 0, "sampler": {"type": "InfiniteSampler", "shuffle": True},
                          "dataset": dataset},
        train_cfg={"type": "IterBasedTrainLoop", "max_iters": iterations, "val_interval": iterations + 1},
        optim_wrapper={"type": "OptimWrapper", "optimizer": {"type": "AdamW", "lr": 1e-4, "weight_decay": 0.0,
                                                             "betas": (0.9, 0.999), "eps": 1e-8},
                       "clip_grad": {"max_norm": 1.0}},
        default_hooks={"checkpoint": {"type": "CheckpointHook", "interval": iterations + 1, "save_last": False},
                       "logger": {"type": "LoggerHook", "interval": iterations}},
        log_level="WARNING", visualizer={"type": "Visualizer", "vis_backends": []})
    started = time.time()
    runner.train()
    seconds = time.time() - started
    losses = runner.message_hub.get_scalar("train/loss").data[0]
    print("RESULT " + json.dumps({"train_loss": float(losses.mean()), "train_runtime": round(seconds, 3)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
