"""Default target modules per model family, when the user names none.

Users' ``target_modules`` are always used as given. Without them: transformers families use
peft's own defaults when they match the model (BERT, RoBERTa, DeBERTa, GPT-2, Llama, T5, BART...),
else the attention projections found by name (ViT in transformers 5: q_proj / v_proj); any other
model (timm CNNs, mmdet detectors, mmpose models, your own) in every layer of the kind outside its
head. A detector's head is its predictors (the layers whose shape depends on the classes, and
their box siblings): the shared layers of its heads (RetinaNet's stacked convs, an RoI head's FCs,
an RPN) are adapted like the backbone and neck.
"""

from __future__ import annotations

import logging
from typing import Any

from adapt import ConfigError

from adapt_methods.common import CONV_KINDS, LINEAR_KINDS, NORM_KINDS, candidate_names, in_any, kind, matches, tied

log = logging.getLogger("adapt")
ATTENTION_PROJECTIONS = ("q_proj", "v_proj", "query", "value", "q", "v", "c_attn", "qkv", "query_proj",
                         "value_proj", "in_proj")


def _grouped(module: Any) -> bool:
    return getattr(module, "groups", 1) > 1


def peft_defaults(model: Any, peft_type: str = "LORA") -> list[str]:
    """peft's default target names of this peft type for the model's transformers family ([] if none);
    peft's families without a table of their own use LoRA's, as peft does."""
    from peft.utils import constants

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    table = getattr(constants, f"TRANSFORMERS_MODELS_TO_{peft_type}_TARGET_MODULES_MAPPING",
                    constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)
    return list(table.get(model_type) or [])


def lora_targets(model: Any, head: list[str], kinds: tuple[str, ...] = LINEAR_KINDS + CONV_KINDS,
                 peft_type: str = "LORA", method: str = "lora") -> list[str]:
    """Full names of the modules LoRA / DoRA (or another peft adapter on layers of ``kinds``) adapt
    by default; layers of the usual kinds that this method cannot adapt are skipped and said."""
    shared = tied(model)  # adapting a tied head would change the embeddings too
    modules = [(n, m) for n, m in model.named_modules() if n and not in_any(n, head) and n not in shared]
    linear = [(n, m) for n, m in modules if kind(m) in LINEAR_KINDS]
    known = peft_defaults(model, peft_type)
    chosen = [n for n, _ in linear if matches(n, known)]
    if not chosen and getattr(getattr(model, "config", None), "model_type", None):
        chosen = [n for n, _ in linear if n.rsplit(".", 1)[-1] in ATTENTION_PROJECTIONS]
    if not chosen:
        chosen = [n for n, m in modules if kind(m) in LINEAR_KINDS or (kind(m) in CONV_KINDS and not _grouped(m))]
    skipped = [n for n in chosen if kind(model.get_submodule(n)) not in kinds]
    chosen = [n for n in chosen if n not in skipped]
    if skipped:
        log.info("%s: skipped %d layer(s) of a kind it cannot adapt (%s; it adapts %s): %s", method, len(skipped),
                 ", ".join(sorted({kind(model.get_submodule(n)) for n in skipped})), ", ".join(kinds),
                 ", ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else ""))
    if not chosen:
        raise ConfigError(f"method_params.target_modules: found no layer of {type(model).__name__} that {method} can "
                          f"adapt ({', '.join(kinds)}) outside its head; name targets among: "
                          f"{', '.join(candidate_names(model, kinds)) or 'none'}, or choose another method")
    return chosen


def ssf_targets(model: Any, head: list[str]) -> list[str]:
    """Full names of the modules SSF follows by default: every Linear, Conv2d and norm layer."""
    shared = tied(model)
    chosen = [n for n, m in model.named_modules() if n and not in_any(n, head) and n not in shared and kind(m) in LINEAR_KINDS + CONV_KINDS + NORM_KINDS]
    if not chosen:
        raise ConfigError(f"method_params.target_modules: found no Linear, Conv2d or norm layer of "
                          f"{type(model).__name__} outside its head")
    return chosen


def resolve_targets(model: Any, targets: list[str], kinds: tuple[str, ...]) -> list[str]:
    """Full names matching the user's targets (peft's suffix rule); a target that matches
    nothing is an error listing the candidates."""
    names = [n for n, m in model.named_modules() if n and kind(m) in kinds]
    unmatched = [t for t in targets if not any(matches(n, [t]) for n in names)]
    if unmatched:
        raise ConfigError(f"method_params.target_modules: {', '.join(unmatched)} match no module of "
                          f"{type(model).__name__}; candidates: {', '.join(candidate_names(model, kinds))}")
    return [n for n in names if matches(n, targets)]


def without_excluded(model: Any, targets: list[str], exclude: list[str], kinds: tuple[str, ...]) -> list[str]:
    """``targets`` less the modules ``exclude`` names (peft's rule: a name or a name suffix, and what is
    inside it); an exclude that matches no module is an error listing the candidates."""
    if not exclude:
        return targets
    names = [n for n, m in model.named_modules() if n]
    unmatched = [e for e in exclude if not any(matches(n, [e]) for n in names)]
    if unmatched:
        raise ConfigError(f"method_params.exclude_modules: {', '.join(unmatched)} match no module of "
                          f"{type(model).__name__}; candidates: {', '.join(candidate_names(model, kinds))}")
    excluded = [n for n in names if matches(n, exclude)]
    return [t for t in targets if not in_any(t, excluded) and not matches(t, exclude)]
