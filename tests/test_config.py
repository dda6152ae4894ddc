"""RunConfig: spec names and defaults, overrides, and one clear message per bad input."""

from __future__ import annotations

import re

import pytest
from adapt.config import RunConfig, TrainingConfig, apply_override, parse_config, read_yaml
from adapt.errors import ConfigError, PluginError
from adapt.plugins import Registry
from adapt.resolve import resolve

# Defaults of the Azure ML fine-tune component tables (docs/migration.md): what an imported file says
# where the source file says nothing, whatever adapt's own defaults are.
SPEC_DEFAULTS = {
    "num_train_epochs": 1, "max_steps": -1, "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1, "auto_find_batch_size": False, "optim": "adamw_hf",
    "learning_rate": 2e-5, "warmup_steps": 0, "weight_decay": 0.0, "adam_beta1": 0.9,
    "adam_beta2": 0.999, "adam_epsilon": 1e-8, "gradient_accumulation_steps": 1,
    "lr_scheduler_type": "linear", "precision": "32", "seed": 42, "enable_full_determinism": False,
    "dataloader_num_workers": 0, "ignore_mismatched_sizes": True, "max_grad_norm": 1.0,
    "evaluation_strategy": "epoch", "evaluation_steps_interval": 0.0, "eval_steps": 500,
    "save_total_limit": -1, "metric_for_best_model": "loss", "apply_early_stopping": False,
    "early_stopping_patience": 1, "early_stopping_threshold": 0.0, "resume_from_checkpoint": False,
    "gradient_checkpointing": False, "label_smoothing_factor": 0.0,
}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_an_imported_azure_file_keeps_the_spec_defaults(method: str) -> None:
    from adapt.migrate import import_config

    config, notes = import_config({"task_name": "text-classification", "pytorch_model_path": "m",
                                   "train_file_path": "t.jsonl", "apply_lora": method == "lora"})
    run = resolve(parse_config(config), purpose="validate")
    assert run.method.name == method
    assert {k: getattr(run.training, k) for k in SPEC_DEFAULTS} == SPEC_DEFAULTS
    assert run.defaults == {}, "nothing left for adapt to choose"
    assert any("Azure ML's defaults" in note for note in notes)


def test_training_config_defaults_are_hf_training_arguments() -> None:
    from transformers import TrainingArguments

    hf = TrainingArguments(output_dir="unused")
    for name in ("num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size", "learning_rate",
                 "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "seed"):
        assert getattr(TrainingConfig(), name) == getattr(hf, name), name
    assert TrainingConfig().optim == hf.optim.value


def test_method_and_task_defaults_are_chosen_unless_set() -> None:
    run = resolve(parse_config(minimal(method="lora")), purpose="validate")
    t = run.training
    assert (t.learning_rate, t.per_device_train_batch_size, t.per_device_eval_batch_size) == (3e-3, 16, 64)
    assert run.defaults["learning_rate"] == "method lora's default for transformer text models"
    assert run.defaults["per_device_train_batch_size"] == "task text_classification's default"
    full = resolve(parse_config(minimal(method="full")), purpose="validate")
    assert full.training.learning_rate == 5e-5
    mine = resolve(parse_config(minimal(method="lora", training={"learning_rate": 2e-5, "per_device_train_batch_size": 4})),
                   purpose="validate")
    assert (mine.training.learning_rate, mine.training.per_device_train_batch_size) == (2e-5, 4)
    assert "learning_rate" not in mine.defaults and "per_device_train_batch_size" not in mine.defaults
    assert mine.defaults["per_device_eval_batch_size"] == "task text_classification's default"


def test_a_worker_config_resolves_to_the_same_choices() -> None:
    """What a launcher writes for its workers (resolved_dict(chosen=False)) leaves adapt's choices
    out, so each worker chooses them again and knows they were not the user's (min_steps, the log)."""
    run = resolve(parse_config(minimal(method="lora", training={"num_train_epochs": 2})), purpose="validate")
    data = run.resolved_dict(chosen=False)
    assert data["training"] == {"num_train_epochs": 2.0}
    worker = resolve(parse_config(data), purpose="validate")
    assert worker.defaults == run.defaults and worker.defaults["learning_rate"].startswith("method lora's")
    assert worker.training == run.training
    assert "learning_rate" not in worker.training.model_fields_set
    assert run.resolved_dict()["training"]["learning_rate"] == 3e-3  # config.yaml shows every value


@pytest.mark.parametrize(("model", "kind", "rate"), [("vit_tiny_patch16_224", "vit", 5e-5),
                                                      ("deit_small_patch16_224", "vit", 5e-5),
                                                      ("efficientnet_lite0", "cnn", 1e-3), ("resnet18", "cnn", 1e-3)])
def test_image_models_get_the_defaults_of_their_kind(model: str, kind: str, rate: float) -> None:
    config = parse_config({"task": "image_classification", "method": "full", "model": model, "data": {"train": "t"}})
    run = resolve(config, purpose="validate")
    assert run.task.model_kind(config) == kind
    assert run.training.learning_rate == rate
    assert run.training.num_train_epochs == 10


def test_a_saved_folder_model_kind_is_read_from_its_files(tmp_path) -> None:
    import json

    from adapt.plugins import get_registry

    task = get_registry().get("task", "image_classification")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "timm.json").write_text(json.dumps({"architecture": "convnext_tiny"}))
    for folder, kind in (("hf", "vit"), ("timm", "cnn")):
        config = parse_config({"task": "image_classification", "model": str(tmp_path / folder)})
        assert task.model_kind(config) == kind


def minimal(**extra: object) -> dict:
    return {"task": "text_classification", "model": "m", "data": {"train": "t.jsonl"}, **extra}


def test_model_string_and_spec_alias() -> None:
    assert parse_config(minimal()).model.path == "m"
    cfg = parse_config(minimal(model={"pytorch_model_path": "folder"}))
    assert cfg.model.path == "folder"


def test_unknown_key_suggests_the_close_name() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(minimal(training={"lerning_rate": 1e-4}))
    message = str(err.value)
    assert "unknown key training.lerning_rate" in message
    assert "did you mean learning_rate" in message


def test_azure_ml_names_say_where_they_went() -> None:
    with pytest.raises(ConfigError, match="method: lora"):
        parse_config(minimal(training={"apply_lora": True}))
    with pytest.raises(ConfigError, match="ONNX Runtime training"):
        parse_config(minimal(training={"apply_ort": True}))
    with pytest.raises(ConfigError, match="backend: deepspeed"):
        parse_config(minimal(apply_deepspeed=True))


def test_wrong_type_and_out_of_range_name_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(minimal(training={"num_train_epochs": "many", "learning_rate": -1}))
    message = str(err.value)
    assert "training.num_train_epochs" in message and "'many'" in message
    assert "training.learning_rate" in message and "greater than 0" in message


def test_enum_lists_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match="'epoch', 'steps' or 'no'|epoch.*steps"):
        parse_config(minimal(training={"evaluation_strategy": "sometimes"}))


def test_extra_optim_args_format() -> None:
    cfg = parse_config(minimal(training={"extra_optim_args": "momentum=0.5;nesterov=True"}))
    assert cfg.training.extra_optim_args == "momentum=0.5; nesterov=True"
    with pytest.raises(ConfigError, match="training.extra_optim_args.*key=value"):
        parse_config(minimal(training={"extra_optim_args": "momentum"}))


def test_strategy_no_survives_yaml() -> None:
    data = minimal()
    apply_override(data, "training.save_strategy=no")
    apply_override(data, "training.evaluation_strategy=no")
    cfg = parse_config(data)
    assert cfg.training.save_strategy == "no" and cfg.training.evaluation_strategy == "no"


def test_resume_accepts_the_spec_strings() -> None:
    cfg = parse_config(minimal(training={"resume_from_checkpoint": "true"}))
    assert cfg.training.resume_from_checkpoint is True


def test_overrides_are_typed_yaml_values() -> None:
    data = minimal()
    apply_override(data, "training.learning_rate=1e-4")
    apply_override(data, "training.apply_early_stopping=true")
    apply_override(data, "savers=[state_dict, safetensors]")
    apply_override(data, "model.revision=main")
    cfg = parse_config(data)
    assert cfg.training.learning_rate == 1e-4 and cfg.training.apply_early_stopping is True
    assert cfg.savers == ["state_dict", "safetensors"] and cfg.model.path == "m"
    assert cfg.model.revision == "main"
    with pytest.raises(ConfigError, match="dotted.key=value"):
        apply_override(data, "nonsense")


def test_yaml_errors_name_file_and_line(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: text_classification\ntraining:\n  learning_rate: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML at line \d+"):
        read_yaml(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        read_yaml(listing)
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "missing.yaml")


def test_resolve_validates_plugin_sections() -> None:
    cfg = parse_config(minimal(method="lora", method_params={"r": 0, "bogus": 1}))
    with pytest.raises(ConfigError) as err:
        resolve(cfg)
    message = str(err.value)
    assert "method_params.r" in message and "method_params.bogus" in message
    assert re.search(r"method lora takes: .*\br, alpha, dropout\b", message), message


def test_resolve_accepts_azure_ml_lora_aliases() -> None:
    run = resolve(parse_config(minimal(method="lora", method_params={"lora_r": 4, "lora_alpha": 8})))
    assert run.method_params.r == 4 and run.method_params.alpha == 8


def test_unknown_plugin_names_say_what_is_installed_and_who_provides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPT_DISABLE_PLUGINS", "mlflow,backends,vision")
    without = Registry().load()  # a fresh registry: the default one may be cached by an earlier test
    with pytest.raises(PluginError) as err:
        resolve(parse_config(minimal(task="object_detection")), without)
    message = str(err.value)
    assert "unknown task 'object_detection'" in message and "text_classification" in message
    assert "adapt-vision" in message
    with pytest.raises(PluginError, match="unknown method 'tuning'"):
        resolve(parse_config(minimal(method="tuning")), without)
    with pytest.raises(PluginError, match="adapt-backends"):
        resolve(parse_config(minimal(backend="ddp")), without)
    with pytest.raises(PluginError, match="adapt-mlflow"):
        resolve(parse_config(minimal(savers=["mlflow"])), without)
    with pytest.raises(PluginError, match="mlflow_model_path.*adapt-mlflow"):
        resolve(parse_config(minimal(model={"mlflow_model_path": "mlmodel"}), registry=without), without)


def test_metric_for_best_model_must_be_a_task_metric() -> None:
    with pytest.raises(ConfigError, match="allowed: loss, accuracy, f1_macro"):
        resolve(parse_config(minimal(training={"metric_for_best_model": "bleu"})))
    run = resolve(parse_config(minimal(training={"metric_for_best_model": "eval_mcc"})))
    assert run.config.training.metric_for_best_model == "eval_mcc"


def test_conflicting_options_fail_early() -> None:
    with pytest.raises(ConfigError, match="apply_early_stopping needs evaluations"):
        resolve(parse_config(minimal(training={"apply_early_stopping": True})))
    with pytest.raises(ConfigError, match="must match evaluation_strategy"):
        resolve(parse_config(minimal(data={"train": "t", "validation": "v"},
                                     training={"save_strategy": "steps"})))
    with pytest.raises(ConfigError, match="no training data"):
        resolve(parse_config({"task": "text_classification", "model": "m"}))
    with pytest.raises(ConfigError, match="no model to adapt"):
        resolve(parse_config({"task": "text_classification", "data": {"train": "t"}}))


def test_every_field_is_documented() -> None:
    for model in (RunConfig, TrainingConfig):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
