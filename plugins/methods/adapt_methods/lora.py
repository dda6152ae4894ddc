"""LoRA through peft: low-rank adapters on the targeted layers, plus the task's head."""

from __future__ import annotations

from typing import Any

from adapt import ConfigError, Method, Params
from pydantic import AliasChoices, Field

ADAPTABLE = ("Linear", "Conv1d", "Conv2d", "Conv1D", "Embedding")


class LoraParams(Params):
    r: int = Field(8, ge=1, validation_alias=AliasChoices("r", "lora_r"),
                   description="Rank of the low-rank update (Azure ML: lora_r).")
    alpha: float = Field(16, gt=0, validation_alias=AliasChoices("alpha", "lora_alpha"),
                         description="Scaling of the update, applied as alpha / r (Azure ML: lora_alpha).")
    dropout: float = Field(0.1, ge=0, lt=1, validation_alias=AliasChoices("dropout", "lora_dropout"),
                           description="Dropout on the adapter's input (Azure ML: lora_dropout).")
    target_modules: list[str] | None = Field(
        None, description="Module names (or name suffixes) to adapt; None: peft's default for the model family, "
                          "else every Linear layer outside the head.")
    fan_in_fan_out: bool = Field(False, description="The targeted layers store weights as (in, out), as GPT-2's Conv1D does.")
    init_lora_weights: bool | str = Field(
        True, description="true: B = 0 so training starts from the pretrained model; false: random (testing); "
                          "or a peft scheme name (gaussian, pissa, olora...).")
    merge_weights: bool = Field(True, validation_alias=AliasChoices("merge_weights", "merge_lora_weights"),
                                description="Fold the adapters into the base weights before saving (Azure ML: merge_lora_weights).")
    modules_to_save: list[str] = Field(
        default_factory=list, description="Further modules trained in full besides the task's head.")


def candidate_modules(model: Any) -> list[str]:
    """Names (last components) of the modules LoRA could target, for error messages and defaults."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if type(module).__name__ in ADAPTABLE and name}
    return sorted(names)


def default_targets(model: Any, head: list[str]) -> list[str] | None:
    """None lets peft choose for the transformers families it knows; otherwise every Linear."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in known:
        return None
    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
              if type(module).__name__ == "Linear" and not any(name == h or name.startswith(h + ".") for h in head)}
    if not linear:
        raise ConfigError(f"method_params.target_modules: the model ({type(model).__name__}) has no Linear "
                          f"layer outside its head to adapt; name targets among: {', '.join(candidate_modules(model))}")
    return sorted(linear)


class LoraMethod(Method):
    name = "lora"
    description = "Low-rank adapters (peft) on the targeted layers, plus the task's head; merges back by default."
    Params = LoraParams

    def apply(self, model: Any, params: LoraParams, run: Any) -> Any:
        from peft import LoraConfig, get_peft_model
        from peft.utils.error import NoMatchingPeftModuleError

        head = list(dict.fromkeys([*run.head_modules, *params.modules_to_save]))
        targets = params.target_modules or default_targets(model, head)
        config = LoraConfig(r=params.r, lora_alpha=params.alpha, lora_dropout=params.dropout,
                            target_modules=targets, fan_in_fan_out=params.fan_in_fan_out,
                            init_lora_weights=params.init_lora_weights, modules_to_save=head or None,
                            bias="none")
        try:
            return get_peft_model(model, config)
        except NoMatchingPeftModuleError:
            raise ConfigError(f"method_params.target_modules {targets} match no module of "
                              f"{type(model).__name__}; candidates: {', '.join(candidate_modules(model))}") from None

    def merge(self, model: Any, params: LoraParams) -> Any:
        if not params.merge_weights:
            return None
        return model.merge_and_unload()
