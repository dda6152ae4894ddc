"""The command line: lazy imports, config show / validate, and clean errors."""

from __future__ import annotations

import subprocess
import sys

import yaml
from adapt.config import TrainingConfig
from adapt.testing import run_adapt

HEAVY = ("torch", "transformers", "peft", "datasets", "gradio", "mmengine", "deepspeed")


def _imported_after(*args: str) -> set[str]:
    code = ("import sys\nfrom adapt.cli import app\n"
            f"try:\n    app({list(args)!r})\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    line = [line for line in out.splitlines() if line.startswith("HEAVY:")][-1]
    return {m for m in line.removeprefix("HEAVY:").split(",") if m}


def test_help_and_plugins_do_not_import_heavy_libraries() -> None:
    assert _imported_after("--help") == set()
    assert _imported_after("plugins") == set()
    assert _imported_after("config", "show", "--task", "text_classification", "--method", "lora") == set()


def test_config_show_is_complete_commented_yaml() -> None:
    result = run_adapt("config", "show", "--task", "text_classification", "--method", "lora")
    assert result.returncode == 0, result
    assert "# Initial learning rate (peak, after warmup)." in result.stdout
    data = yaml.safe_load(result.stdout)
    assert data["task"] == "text_classification" and data["method"] == "lora"
    # TrainingConfig's defaults, except what adapt chooses for this task and method, each said with why
    chosen = {"learning_rate": 3e-3, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64}
    assert data["training"] == {**TrainingConfig().model_dump(mode="json"), **chosen}
    assert "# method lora's default for transformer text models (TrainingConfig's own: 5.0e-05)\n  learning_rate: 0.003" \
        in result.stdout
    assert data["method_params"]["r"] == 8 and data["method_params"]["merge_weights"] is True
    assert data["task_params"]["text_column"] == "text"
    # what it prints is itself a valid config
    assert set(data) >= {"task", "method", "backend", "model", "data", "training", "task_params"}


def test_config_show_output_validates(tmp_path) -> None:
    shown = run_adapt("config", "show", "--task", "text_classification", "--method", "lora").stdout
    path = tmp_path / "run.yaml"
    path.write_text(shown)
    result = run_adapt("config", "validate", str(path))
    assert result.returncode == 0, result
    assert "valid (task text_classification, method lora, backend single" in result.stdout


def test_config_validate_bad_file_exits_2_without_traceback(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("task: text_classification\ntraining:\n  num_train_epochs: -3\n  lerning_rate: 1\n")
    result = run_adapt("config", "validate", str(path))
    assert result.returncode == 2
    assert "training.num_train_epochs" in result.stderr and "did you mean learning_rate" in result.stderr
    assert str(path) in result.stderr and "Traceback" not in result.stderr


def test_train_without_task_says_how_to_give_one() -> None:
    result = run_adapt("train")
    assert result.returncode == 2 and "no task: give --task" in result.stderr


def test_unknown_method_on_the_command_line(tmp_path) -> None:
    result = run_adapt("train", "--task", "text_classification", "--method", "prefix_tuning", "--model", "m",
                       "--train", "t.jsonl", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown method 'prefix_tuning'" in result.stderr and "lora" in result.stderr
    assert "Traceback" not in result.stderr


def test_deepspeeds_cpu_notice_is_filtered_and_its_other_warnings_kept() -> None:
    """DeepSpeed, imported by transformers / MMEngine even when unused, announces on every start
    without a GPU that it chose the CPU; adapt's logging drops that one message only."""
    import logging

    from adapt.logs import setup_logging

    setup_logging()
    deepspeed = logging.getLogger("DeepSpeed")
    make = lambda text: logging.LogRecord("DeepSpeed", logging.WARNING, __file__, 1, text, None, None)  # noqa: E731
    assert not deepspeed.filter(make("Setting accelerator to CPU. If you have GPU or other accelerator, ..."))
    assert deepspeed.filter(make("ZeRO-3 is not supported with this optimizer"))
