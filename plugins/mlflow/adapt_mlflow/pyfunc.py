"""The python_function flavour of adapt's MLflow models: ``mlflow.pyfunc.load_model`` calls
:func:`_load_pyfunc` with the model's ``model/`` folder (an adapt model folder), and ``predict``
runs the task's own prediction, so the rows are exactly those of ``adapt predict``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


class AdaptPyfuncModel:
    """An adapt model folder loaded once, predicting on DataFrames of raw inputs."""

    def __init__(self, model_dir: str) -> None:
        from adapt import saved_run

        self.run = saved_run(Path(model_dir))
        self.loaded = self.run.load_saved(model_dir)
        self.loaded.model.eval()

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """One row of predictions per input row; the input's columns are the task's data columns
        (those of a predict data file)."""
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "input.jsonl"
            frame.to_json(path, orient="records", lines=True, force_ascii=False)
            rows = self.run.task.predict(self.run, self.loaded, str(path))
        return pd.DataFrame(rows)


def _load_pyfunc(data_path: str) -> AdaptPyfuncModel:
    return AdaptPyfuncModel(data_path)
