"""``adapt config import``: turn an Azure ML fine-tune component's parameters or a nyuntam adapt
YAML into an adapt run config, with a message for every key it cannot map.

Keys are matched case-insensitively after flattening nested sections, so both the Azure ML names
(``apply_lora``, ``lora_r``, ``deepspeed_stage``, ``save_as_mlflow_model``...) and nyuntam's
(``PEFT_METHOD``, ``EPOCHS``, ``LR``, ``BATCH_SIZE``, ``SAVE_METHOD``, ``DDP``, ``FSDP``,
``load_in_4bit``...) are understood.
"""

from __future__ import annotations

from typing import Any

from adapt.config import TrainingConfig, set_dotted

# source key (lower case) -> dotted adapt key
DIRECT = {
    # Azure ML
    "lora_r": "method_params.r", "lora_alpha": "method_params.alpha", "lora_dropout": "method_params.dropout",
    "merge_lora_weights": "method_params.merge_weights", "deepspeed": "backend_params.deepspeed",
    "deepspeed_stage": "backend_params.deepspeed_stage", "save_as_mlflow_model": "save_as_mlflow_model",
    "number_of_gpu_to_use_finetuning": "backend_params.nproc_per_node", "num_nodes_finetune": "backend_params.num_nodes",
    "pytorch_model_path": "model.path", "model_path": "model.path", "mlflow_model_path": "model.mlflow_model_path",
    "train_file_path": "data.train", "validation_file_path": "data.validation", "test_file_path": "data.test",
    "train_mltable_path": "data.train", "validation_mltable_path": "data.validation", "test_mltable_path": "data.test",
    "training_data": "data.train", "validation_data": "data.validation",
    "batch_size": "data.batch_size", "max_seq_length": "task_params.max_seq_length",
    "pad_to_max_length": "task_params.pad_to_max_length", "number_of_epochs": "training.num_train_epochs",
    "training_batch_size": "training.per_device_train_batch_size",
    "validation_batch_size": "training.per_device_eval_batch_size", "learning_rate_scheduler": "training.lr_scheduler_type",
    "optimizer": "training.optim", "random_seed": "training.seed", "early_stopping": "training.apply_early_stopping",
    "gradient_accumulation_step": "training.gradient_accumulation_steps", "evaluation_steps": "training.eval_steps",
    "number_of_workers": "training.dataloader_num_workers", "image_height": "task_params.image_height",
    "image_width": "task_params.image_width", "apply_augmentations": "task_params.apply_augmentations",
    # nyuntam adapt
    "epochs": "training.num_train_epochs", "lr": "training.learning_rate",
    "batch_size_train": "training.per_device_train_batch_size", "num_workers": "training.dataloader_num_workers",
    "scheduler_type": "training.lr_scheduler_type", "beta1": "training.adam_beta1", "beta2": "training.adam_beta2",
    "adam_eps": "training.adam_epsilon", "interval_steps": "training.save_steps", "no_of_checkpoints": "training.save_total_limit",
    "r": "method_params.r", "alpha": "method_params.alpha", "dropout": "method_params.dropout",
    "target_modules": "method_params.target_modules", "fan_in_fan_out": "method_params.fan_in_fan_out",
    "init_lora_weights": "method_params.init_lora_weights", "num_nodes": "backend_params.num_nodes",
    "subtask": "task_params.subtask", "packing": "task_params.packing", "dataset_text_field": "task_params.dataset_text_field",
    "flash_attention2": "task_params.flash_attention2", "max_train_samples": "data.max_train_samples",
    "max_eval_samples": "data.max_eval_samples", "max_input_length": "task_params.max_input_length",
    "max_target_length": "task_params.max_target_length", "generation_max_length": "task_params.generation_max_length",
    "source_lang": "task_params.source_lang", "target_lang": "task_params.target_lang", "prefix": "task_params.prefix",
    "max_answer_length": "task_params.max_answer_length", "max_length": "task_params.max_length",
    "doc_stride": "task_params.doc_stride", "class_list": "task_params.class_list", "palette": "task_params.palette",
    "train_ann_file": "data.train", "val_ann_file": "data.validation",
    "checkpoint_interval": "task_params.checkpoint_interval", "cfg_options": "task_params.cfg_options",
    "amp": "task_params.amp", "auto_scale_lr": "task_params.auto_scale_lr",
    **{name.lower(): f"task_params.{name}" for name in ("BEGIN", "END", "T_MAX", "WARMUP", "WARMUP_RATIO", "WARMUP_ITERS",
                                                         "MILESTONES", "GAMMA")},
    "output_dir": "output", "output_path": "output",
}
for _name in TrainingConfig.model_fields:  # Azure ML's training names are adapt's
    DIRECT.setdefault(_name, f"training.{_name}")
QUANTIZATION = ("load_in_4bit", "bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "load_in_8bit",
                "llm_int8_threshold", "llm_int8_skip_modules", "llm_int8_enable_fp32_cpu_offload", "llm_int8_has_fp16_weight")
DIRECT.update({name: f"method_params.{name}" for name in QUANTIZATION})
DIRECT["batch_size"] = "data.batch_size"  # Azure ML's preprocessing batch; nyuntam's BATCH_SIZE is below
NYUNTAM_ONLY = {"batch_size": "training.per_device_train_batch_size"}

TASK_NAMES = {"text-classification": "text_classification", "token-classification": "token_classification",
              "question-answering": "question_answering", "text-generation": "text_generation",
              "image-classification": "image_classification",
              "image-classification-multilabel": "image_classification_multilabel",
              "object-detection": "object_detection", "instance-segmentation": "instance_segmentation",
              "pose-detection": "pose_detection"}
METHOD_NAMES = {"lora": "lora", "dora": "dora", "ssf": "ssf", "qlora": "qlora", "qdora": "qdora", "qssf": "qssf",
                "full": "full", "last_layer": "last_layer"}
SAVERS = {"state_dict": "state_dict", "safetensors": "safetensors", "full_torch_model": "full_torch_model",
          "save_pretrained": "save_pretrained"}
IGNORED = {
    "compute_": "Azure ML compute settings: adapt runs where it is started",
    "instance_type_": "Azure ML instance types: adapt runs where it is started",
    "do_train": "adapt train always trains", "do_eval": "evaluation follows the validation data and evaluation_strategy",
    "compute_environment": "an accelerate launcher setting: not needed", "debug": "an accelerate launcher setting",
    "distributed_type": "given by the backend", "downcast_bf16": "an accelerate TPU setting",
    "main_training_function": "an accelerate launcher setting", "same_network": "an accelerate launcher setting",
    "tpu_env": "TPUs are not supported", "tpu_use_cluster": "TPUs are not supported", "tpu_use_sudo": "TPUs are not supported",
    "use_cpu": "adapt uses the GPU when there is one, else the CPU",
    "preprocess_output": "adapt preprocesses the data itself", "model_selector_output": "give the model folder as model.path",
    "eval_metric": "every metric of the task is computed", "load_model": "the model is model.path",
    "model_type": "the model's kind follows from model.path", "image_processor_path": "the processor comes with the model",
    "library": "the task decides the library",
}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and str(key).lower() not in {"cfg_options", "deepspeed"}:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in {"true", "1", "yes"}


def import_config(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The adapt config and one message per source key that was not mapped (or mapped with a change)."""
    flat = _flatten(data)
    lower = {key.rsplit(".", 1)[-1].lower(): (key, value) for key, value in flat.items()}
    nyuntam = any(k in lower for k in ("epochs", "lr", "peft_method", "save_method", "full_fine_tuning", "last_layer_tuning"))
    config: dict[str, Any] = {}
    messages: list[str] = []
    method = None
    quantized = _truthy(lower.get("load_in_4bit", ("", False))[1]) or _truthy(lower.get("load_in_8bit", ("", False))[1])
    for name, (key, value) in lower.items():
        parent = key.rsplit(".", 1)[0].lower() if "." in key else ""
        if "data" in parent and name in ("train", "validation", "val", "test"):
            set_dotted(config, f"data.{'validation' if name == 'val' else name}", value)
        elif name in ("apply_lora",):
            method = "lora" if _truthy(value) else method
        elif name in ("peft_method", "method", "algorithm"):
            method = METHOD_NAMES.get(str(value).lower(), None)
            if method is None:
                messages.append(f"{key}: unknown method {value!r} (adapt methods: {', '.join(METHOD_NAMES)})")
        elif name == "full_fine_tuning" and _truthy(value):
            method = "full"
        elif name == "last_layer_tuning" and _truthy(value):
            method = method or "last_layer"
        elif name == "apply_deepspeed" and _truthy(value):
            config["backend"] = "deepspeed"
        elif name in ("ddp",) and _truthy(value):
            config["backend"] = config.get("backend", "ddp")
        elif name == "fsdp" and _truthy(value):
            config["backend"] = "fsdp"
        elif name.startswith("fsdp_") or name in ("mixed_precision", "num_processes", "num_machines", "machine_rank",
                                                  "rdzv_backend"):
            target = {"num_processes": "nproc_per_node", "num_machines": "num_nodes", "machine_rank": "node_rank"}.get(name, name)
            set_dotted(config, f"backend_params.{target.removeprefix('fsdp_')}", value)
        elif name in ("fp16",):
            if _truthy(value):
                set_dotted(config, "training.precision", "16")
        elif name == "interval":
            set_dotted(config, "training.save_strategy", str(value))
            set_dotted(config, "training.evaluation_strategy", str(value))
        elif name == "save_method":
            saver = SAVERS.get(str(value).lower())
            if saver:
                config["savers"] = [saver]
            else:
                messages.append(f"{key}: unknown save method {value!r} (adapt savers: {', '.join(SAVERS)})")
        elif name in ("task_name", "task"):
            config["task"] = TASK_NAMES.get(str(value).lower(), str(value).lower().replace("-", "_"))
        elif name == "apply_ort":
            if _truthy(value):
                messages.append(f"{key}: ONNX Runtime training does not work with transformers 5; dropped")
        elif nyuntam and name in NYUNTAM_ONLY:
            set_dotted(config, NYUNTAM_ONLY[name], value)
        elif name in DIRECT:
            set_dotted(config, DIRECT[name], value)
        else:
            reason = next((why for prefix, why in IGNORED.items() if name == prefix or name.startswith(prefix)), None)
            messages.append(f"{key}: {reason}; dropped" if reason else f"{key}: no adapt equivalent; dropped")
    if method:
        if quantized and method in ("lora", "dora", "ssf"):
            method = "q" + method
        config["method"] = method
    elif "method_params" in config:
        config["method"] = "lora"
        messages.append("LoRA parameters without apply_lora / PEFT_METHOD: assumed method lora")
    if "task" not in config:
        messages.append("no task found: set `task:` (adapt plugins lists them)")
    return config, messages
