"""adapt ui: the form's config, a run stopped with a checkpoint, bad command-line input, and the
whole app in a real browser (headless Chromium driven by Selenium, every request kept on localhost)."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
from adapt.testing import run_adapt, text_classification_data, tiny_bert
from adapt_ui import jobs
from adapt_ui import testing as ui
from adapt_ui.testing import QUIET, need_browser, requests_outside


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ui-inputs")
    return {"model": tiny_bert(root / "bert"), **text_classification_data(root / "data", n_train=48, n_eval=16)}


def test_the_form_becomes_a_config_of_what_differs_from_the_defaults() -> None:
    sections = jobs.form_fields("text_classification", "lora")
    fields = {f.key: f for fs in sections.values() for f in fs}
    assert fields["method_params.r"].default == 8 and "Rank" in fields["method_params.r"].help
    assert fields["task_params.text_column"].default == "text"
    assert fields["training.precision"].kind == "choice" and "bf16" in fields["training.precision"].choices
    assert "data.train" not in fields and "model.path" not in fields  # the form's own fields
    config = jobs.build_config(
        "text_classification", "lora", "m", "t.jsonl", "", "",
        {"method_params.r": "4", "method_params.alpha": "", "method_params.dropout": "0.1",
         "training.precision": "32", "training.gradient_checkpointing": True, "task_params.label_column": "y"},
        "training.warmup_steps=0.1\n# a comment\nmethod_params.target_modules=[query, value]")
    assert config == {"task": "text_classification", "method": "lora", "model": {"path": "m"},
                      "data": {"train": "t.jsonl"}, "method_params": {"r": 4, "target_modules": ["query", "value"]},
                      "training": {"gradient_checkpointing": True, "warmup_steps": 0.1},
                      "task_params": {"label_column": "y"}}
    with pytest.raises(ValueError, match=r"method_params.target_modules: '\[query,' is not a value"):
        jobs.build_config("text_classification", "lora", "m", "t.jsonl", values={"method_params.target_modules": "[query,"})
    with pytest.raises(ValueError, match="not key=value"):
        jobs.build_config("text_classification", "lora", "m", "t.jsonl", extra="training.warmup_steps")


@pytest.mark.slow
def test_a_stopped_run_saves_a_checkpoint_and_says_how_to_resume(tmp_path: Path, tiny: dict[str, str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in QUIET.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ADAPT_DISABLE_PLUGINS")  # tracked: the Runs tab lists the tracking store too
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # the default store, sqlite:///mlflow.db, of the app's folder
    assert jobs.tracked_runs()[0] == [] and "no tracking store" in jobs.tracked_runs()[1]
    config = jobs.build_config("text_classification", "lora", tiny["model"], tiny["train"], tiny["validation"],
                               extra="training.max_steps=100000\ntraining.logging_steps=1\n"
                                     "training.per_device_train_batch_size=2")
    job = jobs.start(tmp_path / "runs", config, "long")
    deadline = time.time() + 120
    while not (job.output / "metrics.jsonl").is_file() and job.running() and time.time() < deadline:
        time.sleep(0.5)
    assert job.running(), job.log()
    assert job.status() == "running"
    job.stop()
    assert job.status().startswith("stopping")
    job.process.wait(timeout=120)
    assert job.status().startswith("stopped") and "resume_from_checkpoint" in job.status(), job.log()
    assert list((job.output / "checkpoints").glob("checkpoint-*")), job.log()
    assert [r["state"] for r in jobs.list_runs(tmp_path / "runs")] == ["interrupted"]
    assert jobs.curves(job.output, tmp_path / "c.png") == tmp_path / "c.png"
    (tracked,), note = jobs.tracked_runs()
    assert note == "" and tracked[jobs.TRACKED_COLUMNS.index("output")] == str(job.output.resolve())
    assert tracked[jobs.TRACKED_COLUMNS.index("status")] == "KILLED", tracked  # interrupted
    with pytest.raises(ValueError, match="already holds a run"):
        jobs.start(tmp_path / "runs", config, "long")


def test_without_adapt_mlflow_the_tracked_runs_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPT_DISABLE_PLUGINS", "mlflow")
    assert jobs.tracked_runs() == ([], "no tracking store: install adapt-mlflow to track every run")


def test_ui_refuses_bad_options(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = run_adapt("ui", "--runs", str(afile), "--port", "0")
    assert result.returncode == 2 and "--runs" in result.stderr and "is a file" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_adapt("ui", "--runs", str(tmp_path / "r"), "--port", "70000")
    assert result.returncode == 2 and "--port: 70000" in result.stderr


@pytest.mark.slow
def test_the_app_in_a_browser_trains_shows_compares_and_predicts(tmp_path: Path, tiny: dict[str, str]) -> None:
    need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    runs = tmp_path / "runs"
    other = run_adapt("train", "--task", "text_classification", "--method", "ssf", "--model", tiny["model"],
                      "--train", tiny["train"], "--test", tiny["test"], "--output", str(runs / "cli-ssf"),
                      "--set", "training.num_train_epochs=1", env=QUIET)
    assert other.returncode == 0, other.stderr
    with ui.app_in_browser(runs, tmp_path) as driver:
        wait = WebDriverWait(driver, 60)

        field, text, choose, tab = (functools.partial(f, driver) for f in (ui.field, ui.text, ui.choose, ui.tab))

        choose("task", "text_classification")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#field-task-params-text-column input"))
        for element_id, value in (("model", tiny["model"]), ("train-data", tiny["train"]),
                                  ("validation-data", tiny["validation"]), ("test-data", tiny["test"]),
                                  ("run-name", "ui-run"), ("field-method-params-r", "4"),
                                  ("extra", "training.num_train_epochs=2\ntraining.logging_steps=2")):
            field(element_id).send_keys(value)
        driver.find_element(By.ID, "plan-button").click()
        wait.until(lambda b: "trainable_parameters" in text("plan"))
        assert '"method": "lora"' in text("plan")

        driver.find_element(By.ID, "start-button").click()
        WebDriverWait(driver, 240).until(lambda b: any(s in field("status").get_attribute("value")
                                                        for s in ("finished", "failed")))
        assert field("status").get_attribute("value") == "ui-run: finished", field("log").get_attribute("value")
        assert "test_accuracy" in field("log").get_attribute("value")
        config = (runs / "ui-run" / "config.yaml").read_text()
        assert "r: 4" in config and "num_train_epochs: 2" in config
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#curves img"))

        tab("Runs")
        choose("run-choice", "ui-run")
        wait.until(lambda b: "test_accuracy" in text("run-metrics"))
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#run-pictures img")) >= 2)  # curves, confusion matrix
        assert "cli-ssf" in text("runs-table") and "finished" in text("runs-table")
        driver.find_element(By.CSS_SELECTOR, "#tracked button").click()  # open the accordion
        wait.until(lambda b: "install adapt-mlflow" in b.find_element(By.ID, "tracked-note").text)

        tab("Compare")
        box = field("compare-choice")
        for name in ("ui-run", "cli-ssf"):
            box.click()
            box.send_keys(name)
            time.sleep(0.3)
            box.send_keys(Keys.ENTER)
            time.sleep(0.3)
        box.send_keys(Keys.ESCAPE)
        time.sleep(0.5)
        driver.find_element(By.ID, "compare-button").click()
        wait.until(lambda b: "best test_accuracy" in text("comparison"))
        assert "lora" in text("comparison") and "ssf" in text("comparison")

        tab("Try")
        choose("try-choice", "ui-run")
        field("try-text").send_keys("the match went to extra time")
        driver.find_element(By.ID, "try-text-button").click()
        wait.until(lambda b: '"label"' in text("try-prediction") or "failed" in text("try-prediction"))
        assert '"scores"' in text("try-prediction"), text("try-prediction")

        assert requests_outside(driver) == []
