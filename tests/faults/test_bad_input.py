"""Bad input, table-driven: each case is one clear message naming the input and what is
expected, exit code 2, no traceback, and nothing written before is lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from adapt.testing import install_fake_plugin, run_adapt

GOOD = {"task": "text_classification", "method": "lora", "training": {"max_steps": 1}}


def config(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(GOOD))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


# id -> (config changes or raw YAML text, extra CLI args, files to create, expected message parts)
CASES: dict[str, tuple[Any, list[str], dict[str, str], list[str]]] = {
    "malformed-yaml": ("task: [text_classification\n", [], {}, ["run.yaml is not valid YAML at line"]),
    "not-a-mapping": ("- task\n- method\n", [], {}, ["must hold a mapping"]),
    "unknown-top-key": (config(tsak="x"), [], {}, ["unknown key tsak"]),
    "unknown-training-key": (config(training__lerning_rate=1), [], {}, ["unknown key training.lerning_rate", "did you mean learning_rate"]),
    "wrong-type": (config(training__num_train_epochs="many"), [], {}, ["training.num_train_epochs", "'many'"]),
    "out-of-range": (config(training__learning_rate=-1), [], {}, ["training.learning_rate", "greater than 0"]),
    "bad-enum": (config(training__evaluation_strategy="often"), [], {}, ["training.evaluation_strategy", "'epoch'"]),
    "unknown-task": (config(task="sentiment_regression"), [], {}, ["unknown task 'sentiment_regression'", "text_classification"]),
    "unknown-method": (config(method="prompt_tuning"), [], {}, ["unknown method 'prompt_tuning'", "lora"]),
    "unknown-backend": (config(backend="horovod"), [], {}, ["unknown backend 'horovod'", "Installed backends: ddp, deepspeed, fsdp, single"]),
    "unknown-saver": (config(savers=["onnx"]), [], {}, ["unknown saver 'onnx'", "safetensors"]),
    "mlflow-not-installed": (config(save_as_mlflow_model=True), [], {}, ["save_as_mlflow_model", "adapt-mlflow"]),
    "no-train-data": (config(), ["--model", "MODEL"], {}, ["no training data"]),
    "no-model": (config(), ["--train", "TRAIN"], {}, ["no model to adapt"]),
    "unknown-method-param": (config(method_params={"rank": 4}), [], {}, ["unknown key method_params.rank", "method lora takes"]),
    "method-param-range": (config(method_params={"r": 0}), [], {}, ["method_params.r", "greater than or equal to 1"]),
    "task-param-type": (config(task_params={"max_seq_length": "long"}), [], {}, ["task_params.max_seq_length"]),
    "metric-not-of-task": (config(training__metric_for_best_model="bleu"), [], {}, ["metric_for_best_model", "allowed: loss, accuracy"]),
    "early-stop-no-eval": (config(training__apply_early_stopping=True), ["--model", "MODEL", "--train", "TRAIN"], {},
                           ["apply_early_stopping needs evaluations"]),
    "save-strategy-conflict": (config(training__save_strategy="steps"), ["--model", "MODEL", "--train", "TRAIN",
                               "--validation", "VALIDATION"], {}, ["save_strategy 'steps' must match evaluation_strategy"]),
    "apply-ort": (config(training__apply_ort=True), [], {}, ["ONNX Runtime training", "transformers 5"]),
    "azure-name": (config(apply_lora=True), [], {}, ["unknown key apply_lora", "method: lora"]),
    "bad-set": (config(), ["--set", "training.learning_rate"], {}, ["expected dotted.key=value"]),
    "quantization-conflict": (config(method_params={"load_in_4bit": True, "load_in_8bit": True}), [], {}, ["exclude each other"]),
    "bad-optim-args": (config(training__extra_optim_args="momentum"), [], {}, ["extra_optim_args", "key=value"]),
    "resume-not-a-folder": (config(training__resume_from_checkpoint="nowhere/checkpoint-3"),
                            ["--model", "MODEL", "--train", "TRAIN"], {}, ["nowhere/checkpoint-3 is not a checkpoint folder"]),
    "missing-data-file": (config(), ["--model", "MODEL", "--train", "absent.jsonl"], {}, ["absent.jsonl does not exist"]),
    "empty-data-file": (config(), ["--model", "MODEL", "--train", "empty.jsonl"], {"empty.jsonl": ""}, ["empty.jsonl is empty"]),
    "unsupported-format": (config(), ["--model", "MODEL", "--train", "notes.txt"], {"notes.txt": "hello"},
                           ["unsupported file type .txt"]),
    "malformed-jsonl": (config(), ["--model", "MODEL", "--train", "bad.jsonl"], {"bad.jsonl": '{"text": "a", "label": 1}\n{oops\n'},
                        ["bad.jsonl could not be read: line 2 is not valid JSON"]),
    "wrong-columns": (config(), ["--model", "MODEL", "--train", "cols.jsonl"], {"cols.jsonl": '{"sentence": "a", "y": 1}\n'},
                      ["missing column(s) text, label", "found: sentence, y"]),
    "label-outside-set": (config(), ["--model", "MODEL", "--train", "TRAIN", "--validation", "odd.jsonl"],
                          {"odd.jsonl": '{"text": "goal match", "label": "politics"}\n'},
                          ["odd.jsonl, row 1, column label", "'politics' is not in the label set"]),
    "not-a-model": (config(), ["--model", "empty-folder", "--train", "TRAIN"], {"empty-folder/readme.md": "no model"},
                    ["model empty-folder could not be loaded for text classification"]),
    "model-not-local": (config(), ["--model", "org/model-that-is-not-here", "--train", "TRAIN"], {},
                        ["org/model-that-is-not-here could not be loaded"]),
    "output-holds-a-run": (config(), ["--model", "MODEL", "--train", "TRAIN"], {"run/config.yaml": "task: precious\n"},
                           ["run already holds files", "resume_from_checkpoint=true"]),
    "output-is-a-file": (config(), ["--model", "MODEL", "--train", "TRAIN"], {"run": "precious notes\n"},
                         ["output: run exists and is not a folder"]),
    "checkpoint-of-another-model": (config(training__resume_from_checkpoint="OTHER_CHECKPOINT"),
                                    ["--model", "MODEL", "--train", "TRAIN"], {}, ["does not fit this model"]),
    "broken-plugin-task": (config(task="sentiment_plus"), [], {}, ["unknown task 'sentiment_plus'",
                                                                   "Plugins that failed to load", "adapt-broken-pack"]),
}


def other_checkpoint(tmp_path: Path, text_data: dict) -> Path:
    """A real checkpoint of a wider BERT than the tiny one the case trains."""
    from adapt.testing import tiny_bert

    wide = tiny_bert(tmp_path / "wide", hidden_size=64)
    made = run_adapt("train", "--task", "text_classification", "--model", wide, "--train", text_data["train"],
                     "--output", "other", "--set", "training.max_steps=1", "--set", "training.save_strategy=steps",
                     "--set", "training.save_steps=1", cwd=tmp_path)
    assert made.returncode == 0, made
    return tmp_path / "other" / "checkpoints" / "checkpoint-1"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case: str, tiny_bert_dir: str, text_data: dict, tmp_path: Path) -> None:
    source, extra, files, expected = CASES[case]
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    (tmp_path / "run.yaml").write_text(source if isinstance(source, str) else yaml.safe_dump(source))
    substitutions = {"MODEL": tiny_bert_dir, "TRAIN": text_data["train"], "VALIDATION": text_data["validation"]}
    env = {}
    if case == "checkpoint-of-another-model":
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(config(training__resume_from_checkpoint=str(
            other_checkpoint(tmp_path, text_data)))))
    if case == "broken-plugin-task":
        site = install_fake_plugin(tmp_path / "site", "adapt-broken-pack", "adapt_broken_pack", "raise ImportError('no')\n")
        env["PYTHONPATH"] = str(site)
    if case == "mlflow-not-installed":
        env["ADAPT_DISABLE_PLUGINS"] = "mlflow"
    result = run_adapt("train", "--config", "run.yaml", "--output", "run",
                       *[substitutions.get(a, a) for a in extra], cwd=tmp_path, env=env)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error, result.stderr
    for part in expected:
        assert part in result.stderr, (part, result.stderr)
    for path, content in before.items():  # nothing written before is lost
        assert path.read_bytes() == content, path
    if not any(name == "run" or name.startswith("run/") for name in files):
        assert not (tmp_path / "run").exists(), "a run refused on bad input leaves no folder"


def test_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
