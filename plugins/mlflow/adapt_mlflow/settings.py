"""The run config keys adapt-mlflow adds (``adapt_register_config``): ``save_as_mlflow_model`` and
the ``tracking`` section at the top level, ``mlflow_model_path`` in ``model``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrackingConfig(BaseModel):
    """Run tracking: parameters, metrics and artefacts of every run, in an MLflow store."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Track this run in the MLflow store (false: not tracked).")
    uri: str | None = Field(None, description="Tracking store or server, e.g. http://host:5000 or sqlite:///runs.db "
                            "(None: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working folder).")
    experiment_name: str = Field("adapt", description="Experiment the runs are grouped under.")
    run_name: str | None = Field(None, description="Name of the tracked run (None: the run folder's name).")


class MlflowRunSettings(BaseModel):
    save_as_mlflow_model: bool | None = Field(None, description="Also save an MLflow model (None: yes; the mlflow "
                                                                "saver into saved/mlflow/).")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Where the run is tracked.")


class MlflowModelSettings(BaseModel):
    mlflow_model_path: str | None = Field(None, description="An MLflow model folder to start from (one saved by adapt, "
                                                            "or with the transformers flavour), instead of model.path.")
