"""adapt config import: Azure ML and nyuntam parameter sets become adapt configs."""

from __future__ import annotations

import yaml
from adapt.migrate import import_config
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
    assert config["training"] == {"num_train_epochs": 3, "learning_rate": 1e-4, "per_device_train_batch_size": 8,
                                  "metric_for_best_model": "f1_macro"}
    assert config["task_params"] == {"max_seq_length": 128}
    assert len(messages) == 2
    assert any(m.startswith("compute_finetune: Azure ML compute") for m in messages)
    assert any(m.startswith("apply_ort: ONNX Runtime") for m in messages)


def test_nyuntam_config() -> None:
    config, messages = import_config(NYUNTAM)
    assert config["task"] == "text_generation" and config["method"] == "qlora"  # LoRA + load_in_4bit
    assert config["model"] == {"path": "./llama"} and config["data"] == {"train": "t.jsonl"}
    assert config["method_params"] == {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    assert config["training"] == {"num_train_epochs": 2, "learning_rate": 1e-4, "per_device_train_batch_size": 4}
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
