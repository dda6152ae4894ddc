"""LoRA and DoRA through peft, on a full-precision or bitsandbytes-quantized base, plus the head.

qlora / qdora are the same methods with ``load_in_4bit: true`` by default; ``load_in_4bit`` on
lora / dora means the same thing.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from adapt import ConfigError, Method
from pydantic import AliasChoices, Field, model_validator

from adapt_methods.common import (
    CONV_KINDS,
    LINEAR_KINDS,
    QuantizationParams,
    ensure_quantized,
    head_of,
    kind,
    matches,
    quantization_load_options,
    quantized_kind,
)
from adapt_methods.targets import lora_targets, resolve_targets, without_excluded

log = logging.getLogger("adapt")
PEFT_KINDS = LINEAR_KINDS + CONV_KINDS + ("Embedding", "Conv1d", "Conv3d", "MultiheadAttention")


class LoraParams(QuantizationParams):
    r: int = Field(8, ge=1, validation_alias=AliasChoices("r", "lora_r"),
                   description="Rank of the low-rank update (Azure ML: lora_r).")
    alpha: float = Field(16, gt=0, validation_alias=AliasChoices("alpha", "lora_alpha"),
                         description="Scaling of the update, applied as alpha / r (Azure ML: lora_alpha).")
    dropout: float = Field(0.1, ge=0, lt=1, validation_alias=AliasChoices("dropout", "lora_dropout"),
                           description="Dropout on the adapter's input (Azure ML: lora_dropout).")
    target_modules: list[str] | None = Field(
        None, description="Module names or name suffixes to adapt; None: the model family's default "
                          "(attention projections for transformers, every Linear / Conv2d layer outside the head otherwise: a "
                          "detector's backbone, neck and shared head layers).")
    exclude_modules: list[str] = Field(default_factory=list, description="Module names or name suffixes never "
                                                                         "adapted (and what is inside them), whether "
                                                                         "the targets are the defaults or your own.")
    max_conv_share: float = Field(
        0.02, ge=0, le=1, description="Convolutions: each one's rank is lowered (to at least 1) so that its adapter "
                                      "holds at most this share of the layer's weights; 0: rank r everywhere. A k x k "
                                      "convolution's adapter costs r * (k*k*in + out) parameters: at the same r, "
                                      "relative to its weights, far more than a wide Linear's (RetinaNet R18: 3.6% "
                                      "trainable at r 8 everywhere, 2.4% with this cap).")
    fan_in_fan_out: bool = Field(False, description="The targeted layers store weights as (in, out); set automatically for GPT-2's Conv1D.")
    init_lora_weights: bool | str = Field(
        True, description="true: B = 0 so training starts from the pretrained model; false: random (for tests); "
                          "or a peft scheme: gaussian, pissa (adapter from the principal singular vectors, the base "
                          "keeps the rest), olora (from a QR decomposition), loftq (an adapter that offsets the error "
                          "of quantizing the base: loftq_bits, loftq_iter).")
    use_rslora: bool = Field(False, description="rsLoRA (Kalajdzievski 2023): scale the update by alpha / sqrt(r) "
                                                "instead of alpha / r, so that higher ranks keep learning.")
    loraplus_lr_ratio: float | None = Field(
        None, gt=0, description="LoRA+ (Hayou et al. 2024): the B matrices train at this multiple of the learning rate "
                                "(the paper: 16); None: one learning rate.")
    loftq_bits: int = Field(4, ge=2, le=8, description="With init_lora_weights: loftq, the bits LoftQ quantizes the "
                                                       "base to while initialising the adapter to offset it.")
    loftq_iter: int = Field(1, ge=1, description="With init_lora_weights: loftq, LoftQ's alternating steps.")
    rank_pattern: dict[str, int] = Field(
        default_factory=dict, description="Ranks other than r by module-name pattern (peft's rule: a regex matched "
                                          "against the name's end), e.g. {'attention.self.value': 4}; wins over "
                                          "max_conv_share.")
    alpha_pattern: dict[str, float] = Field(default_factory=dict, description="Alphas other than alpha by module-name "
                                                                            "pattern, as rank_pattern.")
    merge_weights: bool = Field(True, validation_alias=AliasChoices("merge_weights", "merge_lora_weights"),
                                description="Fold the adapters into the base weights before saving (Azure ML: merge_lora_weights).")
    modules_to_save: list[str] = Field(default_factory=list, description="Further modules trained in full besides the head.")
    head_modules: list[str] | None = Field(None, description="The head, trained in full (None: the task's, else found automatically).")


class DoraParams(LoraParams):
    r: int = Field(16, ge=1, validation_alias=AliasChoices("r", "lora_r"), description="Rank of the low-rank direction update.")
    alpha: float = Field(8, gt=0, validation_alias=AliasChoices("alpha", "lora_alpha"), description="Scaling of the update (alpha / r).")

    @model_validator(mode="after")
    def _not_8bit(self) -> DoraParams:
        if self.load_in_8bit:
            raise ValueError("DoRA on an 8-bit base does not work (bitsandbytes' int8 layers give peft no weight to "
                             "normalise); use load_in_4bit (qdora), or lora on 8 bit")
        return self


class QLoraParams(LoraParams):
    load_in_4bit: bool = Field(True, description="Load the frozen base model in 4 bit (set load_in_8bit for 8 bit).")
    merge_weights: bool = Field(False, validation_alias=AliasChoices("merge_weights", "merge_lora_weights"),
                                description="Quantized bases cannot be merged exactly: the adapter is saved apart.")


class QDoraParams(DoraParams):
    load_in_4bit: bool = Field(True, description="Load the frozen base model in 4 bit (DoRA does not work on 8 bit).")
    merge_weights: bool = Field(False, validation_alias=AliasChoices("merge_weights", "merge_lora_weights"),
                                description="Quantized bases cannot be merged exactly: the adapter is saved apart.")


def conv_ranks(model: Any, targets: list[str], r: int, share: float) -> dict[str, int]:
    """Lowered ranks of the targeted convolutions whose adapter at rank ``r`` would hold more
    than ``share`` of their weights (alpha follows, so alpha / r, the update's scale, is kept)."""
    if share <= 0:
        return {}
    ranks = {}
    for name, module in model.named_modules():
        if kind(module) in ("Conv1d", "Conv2d", "Conv3d") and matches(name, targets):
            weight = module.weight
            per_rank = weight.numel() // weight.shape[0] + weight.shape[0]  # A: in*k*k per rank, B: out per rank
            fits = max(1, min(r, math.floor(share * weight.numel() / per_rank)))
            groups = getattr(module, "groups", 1)
            if groups > 1:  # peft needs a rank divisible by the groups
                fits = max(groups, fits // groups * groups)
            if fits < r:
                ranks[name] = fits
    if ranks:
        log.info("lora: %d of the targeted convolutions at a lower rank (max_conv_share %.3g): %s", len(ranks),
                 share, ", ".join(f"{n} {k}" for n, k in list(ranks.items())[:3]) + (" ..." if len(ranks) > 3 else ""))
    return ranks


class LoraMethod(Method):
    name = "lora"
    description = "Low-rank adapters (peft) on the targeted layers, plus the task's head; merged back by default."
    Params = LoraParams
    use_dora = False
    training_defaults = {"text": {"learning_rate": 3e-3}, "cnn": {"learning_rate": 3e-3},
                         "vit": {"learning_rate": 1e-3}, "detector": {"learning_rate": 3e-3}}

    def load_options(self, params: LoraParams) -> dict[str, Any]:
        return quantization_load_options(params)

    def apply(self, model: Any, params: LoraParams, run: Any) -> Any:
        from peft import LoraConfig, get_peft_model

        head = head_of(model, run, params.head_modules)
        model = ensure_quantized(model, params, head)
        if self.use_dora and quantized_kind(model) == "8bit":
            raise ConfigError(f"method {self.name}: DoRA on an 8-bit base does not work (bitsandbytes' int8 layers "
                              "give peft no weight to normalise); use load_in_4bit (qdora), or lora on 8 bit")
        if params.target_modules:
            resolve_targets(model, params.target_modules, PEFT_KINDS)
            targets = params.target_modules
        else:
            targets = lora_targets(model, head)
        if params.exclude_modules:  # as full names: peft then adapts exactly these
            targets = without_excluded(model, resolve_targets(model, targets, PEFT_KINDS), params.exclude_modules,
                                       PEFT_KINDS)
            if not targets:
                raise ConfigError("method_params.exclude_modules: every target is excluded")
        conv1d = any(kind(m) == "Conv1D" and matches(n, targets) for n, m in model.named_modules())
        ranks = conv_ranks(model, targets, params.r, params.max_conv_share)
        loftq = {}
        if params.init_lora_weights == "loftq":
            import torch
            from peft import LoftQConfig

            if not torch.cuda.is_available():
                raise ConfigError("method_params.init_lora_weights: loftq needs a CUDA GPU (peft's LoftQ quantizes on "
                                  "it); on the CPU use pissa or olora, or qlora for a quantized base")

            loftq = {"loftq_config": LoftQConfig(loftq_bits=params.loftq_bits, loftq_iter=params.loftq_iter)}
        config = LoraConfig(r=params.r, lora_alpha=params.alpha, lora_dropout=params.dropout, target_modules=targets,
                            rank_pattern={**{re.escape(n): r for n, r in ranks.items()}, **params.rank_pattern},
                            alpha_pattern={**{re.escape(n): params.alpha * r / params.r for n, r in ranks.items()},
                                           **params.alpha_pattern},
                            use_rslora=params.use_rslora, **loftq,
                            fan_in_fan_out=params.fan_in_fan_out or conv1d, init_lora_weights=params.init_lora_weights,
                            use_dora=self.use_dora, modules_to_save=[*head, *params.modules_to_save] or None,
                            bias="none")
        try:
            adapted = get_peft_model(model, config)
        except ValueError as exc:  # peft's checks of a target it cannot adapt (rank vs groups...)
            raise ConfigError(f"method {self.name}: peft cannot adapt these targets: {exc}") from None
        _dilate_like_base(adapted)
        return adapted

    def learning_rate_multipliers(self, params: LoraParams) -> dict[str, float]:
        return {"lora_B": params.loraplus_lr_ratio} if params.loraplus_lr_ratio else {}

    def merge(self, model: Any, params: LoraParams) -> Any:
        if not params.merge_weights:
            return None
        if quantized_kind(model):
            log.warning("merge_weights: merging into a %s base would re-quantize the weights and change the "
                        "outputs; the adapter is saved unmerged", quantized_kind(model))
            return None
        grouped = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and getattr(m.get_base_layer(), "groups", 1) > 1]
        if grouped:
            log.warning("merge_weights: peft cannot merge LoRA into grouped convolutions (%s); the adapter is saved "
                        "unmerged", ", ".join(grouped[:3]))
            return None
        return model.merge_and_unload()


def _dilate_like_base(model: Any) -> None:
    """peft (0.21) builds a dilated convolution's lora_A without the dilation, so its output has
    another size than the layer's (segmentation backbones dilate their last stages): lora_A gets
    the layer's dilation, which is also what peft's merged weights compute."""
    import torch

    for module in model.modules():
        if isinstance(getattr(module, "lora_A", None), torch.nn.ModuleDict) and hasattr(module, "get_base_layer"):
            dilation = getattr(module.get_base_layer(), "dilation", None)
            if dilation and any(d != 1 for d in dilation):
                for conv in module.lora_A.values():
                    conv.dilation = dilation


class DoraMethod(LoraMethod):
    name = "dora"
    description = "Weight-decomposed LoRA (peft use_dora): magnitude and low-rank direction updates, plus the head."
    Params = DoraParams
    use_dora = True
    training_defaults = {**LoraMethod.training_defaults, "detector": {"learning_rate": 1e-2}}


class QLoraMethod(LoraMethod):
    name = "qlora"
    description = "LoRA on a base model quantized to 4 (or 8) bit with bitsandbytes; the adapter is saved apart."
    Params = QLoraParams


class QDoraMethod(DoraMethod):
    name = "qdora"
    description = "DoRA on a base model quantized to 4 bit with bitsandbytes; the adapter is saved apart."
    Params = QDoraParams
