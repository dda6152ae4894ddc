"""HF Trainer engine: maps the common training parameters and the backend's data-parallel
settings onto TrainingArguments and callbacks, and runs a task's training and evaluation
through ``transformers.Trainer`` (:class:`adapt.builtins.HFEngine` registers it)."""

from __future__ import annotations

import errno
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    EarlyStoppingCallback,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from adapt.api import Parallel
from adapt.config import OPTIMIZERS, SCHEDULERS, TrainingConfig, optim_args
from adapt.engines import check_save_steps
from adapt.errors import ConfigError, StorageError
from adapt.logs import progress_bars
from adapt.memory import peak_memory
from adapt.run import Run

log = logging.getLogger("adapt")


def _device(t: TrainingConfig) -> dict[str, bool]:
    """Device and precision fields: the CPU when there is no GPU; precision 16 is bf16 there."""
    cuda = torch.cuda.is_available()
    settings = {"use_cpu": not cuda, "dataloader_pin_memory": cuda}
    if t.precision == "16" and cuda:
        settings["fp16"] = True
    elif t.precision != "32":
        if t.precision == "16":
            log.warning("precision 16: fp16 mixed precision needs a GPU; training in bf16 on the CPU instead")
        settings["bf16"] = True
    return settings


def _arguments(run: Run, kwargs: dict[str, Any]) -> TrainingArguments:
    """TrainingArguments, or Seq2SeqTrainingArguments generating as the task says; transformers'
    own checks of a combination of settings become config errors."""
    generation = run.task.generation_settings(run)
    try:
        if generation is not None:
            return Seq2SeqTrainingArguments(**kwargs, predict_with_generate=True, **generation)
        return TrainingArguments(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"training settings rejected by transformers: {exc}") from None


def training_arguments(run: Run, n_train: int, has_eval: bool, **extra: Any) -> TrainingArguments:
    """The TrainingArguments that say what the run config says."""
    t = run.training
    eval_strategy = t.evaluation_strategy if has_eval else "no"
    eval_steps = t.eval_steps
    if eval_strategy != "no" and t.evaluation_steps_interval > 0:
        eval_strategy = "steps"
        eval_steps = max(1, round(t.evaluation_steps_interval * run.steps_per_epoch(n_train)))
    save_strategy = t.save_strategy or (eval_strategy if eval_strategy != "no" else "epoch")
    save_steps = t.save_steps or eval_steps
    load_best = eval_strategy != "no" and save_strategy != "no"
    if load_best and save_strategy == "steps":
        check_save_steps(save_steps, eval_steps)
    optim = OPTIMIZERS[t.optim].hf
    if optim != t.optim:
        log.info("optim %s is not in transformers 5; using %s (the same AdamW)", t.optim, optim)
    metric = t.metric_for_best_model.removeprefix("eval_")
    kwargs: dict[str, Any] = dict(
        output_dir=str(run.path("checkpoints")),
        num_train_epochs=run.train_epochs(n_train) if t.max_steps <= 0 else t.num_train_epochs, max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        auto_find_batch_size=t.auto_find_batch_size, optim=optim,
        optim_args=",".join(f"{k}={v}" for k, v in optim_args(t.extra_optim_args).items()) or None,
        **({"optim_target_modules": t.optim_target_modules or r".*"} if t.optim.startswith(("galore", "apollo")) else {}),
        learning_rate=t.learning_rate,
        lr_scheduler_type=SCHEDULERS[t.lr_scheduler_type],
        warmup_steps=t.warmup_steps, weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1, adam_beta2=t.adam_beta2, adam_epsilon=t.adam_epsilon,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        eval_accumulation_steps=t.eval_accumulation_steps,
        seed=t.seed, full_determinism=t.enable_full_determinism,
        dataloader_num_workers=t.dataloader_num_workers, max_grad_norm=t.max_grad_norm,
        eval_strategy=eval_strategy, eval_steps=eval_steps,
        logging_strategy=t.logging_strategy, logging_steps=t.logging_steps,
        save_strategy=save_strategy, save_steps=save_steps,
        save_total_limit=None if t.save_total_limit < 0 else t.save_total_limit,
        load_best_model_at_end=load_best, metric_for_best_model=metric,
        greater_is_better=metric not in run.task.lower_is_better,
        gradient_checkpointing=t.gradient_checkpointing,
        label_smoothing_factor=t.label_smoothing_factor,
        label_names=list(run.task.label_names), report_to="none", disable_tqdm=not progress_bars(),
        # On by default in transformers 5, it multiplies each process's loss by the number of
        # processes, expecting models that divide by the global token count; most (classifiers...)
        # do not, and under any multi-process backend their losses and gradients would be doubled.
        # Each process's own mean, averaged across processes, is right (one process: no effect).
        average_tokens_across_devices=False,
        **_device(t),
    )
    kwargs.update(_parallel(run.parallel))
    kwargs.update(extra)
    return _arguments(run, kwargs)


def _parallel(parallel: Parallel | None) -> dict[str, Any]:
    """TrainingArguments fields for a backend's data-parallel strategy (the Trainer itself joins
    torchrun's process group)."""
    if parallel is None:
        return {}
    settings: dict[str, Any] = {"ddp_backend": parallel.dist_backend}
    if parallel.strategy == "ddp":
        settings["ddp_find_unused_parameters"] = parallel.find_unused_parameters
    elif parallel.strategy == "deepspeed":
        settings["deepspeed"] = parallel.deepspeed_config  # the Trainer fills its "auto" values
    elif parallel.strategy == "fsdp":
        p = parallel.fsdp
        config: dict[str, Any] = {  # transformers 5 runs FSDP2; HFEngine.check refused FSDP1-only settings
            "version": 2, "reshard_after_forward": p.sharding_strategy == "FULL_SHARD", "cpu_offload": p.offload_params,
            "auto_wrap_policy": p.auto_wrap_policy, "cpu_ram_efficient_loading": p.cpu_ram_efficient_loading,
            "state_dict_type": p.state_dict_type}
        if p.auto_wrap_policy == "SIZE_BASED_WRAP":
            config["min_num_params"] = p.min_num_params
        elif p.transformer_layer_cls_to_wrap:
            config["transformer_layer_cls_to_wrap"] = p.transformer_layer_cls_to_wrap
        settings.update(fsdp=True, fsdp_config=config)
    return settings


class ProgressBar(ProgressCallback):
    """HF's progress bars (on stderr) without its printing of every log to stdout: RunCallback
    logs them, and stdout stays for the command's JSON result."""

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
        return None


def _progress(trainer: Trainer) -> Trainer:
    """Progress bars on a terminal; elsewhere none, and no printing of logs (adapt logs each one)."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if not trainer.args.disable_tqdm:
        trainer.add_callback(ProgressBar)
    return trainer


class RunCallback(TrainerCallback):
    """Records every log in the run (metrics.jsonl, the plugins), measures the peak tensor memory
    (adapt.memory), tells the method of each optimizer step and stops cleanly on SIGTERM."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.memory: Any = None
        self.started = False

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):  # noqa: ANN001, ANN201
        if not self.started:
            self.started = True
            self.memory = peak_memory(self.run, model, optimizer, traceable=not args.deepspeed and not args.fsdp)
        if self.memory is not None:
            self.memory.before_step()

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: ANN001, ANN201
        self.run.method.after_optimizer_step(model, self.run.method_params, state.global_step, state.max_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
        if logs:
            self.run.log_metrics(state.global_step, logs, state.epoch)

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        if self.memory is not None:
            self.memory.after_step()
        if self.run.should_stop():
            control.should_save = True
            control.should_training_stop = True
        return control


def complete_checkpoint(folder: Path) -> bool:
    """HF writes trainer_state.json last, in place: a checkpoint whose trainer_state.json is
    missing or does not parse was cut off mid-write (a crash, kill -9, a full disk)."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint; incomplete ones are reported and skipped."""
    checkpoints = sorted((p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
                         key=lambda p: int(p.name[11:]), reverse=True)
    for checkpoint in checkpoints:
        if complete_checkpoint(checkpoint):
            return str(checkpoint)
        log.warning("skipping %s: it was not completely written (no readable trainer_state.json)", checkpoint)
    return None


def _resume_path(run: Run) -> str | None:
    resume = run.training.resume_from_checkpoint
    if resume is False:
        return None
    if resume is True:
        folder = run.path("checkpoints")
        last = last_complete_checkpoint(folder) if folder.is_dir() else None
        if last is None:
            log.warning("resume_from_checkpoint: no checkpoint in %s yet; starting from the beginning", folder)
        else:
            log.info("resuming from %s", last)
        return last
    if not Path(resume).is_dir():
        raise ConfigError(f"training.resume_from_checkpoint: {resume} is not a checkpoint folder")
    if not complete_checkpoint(Path(resume)):
        raise ConfigError(f"training.resume_from_checkpoint: {resume} was not completely written (no readable "
                          "trainer_state.json); choose an earlier checkpoint or resume_from_checkpoint: true")
    return str(resume)


def _disk_full(exc: BaseException | None, folder: Path) -> bool:
    """ENOSPC anywhere in the chain, or a failed write (torch.save reports a stream error, not
    ENOSPC) on a file system with less than 1 MiB left."""
    while exc is not None:
        if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc):
            return True
        if isinstance(exc, (OSError, RuntimeError)) and any(
                sign in str(exc) for sign in ("iostream error", "unexpected pos", "file write failed")):
            try:
                return shutil.disk_usage(folder).free < 2**20
            except OSError:
                return False
        exc = exc.__cause__ or exc.__context__
    return False


def train(run: Run) -> dict[str, Any]:
    """Load, adapt, train, save and test; return the final metrics. A full disk is reported as
    such: the checkpoints completed before it stay, and the run can resume once there is room."""
    try:
        return _train(run)
    except Exception as exc:
        if not _disk_full(exc, run.output_dir):
            raise
        folder = run.path("checkpoints")
        last = last_complete_checkpoint(folder) if folder.is_dir() else None
        kept = f"the last complete checkpoint, {last}, is intact" if last else "no checkpoint had been completed"
        raise StorageError(f"no space left on the device of {run.output_dir} while saving; {kept}. Free some space, "
                           "then continue with --set training.resume_from_checkpoint=true") from None


def _train(run: Run) -> dict[str, Any]:
    t = run.training
    transformers.set_seed(t.seed)
    loaded, params = run.load_for_training()

    data = run.task.load_data(run, loaded, run.data_files())
    train_ds, eval_ds, test_ds = data["train"], data.get("validation"), data.get("test")
    args = training_arguments(run, len(train_ds), eval_ds is not None,
                              train_sampling_strategy="group_by_length" if _group_by_length(run, train_ds) else "random")

    recorder = RunCallback(run)
    callbacks: list[TrainerCallback] = [recorder]
    if t.apply_early_stopping:
        callbacks.append(EarlyStoppingCallback(t.early_stopping_patience, t.early_stopping_threshold))
    trainer = _trainer(run, loaded, args, train_dataset=train_ds, eval_dataset=eval_ds, callbacks=callbacks)
    device = run.device_line(args.device, "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32")

    resume = _resume_path(run)
    try:
        with run.catch_stop_signals():
            output = trainer.train(resume_from_checkpoint=resume)
    except (RuntimeError, ValueError) as exc:
        if resume:
            run.resume_mismatch(exc, resume)
        raise
    run.raise_if_stopped()

    metrics: dict[str, Any] = {"train": output.metrics, **params, "train_batch_size": trainer._train_batch_size,
                               "device": device}
    if recorder.memory is not None and recorder.memory.mib:
        metrics["peak_tensor_memory_mib"] = recorder.memory.mib
    if t.auto_find_batch_size and trainer._train_batch_size != t.per_device_train_batch_size:
        log.warning("auto_find_batch_size: per_device_train_batch_size %d did not fit in memory; trained with %d",
                    t.per_device_train_batch_size, trainer._train_batch_size)
    if trainer.state.best_model_checkpoint:
        metrics["best_checkpoint"] = trainer.state.best_model_checkpoint
        metrics["best_metric"] = trainer.state.best_metric
    if eval_ds is not None:
        metrics["validation"] = trainer.evaluate(eval_ds)
    if test_ds is not None:  # before saving: merging changes rank 0's model, and workers must stay alike
        metrics["test"] = trainer.evaluate(test_ds, metric_key_prefix="test")
        _pictures(run, loaded, trainer, "test")
        if trainer.last_prediction is not None and (baseline := run.task.baselines(run, loaded, trainer.last_prediction)):
            metrics["baseline"] = {"test": {f"test_{k}": v for k, v in baseline.items()}}
    return run.finish(loaded, trainer.model, metrics)


def _group_by_length(run: Run, train_ds: Any) -> bool:
    """Whether training batches are grouped by length: training.group_by_length, or (None) where the
    training data is tokenised text whose lengths vary."""
    import datasets

    wanted = run.training.group_by_length
    tokenised = isinstance(train_ds, datasets.Dataset) and "input_ids" in train_ds.column_names
    if wanted and not tokenised:
        raise ConfigError(f"training.group_by_length: the training data of task {run.task.name} is not tokenised "
                          "text (no input_ids to group by); leave it unset")
    if wanted is None and tokenised and len(train_ds) > run.training.per_device_train_batch_size:
        lengths = {len(ids) for ids in train_ds.select(range(min(len(train_ds), 1000)))["input_ids"]}
        wanted = len(lengths) > 1
    if wanted:
        log.info("training batches grouped by length, so that less padding is computed (training.group_by_length)")
    return bool(wanted)


class _EvaluateInOrder:
    """Evaluation batches in the data's order when training batches are grouped by length
    (transformers 5 groups evaluation batches too, shuffled): token-averaged losses then match
    `adapt evaluate`'s, and metrics that map predictions back to rows see them in order."""

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        if self.args.train_sampling_strategy != "group_by_length" or eval_dataset is None:
            return super()._get_eval_sampler(eval_dataset)
        return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None


class _MethodLearningRates:
    """The optimizer's parameter groups split by the method's learning-rate multipliers (split
    before the first step and before the scheduler reads each group's rate)."""

    multipliers: dict[str, float] = {}

    def create_optimizer(self, model: Any = None) -> Any:
        optimizer = super().create_optimizer(model)
        if self.multipliers:
            names = {id(p): n for n, p in (model or self.model).named_parameters()}
            groups = []
            for group in optimizer.param_groups:
                by_factor: dict[float, list[Any]] = {}
                for param in group["params"]:
                    name = names.get(id(param), "")
                    factor = next((v for k, v in self.multipliers.items() if k in name), 1.0)
                    by_factor.setdefault(factor, []).append(param)
                groups += [{**group, "params": ps, "lr": group["lr"] * f} for f, ps in by_factor.items()]
            optimizer.param_groups = groups
        return optimizer


class _FrozenInt8OnCPU:
    """The best checkpoint's trainable tensors alone, for a model with bitsandbytes 8-bit layers on
    the CPU (qssf): bitsandbytes cannot load their int8 state into an unquantized (CPU) layer,
    and those frozen weights never changed, so the trainable ones are all that differ."""

    def _load_best_model(self) -> None:
        if not any(type(m).__name__ == "Linear8bitLt" and not m.weight.is_cuda for m in self.model.modules()):
            return super()._load_best_model()
        from safetensors.torch import load_file

        trainable = {name for name, p in self.model.named_parameters() if p.requires_grad}
        state = load_file(str(Path(self.state.best_model_checkpoint) / "model.safetensors"))
        missing = trainable - set(state)
        if missing:
            raise StorageError(f"the best checkpoint {self.state.best_model_checkpoint} lacks {sorted(missing)[:3]}")
        self.model.load_state_dict({k: v for k, v in state.items() if k in trainable}, strict=False)


class _Trainer(_FrozenInt8OnCPU, _EvaluateInOrder, _MethodLearningRates, Trainer):
    pass


class _Seq2SeqTrainer(_FrozenInt8OnCPU, _EvaluateInOrder, _MethodLearningRates, Seq2SeqTrainer):
    pass


def _trainer(run: Run, loaded: Any, args: TrainingArguments, **kwargs: Any) -> Trainer:
    """The Trainer (Seq2SeqTrainer for generating tasks) for a task's model and data."""
    task = run.task
    cls = _Seq2SeqTrainer if isinstance(args, Seq2SeqTrainingArguments) else _Trainer
    metrics_of = task.compute_metrics(run, loaded)

    def compute(prediction: Any) -> dict[str, float]:
        trainer.last_prediction = prediction  # the last evaluation's, for the task's pictures and baselines
        return metrics_of(prediction)

    trainer = cls(model=loaded.model, args=args, data_collator=task.data_collator(run, loaded),
                  processing_class=loaded.processor, compute_metrics=compute if metrics_of else None,
                  preprocess_logits_for_metrics=task.preprocess_logits(run, loaded), **kwargs)
    trainer.multipliers = run.method.learning_rate_multipliers(run.method_params)
    trainer.last_prediction = None
    return _progress(trainer)


def _pictures(run: Run, loaded: Any, trainer: Trainer, split: str) -> None:
    """The task's pictures of the split just evaluated (Run.save_pictures)."""
    prediction = trainer.last_prediction
    if prediction is not None:
        run.save_pictures(split, lambda: run.task.figures(run, loaded, prediction))


def _eval_trainer(run: Run, loaded: Any, folder: str) -> Trainer:
    args = _arguments(run, dict(output_dir=folder, per_device_eval_batch_size=run.training.per_device_eval_batch_size,
                                report_to="none", label_names=list(run.task.label_names), **_device(run.training)))
    return _trainer(run, loaded, args)


def evaluate(run: Run, model_dir: str, path: str) -> dict[str, Any]:
    """Metrics of a saved model on one data file."""
    loaded = run.load_saved(model_dir)
    data = run.task.load_data(run, loaded, {"test": path})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _eval_trainer(run, loaded, tmp)
        metrics = trainer.evaluate(data["test"], metric_key_prefix="test")
    if run.pictures_dir is not None:
        _pictures(run, loaded, trainer, "test")
    return metrics
