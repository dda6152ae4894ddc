"""The ``mlflow`` saver: an MLflow model folder of the run's final model, for every task.

The folder's python_function flavour is ours (:mod:`adapt_mlflow.pyfunc`): it predicts on a
DataFrame of raw inputs exactly as ``adapt predict`` does. Where a transformers pipeline exists
for the task and the model is a plain transformers model, the same folder also carries the
transformers flavour (``mlflow.transformers.load_model`` gives the pipeline); both read the one
copy of the weights in ``model/``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from adapt import LoadedModel, ModelError, Saver, model_info

log = logging.getLogger("adapt")
LOADER = "adapt_mlflow.pyfunc"
DATA = "model"  # the adapt model folder inside the MLflow model (also the transformers flavour's model_binary)
PIPELINES = {"text_classification": "text-classification", "token_classification": "token-classification",
             "text_generation": "text-generation"}
BASE_DIR = "base_model"


def _link_tree(source: Path, target: Path) -> None:
    """Copy a folder, hard-linking files where the file system allows (no second copy of weights)."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


def requirements(run: Any, adapter: bool) -> list[str]:
    """Pinned pip requirements of what loading the model imports: adapt, the packs that provide
    its task (and method, for an unmerged adapter), torch and the model libraries."""
    dists = ["adapt-core", "adapt-mlflow", "mlflow", "pandas", "torch", "transformers", "safetensors"]
    owners = [run.registry.owner("task", run.task.name)]
    if adapter:
        owners.append(run.registry.owner("method", run.method.name))
        dists.append("peft")
    dists.extend(o.distribution for o in owners if o is not None and o.distribution)
    pins = []
    for dist in dict.fromkeys(dists):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return pins


def input_example(run: Any) -> Any:
    """The first inputs of the run's test (else validation, else training) data, as the task's
    predict reads them."""
    import pandas as pd

    data = run.config.data
    path = data.test or data.validation or data.train
    if not path:
        return None
    return pd.DataFrame(run.task.example_inputs(run, path, 2))


class MlflowSaver(Saver):
    name = "mlflow"
    description = ("An MLflow model: mlflow.pyfunc.load_model predicts on raw inputs like adapt predict "
                   "(plus the transformers flavour where a pipeline exists).")

    def default_for(self, config: Any) -> bool:
        return config.save_as_mlflow_model is not False

    def save(self, loaded: LoadedModel, folder: str, run: Any) -> list[str]:
        import mlflow
        from mlflow.models import infer_signature

        from adapt_mlflow.pyfunc import AdaptPyfuncModel

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (validating the input example...)

        target = Path(folder)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            data = Path(tmp) / DATA
            _link_tree(run.path("model"), data)
            info = model_info(data)
            adapter = info["format"] == "adapter"
            base = info.get("base_model")
            if adapter and base and Path(base).is_dir():  # ship the base model: the folder stands alone
                _link_tree(Path(base), data / BASE_DIR)
                info["base_model"] = BASE_DIR
                (data / "adapt.json").unlink()  # a hard link to model/adapt.json: do not write through it
                (data / "adapt.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
            example = input_example(run)
            signature = None
            if example is not None and run.world_size == 1:  # a worker alone must not load models (ZeRO-3 would wait on the others)
                predicted = AdaptPyfuncModel(str(data)).predict(example)
                try:
                    signature = infer_signature(example, predicted)
                except Exception:  # nested outputs (dicts of scores) have no MLflow schema
                    signature = infer_signature(example)
            elif example is not None:
                signature = infer_signature(example)
            mlflow.pyfunc.save_model(str(partial), loader_module=LOADER, data_path=str(data),
                                     pip_requirements=requirements(run, adapter), signature=signature,
                                     input_example=example)
        self._move_data(partial)
        if not adapter and self._has_pipeline(run, loaded):
            self._add_transformers_flavour(run, loaded, partial, signature)
        if target.exists():
            shutil.rmtree(target)
        os.replace(partial, target)
        return [str(target)]

    def _move_data(self, folder: Path) -> None:
        """mlflow puts data_path under data/; ours goes at the top, as model/, where the
        transformers flavour expects its weights, so that one copy serves both flavours."""
        from mlflow.models import Model

        os.replace(folder / "data" / DATA, folder / DATA)
        (folder / "data").rmdir()
        model = Model.load(str(folder))
        model.flavors["python_function"]["data"] = DATA
        model.save(str(folder / "MLmodel"))

    def _has_pipeline(self, run: Any, loaded: LoadedModel) -> bool:
        from transformers import PreTrainedModel

        return (run.task.name in PIPELINES and isinstance(loaded.model, PreTrainedModel)
                and loaded.meta.get("problem_type") != "multi_label")  # the pipeline picks one label

    def _add_transformers_flavour(self, run: Any, loaded: LoadedModel, folder: Path, signature: Any) -> None:
        import mlflow.transformers
        from mlflow.models import Model

        # mlflow looks the model's name (model.name_or_path, copied from its config when it loaded) up
        # on the hub for a model card and licence; an absolute path is no hub id, so nothing goes to
        # the network (a relative "bert" would retry for a minute when offline)
        model, config, quiet = loaded.model, loaded.model.config, logging.getLogger("mlflow.transformers")
        name, level = (config._name_or_path, model.name_or_path), quiet.level
        config._name_or_path = model.name_or_path = str(run.path("model").resolve())
        quiet.setLevel(logging.ERROR)
        try:
            with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
                other = Path(tmp) / "transformers"
                mlflow.transformers.save_model({"model": loaded.model, "tokenizer": loaded.processor}, str(other),
                                               task=PIPELINES[run.task.name], signature=signature,
                                               pip_requirements=requirements(run, False))
                flavour = Model.load(str(other)).flavors["transformers"]
                if flavour.get("model_binary") != DATA:
                    raise ModelError(f"mlflow {mlflow.__version__} lays out transformers models differently "
                                     f"(model_binary {flavour.get('model_binary')!r}); save without the transformers flavour")
                if (other / "components").is_dir():
                    shutil.move(str(other / "components"), str(folder / "components"))
        finally:
            config._name_or_path, model.name_or_path = name
            quiet.setLevel(level)
        model = Model.load(str(folder))
        model.flavors["transformers"] = flavour
        model.save(str(folder / "MLmodel"))
        log.info("mlflow: the MLflow model also carries the transformers flavour (%s pipeline)", PIPELINES[run.task.name])

    def load(self, folder: str, like: Any = None) -> Any:
        """The python_function model (``predict(DataFrame)``)."""
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(folder)
