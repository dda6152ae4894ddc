"""``adapt config import``: turn an Azure ML fine-tune component's parameters (or the finetune
pipeline's) or a nyuntam adapt YAML into an adapt run config that means the same thing, with a
note for every key it does not carry over and why.

Keys are matched case-insensitively after flattening nested sections (nyuntam's DATASET_ARGS,
TRAINING_ARGS, LoRA_CONFIG... groups, Azure ML's flat names), but the section a key sits in keeps
its meaning: nyuntam's training BATCH_SIZE is not Azure ML's preprocessing batch_size. Values
nyuntam leaves empty (``T_MAX:``) are its defaults. Switches decide, not the presence of their
parameters: ``apply_lora: false`` with ``lora_r`` set is a full fine-tune, ``apply_deepspeed:
false`` with ``deepspeed_stage`` is no DeepSpeed, and the parameters they switch off are noted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from adapt.config import TrainingConfig, set_dotted

TASK_NAMES = {"text-classification": "text_classification", "token-classification": "token_classification",
              "question-answering": "question_answering", "text-generation": "text_generation",
              "summarization": "summarization", "translation": "translation",
              "image-classification": "image_classification",
              "image-classification-multilabel": "image_classification_multilabel",
              "object-detection": "object_detection", "instance-segmentation": "instance_segmentation",
              "semantic-segmentation": "semantic_segmentation", "segmentation": "semantic_segmentation",
              "pose-detection": "pose_detection", "pose_estimation": "pose_detection"}
MMENGINE_TASKS = ("object_detection", "instance_segmentation", "pose_detection", "semantic_segmentation")
PEFT_METHODS = {"lora": "lora", "dora": "dora", "ssf": "ssf", "qlora": "qlora", "qdora": "qdora", "qssf": "qssf",
                "full": "full", "last_layer": "last_layer"}
SAVERS = ("state_dict", "safetensors", "full_torch_model", "save_pretrained")
# What the replaced systems train with where a file sets nothing (their documents' defaults). adapt's own
# defaults depend on the method and the model, so an import writes these out: the file keeps its meaning.
# Azure ML's image components choose theirs by task and model, as adapt does: nothing is written for them.
AZURE_DEFAULTS = {"num_train_epochs": 1, "per_device_train_batch_size": 1, "per_device_eval_batch_size": 1,
                  "learning_rate": 2e-5, "lr_scheduler_type": "linear", "warmup_steps": 0, "weight_decay": 0.0,
                  "optim": "adamw_hf"}
AZURE_CHOOSES = ("image_classification", "image_classification_multilabel", *MMENGINE_TASKS)
NYUNTAM_DEFAULTS = {"num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 1e-4,
                    "lr_scheduler_type": "linear", "weight_decay": 0.0, "optim": "adamw_torch"}
# mmdet / MMEngine scheduler names (nyuntam's SCHEDULER_TYPE for detectors) -> lr_scheduler_type
MMENGINE_SCHEDULERS = {"linearlr": "linear", "cosineannealinglr": "cosine", "polylr": "polynomial",
                       "constantlr": "constant", "multisteplr": "constant", "steplr": "constant"}

# source key (lower case) -> dotted adapt key, carried over as it is
AZURE = {
    "pytorch_model_path": "model.path", "model_path": "model.path", "model_selector_output": "model.path",
    "mlflow_model_path": "model.mlflow_model_path",
    "train_file_path": "data.train", "validation_file_path": "data.validation", "test_file_path": "data.test",
    "train_mltable_path": "data.train", "validation_mltable_path": "data.validation", "test_mltable_path": "data.test",
    "training_data": "data.train", "validation_data": "data.validation", "batch_size": "data.batch_size",
    "number_of_epochs": "training.num_train_epochs", "training_batch_size": "training.per_device_train_batch_size",
    "validation_batch_size": "training.per_device_eval_batch_size", "learning_rate_scheduler": "training.lr_scheduler_type",
    "optimizer": "training.optim", "random_seed": "training.seed", "early_stopping": "training.apply_early_stopping",
    "gradient_accumulation_step": "training.gradient_accumulation_steps", "evaluation_steps": "training.eval_steps",
    "number_of_workers": "training.dataloader_num_workers", "image_height": "task_params.image_height",
    "image_width": "task_params.image_width", "apply_augmentations": "task_params.apply_augmentations",
    "save_as_mlflow_model": "save_as_mlflow_model", "pytorch_model_folder": "output", "output_dir_pytorch": "output",
    "output_dir": "output",
}
NYUNTAM = {
    "epochs": "training.num_train_epochs", "lr": "training.learning_rate", "batch_size": "training.per_device_train_batch_size",
    "batch_size_train": "training.per_device_train_batch_size", "num_workers": "training.dataloader_num_workers",
    "weight_decay": "training.weight_decay", "beta1": "training.adam_beta1", "beta2": "training.adam_beta2",
    "adam_eps": "training.adam_epsilon", "no_of_checkpoints": "training.save_total_limit", "seed": "training.seed",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "gradient_checkpointing": "training.gradient_checkpointing", "resume_from_checkpoint": "training.resume_from_checkpoint",
    "max_train_samples": "data.max_train_samples", "max_eval_samples": "data.max_eval_samples",
    "data_split": "data.validation_split", "output_dir": "output", "overwrite_output_dir": "training.overwrite_output_dir",
}
TASK_KEYS = {  # the task's own parameters, under their adapt names where those differ
    "packing": "packing", "dataset_text_field": "text_column", "flash_attention2": "flash_attention2",
    "max_input_length": "max_input_length", "max_target_length": "max_target_length",
    "generation_max_length": "generation_max_length", "source_lang": "source_lang", "target_lang": "target_lang",
    "prefix": "prefix", "max_answer_length": "max_answer_length", "max_length": "max_length", "doc_stride": "doc_stride",
    "class_list": "class_list", "palette": "palette", "subtask": "subtask",
}
MMENGINE_KEYS = ("begin", "end", "t_max", "warmup", "warmup_ratio", "warmup_iters", "milestones", "gamma", "amp",
                 "auto_scale_lr", "cfg_options", "checkpoint_interval")
METHOD_KEYS = {  # LoRA / DoRA / quantization parameters (Azure ML and nyuntam names)
    "lora_r": "r", "r": "r", "lora_alpha": "alpha", "alpha": "alpha", "lora_dropout": "dropout", "dropout": "dropout",
    "target_modules": "target_modules", "fan_in_fan_out": "fan_in_fan_out", "init_lora_weights": "init_lora_weights",
    "merge_lora_weights": "merge_weights", "merge_adapter": "merge_weights", "merge_adapters": "merge_weights",
    **{name: name for name in ("load_in_4bit", "bnb_4bit_compute_dtype", "bnb_4bit_quant_type",
                               "bnb_4bit_use_double_quant", "load_in_8bit", "llm_int8_threshold",
                               "llm_int8_skip_modules", "llm_int8_enable_fp32_cpu_offload", "llm_int8_has_fp16_weight")},
}
QUANTIZATION = ("load_in_4bit", "load_in_8bit")
FSDP_KEYS = {"fsdp_auto_wrap_policy": "auto_wrap_policy", "fsdp_backward_prefetch": "backward_prefetch",
             "fsdp_backward_prefetch_policy": "backward_prefetch", "fsdp_forward_prefetch": "forward_prefetch",
             "fsdp_cpu_ram_efficient_loading": "cpu_ram_efficient_loading", "fsdp_offload_params": "offload_params",
             "fsdp_sharding_strategy": "sharding_strategy", "fsdp_state_dict_type": "state_dict_type",
             "fsdp_sync_module_states": "sync_module_states", "fsdp_use_orig_params": "use_orig_params",
             "fsdp_transformer_layer_cls_to_wrap": "transformer_layer_cls_to_wrap"}
LAUNCH_KEYS = {"num_processes": "nproc_per_node", "num_machines": "num_nodes", "machine_rank": "node_rank",
               "rdzv_backend": "rdzv_backend"}
IGNORED = {  # key (or prefix) -> why it has no adapt setting
    "compute_environment": "an accelerate launcher setting: not needed", "debug": "an accelerate launcher setting",
    "distributed_type": "given by the backend", "downcast_bf16": "an accelerate TPU setting",
    "main_training_function": "an accelerate launcher setting", "same_network": "an accelerate launcher setting",
    "enable_cpu_affinity": "an accelerate launcher setting", "tpu_env": "TPUs are not supported",
    "tpu_use_cluster": "TPUs are not supported", "tpu_use_sudo": "TPUs are not supported",
    "use_cpu": "adapt uses the GPU when there is one, else the CPU",
    "compute_": "Azure ML compute settings: adapt runs where it is started",
    "instance_type_": "Azure ML instance types: adapt runs where it is started",
    "do_train": "adapt train always trains", "preprocess_output": "adapt preprocesses the data itself",
    "mlflow_model_folder": "the MLflow model is written to saved/mlflow/ in the run folder (adapt-mlflow)",
    "output_dir_mlflow": "the MLflow model is written to saved/mlflow/ in the run folder (adapt-mlflow)",
    "evaluation_result": "the test metrics are written to test_metrics.json in the run folder; `adapt evaluate RUN "
                         "--data FILE --results DIR` writes an evaluation folder (metrics, predictions, pictures)",
    "load_model": "the model is model.path", "model": "the model is MODEL_PATH (model.path)",
    "model_type": "the model's kind follows from model.path", "model_version": "model versions are not tracked",
    "image_processor_path": "the processor comes with the model", "library": "the task decides the library",
    "logging_path": "the log is the run folder's train.log", "user_folder": "the run folder holds everything",
    "job_id": "a nyuntam job setting", "job_service": "a nyuntam job setting", "id": "a nyuntam job setting",
    "dataset_id": "a nyuntam job setting", "cache_bool": "a nyuntam cache setting", "dest_root": "a nyuntam cache setting",
    "work_dir": "checkpoints go to the run folder's checkpoints/", "launcher": "the backend launches the workers",
    "peft_type": "the method is PEFT_METHOD", "auto_select_modules": "adapt picks the target modules itself unless "
                                                                    "target_modules names them",
    "blocksize": "adapt packs text in max_seq_length blocks", "resume": "training.resume_from_checkpoint",
    "remove_unused_columns": "tasks read only their columns",
    "group_by_length": "adapt batches in data order (sequences padded per batch)",
    "steps": "nyuntam's trainer does not use it (EPOCHS decide); max_steps is training.max_steps",
    "dataset_format": "the task reads its columns (task_params)", "dataset_config": "adapt reads local data files",
    "format_names": "the task reads its columns (task_params)", "format_string": "the task reads its columns (task_params)",
    "data_version": "data versions are not tracked",
}


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in {"true", "1", "yes"}


def _falsy(value: Any) -> bool:
    return value is False or str(value).strip().lower() in {"false", "0", "no"}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@dataclass
class _Source:
    """The parameters as written: (key as written, lower-case name, section path in lower case, value)."""

    items: list[tuple[str, str, str, Any]] = field(default_factory=list)

    def add(self, data: dict[str, Any], prefix: str = "") -> _Source:
        for key, value in data.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and str(key).lower() not in {"cfg_options", "deepspeed", "dataset_config",
                                                                     "palette"}:
                self.add(value, path + ".")
            else:
                section = prefix.rstrip(".").lower()
                self.items.append((path, str(key).lower(), section, value))
        return self

    def find(self, *names: str) -> tuple[str, Any] | None:
        """The first (key, value) set under one of ``names``; empty values (nyuntam's defaults,
        written ``None`` in its docs) are skipped."""
        for key, name, _, value in self.items:
            if name in names and value not in (None, "") and not (isinstance(value, str) and value.strip() == "None"):
                return key, value
        return None


class _Import:
    def __init__(self, source: _Source) -> None:
        self.source, self.config, self.notes = source, {}, []
        self.used: set[str] = set()
        names = {name for _, name, _, _ in source.items}
        self.nyuntam = bool(names & {"epochs", "lr", "peft_method", "save_method", "full_fine_tuning",
                                     "last_layer_tuning", "training_args", "task"} and "task_name" not in names)

    # helpers -----------------------------------------------------------------------------
    def put(self, key: str, dotted: str, value: Any) -> None:
        set_dotted(self.config, dotted, value)
        self.used.add(key)

    def drop(self, key: str, why: str) -> None:
        self.notes.append(f"{key}: {why}; dropped")
        self.used.add(key)

    def value(self, *names: str) -> Any:
        found = self.source.find(*names)
        return found[1] if found else None

    def empty(self, value: Any) -> bool:
        """nyuntam takes an empty value (``T_MAX:``, or its docs' ``None``) for its default."""
        return self.nyuntam and (value in (None, "") or (isinstance(value, str) and value.strip() == "None"))

    def each(self, names: set[str] | dict[str, Any] | tuple[str, ...]) -> list[tuple[str, str, str, Any]]:
        """The written parameters among ``names`` (empty nyuntam values are its defaults: skipped
        without a note)."""
        out = []
        for key, name, section, value in self.source.items:
            if name in names and key not in self.used:
                if self.empty(value):
                    self.used.add(key)
                    continue
                out.append((key, name, section, value))
        return out

    # the parts ---------------------------------------------------------------------------
    def run(self) -> tuple[dict[str, Any], list[str]]:
        self.task()
        self.method()
        self.backend()
        self.training()
        self.data_and_model()
        self.task_params()
        self.rest()
        self.source_defaults()
        return self.config, self.notes

    def source_defaults(self) -> None:
        """The source system's defaults for what the file leaves unset, written out."""
        if self.nyuntam:
            defaults, system = NYUNTAM_DEFAULTS, "nyuntam's"
        elif self.config.get("task") not in AZURE_CHOOSES:
            defaults, system = AZURE_DEFAULTS, "Azure ML's"
        else:
            return
        training = self.config.setdefault("training", {})
        added = {name: value for name, value in defaults.items() if name not in training}
        training.update(added)
        if added:
            self.notes.append(f"training: {system} defaults for what the file leaves unset, written out so that "
                              "adapt's method- and model-aware defaults do not replace them: "
                              + ", ".join(f"{name} {value}" for name, value in added.items()))

    def task(self) -> None:
        for key, _name, _, value in self.each(("task_name", "task")):
            task = TASK_NAMES.get(str(value).lower(), str(value).lower().replace("-", "_"))
            self.put(key, "task", task)
        subtask = self.source.find("subtask")
        if self.config.get("task") == "text_classification" and subtask and str(subtask[1]).lower() in ("ner", "pos",
                                                                                                      "chunk"):
            self.config["task"] = "token_classification"  # nyuntam files token classification under text_classification
            self.notes.append(f"{subtask[0]}: {subtask[1]} is token classification in adapt: task token_classification")
        ann = self.source.find("train_ann_file")
        if self.config.get("task") == "instance_segmentation" and ann and str(ann[1]).endswith(".txt"):
            self.config["task"] = "semantic_segmentation"  # nyuntam's segmentation block: mmseg's name lists and masks
            self.notes.append(f"{ann[0]}: {ann[1]} lists image names with label masks (mmsegmentation's layout): "
                              "task semantic_segmentation (instance_segmentation reads COCO files)")
        if "task" not in self.config:
            self.notes.append("no task found: set `task:` (adapt plugins lists them)")

    def method(self) -> None:
        azure_lora = self.source.find("apply_lora")
        peft = self.source.find("peft_method", "method", "algorithm")
        full = self.source.find("full_fine_tuning")
        last = self.source.find("last_layer_tuning")
        quantized = any(_truthy(self.value(name)) for name in QUANTIZATION)
        method, why = "full", None
        if peft:
            method = PEFT_METHODS.get(str(peft[1]).lower())
            self.used.add(peft[0])
            if method is None:
                self.notes.append(f"{peft[0]}: unknown method {peft[1]!r} (adapt methods: {', '.join(PEFT_METHODS)}); "
                                  "imported as a full fine-tune")
                method = "full"
            if full and _truthy(full[1]):
                self.notes.append(f"{full[0]}: true next to {peft[0]}: {peft[1]}; nyuntam applies the PEFT method: "
                                  f"method {method}")
        elif azure_lora:
            method = "lora" if _truthy(azure_lora[1]) else "full"
            why = None if method == "lora" else f"LoRA is off ({azure_lora[0]}: {azure_lora[1]}): a full fine-tune"
            self.used.add(azure_lora[0])
        elif full and _truthy(full[1]):
            why = f"a full fine-tune ({full[0]}: {full[1]})"
        elif last and _truthy(last[1]):
            method = "last_layer"
        elif any(name in METHOD_KEYS and name not in QUANTIZATION for _, name, _, _ in self.each(METHOD_KEYS)):
            method = "lora"
            self.notes.append("LoRA parameters without apply_lora / PEFT_METHOD: assumed method lora")
        for switch in (full, last):
            if switch:
                self.used.add(switch[0])
        if full and _falsy(full[1]) and method == "full":
            self.notes.append(f"{full[0]}: false: without a PEFT method or LAST_LAYER_TUNING nyuntam tunes every "
                              "layer all the same: method full")
        if last and _falsy(last[1]) and method in ("lora", "dora", "ssf"):
            self.notes.append(f"{last[0]}: false: nyuntam would leave the task head frozen; adapt trains the head "
                              f"with every method (a new head must learn)")
        if quantized and method in ("lora", "dora", "ssf"):
            method = "q" + method
        if method != "full" or azure_lora or full:
            self.config["method"] = method
        takes = method not in ("full", "last_layer")
        for key, name, _, value in self.each(METHOD_KEYS):
            if not takes and not (name in QUANTIZATION and _falsy(value)):
                self.drop(key, why or f"method {method} takes no {METHOD_KEYS[name]}")
            elif name in QUANTIZATION and _falsy(value) and not takes:
                self.used.add(key)
            else:
                self.put(key, f"method_params.{METHOD_KEYS[name]}", value)

    def backend(self) -> None:
        deepspeed = self.source.find("apply_deepspeed")
        ddp, fsdp = self.source.find("ddp"), self.source.find("fsdp")
        gpus = self.source.find("number_of_gpu_to_use_finetuning")
        nodes = self.source.find("num_nodes_finetune", "num_nodes")
        cuda = self.source.find("cuda_id")
        backend, off = "single", []
        for switch, what in ((deepspeed, "no DeepSpeed"), (ddp, "no DDP"), (fsdp, "no FSDP")):
            if switch:
                self.used.add(switch[0])
                if _falsy(switch[1]):
                    off.append((switch, what))
        several = next((found for found in (gpus, nodes) if found and _int(found[1]) > 1), None)
        if deepspeed and _truthy(deepspeed[1]):
            backend = "deepspeed"
        elif fsdp and _truthy(fsdp[1]):
            backend = "fsdp"
            if ddp and _truthy(ddp[1]):
                self.notes.append(f"{ddp[0]}: {ddp[1]} next to {fsdp[0]}: {fsdp[1]}: nyuntam launches FSDP (through "
                                  "accelerate): backend fsdp")
        elif ddp and _truthy(ddp[1]):
            backend = "ddp"
        elif several and not (ddp or fsdp):
            backend = "ddp"  # Azure ML's finetune runs several GPUs or nodes as distributed data parallel
            self.notes.append(f"{several[0]}: {several[1]}: several processes: backend ddp (Azure ML's data parallel "
                              "training)")
        if backend != "single" or deepspeed or ddp or fsdp:
            self.config["backend"] = backend
        for (key, value), what in off:
            self.notes.append(f"{key}: {value}: {what}; backend {backend}")
        launched = backend != "single"
        for found, target in ((gpus, "nproc_per_node"), (nodes, "num_nodes")):
            if found and launched:
                self.put(found[0], f"backend_params.{target}", found[1])
            elif found:
                self.drop(found[0], f"{found[1]}: one process on one node is backend single")
        if cuda and launched and "nproc_per_node" not in self.config.get("backend_params", {}):
            self.put(cuda[0], "backend_params.nproc_per_node", len(str(cuda[1]).split(",")))
        elif cuda:
            self.drop(cuda[0], "the devices are CUDA_VISIBLE_DEVICES' to choose")
        for key, name, _, value in self.each(("deepspeed", "deepspeed_config", "deepspeed_stage")):
            if backend != "deepspeed":
                self.drop(key, "DeepSpeed is off (apply_deepspeed false or absent)")
            else:
                target = "deepspeed_stage" if name == "deepspeed_stage" else "deepspeed"
                self.put(key, f"backend_params.{target}", value)
        for key, name, _section, value in self.each({**FSDP_KEYS, **LAUNCH_KEYS, "mixed_precision": None}):
            if name == "mixed_precision":
                if backend == "fsdp" and str(value).lower() in ("bf16", "fp16"):
                    self.put(key, "training.precision", "bf16" if str(value).lower() == "bf16" else "16")
                    self.notes.append(f"{key}: {value}: training.precision {self.config['training']['precision']}")
                else:
                    self.drop(key, "FSDP is off" if backend != "fsdp" else f"{value}: full precision (training.precision 32)")
            elif backend != "fsdp":
                self.drop(key, "FSDP is off (FSDP false or absent)")
            elif name in LAUNCH_KEYS:
                if LAUNCH_KEYS[name] not in self.config.get("backend_params", {}):
                    self.put(key, f"backend_params.{LAUNCH_KEYS[name]}", value)
                else:
                    self.drop(key, f"backend_params.{LAUNCH_KEYS[name]} is already set")
            else:
                self.fsdp_option(key, FSDP_KEYS[name], value)

    def fsdp_option(self, key: str, target: str, value: Any) -> None:
        """An FSDP (accelerate, FSDP1) option: kept where the task's engine runs it; where it only
        tunes speed and the engine cannot (FSDP2 on HF tasks, one FSDP1 unit on MMEngine tasks),
        dropped with the reason."""
        if target == "transformer_layer_cls_to_wrap" and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        mmengine = self.config.get("task") in MMENGINE_TASKS
        text = str(value).strip().lower()
        if not mmengine and ((target == "backward_prefetch" and text != "backward_pre")
                             or (target == "forward_prefetch" and _truthy(value))):
            self.drop(key, f"{value}: transformers 5 runs FSDP2, which prefetches by itself")
        elif mmengine and target == "state_dict_type" and text != "full_state_dict":
            self.drop(key, f"{value}: MMEngine tasks save full state dicts")
        elif mmengine and target == "cpu_ram_efficient_loading" and _truthy(value):
            self.drop(key, "true: MMEngine tasks load the weights on every rank")
        elif mmengine and (target == "transformer_layer_cls_to_wrap" or (target == "auto_wrap_policy"
                                                                          and text == "size_based_wrap")):
            self.drop(key, f"{value}: MMEngine tasks are sharded as one FSDP unit")
        else:
            self.put(key, f"backend_params.{target}", value)

    def training(self) -> None:
        interval = self.source.find("interval")
        do_eval = self.source.find("do_eval")
        steps = self.source.find("interval_steps")
        for key, name, _, value in self.each(tuple(TrainingConfig.model_fields) + ("eval_strategy", "fp16", "bf16",
                                                                                     "optimizer")):
            if name in ("optim", "optimizer") and str(value).lower() == "adamw_ort_fused":
                self.drop(key, f"{value}: ONNX Runtime's optimizer (ONNX Runtime training does not work with "
                               "transformers 5); the default optim")
            elif name == "optimizer" and not self.nyuntam:
                self.put(key, "training.optim", value)
            elif name == "optimizer":
                continue  # nyuntam's, below
            elif name == "fp16" or name == "bf16":
                if _truthy(value):
                    self.put(key, "training.precision", "16" if name == "fp16" else "bf16")
                else:
                    self.used.add(key)
            else:
                self.put(key, f"training.{'evaluation_strategy' if name == 'eval_strategy' else name}", value)
        if interval:
            strategy = str(interval[1]).lower()
            if do_eval and _falsy(do_eval[1]):
                strategy = "no"  # nyuntam evaluates and saves only with DO_EVAL
            self.put(interval[0], "training.evaluation_strategy", strategy)
            set_dotted(self.config, "training.save_strategy", strategy)
        elif do_eval and _falsy(do_eval[1]):
            self.put(do_eval[0], "training.evaluation_strategy", "no")
            set_dotted(self.config, "training.save_strategy", "no")
        if do_eval:
            self.used.add(do_eval[0])
        if steps:  # nyuntam evaluates, saves and logs every INTERVAL_STEPS
            for target in ("save_steps", "eval_steps", "logging_steps"):
                set_dotted(self.config, f"training.{target}", steps[1])
            self.used.add(steps[0])
        scheduler = self.source.find("scheduler_type")
        if scheduler:
            self.schedule(*scheduler)
        optimizer = self.source.find("optimizer") if self.nyuntam else None
        if optimizer:
            self.put(optimizer[0], "training.optim", {"sgd": "sgd", "adam": "adamw_torch", "adamw": "adamw_torch"}.get(
                str(optimizer[1]).lower(), str(optimizer[1]).lower()))
        if self.nyuntam:
            for key, name, _section, value in self.each(NYUNTAM):
                if NYUNTAM[name].startswith("training.") or name in ("output_dir", "overwrite_output_dir"):
                    self.put(key, NYUNTAM[name], value)
            warmup = self.source.find("warmup_iters")
            if warmup and self.config.get("task") not in MMENGINE_TASKS:  # nyuntam's HF tasks warm up WARMUP_ITERS steps
                self.put(warmup[0], "training.warmup_steps", warmup[1])

    def schedule(self, key: str, value: Any) -> None:
        name = str(value)
        mmengine = MMENGINE_SCHEDULERS.get(name.lower().replace("_", ""))
        if mmengine is None:
            self.put(key, "training.lr_scheduler_type", name.lower())
            return
        self.put(key, "training.lr_scheduler_type", mmengine)
        if name.lower() in ("multisteplr", "steplr") and self.config.get("task") in MMENGINE_TASKS:
            milestones = self.value("milestones")
            if name.lower() == "steplr" or not milestones:
                self.notes.append(f"{key}: {name}: a step schedule is task_params.MILESTONES (epochs) with "
                                  "task_params.GAMMA; none given: a constant learning rate")
            else:
                self.notes.append(f"{key}: {name}: task_params.MILESTONES and GAMMA")
        elif name.lower() in ("multisteplr", "steplr"):
            self.notes.append(f"{key}: {name}: step schedules are for MMEngine tasks; a constant learning rate")

    def data_and_model(self) -> None:
        azure = {k: v for k, v in AZURE.items() if not self.nyuntam or k not in NYUNTAM}
        for key, name, section, value in self.each(azure):
            if name == "batch_size" and ("train" in section or self.nyuntam):
                self.put(key, "training.per_device_train_batch_size", value)
            else:
                self.put(key, azure[name], value)
        for key, name, section, value in self.each(("train", "validation", "val", "test")):
            if "data" in section:
                self.put(key, f"data.{'validation' if name == 'val' else name}", value)
        if self.nyuntam:
            for key, name, _section, value in self.each(NYUNTAM):
                if NYUNTAM[name].startswith("data."):
                    self.put(key, NYUNTAM[name], value)
        self.data_files()
        for key, name, _, value in self.each(("model_path", "local_model_path")):
            if "path" not in self.config.get("model", {}) or name == "local_model_path":
                self.put(key, "model.path", value)  # nyuntam prefers LOCAL_MODEL_PATH when it is set
            else:
                self.used.add(key)
        found = self.source.find("save_method")
        if found:
            saver = str(found[1]).lower()
            if saver in SAVERS:
                self.put(found[0], "savers", [saver])
            else:
                self.drop(found[0], f"unknown save method {found[1]!r} (adapt savers: {', '.join(SAVERS)})")

    def data_files(self) -> None:
        """nyuntam: CUSTOM_DATASET_PATH with TRAIN_DIR / VAL_DIR, and for COCO tasks the
        annotation files inside them."""
        root = self.source.find("custom_dataset_path")
        dirs = {split: self.source.find(name) for split, name in (("train", "train_dir"), ("validation", "val_dir"),
                                                                  ("test", "test_dir"))}
        files = {"train": self.source.find("train_ann_file"), "validation": self.source.find("val_ann_file")}
        for split in ("train", "validation", "test"):
            parts = [p[1] for p in (root, dirs[split], files.get(split)) if p]
            if files.get(split) or (dirs[split] and root):
                self.config.setdefault("data", {})[split] = os.path.join(*map(str, parts))
        for found in (root, *dirs.values(), *files.values()):
            if found:
                self.used.add(found[0])
        dataset = self.source.find("dataset")
        if dataset:
            self.drop(dataset[0], f"{dataset[1]!r} is a hub data set: adapt reads local files (download it, then give "
                                  "data.train / data.validation)")

    def task_params(self) -> None:
        task = self.config.get("task")
        mmengine = task in MMENGINE_TASKS
        for key, name, _section, value in self.each(MMENGINE_KEYS):
            if not mmengine:
                if name not in ("warmup_iters", "warmup_ratio", "warmup", "begin", "end"):
                    self.drop(key, f"an MMEngine (detection, segmentation, pose) setting; task {task} does not use it")
                else:
                    self.used.add(key)  # nyuntam's schedule keys; HF tasks warm up WARMUP_ITERS (training.warmup_steps)
            elif name == "cfg_options" and not isinstance(value, dict):
                if _truthy(value) or _falsy(value) or str(value).lower() == "none":
                    self.drop(key, f"{value}: the model config as it is (cfg_options takes a mapping of dotted keys)")
                else:
                    self.drop(key, f"{value!r}: cfg_options takes a mapping of dotted keys")
            else:
                self.put(key, f"task_params.{name.upper() if name.upper() in _SCHEDULE else name}", value)
        for key, name, _section, value in self.each(TASK_KEYS):
            if name == "subtask" and task != "token_classification":
                self.drop(key, f"{value}: classic {task}" if str(value).lower() in ("none", "") else
                          f"task {task} has no subtasks")
            else:
                self.put(key, f"task_params.{TASK_KEYS[name]}", value)
        self.lengths(task)
        metric = self.source.find("eval_metric")
        if metric:
            self.drop(metric[0], f"{metric[1]}: every metric of the task is computed (summarization: ROUGE and BLEU; "
                                 "translation: BLEU and ROUGE)")

    def lengths(self, task: str | None) -> None:
        """The pipeline's preprocessing lengths, as each task names them (-1: the model's maximum)."""
        target = {"question_answering": "max_length", "summarization": "max_input_length",
                  "translation": "max_input_length"}.get(task or "", "max_seq_length")
        for key, name, _, value in self.each(("max_seq_length", "pad_to_max_length")):
            if name == "max_seq_length":
                self.put(key, f"task_params.{target}", value)
            elif task == "text_classification":
                self.put(key, "task_params.pad_to_max_length", value)
            elif _falsy(value):
                self.drop(key, f"false: {task} pads each batch to its longest sequence, as asked")
            else:
                self.drop(key, f"true: {task} pads each batch to its longest sequence (padding changes speed and "
                               "memory, not results)")

    def rest(self) -> None:
        for key, name, _, value in self.source.items:
            if key in self.used:
                continue
            if name == "apply_ort":
                if _truthy(value):
                    self.notes.append(f"{key}: ONNX Runtime training does not work with transformers 5; dropped")
                continue
            if self.empty(value):
                continue
            reason = IGNORED.get(name) or next((why for prefix, why in IGNORED.items()
                                                if prefix.endswith("_") and name.startswith(prefix)), None)
            self.notes.append(f"{key}: {reason}; dropped" if reason else f"{key}: no adapt equivalent; dropped")


_SCHEDULE = ("BEGIN", "END", "T_MAX", "WARMUP", "WARMUP_RATIO", "WARMUP_ITERS", "MILESTONES", "GAMMA")


def import_config(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The adapt config and one note per source key that was not carried over (or carried over with a change)."""
    return _Import(_Source().add(data)).run()
