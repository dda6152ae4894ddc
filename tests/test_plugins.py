"""Plugin loading: real entry points of fake distributions on sys.path, good and broken."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from adapt.plugins import Registry
from adapt.testing import install_fake_plugin, run_adapt

GOOD = '''
from adapt import Method, hookimpl

class Shout(Method):
    name = "shout"
    description = "A test method."

    def apply(self, model, params, run):
        return model

@hookimpl
def adapt_register_methods(register):
    register(Shout())
'''

CLAIMS_LORA = '''
from adapt import Method, hookimpl

class OtherLora(Method):
    name = "lora"
    description = "Another pack's lora."

@hookimpl
def adapt_register_methods(register):
    register(OtherLora())
'''

UNKNOWN_HOOK = '''
from adapt import hookimpl

@hookimpl
def adapt_register_optimizers(register):
    pass
'''

REGISTERS_CLASS = '''
from adapt import Method, hookimpl

class NotAnInstance(Method):
    name = "oops"

@hookimpl
def adapt_register_methods(register):
    register(NotAnInstance)
'''


def make_dist(site: Path, dist: str, module: str, code: str, version: str = "1.0") -> None:
    install_fake_plugin(site, dist, module, code, version)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    for var in ("ADAPT_LOAD_PLUGINS", "ADAPT_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    return folder


def test_builtins_register_through_the_hooks() -> None:
    registry = Registry().load()
    core = registry.plugins["adapt.builtins"]
    assert core.distribution == "adapt-core"
    assert core.registered["backend"] == ["single"]
    assert set(core.registered["saver"]) == {"state_dict", "safetensors", "full_torch_model", "save_pretrained"}
    assert "adapt_register_savers" in core.hooks


def test_installed_plugin_is_loaded(site: Path) -> None:
    make_dist(site, "adapt-shout", "adapt_shout", GOOD, version="2.3")
    registry = Registry().load()
    info = registry.plugins["adapt_shout"]
    assert (info.distribution, info.version, info.registered) == ("adapt-shout", "2.3", {"method": ["shout"]})
    assert registry.get("method", "shout").name == "shout"


def test_broken_import_is_reported_and_others_still_load(site: Path) -> None:
    make_dist(site, "adapt-broken", "adapt_broken", "import not_a_module_anywhere\n")
    make_dist(site, "adapt-shout", "adapt_shout", GOOD)
    registry = Registry().load()
    assert "No module named 'not_a_module_anywhere'" in registry.plugins["adapt_broken"].errors[0]
    assert "shout" in registry.names("method") and "lora" in registry.names("method")


def test_two_plugins_claiming_one_name_is_an_error_naming_both(site: Path) -> None:
    make_dist(site, "adapt-other-lora", "adapt_other_lora", CLAIMS_LORA)
    registry = Registry().load()
    with pytest.raises(Exception) as err:
        registry.get("method", "lora")
    assert "adapt-methods" in str(err.value) and "adapt-other-lora" in str(err.value)
    assert any("two plugins" in e for e in registry.plugins["adapt_other_lora"].errors)


def test_hook_without_spec_is_caught_at_start_up(site: Path) -> None:
    make_dist(site, "adapt-typo", "adapt_typo", UNKNOWN_HOOK)
    registry = Registry().load()
    errors = registry.plugins["adapt_typo"].errors
    assert errors and "adapt_register_optimizers" in errors[0] and "known hooks" in errors[0]
    assert registry.pm.get_plugin("adapt_typo") is None


def test_registering_a_class_instead_of_an_instance_is_reported(site: Path) -> None:
    make_dist(site, "adapt-oops", "adapt_oops", REGISTERS_CLASS)
    registry = Registry().load()
    assert "instance, not the class" in registry.plugins["adapt_oops"].errors[0]


def test_allowlist_and_disable(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(site, "adapt-shout", "adapt_shout", GOOD)
    monkeypatch.setenv("ADAPT_LOAD_PLUGINS", "adapt-shout")
    registry = Registry().load()
    assert set(registry.plugins) == {"adapt.builtins", "adapt_shout"}
    monkeypatch.setenv("ADAPT_LOAD_PLUGINS", "")
    assert set(Registry().load().plugins) == {"adapt.builtins"}
    monkeypatch.delenv("ADAPT_LOAD_PLUGINS")
    monkeypatch.setenv("ADAPT_DISABLE_PLUGINS", "adapt_shout,nlp")
    names = set(Registry().load().plugins)
    assert "adapt_shout" not in names and "nlp" not in names and "methods" in names
    monkeypatch.setenv("ADAPT_DISABLE_PLUGINS", "1")
    assert set(Registry().load().plugins) == {"adapt.builtins"}


def test_cli_survives_a_broken_plugin_and_lists_it(site: Path, tmp_path: Path) -> None:
    make_dist(site, "adapt-broken", "adapt_broken", "raise RuntimeError('boom at import')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = run_adapt("plugins", "--json", env=env)
    assert result.returncode == 0, result
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert "boom at import" in plugins["adapt_broken"]["errors"][0]
    assert "text_classification" in plugins["nlp"]["tasks"] and not plugins["nlp"]["errors"]
    text = run_adapt("plugins", env=env)
    assert "ERROR: failed to import adapt_broken" in text.stdout


def test_cli_train_with_a_name_claimed_twice_exits_2(site: Path, tmp_path: Path) -> None:
    make_dist(site, "adapt-other-lora", "adapt_other_lora", CLAIMS_LORA)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = run_adapt("config", "show", "--task", "text_classification", "--method", "lora", env=env)
    assert result.returncode == 2
    assert "adapt-methods" in result.stderr and "adapt-other-lora" in result.stderr
    assert "Traceback" not in result.stderr


def test_trace_prints_hook_calls(site: Path) -> None:
    make_dist(site, "adapt-shout", "adapt_shout", GOOD)
    env = {"PYTHONPATH": str(site), "ADAPT_TRACE_PLUGINS": "1"}
    result = run_adapt("plugins", env=env)
    assert "[adapt trace] adapt_register_methods(register) -> adapt_shout" in result.stderr


RECORDER = '''
import json, os
from adapt import hookimpl

def _write(**record):
    with open(os.environ["RECORD_TO"], "a") as handle:
        handle.write(json.dumps(record) + "\\n")

@hookimpl
def adapt_run_started(run):
    _write(hook="started", task=run.task.name, method=run.method.name, output=str(run.output_dir))

@hookimpl
def adapt_metrics_logged(run, metrics, step):
    _write(hook="metrics", step=step, keys=sorted(metrics))

@hookimpl
def adapt_run_finished(run, result):
    _write(hook="finished", status=result["status"])
'''

BROKEN_TRACKER = '''
from adapt import hookimpl

@hookimpl
def adapt_metrics_logged(run, metrics, step):
    raise RuntimeError("tracker down")
'''


def test_lifecycle_hooks_see_the_run(site: Path, tmp_path: Path, tiny_bert_dir: str, text_data: dict) -> None:
    make_dist(site, "adapt-recorder", "adapt_recorder", RECORDER)
    make_dist(site, "adapt-broken-tracker", "adapt_broken_tracker", BROKEN_TRACKER)
    record = tmp_path / "calls.jsonl"
    env = {"PYTHONPATH": str(site), "RECORD_TO": str(record)}
    result = run_adapt("train", "--task", "text_classification", "--model", tiny_bert_dir, "--train", text_data["train"],
                       "--validation", text_data["validation"], "--output", "run", "--set", "training.max_steps=2",
                       "--set", "training.logging_steps=1", "--set", "training.eval_steps=2",
                       "--set", "training.evaluation_strategy=steps", cwd=tmp_path, env=env)
    assert result.returncode == 0, result
    assert "plugin adapt-broken-tracker failed in adapt_metrics_logged: RuntimeError: tracker down" in result.stderr
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls[0] == {"hook": "started", "task": "text_classification", "method": "full", "output": "run"}
    assert calls[-1] == {"hook": "finished", "status": "finished"}
    metrics = [c for c in calls if c["hook"] == "metrics"]
    assert [m["step"] for m in metrics if "loss" in m["keys"]] == [1, 2]
    assert any("eval_accuracy" in m["keys"] for m in metrics)

    record.unlink()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a b"}\n')
    result = run_adapt("train", "--task", "text_classification", "--model", tiny_bert_dir, "--train", str(bad),
                       "--output", "run2", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert [json.loads(line)["hook"] for line in record.read_text().splitlines()] == ["started", "finished"]
    assert json.loads(record.read_text().splitlines()[-1])["status"] == "failed"


EVERY_KIND = '''
from adapt import Backend, Saver, Task, hookimpl

class EchoTask(Task):
    name = "echo"
    description = "A test task."

class LocalBackend(Backend):
    name = "local_test"
    description = "A test backend."

    def launch(self, run_in_worker, run):
        return run_in_worker()

class NullSaver(Saver):
    name = "null_test"
    description = "A test saver."

@hookimpl
def adapt_register_tasks(register):
    register(EchoTask())

@hookimpl
def adapt_register_backends(register):
    register(LocalBackend())

@hookimpl
def adapt_register_savers(register):
    register(NullSaver())
'''


def test_a_pack_registers_tasks_backends_and_savers(site: Path) -> None:
    make_dist(site, "adapt-every-kind", "adapt_every_kind", EVERY_KIND)
    registry = Registry().load()
    info = registry.plugins["adapt_every_kind"]
    assert info.registered == {"task": ["echo"], "backend": ["local_test"], "saver": ["null_test"]}
    assert registry.get("backend", "local_test").launch(lambda: 42, None) == 42
    assert registry.owner("task", "echo").distribution == "adapt-every-kind"
    assert registry.get("saver", "null_test").description == "A test saver."


COMMANDS_AND_SOURCES = '''
import typer
from adapt import hookimpl
from pydantic import BaseModel, Field

def hello(name: str = typer.Option("world", help="Who.")):
    """Say hello (a pack's command)."""
    typer.echo(f"hello {name}")

class ZooReference(BaseModel):  # the reference this pack reads (adapt-mlflow's key, read here from a zoo)
    mlflow_model_path: str | None = Field(None, description="zoo:NAME")

@hookimpl
def adapt_register_commands(cli):
    cli.command("hello")(hello)

@hookimpl
def adapt_register_config(register):
    register(ZooReference, section="model")

@hookimpl
def adapt_model_source(run, reference):
    path = reference.get("mlflow_model_path") or ""
    if path.startswith("zoo:"):
        import os
        return os.environ["ZOO_" + path[4:]]
    return None
'''

BROKEN_COMMAND = '''
from adapt import hookimpl

@hookimpl
def adapt_register_commands(cli):
    raise RuntimeError("no commands today")
'''


def test_packs_add_commands_and_model_sources(site: Path, tmp_path: Path, tiny_bert_dir: str, text_data: dict) -> None:
    make_dist(site, "adapt-zoo", "adapt_zoo", COMMANDS_AND_SOURCES)
    make_dist(site, "adapt-broken-command", "adapt_broken_command", BROKEN_COMMAND)
    env = {"PYTHONPATH": str(site), "ADAPT_LOAD_PLUGINS": "adapt-zoo,adapt-broken-command,adapt-nlp,adapt-methods",
           "ZOO_bert": tiny_bert_dir}
    hello = run_adapt("hello", "--name", "adapt", env=env)
    assert hello.returncode == 0 and hello.stdout == "hello adapt\n", hello
    assert "hello" in run_adapt("--help", env=env).stdout
    listed = run_adapt("plugins", env=env).stdout
    assert "adapt_register_commands raised RuntimeError: no commands today" in listed

    common = ["train", "--task", "text_classification", "--train", text_data["train"], "--set", "training.max_steps=1"]
    result = run_adapt(*common, "--set", "model.mlflow_model_path=zoo:bert", "--output", "run", cwd=tmp_path, env=env)
    assert result.returncode == 0, result
    assert json.loads((tmp_path / "run" / "model" / "adapt.json").read_text())["base_model"] == str(Path(tiny_bert_dir).resolve())
    unknown = run_adapt(*common, "--set", "model.mlflow_model_path=elsewhere", "--output", "run2", cwd=tmp_path, env=env)
    assert unknown.returncode == 2 and "no installed pack can read elsewhere" in unknown.stderr, unknown
    none = run_adapt(*common, "--set", "model.mlflow_model_path=zoo:bert", "--output", "run3", cwd=tmp_path,
                     env={**env, "ADAPT_LOAD_PLUGINS": "adapt-nlp,adapt-methods"})
    assert none.returncode == 2 and "pip install adapt-mlflow" in none.stderr, none


WRAPS = '''
import json, os
from adapt import hookimpl

@hookimpl(wrapper=True)
def adapt_run_finished(run, result):
    yield  # the other plugins' implementations run inside
    with open(os.environ["RECORD_TO"], "a") as handle:
        handle.write(json.dumps({"wrapped": result["status"]}) + "\\n")

@hookimpl(tryfirst=True)
def adapt_model_source(run, reference):
    with open(os.environ["RECORD_TO"], "a") as handle:
        handle.write(json.dumps({"asked": reference["path"]}) + "\\n")
    return None
'''


def test_hooks_are_called_through_pluggy(site: Path, tmp_path: Path, tiny_bert_dir: str, text_data: dict) -> None:
    """wrapper / tryfirst implementations work, a failing plugin still does not stop the others,
    and the trace shows every hook call, model sources included (asked for any model reference)."""
    make_dist(site, "adapt-wraps", "adapt_wraps", WRAPS)
    make_dist(site, "adapt-recorder", "adapt_recorder", RECORDER)
    make_dist(site, "adapt-broken-tracker", "adapt_broken_tracker", BROKEN_TRACKER)
    record = tmp_path / "calls.jsonl"
    env = {"PYTHONPATH": str(site), "RECORD_TO": str(record), "ADAPT_TRACE_PLUGINS": "1"}
    result = run_adapt("train", "--task", "text_classification", "--model", tiny_bert_dir, "--train", text_data["train"],
                       "--output", "run", "--set", "training.max_steps=2", "--set", "training.logging_steps=1",
                       cwd=tmp_path, env=env)
    assert result.returncode == 0, result
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls[0]["hook"] == "started" and calls[1] == {"asked": tiny_bert_dir}
    assert calls[-2:] == [{"hook": "finished", "status": "finished"}, {"wrapped": "finished"}]
    assert "[adapt trace] adapt_model_source(run, reference) -> adapt_wraps" in result.stderr
    assert "plugin adapt-broken-tracker failed in adapt_metrics_logged: RuntimeError: tracker down" in result.stderr


def test_run_folders_written_with_a_pack_reload_without_it(tmp_path: Path, tiny_bert_dir: str, text_data: dict) -> None:
    """A run trained with adapt-mlflow installed (its config holds tracking, save_as_mlflow_model,
    model.mlflow_model_path; its savers mlflow) evaluates and predicts where the pack is absent,
    as run folders written before those settings moved into the pack do; a config that sets the
    pack's keys is refused with one message naming the pack."""
    common = ["--task", "text_classification", "--method", "lora", "--model", tiny_bert_dir, "--train", text_data["train"],
              "--test", text_data["test"], "--set", "training.max_steps=2", "--set", "method_params.merge_weights=false"]
    trained = run_adapt("train", *common, "--output", "run", "--set", "tracking.enabled=false", cwd=tmp_path)
    assert trained.returncode == 0, trained
    info_path = tmp_path / "run" / "model" / "adapt.json"
    info = json.loads(info_path.read_text())
    config = info["config"]
    assert {"tracking", "save_as_mlflow_model"} <= set(config) and "mlflow" in config["savers"]
    # the key order the core wrote before the move (save_as_mlflow_model beside savers, tracking after training)
    order = ["task", "method", "backend", "model", "data", "output", "savers", "save_as_mlflow_model", "training",
             "tracking", "task_params", "method_params", "backend_params"]
    info["config"] = {key: config[key] for key in order}
    info_path.write_text(json.dumps(info))
    without = {"ADAPT_DISABLE_PLUGINS": "mlflow"}
    evaluated = run_adapt("evaluate", "run", "--data", text_data["test"], cwd=tmp_path, env=without)
    assert evaluated.returncode == 0, evaluated
    expected = json.loads((tmp_path / "run" / "test_metrics.json").read_text())["test_loss"]
    assert evaluated.json()["test_loss"] == pytest.approx(expected, abs=1e-5)
    predicted = run_adapt("predict", "run", "--data", text_data["test"], cwd=tmp_path, env=without)
    assert predicted.returncode == 0 and len(predicted.stdout.splitlines()) == 24, predicted

    refused = run_adapt("train", *common, "--output", "run2", "--set", "tracking.enabled=false", cwd=tmp_path, env=without)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused
    assert "unknown key tracking: provided by the adapt-mlflow distribution" in refused.stderr
    assert "pip install adapt-mlflow" in refused.stderr and not (tmp_path / "run2").exists()


ADDS_KEYS = '''
from adapt import hookimpl
from pydantic import BaseModel, Field

class Budget(BaseModel):
    budget_hours: float = Field(1.0, gt=0, description="Stop after this long.")

class Seed(BaseModel):
    seed: int = Field(0, description="Another seed.")

@hookimpl
def adapt_register_config(register):
    register(Budget)
    register(Seed, section="training")
'''


def test_packs_add_config_keys_validated_and_documented_like_the_cores(site: Path) -> None:
    from adapt.config import parse_config
    from adapt.errors import ConfigError, PluginError

    make_dist(site, "adapt-budget", "adapt_budget", ADDS_KEYS.replace('register(Seed, section="training")', "pass"))
    registry = Registry().load()
    assert registry.plugins["adapt_budget"].registered == {"config": ["budget_hours"]}
    config = parse_config({"task": "t", "budget_hours": 2}, registry=registry)
    assert config.budget_hours == 2.0
    with pytest.raises(ConfigError, match="budget_hours: Input should be greater than 0"):
        parse_config({"task": "t", "budget_hours": -1}, registry=registry)
    from adapt.config import run_config_model

    assert "(adapt-budget)" in run_config_model(registry).model_fields["budget_hours"].description

    make_dist(site, "adapt-budget-too", "adapt_budget_too", ADDS_KEYS)  # budget_hours again, and training.seed
    both = Registry().load()
    assert any("config key budget_hours is added by two plugins: adapt-budget" in e
               for e in both.plugins["adapt_budget_too"].errors)
    with pytest.raises(PluginError, match="adds the config key training.seed, which is adapt-core's own"):
        parse_config({"task": "t"}, registry=both)
