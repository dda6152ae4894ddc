"""The run configuration: one YAML shape for every task, validated by pydantic.

The core validates its own sections (``training``, ``data``, ``model``...) and the keys installed
packs add (``adapt_register_config``); ``task_params``, ``method_params`` and ``backend_params``
are validated by the chosen plugin's ``Params`` model when the run is resolved. Every error
names the field, what is wrong and what is allowed.
"""

from __future__ import annotations

import ast
import copy
import difflib
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from adapt.errors import ConfigError, PluginError
from adapt.plugins import KNOWN_PROVIDERS, Registry, get_registry

# Names users know from Azure ML / nyuntam that adapt expresses differently: key -> why / where.
FOREIGN_KEYS: dict[str, str] = {
    "apply_lora": "choose the method instead: `method: lora` (parameters under method_params)",
    "lora_r": "LoRA's rank is `method_params.r` with `method: lora`",
    "lora_alpha": "LoRA's alpha is `method_params.alpha` with `method: lora`",
    "lora_dropout": "LoRA's dropout is `method_params.dropout` with `method: lora`",
    "merge_lora_weights": "use `method_params.merge_weights` with `method: lora`",
    "apply_deepspeed": "choose the backend instead: `backend: deepspeed` (adapt-backends)",
    "deepspeed": "use `backend: deepspeed` and `backend_params.deepspeed: <config file>`",
    "deepspeed_stage": "use `backend: deepspeed` and `backend_params.deepspeed_stage`",
    "apply_ort": "ONNX Runtime training (optimum's ORTTrainer) does not work with transformers 5, "
                 "which adapt uses; there is no replacement setting",
    "number_of_gpu_to_use_finetuning": "processes per node are `backend_params.nproc_per_node` "
                                       "of a distributed backend (e.g. `backend: ddp`)",
    "num_nodes_finetune": "nodes are `backend_params.num_nodes` of a distributed backend",
    "pytorch_model_path": "the model is the top-level `model:` (a path, hub id or mapping)",
    "mlflow_model_path": "use `model: {mlflow_model_path: ...}` (needs adapt-mlflow)",
    "train_file_path": "training data is `data.train`",
    "validation_file_path": "validation data is `data.validation`",
    "test_file_path": "test data is `data.test`",
    "train_mltable_path": "an MLTable folder goes in `data.train`",
    "validation_mltable_path": "an MLTable folder goes in `data.validation`",
    "test_mltable_path": "an MLTable folder goes in `data.test`",
    "number_of_epochs": "use `training.num_train_epochs`",
    "training_batch_size": "use `training.per_device_train_batch_size`",
    "validation_batch_size": "use `training.per_device_eval_batch_size`",
    "learning_rate_scheduler": "use `training.lr_scheduler_type`",
    "optimizer": "use `training.optim`",
    "random_seed": "use `training.seed`",
    "early_stopping": "use `training.apply_early_stopping`",
    "gradient_accumulation_step": "use `training.gradient_accumulation_steps`",
    "evaluation_steps": "use `training.eval_steps`",
    "number_of_workers": "use `training.dataloader_num_workers`",
    "task_name": "use the top-level `task:`",
    "output_dir": "the run folder is the top-level `output:` (--output)",
}
for _prefix in ("compute_", "instance_type_"):
    for _stage in ("model_import", "preprocess", "finetune", "model_evaluation"):
        FOREIGN_KEYS[_prefix + _stage] = (
            "Azure ML compute settings have no meaning in adapt, which runs where it is started; "
            "choose a backend for several processes or nodes")



@dataclass(frozen=True)
class Optimizer:
    """An optimizer users can name in ``training.optim``, as each engine runs it."""

    hf: str  # the HF Trainer's optim name
    torch: str | None = None  # the torch.optim class, for engines that build optimizers themselves (None: HF only)
    state: float = 2.0  # optimizer state per trainable parameter, in fp32 copies of it (adapt plan)


OPTIMIZERS: dict[str, Optimizer] = {
    "adamw_torch": Optimizer("adamw_torch", "AdamW"), "adamw_torch_fused": Optimizer("adamw_torch_fused", "AdamW"),
    "adamw_hf": Optimizer("adamw_torch", "AdamW"), "adamw": Optimizer("adamw_torch", "AdamW"),  # gone from transformers 5
    "adafactor": Optimizer("adafactor", state=0.1), "sgd": Optimizer("sgd", "SGD", 1.0),
    "adagrad": Optimizer("adagrad", "Adagrad", 1.0), "rmsprop": Optimizer("rmsprop", "RMSprop", 1.0),
    "adamw_8bit": Optimizer("adamw_8bit", state=0.5), "paged_adamw_32bit": Optimizer("paged_adamw_32bit"),
    "paged_adamw_8bit": Optimizer("paged_adamw_8bit", state=0.5), "lion_32bit": Optimizer("lion_32bit"),
    "lion_8bit": Optimizer("lion_8bit", state=0.5),
    # gradient low-rank projection of full weight matrices (packages galore-torch / apollo-torch): full fine-tuning
    "galore_adamw": Optimizer("galore_adamw", state=0.5), "galore_adamw_8bit": Optimizer("galore_adamw_8bit", state=0.25),
    "galore_adafactor": Optimizer("galore_adafactor", state=0.1), "apollo_adamw": Optimizer("apollo_adamw", state=0.1),
}
# optim -> (the package it needs, its import name)
PROJECTED_OPTIMIZERS = {"galore": ("galore-torch", "galore_torch"), "apollo": ("apollo-torch", "apollo_torch")}
# lr_scheduler_type -> the schedule it names (HF's name); warmup_* (Azure ML image components) are
# the same schedules, warmed up over warmup_steps
SCHEDULERS: dict[str, str] = {
    **{name: name for name in ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                               "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr")},
    "warmup_linear": "linear", "warmup_cosine": "cosine", "warmup_cosine_with_restarts": "cosine_with_restarts",
    "warmup_polynomial": "polynomial", "warmup_constant": "constant_with_warmup",
}


def optim_args(text: str | None) -> dict[str, str]:
    """``extra_optim_args`` ('key=value; key=value', commas allowed too) as {key: value text}."""
    items = [item.strip() for item in (text or "").replace(",", ";").split(";") if item.strip()]
    bad = [item for item in items if "=" not in item or not item.split("=", 1)[0].strip()]
    if bad:
        raise ValueError(f"expected 'key=value; key=value', got {bad[0]!r}")
    return {key.strip(): value.strip() for key, _, value in (item.partition("=") for item in items)}


def literal_optim_args(text: str | None) -> dict[str, Any]:
    """``extra_optim_args`` with Python literal values, for engines that pass them to a torch
    optimizer themselves (the HF Trainer reads the text)."""
    out = {}
    for key, value in optim_args(text).items():
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ConfigError(f"training.extra_optim_args: {key}={value!r} is not key=value with a Python literal "
                              "value (e.g. 'momentum=0.9; nesterov=True')") from None
    return out


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainingConfig(Section):
    """The common training parameters (Azure ML / HF TrainingArguments names). The defaults here
    are HF TrainingArguments'; where the user sets nothing, the method's defaults for the kind of
    model and the task's (batch sizes, epochs) come first (resolve.training_defaults)."""

    num_train_epochs: float = Field(3, gt=0, description="Number of epochs to train for.")
    max_steps: int = Field(-1, ge=-1, description="If > 0: total optimizer steps to run; overrides num_train_epochs.")
    min_steps: int = Field(
        200, ge=0, description="Where num_train_epochs is adapt's default (not set), a small training set trains more "
                               "epochs, so that there are at least this many optimizer steps (0: never more).")
    per_device_train_batch_size: int = Field(8, ge=1, description="Training batch size per process.")
    per_device_eval_batch_size: int = Field(8, ge=1, description="Evaluation batch size per process.")
    auto_find_batch_size: bool = Field(False, description="On out-of-memory, halve the train batch size and retry until it fits.")
    optim: Literal[tuple(OPTIMIZERS)] = Field(  # type: ignore[valid-type]
        "adamw_torch_fused", description="Optimizer. adamw_hf / adamw (removed from transformers 5) run as adamw_torch.")
    optim_target_modules: list[str] | None = Field(
        None, description="galore_* / apollo_* optimizers: the Linear layers whose gradients they project, as name "
                          "fragments or regexes (HF's optim_target_modules); None: every Linear layer.")
    extra_optim_args: str | None = Field(
        None, validation_alias=AliasChoices("extra_optim_args", "optim_args"),
        description="More optimizer arguments as 'key=value; key=value' (Azure ML style; HF's optim_args 'key=value,key=value' too), e.g. 'momentum=0.9; nesterov=True' for sgd.")
    learning_rate: float = Field(5e-5, gt=0, description="Initial learning rate (peak, after warmup).")
    lr_scheduler_type: Literal[tuple(SCHEDULERS)] = Field(  # type: ignore[valid-type]
        "linear", description="Learning-rate schedule; warmup_* names (Azure ML image components) mean the same schedule with warmup_steps.")
    warmup_steps: float = Field(0, ge=0, description="Linear warmup steps from 0 to learning_rate; a value < 1 is a fraction of all steps.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay for all layers except biases and LayerNorm weights.")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="beta1 of the Adam optimizers.")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="beta2 of the Adam optimizers.")
    adam_epsilon: float = Field(1e-8, gt=0, description="epsilon of the Adam optimizers.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches whose gradients are accumulated before each optimizer step.")
    eval_accumulation_steps: int | None = Field(None, ge=1, description="Prediction steps to accumulate before moving outputs to the CPU (None: all at once).")
    precision: Literal["32", "16", "bf16"] = Field(
        "32", description="Training precision. 16 = fp16 mixed precision on GPUs, bf16 where fp16 is impossible (CPU), with a notice.")
    seed: int = Field(42, description="Random seed set at the beginning of training.")
    enable_full_determinism: bool = Field(False, description="Deterministic algorithms everywhere (slower); runs with the same seed give identical results.")
    dataloader_num_workers: int = Field(0, ge=0, description="Data loading subprocesses (0: load in the main process).")
    ignore_mismatched_sizes: bool = Field(True, description="Load a checkpoint whose head has another shape (e.g. other number of labels), re-initialising that head.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0: no clipping).")
    evaluation_strategy: Literal["epoch", "steps", "no"] = Field(
        "epoch", validation_alias=AliasChoices("evaluation_strategy", "eval_strategy"),
        description="When to evaluate on the validation split (HF's current name eval_strategy is accepted too).")
    evaluation_steps_interval: float = Field(
        0.0, ge=0, le=1, description="Evaluate every this fraction of an epoch's steps; overrides eval_steps when > 0.")
    eval_steps: int = Field(500, ge=1, description="Steps between evaluations when evaluation_strategy is steps.")
    logging_strategy: Literal["epoch", "steps", "no"] = Field("steps", description="When to log training loss and learning rate.")
    logging_steps: int = Field(10, ge=1, description="Steps between logs when logging_strategy is steps.")
    save_strategy: Literal["epoch", "steps", "no"] | None = Field(
        None, description="When to write checkpoints (None: with each evaluation, so the best model can be kept).")
    save_steps: int | None = Field(None, ge=1, description="Steps between checkpoints when save_strategy is steps (None: eval_steps).")
    save_total_limit: int = Field(-1, ge=-1, description="Most checkpoints kept (-1: all); the best checkpoint is never removed.")
    metric_for_best_model: str = Field("loss", description="Validation metric that picks the best model (loss or one of the task's metrics).")
    apply_early_stopping: bool = Field(False, description="Stop when metric_for_best_model stops improving.")
    early_stopping_patience: int = Field(1, ge=1, description="Evaluations without improvement before stopping.")
    early_stopping_threshold: float = Field(0.0, ge=0, description="Least improvement of the metric that counts as improvement.")
    resume_from_checkpoint: bool | str = Field(
        False, description="true: resume from the newest checkpoint in the output folder; a path: resume from that checkpoint.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass to save memory.")
    group_by_length: bool | None = Field(
        None, description="Batch training examples of similar length together (in mega-batches of 50 batches, "
                          "then shuffled, as HF's group_by_length), so that less padding is computed. None: on where the "
                          "training data is tokenised text of varied length (the HF engine's text tasks), off otherwise.")
    skip_memory_metrics: bool | None = Field(
        None, description="Peak tensor memory of training (weights, gradients, optimizer state, activations) in the "
                          "metrics as peak_tensor_memory_mib. None: measured on GPUs (free), skipped on the CPU; false: "
                          "on the CPU too, by tracing the first two steps (each several times slower; one process "
                          "only); true: never.")
    label_smoothing_factor: float = Field(0.0, ge=0, lt=1, description="Label smoothing for classification losses (0: none).")
    overwrite_output_dir: bool = Field(False, description="Allow training into an output folder that already holds files (they may be overwritten).")

    @model_validator(mode="before")
    @classmethod
    def _hf_names(cls, value: Any) -> Any:
        """TrainingArguments' booleans fp16 / bf16 and warmup_ratio, as HF users type them."""
        if not isinstance(value, dict) or not {"fp16", "bf16", "warmup_ratio"} & set(value):
            return value
        value = dict(value)
        for name, precision in (("fp16", "16"), ("bf16", "bf16")):
            if name in value and "precision" not in value:
                flag = value.pop(name)
                if flag is True or str(flag).lower() == "true":
                    value["precision"] = precision
        if "warmup_ratio" in value and "warmup_steps" not in value:
            ratio = value.pop("warmup_ratio")
            if isinstance(ratio, (int, float)) and not 0 <= ratio < 1:
                raise ValueError(f"warmup_ratio must be a fraction in [0, 1), got {ratio!r}")
            value["warmup_steps"] = ratio
        return value

    @field_validator("extra_optim_args")
    @classmethod
    def _optim_args(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return "; ".join(f"{key}={text}" for key, text in optim_args(value).items())

    @field_validator("evaluation_strategy", "logging_strategy", "save_strategy", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML 1.1 reads a bare `no` as false

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("resume_from_checkpoint", mode="before")
    @classmethod
    def _resume_strings(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
            return value.strip().lower() == "true"
        return value


class DataConfig(Section):
    """Where the data is, and how much of it to use."""

    train: str | None = Field(None, description="Training data: a jsonl / json / csv / tsv / parquet file or an MLTable folder.")
    validation: str | None = Field(None, description="Validation data (same formats); if absent, see validation_split.")
    test: str | None = Field(None, description="Test data, evaluated after training (same formats).")
    validation_split: float = Field(0.0, ge=0, lt=1, description="Without validation data: carve this fraction of train off as validation (0: no validation).")
    max_train_samples: int | None = Field(None, ge=1, description="Use at most this many training rows.")
    max_eval_samples: int | None = Field(None, ge=1, description="Use at most this many validation and test rows.")
    batch_size: int = Field(1000, ge=1, description="Rows per batch of preprocessing (tokenization); not the training batch size.")


class ModelConfig(Section):
    """The pretrained model to adapt."""

    path: str | None = Field(None, description="A local folder, a hub id, or a model name the task knows.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when path is a hub id.")
    trust_remote_code: bool = Field(False, description="Allow model code shipped with the checkpoint to run (off: only library code runs).")
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"] | None = Field(
        None, description="Attention kernels of a transformers model (None: transformers' choice, sdpa where the model has it; "
        "flash_attention_2 / _3 need a CUDA GPU and the flash-attn package). Refused for timm and OpenMMLab models.")

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"path": value}
        if isinstance(value, dict) and "pytorch_model_path" in value:
            value = dict(value)
            value.setdefault("path", value.pop("pytorch_model_path"))
        return value


class RunConfig(Section):
    """One run: what to learn (task), how (method), where (backend), and what to save."""

    task: str = Field(description="Task name, e.g. text_classification (`adapt plugins` lists them).")
    method: str = Field("full", description="Adaptation method, e.g. full, lora.")
    backend: str = Field("single", description="Where to run: single (one process) or a distributed backend.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The pretrained model.")
    data: DataConfig = Field(default_factory=DataConfig, description="The data splits.")
    output: str | None = Field(None, description="Run folder (None: runs/<task>-<method>-<time>).")
    savers: list[str] = Field(["safetensors"], description="Formats to save the final model in, each into <output>/saved/<saver>/.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Common training parameters.")
    task_params: dict[str, Any] = Field(default_factory=dict, description="The task's own parameters (`adapt config show --task T`).")
    method_params: dict[str, Any] = Field(default_factory=dict, description="The method's own parameters.")
    backend_params: dict[str, Any] = Field(default_factory=dict, description="The backend's own parameters.")

    @field_validator("savers", mode="before")
    @classmethod
    def _one_saver(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def output_dir(self) -> Path:
        if self.output:
            return Path(self.output)
        return Path("runs") / f"{self.task}-{self.method}-{time.strftime('%Y%m%d-%H%M%S')}"


# ------------------------------------------------------------------------------------------
# Reading, overriding and reporting errors


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys (task:, method:, ...), "
                          f"not a {type(data).__name__}")
    return data


def set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``config[a][b][c] = value`` for ``dotted`` "a.b.c", creating sections on the way (a
    ``model`` given as a string becomes ``{path: ...}`` when a key is set inside it)."""
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            if part == "model" and isinstance(child, str):
                child = node[part] = {"path": child}
            else:
                raise ConfigError(f"--set {dotted}: {part} is a value ({child!r}), not a section")
        node = child
    node[last] = value


def apply_override(config: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override; the value is read as YAML (numbers, bools, lists)."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected dotted.key=value, e.g. --set training.learning_rate=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    set_dotted(config, key, value)


@functools.lru_cache(maxsize=16)
def run_config_model(registry: Registry) -> type[RunConfig]:
    """RunConfig with the keys the registry's packs add (``adapt_register_config``), each
    described as theirs."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for added in registry.config_fields:
        core = RunConfig if added.section is None else RunConfig.model_fields[added.section].annotation
        target = top if added.section is None else sections.setdefault(added.section, {})
        for name, info in added.model.model_fields.items():
            if name in core.model_fields:
                where = f"{added.section}.{name}" if added.section else name
                raise PluginError(f"plugin {added.owner.label} ({added.owner.name}) adds the config key {where}, "
                                  f"which is adapt-core's own; uninstall it or disable it with "
                                  f"ADAPT_DISABLE_PLUGINS={added.owner.name}")
            field = copy.copy(info)
            field.description = f"{info.description or ''} ({added.owner.label})".strip()
            target[name] = (info.annotation, field)
    for section, fields in sections.items():
        base = RunConfig.model_fields[section]
        extended = create_model(base.annotation.__name__, __base__=base.annotation, __doc__=base.annotation.__doc__,
                                **fields)
        top[section] = (extended, Field(default_factory=extended, description=base.description))
    if not top:
        return RunConfig
    return create_model("RunConfig", __base__=RunConfig, __doc__=RunConfig.__doc__, **top)


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if part not in ("str",)) or "(top level)"


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Allowed keys at the place of an unknown key."""
    for part in loc[:-1]:
        info = model.model_fields.get(str(part))
        annotation = getattr(info, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return list(model.model_fields)


def format_validation_error(exc: ValidationError, model: type[BaseModel], prefix: str = "",
                            source: str | None = None) -> str:
    """One readable line per problem: which field, what is wrong, what is allowed."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = prefix + _loc(loc)
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            allowed = _field_names(model, loc)
            provider = _provider(loc)
            hint = (f"provided by the {provider} distribution, which is not installed or is disabled "
                    f"(pip install {provider})") if provider else FOREIGN_KEYS.get(key)
            close = difflib.get_close_matches(key, allowed, n=1)
            message = f"unknown key {where}"
            if hint:
                message += f": {hint}"
            elif close:
                message += f": did you mean {close[0]}?"
            if allowed and not hint:
                message += f" (allowed here: {', '.join(allowed)})"
            lines.append(message)
        elif err["type"] == "missing":
            lines.append(f"missing key {where}: it is required")
        else:
            got = err.get("input")
            got_text = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{where}: {err['msg']}{got_text}")
    head = f"invalid config{f' in {source}' if source else ''}:"
    return head + ("\n  " + "\n  ".join(lines) if len(lines) > 1 else " " + lines[0])


def _provider(loc: tuple[Any, ...]) -> str | None:
    """The distribution that adds the key at ``loc`` (or a section above it), when one of ours does."""
    parts = [str(p) for p in loc]
    return next((KNOWN_PROVIDERS["config"][key] for key in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
                 if key in KNOWN_PROVIDERS["config"]), None)


def build_config(path: str | Path | None, flags: dict[str, Any] | None = None,
                 overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A run config from a file (or none), direct flags (dotted keys; None / [] left out) and
    ``--set`` overrides, in that order of precedence: what adapt train / plan / validate read."""
    data = read_yaml(path) if path else {}
    for key, value in (flags or {}).items():
        if value is not None and value != []:
            set_dotted(data, key, value)
    for assignment in overrides or ():
        apply_override(data, assignment)
    if "task" not in data:
        raise ConfigError("no task: give --task (e.g. text_classification) or `task:` in --config; "
                          "`adapt plugins` lists the installed tasks")
    return parse_config(data, str(path) if path else None)


def parse_config(data: dict[str, Any], source: str | None = None, registry: Registry | None = None) -> RunConfig:
    """Validate the core sections and the keys the installed packs add; raises ConfigError with
    every problem found (a PluginError where a key belongs to a pack that is not installed)."""
    model = run_config_model(registry or get_registry())
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message = format_validation_error(exc, model, source=source)
        if any(err["type"] == "extra_forbidden" and _provider(tuple(err["loc"])) for err in exc.errors()):
            raise PluginError(message) from None  # a pack is missing, not a mistake in the config
        raise ConfigError(message) from None


def validate_params(params_model: type[BaseModel], values: dict[str, Any], section: str,
                    owner: str, source: str | None = None) -> BaseModel:
    """Validate a plugin's section (task_params...) with the plugin's own Params model."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{section} must be a mapping of {owner}'s parameters, got {values!r}")
    try:
        return params_model.model_validate(values)
    except ValidationError as exc:
        message = format_validation_error(exc, params_model, prefix=f"{section}.", source=source)
        names = ", ".join(params_model.model_fields) or "none"
        raise ConfigError(f"{message}\n  ({owner} takes: {names})") from None
