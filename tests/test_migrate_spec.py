"""Migration keeps meaning, table-driven from the documents of the systems adapt replaces
(tests/migration/spec_parameters.json, parsed from them by tests/migration/spec.py): each Azure ML
component's whole default parameter set, the finetune pipeline's for each of its tasks, and
nyuntam's documented parameter blocks with their defaults import to a config that validates and
resolves to what the source system would run; every enum value imports too, or is refused with
the true reason; and no parameter a document names is 'no adapt equivalent'."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from adapt.config import TrainingConfig, parse_config
from adapt.errors import AdaptError
from adapt.lifecycle import validate
from adapt.migrate import AZURE, import_config
from adapt.resolve import resolve

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "migration"))
import spec  # noqa: E402

TABLE = json.loads(spec.TABLE.read_text(encoding="utf-8"))
SPEC_FOLDER = HERE.parent.parent / "shared" / "spec"  # the workspace's copy of the documents (not in the repository)
INPUTS = {  # the inputs a component needs to run at all (files, folders, the model): not parameters with defaults
    "model": "./model", "train": "train.jsonl", "validation": "validation.jsonl"}
AZURE_COMPONENTS = {"text-classification-finetune.md": ["text_classification"],
                    "question-answering-finetune.md": ["question_answering"],
                    "image-classification-finetune.md": ["image_classification"],
                    "finetune-pipeline.md": ["text_generation", "text_classification", "token_classification",
                                             "question_answering", "summarization", "translation"]}
AZURE_TASKS = {"text_classification": "text-classification", "question_answering": "question-answering",
               "image_classification": "image-classification", "text_generation": "text-generation",
               "token_classification": "token-classification", "summarization": "summarization",
               "translation": "translation"}


def typed(text: str | None) -> Any:
    """A default as the document writes it, read as a YAML / JSON parameter file would."""
    return None if text is None else yaml.safe_load(text)


def azure_defaults(file: str, task: str) -> dict[str, Any]:
    params = {name: typed(row["default"]) for name, row in TABLE[file].items() if row["default"] is not None}
    params.update({"task_name": AZURE_TASKS[task], "model_path" if file.startswith("image") else "pytorch_model_path":
                   INPUTS["model"], "train_file_path": INPUTS["train"], "validation_file_path": INPUTS["validation"]})
    params.pop("deepspeed", None)  # a config file input (the pipeline's document gives it the default "true")
    return params


def resolved(config: dict[str, Any]) -> tuple[Any, list[str]]:
    run = resolve(parse_config(config), purpose="validate")
    return run, validate(run)


def check_notes(notes: list[str], names: set[str]) -> None:
    unexplained = [n for n in notes if n.endswith("no adapt equivalent; dropped") and n.split(":")[0].lower() in names]
    assert not unexplained, unexplained


@pytest.mark.skipif(not SPEC_FOLDER.is_dir(), reason="the spec documents live in the project's workspace, not the repository")
def test_the_table_lists_every_parameter_the_documents_name() -> None:
    assert spec.parse(SPEC_FOLDER) == TABLE, "regenerate: python tests/migration/spec.py ../shared/spec"


def test_the_table_holds_every_document() -> None:
    assert set(TABLE) == set(spec.FILES)
    assert sum(len(rows) for rows in TABLE.values() if "adapt-algorithms.md" not in rows) > 150


CASES = [(file, task) for file, tasks in AZURE_COMPONENTS.items() for task in tasks]


@pytest.mark.parametrize(("file", "task"), CASES, ids=[f"{f.split('-finetune')[0]}-{t}" for f, t in CASES])
def test_an_azure_ml_default_set_means_the_same(file: str, task: str) -> None:
    params = azure_defaults(file, task)
    config, notes = import_config(params)
    run, machine = resolved(config)
    check_notes(notes, set(params))
    assert (run.task.name, run.method.name, run.backend.name) == (task, "full", "single"), notes  # apply_lora false
    t = run.training
    for name, value in params.items():  # every training parameter the component sets, as adapt will run it
        field = name if name in TrainingConfig.model_fields else AZURE.get(name, "").removeprefix("training.")
        if field in TrainingConfig.model_fields and field != "optim":
            expected = TrainingConfig.model_validate({field: value}).model_dump()[field]
            assert getattr(t, field) == expected, (name, value, getattr(t, field))
    # the image component chooses by task and model, as adapt does (adamw_torch: adapt's default)
    assert t.optim == params.get("optim", params.get("optimizer", "adamw_torch_fused" if file.startswith("image") else "adamw_hf"))
    assert machine == []
    if "max_seq_length" in params:  # -1: the model's maximum, under the task's own name
        lengths = run.task_params.model_dump()
        assert -1 in lengths.values(), lengths


ENUM_CASES = [(file, task, name, value) for file, tasks in AZURE_COMPONENTS.items() for task in tasks[:1]
              for name, row in TABLE[file].items() for value in row["enum"] if typed(row["default"]) != typed(value)]


@pytest.mark.parametrize(("file", "task", "name", "value"), ENUM_CASES,
                         ids=[f"{f.split('-finetune')[0]}-{n}={v}" for f, _, n, v in ENUM_CASES])
def test_every_enum_value_imports_or_is_refused_with_the_reason(file: str, task: str, name: str, value: str) -> None:
    params = {**azure_defaults(file, task), name: typed(value)}
    if name == "task_name":
        task = value.replace("-", "_")
    config, notes = import_config(params)
    check_notes(notes, set(params))
    try:
        run, _ = resolved(config)
    except AdaptError as exc:  # refused: the message names the parameter and why
        target = name if name in TrainingConfig.model_fields else AZURE.get(name, name).split(".")[-1]
        assert target in str(exc), (name, value, str(exc))
        # the true reasons: iou is a multi-label metric; checkpoints and evaluations at different times
        # cannot keep the best model (the HF Trainer refuses that pairing too)
        reasons = (value.startswith("iou") and task == "image_classification",
                   "must match evaluation_strategy" in str(exc) and "save_strategy" in params)
        assert any(reasons), f"{name}={value} refused: {exc}"
        return
    if name in ("apply_lora",):
        assert run.method.name == "lora"
    elif name == "apply_deepspeed":
        assert run.backend.name == "deepspeed"
    elif name == "apply_ort":
        assert any("ONNX Runtime" in n for n in notes)
    elif name in ("optim", "optimizer") and value == "adamw_ort_fused":
        assert any("ONNX Runtime's optimizer" in n for n in notes)
    elif name == "precision":
        assert run.training.precision == value
    elif name == "task_name":
        assert run.task.name == task


def nyuntam_block(section: str) -> dict[str, Any]:
    return {name: typed(row["default"]) for name, row in TABLE["adapt-algorithms.md"][section].items()
            if row["default"] is not None}


NYUNTAM_TASKS = {"Text Generation": "text_generation", "Text Classification": "text_classification",
                 "Summarization": "summarization", "Translation": "translation",
                 "nyuntam_adapt support span detection in question answering.": "question_answering",
                 "Image Classification": "image_classification", "Object Detection": "object_detection",
                 "Instance Segmentation": "instance_segmentation", "Pose Detection": "pose_detection"}
METHODS = {"LoRA (Low Rank Adaptation)": ("LoRA", "lora"), "DoRA (Weight-Decomposed Low-Rank Adaptation)": ("DoRA", "dora")}


@pytest.mark.parametrize("section", list(NYUNTAM_TASKS))
@pytest.mark.parametrize("method", list(METHODS))
def test_nyuntam_documented_blocks_mean_the_same(section: str, method: str) -> None:
    task = NYUNTAM_TASKS[section]
    params = {**nyuntam_block("Common Training Parameters"), **nyuntam_block(method), **nyuntam_block(section),
              "PEFT_METHOD": METHODS[method][0], "TASK": task, "MODEL_PATH": INPUTS["model"],
              "LAST_LAYER_TUNING": True}
    if "train_ann_file" not in params:
        params["DATASET_ARGS"] = {"TRAIN": INPUTS["train"]}
    if task == "text_generation":
        params["flash_attention2"] = False  # the document's default reads "Fasle"
    config, notes = import_config(params)
    check_notes(notes, {k.lower() for k in params})
    run, machine = resolved(config)
    # nyuntam's instance segmentation block is mmseg's layout (train.txt of names, class_list, palette)
    expected_task = "semantic_segmentation" if section == "Instance Segmentation" else task
    assert (run.task.name, run.method.name, run.backend.name) == (expected_task, METHODS[method][1], "single"), notes
    t = run.training
    assert (t.num_train_epochs, t.learning_rate, t.per_device_train_batch_size, t.optim) == (2, 1e-4, 16, "adamw_torch")
    assert (t.lr_scheduler_type, t.weight_decay, t.adam_beta1, t.adam_beta2, t.adam_epsilon) == ("linear", 0, 0.9, 0.999, 1e-8)
    assert (t.evaluation_strategy, t.save_strategy, t.save_steps, t.eval_steps, t.logging_steps) == ("epoch", "epoch", 100,
                                                                                                     100, 100)
    assert (t.save_total_limit, t.precision, t.gradient_accumulation_steps, t.dataloader_num_workers) == (5, "32", 1, 4)
    assert run.savers[0].name == "state_dict"
    p = run.method_params
    expected = {"LoRA (Low Rank Adaptation)": (8, 16, 0.1), "DoRA (Weight-Decomposed Low-Rank Adaptation)": (16, 8, 0.1)}
    assert (p.r, p.alpha, p.dropout) == expected[method]
    if task in ("object_detection", "instance_segmentation", "pose_detection"):  # MMEngine tasks
        assert (run.task_params.END, run.task_params.checkpoint_interval, run.task_params.WARMUP) == (50, 5, False)
    assert machine == []


@pytest.mark.parametrize("block", ["DDP arguments", "FSDP arguments"])
def test_nyuntam_distributed_blocks(block: str) -> None:
    params = {**nyuntam_block(block), "TASK": "text_generation", "MODEL_PATH": INPUTS["model"],
              "DATASET_ARGS": {"TRAIN": INPUTS["train"]}, "PEFT_METHOD": "LoRA"}
    config, notes = import_config(params)
    check_notes(notes, {k.lower() for k in params})
    run, machine = resolved(config)
    if block == "DDP arguments":
        assert (run.backend.name, run.backend_params.num_nodes) == ("ddp", 1)
    else:  # FSDP through accelerate: 2 processes, bf16, the FSDP options the engine can honour
        p = run.backend_params
        assert (run.backend.name, p.nproc_per_node, p.num_nodes, run.training.precision) == ("fsdp", 2, 1, "bf16")
        assert (p.sharding_strategy, p.state_dict_type, p.cpu_ram_efficient_loading) == ("FULL_SHARD",
                                                                                        "SHARDED_STATE_DICT", True)
        import torch

        if not torch.cuda.is_available():  # valid, but this machine cannot run FSDP for HF tasks
            assert machine and "needs CUDA GPUs" in machine[0]
