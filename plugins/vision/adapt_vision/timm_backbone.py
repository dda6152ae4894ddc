"""timm networks beyond image classification: checkpoints in another library's layout, and any
timm network as the backbone of an mmdet / mmpose model (``task_params.backbone``), its feature
channels wired into the neck or head."""

from __future__ import annotations

import logging
from typing import Any

from adapt import ModelError, first_line

log = logging.getLogger("adapt")
BACKBONE_TYPE = "AdaptTimmBackbone"


def load_by_name_or_layout(model: Any, path: str, source: str, architecture: str) -> None:
    """Load a state dict by name; when its names are another library's for the same network
    (e.g. efficientnet_pytorch's ``_blocks.0._bn1`` for timm's ``blocks.0.0.bn1``), by position,
    only if every tensor's shape matches in order. ``source`` and ``architecture`` name the
    settings that gave the file and chose the network, for the errors."""
    import torch
    from safetensors.torch import load_file

    try:
        state = load_file(path) if path.endswith(".safetensors") else torch.load(path, map_location="cpu",
                                                                                   weights_only=True)
    except Exception as exc:  # weights_only refuses pickled objects; a missing file
        raise ModelError(f"{source} {path}: not a checkpoint of weights ({first_line(exc)})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    if set(state) & set(own):
        missing, _ = model.load_state_dict(state, strict=False)
        if missing:
            log.warning("checkpoint %s: %d tensors of the model not in it (e.g. %s)", path, len(missing), missing[0])
        return
    if len(state) == len(own) and all(a.shape == b.shape for a, b in zip(state.values(), own.values(), strict=True)):
        model.load_state_dict(dict(zip(own, state.values(), strict=True)))
        log.info("checkpoint %s: names differ from %s's (%s vs %s); loaded by position: the same %d tensors in the "
                 "same order and shapes", path, type(model).__name__, next(iter(state)), next(iter(own)), len(own))
        return
    raise ModelError(f"{source} {path}: its tensors fit neither the names nor the layout of {architecture}")


def close_names(name: str) -> str:
    """`` (close: a, b)``: timm model names like ``name``, for an error message (empty if none)."""
    import difflib

    import timm

    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    return f" (close: {', '.join(close)})" if close else ""


def feature_channels(name: str) -> list[int]:
    """The channels of each feature level timm's ``features_only`` network ``name`` gives."""
    import timm
    import torch

    if name not in timm.list_models(name):
        raise ModelError(f"task_params.backbone: {name} is not a timm model name{close_names(name)}")
    with torch.device("meta"):
        return list(timm.create_model(name, pretrained=False, features_only=True).feature_info.channels())


def wire_backbone(cfg: Any, name: str, checkpoint: str | None) -> None:
    """Replace ``cfg.model.backbone`` by the timm network ``name`` (weights from ``checkpoint``),
    giving as many feature levels as the old backbone gave, the deepest ones, and setting the
    neck's (or, without a neck, the head's) input channels to theirs."""
    channels = feature_channels(name)
    model = cfg.model
    neck = model.get("neck")
    if isinstance(neck, dict) and isinstance(neck.get("in_channels"), (list, tuple)):
        count = len(neck["in_channels"])
    else:
        count = 1
    if count > len(channels):
        raise ModelError(f"task_params.backbone: {name} gives {len(channels)} feature levels; the neck takes {count}")
    indices = list(range(len(channels) - count, len(channels)))
    chosen = [channels[i] for i in indices]
    init = {"type": "Pretrained", "checkpoint": checkpoint} if checkpoint else None
    model["backbone"] = {"type": BACKBONE_TYPE, "model_name": name, "out_indices": indices, "init_cfg": init}
    if count > 1 or isinstance(neck, dict) and "in_channels" in neck:
        neck["in_channels"] = chosen if count > 1 else chosen[-1]
    elif isinstance(model.get("head"), dict):  # a top-down pose model: the head reads the deepest level
        model["head"]["in_channels"] = chosen[-1]
    log.info("backbone: timm %s, feature levels %s with %s channels%s", name, indices, chosen,
             f", weights from {checkpoint}" if checkpoint else " (random weights)")


def register() -> None:
    """Register the backbone in MMEngine's root registry (seen from mmdet's and mmpose's)."""
    import torch
    from mmengine.model import BaseModule
    from mmengine.registry import MODELS

    if BACKBONE_TYPE in MODELS.module_dict:
        return

    class AdaptTimmBackbone(BaseModule):
        """A timm network's feature levels as a backbone: ``forward`` returns them as a tuple."""

        def __init__(self, model_name: str, out_indices: list[int], init_cfg: dict[str, Any] | None = None) -> None:
            import timm

            super().__init__(init_cfg=None)
            self.weights = (init_cfg or {}).get("checkpoint") if (init_cfg or {}).get("type") == "Pretrained" else None
            self.model_name = model_name
            self.body = timm.create_model(model_name, pretrained=False, features_only=True,
                                          out_indices=tuple(out_indices))

        def init_weights(self) -> None:
            """The checkpoint is a whole network's (a classifier): loaded into it, then its
            feature layers copied (by name or, for another library's names, by layout)."""
            import timm

            if not self.weights:
                return
            whole = timm.create_model(self.model_name, pretrained=False)
            load_by_name_or_layout(whole, self.weights, "task_params.backbone_checkpoint", "task_params.backbone")
            missing, _ = self.body.load_state_dict(whole.state_dict(), strict=False)
            if missing:
                raise ModelError(f"task_params.backbone_checkpoint: {len(missing)} tensors of {self.model_name}'s "
                                 f"feature layers are not in {self.weights} (e.g. {missing[0]})")

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(self.body(x))

    MODELS.register_module(name=BACKBONE_TYPE, module=AdaptTimmBackbone)
