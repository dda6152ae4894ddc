"""The core's own plugin: the HF Trainer engine, the ``single`` backend and the torch-only savers.
Registered through the same hooks as any installed pack."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from adapt.api import Backend, Engine, LoadedModel, Saver
from adapt.engines import check_save_steps
from adapt.errors import ConfigError, HardwareError, ModelError, PluginError, first_line
from adapt.hookspecs import hookimpl


class HFEngine(Engine):
    name = "hf"
    description = ("Hugging Face Trainer (transformers): the run config's training parameters as TrainingArguments; "
                   "one process, ddp, deepspeed or fsdp (FSDP2, on GPUs).")
    strategies = frozenset({"ddp", "deepspeed", "fsdp"})

    def check(self, run: Any) -> None:
        t, data = run.training, run.config.data
        _check_projected_optimizer(run)
        if (t.evaluation_strategy == "steps" and t.save_strategy == "steps" and t.evaluation_steps_interval == 0
                and (data.validation or data.validation_split)):
            check_save_steps(t.save_steps or t.eval_steps, t.eval_steps)
        parallel = run.parallel
        if parallel is None or parallel.strategy != "fsdp":
            return
        p = parallel.fsdp
        # transformers 5 runs FSDP2 (fully_shard); FSDP1's knobs below have no FSDP2 counterpart
        fsdp1_only = {"backward_prefetch": "BACKWARD_PRE", "forward_prefetch": False, "use_orig_params": True,
                      "sync_module_states": True}
        changed = [k for k, default in fsdp1_only.items() if getattr(p, k) != default]
        if changed:
            raise ConfigError(f"backend_params.{changed[0]}: an FSDP1 setting; transformers 5 runs FSDP2, which always "
                              "prefetches, keeps the original parameters and starts every rank from the same weights "
                              "(cpu_ram_efficient_loading: load on rank 0 and broadcast)")
        if p.sharding_strategy in ("NO_SHARD", "HYBRID_SHARD"):
            raise ConfigError(f"backend_params.sharding_strategy {p.sharding_strategy}: not offered by FSDP2 in "
                              "transformers 5; use FULL_SHARD or SHARD_GRAD_OP (or backend ddp for no sharding)")
        if p.mixed_precision != "no":
            raise ConfigError("backend_params.mixed_precision: FSDP2 follows training.precision; set that instead")
        import torch

        if not torch.cuda.is_available():
            # measured with torch 2.14 / transformers 5.23 / accelerate 1.15: on CPU the run completes but the
            # model is never sharded (accelerate runs it as plain multi-CPU data parallel), so refuse
            raise HardwareError(f"backend {run.backend.name} needs CUDA GPUs: on the CPU, accelerate does not shard "
                                "the model (the run would silently be plain data parallel). On CPU use backend ddp, "
                                "or deepspeed for ZeRO sharding")

    def train(self, run: Any) -> dict[str, Any]:
        return _trainer_engine().train(run)

    def evaluate(self, run: Any, model_dir: str, path: str) -> dict[str, Any]:
        return _trainer_engine().evaluate(run, model_dir, path)


def _trainer_engine() -> ModuleType:
    """The HF engine's code (transformers is imported only by a run that uses it)."""
    try:
        from adapt.engines import hf
    except ImportError as exc:
        raise PluginError(f"engine hf needs the Hugging Face libraries, which do not import here ({first_line(exc)}): "
                          "pip install 'adapt-core[hf]'") from None
    return hf


class SingleBackend(Backend):
    name = "single"
    description = "One process on this machine (the GPU if there is one, else the CPU)."

    def launch(self, run_in_worker: Callable[[], Any], run: Any) -> Any:
        return run_in_worker()


class StateDictSaver(Saver):
    name = "state_dict"
    description = "torch.save of the model's state_dict (model_state_dict.pt); reloads with weights_only=True."
    filename = "model_state_dict.pt"

    def save(self, loaded: LoadedModel, folder: str, run: Any) -> list[str]:
        import torch

        path = Path(folder) / self.filename
        torch.save(loaded.model.state_dict(), path)
        return [str(path)]

    def load(self, folder: str, like: Any = None) -> Any:
        import torch

        if like is None:
            raise ModelError("a state_dict holds weights only: give the model to load them into")
        state = torch.load(Path(folder) / self.filename, map_location="cpu", weights_only=True)
        like.load_state_dict(state)
        return like


class SafetensorsSaver(Saver):
    name = "safetensors"
    description = "The model's weights as model.safetensors (no pickle; shared tensors handled)."
    filename = "model.safetensors"

    def save(self, loaded: LoadedModel, folder: str, run: Any) -> list[str]:
        from safetensors.torch import save_model

        path = Path(folder) / self.filename
        save_model(loaded.model, str(path))
        return [str(path)]

    def load(self, folder: str, like: Any = None) -> Any:
        from safetensors.torch import load_model

        if like is None:
            raise ModelError("safetensors holds weights only: give the model to load them into")
        load_model(like, str(Path(folder) / self.filename))
        return like


class FullTorchModelSaver(Saver):
    name = "full_torch_model"
    description = ("The whole module pickled by torch.save (model.pt). Loading unpickles code: "
                   "only load files you made yourself.")
    filename = "model.pt"

    def save(self, loaded: LoadedModel, folder: str, run: Any) -> list[str]:
        import torch

        path = Path(folder) / self.filename
        torch.save(loaded.model, path)
        return [str(path)]

    def load(self, folder: str, like: Any = None) -> Any:
        import torch

        # A pickled module cannot be read with weights_only=True; calling load() is the user's
        # explicit choice to trust this file.
        return torch.load(Path(folder) / self.filename, map_location="cpu", weights_only=False)


class SavePretrainedSaver(Saver):
    name = "save_pretrained"
    description = "Hugging Face save_pretrained folder (model, config, tokenizer; a peft adapter if unmerged)."

    def check(self, loaded: LoadedModel) -> None:
        if not hasattr(loaded.model, "save_pretrained"):
            raise ConfigError(f"saver save_pretrained needs a Hugging Face (transformers or peft) "
                              f"model; this one is a {type(loaded.model).__name__}: choose "
                              "safetensors or state_dict instead")

    def save(self, loaded: LoadedModel, folder: str, run: Any) -> list[str]:
        self.check(loaded)
        loaded.model.save_pretrained(folder)
        if hasattr(loaded.processor, "save_pretrained"):
            loaded.processor.save_pretrained(folder)
        return [folder]

    def load(self, folder: str, like: Any = None) -> Any:
        if like is not None:
            return type(like).from_pretrained(folder)
        from transformers import AutoModel

        return AutoModel.from_pretrained(folder)


def _check_projected_optimizer(run: Any) -> None:
    """GaLore / APOLLO project the gradients of full weight matrices: they need method full and their package."""
    import importlib.util

    from adapt.config import PROJECTED_OPTIMIZERS

    optim = run.training.optim
    family = next((f for f in PROJECTED_OPTIMIZERS if optim.startswith(f)), None)
    if family is None:
        if run.training.optim_target_modules:
            raise ConfigError(f"training.optim_target_modules: only the galore_* / apollo_* optimizers read it "
                              f"(training.optim is {optim})")
        return
    if run.method.name != "full":
        raise ConfigError(f"training.optim: {optim} projects the gradients of whole weight matrices, which method "
                          f"{run.method.name} freezes; use it with method full (it is the memory-saving alternative "
                          "to an adapter)")
    package, module = PROJECTED_OPTIMIZERS[family]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"training.optim: {optim} needs the package {package}: pip install {package}")


@hookimpl
def adapt_register_engines(register: Callable[[Engine], None]) -> None:
    register(HFEngine())


@hookimpl
def adapt_register_backends(register: Callable[[Backend], None]) -> None:
    register(SingleBackend())


@hookimpl
def adapt_register_savers(register: Callable[[Saver], None]) -> None:
    for saver in (StateDictSaver(), SafetensorsSaver(), FullTorchModelSaver(), SavePretrainedSaver()):
        register(saver)
