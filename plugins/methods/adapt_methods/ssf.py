"""SSF: Scaling and Shifting your Features (Lian et al., 2022).

After each targeted Linear / Conv2d / norm layer, a learned per-channel scale and shift:
``y = f(x) * scale + shift``. They are registered on the layer itself (``ssf_scale``,
``ssf_shift``) and applied by a forward hook, so module names and types stay as they were (an
mmdet config or a save_pretrained folder still fits). Merging folds them into that layer's
weight and bias exactly: ``W' = scale * W``, ``b' = scale * b + shift``.
"""

from __future__ import annotations

import logging
from typing import Any

from adapt import Method
from pydantic import AliasChoices, Field

from adapt_methods.common import (
    CONV_KINDS,
    LINEAR_KINDS,
    NORM_KINDS,
    QuantizationParams,
    ensure_quantized,
    freeze_all_but,
    head_of,
    kind,
    quantized_kind,
)
from adapt_methods.targets import resolve_targets, ssf_targets, without_excluded

log = logging.getLogger("adapt")
SSF_KINDS = LINEAR_KINDS + CONV_KINDS + NORM_KINDS
CHANNEL_FIRST = ("Conv2d", "BatchNorm1d", "BatchNorm2d", "SyncBatchNorm", "GroupNorm")


class SSFParams(QuantizationParams):
    target_modules: list[str] | None = Field(
        None, description="Layers followed by a scale and shift; None: every Linear, Conv2d and norm layer outside the "
                          "head (for detectors: backbone, neck and the shared layers of the heads).")
    exclude_modules: list[str] = Field(default_factory=list, description="Module names or name suffixes never "
                                                                         "followed by a scale and shift (and what is "
                                                                         "inside them).")
    init_scale_std: float = Field(0.02, ge=0, description="Scales start at N(1, std).")
    init_shift_std: float = Field(0.02, ge=0, description="Shifts start at N(0, std).")
    merge_weights: bool = Field(True, validation_alias=AliasChoices("merge_weights", "merge_ssf_weights"),
                                description="Fold scales and shifts into the preceding layers before saving.")
    head_modules: list[str] | None = Field(None, description="The head, trained in full (None: the task's, else found automatically).")


class QSSFParams(SSFParams):
    load_in_4bit: bool = Field(True, description="Load the frozen base model in 4 bit (set load_in_8bit for 8 bit).")
    merge_weights: bool = Field(False, validation_alias=AliasChoices("merge_weights", "merge_ssf_weights"),
                                description="Quantized layers cannot absorb the scales exactly: SSF is saved apart.")


def channels(module: Any) -> int:
    name = kind(module)
    if name == "Conv1D":  # transformers GPT-2: weight is (in, out)
        return module.weight.shape[1]
    for attr in ("out_features", "out_channels", "num_features", "num_channels"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    if name == "LayerNorm":
        return int(module.normalized_shape[-1])
    raise ValueError(f"SSF cannot tell the channels of {name}")


def ssf_hook(module: Any, inputs: Any, output: Any) -> Any:
    """Scale and shift the layer's output along its channel dimension."""
    dim = 1 if kind(module) in CHANNEL_FIRST and output.dim() > 2 else output.dim() - 1
    shape = [1] * output.dim()
    shape[dim] = -1
    scale = module.ssf_scale.to(output.dtype).view(shape)
    shift = module.ssf_shift.to(output.dtype).view(shape)
    return output * scale + shift


def add_ssf(module: Any, scale_std: float, shift_std: float) -> None:
    import torch

    n = channels(module)
    weight = next((p for p in module.parameters(recurse=False) if p.is_floating_point()), None)
    device = weight.device if weight is not None else "cpu"
    module.register_parameter("ssf_scale", torch.nn.Parameter(1 + scale_std * torch.randn(n, device=device)))
    module.register_parameter("ssf_shift", torch.nn.Parameter(shift_std * torch.randn(n, device=device)))
    module._ssf_handle = module.register_forward_hook(ssf_hook)


def fold_ssf(module: Any) -> None:
    """Fold the scale and shift into the layer's weight and bias (it must have both), then
    remove them."""
    import torch

    with torch.no_grad():
        scale, shift = module.ssf_scale.detach(), module.ssf_shift.detach()
        weight = module.weight
        if kind(module) == "Conv1D":
            weight.mul_(scale.view(1, -1))
        else:
            weight.mul_(scale.view(-1, *([1] * (weight.dim() - 1))))
        module.bias.mul_(scale).add_(shift)
    module._ssf_handle.remove()
    del module._ssf_handle
    del module.ssf_scale, module.ssf_shift


class SSFMethod(Method):
    """SSF's base is quantized after loading (not by the loader), so HF Trainer, which trains a
    loader-quantized model only through peft, sees a model with bitsandbytes layers it can train."""

    name = "ssf"
    description = "A learned per-channel scale and shift after each targeted layer (Lian et al. 2022), plus the head."
    Params = SSFParams
    training_defaults = {"text": {"learning_rate": 5e-3}, "cnn": {"learning_rate": 5e-3},
                         "vit": {"learning_rate": 5e-3}, "detector": {"learning_rate": 3e-3}}

    def apply(self, model: Any, params: SSFParams, run: Any) -> Any:
        head = head_of(model, run, params.head_modules)
        model = ensure_quantized(model, params, head)
        if params.target_modules:
            targets = resolve_targets(model, params.target_modules, SSF_KINDS)
        else:
            targets = ssf_targets(model, head)
        targets = without_excluded(model, targets, params.exclude_modules, SSF_KINDS)
        for name in targets:
            add_ssf(model.get_submodule(name), params.init_scale_std, params.init_shift_std)
        freeze_all_but(model, head)
        for name in targets:
            module = model.get_submodule(name)
            module.ssf_scale.requires_grad_(True)
            module.ssf_shift.requires_grad_(True)
        log.info("ssf: scale and shift after %d layers", len(targets))
        return model

    def merge(self, model: Any, params: SSFParams) -> Any:
        if not params.merge_weights:
            return None
        if quantized_kind(model):
            log.warning("merge_weights: a %s layer cannot absorb SSF's scales exactly; SSF is saved unmerged",
                        quantized_kind(model))
            return None
        targets = [(name, m) for name, m in model.named_modules() if hasattr(m, "ssf_scale")]
        no_bias = [name for name, m in targets if getattr(m, "bias", None) is None]
        if no_bias:
            # the shift would need a bias the architecture does not have: a reload from its config
            # (save_pretrained, state_dict into a fresh model) would drop it
            log.warning("merge_weights: %d SSF layer(s) have no bias to take the shift (%s); SSF is saved unmerged",
                        len(no_bias), ", ".join(no_bias[:3]))
            return None
        for _, module in targets:
            fold_ssf(module)
        return model


class QSSFMethod(SSFMethod):
    name = "qssf"
    description = "SSF on a base model quantized to 4 (or 8) bit with bitsandbytes; saved apart."
    Params = QSSFParams
