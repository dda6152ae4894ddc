"""What the methods share: module matching, the task head, and bitsandbytes quantization."""

from __future__ import annotations

import functools
import logging
from typing import Any, Literal

from adapt import ConfigError, Params
from pydantic import Field, model_validator

log = logging.getLogger("adapt")

# Module kinds the adapters can attach to, by class name (transformers' GPT-2 Conv1D included).
LINEAR_KINDS = ("Linear", "Conv1D", "Linear4bit", "Linear8bitLt")
CONV_KINDS = ("Conv2d",)
NORM_KINDS = ("LayerNorm", "BatchNorm1d", "BatchNorm2d", "SyncBatchNorm", "GroupNorm")


# Heads of transformers task models, kept in full precision when a loader quantizes the model.
HEAD_NAMES = ("classifier", "pre_classifier", "score", "qa_outputs", "lm_head")


def kind(module: Any) -> str:
    return type(module).__name__


def in_any(name: str, prefixes: list[str]) -> bool:
    """``name`` is one of ``prefixes`` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def matches(name: str, targets: list[str]) -> bool:
    """peft's rule: a target matches a module whose full name equals it or ends with '.target'."""
    return any(name == t or name.endswith("." + t) for t in targets)


def candidate_names(model: Any, kinds: tuple[str, ...]) -> list[str]:
    """The last name components of modules of these kinds: what an error message offers."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if name and kind(m) in kinds})


def find_head(model: Any) -> list[str]:
    """The head when the task does not name it: the last module (in registration order) that
    holds parameters and is a Linear or Conv layer: a classifier, a detection head's last conv."""
    last = None
    for name, module in model.named_modules():
        if name and kind(module) in LINEAR_KINDS + CONV_KINDS:
            last = name
    return [last] if last else []


def head_of(model: Any, run: Any, override: list[str] | None = None) -> list[str]:
    """Head modules: the user's override, else the task's, else found automatically."""
    if override:
        names = dict(model.named_modules())
        missing = [h for h in override if h not in names]
        if missing:
            top = ", ".join(n for n in names if n and "." not in n)
            raise ConfigError(f"method_params.head_modules: {', '.join(missing)} is not a module of "
                              f"{type(model).__name__} (top-level modules: {top})")
        return list(override)
    task_head = getattr(run, "head_modules", None)
    return list(task_head) if task_head is not None else find_head(model)


def freeze_all_but(model: Any, trainable: list[str]) -> None:
    """Freeze every parameter except those of the named modules (tied weights included)."""
    for param in model.parameters():
        param.requires_grad_(False)
    for name in trainable:
        for param in model.get_submodule(name).parameters():
            param.requires_grad_(True)


def tied(model: Any) -> set[str]:
    """Modules whose weight another module shares (a causal LM's head tied to its embeddings)."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if name and weight is not None and hasattr(weight, "data"):
            owners.setdefault(id(weight), []).append(name)
    return {name for names in owners.values() if len(names) > 1 for name in names}


class QuantizationParams(Params):
    """bitsandbytes loading options (nyuntam adapt's names and defaults)."""

    load_in_4bit: bool = Field(False, description="Load the frozen base model in 4 bit (QLoRA / QDoRA / Q-SSF).")
    bnb_4bit_compute_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float16", description="Compute dtype of the 4-bit layers.")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    bnb_4bit_use_double_quant: bool = Field(False, description="Quantize the quantization constants too (saves ~0.4 bit per weight).")
    load_in_8bit: bool = Field(False, description="Load the frozen base model in 8 bit (LLM.int8).")
    llm_int8_threshold: float = Field(6.0, ge=0, description="Outlier threshold of LLM.int8 (larger: fewer fp16 outlier columns).")
    llm_int8_skip_modules: list[str] | None = Field(
        None, description="Modules kept in full precision (None: the usual task heads: " + ", ".join(HEAD_NAMES) + ").")
    llm_int8_enable_fp32_cpu_offload: bool = Field(False, description="Allow modules offloaded to the CPU to stay in fp32.")
    llm_int8_has_fp16_weight: bool = Field(False, description="Keep fp16 master weights next to the int8 ones (for training them).")
    quantize_embeddings: bool = Field(
        False, description="With load_in_4bit, store the frozen embedding tables in 4 bit too (bitsandbytes "
                           "Embedding4bit). QLoRA quantizes Linear layers only; in a small model the word embeddings "
                           "are most of what stays in full precision (MiniLM: 45 of 52 MiB).")

    @model_validator(mode="after")
    def _one_precision(self) -> QuantizationParams:
        if self.load_in_4bit and self.load_in_8bit:
            if "load_in_4bit" not in self.model_fields_set:  # a q-form's default gives way
                object.__setattr__(self, "load_in_4bit", False)
            else:
                raise ValueError("load_in_4bit and load_in_8bit exclude each other; choose one")
        if self.quantize_embeddings and not self.load_in_4bit:
            raise ValueError("quantize_embeddings needs load_in_4bit (bitsandbytes has no trainable-model 8-bit "
                             "embedding path here)")
        return self

    @property
    def quantized(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit


def bnb_config(params: QuantizationParams) -> Any:
    """The transformers BitsAndBytesConfig for these parameters."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=params.load_in_4bit, load_in_8bit=params.load_in_8bit,
        bnb_4bit_compute_dtype=getattr(torch, params.bnb_4bit_compute_dtype),
        bnb_4bit_quant_type=params.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=params.bnb_4bit_use_double_quant,
        llm_int8_threshold=params.llm_int8_threshold,
        llm_int8_skip_modules=list(HEAD_NAMES) if params.llm_int8_skip_modules is None else params.llm_int8_skip_modules,
        llm_int8_enable_fp32_cpu_offload=params.llm_int8_enable_fp32_cpu_offload,
        llm_int8_has_fp16_weight=params.llm_int8_has_fp16_weight)


def quantized_kind(model: Any) -> str | None:
    """"4bit", "8bit" or None: what the model's Linear layers are."""
    kinds = {kind(m) for m in model.modules()}
    return "4bit" if "Linear4bit" in kinds else "8bit" if "Linear8bitLt" in kinds else None


def quantize_linears(model: Any, params: QuantizationParams, skip: list[str]) -> int:
    """Replace the nn.Linear layers of any module (outside ``skip``) by bitsandbytes layers
    holding the same weights, for models no quantizing loader built (timm, mmdet, your own)."""
    import bitsandbytes as bnb
    import torch

    skip = list(skip) + list(params.llm_int8_skip_modules or [])
    replaced, narrow = 0, []
    for name, module in list(model.named_modules()):
        if type(module) is not torch.nn.Linear or in_any(name, skip) or not name:
            continue
        if params.load_in_4bit and (module.in_features % 64 or module.out_features % 32):
            narrow.append(name)  # bitsandbytes' CPU kernels: blocks of 64 inputs and 32 outputs
            continue
        weight = module.weight.data
        bias = module.bias is not None
        if params.load_in_4bit:
            new = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=bias,
                                    compute_dtype=getattr(torch, params.bnb_4bit_compute_dtype),
                                    quant_type=params.bnb_4bit_quant_type,
                                    compress_statistics=params.bnb_4bit_use_double_quant)
            new.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type=params.bnb_4bit_quant_type,
                                           compress_statistics=params.bnb_4bit_use_double_quant)
        else:
            new = bnb.nn.Linear8bitLt(module.in_features, module.out_features, bias=bias,
                                      has_fp16_weights=params.llm_int8_has_fp16_weight,
                                      threshold=params.llm_int8_threshold)
            new.weight = bnb.nn.Int8Params(weight.clone(), requires_grad=False,
                                           has_fp16_weights=params.llm_int8_has_fp16_weight)
        if bias:
            new.bias = torch.nn.Parameter(module.bias.data.clone(), requires_grad=False)
        new = new.to(weight.device)  # bitsandbytes quantizes on the move to a device
        model.set_submodule(name, new)
        replaced += 1
    if narrow:
        log.info("kept %d Linear layer(s) in full precision: 4 bit needs in_features divisible by 64 and "
                 "out_features by 32 (%s)",
                 len(narrow), ", ".join(narrow[:3]))
    return replaced


@functools.cache
def _frozen_embedding4bit() -> type:
    """bitsandbytes' Embedding4bit refuses ``state_dict()`` (which every save calls); frozen base weights
    are rebuilt from the base model on reload, so this one writes nothing instead."""
    import bitsandbytes as bnb

    class FrozenEmbedding4bit(bnb.nn.Embedding4bit):
        def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
            pass

    return FrozenEmbedding4bit


def quantize_embeddings(model: Any, params: QuantizationParams, keep: list[str]) -> int:
    """Replace the frozen nn.Embedding tables (outside ``keep``, not tied to another module) by 4-bit ones
    holding the same weights."""
    import bitsandbytes as bnb
    import torch

    cls, shared, replaced = _frozen_embedding4bit(), tied(model), 0
    for name, module in list(model.named_modules()):
        if (type(module) is not torch.nn.Embedding or not name or name in shared or matches(name, keep)
                or in_any(name, keep) or module.embedding_dim % 64):
            continue
        weight = module.weight.data
        new = cls(module.num_embeddings, module.embedding_dim, dtype=weight.dtype, quant_type=params.bnb_4bit_quant_type)
        # no copy: the full-precision table is dropped with the module it replaces
        new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type=params.bnb_4bit_quant_type, module=new)
        new.padding_idx = module.padding_idx
        new = new.to(weight.device)  # quantized on the move, as the Linear layers
        model.set_submodule(name, new)
        replaced += 1
    return replaced


def ensure_quantized(model: Any, params: QuantizationParams, head: list[str]) -> Any:
    """Make the base model quantized as asked: transformers models arrive quantized through
    ``load_options``; any other module is quantized here. Returns the model ready for k-bit
    training (frozen base, fp32 norms, input gradients enabled)."""
    if not params.quantized:
        return model
    if quantized_kind(model) is None:
        if not quantize_linears(model, params, head):
            raise ConfigError(f"load_in_{'4' if params.load_in_4bit else '8'}bit: {type(model).__name__} has no "
                              "nn.Linear layer outside its head to quantize (bitsandbytes quantizes Linear layers "
                              "only; convolutional models: use lora, dora or ssf)")
        log.info("quantized the Linear layers of %s to %s", type(model).__name__,
                 "4 bit" if params.load_in_4bit else "8 bit")
    if params.quantize_embeddings:
        keep = [*head, *(getattr(params, "target_modules", None) or []), *getattr(params, "modules_to_save", [])]
        log.info("quantized %d embedding table(s) to 4 bit", quantize_embeddings(model, params, keep))
    exact_cpu_path(model)
    if hasattr(model, "config"):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def exact_cpu_path(model: Any) -> None:
    """Keep 4-bit layers on bitsandbytes' exact path. On CPUs with AVX512-bf16 its fast path
    repacks the weights at the first evaluation (scales cast to bf16: lossy) and a checkpoint save
    unpacks them again, so results would depend on when evaluations and saves happened, a reloaded
    model would disagree with the trained one, and training after an evaluation without a save
    fails ("a view of a leaf Variable ... in-place")."""
    for module in model.modules():
        if kind(module) == "Linear4bit" and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def quantization_load_options(params: QuantizationParams) -> dict[str, Any]:
    return {"quantization_config": bnb_config(params)} if params.quantized else {}
