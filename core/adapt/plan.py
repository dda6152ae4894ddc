"""``adapt plan``: what a run would train and cost, without training.

It loads the model as the run would (quantization included), applies the method, and counts:
trainable / total parameters, the bytes of weights + gradients + optimizer state, and the
optimizer steps. Activations are not estimated: they depend on batch size and sequence or image
size; measure them with a short run.
"""

from __future__ import annotations

import math
from typing import Any

from adapt.run import Run, load_adapted, model_source, parameter_report, steps_per_epoch

# Optimizer state per trainable parameter, in multiples of the parameter's bytes.
OPTIMIZER_STATES = {"sgd": 1.0, "adagrad": 1.0, "rmsprop": 1.0, "adafactor": 0.1}
EIGHT_BIT_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit", "lion_8bit")


def _bytes(tensor: Any) -> int:
    return tensor.numel() * tensor.element_size()


def memory_estimate(model: Any, optim: str) -> dict[str, int]:
    """Bytes of weights (as stored: 4-bit weights count their packed bytes), gradients and
    optimizer state (two fp32 moments for Adam-family optimizers)."""
    weights = sum(_bytes(p) for p in model.parameters()) + sum(_bytes(b) for b in model.buffers())
    trainable = [p for p in model.parameters() if p.requires_grad]
    gradients = sum(_bytes(p) for p in trainable)
    if optim in EIGHT_BIT_OPTIMIZERS:
        optimizer = sum(2 * p.numel() for p in trainable)
    else:
        factor = OPTIMIZER_STATES.get(optim, 2.0)
        optimizer = int(sum(factor * p.numel() * 4 for p in trainable))
    return {"weights_bytes": weights, "gradients_bytes": gradients, "optimizer_bytes": optimizer,
            "total_bytes": weights + gradients + optimizer}


def plan(run: Run) -> dict[str, Any]:
    """Load and adapt the model as ``adapt train`` would; report parameters, memory and steps."""
    from adapt.data import read_table

    t, data = run.training, run.config.data
    model = load_adapted(run, model_source(run), run.task.inspect_data(run)).model
    rows = len(read_table(data.train, "train"))
    if not data.validation and data.validation_split:  # carved first, then limited, as tasks read them
        rows -= math.ceil(rows * data.validation_split)
    if data.max_train_samples:
        rows = min(rows, data.max_train_samples)
    per_epoch = steps_per_epoch(run, rows)
    steps = t.max_steps if t.max_steps > 0 else math.ceil(t.num_train_epochs * per_epoch)
    return {"task": run.task.name, "method": run.method.name, "model": run.model_path,
            **parameter_report(model), **memory_estimate(model, t.optim), "train_rows": rows,
            "steps_per_epoch": per_epoch, "total_steps": steps,
            "effective_batch_size": t.per_device_train_batch_size * run.world_size * t.gradient_accumulation_steps,
            "note": "activations are not included: they grow with batch size and sequence / image size"}
