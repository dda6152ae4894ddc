"""The MMEngine engine: maps the common training parameters onto an MMEngine ``Runner`` (train_cfg,
optim_wrapper, param_scheduler, default and custom hooks) and a backend's data-parallel settings
onto MMEngine's own (a DDP wrapper, or a FlexibleRunner strategy: :mod:`adapt_vision.strategies`),
and runs a task's training and evaluation with it. The task builds the model (adapted by the
method, like any other) and says how to read its data; the engine never builds a model from a
config itself. mmengine is imported only when a run uses the engine.

A task on this engine has Params subclassing :class:`MMEngineParams` (the fields read here) and
returns from ``load_data`` one entry per split::

    {"dataset": <MMEngine dataset config>, "evaluator": <metric config or None>, "size": <rows>}

and from ``engine_settings`` further Runner arguments (``default_scope``, ``auto_scale_lr``...).
Its evaluators report the task's metric names directly (no ``coco/`` prefixes). Training runs
in iterations: epochs, evaluation and save intervals become iteration counts, one iteration
being one batch (an optimizer step every ``gradient_accumulation_steps`` of them).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from adapt import (
    OPTIMIZERS,
    SCHEDULERS,
    ConfigError,
    Engine,
    HardwareError,
    Method,
    Params,
    literal_optim_args,
    peak_memory,
    progress_bars,
    route_library_logger,
)
from pydantic import Field

log = logging.getLogger("adapt")
# the HF schedules (adapt.SCHEDULERS' values) MMEngine tasks run: as MMEngine schedulers, or none (constant)
MMENGINE_SCHEDULES = ("linear", "cosine", "polynomial", "constant", "constant_with_warmup")


class MMEngineParams(Params):
    """Schedule and run options of the tasks trained by MMEngine (nyuntam adapt's names); the
    common training parameters (learning_rate, lr_scheduler_type, warmup_steps...) apply too."""

    BEGIN: int = Field(0, ge=0, description="Epoch at which the main learning-rate schedule starts.")
    END: int | None = Field(None, ge=1, description="Epoch at which it ends (None: the end of training).")
    T_MAX: int = Field(0, ge=0, description="Iterations of one cosine half-period (0: the schedule's length); "
                                            "lr_scheduler_type cosine only.")
    WARMUP: bool = Field(False, description="Warm up linearly over WARMUP_ITERS iterations from WARMUP_RATIO x learning_rate.")
    WARMUP_RATIO: float = Field(0.1, gt=0, le=1, description="Learning rate at the start of warmup, as a fraction of learning_rate.")
    WARMUP_ITERS: int = Field(50, ge=1, description="Warmup iterations when WARMUP is true (else training.warmup_steps).")
    MILESTONES: list[int] = Field(default_factory=list, description="Epochs at which the learning rate is multiplied "
                                                                    "by GAMMA (a step schedule instead of lr_scheduler_type).")
    GAMMA: float = Field(0.1, gt=0, description="Factor applied at each of MILESTONES.")
    amp: bool = Field(False, description="Automatic mixed precision (MMEngine's AmpOptimWrapper; needs a GPU). "
                                         "training.precision 16 / bf16 means the same.")
    auto_scale_lr: bool = Field(False, description="Scale learning_rate by the effective batch size over the model "
                                                   "config's auto_scale_lr.base_batch_size.")
    cfg_options: dict[str, Any] | None = Field(None, description="Overrides of the model config as dotted keys, e.g. "
                                                                 "{'model.bbox_head.stacked_convs': 2}.")
    checkpoint_interval: int | None = Field(None, ge=1, description="Epochs between checkpoints (None: as "
                                                                    "training.save_strategy says).")


def _optimizer(t: Any) -> dict[str, Any]:
    name = OPTIMIZERS[t.optim].torch
    if name is None:
        allowed = ", ".join(k for k, v in OPTIMIZERS.items() if v.torch)
        raise ConfigError(f"training.optim: {t.optim!r} is an HF Trainer optimizer that MMEngine tasks cannot use "
                          f"(allowed here: {allowed})")
    optimizer: dict[str, Any] = {"type": name, "lr": t.learning_rate, "weight_decay": t.weight_decay}
    if name == "AdamW":
        optimizer.update(betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_epsilon)
    optimizer.update(literal_optim_args(t.extra_optim_args))
    return optimizer


def _schedulers(t: Any, p: MMEngineParams, max_iters: int, iters_per_epoch: int) -> list[dict[str, Any]]:
    """param_scheduler: warmup, then the main schedule, all by iteration."""
    out: list[dict[str, Any]] = []
    warmup = p.WARMUP_ITERS if p.WARMUP else (round(t.warmup_steps * max_iters) if t.warmup_steps < 1
                                              else int(t.warmup_steps))
    if warmup:
        out.append({"type": "LinearLR", "start_factor": p.WARMUP_RATIO if p.WARMUP else 1e-3, "by_epoch": False,
                    "begin": 0, "end": min(warmup, max_iters)})
    begin = p.BEGIN * iters_per_epoch if p.BEGIN else (warmup if warmup else 0)
    end = min(p.END * iters_per_epoch, max_iters) if p.END else max_iters
    if begin >= end:
        return out
    span = {"by_epoch": False, "begin": begin, "end": end}
    kind = SCHEDULERS[t.lr_scheduler_type]
    if p.MILESTONES:
        out.append({"type": "MultiStepLR", "milestones": [m * iters_per_epoch for m in p.MILESTONES],
                    "gamma": p.GAMMA, **span})
    elif kind == "linear":
        out.append({"type": "LinearLR", "start_factor": 1.0, "end_factor": 0.0, **span})
    elif kind == "cosine":
        out.append({"type": "CosineAnnealingLR", "T_max": p.T_MAX or end - begin, "eta_min": 0.0, **span})
    elif kind == "polynomial":
        out.append({"type": "PolyLR", "power": 1.0, "eta_min": 0.0, **span})
    return out


def _check_schedule(t: Any, p: MMEngineParams) -> None:
    if not p.MILESTONES and SCHEDULERS[t.lr_scheduler_type] not in MMENGINE_SCHEDULES:
        allowed = ", ".join(k for k, v in SCHEDULERS.items() if v in MMENGINE_SCHEDULES)
        raise ConfigError(f"training.lr_scheduler_type: {t.lr_scheduler_type!r} is not available for MMEngine tasks "
                          f"(allowed: {allowed}; or a step schedule with task_params.MILESTONES)")


def _intervals(run: Any, n_train: int, has_eval: bool) -> dict[str, int]:
    """Iterations: total, per epoch, between evaluations, between checkpoints, between logs."""
    t = run.training
    accumulation = t.gradient_accumulation_steps
    per_epoch = run.steps_per_epoch(n_train) * accumulation
    max_steps = run.train_steps(n_train)
    max_iters = max_steps * accumulation
    evaluation = 0
    if has_eval and t.evaluation_strategy != "no":
        if t.evaluation_steps_interval > 0:
            evaluation = max(1, round(t.evaluation_steps_interval * per_epoch))
        else:
            evaluation = per_epoch if t.evaluation_strategy == "epoch" else t.eval_steps * accumulation
    save_strategy = t.save_strategy or ("epoch" if not evaluation else None)
    if run.task_params.checkpoint_interval:
        save = run.task_params.checkpoint_interval * per_epoch
    elif save_strategy is None:
        save = evaluation
    elif save_strategy == "no":
        save = 0
    elif save_strategy == "epoch":
        save = per_epoch
    else:
        save = (t.save_steps or t.eval_steps) * accumulation
    logging_every = 0 if t.logging_strategy == "no" else (per_epoch if t.logging_strategy == "epoch"
                                                           else t.logging_steps * accumulation)
    return {"max": max_iters, "epoch": per_epoch, "eval": min(evaluation, max_iters) if evaluation else 0,
            "save": save, "log": logging_every}


def _precision(run: Any) -> bool:
    import torch

    amp = run.task_params.amp or run.training.precision != "32"
    if amp and not torch.cuda.is_available():
        raise HardwareError("amp / training.precision 16 or bf16: MMEngine's mixed precision (AmpOptimWrapper) needs a "
                            "GPU; on the CPU train with precision 32")
    return amp


def _dataloader(run: Any, split: dict[str, Any], train: bool) -> dict[str, Any]:
    t = run.training
    return {"batch_size": t.per_device_train_batch_size if train else t.per_device_eval_batch_size,
            "num_workers": t.dataloader_num_workers, "persistent_workers": False,
            "sampler": {"type": "InfiniteSampler" if train else "DefaultSampler", "shuffle": train},
            "dataset": split["dataset"]}


def runner_config(run: Any, loaded: Any, data: dict[str, dict[str, Any]], steps: dict[str, int]) -> dict[str, Any]:
    """Runner arguments that say what the run config says (``steps``: :func:`_intervals`)."""
    t = run.training
    p = run.task_params
    validation = data.get("validation")
    metric = t.metric_for_best_model.removeprefix("eval_")
    checkpoint: dict[str, Any] = {"type": _checkpoint_hook(), "by_epoch": False, "interval": steps["save"] or steps["max"] + 1,
                                  "max_keep_ckpts": t.save_total_limit, "save_last": steps["save"] > 0,
                                  "save_optimizer": True, "save_param_scheduler": True}
    if steps["eval"] and steps["save"]:
        checkpoint.update(save_best=metric, rule="less" if metric in run.task.lower_is_better else "greater")
    cfg: dict[str, Any] = {
        "work_dir": str(run.path("checkpoints")),
        "train_dataloader": _dataloader(run, data["train"], train=True),
        "train_cfg": {"type": "IterBasedTrainLoop", "max_iters": steps["max"],
                      "val_interval": steps["eval"] or steps["max"] + 1},
        "optim_wrapper": {"type": "AmpOptimWrapper" if _precision(run) else "OptimWrapper",
                          "optimizer": _optimizer(t), "accumulative_counts": t.gradient_accumulation_steps,
                          **({"paramwise_cfg": {"custom_keys": {k: {"lr_mult": v} for k, v in multipliers.items()}}}
                             if (multipliers := run.method.learning_rate_multipliers(run.method_params)) else {}),
                          **({"clip_grad": {"max_norm": t.max_grad_norm}} if t.max_grad_norm > 0 else {})},
        "param_scheduler": _schedulers(t, p, steps["max"], steps["epoch"]) or None,
        "default_hooks": {"timer": {"type": "IterTimerHook"}, "param_scheduler": {"type": "ParamSchedulerHook"},
                          "checkpoint": checkpoint, "sampler_seed": {"type": "DistSamplerSeedHook"},
                          "logger": {"type": "LoggerHook", "interval": max(steps["log"], 1)}},
        "custom_hooks": [],
        "randomness": {"seed": t.seed, "deterministic": t.enable_full_determinism},
        "log_level": "WARNING",
        "visualizer": {"type": "Visualizer", "vis_backends": []},
        "default_scope": None,
    }
    if validation is not None and steps["eval"]:
        cfg.update(val_dataloader=_dataloader(run, validation, train=False), val_evaluator=validation["evaluator"],
                   val_cfg={"type": "ValLoop"})
        if t.apply_early_stopping:
            cfg["custom_hooks"].append({"type": "EarlyStoppingHook", "monitor": metric,
                                        "rule": checkpoint["rule"], "patience": t.early_stopping_patience,
                                        "min_delta": t.early_stopping_threshold})
    if "test" in data:
        cfg.update(test_dataloader=_dataloader(run, data["test"], train=False), test_evaluator=data["test"]["evaluator"],
                   test_cfg={"type": "TestLoop"})
    if t.resume_from_checkpoint:
        cfg["resume"] = True
        if isinstance(t.resume_from_checkpoint, str):
            path = Path(t.resume_from_checkpoint)
            if not (path.is_file() or any(path.glob("*model_states.pt"))):  # a file, or a DeepSpeed folder
                raise ConfigError(f"training.resume_from_checkpoint: {path} is not a checkpoint (MMEngine tasks: a "
                                  "checkpoints/iter_N.pth of this run, a folder under deepspeed, or true for the latest)")
            cfg["load_from"] = t.resume_from_checkpoint
    cfg.update(run.task.engine_settings(run, loaded))
    cfg.update(_parallel(run, cfg["optim_wrapper"]["optimizer"]))
    return cfg


def _parallel(run: Any, optimizer: dict[str, Any]) -> dict[str, Any]:
    """Runner arguments for the backend's data-parallel strategy in a torchrun worker: MMEngine's
    DDP wrapper, or a FlexibleRunner strategy (DeepSpeed, FSDP)."""
    parallel = run.parallel
    if parallel is None:
        return {}
    if parallel.strategy == "deepspeed":
        from adapt_vision.strategies import deepspeed_settings

        return deepspeed_settings(parallel, run, optimizer)
    if parallel.strategy == "fsdp":
        from adapt_vision.strategies import fsdp_settings

        return fsdp_settings(parallel)
    return {"launcher": "pytorch", "env_cfg": {"dist_cfg": {"backend": parallel.dist_backend}},
            "model_wrapper_cfg": {"type": "MMDistributedDataParallel",
                                  "find_unused_parameters": parallel.find_unused_parameters}}


def _checkpoint_hook() -> str:
    """The name of MMEngine's CheckpointHook with one fix, registered once. After a new best
    score MMEngine saves the last checkpoint again, from after the iteration, and the runner then
    records the next iteration in it (it adds one for saves made during an iteration): a run
    resumed from it would skip an iteration. The re-save here records the iteration it is."""
    from mmengine.hooks import CheckpointHook
    from mmengine.registry import HOOKS

    name = "AdaptCheckpointHook"
    if name not in HOOKS.module_dict:

        @HOOKS.register_module(name=name)
        class AdaptCheckpointHook(CheckpointHook):
            def _save_checkpoint_with_step(self, runner: Any, step: int, meta: dict[str, Any]) -> None:
                after_iteration = not self.by_epoch and runner.iter == step  # the re-save after a new best
                runner.train_loop._iter -= after_iteration  # noqa: SLF001 - what runner.save_checkpoint reads
                try:
                    super()._save_checkpoint_with_step(runner, step, meta)
                finally:
                    runner.train_loop._iter += after_iteration  # noqa: SLF001

    return name


def _run_hook(run: Any, steps: dict[str, int], traceable: bool) -> Any:
    """The run's hook (built per run: MMEngine's Hook base is imported lazily): writes logs to
    metrics.jsonl, tells the plugins, shows progress, tells the method of each optimizer step, measures the peak tensor memory (traced on the
    CPU only where ``traceable``: not through a strategy's engine) and stops cleanly on SIGTERM / Ctrl-C."""
    from mmengine.hooks import Hook
    from tqdm.auto import tqdm

    class RunHook(Hook):
        priority = "LOW"

        def __init__(self) -> None:
            self.window: dict[str, list[float]] = {}
            self.bar: Any = None
            self.losses: list[float] = []  # every iteration's, for train_loss (the run's mean, as HF's)
            self.training = False
            self.device: str | None = None
            self.rng_before_val: dict[str, Any] | None = None
            self.memory: Any = None

        def before_train(self, runner: Any) -> None:
            self.training = True
            self.device = run.device_line(next(runner.model.parameters()).device, "amp" if _precision(run) else "fp32")
            optimizer = getattr(runner.optim_wrapper, "optimizer", None)
            self.memory = peak_memory(run, runner.model, optimizer, traceable=traceable)
            if type(run.method).after_optimizer_step is not Method.after_optimizer_step:  # the method uses it
                if not hasattr(optimizer, "register_step_post_hook"):  # DeepSpeed's ZeRO optimizers
                    raise ConfigError(f"method {run.method.name} acts after each optimizer step, which "
                                      f"{type(optimizer).__name__} does not let it do; train it without deepspeed")
                model = getattr(runner.model, "module", runner.model)  # inside update_params: gradients still there
                optimizer.register_step_post_hook(lambda *_: run.method.after_optimizer_step(
                    model, run.method_params, runner.iter, steps["max"]))
            if run.is_main_process and progress_bars():
                self.bar = tqdm(total=steps["max"], initial=runner.iter, desc="train", unit="it", file=sys.stderr)
            if runner.iter:  # resumed: random state as it was after that iteration, see _RandomState
                _RandomState(runner).restore_before_next_batch(runner)

        def before_val(self, runner: Any) -> None:
            if self.training:  # evaluating never moves the training's random stream (the DataLoader draws a seed)
                self.rng_before_val = _RandomState.get()

        def after_val(self, runner: Any) -> None:
            if self.rng_before_val is not None:
                _RandomState.set(self.rng_before_val)
                self.rng_before_val = None

        def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
            if self.memory is not None:
                self.memory.before_step()

        def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            if self.memory is not None:
                self.memory.after_step()
            for key, value in (outputs or {}).items():
                self.window.setdefault(key, []).append(float(value.detach() if hasattr(value, "detach") else value))
            if "loss" in (outputs or {}):
                self.losses.append(self.window["loss"][-1])
            step = runner.iter + 1
            if self.bar is not None:
                self.bar.update(1)
            if steps["log"] and step % steps["log"] == 0:
                means = {k: sum(v) / len(v) for k, v in self.window.items()}
                self.window = {}
                lr = runner.optim_wrapper.get_lr()
                means["learning_rate"] = next(iter(lr.values()))[0] if lr else None
                self._record(runner, step, means)
            stopping = run.should_stop()
            if stopping or (steps["save"] and (step % steps["save"] == 0 or step == steps["max"])):
                _RandomState(runner).save(step)  # before the CheckpointHook (lower priority) writes iter_<step>
            if stopping:
                checkpoint_hook = next(h for h in runner.hooks if type(h).__name__ == _checkpoint_hook())
                checkpoint_hook._save_checkpoint(runner)  # noqa: SLF001 - MMEngine's own save + last_checkpoint
                runner.train_loop.stop_training = True

        def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
            if self.training:  # the evaluations after training are reported by the engine
                self._record(runner, runner.iter, {f"eval_{k}": v for k, v in (metrics or {}).items()})

        def after_train(self, runner: Any) -> None:
            from mmengine.dist import barrier

            self.training = False
            barrier()  # rank 0 may still be writing the last checkpoint: the others' states for it are not orphans
            _RandomState(runner).prune()
            if self.bar is not None:
                self.bar.close()

        def _record(self, runner: Any, step: int, values: dict[str, Any]) -> None:
            run.log_metrics(step, values, round(step / max(steps["epoch"], 1), 4))

    return RunHook()


class _RandomState:
    """Each rank's random state (python, numpy, torch) at a checkpoint, which MMEngine checkpoints
    do not hold, so that a resumed run draws what an uninterrupted one would (dropout, RoI
    samplers, augmentations): written beside the checkpoints as rng_state/iter_<N>.rank<R>.pth,
    and restored just before the first new batch is read (after MMEngine skips the trained ones)."""

    def __init__(self, runner: Any) -> None:
        from mmengine.dist import get_rank

        self.folder, self.rank = Path(runner.work_dir) / "rng_state", get_rank()

    @staticmethod
    def get() -> dict[str, Any]:
        import random

        import numpy as np
        import torch

        name, keys, *rest = np.random.get_state()
        return {"python": random.getstate(), "numpy": [name, keys.tolist(), *rest], "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    @staticmethod
    def set(state: dict[str, Any]) -> None:
        import random

        import numpy as np
        import torch

        random.setstate(state["python"])
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def file(self, step: int) -> Path:
        return self.folder / f"iter_{step}.rank{self.rank}.pth"

    def save(self, step: int) -> None:
        """Write this rank's state for iteration ``step`` (atomically), and drop the states of
        checkpoints that save_total_limit has removed."""
        import os

        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.file(step).with_suffix(".partial")
        torch.save(self.get(), partial)
        os.replace(partial, self.file(step))
        self.prune(keep=self.file(step))

    def prune(self, keep: Path | None = None) -> None:
        """Drop this rank's states whose checkpoint is gone (save_total_limit removed it)."""
        for old in self.folder.glob(f"iter_*.rank{self.rank}.pth"):
            if old != keep and not (self.folder.parent / old.name.split(".")[0]).with_suffix(".pth").exists():
                old.unlink(missing_ok=True)

    def restore_before_next_batch(self, runner: Any) -> None:
        """Restore the state of iteration ``runner.iter`` when the loop reads its next new batch
        (a checkpoint written before this existed has none: the run continues without it)."""
        import torch

        file = self.file(runner.iter)
        if not file.is_file():
            log.debug("no random state for iteration %d (%s): continuing without it", runner.iter, file)
            return
        state = torch.load(file, weights_only=True)
        loop, skip = runner.train_loop, runner.iter

        class Restoring:
            def __init__(self, inner: Any) -> None:
                self.inner, self.calls = inner, 0

            def __next__(self) -> Any:
                if self.calls == skip:
                    _RandomState.set(state)
                    loop.dataloader_iterator = self.inner
                self.calls += 1
                return next(self.inner)

        loop.dataloader_iterator = Restoring(loop.dataloader_iterator)


@contextmanager
def checkpoint_globals() -> Any:
    """torch.load keeps weights_only=True. The checkpoints MMEngine writes for a run also hold its
    message hub (HistoryBuffer of numpy arrays): exactly the classes those need are allowed,
    only while this run reads its own checkpoints (resume, best model); never for user files."""
    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer

    allowed = [HistoryBuffer, np.ndarray, np.dtype, np._core.multiarray._reconstruct, np._core.multiarray.scalar,
               getattr,  # numpy 2 pickles its dtype classes as getattr(numpy.dtypes, name)
               *(type(np.dtype(name)) for name in ("float64", "float32", "float16", "int64", "int32", "uint8", "bool"))]
    with torch.serialization.safe_globals(allowed):
        yield


def _distributed(cfg: dict[str, Any]) -> None:
    """A backend asked for ``launcher: pytorch`` (we are a torchrun worker): join the process
    group here, for the Runner and a backend's FlexibleRunner strategy alike, as MMEngine's own
    init would select a GPU even on a CPU-only machine; and on the CPU use a DDP wrapper without
    device ids (MMEngine's always passes the local GPU's)."""
    import os

    import torch
    import torch.distributed as dist

    if cfg.get("launcher", "none") == "none":
        return
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=cfg.get("env_cfg", {}).get("dist_cfg", {}).get("backend"))
    wrapper = cfg.get("model_wrapper_cfg") or {}
    if wrapper.get("type") == "MMDistributedDataParallel" and not torch.cuda.is_available():
        from mmengine.model import MMDistributedDataParallel
        from mmengine.registry import MODEL_WRAPPERS

        if "CPUDistributedDataParallel" not in MODEL_WRAPPERS.module_dict:
            @MODEL_WRAPPERS.register_module(name="CPUDistributedDataParallel")
            class CPUDistributedDataParallel(MMDistributedDataParallel):
                def __init__(self, module: Any, device_ids: Any = None, **kwargs: Any) -> None:  # noqa: ARG002
                    super().__init__(module=module, device_ids=None, **kwargs)

        cfg["model_wrapper_cfg"] = {**wrapper, "type": "CPUDistributedDataParallel"}


def _runner(run: Any, loaded: Any, cfg: dict[str, Any]) -> Any:
    from mmengine.logging import MMLogger
    from mmengine.runner import FlexibleRunner, Runner

    _distributed(cfg)
    if "strategy" in cfg:  # DeepSpeed, FSDP: MMEngine's FlexibleRunner runs a strategy
        runner = FlexibleRunner(model=loaded.model, **cfg)
    else:
        wrapper = cfg.pop("model_wrapper_cfg", None)  # read by the Runner from its `cfg`
        runner = Runner(model=loaded.model, **cfg, **({"cfg": {"model_wrapper_cfg": wrapper}} if wrapper else {}))
    logger = MMLogger.get_current_instance()
    logger.addFilter(_drop_known_notices)
    route_library_logger(logger)  # MMEngine's notices to train.log; its errors still on the terminal
    return runner


def _drop_known_notices(record: logging.LogRecord) -> bool:
    """MMEngine notices that say nothing about the run: the model's init_weights is called again
    by the Runner (a no-op on an initialised model), a renamed file backend."""
    message = record.getMessage()
    return not ("has been called more than once" in message or "is the alias of" in message)


@contextmanager
def library_prints_to_debug_log() -> Any:
    """pycocotools / xtcocotools print progress ("loading annotations into memory...") whenever a
    dataset or evaluator reads a COCO file: those lines go to the debug log, not the terminal."""
    import contextlib
    import io

    class Writer(io.TextIOBase):
        def write(self, text: str) -> int:
            if text.strip():
                log.debug("%s", text.rstrip())
            return len(text)

    with contextlib.redirect_stdout(Writer()):
        yield


class MMEngineEngine(Engine):
    name = "mmengine"
    description = ("MMEngine Runner (OpenMMLab): the run config's training parameters as an iteration-based loop, "
                   "optimizer wrapper, schedulers and hooks; one process, ddp, deepspeed or fsdp (FSDP1).")
    strategies = frozenset({"ddp", "deepspeed", "fsdp"})
    task_params = MMEngineParams

    def check(self, run: Any) -> None:
        _optimizer(run.training)  # an HF Trainer optimizer, or extra_optim_args that are no Python literals
        _check_schedule(run.training, run.task_params)
        if run.backend.strategy == "fsdp":
            from adapt_vision.strategies import check_fsdp

            check_fsdp(run.parallel.fsdp, run.task.name)
        _precision(run)  # mixed precision needs a GPU (this machine's limit, checked last)

    def train(self, run: Any) -> dict[str, Any]:
        return train(run)

    def evaluate(self, run: Any, model_dir: str, path: str) -> dict[str, Any]:
        return evaluate(run, model_dir, path)

    def gather_weights(self, model: Any, run: Any) -> AbstractContextManager[Any]:
        if run.backend.strategy == "fsdp":  # the strategy wrapped the model as one FSDP1 unit
            from adapt_vision.strategies import unsharded

            return unsharded(model)
        return super().gather_weights(model, run)


def train(run: Any) -> dict[str, Any]:
    """Load, adapt, train, save and test; return the final metrics."""
    from mmengine.runner import set_random_seed

    t = run.training
    set_random_seed(t.seed, deterministic=t.enable_full_determinism)
    loaded, params = run.load_for_training()
    data = run.task.load_data(run, loaded, run.data_files())
    steps = _intervals(run, data["train"]["size"], "validation" in data)
    cfg = runner_config(run, loaded, data, steps)
    hook = _run_hook(run, steps, traceable="strategy" not in cfg)
    runner = _runner(run, loaded, cfg)
    runner.register_hook(hook)
    started = time.time()
    try:
        with run.catch_stop_signals(), checkpoint_globals(), library_prints_to_debug_log():
            runner.train()
    except (RuntimeError, KeyError) as exc:
        run.resume_mismatch(exc)
        raise
    run.raise_if_stopped()
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    train_loss = sum(hook.losses) / len(hook.losses) if hook.losses else None  # of this process's iterations
    metrics: dict[str, Any] = {"train": {"train_loss": train_loss, "train_runtime": round(time.time() - started, 3),
                                         "train_iterations": steps["max"]}, **params,
                               **({"peak_tensor_memory_mib": hook.memory.mib} if hook.memory and hook.memory.mib else {}),
                               "train_batch_size": t.per_device_train_batch_size, "device": hook.device}
    best = runner.message_hub.get_info("best_ckpt")
    if best:
        from mmengine.dist import barrier
        from mmengine.runner import load_checkpoint

        barrier()  # rank 0 writes it; the others wait until it is there

        with checkpoint_globals():
            if "strategy" in cfg:  # a strategy (DeepSpeed, FSDP) reads its own checkpoints into its model
                runner.load_checkpoint(best)
            else:
                load_checkpoint(model, best, map_location="cpu", logger="silent")
        metrics["best_checkpoint"] = best
        metrics["best_metric"] = runner.message_hub.get_info("best_score")
    with library_prints_to_debug_log():
        if "val_dataloader" in cfg:
            metrics["validation"] = {f"eval_{k}": v for k, v in runner.val().items()}
        if "test_dataloader" in cfg:  # before saving: merging changes rank 0's model
            metrics["test"] = {f"test_{k}": v for k, v in runner.test().items()}
            run.save_pictures("test", lambda: run.task.figures(run, loaded, runner.test_evaluator))
    return run.finish(loaded, model, metrics)


def evaluate(run: Any, model_dir: str, path: str) -> dict[str, Any]:
    """Metrics of a saved model on one data file."""
    loaded = run.load_saved(model_dir)
    data = run.task.load_data(run, loaded, {"test": path})["test"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"work_dir": tmp, "test_dataloader": _dataloader(run, data, train=False), "test_evaluator": data["evaluator"],
               "test_cfg": {"type": "TestLoop"}, "log_level": "WARNING", "default_scope": None,
               "visualizer": {"type": "Visualizer", "vis_backends": []}}
        cfg.update(run.task.engine_settings(run, loaded))
        runner = _runner(run, loaded, cfg)
        with library_prints_to_debug_log():
            metrics = {f"test_{k}": v for k, v in runner.test().items()}
        if run.pictures_dir is not None:  # adapt evaluate --results
            run.save_pictures("test", lambda: run.task.figures(run, loaded, runner.test_evaluator))
        return metrics
