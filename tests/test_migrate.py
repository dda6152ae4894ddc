"""adapt config import: Azure ML and nyuntam parameter sets become adapt configs."""

from __future__ import annotations

import pytest
import yaml
from adapt.migrate import AZURE_DEFAULTS, NYUNTAM_DEFAULTS, import_config
from adapt.testing import run_adapt

AML = {
    "task_name": "text-classification", "pytorch_model_path": "./bert", "train_file_path": "train.jsonl",
    "validation_file_path": "val.jsonl", "apply_lora": "true", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
    "merge_lora_weights": "false", "apply_deepspeed": "true", "deepspeed_stage": "3", "save_as_mlflow_model": True,
    "num_train_epochs": 3, "learning_rate": 1e-4, "per_device_train_batch_size": 8, "metric_for_best_model": "f1_macro",
    "compute_finetune": "FT-Cluster", "apply_ort": "true", "max_seq_length": 128, "batch_size": 500,
}

NYUNTAM = {
    "TASK": "text_generation", "MODEL_PATH": "./llama", "DATA": {"TRAIN": "t.jsonl"}, "PEFT_METHOD": "LoRA",
    "load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "EPOCHS": 2, "LR": 1e-4, "BATCH_SIZE": 4,
    "SAVE_METHOD": "safetensors", "DDP": True, "num_nodes": 2, "FSDP": False, "packing": True, "DO_TRAIN": True,
    "MYSTERY": 1,
}


def test_azure_ml_parameters() -> None:
    config, messages = import_config(AML)
    assert config["task"] == "text_classification" and config["method"] == "lora"
    assert config["model"] == {"path": "./bert"}
    assert config["data"] == {"train": "train.jsonl", "validation": "val.jsonl", "batch_size": 500}
    assert config["method_params"] == {"r": 16, "alpha": 32, "dropout": 0.05, "merge_weights": "false"}
    assert config["backend"] == "deepspeed" and config["backend_params"] == {"deepspeed_stage": "3"}
    assert config["save_as_mlflow_model"] is True
    # what the file sets, and Azure ML's defaults for the rest of what it would train with, written out
    assert config["training"] == {**AZURE_DEFAULTS, "num_train_epochs": 3, "learning_rate": 1e-4,
                                  "per_device_train_batch_size": 8, "metric_for_best_model": "f1_macro"}
    assert config["task_params"] == {"max_seq_length": 128}
    assert len(messages) == 3
    assert any(m.startswith("training: Azure ML's defaults for what the file leaves unset") for m in messages)
    assert any(m.startswith("compute_finetune: Azure ML compute") for m in messages)
    assert any(m.startswith("apply_ort: ONNX Runtime") for m in messages)


def test_nyuntam_config() -> None:
    config, messages = import_config(NYUNTAM)
    assert config["task"] == "text_generation" and config["method"] == "qlora"  # LoRA + load_in_4bit
    assert config["model"] == {"path": "./llama"} and config["data"] == {"train": "t.jsonl"}
    assert config["method_params"] == {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    assert config["training"] == {**NYUNTAM_DEFAULTS, "num_train_epochs": 2, "learning_rate": 1e-4,
                                  "per_device_train_batch_size": 4}
    assert config["savers"] == ["safetensors"] and config["backend"] == "ddp"
    assert config["backend_params"] == {"num_nodes": 2} and config["task_params"] == {"packing": True}
    assert any(m.startswith("DO_TRAIN: adapt train always trains") for m in messages)
    assert any(m == "MYSTERY: no adapt equivalent; dropped" for m in messages)


def test_nyuntam_vision_config() -> None:
    """nyuntam's MMDET keys: the COCO annotation files are the data, the scheduler keys task parameters."""
    config, _ = import_config({"TASK": "object_detection", "MODEL_PATH": "retinanet_r18_fpn_1x_coco",
                               "PEFT_METHOD": "SSF", "train_ann_file": "train.json", "val_ann_file": "val.json",
                               "BEGIN": 0, "END": 12, "WARMUP": True, "checkpoint_interval": 2,
                               "cfg_options": {"model.backbone.init_cfg": None}})
    assert config["task"] == "object_detection" and config["method"] == "ssf"
    assert config["data"] == {"train": "train.json", "validation": "val.json"}
    assert config["task_params"] == {"BEGIN": 0, "END": 12, "WARMUP": True, "checkpoint_interval": 2,
                                     "cfg_options": {"model.backbone.init_cfg": None}}


def test_cli_writes_a_config_that_validates(tmp_path) -> None:
    source = {k: v for k, v in AML.items() if k not in ("apply_deepspeed", "deepspeed_stage", "save_as_mlflow_model")}
    (tmp_path / "aml.yaml").write_text(yaml.safe_dump(source))
    result = run_adapt("config", "import", "aml.yaml", "--output", "run.yaml", cwd=tmp_path)
    assert result.returncode == 0, result
    assert "note: compute_finetune" in result.stderr and "note: apply_ort" in result.stderr
    validated = run_adapt("config", "validate", "run.yaml", cwd=tmp_path)
    assert validated.returncode == 0, validated
    assert "task text_classification, method lora" in validated.stdout


def imported(params: dict) -> tuple:  # the config, its notes, and the run it resolves to
    from adapt.config import parse_config
    from adapt.resolve import resolve

    config, notes = import_config({"pytorch_model_path": "./m", "train_file_path": "t.jsonl", **params})
    return config, notes, resolve(parse_config(config), purpose="validate")


@pytest.mark.parametrize(("params", "method", "backend"), [
    ({"task_name": "text-classification", "apply_lora": "false", "lora_r": 8, "lora_alpha": 128}, "full", "single"),
    ({"task_name": "text-classification", "apply_lora": "true", "lora_r": 8, "lora_alpha": 128}, "lora", "single"),
    ({"task_name": "text-classification", "apply_deepspeed": "true", "deepspeed_stage": "3"}, "full", "deepspeed"),
    ({"task_name": "text-classification", "apply_deepspeed": False, "deepspeed_stage": "2"}, "full", "single"),
    ({"task_name": "text-classification", "number_of_gpu_to_use_finetuning": 1, "num_nodes_finetune": 1}, "full", "single"),
    ({"task_name": "text-classification", "number_of_gpu_to_use_finetuning": 4, "num_nodes_finetune": 1}, "full", "ddp"),
    ({"TASK": "text_generation", "FULL_FINE_TUNING": "True", "r": 8, "alpha": 16}, "full", "single"),
    ({"TASK": "text_generation", "DDP": "False", "num_nodes": 2}, "full", "single"),
    ({"TASK": "text_generation", "PEFT_METHOD": "LoRA", "FSDP": True, "mixed_precision": "bf16",
      "fsdp_backward_prefetch_policy": "BACKWARD_PRE", "num_processes": 2}, "lora", "fsdp"),
])
def test_switches_decide_not_the_presence_of_their_parameters(params: dict, method: str, backend: str) -> None:
    config, notes, run = imported(params)
    assert (run.method.name, run.backend.name) == (method, backend), (config, notes)
    if backend == "deepspeed":
        assert run.backend_params.deepspeed_stage == 3
    if backend == "ddp":
        assert run.backend_params.nproc_per_node == 4
    if backend == "fsdp":
        assert (run.training.precision, run.backend_params.backward_prefetch, run.backend_params.nproc_per_node) == \
            ("bf16", "BACKWARD_PRE", 2)
    assert not any(n.endswith("no adapt equivalent; dropped") for n in notes), notes
    if params.get("apply_lora") == "false":
        assert any(n.startswith("lora_r: LoRA is off") for n in notes)


def test_the_image_components_deepspeed_config_is_the_users_file() -> None:
    _, _, run = imported({"task_name": "image-classification", "apply_deepspeed": True, "deepspeed_config": "ds.json"})
    assert (run.backend.name, run.backend_params.deepspeed) == ("deepspeed", "ds.json")


def test_nyuntam_layouts_keep_their_meaning() -> None:
    # subtask ner under text_classification is token classification; eval_metric is a note, not a loss of meaning
    config, notes, run = imported({"TASK": "text_classification", "subtask": "ner", "PEFT_METHOD": "LoRA"})
    assert (run.task.name, run.task_params.subtask) == ("token_classification", "ner")
    _, notes, run = imported({"TASK": "summarization", "eval_metric": "bleu"})
    assert "bleu" in run.task.metrics and any("ROUGE and BLEU" in n for n in notes)
    # nested groups: the training batch size is not the preprocessing batch size
    config, _, run = imported({"TASK": "text_generation", "TRAINING_ARGS": {"BATCH_SIZE": 8, "LR": 1e-3, "EPOCHS": 1},
                               "DATASET_ARGS": {"CUSTOM_DATASET_PATH": "data", "TRAIN_DIR": "train.jsonl"}})
    assert (run.training.per_device_train_batch_size, run.config.data.batch_size) == (8, 1000)
    assert run.config.data.train == "data/train.jsonl"
    # empty values are nyuntam's defaults; INTERVAL_STEPS sets evaluation, saving and logging
    config, _, run = imported({"TASK": "object_detection", "PEFT_METHOD": "SSF", "T_MAX": None, "WARMUP": "",
                               "INTERVAL": "steps", "INTERVAL_STEPS": 4, "SCHEDULER_TYPE": "CosineAnnealingLR",
                               "cfg_options": True, "train_ann_file": "a.json"})
    t = run.training
    assert (t.evaluation_strategy, t.save_steps, t.eval_steps, t.logging_steps) == ("steps", 4, 4, 4)
    assert t.lr_scheduler_type == "cosine" and "T_MAX" not in config.get("task_params", {})
    _, notes, run = imported({"TASK": "object_detection", "SCHEDULER_TYPE": "MultiStepLR", "MILESTONES": [8, 11],
                              "train_ann_file": "a.json", "compute_environment": "LOCAL_MACHINE"})
    assert (run.training.lr_scheduler_type, run.task_params.MILESTONES) == ("constant", [8, 11])
    assert any(n.startswith("compute_environment: an accelerate launcher setting") for n in notes)


def test_hugging_face_names_are_accepted() -> None:
    from adapt.config import parse_config

    cfg = parse_config({"task": "text_classification", "training": {"eval_strategy": "steps", "bf16": True,
                                                                    "optim_args": "momentum=0.9,nesterov=True"}})
    t = cfg.training
    assert (t.evaluation_strategy, t.precision, t.extra_optim_args) == ("steps", "bf16", "momentum=0.9; nesterov=True")


@pytest.mark.parametrize(("config", "message"), [
    ({"task": "object_detection", "training": {"optim": "paged_adamw_32bit"}},
     "training.optim: 'paged_adamw_32bit' is an HF Trainer optimizer that MMEngine tasks cannot use"),
    ({"task": "object_detection", "training": {"lr_scheduler_type": "cosine_with_restarts"}},
     "'cosine_with_restarts' is not available for MMEngine tasks"),
    ({"task": "text_classification", "data": {"validation": "v.jsonl"},
      "training": {"evaluation_strategy": "steps", "eval_steps": 30, "save_strategy": "steps", "save_steps": 50}},
     "save_steps (50) must be a multiple of the evaluation interval (30 steps)"),
    ({"task": "text_classification", "method": "dora", "method_params": {"load_in_8bit": True}},
     "DoRA on an 8-bit base does not work"),
    ({"task": "text_classification", "data": {"train": "t.jsonl"}, "training": {"apply_early_stopping": True}},
     "training.apply_early_stopping needs evaluations"),
    ({"task": "object_detection", "data": {"train": "t.json", "validation_split": 0.2}},
     "data.validation_split: task object_detection takes validation data as its own file"),
])
def test_validate_reports_what_training_would_refuse(config: dict, message: str, tmp_path) -> None:
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = run_adapt("config", "validate", "run.yaml", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result


def test_validate_names_what_only_this_machine_refuses(tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU machine runs these")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"task": "object_detection", "training": {"precision": "16"}}))
    result = run_adapt("config", "validate", "run.yaml", cwd=tmp_path)
    assert result.returncode == 0, result
    assert "note: valid, but this machine would refuse it: amp / training.precision 16" in result.stderr
