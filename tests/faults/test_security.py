"""Loading never runs code or unpickles objects from user paths unless the user says so, and a
run writes only inside its output folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from adapt.plugins import Registry
from adapt.testing import install_fake_plugin, run_adapt


def test_remote_code_in_a_model_folder_does_not_run(tiny_bert_dir: str, text_data: dict, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    marker = tmp_path / "code-ran"
    (model / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_evil.EvilConfig",
                          "AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    result = run_adapt("train", "--task", "text_classification", "--model", str(model), "--train", text_data["train"],
                       "--output", "run", "--set", "training.max_steps=1", cwd=tmp_path)
    assert not marker.exists(), "code shipped with the model ran without trust_remote_code"
    assert result.returncode in (0, 2), result  # transformers ignores the auto_map, or refuses: either way no code
    if result.returncode == 2:
        assert "trust_remote_code" in result.stderr and "Traceback" not in result.stderr


def test_checkpoints_and_state_dicts_load_weights_only(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("unpickled!",))

    torch.save({"weight": Payload()}, tmp_path / "model_state_dict.pt")
    saver = Registry().load().get("saver", "state_dict")
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        saver.load(str(tmp_path), like=torch.nn.Linear(1, 1))


def test_default_saver_is_safetensors_and_remote_code_is_off() -> None:
    from adapt.config import ModelConfig, RunConfig

    assert RunConfig(task="t").savers == ["safetensors"]
    assert ModelConfig().trust_remote_code is False


def test_plugin_names_cannot_become_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = '''
from adapt import Saver, hookimpl

class Escape(Saver):
    name = "../../outside"
    description = "tries to write elsewhere"

@hookimpl
def adapt_register_savers(register):
    register(Escape())
'''
    site = install_fake_plugin(tmp_path / "site", "adapt-escape", "adapt_escape", code)
    monkeypatch.syspath_prepend(str(site))
    registry = Registry().load()
    assert "../../outside" not in registry.objects["saver"]
    assert "needs a name that is a Python identifier" in registry.plugins["adapt_escape"].errors[0]


@pytest.mark.slow
def test_a_run_writes_only_inside_its_output_folder(tiny_bert_dir: str, text_data: dict, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result = run_adapt("train", "--task", "text_classification", "--method", "lora", "--model", tiny_bert_dir,
                       "--train", text_data["train"], "--validation", text_data["validation"], "--output", "out/run",
                       "--saver", "safetensors", "--saver", "state_dict", "--saver", "save_pretrained",
                       "--set", "training.max_steps=2", "--set", "training.eval_steps=1",
                       "--set", "training.evaluation_strategy=steps", cwd=work)
    assert result.returncode == 0, result
    written = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
    # besides the run folder, only the tracking store (adapt-mlflow's documented default: ./mlflow.db, ./mlartifacts/)
    outside = [p for p in written if not p.startswith(("out/run/", "mlartifacts/")) and p != "mlflow.db"]
    assert written and not outside, outside
