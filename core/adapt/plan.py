"""``adapt plan``: what a run would train and cost, without training.

It loads the model as the run would (quantization included), applies the method, and counts:
trainable / total parameters, the bytes of weights + gradients + optimizer state, and the
optimizer steps. Activations are not estimated: they depend on batch size and sequence or image
size; measure them with a short run.
"""

from __future__ import annotations

from typing import Any

from adapt.config import OPTIMIZERS
from adapt.models import parameter_report
from adapt.run import Run


def _bytes(tensor: Any) -> int:
    return tensor.numel() * tensor.element_size()


def memory_estimate(model: Any, optim: str) -> dict[str, int]:
    """Bytes of weights (as stored: 4-bit weights count their packed bytes), gradients and
    optimizer state (two fp32 moments for Adam-family optimizers; see ``adapt.OPTIMIZERS``)."""
    weights = sum(_bytes(p) for p in model.parameters()) + sum(_bytes(b) for b in model.buffers())
    trainable = [p for p in model.parameters() if p.requires_grad]
    gradients = sum(_bytes(p) for p in trainable)
    optimizer = int(sum(OPTIMIZERS[optim].state * p.numel() * 4 for p in trainable))
    return {"weights_bytes": weights, "gradients_bytes": gradients, "optimizer_bytes": optimizer,
            "total_bytes": weights + gradients + optimizer}


def plan(run: Run) -> dict[str, Any]:
    """Load and adapt the model as ``adapt train`` would; report parameters, memory and steps."""
    t, data = run.training, run.config.data
    model = run.load_adapted(run.model_source(), run.task.inspect_data(run)).model
    # the training examples as tasks count them (validation carved off unless given, then limited); a
    # given validation file is not read
    splits = {"train": data.train, **({"validation": data.validation} if data.validation else {})}
    tables = run.read_splits(splits, lambda split, path: run.task.examples(run, split, path) if split == "train" else [])
    rows = len(tables["train"][0])
    per_epoch = run.steps_per_epoch(rows)
    steps = run.train_steps(rows)
    return {"task": run.task.name, "method": run.method.name, "model": run.model_path,
            **parameter_report(model), "head_modules": run.head_modules, **memory_estimate(model, t.optim), "train_rows": rows,
            "steps_per_epoch": per_epoch, "total_steps": steps,
            "effective_batch_size": t.per_device_train_batch_size * run.world_size * t.gradient_accumulation_steps,
            "learning_rate": t.learning_rate, "defaults": {name: f"{getattr(t, name)}: {why}" for name, why in run.defaults.items()},
            "note": "activations are not included: they grow with batch size and sequence / image size"}
