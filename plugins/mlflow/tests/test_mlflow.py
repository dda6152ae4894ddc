"""adapt-mlflow end to end: every task's MLflow model loads in a fresh process and predicts what
`adapt predict` predicts; MLflow models are a starting point; runs are tracked to SQLite and to
a real MLflow server."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from adapt.testing import (
    free_port,
    question_answering_rows,
    seq2seq_rows,
    text_classification_rows,
    text_generation_rows,
    tiny_bert,
    tiny_causal_lm,
    tiny_seq2seq,
    token_classification_rows,
    write_jsonl,
)

pytestmark = pytest.mark.slow
SHORT = ["--set", "training.max_steps=2", "--set", "training.logging_steps=1", "--set", "training.per_device_train_batch_size=4",
         "--set", "training.learning_rate=5e-3"]
UNTRACKED = ["--set", "tracking.enabled=false"]  # tracking has its own tests below

# task -> (model builder, rows, extra args)
TASKS = {
    "text_classification": (tiny_bert, text_classification_rows, []),
    "text_classification_multilabel": (tiny_bert, lambda n, seed: text_classification_rows(n, seed, multi_label=True),
                                       ["--set", "task_params.problem_type=multi_label"]),
    "token_classification": (tiny_bert, token_classification_rows, []),
    "question_answering": (tiny_bert, question_answering_rows, []),
    "summarization": (tiny_seq2seq, seq2seq_rows, ["--set", "task_params.generation_max_length=6"]),
    "translation": (tiny_seq2seq, lambda n, seed: seq2seq_rows(n, seed, kind="translation"),
                    ["--set", "task_params.generation_max_length=6"]),
    "text_generation": (tiny_causal_lm, lambda n, seed: text_generation_rows(n, seed, kind="prompt_completion"),
                        ["--set", "task_params.max_new_tokens=4", "--set", "task_params.max_seq_length=32"]),
}

LOAD_AND_PREDICT = '''
import json, sys
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
frame = pd.read_json(sys.argv[2], lines=True)
columns = [c["name"] for c in json.loads(model.metadata.to_dict()["signature"]["inputs"])]
out = model.predict(frame[columns])
sys.stdout.write(json.dumps({"columns": columns, "rows": out.to_dict("records")}))
'''


def fresh_predict(folder: Path, data: str, tmp_path: Path) -> dict:
    """mlflow.pyfunc.load_model + predict in a new Python process (nothing of the run in memory)."""
    script = tmp_path / "load_and_predict.py"
    script.write_text(LOAD_AND_PREDICT)
    proc = subprocess.run([sys.executable, str(script), str(folder), data], capture_output=True, text=True,
                          timeout=300, env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def assert_same_rows(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)

    def close(a, b) -> bool:  # noqa: ANN001
        if isinstance(a, float) or isinstance(b, float):
            return a is not None and b is not None and math.isclose(a, b, abs_tol=1e-5)
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
        return a == b

    for g, e in zip(got, expected, strict=True):
        assert close(g, e), (g, e)


def make_data(folder: Path, rows) -> dict[str, str]:  # noqa: ANN001
    return {split: write_jsonl(folder / f"{split}.jsonl", rows(n, seed)) for split, n, seed in
            (("train", 16, 1), ("validation", 6, 2), ("test", 6, 3))}


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_round_trips_through_an_mlflow_model(task: str, adapt_cli, tmp_path: Path) -> None:
    build, rows, extra = TASKS[task]
    model = build(tmp_path / "model")
    data = make_data(tmp_path / "data", rows)
    name = task.removesuffix("_multilabel")
    result = adapt_cli("train", "--task", name, "--model", model, "--train", data["train"], "--validation", data["validation"],
                       "--test", data["test"], "--output", "run", *SHORT, *UNTRACKED, *extra)
    assert result.returncode == 0, result
    folder = tmp_path / "run" / "saved" / "mlflow"
    assert (folder / "MLmodel").is_file() and (folder / "input_example.json").is_file()
    requirements = (folder / "requirements.txt").read_text().split()
    assert {"adapt-core", "adapt-mlflow", "adapt-nlp", "torch", "transformers"} <= {r.split("==")[0] for r in requirements}
    assert all("==" in r for r in requirements), requirements

    expected = [json.loads(line) for line in adapt_cli("predict", "run", "--data", data["test"]).stdout.splitlines()]
    got = fresh_predict(folder, data["test"], tmp_path)
    assert got["columns"] and "label" not in got["columns"] and "tags" not in got["columns"]
    assert_same_rows(got["rows"], expected)

    flavours = (folder / "MLmodel").read_text()
    has_pipeline = task in ("text_classification", "token_classification", "text_generation")
    assert ("transformers:" in flavours) == has_pipeline, flavours


def test_transformers_flavour_is_the_pipeline_and_an_adapter_model_stands_alone(adapt_cli, tmp_path: Path) -> None:
    model = tiny_bert(tmp_path / "base")
    data = make_data(tmp_path / "data", text_classification_rows)
    for output, method in (("merged", "lora"), ("adapter", "lora")):
        extra = ["--set", "method_params.merge_weights=false"] if output == "adapter" else []
        result = adapt_cli("train", "--task", "text_classification", "--method", method, "--model", model, "--train",
                           data["train"], "--test", data["test"], "--output", output, *SHORT, *UNTRACKED, *extra)
        assert result.returncode == 0, result
    script = tmp_path / "pipeline.py"
    script.write_text("import json, sys, mlflow.transformers\n"
                      "pipe = mlflow.transformers.load_model(sys.argv[1])\n"
                      "print(json.dumps([r['label'] for r in pipe(sys.argv[2:])]))\n")
    texts = [json.loads(line)["text"] for line in Path(data["test"]).read_text().splitlines()]
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "merged/saved/mlflow"), *texts],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = [json.loads(line)["label"] for line in adapt_cli("predict", "merged", "--data", data["test"]).stdout.splitlines()]
    assert json.loads(proc.stdout.splitlines()[-1]) == expected

    # an unmerged adapter ships its base model: the MLflow model works with the base folder gone
    info = json.loads((tmp_path / "adapter/saved/mlflow/model/adapt.json").read_text())
    assert info["format"] == "adapter" and info["base_model"] == "base_model"
    assert "transformers:" not in (tmp_path / "adapter/saved/mlflow/MLmodel").read_text()
    expected = [json.loads(line) for line in adapt_cli("predict", "adapter", "--data", data["test"]).stdout.splitlines()]
    shutil.rmtree(tmp_path / "base")
    assert_same_rows(fresh_predict(tmp_path / "adapter/saved/mlflow", data["test"], tmp_path)["rows"], expected)


def test_saving_offline_never_asks_the_hub(adapt_cli, tmp_path: Path) -> None:
    """A model named by a relative folder ("bert", a hub id's shape) and the hub not switched off:
    the transformers flavour's model card and licence lookups must not go to the network (offline
    they retried for a minute)."""
    tiny_bert(tmp_path / "bert")
    data = make_data(tmp_path / "data", text_classification_rows)
    started = time.time()
    result = adapt_cli("train", "--task", "text_classification", "--model", "bert", "--train", data["train"],
                       "--output", "run", *SHORT, *UNTRACKED, env={"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"})
    assert result.returncode == 0, result
    assert "huggingface.co" not in result.stderr and "Retrying" not in result.stderr, result.stderr[-2000:]
    assert "transformers:" in (tmp_path / "run/saved/mlflow/MLmodel").read_text()
    assert time.time() - started < 60


def test_mlflow_models_are_a_starting_point(adapt_cli, tmp_path: Path) -> None:
    """Fine-tuning further from an MLflow model (ours merged, ours unmerged, a transformers-flavour
    one made with mlflow.transformers) starts from its weights: a near-zero learning rate
    reproduces the source model's test loss, unlike the random base."""
    model = tiny_bert(tmp_path / "base")
    data = make_data(tmp_path / "data", text_classification_rows)
    common = ["--task", "text_classification", "--train", data["train"], "--test", data["test"], *UNTRACKED]
    assert adapt_cli("train", *common, "--model", model, "--output", "source", *SHORT).returncode == 0
    assert adapt_cli("train", *common, "--model", model, "--method", "lora", "--output", "source_adapter", *SHORT,
                     "--set", "method_params.merge_weights=false").returncode == 0
    script = tmp_path / "export.py"
    script.write_text("import sys, mlflow.transformers, transformers\n"
                      "m = transformers.AutoModelForSequenceClassification.from_pretrained(sys.argv[1])\n"
                      "t = transformers.AutoTokenizer.from_pretrained(sys.argv[1])\n"
                      "mlflow.transformers.save_model({'model': m, 'tokenizer': t}, sys.argv[2], task='text-classification',"
                      " pip_requirements=['transformers'])\n")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "source/model"), str(tmp_path / "elsewhere")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})  # else mlflow asks the hub for a model card (~45 s)
    assert proc.returncode == 0, proc.stderr[-2000:]

    still = ["--set", "training.max_steps=1", "--set", "training.learning_rate=1e-12", "--set", "save_as_mlflow_model=false"]
    for source, start in (("source", "source/saved/mlflow"), ("source_adapter", "source_adapter/saved/mlflow"),
                          ("source", "elsewhere")):
        output = f"from_{start.split('/')[0]}_{source}"
        result = adapt_cli("train", *common, "--set", f"model.mlflow_model_path={start}", "--output", output, *still)
        assert result.returncode == 0, result
        before = json.loads((tmp_path / source / "test_metrics.json").read_text())["test_loss"]
        after = json.loads((tmp_path / output / "test_metrics.json").read_text())["test_loss"]
        assert after == pytest.approx(before, abs=1e-4), (start, before, after)
    result = adapt_cli("train", *common, "--model", model, "--output", "from_base", *still)
    base_loss = json.loads((tmp_path / "from_base" / "test_metrics.json").read_text())["test_loss"]
    assert abs(base_loss - before) > 1e-3

    bad = adapt_cli("train", *common, "--set", f"model.mlflow_model_path={data['train']}", "--output", "bad")
    assert bad.returncode == 2 and "is not an MLflow model folder (no MLmodel file)" in bad.stderr, bad
    both = adapt_cli("train", *common, "--model", model, "--set", "model.mlflow_model_path=elsewhere", "--output", "bad")
    assert both.returncode == 2 and "not both" in both.stderr, both


def check_tracked(uri: str, output: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("adapt")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["adapt.output"] == str(output.resolve())
    params = run.data.params
    assert params["task"] == "text_classification" and params["training.learning_rate"] == "0.005"
    assert params["training.max_steps"] == "2" and "method_params.r" not in params  # method full
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert 0 <= run.data.metrics["eval_accuracy"] <= 1 and 0 <= run.data.metrics["test_accuracy"] <= 1
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "test_metrics.json", "curves.png", "train.log", "model"} <= files, files
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}


def test_tracking_to_the_default_sqlite_store(adapt_cli, tiny_bert_dir, text_data, tmp_path: Path) -> None:
    result = adapt_cli("train", "--task", "text_classification", "--model", tiny_bert_dir, "--train", text_data["train"],
                       "--validation", text_data["validation"], "--test", text_data["test"], "--output", "run", *SHORT)
    assert result.returncode == 0, result
    assert (tmp_path / "mlflow.db").is_file()
    check_tracked(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "run")
    listed = adapt_cli("runs", "--json")
    assert listed.returncode == 0, listed
    (row,) = listed.json()
    assert row["name"] == "run" and row["status"] == "FINISHED" and "test_accuracy" in row["metrics"]
    assert "test_runtime" not in row["metrics"]
    assert "FINISHED" in adapt_cli("runs").stdout

    # tracking off, and an unreachable server: the run goes on, with one warning
    off = adapt_cli("train", "--task", "text_classification", "--model", tiny_bert_dir, "--train", text_data["train"],
                    "--output", "off", *SHORT, "--set", "tracking.enabled=false")
    assert off.returncode == 0 and "tracking run" not in off.stderr
    down = adapt_cli("train", "--task", "text_classification", "--model", tiny_bert_dir, "--train", text_data["train"],
                     "--output", "down", *SHORT, "--set", "tracking.uri=http://127.0.0.1:9")
    assert down.returncode == 0, down
    assert down.stderr.count("mlflow tracking stopped for this run") == 1, down.stderr
    assert len(adapt_cli("runs", "--json").json()) == 1


def test_tracking_to_an_mlflow_server(adapt_cli, tiny_bert_dir, text_data, tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert server.poll() is None and time.time() < deadline, server.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        result = adapt_cli("train", "--task", "text_classification", "--model", tiny_bert_dir, "--train", text_data["train"],
                           "--validation", text_data["validation"], "--test", text_data["test"], "--output", "run", *SHORT,
                           env={"MLFLOW_TRACKING_URI": uri})
        assert result.returncode == 0, result
        assert not (tmp_path / "mlflow.db").exists()
        check_tracked(uri, tmp_path / "run")
        assert any((tmp_path / "server-artifacts").rglob("MLmodel"))
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_without_the_pack_there_is_no_mlflow(adapt_cli, tiny_bert_dir, text_data, tmp_path: Path) -> None:
    env = {"ADAPT_DISABLE_PLUGINS": "mlflow"}
    result = adapt_cli("train", "--task", "text_classification", "--model", tiny_bert_dir, "--train", text_data["train"],
                       "--output", "run", *SHORT, env=env)
    assert result.returncode == 0, result
    assert not (tmp_path / "run" / "saved" / "mlflow").exists() and not (tmp_path / "mlflow.db").exists()
    asked = adapt_cli("train", "--task", "text_classification", "--model", tiny_bert_dir, "--train", text_data["train"],
                      "--output", "run2", "--set", "save_as_mlflow_model=true", env=env)
    assert asked.returncode == 2 and "pip install adapt-mlflow" in asked.stderr
    assert adapt_cli("runs", env=env).returncode == 2
