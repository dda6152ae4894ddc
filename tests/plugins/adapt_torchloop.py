"""A third party's pack with an engine of its own: ``torchloop``, a plain PyTorch training loop, and
``toy_regression``, a task it trains (a small MLP predicting a number from four features). It
uses only the public API (``adapt``), as any pack must; tests install it as a distribution."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from adapt import DataError, Engine, LoadedModel, Task, hookimpl, read_table, require_columns


class TorchLoop(Engine):
    name = "torchloop"
    description = "A plain PyTorch loop: AdamW over the trainable parameters, batches in file order."

    def train(self, run: Any) -> dict[str, Any]:
        import torch

        t = run.training
        torch.manual_seed(t.seed)
        loaded, params = run.load_for_training()
        data = run.task.load_data(run, loaded, run.data_files())
        model, (x, y) = loaded.model, data["train"]
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.learning_rate,
                                      weight_decay=t.weight_decay)
        per_epoch, size = run.steps_per_epoch(len(x)), t.per_device_train_batch_size
        total = t.max_steps if t.max_steps > 0 else math.ceil(t.num_train_epochs * per_epoch)
        step, losses, window = 0, [], []
        model.train()
        with run.catch_stop_signals():
            while step < total and not run.stop_requested:
                for first in range(0, len(x), size):
                    loss = torch.nn.functional.mse_loss(model(x[first:first + size]), y[first:first + size])
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad()
                    step += 1
                    losses.append(loss.item())
                    window.append(loss.item())
                    if t.logging_strategy == "steps" and step % t.logging_steps == 0:
                        run.log_metrics(step, {"loss": sum(window) / len(window)}, step / per_epoch)
                        window = []
                    if run.should_stop() or step >= total:
                        break
        run.raise_if_stopped()
        metrics: dict[str, Any] = {"train": {"train_loss": sum(losses) / len(losses), "train_steps": step}, **params}
        for split, prefix in (("validation", "eval"), ("test", "test")):
            if split in data:
                metrics[split] = self.scores(model, data[split], prefix)
                run.log_metrics(step, metrics[split], step / per_epoch)
        return run.finish(loaded, model, metrics)

    def evaluate(self, run: Any, model_dir: str, path: str) -> dict[str, Any]:
        loaded = run.load_saved(model_dir)
        return self.scores(loaded.model, run.task.load_data(run, loaded, {"test": path})["test"], "test")

    def scores(self, model: Any, split: tuple[Any, Any], prefix: str) -> dict[str, float]:
        import torch

        model.eval()
        with torch.no_grad():
            predicted = model(split[0])
        model.train()
        return {f"{prefix}_loss": float(torch.nn.functional.mse_loss(predicted, split[1]))}


class ToyRegression(Task):
    name = "toy_regression"
    description = "Predict y from the four numbers in x (jsonl rows {x: [...], y: ...}) with a small MLP."
    engine = "torchloop"
    metrics = ()

    def inspect_data(self, run: Any) -> dict[str, Any]:
        return {"features": 4}

    def load_model(self, run: Any, source: str, meta: dict[str, Any]) -> LoadedModel:
        from safetensors.torch import load_model

        model = mlp()
        load_model(model, str(Path(source) / "model.safetensors"))
        return LoadedModel(model, None, dict(meta))

    def head_modules(self, model: Any) -> list[str]:
        return ["head"]

    def read(self, run: Any, split: str, path: str) -> Any:
        table = read_table(path, split)
        require_columns(table, ["x"] + (["y"] if split != "predict" else []), path, split)
        for row, x in enumerate(table["x"], 1):
            if not isinstance(x, list) or len(x) != 4:
                raise DataError(f"{split} data {path}, row {row}, column x: four numbers expected, got {x!r}")
        return table

    def load_data(self, run: Any, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        import torch

        tables = run.read_splits(splits, lambda split, path: self.read(run, split, path))
        return {split: (torch.tensor(table["x"], dtype=torch.float32), torch.tensor(table["y"], dtype=torch.float32))
                for split, (table, _) in tables.items()}

    def predict(self, run: Any, loaded: LoadedModel, path: str) -> list[dict[str, Any]]:
        import torch

        x = torch.tensor(self.read(run, "predict", path)["x"], dtype=torch.float32)
        with torch.no_grad():
            return [{"y": float(v)} for v in loaded.model(x)]

    def save_model(self, loaded: LoadedModel, folder: str) -> None:
        from safetensors.torch import save_model

        save_model(loaded.model, str(Path(folder) / "model.safetensors"))
        (Path(folder) / "mlp.json").write_text(json.dumps({"features": 4, "hidden": 16}), encoding="utf-8")


def mlp() -> Any:
    """The task's model: four features -> 16 hidden units -> one number."""
    import torch

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden, self.head = torch.nn.Linear(4, 16), torch.nn.Linear(16, 1)

        def forward(self, x: Any) -> Any:
            return self.head(torch.relu(self.hidden(x))).squeeze(-1)

    return MLP()


@hookimpl
def adapt_register_engines(register: Any) -> None:
    register(TorchLoop())


@hookimpl
def adapt_register_tasks(register: Any) -> None:
    register(ToyRegression())
